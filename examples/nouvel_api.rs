//! The Nouvel API's seven routes behind `NouvelAuthLayer`, with the in-memory store.
//!
//! ```sh
//! cargo run --example nouvel_api
//! ```
//!
//! At start it makes a `scale` account and one key holding all five permissions, and
//! prints the key with a `curl` line that uses it. `NOUVEL_ADDR` sets the address
//! (default `127.0.0.1:8080`). Ctrl-C stops it cleanly.
#![allow(clippy::print_stdout)] // printing the demo key is this example's job

use std::net::SocketAddr;

use axum::{
    extract::Request,
    routing::{get, post},
    Extension, Json, Router,
};
use nouvel_auth::{
    Expiration, KeyManager, KeyRecord, KeySpec, MemoryKeyStore, NouvelAuthLayer, Permission, Plan,
};
use serde_json::{json, Value};

/// Every stub answers with the key that called it and the route it reached.
async fn stub(Extension(key): Extension<KeyRecord>, request: Request) -> Json<Value> {
    Json(json!({
        "ok": true,
        "route": format!("{} {}", request.method(), request.uri().path()),
        "key_id": key.id,
        "key_name": key.name,
        "account_id": key.account_id,
    }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let addr: SocketAddr = std::env::var("NOUVEL_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:8080".to_owned())
        .parse()?;

    let store = MemoryKeyStore::new();
    let account = store.create_account("Demo", Plan::Scale).await?;
    let demo = store
        .create_key(
            &account.id,
            KeySpec::new("Demo key", Permission::ALL).expiration(Expiration::Days90),
        )
        .await?;

    let auth = NouvelAuthLayer::new(store.clone());
    let app = Router::new()
        .route("/api/v1/generate", post(stub))
        .route("/api/v1/jobs/{jobId}", get(stub))
        .route("/api/v1/projects", get(stub))
        .route("/api/v1/publish", post(stub))
        .route("/api/v1/publish/{id}", get(stub))
        .route("/api/v1/analytics", get(stub))
        .route("/api/v1/copilot/chat", post(stub))
        .layer(auth.clone());

    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    println!("Nouvel API example listening on http://{addr}");
    println!("Demo key (scale plan, all five permissions, expires in 90 days):");
    println!("  {}", demo.key.expose_secret());
    println!("Try it:");
    println!(
        "  curl -i -H 'Authorization: Bearer {}' http://{addr}/api/v1/projects",
        demo.key.expose_secret()
    );

    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    // The server has stopped taking requests: keep the last interval's usage.
    auth.flush_usage().await?;
    println!("Stopped.");
    Ok(())
}
