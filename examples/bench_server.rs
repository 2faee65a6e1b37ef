//! The seven Nouvel routes on loopback, for `scripts/loopback-bench` to load with `wrk`:
//! bare, behind [`NouvelAuthLayer`] (`auth`: memory store and limiter; `auth-backends`:
//! the PostgreSQL store behind its cache and the Redis limiter, at `DATABASE_URL` and
//! `REDIS_URL`), behind `tower_governor` keyed by the bearer header (`governor`), or behind
//! the floor layer below (whole, or one of its two parts: `floor-checks` without the
//! headers, `floor-headers` without the checks).
//!
//! ```sh
//! cargo run --release --example bench_server -- auth 127.0.0.1:18182   # prints a key
//! cargo run --release --example bench_server -- floor 127.0.0.1:18183  # prints a key
//! cargo run --release --example bench_server -- bare 127.0.0.1:18181
//! ```
#![allow(clippy::print_stdout)] // prints the key for the load generator

#[allow(unreachable_pub)] // shared with the benches
#[path = "../benches/common/governor.rs"]
mod governor;

use nouvel_auth::{key::AccountId, limit::MemoryWindow, limit::Subject, nouvel};
use std::{
    convert::Infallible,
    hint::black_box,
    sync::{Arc, LazyLock},
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::Body,
    http::{header::AUTHORIZATION, HeaderMap, Request, Response},
    routing::{get, post},
    Json, Router,
};
use dashmap::DashMap;
use futures_util::{future::Map, FutureExt};
use nouvel_auth::{
    key::ApiKey,
    key::KeyId,
    limit::Decision,
    limit::MemoryRateLimiter,
    limit::RateLimiter,
    limit::RedisRateLimiter,
    store::{CachedKeyStore, PostgresKeyStore},
    KeySpec, KeyStorage, MemoryKeyStore, NouvelAuthLayer, Profile, RateLimit, RouteTable,
};
use serde_json::{json, Value};
use time::OffsetDateTime;
use tower::Service;

/// A limit the load never reaches: this measures the checks, not refusals. Per second, so
/// the sliding log holds one second of requests and stops growing after a second.
const UNLIMITED: RateLimit = RateLimit::new(u32::MAX, Duration::from_secs(1));

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
    let app = match mode.as_str() {
        "bare" => routes,
        "floor" | "floor-checks" | "floor-headers" => {
            let parts = FloorParts {
                checks: mode != "floor-headers",
                headers: mode != "floor-checks",
            };
            let key = ApiKey::generate();
            println!("{}", key.expose_secret());
            let digests = DashMap::new();
            digests.insert(
                *key.digest().as_bytes(),
                (KeyId::from("key_floor"), MemoryWindow::default()),
            );
            let state = Arc::new(FloorState {
                routes: RouteTable::nouvel(),
                digests,
                limiter: MemoryRateLimiter::new(),
            });
            routes.layer(tower::layer::layer_fn(move |inner| Floor {
                inner,
                state: state.clone(),
                parts,
            }))
        }
        "governor" => Router::new().fallback_service(governor::governor(routes)),
        "auth-backends" => {
            let profile = Profile::nouvel();
            let database = env_or(
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/postgres",
            );
            let store =
                PostgresKeyStore::connect(&database, "nouvel_loopback_bench", &profile).await?;
            store.migrate().await?;
            let store = CachedKeyStore::new(store);
            let redis = env_or("REDIS_URL", "redis://127.0.0.1:6379");
            let limiter = RedisRateLimiter::connect(&redis, &profile)
                .await?
                .key_prefix("nouvel-loopback-bench");
            print_a_key(&store).await?;
            routes.layer(NouvelAuthLayer::new(store).limiter(limiter))
        }
        _ => {
            let store = MemoryKeyStore::new();
            print_a_key(&store).await?;
            routes.layer(NouvelAuthLayer::new(store))
        }
    };
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

/// Makes a key of every permission in `store`, never limited, and prints it.
async fn print_a_key<K: KeyStorage + Clone>(
    store: &K,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let keys = Profile::nouvel()
        .max_keys_per_account(None)
        .key_manager(store.clone());
    let account = keys.create_account("Bench", nouvel::SCALE).await?;
    let spec = KeySpec::new("bench", nouvel::PERMISSIONS.all()).rate_limits(UNLIMITED);
    let key = keys.create_key(&account.id, spec).await?;
    println!("{}", key.key.expose_secret());
    Ok(())
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The least any implementation of the contract does for an admitted request, as a layer:
/// match the route, parse the key with its checksum, hash it, look the digest up, read the
/// clock once, check the sliding window, and insert five header values made in advance
/// (the bytes the layer sends for this key, so both responses are the same size).
/// It decides nothing (every request goes on), allocates nothing and boxes nothing, so its
/// requests/s bound what any layer doing the contract's work can reach on this machine.
#[derive(Clone)]
struct Floor<S> {
    inner: S,
    state: Arc<FloorState>,
    parts: FloorParts,
}

/// Which of the floor's two parts a server runs: both for the floor, one alone to show
/// what each costs on a real server.
#[derive(Clone, Copy)]
struct FloorParts {
    checks: bool,
    headers: bool,
}

struct FloorState {
    routes: RouteTable,
    digests: DashMap<[u8; 32], (KeyId, MemoryWindow)>,
    limiter: MemoryRateLimiter,
}

impl<S> Service<Request<Body>> for Floor<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Map<
        S::Future,
        fn(Result<Response<Body>, Infallible>) -> Result<Response<Body>, Infallible>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if self.parts.checks {
            check(&self.state, &request);
        }
        let respond: fn(_) -> _ = if self.parts.headers {
            five_static_headers
        } else {
            |response| response
        };
        self.inner.call(request).map(respond)
    }
}

fn check(state: &FloorState, request: &Request<Body>) {
    let access = state.routes.access(request.method(), request.uri().path());
    let key = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok()?.strip_prefix("Bearer "))
        .and_then(|token| ApiKey::parse(token).ok());
    let found = key.and_then(|key| state.digests.get(key.digest().as_bytes()));
    let decision = found.map(|entry| {
        let (id, window) = &*entry;
        let account = AccountId::from("acc_floor");
        let subject = Subject {
            key: id,
            account: &account,
            key_window: window,
            account_window: None,
        };
        state
            .limiter
            .check_now(subject, UNLIMITED.into(), OffsetDateTime::now_utc())
    });
    black_box((access, decision));
}

/// The five rate-limit headers the layer writes for the bench key, made once: the floor
/// sends the same bytes as the layer without doing the work of making them.
static FIVE_HEADERS: LazyLock<HeaderMap> = LazyLock::new(|| {
    let mut headers = HeaderMap::new();
    let decision = Decision {
        allowed: true,
        limit: UNLIMITED,
        remaining: UNLIMITED.requests() - 1,
        reset: UNLIMITED.window().unwrap_or_default(),
        limits: UNLIMITED.into(),
        at: OffsetDateTime::now_utc(),
    };
    decision.write_headers(&mut headers);
    headers
});

fn five_static_headers(
    response: Result<Response<Body>, Infallible>,
) -> Result<Response<Body>, Infallible> {
    response.map(|mut response| {
        let headers = response.headers_mut();
        headers.reserve(FIVE_HEADERS.len());
        for (name, value) in FIVE_HEADERS.iter() {
            headers.insert(name.clone(), value.clone());
        }
        response
    })
}
