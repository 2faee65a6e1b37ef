//! The request path, its parts, and its peers, measured in one run so their ratios hold
//! on a noisy machine. `scripts/bench-report` prints the ratios against the targets.
//!
//! ```sh
//! cargo bench --bench hot_path
//! scripts/bench-report
//! ```

use std::{hint::black_box, sync::Arc, time::Duration};

use axum::{body::Body, routing::post, Router};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use dashmap::DashMap;
use http::{Method, Request};
use nouvel_auth::{
    ApiKey, Decision, KeyId, KeyManager, KeySpec, KeyStore, MemoryKeyStore, MemoryRateLimiter,
    NouvelAuthLayer, Permission, Plan, RateLimit, RateLimiter, RouteTable, RATE_LIMIT_HEADERS,
};
use tower::{Layer, Service, ServiceExt};

const KEYS: usize = 100_000;
/// High enough never to refuse during a run.
const NEVER_LIMITED: RateLimit = RateLimit::new(u32::MAX, Duration::from_secs(60));

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The inner service every contestant wraps: bare axum, as the issue's baseline, with one
/// trivial handler on the request's route.
fn inner() -> Router {
    Router::new().route("/api/v1/generate", post(|| async {}))
}

fn request(authorization: &str) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri("/api/v1/generate")
        .header("authorization", authorization)
        .body(Body::empty())
        .unwrap()
}

struct Fixture {
    store: MemoryKeyStore,
    bearer: String,
    key: ApiKey,
}

/// A memory store with 100 000 keys, and the bearer header of one of them.
fn fixture(rt: &tokio::runtime::Runtime) -> Fixture {
    rt.block_on(async {
        let store = MemoryKeyStore::new();
        let account = store.create_account("Bench", Plan::Scale).await.unwrap();
        let mut last = None;
        for i in 0..KEYS {
            let spec =
                KeySpec::new(format!("key {i}"), [Permission::Generate]).rate_limit(NEVER_LIMITED);
            last = Some(store.create_key(&account.id, spec).await.unwrap().key);
        }
        let key = last.unwrap();
        Fixture {
            bearer: format!("Bearer {}", key.expose_secret()),
            store,
            key,
        }
    })
}

/// Benchmarks one `oneshot` of `service` per iteration, the request built outside the timing.
fn bench_service<S>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    service: S,
    bearer: &str,
) where
    S: Service<Request<Body>> + Clone,
    S::Error: std::fmt::Debug,
{
    c.bench_function(name, |b| {
        b.to_async(rt).iter_batched(
            || (service.clone(), request(bearer)),
            |(service, request)| async move { black_box(service.oneshot(request).await.unwrap()) },
            BatchSize::SmallInput,
        )
    });
}

#[derive(Clone)]
struct Bearer;

impl tower_governor::key_extractor::KeyExtractor for Bearer {
    type Key = Bytes;

    fn extract<T>(&self, request: &Request<T>) -> Result<Bytes, tower_governor::GovernorError> {
        request
            .headers()
            .get("authorization")
            .map(|v| Bytes::copy_from_slice(v.as_bytes()))
            .ok_or(tower_governor::GovernorError::UnableToExtractKey)
    }
}

fn requests(c: &mut Criterion) {
    let rt = runtime();
    let fixture = fixture(&rt);
    let _guard = rt.enter();

    bench_service(c, &rt, "request/bare", inner(), &fixture.bearer);

    let layer = NouvelAuthLayer::new(fixture.store.clone());
    bench_service(
        c,
        &rt,
        "request/nouvel_auth",
        layer.layer(inner()),
        &fixture.bearer,
    );

    let config = tower_governor::governor::GovernorConfigBuilder::default()
        .key_extractor(Bearer)
        .per_nanosecond(1)
        .burst_size(u32::MAX)
        .use_headers()
        .finish()
        .unwrap();
    let governor = tower_governor::GovernorLayer::new(Arc::new(config));
    bench_service(
        c,
        &rt,
        "request/tower_governor",
        governor.layer(inner()),
        &fixture.bearer,
    );

    let static_token = "s3cr3t-static-token";
    #[allow(deprecated)] // the peer the issue names: one static token, no store
    let validate = tower_http::validate_request::ValidateRequestHeaderLayer::bearer(static_token);
    bench_service(
        c,
        &rt,
        "request/tower_http_bearer",
        validate.layer(inner()),
        &format!("Bearer {static_token}"),
    );

    // Rejections: a malformed key (no hash, no lookup), and a 429 (no inner service).
    let malformed = "Bearer nvl_this-is-not-a-key";
    bench_service(
        c,
        &rt,
        "reject/malformed_401",
        layer.layer(inner()),
        malformed,
    );
    // The peers' cheapest refusal, for scale: tower-http's 401 for a wrong token (empty
    // body, no challenge, nothing in the extensions).
    bench_service(
        c,
        &rt,
        "reject/tower_http_bearer_401",
        validate.layer(inner()),
        malformed,
    );
    let limited = NouvelAuthLayer::new(fixture.store.clone());
    let limited_account = rt
        .block_on(fixture.store.create_account("Limited", Plan::Scale))
        .unwrap();
    let limited_key = rt
        .block_on(
            fixture.store.create_key(
                &limited_account.id,
                KeySpec::new("limited", [Permission::Generate])
                    .rate_limit(RateLimit::new(1, Duration::from_secs(3600))),
            ),
        )
        .unwrap();
    let limited_bearer = format!("Bearer {}", limited_key.key.expose_secret());
    let limited_service = limited.layer(inner());
    rt.block_on(limited_service.clone().oneshot(request(&limited_bearer)))
        .unwrap();
    bench_service(
        c,
        &rt,
        "reject/rate_limited_429",
        limited_service,
        &limited_bearer,
    );
}

/// The essential work, called directly: SHA-256 of a key, one map lookup of its digest,
/// one sliding-window check.
fn floor(c: &mut Criterion) {
    let rt = runtime();
    let fixture = fixture(&rt);
    let digests: DashMap<[u8; 32], u64> = DashMap::new();
    for i in 0..KEYS as u64 {
        digests.insert(ApiKey::generate().digest().as_bytes().to_owned(), i);
    }
    let target = *fixture.key.digest().as_bytes();
    digests.insert(target, 0);
    let limiter = MemoryRateLimiter::new();
    let id = KeyId::from("key_floor");
    let now = time::OffsetDateTime::now_utc();
    c.bench_function("floor/sha256+lookup+window", |b| {
        b.iter(|| {
            let digest = sha2::Digest::finalize(sha2::Digest::chain_update(
                <sha2::Sha256 as sha2::Digest>::new(),
                black_box(fixture.key.expose_secret()),
            ));
            let found = digests.get(digest.as_slice()).map(|v| *v);
            black_box((found, limiter.check_now(&id, NEVER_LIMITED, now)))
        })
    });
}

/// The headers of bare axum's response to the bench request (`parts` checks it):
/// `content-length` alone, in a map allocated for six, as the layer finds it.
fn axum_response_headers() -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from_static("0"),
    );
    headers
}

/// Each step alone, so a regression points at its part.
fn parts(c: &mut Criterion) {
    let rt = runtime();
    let fixture = fixture(&rt);
    let secret = fixture.key.expose_secret().to_owned();
    c.bench_function("part/parse_with_checksum", |b| {
        b.iter(|| ApiKey::parse(black_box(&secret)).unwrap())
    });
    c.bench_function("part/digest", |b| {
        b.iter(|| black_box(&fixture.key).digest())
    });
    let digest = fixture.key.digest();
    let now = time::OffsetDateTime::now_utc();
    c.bench_function("part/lookup_memory", |b| {
        b.to_async(&rt)
            .iter(|| async { fixture.store.lookup(black_box(&digest), now).await.unwrap() })
    });
    let routes = RouteTable::nouvel();
    c.bench_function("part/route_match", |b| {
        b.iter(|| {
            routes.access(
                black_box(&Method::GET),
                black_box("/api/v1/publish/pub_123"),
            )
        })
    });
    let limiter = MemoryRateLimiter::new();
    let id = KeyId::from("key_part");
    c.bench_function("part/window_check", |b| {
        b.iter(|| limiter.check_now(black_box(&id), NEVER_LIMITED, now))
    });
    let decision = Decision {
        allowed: true,
        limit: RateLimit::default(),
        remaining: 42,
        reset: Duration::from_millis(31_500),
    };
    // The map the layer writes into: bare axum's response to the bench request.
    let axum_headers = rt
        .block_on(inner().oneshot(request(&fixture.bearer)))
        .unwrap()
        .headers()
        .clone();
    assert_eq!(axum_headers, axum_response_headers());
    c.bench_function("part/response_headers", |b| {
        b.iter_batched(
            axum_response_headers,
            |mut headers| {
                decision.write_headers(&mut headers);
                headers
            },
            BatchSize::SmallInput,
        )
    });
    // A lower bound for any implementation of the contract: the same five names with
    // values made in advance, inserted into the same map.
    let value = http::HeaderValue::from_static("60");
    c.bench_function("part/five_static_headers", |b| {
        b.iter_batched(
            axum_response_headers,
            |mut headers| {
                headers.reserve(RATE_LIMIT_HEADERS.len());
                for name in RATE_LIMIT_HEADERS {
                    headers.insert(name, value.clone());
                }
                headers
            },
            BatchSize::SmallInput,
        )
    });
}

/// Two threads through one service: on one key, and on many keys.
fn contention(c: &mut Criterion) {
    let rt = runtime();
    let fixture = fixture(&rt);
    let many: Vec<String> = rt.block_on(async {
        let account = fixture
            .store
            .create_account("Many", Plan::Scale)
            .await
            .unwrap();
        let mut bearers = Vec::new();
        for i in 0..1_000 {
            let spec =
                KeySpec::new(format!("many {i}"), [Permission::Generate]).rate_limit(NEVER_LIMITED);
            let key = fixture
                .store
                .create_key(&account.id, spec)
                .await
                .unwrap()
                .key;
            bearers.push(format!("Bearer {}", key.expose_secret()));
        }
        bearers
    });
    let service = {
        let _guard = rt.enter();
        NouvelAuthLayer::new(fixture.store.clone()).layer(inner())
    };
    let one = vec![fixture.bearer.clone()];
    for (name, bearers) in [
        ("contention/two_threads_one_key", &one),
        ("contention/two_threads_many_keys", &many),
    ] {
        c.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let started = std::time::Instant::now();
                std::thread::scope(|scope| {
                    for thread in 0..2 {
                        let (service, bearers) = (service.clone(), bearers.clone());
                        scope.spawn(move || {
                            let rt = runtime();
                            rt.block_on(async {
                                for i in 0..iters / 2 {
                                    let bearer =
                                        &bearers[(i as usize + thread * 7) % bearers.len()];
                                    black_box(
                                        service.clone().oneshot(request(bearer)).await.unwrap(),
                                    );
                                }
                            })
                        });
                    }
                });
                // Per request: two threads ran iters requests in this time.
                started.elapsed()
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = requests, floor, parts, contention
}
criterion_main!(benches);
