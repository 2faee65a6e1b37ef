//! What the layer, the cache and the limiter report through the `metrics` facade (feature
//! `metrics`): requests by outcome, check time, lookups, made-up keys, usage flushes.
#![cfg(feature = "metrics")]

mod common;

use std::{collections::HashMap, time::Duration};

use common::Harness;
use metrics_util::{
    debugging::{DebugValue, DebuggingRecorder, Snapshotter},
    MetricKind,
};
use nouvel_auth::{
    clock::Clock, key::ApiKey, metrics as names, nouvel, store::CachedKeyStore, KeyStore,
    MemoryKeyStore,
};

/// Every counter as `name{label=value,…}` → count, and each histogram's number of samples.
fn read(snapshotter: &Snapshotter) -> HashMap<String, u64> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let (kind, key) = key.into_parts();
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            let n = match (kind, value) {
                (MetricKind::Counter, DebugValue::Counter(n)) => n,
                (MetricKind::Histogram, DebugValue::Histogram(samples)) => samples.len() as u64,
                _ => 0,
            };
            (name, n)
        })
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn requests_lookups_and_flushes_are_counted_with_bounded_labels() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let h = Harness::with_layer(|l| l.usage_flush_interval(Duration::from_secs(3600))).await;
    let key = h.key([nouvel::GENERATE]).await;
    assert_eq!(
        h.send_key("POST", "/api/v1/generate", &key).await.status,
        200
    );
    assert_eq!(
        h.send_key("POST", "/api/v1/generate", &key).await.status,
        200
    );
    h.send_key("GET", "/api/v1/projects", &key)
        .await
        .assert_problem(403, "missing_permission");
    h.send("GET", "/api/v1/projects", None)
        .await
        .assert_problem(401, "missing_api_key");
    h.send_key("GET", "/api/v1/other", &key)
        .await
        .assert_problem(403, "route_not_allowed");
    h.layer.flush_usage().await.unwrap();

    let cache = CachedKeyStore::new(MemoryKeyStore::new());
    cache.refuse_made_up_keys().await.unwrap();
    let now = h.clock.now();
    for _ in 0..3 {
        cache
            .lookup(&ApiKey::generate().digest(), now)
            .await
            .unwrap();
    }

    let seen = read(&snapshotter);
    let expect = [
        (format!("{}{{outcome=admitted}}", names::REQUESTS), 2),
        (
            format!("{}{{outcome=missing_permission}}", names::REQUESTS),
            1,
        ),
        (format!("{}{{outcome=missing_api_key}}", names::REQUESTS), 1),
        (
            format!("{}{{outcome=route_not_allowed}}", names::REQUESTS),
            1,
        ),
        (format!("{}{{}}", names::CHECK_DURATION), 5),
        (format!("{}{{result=ok}}", names::USAGE_FLUSHES), 1),
        // One made-up key is checked with the store, the rest are refused without it.
        (format!("{}{{result=miss}}", names::KEY_LOOKUPS), 1),
        (format!("{}{{}}", names::MADE_UP_KEYS_REFUSED), 2),
    ];
    for (name, n) in &expect {
        assert_eq!(seen.get(name), Some(n), "{name} in {seen:?}");
    }
    // No label holds a key id, a key or a path.
    for name in seen.keys() {
        let labels = name.split_once('{').map_or("", |(_, labels)| labels);
        assert!(
            !labels.contains("key_") && !labels.contains("nvl_") && !labels.contains('/'),
            "{name}"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn every_series_exists_at_zero_and_described_from_the_start_of_its_part() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    // Made, never asked anything.
    let _layer = nouvel_auth::NouvelAuthLayer::new(CachedKeyStore::new(MemoryKeyStore::new()));
    let snapshot = snapshotter.snapshot().into_vec();
    let series: HashMap<String, (Option<metrics::Unit>, Option<String>)> = snapshot
        .iter()
        .map(|(key, unit, help, _)| {
            let key = key.key();
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            (
                format!("{}{{{}}}", key.name(), labels.join(",")),
                (*unit, help.as_ref().map(ToString::to_string)),
            )
        })
        .collect();
    let counts = read(&snapshotter);
    for outcome in [
        "admitted",
        "passed",
        "missing_api_key",
        "invalid_api_key",
        "plan_required",
        "missing_permission",
        "rate_limited",
        "auth_unavailable",
    ] {
        let name = format!("{}{{outcome={outcome}}}", names::REQUESTS);
        assert_eq!(counts.get(&name), Some(&0), "{name}");
    }
    for result in ["hit", "miss", "stale", "error"] {
        let name = format!("{}{{result={result}}}", names::KEY_LOOKUPS);
        assert_eq!(counts.get(&name), Some(&0), "{name}");
    }
    for result in ["ok", "error"] {
        let name = format!("{}{{result={result}}}", names::USAGE_FLUSHES);
        assert_eq!(counts.get(&name), Some(&0), "{name}");
    }
    assert_eq!(
        counts.get(&format!("{}{{}}", names::MADE_UP_KEYS_REFUSED)),
        Some(&0)
    );
    let (unit, help) = &series[&format!("{}{{outcome=admitted}}", names::REQUESTS)];
    assert_eq!(*unit, Some(metrics::Unit::Count));
    assert!(help
        .as_deref()
        .is_some_and(|h| h.starts_with("Requests the layer decided")));
    let (unit, help) = &series[&format!("{}{{}}", names::CHECK_DURATION)];
    assert_eq!(*unit, Some(metrics::Unit::Seconds));
    assert!(help.is_some());
}
