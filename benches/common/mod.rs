//! What `hot_path` and `targets` share: the request, bare axum and the peers around it, a
//! memory store with 100 000 keys, the floor, and the parts of the lower bound.
#![allow(dead_code, unreachable_pub)] // each bench uses a different part

// The peer, shared with `examples/bench_server.rs`.
mod governor;
pub use governor::governor;

use nouvel_auth::{key::AccountId, limit::MemoryWindow, limit::Subject, nouvel};
use std::{hint::black_box, time::Duration};

use axum::{body::Body, routing::post, Router};
use dashmap::DashMap;
use http::{HeaderMap, HeaderValue, Method, Request};
use nouvel_auth::{
    key::ApiKey, key::KeyId, limit::MemoryRateLimiter, limit::RateLimiter,
    limit::RATE_LIMIT_HEADERS, KeySpec, MemoryKeyStore, RateLimit, RouteTable,
};
use time::OffsetDateTime;

pub const KEYS: usize = 100_000;
/// High enough never to refuse during a run.
pub const NEVER_LIMITED: RateLimit = RateLimit::new(u32::MAX, Duration::from_secs(60));
/// Refused on its length: no hash, no lookup.
pub const MALFORMED: &str = "Bearer nvl_this-is-not-a-key";

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The inner service every contestant wraps: bare axum, as the baseline, with one
/// trivial handler on the request's route.
pub fn inner() -> Router {
    Router::new().route("/api/v1/generate", post(|| async {}))
}

pub fn request(authorization: &str) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri("/api/v1/generate")
        .header("authorization", authorization)
        .body(Body::empty())
        .unwrap()
}

pub struct Fixture {
    pub store: MemoryKeyStore,
    pub bearer: String,
    pub key: ApiKey,
    /// The bearer headers of `MANY` distinct keys, for requests in round robin.
    pub many: Vec<String>,
}

/// How many distinct keys the many-keys case sends in round robin.
pub const MANY: usize = 10_000;

/// A memory store with 100 000 keys, and the bearer header of one of them.
pub fn fixture(rt: &tokio::runtime::Runtime) -> Fixture {
    rt.block_on(async {
        let store = MemoryKeyStore::new();
        let keys = nouvel_auth::Profile::nouvel()
            .max_keys_per_account(None)
            .key_manager(store.clone());
        let account = keys.create_account("Bench", nouvel::SCALE).await.unwrap();
        let mut last = None;
        let mut many = Vec::with_capacity(MANY);
        for i in 0..KEYS {
            let spec =
                KeySpec::new(format!("key {i}"), [nouvel::GENERATE]).rate_limits(NEVER_LIMITED);
            let key = keys.create_key(&account.id, spec).await.unwrap().key;
            if i % (KEYS / MANY) == 0 {
                many.push(format!("Bearer {}", key.expose_secret()));
            }
            last = Some(key);
        }
        let key = last.unwrap();
        Fixture {
            bearer: format!("Bearer {}", key.expose_secret()),
            store,
            key,
            many,
        }
    })
}

/// The essential work, called directly: SHA-256 of a key, one map lookup of its digest
/// among 100 000 (which finds its window), one sliding-window check.
pub struct Floor {
    digests: DashMap<[u8; 32], MemoryWindow>,
    limiter: MemoryRateLimiter,
    id: KeyId,
    account: AccountId,
    now: OffsetDateTime,
}

impl Floor {
    pub fn new(fixture: &Fixture) -> Self {
        let digests = DashMap::new();
        for _ in 0..KEYS {
            digests.insert(
                ApiKey::generate().digest().as_bytes().to_owned(),
                MemoryWindow::default(),
            );
        }
        digests.insert(*fixture.key.digest().as_bytes(), MemoryWindow::default());
        Self {
            digests,
            limiter: MemoryRateLimiter::new(),
            id: KeyId::from("key_floor"),
            account: AccountId::from("acc_floor"),
            now: OffsetDateTime::now_utc(),
        }
    }

    pub fn check(&self, secret: &str) -> impl Sized {
        let digest = sha2::Digest::finalize(sha2::Digest::chain_update(
            <sha2::Sha256 as sha2::Digest>::new(),
            secret,
        ));
        let found = self.digests.get(digest.as_slice());
        found.map(|window| {
            let subject = Subject {
                key: &self.id,
                account: &self.account,
                key_window: &*window,
                account_window: None,
            };
            self.limiter
                .check_now(subject, NEVER_LIMITED.into(), self.now)
        })
    }
}

/// The route of the parts' benchmarks: a template with a parameter.
pub fn match_route(routes: &RouteTable) -> impl Sized {
    routes.access(
        black_box(&Method::GET),
        black_box("/api/v1/publish/pub_123"),
    )
}

/// The headers of bare axum's response to the bench request (`hot_path` checks it):
/// `content-length` alone, in a map allocated for six, as the layer finds it.
pub fn axum_response_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    headers
}

/// A lower bound for any implementation of the contract: the five names with values made
/// in advance, inserted into the response's map.
pub fn five_static_headers(mut headers: HeaderMap) -> HeaderMap {
    const VALUE: HeaderValue = HeaderValue::from_static("60");
    headers.reserve(RATE_LIMIT_HEADERS.len());
    for name in RATE_LIMIT_HEADERS {
        headers.insert(name, VALUE);
    }
    headers
}
