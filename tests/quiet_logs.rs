//! Neither an outage nor a client floods the logs: each kind of backend warning is written
//! at most once per 10 s, and refusals are DEBUG. Alone in its binary, since the warnings'
//! quiet periods are the process's.

mod common;

use std::sync::Arc;

use nouvel_auth::{
    key::KeyDigest, store::UsageReport, BackendError, KeyRecord, KeyStore, NouvelAuthLayer,
};

/// A store whose backend is down.
struct Down;

impl KeyStore for Down {
    async fn lookup(
        &self,
        _digest: &KeyDigest,
        _now: time::OffsetDateTime,
    ) -> Result<Option<Arc<KeyRecord>>, BackendError> {
        Err(BackendError::failed("connection refused"))
    }

    async fn record_usage(&self, _reports: &[UsageReport]) -> Result<(), BackendError> {
        Err(BackendError::failed("connection refused"))
    }
}

#[tokio::test(start_paused = true)]
async fn a_hundred_failed_lookups_write_one_warning_then_one_with_the_count() {
    let logs = common::Captured::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber(tracing::Level::WARN));
    let app = common::routes().layer(NouvelAuthLayer::new(Down));
    let key = common::bearer(&nouvel_auth::key::ApiKey::generate());
    for _ in 0..100 {
        common::send(&app, "POST", "/api/v1/generate", Some(&key))
            .await
            .assert_problem(503, "auth_unavailable");
    }
    let lines = |logs: &common::Captured| {
        logs.text()
            .lines()
            .filter(|line| line.contains("key store is unavailable"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(lines(&logs).len(), 1, "{:?}", lines(&logs));
    tokio::time::advance(std::time::Duration::from_secs(10)).await;
    common::send(&app, "POST", "/api/v1/generate", Some(&key)).await;
    let written = lines(&logs);
    assert_eq!(written.len(), 2, "{written:?}");
    assert!(written[1].contains("left_out=99"), "{}", written[1]);
}

#[tokio::test]
async fn a_client_flooding_refusals_writes_no_line_at_the_default_level() {
    let logs = common::Captured::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber(tracing::Level::INFO));
    let h = common::Harness::new().await;
    let key = h.key([nouvel_auth::nouvel::GENERATE]).await;
    for _ in 0..100 {
        // 60 admitted, then 429s; 403 for a permission it lacks and a route in no entry.
        h.send_key("POST", "/api/v1/generate", &key).await;
        h.send_key("GET", "/api/v1/projects", &key)
            .await
            .assert_problem(403, "missing_permission");
        h.send_key("GET", "/api/v1/other", &key)
            .await
            .assert_problem(403, "route_not_allowed");
        h.send("GET", "/api/v1/projects", Some("Bearer nvl_madeup"))
            .await
            .assert_problem(401, "invalid_api_key");
    }
    h.keys
        .set_plan(&h.account, nouvel_auth::nouvel::GROWTH)
        .await
        .unwrap();
    for _ in 0..100 {
        h.send_key("POST", "/api/v1/generate", &key)
            .await
            .assert_problem(402, "plan_required");
    }
    let text = logs.text();
    assert!(text.is_empty(), "{text}");
}
