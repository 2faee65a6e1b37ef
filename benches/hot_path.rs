//! The request path, its parts, its rejections and its peers, each measured alone by
//! criterion, so a regression points at its part; `scripts/bench-report` prints the
//! figures. Each benchmark runs minutes after the one before, so the targets' ratios come
//! from `benches/targets.rs`, which measures them interleaved.
//!
//! ```sh
//! cargo bench --bench hot_path
//! scripts/bench-report
//! ```

mod common;

use nouvel_auth::{key::AccountId, limit::MemoryWindow, limit::Subject, nouvel};
use std::{hint::black_box, time::Duration};

use axum::body::Body;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::Request;
use nouvel_auth::{
    key::ApiKey, key::KeyId, limit::Decision, limit::MemoryRateLimiter, limit::RateLimiter,
    KeySpec, KeyStore, NouvelAuthLayer, RateLimit, RouteTable,
};
use tower::{Layer, Service, ServiceExt};

use common::{
    axum_response_headers, five_static_headers, fixture, governor, inner, match_route, request,
    runtime, Floor, MALFORMED, NEVER_LIMITED,
};

/// Benchmarks one `oneshot` of `service` per iteration, the request built outside the timing.
fn bench_service<S>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    service: &S,
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

fn requests(c: &mut Criterion) {
    let rt = runtime();
    let fixture = fixture(&rt);
    let _guard = rt.enter();

    bench_service(c, &rt, "request/bare", &inner(), &fixture.bearer);

    let layer = NouvelAuthLayer::new(fixture.store.clone());
    bench_service(
        c,
        &rt,
        "request/nouvel_auth",
        &layer.layer(inner()),
        &fixture.bearer,
    );

    bench_service(
        c,
        &rt,
        "request/tower_governor",
        &governor(inner()),
        &fixture.bearer,
    );

    // 10 000 distinct keys in round robin: every key's state is cold, as on a busy server.
    let service = layer.layer(inner());
    let mut next = 0;
    c.bench_function("request/nouvel_auth_10000_keys", |b| {
        b.to_async(&rt).iter_batched(
            || {
                next = (next + 1) % fixture.many.len();
                (service.clone(), request(&fixture.many[next]))
            },
            |(service, request)| async move { black_box(service.oneshot(request).await.unwrap()) },
            BatchSize::SmallInput,
        )
    });

    let static_token = "s3cr3t-static-token";
    #[allow(deprecated)] // the peer the issue names: one static token, no store
    let validate = tower_http::validate_request::ValidateRequestHeaderLayer::bearer(static_token);
    bench_service(
        c,
        &rt,
        "request/tower_http_bearer",
        &validate.layer(inner()),
        &format!("Bearer {static_token}"),
    );

    // Rejections: a malformed key (no hash, no lookup), and a 429 (no inner service).
    bench_service(
        c,
        &rt,
        "reject/malformed_401",
        &layer.layer(inner()),
        MALFORMED,
    );
    // The peers' cheapest refusal, for scale: tower-http's 401 for a wrong token (empty
    // body, no challenge, nothing in the extensions).
    bench_service(
        c,
        &rt,
        "reject/tower_http_bearer_401",
        &validate.layer(inner()),
        MALFORMED,
    );
    let limited = NouvelAuthLayer::new(fixture.store.clone());
    let limited_account = rt
        .block_on(
            nouvel_auth::Profile::nouvel()
                .max_keys_per_account(None)
                .key_manager(fixture.store.clone())
                .create_account("Limited", nouvel::SCALE),
        )
        .unwrap();
    let limited_key = rt
        .block_on(
            nouvel_auth::Profile::nouvel()
                .max_keys_per_account(None)
                .key_manager(fixture.store.clone())
                .create_key(
                    &limited_account.id,
                    KeySpec::new("limited", [nouvel::GENERATE])
                        .rate_limits(RateLimit::new(1, Duration::from_secs(3600))),
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
        &limited_service,
        &limited_bearer,
    );
}

/// The essential work, called directly (see [`Floor`]).
fn floor(c: &mut Criterion) {
    let rt = runtime();
    let fixture = fixture(&rt);
    let floor = Floor::new(&fixture);
    let secret = fixture.key.expose_secret();
    c.bench_function("floor/sha256+lookup+window", |b| {
        b.iter(|| floor.check(black_box(secret)))
    });
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
    c.bench_function("part/route_match", |b| b.iter(|| match_route(&routes)));
    let (limiter, window) = (MemoryRateLimiter::new(), MemoryWindow::default());
    let (id, account) = (KeyId::from("key_part"), AccountId::from("acc_part"));
    c.bench_function("part/window_check", |b| {
        b.iter(|| {
            let subject = Subject {
                key: black_box(&id),
                account: &account,
                key_window: &window,
                account_window: None,
            };
            limiter.check_now(subject, NEVER_LIMITED.into(), now)
        })
    });
    let decision = Decision {
        allowed: true,
        limit: RateLimit::default(),
        remaining: 42,
        reset: Duration::from_millis(31_500),
        limits: RateLimit::default().into(),
        at: now,
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
    c.bench_function("part/five_static_headers", |b| {
        b.iter_batched(
            axum_response_headers,
            five_static_headers,
            BatchSize::SmallInput,
        )
    });
}

/// Two threads through one service: on one key, and on many keys.
fn contention(c: &mut Criterion) {
    let rt = runtime();
    let fixture = fixture(&rt);
    let many: Vec<String> = rt.block_on(async {
        let keys = nouvel_auth::Profile::nouvel()
            .max_keys_per_account(None)
            .key_manager(fixture.store.clone());
        let account = keys.create_account("Many", nouvel::SCALE).await.unwrap();
        let mut bearers = Vec::new();
        for i in 0..1_000 {
            let spec =
                KeySpec::new(format!("many {i}"), [nouvel::GENERATE]).rate_limits(NEVER_LIMITED);
            let key = keys.create_key(&account.id, spec).await.unwrap().key;
            bearers.push(format!("Bearer {}", key.expose_secret()));
        }
        bearers
    });
    let service = {
        let _guard = rt.enter();
        NouvelAuthLayer::new(fixture.store.clone()).layer(inner())
    };
    let one = vec![fixture.bearer];
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
