//! The Nouvel API's seven routes behind `NouvelAuthLayer`, with the in-memory store.
//!
//! ```sh
//! cargo run --example nouvel_api
//! ```
//!
//! At start it makes a `scale` account and one key holding all five permissions, and
//! prints the key with a `curl` line that uses it. The admin API ("Settings → API Keys")
//! is mounted at `/admin`, guarded by `NOUVEL_ADMIN_TOKEN` (generated and printed when
//! unset). `NOUVEL_ADDR` sets the address (default `127.0.0.1:8080`). Ctrl-C stops it
//! cleanly, flushing usage first.
#![allow(clippy::print_stdout)] // printing the demo key is this example's job

use std::net::SocketAddr;

use axum::{
    extract::Request,
    routing::{get, post},
    Extension, Json, Router,
};
use nouvel_auth::{
    admin::{self, AdminToken},
    ApiKey, Expiration, KeyManager, KeyRecord, KeySpec, MemoryKeyStore, NouvelAuthLayer,
    Permission, Plan,
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

    let admin_token = std::env::var("NOUVEL_ADMIN_TOKEN").ok();
    let generated_token = admin_token.is_none();
    // A fresh key's random text makes a fine throwaway admin token; it is not an API key
    // anywhere, since no store holds its digest.
    let admin_token = admin_token
        .unwrap_or_else(|| format!("admin_{}", &ApiKey::generate().expose_secret()[4..]));

    let auth = NouvelAuthLayer::new(store.clone());
    let api = Router::new()
        .route("/api/v1/generate", post(stub))
        .route("/api/v1/jobs/{jobId}", get(stub))
        .route("/api/v1/projects", get(stub))
        .route("/api/v1/publish", post(stub))
        .route("/api/v1/publish/{id}", get(stub))
        .route("/api/v1/analytics", get(stub))
        .route("/api/v1/copilot/chat", post(stub))
        .layer(auth.clone());
    let app = api.nest(
        "/admin",
        admin::router(store.clone(), AdminToken::new(&admin_token)),
    );

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
    if generated_token {
        println!("Admin token (set NOUVEL_ADMIN_TOKEN to choose one): {admin_token}");
    }
    println!(
        "Admin API: http://{addr}/admin (demo account id: {})",
        account.id
    );
    println!(
        "  curl -s -H 'Authorization: Bearer <admin token>' http://{addr}/admin/accounts/{}/keys",
        account.id
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
