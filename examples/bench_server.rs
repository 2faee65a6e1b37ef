//! The seven Nouvel routes on loopback, with or without the layer, for
//! `scripts/loopback-bench` to load with `wrk`.
//!
//! ```sh
//! cargo run --release --example bench_server -- auth 127.0.0.1:18182   # prints a key
//! cargo run --release --example bench_server -- bare 127.0.0.1:18181
//! ```
#![allow(clippy::print_stdout)] // prints the key for the load generator

use std::time::Duration;

use axum::{
    routing::{get, post},
    Json, Router,
};
use nouvel_auth::{
    KeyManager, KeySpec, MemoryKeyStore, NouvelAuthLayer, Permission, Plan, RateLimit,
};
use serde_json::{json, Value};

/// The same small JSON for both variants, so only the layer differs.
async fn stub() -> Json<Value> {
    Json(json!({"ok": true}))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "auth".to_owned());
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:18182".to_owned());
    let routes = Router::new()
        .route("/api/v1/generate", post(stub))
        .route("/api/v1/jobs/{jobId}", get(stub))
        .route("/api/v1/projects", get(stub))
        .route("/api/v1/publish", post(stub))
        .route("/api/v1/publish/{id}", get(stub))
        .route("/api/v1/analytics", get(stub))
        .route("/api/v1/copilot/chat", post(stub));
    let app = if mode == "bare" {
        routes
    } else {
        let store = MemoryKeyStore::new();
        let account = store.create_account("Bench", Plan::Scale).await?;
        // A limit the load never reaches: this measures the checks, not refusals.
        let unlimited = RateLimit::new(u32::MAX, Duration::from_secs(60));
        let spec = KeySpec::new("bench", Permission::ALL).rate_limit(unlimited);
        let key = store.create_key(&account.id, spec).await?;
        println!("{}", key.key.expose_secret());
        routes.layer(NouvelAuthLayer::new(store))
    };
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
