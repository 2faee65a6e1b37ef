//! The shared backends, against the local Redis and PostgreSQL (`scripts/services`):
//! requests through the Redis limiter (throughput, p50/p99, Redis commands per request),
//! the cached PostgreSQL store's hit path against `MemoryKeyStore`, and the SQLite store's
//! lookup, bare and cached, against `MemoryKeyStore`, in one run.
//!
//! ```sh
//! cargo bench --bench backends
//! ```
#![allow(clippy::print_stdout)] // a report

use nouvel_auth::nouvel;
use std::{
    convert::Infallible,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::body::Body;
use http::{Request, Response};
use nouvel_auth::{
    limit::RedisRateLimiter,
    store::{CachedKeyStore, PostgresKeyStore, SqliteKeyStore},
    KeySpec, KeyStore, MemoryKeyStore, NouvelAuthLayer, RateLimit,
};
use tower::{service_fn, Layer, ServiceExt};

#[allow(dead_code, unreachable_pub)] // the tests' helpers; this bench uses a few
#[path = "../tests/common/servers.rs"]
mod servers;

const NEVER_LIMITED: RateLimit = RateLimit::new(u32::MAX, Duration::from_secs(60));

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; anything else (as in `cargo test --benches`) just checks.
    let (requests, lookups) = if std::env::args().any(|a| a == "--bench") {
        (20_000, 200_000)
    } else {
        (100, 100)
    };
    let (redis_url, database_url) = (servers::redis_url(), servers::database_url());

    let store = MemoryKeyStore::new();
    let keys = nouvel_auth::Profile::nouvel()
        .max_keys_per_account(None)
        .key_manager(store.clone());
    let account = keys.create_account("Bench", nouvel::SCALE).await.unwrap();
    let spec = KeySpec::new("bench", [nouvel::GENERATE]).rate_limits(NEVER_LIMITED);
    let key = keys.create_key(&account.id, spec.clone()).await.unwrap();
    let bearer = format!("Bearer {}", key.key.expose_secret());
    let prefix = servers::unique("bench");
    let limiter = RedisRateLimiter::connect(&redis_url, &nouvel_auth::Profile::nouvel())
        .await
        .unwrap()
        .key_prefix(prefix);
    let inner =
        service_fn(|_r: Request<Body>| async { Ok::<_, Infallible>(Response::new(Body::empty())) });
    let service = NouvelAuthLayer::new(store.clone())
        .limiter(limiter)
        .layer(inner);
    let send = |service: &_| {
        let request = Request::post("/api/v1/generate")
            .header("authorization", &bearer)
            .body(Body::empty())
            .unwrap();
        tower::ServiceExt::oneshot(Clone::clone(service), request)
    };
    send(&service).await.unwrap(); // loads the script

    // Latency, one request at a time.
    let calls_before = servers::client_commands(&redis_url).await;
    let mut latencies = Vec::with_capacity(requests);
    for _ in 0..requests {
        let started = Instant::now();
        let response = send(&service).await.unwrap();
        latencies.push(started.elapsed());
        assert!(response.status().is_success());
    }
    let calls = servers::client_commands(&redis_url).await - calls_before;
    latencies.sort();
    println!(
        "redis limiter, sequential: p50 {:?}, p99 {:?}; {:.3} Redis commands per request",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        calls as f64 / requests as f64
    );

    // Throughput, 32 requests in flight.
    let service = Arc::new(service);
    let started = Instant::now();
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (service, bearer) = (service.clone(), bearer.clone());
            tokio::spawn(async move {
                for _ in 0..requests / 32 {
                    let request = Request::post("/api/v1/generate")
                        .header("authorization", &bearer)
                        .body(Body::empty())
                        .unwrap();
                    (*service).clone().oneshot(request).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let done = (requests / 32 * 32) as f64;
    println!(
        "redis limiter, 32 in flight: {:.0} requests/s",
        done / started.elapsed().as_secs_f64()
    );

    // Lookups that hit: the cached PostgreSQL store against the memory store.
    let schema = servers::unique("nouvel_bench");
    let postgres =
        PostgresKeyStore::connect(&database_url, &schema, &nouvel_auth::Profile::nouvel())
            .await
            .unwrap();
    postgres.migrate().await.unwrap();
    let pg_keys = nouvel_auth::Profile::nouvel()
        .max_keys_per_account(None)
        .key_manager(postgres.clone());
    let pg_account = pg_keys
        .create_account("Bench", nouvel::SCALE)
        .await
        .unwrap();
    let pg_key = pg_keys.create_key(&pg_account.id, spec).await.unwrap();
    let cached = CachedKeyStore::new(postgres);
    let now = time::OffsetDateTime::now_utc();
    let (memory_digest, cached_digest) = (store.digest(&key.key), cached.digest(&pg_key.key));
    cached.lookup(&cached_digest, now).await.unwrap().unwrap();
    let time = |f: &dyn Fn() -> bool| {
        let started = Instant::now();
        for _ in 0..lookups {
            assert!(std::hint::black_box(f()));
        }
        started.elapsed() / lookups
    };
    use futures_util::FutureExt;
    let (mut memory_ns, mut cached_ns) = (Vec::new(), Vec::new());
    // Interleaved rounds, so drift on a shared machine hits both alike.
    for _ in 0..5 {
        memory_ns.push(time(&|| {
            store
                .lookup(&memory_digest, now)
                .now_or_never()
                .unwrap()
                .unwrap()
                .is_some()
        }));
        cached_ns.push(time(&|| {
            cached
                .lookup(&cached_digest, now)
                .now_or_never()
                .unwrap()
                .unwrap()
                .is_some()
        }));
    }
    memory_ns.sort();
    cached_ns.sort();
    let (memory, cached) = (memory_ns[2], cached_ns[2]);
    println!(
        "lookup hit: MemoryKeyStore {memory:?}, CachedKeyStore<PostgresKeyStore> {cached:?}, ratio {:.2}",
        cached.as_secs_f64() / memory.as_secs_f64()
    );

    // Lookups awaited one after another: the SQLite store, bare and behind the cache,
    // against the memory store.
    let path = std::env::temp_dir().join(format!("{}.db", servers::unique("nouvel_bench")));
    let sqlite = SqliteKeyStore::open(&path, &nouvel_auth::Profile::nouvel())
        .await
        .unwrap();
    sqlite.migrate().await.unwrap();
    let sqlite_keys = nouvel_auth::Profile::nouvel()
        .max_keys_per_account(None)
        .key_manager(sqlite.clone());
    let sqlite_account = sqlite_keys
        .create_account("Bench", nouvel::SCALE)
        .await
        .unwrap();
    let sqlite_key = sqlite_keys
        .create_key(
            &sqlite_account.id,
            KeySpec::new("bench", [nouvel::GENERATE]),
        )
        .await
        .unwrap();
    let sqlite_digest = sqlite.digest(&sqlite_key.key);
    let cached_sqlite = CachedKeyStore::new(sqlite.clone());
    let rounds = lookups / 50;
    async fn timed<K: KeyStore>(
        store: &K,
        digest: &nouvel_auth::key::KeyDigest,
        n: u32,
    ) -> Duration {
        let now = time::OffsetDateTime::now_utc();
        let started = Instant::now();
        for _ in 0..n {
            assert!(store.lookup(digest, now).await.unwrap().is_some());
        }
        started.elapsed() / n
    }
    let (mut memory_ns, mut sqlite_ns, mut cached_ns) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        memory_ns.push(timed(&store, &memory_digest, rounds).await);
        sqlite_ns.push(timed(&sqlite, &sqlite_digest, rounds).await);
        cached_ns.push(timed(&cached_sqlite, &sqlite_digest, rounds).await);
    }
    for times in [&mut memory_ns, &mut sqlite_ns, &mut cached_ns] {
        times.sort();
    }
    let (memory, bare, cached) = (memory_ns[2], sqlite_ns[2], cached_ns[2]);
    println!(
        "lookup (awaited): MemoryKeyStore {memory:?}, SqliteKeyStore {bare:?} (ratio {:.1}), CachedKeyStore<SqliteKeyStore> {cached:?} (ratio {:.2})",
        bare.as_secs_f64() / memory.as_secs_f64(),
        cached.as_secs_f64() / memory.as_secs_f64()
    );
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}
