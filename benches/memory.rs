//! Bytes kept per active key by the limiter, per live key by the cache's set of live keys,
//! and what unauthenticated traffic leaves behind, measured with a counting global
//! allocator (`stats_alloc`), not estimated.
//!
//! ```sh
//! cargo bench --bench memory
//! ```
#![allow(clippy::print_stdout)] // a report

use nouvel_auth::nouvel;
use std::{alloc::System, convert::Infallible};

use axum::body::Body;
use http::{Request, Response};
use nouvel_auth::{
    key::ApiKey,
    limit::{AnyRateLimiter, MemoryRateLimiter, RateLimiter},
    store::CachedKeyStore,
    KeySpec, KeyStore, MemoryKeyStore, NouvelAuthLayer, RateLimit, RateLimits,
};
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};
use tower::{service_fn, Layer, ServiceExt};

/// Counts every allocation and deallocation.
#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes live on the heap now.
fn live() -> isize {
    let stats = ALLOCATOR.stats();
    // `realloc` is already folded into both totals.
    stats.bytes_allocated as isize - stats.bytes_deallocated as isize
}

/// What the layer with `limiter` keeps per active key at N = 60, over `keys` keys held to
/// `limits`.
async fn per_active_key<L: RateLimiter>(limiter: L, keys: usize, limits: RateLimits) -> f64 {
    let store = MemoryKeyStore::new();
    let profile = nouvel_auth::Profile::nouvel()
        .max_keys_per_account(None)
        .plan_limits(nouvel::SCALE, limits);
    let manager = profile.key_manager(store.clone());
    let account = manager
        .create_account("Bench", nouvel::SCALE)
        .await
        .unwrap();
    let mut bearers = Vec::new();
    for i in 0..keys {
        let spec = KeySpec::new(format!("key {i}"), [nouvel::GENERATE]);
        let key = manager.create_key(&account.id, spec).await.unwrap().key;
        bearers.push(format!("Bearer {}", key.expose_secret()));
    }
    let service =
        profile
            .layer(store)
            .limiter(limiter)
            .layer(service_fn(|_r: Request<Body>| async {
                Ok::<_, Infallible>(Response::new(Body::empty()))
            }));
    send(&service, &bearers[0]).await;
    let before = live();
    for bearer in &bearers[1..] {
        for _ in 0..60 {
            send(&service, bearer).await;
        }
    }
    (live() - before) as f64 / (keys - 1) as f64
}

fn main() {
    // cargo bench passes `--bench`; anything else (as in `cargo test --benches`) just checks.
    let keys: usize = if std::env::args().any(|a| a == "--bench") {
        10_000
    } else {
        100
    };

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Bytes per active key at N = 60: what the layer keeps for a key whose window is full
    // (its slot: the window's ring, the pending usage, the map entry), keys made first; with
    // the memory limiter, and with it chosen at run time (as the examples choose theirs).
    let minute = RateLimits::default();
    let per_key = rt.block_on(per_active_key(MemoryRateLimiter::new(), keys, minute));
    println!("layer: {per_key:.0} bytes per active key at N = 60 ({keys} keys; the records themselves are the store's, not counted)");
    let chosen = AnyRateLimiter::from(MemoryRateLimiter::new());
    let per_key = rt.block_on(per_active_key(chosen, keys, minute));
    println!(
        "layer with limit::AnyRateLimiter (memory): {per_key:.0} bytes per active key at N = 60"
    );
    let with_quota = RateLimits::new([RateLimit::default(), RateLimit::per_day(10_000)]).unwrap();
    let per_key = rt.block_on(per_active_key(MemoryRateLimiter::new(), keys, with_quota));
    println!("layer, 60 a minute and a daily quota: {per_key:.0} bytes per active key");

    // A million requests with random, well-formed but unknown keys through the layer.
    let requests = if keys == 10_000 { 1_000_000 } else { 1_000 };
    rt.block_on(async {
        let store = MemoryKeyStore::new();
        let keys = nouvel_auth::Profile::nouvel()
            .max_keys_per_account(None)
            .key_manager(store.clone());
        let account = keys.create_account("Bench", nouvel::SCALE).await.unwrap();
        keys.create_key(&account.id, KeySpec::new("real", [nouvel::GENERATE]))
            .await
            .unwrap();
        let service = NouvelAuthLayer::new(store).layer(service_fn(|_r: Request<Body>| async {
            Ok::<_, Infallible>(Response::new(Body::empty()))
        }));
        let bearers: Vec<String> = (0..1_000)
            .map(|_| format!("Bearer {}", ApiKey::generate().expose_secret()))
            .collect();
        // One round first, so lazily made runtime and layer state is not counted as growth.
        for bearer in &bearers {
            send(&service, bearer).await;
        }
        let before = live();
        for i in 0..requests {
            send(&service, &bearers[i % bearers.len()]).await;
        }
        println!(
            "{requests} requests with unknown keys: heap growth {} bytes",
            live() - before
        );
    });

    // The cache's set of live keys: bytes per key, and a flood of made-up keys against it.
    rt.block_on(async {
        let store = MemoryKeyStore::new();
        let manager = nouvel_auth::Profile::nouvel().max_keys_per_account(None).key_manager(store.clone());
        let account = manager.create_account("Bench", nouvel::SCALE).await.unwrap();
        for i in 0..keys {
            let spec = KeySpec::new(format!("key {i}"), [nouvel::GENERATE]);
            manager.create_key(&account.id, spec).await.unwrap();
        }
        let cache = CachedKeyStore::new(store);
        let before = live();
        cache.refuse_made_up_keys().await.unwrap();
        let per_key = (live() - before) as f64 / keys as f64;
        let now = time::OffsetDateTime::now_utc();
        let made_up: Vec<_> = (0..1_000).map(|_| ApiKey::generate().digest()).collect();
        for digest in &made_up {
            cache.lookup(digest, now).await.unwrap();
        }
        let before = live();
        for i in 0..requests {
            let now = now + std::time::Duration::from_micros(i as u64);
            cache.lookup(&made_up[i % made_up.len()], now).await.unwrap();
        }
        println!(
            "cache's live keys: {per_key:.1} bytes per live key ({keys} keys); {requests} made-up lookups: heap growth {} bytes",
            live() - before
        );
    });
}

async fn send<S>(service: &S, bearer: &str)
where
    S: tower::Service<Request<Body>> + Clone,
    S::Error: std::fmt::Debug,
{
    let request = Request::post("/api/v1/generate")
        .header("authorization", bearer)
        .body(Body::empty())
        .unwrap();
    let response = service.clone().oneshot(request).await.unwrap();
    std::hint::black_box(response);
}
