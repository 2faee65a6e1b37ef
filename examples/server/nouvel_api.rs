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
//! `NOUVEL_ADDR` sets the address (default `127.0.0.1:8080`). SIGINT (Ctrl-C) and SIGTERM
//! both stop it cleanly: it stops accepting, finishes the requests under way, flushes
//! usage and exits 0. A connection that has not sent a whole request head within 30 s is
//! closed.
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

use nouvel_auth::nouvel;
use std::{net::SocketAddr, time::Duration};

use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::{
    net::TcpListener,
    signal::unix::{signal, SignalKind},
};

use axum::{
    body::Bytes,
    extract::{ConnectInfo, Query, Request, State},
    http::{header, request::Parts, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use metrics_exporter_prometheus::PrometheusHandle;
use nouvel_auth::{
    admin::{self, AdminToken},
    limit::RedisRateLimiter,
    manage::AUDIT_RETENTION,
    settings::{self, SignedInUser},
    store::{CachedKeyStore, PostgresKeyStore, SqliteKeyStore},
    AccountId, ApiKey, AuthenticatedKey, Expiration, KeyManager, KeySpec, KeyStorage,
    MemoryRateLimiter, NouvelAuthLayer, RateLimiter,
};
use serde_json::{json, Value};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};
use tower::ServiceExt;

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

/// Random letters and digits: 26 base62 characters, from a fresh key's random part.
fn random_token() -> String {
    ApiKey::generate().expose_secret()[4..30].to_owned()
}

/// The example's sign-in: one-time codes for links, and sessions by cookie.
#[derive(Clone)]
struct Demo<K> {
    keys: KeyManager<K>,
    admin: AdminToken,
    codes: Arc<Mutex<HashMap<String, AccountId>>>,
    sessions: Arc<Mutex<HashMap<String, AccountId>>>,
}

const COOKIE: &str = "nouvel_session";

impl<K: KeyStorage> Demo<K> {
    /// A one-time code that signs in as `account`.
    fn code_for(&self, account: &AccountId) -> String {
        let code = random_token();
        let mut codes = self.codes.lock().unwrap_or_else(|e| e.into_inner());
        codes.insert(code.clone(), account.clone());
        code
    }

    /// 204 or 303 with a new session's cookie.
    fn signed_in(&self, account: AccountId, status: StatusCode) -> Response {
        let session = random_token();
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.insert(session.clone(), account);
        let cookie = format!("{COOKIE}={session}; HttpOnly; SameSite=Strict; Path=/");
        let mut response = (status, [(header::SET_COOKIE, cookie)]).into_response();
        if status == StatusCode::SEE_OTHER {
            response.headers_mut().insert(
                header::LOCATION,
                header::HeaderValue::from_static("/settings/api-keys"),
            );
        }
        response
    }

    /// Whether `headers` present the admin token.
    fn admin_token_in(&self, headers: &HeaderMap) -> bool {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "));
        token.is_some_and(|token| self.admin.matches(token))
    }

    /// The user of the request's session cookie, if it names one.
    fn user(&self, headers: &HeaderMap) -> Option<SignedInUser> {
        let session = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))?;
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let account = sessions.get(session)?;
        Some(SignedInUser::new(
            account.clone(),
            format!("demo-user-of-{account}"),
        ))
    }
}

fn refused(status: StatusCode, code: &str, detail: &str) -> Response {
    let body = json!({"type": "about:blank", "title": status.canonical_reason(), "status": status.as_u16(), "detail": detail, "code": code});
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

/// `GET /demo/sign-in?code=…`: the printed link, good once.
async fn sign_in_by_link<K: KeyStorage>(
    State(demo): State<Demo<K>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let account = query.get("code").and_then(|code| {
        let mut codes = demo.codes.lock().unwrap_or_else(|e| e.into_inner());
        codes.remove(code)
    });
    match account {
        Some(account) => demo.signed_in(account, StatusCode::SEE_OTHER),
        None => refused(
            StatusCode::UNAUTHORIZED,
            "invalid_code",
            "This sign-in link was used already, or never made.",
        ),
    }
}

/// `POST /demo/sign-in` with the admin token and `{"account_id": "…"}`: for scripts.
async fn sign_in_as<K: KeyStorage>(
    State(demo): State<Demo<K>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !demo.admin_token_in(&headers) {
        return refused(
            StatusCode::UNAUTHORIZED,
            "admin_unauthorized",
            "Send the admin token as `Authorization: Bearer <token>`.",
        );
    }
    let account = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|body| body.get("account_id")?.as_str().map(AccountId::from));
    let Some(account) = account else {
        return refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "The body must be {\"account_id\": \"…\"}.",
        );
    };
    match demo.keys.account(&account).await {
        Ok(_) => demo.signed_in(account, StatusCode::NO_CONTENT),
        Err(nouvel_auth::ManageError::NotFound) => {
            refused(StatusCode::NOT_FOUND, "not_found", "No such account.")
        }
        Err(_) => refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "auth_unavailable",
            "The key store is unavailable.",
        ),
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let admin_token = admin_token()?;
    let redis = match env("REDIS_URL") {
        Some(url) => Some(RedisRateLimiter::connect(&url).await?),
        None => None,
    };
    let database = env("DATABASE_URL");
    if let Some(url) = database
        .as_deref()
        .filter(|url| url.starts_with("postgres"))
    {
        let schema = env("NOUVEL_SCHEMA").unwrap_or_else(|| "nouvel".to_owned());
        let postgres = PostgresKeyStore::connect(url, &schema).await?;
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
        let sqlite = SqliteKeyStore::open(path).await?;
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

    let auth = NouvelAuthLayer::new(store).limiter(limiter);
    let api = Router::new()
        .route("/api/v1/generate", post(stub))
        .route("/api/v1/jobs/{jobId}", get(stub))
        .route("/api/v1/projects", get(stub))
        .route("/api/v1/publish", post(stub))
        .route("/api/v1/publish/{id}", get(stub))
        .route("/api/v1/analytics", get(stub))
        .route("/api/v1/copilot/chat", post(stub))
        .layer(auth.clone());
    let demo_sessions = Demo {
        keys: keys.clone(),
        admin: AdminToken::new(&admin_token),
        codes: Arc::default(),
        sessions: Arc::default(),
    };
    let code = demo_sessions.code_for(&account.id);
    let session = {
        let demo = demo_sessions.clone();
        move |parts: &Parts| {
            let user = demo.user(&parts.headers);
            async move { Ok(user) }
        }
    };
    let app = api
        .nest(
            "/admin",
            admin::router(keys.clone(), AdminToken::new(&admin_token)),
        )
        .nest("/settings/api-keys", settings::router(keys, session))
        .merge(
            Router::new()
                .route(
                    "/demo/sign-in",
                    get(sign_in_by_link::<K>).post(sign_in_as::<K>),
                )
                .with_state(demo_sessions.clone()),
        )
        .route(
            "/metrics",
            get(move |headers: HeaderMap| async move {
                if !demo_sessions.admin_token_in(&headers) {
                    return refused(
                        StatusCode::UNAUTHORIZED,
                        "admin_unauthorized",
                        "Send the admin token as `Authorization: Bearer <token>`.",
                    );
                }
                let content_type = "text/plain; version=0.0.4; charset=utf-8";
                ([(header::CONTENT_TYPE, content_type)], prometheus.render()).into_response()
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        // Paths no router has (`/admin/` and `/settings/api-keys/` among them: a nested
        // router sees its mount point only without the slash) answer as the crate's do.
        .fallback(|| async {
            refused(
                StatusCode::NOT_FOUND,
                "not_found",
                "No such route, account, or key in this account.",
            )
        });

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

    serve_until_signalled(listener, app).await?;
    // The server has stopped taking requests and finished those under way: keep the last
    // interval's usage.
    auth.flush_usage().await?;
    println!("Stopped.");
    Ok(())
}

/// Serves `app` on `listener` until SIGINT or SIGTERM, then stops accepting and waits for
/// the connections under way. hyper's own server rather than `axum::serve`, for the 30 s
/// limit on a request head (a slow client holds no connection longer).
async fn serve_until_signalled(listener: TcpListener, app: Router) -> Result<(), Error> {
    let mut server = auto::Builder::new(TokioExecutor::new());
    server
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    let connections = GracefulShutdown::new();
    let mut stop = std::pin::pin!(signalled());
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut stop => break,
        };
        // The client's address, for the admin API's count of failed authentications.
        let service = app
            .clone()
            .map_request(move |mut request: axum::http::Request<_>| {
                request.extensions_mut().insert(ConnectInfo(client));
                request
            });
        let service = TowerToHyperService::new(service);
        let connection = server
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            // A client that goes away mid-request is its own business.
            let _ = connection.await;
        });
    }
    drop(listener);
    connections.shutdown().await;
    Ok(())
}

/// SIGINT or SIGTERM (what a terminal and a container runtime send).
async fn signalled() {
    let Ok(mut terminate) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
