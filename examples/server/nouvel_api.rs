//! The Nouvel API's seven routes behind `NouvelAuthLayer`.
//!
//! ```sh
//! cargo run --example nouvel_api
//! ```
//!
//! At start it makes a `scale` account and one key holding all five permissions, and
//! prints the key with a `curl` line that uses it, and a one-time link that signs in to
//! the demo account's "Settings → API Keys" page, mounted at `/settings/api-keys`. The
//! operator's admin API is mounted at `/admin`, guarded by `NOUVEL_ADMIN_TOKEN` (generated
//! and printed when unset; refused at start if shorter than 16 characters or holding
//! whitespace). `/healthz` answers 200 to anyone; `/metrics` answers the crate's metrics in
//! Prometheus' text format to the admin token's holder.
//!
//! Sign-in is the example's, not the crate's (an application brings its own):
//! `GET /demo/sign-in?code=CODE` with the printed one-time code sets a session cookie and
//! answers 303 to the page; `POST /demo/sign-in` with the admin token and
//! `{"account_id": "…"}` signs in as any account (204 with the cookie), for scripts.
//! `POST /demo/sign-out` ends a session; a session ends by itself after 12 hours without a
//! request, and a printed link works for 10 minutes.
//! `NOUVEL_ADDR` sets the address (default `127.0.0.1:8080`). SIGINT (Ctrl-C) and SIGTERM
//! both stop it cleanly: it stops accepting, gives the requests under way up to
//! `NOUVEL_SHUTDOWN_SECONDS` (default 10), closes every connection left, flushes usage
//! and exits 0. A connection with no request under way for 30 s is closed (one that never
//! sends a whole request head, HTTP/2 included); a failed `accept` (no descriptor left)
//! is retried, never fatal.
//!
//! Keys live in an embedded SQLite file, `nouvel.db` in the working directory, behind a
//! cache, so they survive a restart with no server to run; each start reuses the demo
//! account (by its name, `Demo`), deletes its earlier demo key and prints a fresh one.
//! The limit is counted in memory. Unless:
//! * `DATABASE_URL` is `sqlite://PATH`: another file;
//! * `DATABASE_URL` is `postgres://…`: keys and accounts live in PostgreSQL (schema
//!   `NOUVEL_SCHEMA`, default `nouvel`; migrations applied at start), behind a cache that
//!   hears every other instance's changes (a new demo account each start);
//! * `REDIS_URL` is set: the limits are counted in Redis (or a Redis Cluster, its nodes
//!   separated by commas), once for all instances.
//!
//! Every management action lands in the store's audit log (the admin API's
//! `/accounts/{id}/audit`, the settings page's "Recent activity"); entries older than 400
//! days are pruned at start and daily.
//!
//! Two instances on two ports with the same two URLs form one service: a key made
//! through one's `/admin` works on the other, and the limit is shared.
#![allow(clippy::print_stdout)] // printing the demo key is this example's job

mod demo;
mod launch;
mod serve;

use std::time::Duration;

use axum::{
    extract::{OriginalUri, Request},
    http::header,
    response::IntoResponse,
    routing::{get, post},
    Json, Router,
};
use metrics_exporter_prometheus::PrometheusHandle;
use nouvel_auth::{admin::AdminToken, nouvel, AuthenticatedKey, Profile, RouteTable};
use serde_json::{json, Value};

use launch::{Api, Error, Example};

/// Every stub answers with the key that called it and the route it reached (the path as
/// the client sent it: the API is nested under `/api`).
async fn stub(
    key: AuthenticatedKey,
    OriginalUri(uri): OriginalUri,
    request: Request,
) -> Json<Value> {
    Json(json!({
        "ok": true,
        "route": format!("{} {}", request.method(), uri.path()),
        "key_id": key.id,
        "key_name": key.name,
        "account_id": key.account_id,
        "environment": key.environment,
    }))
}

/// The seven routes of the Nouvel API, and `/metrics` for the admin token.
struct NouvelApi {
    prometheus: PrometheusHandle,
}

impl Api for NouvelApi {
    fn routes(&self) -> Router {
        Router::new()
            .route("/v1/generate", post(stub))
            .route("/v1/jobs/{jobId}", get(stub))
            .route("/v1/projects", get(stub))
            .route("/v1/publish", post(stub))
            .route("/v1/publish/{id}", get(stub))
            .route("/v1/analytics", get(stub))
            .route("/v1/copilot/chat", post(stub))
    }

    fn table(&self) -> RouteTable {
        RouteTable::nouvel()
    }

    fn more(&self, app: Router, admin: &AdminToken) -> Router {
        let prometheus = self.prometheus.clone();
        let metrics = move || async move {
            let content_type = "text/plain; version=0.0.4; charset=utf-8";
            ([(header::CONTENT_TYPE, content_type)], prometheus.render()).into_response()
        };
        app.route("/metrics", get(metrics).route_layer(admin.clone()))
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let upkeep = prometheus.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    let example = Example {
        title: "Nouvel API example",
        env: "NOUVEL",
        default_addr: "127.0.0.1:8080",
        default_file: "nouvel.db",
        default_schema: "nouvel",
        profile: Profile::nouvel(),
        demo_plan: nouvel::SCALE,
        demo_key_says: "Demo key (scale plan, all five permissions, expires in 90 days):",
        admin_at: "/admin",
        try_path: "/api/v1/projects",
    };
    example.run(NouvelApi { prometheus }).await
}
