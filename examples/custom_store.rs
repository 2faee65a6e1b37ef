//! A key store of your own: here a fixed table, as a database-backed store would return.
//!
//! ```sh
//! cargo run --example custom_store
//! ```
//!
//! A store is a type with two `async fn`s: look a digest up, take usage reports. It never
//! sees a key, only its SHA-256 digest.
#![allow(clippy::print_stdout)] // the example reports what it did

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{body::Body, http::Request, routing::get, Router};
use nouvel_auth::{
    ApiKey, BackendError, KeyDigest, KeyRecord, KeyStore, NouvelAuthLayer, Permission, Plan,
    UsageReport,
};
use tower::ServiceExt;

/// Keys by digest, as rows of a table would hold them, and usage as a counter column.
struct TableStore {
    rows: HashMap<[u8; 32], KeyRecord>,
    admitted: Mutex<HashMap<String, u64>>,
}

impl KeyStore for TableStore {
    async fn lookup(
        &self,
        digest: &KeyDigest,
        _now: time::OffsetDateTime,
    ) -> Result<Option<KeyRecord>, BackendError> {
        // A real store would run `SELECT … WHERE digest = $1 AND NOT revoked` here and map
        // a connection error to `BackendError::failed(error)`, which answers 503.
        Ok(self.rows.get(digest.as_bytes()).cloned())
    }

    async fn record_usage(&self, reports: &[UsageReport]) -> Result<(), BackendError> {
        // One batch per flush interval: one `UPDATE … FROM (VALUES …)` in a real store.
        let mut admitted = self
            .admitted
            .lock()
            .map_err(|e| BackendError::failed(e.to_string()))?;
        for report in reports {
            *admitted.entry(report.key_id.to_string()).or_default() += report.usage.admitted;
        }
        Ok(())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let key = ApiKey::generate();
    let record = KeyRecord::new(
        "key_reports",
        "acc_acme",
        "Reports",
        Plan::Business,
        Permission::AnalyticsRead.into(),
    );
    let store = Arc::new(TableStore {
        rows: HashMap::from([(*key.digest().as_bytes(), record)]),
        admitted: Mutex::default(),
    });

    // `Arc<TableStore>` is a store too, so we keep a handle to read the counters back.
    let auth = NouvelAuthLayer::new(store.clone());
    let app = Router::new()
        .route("/api/v1/analytics", get(|| async { "{\"visits\": 42}" }))
        .layer(auth.clone());

    let request = Request::get("/api/v1/analytics")
        .header("authorization", format!("Bearer {}", key.expose_secret()))
        .body(Body::empty())?;
    let response = app.oneshot(request).await?;
    println!(
        "GET /api/v1/analytics with the table's key: {}",
        response.status()
    );
    assert!(response.status().is_success());

    auth.flush_usage().await?;
    let admitted = store.admitted.lock().map_err(|e| e.to_string())?["key_reports"];
    println!("usage flushed to the table: key_reports admitted {admitted} request(s)");
    assert_eq!(admitted, 1);
    Ok(())
}
