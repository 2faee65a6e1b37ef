//! Bytes kept per active key by the limiter, and what unauthenticated traffic leaves behind,
//! measured with a counting global allocator (`stats_alloc`), not estimated.
//!
//! ```sh
//! cargo bench --bench memory
//! ```
#![allow(clippy::print_stdout)] // a report

use nouvel_auth::nouvel;
use std::{alloc::System, convert::Infallible, time::Duration};

use axum::body::Body;
use http::{Request, Response};
use nouvel_auth::{
    ApiKey, KeyId, KeyManager, KeySpec, MemoryKeyStore, MemoryRateLimiter, NouvelAuthLayer,
    RateLimit, RateLimiter,
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

fn main() {
    // cargo bench passes `--bench`; anything else (as in `cargo test --benches`) just checks.
    let keys: usize = if std::env::args().any(|a| a == "--bench") {
        10_000
    } else {
        100
    };

    // Bytes per active key at N = 60: each key with a full window of 60 admissions.
    let ids: Vec<KeyId> = (0..keys)
        .map(|i| KeyId::from(format!("key_{i:016}")))
        .collect();
    let now = time::OffsetDateTime::now_utc();
    let before = live();
    let limiter = MemoryRateLimiter::new();
    for id in &ids {
        for i in 0..60 {
            let _ = limiter.check_now(id, RateLimit::default(), now + Duration::from_millis(i));
        }
    }
    let per_key = (live() - before) as f64 / keys as f64;
    println!("limiter: {per_key:.0} bytes per active key at N = 60 ({keys} keys; ids shared with the store, not counted)");

    // A million requests with random, well-formed but unknown keys through the layer.
    let requests = if keys == 10_000 { 1_000_000 } else { 1_000 };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = MemoryKeyStore::new();
        let keys = KeyManager::new(store.clone());
        let account = keys.create_account("Bench", nouvel::SCALE).await.unwrap();
        keys.create_key(&account.id, KeySpec::new("real", [nouvel::GENERATE]))
            .await
            .unwrap();
        let limiter = std::sync::Arc::new(MemoryRateLimiter::new());
        let service = NouvelAuthLayer::new(store)
            .limiter(limiter.clone())
            .layer(service_fn(|_r: Request<Body>| async {
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
            "{requests} requests with unknown keys: {} limiter entries, heap growth {} bytes",
            limiter.tracked_keys(),
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
