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
//! * `REDIS_URL` is set: the limit is counted in Redis, once for all instances.
//!
//! Every management action lands in the store's audit log (the admin API's
//! `/accounts/{id}/audit`, the settings page's "Recent activity"); entries older than 400
//! days are pruned at start and daily.
//!
//! Two instances on two ports with the same two URLs form one service: a key made
//! through one's `/admin` works on the other, and the limit is shared.
#![allow(clippy::print_stdout)] // printing the demo key is this example's job

mod demo;
mod serve;

use std::{net::SocketAddr, time::Duration};

use axum::{
    extract::Request,
    http::{header, StatusCode},
    response::IntoResponse,
    routing::{get, post},
    Json, Router,
};
use metrics_exporter_prometheus::PrometheusHandle;
use nouvel_auth::{
    admin::{self, AdminToken},
    limit::RedisRateLimiter,
    manage::AUDIT_RETENTION,
    nouvel,
    settings::{self},
    store::{CachedKeyStore, PostgresKeyStore, SqliteKeyStore},
    ApiKey, AuthenticatedKey, Expiration, KeyManager, KeySpec, KeyStorage, MemoryRateLimiter,
    NouvelAuthLayer, Problem, Profile, RateLimiter,
};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use demo::Demo;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Every stub answers with the key that called it and the route it reached.
async fn stub(key: AuthenticatedKey, request: Request) -> Json<Value> {
    Json(json!({
        "ok": true,
        "route": format!("{} {}", request.method(), request.uri().path()),
        "key_id": key.id,
        "key_name": key.name,
        "account_id": key.account_id,
        "environment": key.environment,
    }))
}

/// The name of the key each start makes for the demo account.
const DEMO_KEY: &str = "Demo key";

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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let admin_token = admin_token()?;
    let redis = match env("REDIS_URL") {
        Some(url) => Some(RedisRateLimiter::connect(&url, &Profile::nouvel()).await?),
        None => None,
    };
    let database = env("DATABASE_URL");
    if let Some(url) = database
        .as_deref()
        .filter(|url| url.starts_with("postgres"))
    {
        let schema = env("NOUVEL_SCHEMA").unwrap_or_else(|| "nouvel".to_owned());
        let postgres = PostgresKeyStore::connect(url, &schema, &Profile::nouvel()).await?;
        postgres.migrate().await?;
        let store = CachedKeyStore::new(postgres.clone());
        let cache = store.clone();
        postgres
            .listen(move |change| cache.invalidate(&change))
            .await?;
        // It hears every key made on every instance: made-up keys need not ask PostgreSQL.
        store.refuse_made_up_keys().await?;
        println!("Keys: PostgreSQL (schema {schema}), cached");
        with_limiter(
            store,
            redis,
            Started {
                prometheus,
                admin_token,
                demo: None,
            },
        )
        .await
    } else {
        let path = match database.as_deref() {
            None => "nouvel.db",
            Some(url) => url
                .strip_prefix("sqlite://")
                .ok_or("DATABASE_URL must be postgres://… or sqlite://PATH")?,
        };
        let sqlite = SqliteKeyStore::open(path, &Profile::nouvel()).await?;
        sqlite.migrate().await?;
        let demo = sqlite.accounts_named("Demo").await?.into_iter().next();
        // One process writes the file, through this cache: it hears every change.
        let store = CachedKeyStore::new(sqlite);
        store.refuse_made_up_keys().await?;
        println!("Keys: SQLite file {path}, cached");
        with_limiter(
            store,
            redis,
            Started {
                prometheus,
                admin_token,
                demo,
            },
        )
        .await
    }
}

/// What `main` prepared for the server.
struct Started {
    prometheus: PrometheusHandle,
    admin_token: Option<String>,
    /// The demo account of an earlier start, in a store that keeps it.
    demo: Option<nouvel_auth::manage::Account>,
}

/// `NOUVEL_ADMIN_TOKEN`, refused if it is shorter than 16 characters or holds whitespace.
fn admin_token() -> Result<Option<String>, Error> {
    let token = std::env::var("NOUVEL_ADMIN_TOKEN").ok();
    if let Some(token) = &token {
        if token.chars().count() < 16 || token.chars().any(char::is_whitespace) {
            return Err(
                "NOUVEL_ADMIN_TOKEN must be at least 16 characters and hold no whitespace: \
                 a shorter one is guessed, and a spaced one is never sent whole"
                    .into(),
            );
        }
    }
    Ok(token)
}

async fn with_limiter<K>(
    store: K,
    redis: Option<RedisRateLimiter>,
    started: Started,
) -> Result<(), Error>
where
    K: KeyStorage + Clone,
{
    if let Some(limiter) = redis {
        println!("Rate limit: Redis, shared by every instance");
        serve(store, limiter, started).await
    } else {
        println!("Rate limit: in memory, this instance alone");
        serve(store, MemoryRateLimiter::new(), started).await
    }
}

async fn serve<K, L>(store: K, limiter: L, started: Started) -> Result<(), Error>
where
    K: KeyStorage + Clone,
    L: RateLimiter,
{
    let addr: SocketAddr = std::env::var("NOUVEL_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:8080".to_owned())
        .parse()?;
    let shutdown_deadline = match std::env::var("NOUVEL_SHUTDOWN_SECONDS") {
        Ok(seconds) => Duration::from_secs(
            seconds
                .parse()
                .map_err(|_| "NOUVEL_SHUTDOWN_SECONDS must be a whole number of seconds")?,
        ),
        Err(_) => Duration::from_secs(10),
    };
    let Started {
        prometheus,
        admin_token,
        demo,
    } = started;
    let keys = KeyManager::new(store.clone());
    // Maintenance: audit entries older than the retention go, at start and then daily.
    let maintenance = keys.clone();
    tokio::spawn(async move {
        loop {
            if let Err(error) = maintenance.prune_audit(AUDIT_RETENTION).await {
                tracing::warn!(%error, "could not prune the audit log");
            }
            tokio::time::sleep(Duration::from_secs(86_400)).await;
        }
    });
    let account = match demo {
        Some(account) => {
            for earlier in keys.keys(&account.id).await? {
                if earlier.name == DEMO_KEY {
                    keys.delete_key(&account.id, &earlier.id).await?;
                }
            }
            account
        }
        None => keys.create_account("Demo", nouvel::SCALE).await?,
    };
    let demo = keys
        .create_key(
            &account.id,
            KeySpec::new(DEMO_KEY, nouvel::PERMISSIONS.all()).expiration(Expiration::Days90),
        )
        .await?;
    let generated_token = admin_token.is_none();
    // A fresh key's random part makes a fine throwaway admin token; it opens nothing else.
    let admin_token = admin_token
        .unwrap_or_else(|| format!("admin_{}", &ApiKey::generate().expose_secret()[4..]));
    // One guard for every route that takes the token: one count of failures between them.
    let admin = AdminToken::new(&admin_token);

    let auth = NouvelAuthLayer::new(store).limiter(limiter);
    // The application's own 404, answered as its every refusal is (Nouvel's profile).
    let not_found = move || async move {
        let problem = Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "No such route, account, or key in this account.",
        );
        Profile::nouvel()
            .respond(&problem)
            .map(axum::body::Body::from)
    };
    // Every path under `/api/` is behind the layer, those no route has included: without a
    // key they answer 401, with one 403 `route_not_allowed`, never a 404 that would tell
    // an unauthenticated client which paths exist.
    let api = Router::new()
        .route("/v1/generate", post(stub))
        .route("/v1/jobs/{jobId}", get(stub))
        .route("/v1/projects", get(stub))
        .route("/v1/publish", post(stub))
        .route("/v1/publish/{id}", get(stub))
        .route("/v1/analytics", get(stub))
        .route("/v1/copilot/chat", post(stub))
        .fallback(not_found)
        .layer(auth.clone());
    let demo_sessions = Demo::new(keys.clone());
    let code = demo_sessions.code_for(&account.id);
    let session = {
        let demo = demo_sessions.clone();
        move |parts: &axum::http::request::Parts| {
            let user = demo.user(&parts.headers);
            async move { Ok(user) }
        }
    };
    let metrics = move || async move {
        let content_type = "text/plain; version=0.0.4; charset=utf-8";
        ([(header::CONTENT_TYPE, content_type)], prometheus.render()).into_response()
    };
    let app = Router::new()
        // A nested router never sees its mount point with a trailing slash: that one too.
        .route_service("/api/", api.clone().into_service())
        .nest("/api", api)
        .nest("/admin", admin::router(keys.clone(), admin.clone()))
        .nest("/settings/api-keys", settings::router(keys, session))
        .merge(demo_sessions.routes(admin.clone()))
        .route("/metrics", get(metrics).route_layer(admin))
        .route("/healthz", get(|| async { "ok" }))
        // Paths no router has (`/admin/` and `/settings/api-keys/` among them: a nested
        // router sees its mount point only without the slash) answer as the crate's do.
        .fallback(not_found);

    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let secret = demo.key.expose_secret();
    println!("Nouvel API example listening on http://{addr}");
    println!("Demo key (scale plan, all five permissions, expires in 90 days):");
    println!("  {secret}");
    println!("Try it:");
    println!("  curl -i -H 'Authorization: Bearer {secret}' http://{addr}/api/v1/projects");
    if generated_token {
        println!("Admin token (set NOUVEL_ADMIN_TOKEN to choose one): {admin_token}");
    }
    println!(
        "Admin API at http://{addr}/admin; the demo account is {}:",
        account.id
    );
    println!(
        "  curl -s -H 'Authorization: Bearer <admin token>' http://{addr}/admin/accounts/{}/keys",
        account.id
    );
    println!("Settings → API Keys of the demo account (this link signs in once):");
    println!("  http://{addr}/demo/sign-in?code={code}");

    serve::until_signalled(listener, app, shutdown_deadline).await;
    // The server has stopped taking requests and closed every connection: keep the last
    // interval's usage.
    auth.flush_usage().await?;
    println!("Stopped.");
    Ok(())
}
