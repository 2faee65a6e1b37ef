//! The exact sliding window: property tests of both directions of the rule, a race of
//! many tasks on one key, and the rate-limit headers.

mod common;

use nouvel_auth::nouvel;
use std::{sync::Arc, time::Duration};

use common::{Harness, T0};
use nouvel_auth::{
    key::KeyId, limit::AnyRateLimiter, limit::MemoryRateLimiter, limit::RateLimiter, RateLimit,
};
use proptest::prelude::*;

fn check_exactness(limit: RateLimit, arrivals: &[u64]) -> Result<(), TestCaseError> {
    check_exactness_of(MemoryRateLimiter::new(), limit, arrivals)
}

fn check_exactness_of<L: RateLimiter>(
    limiter: L,
    limit: RateLimit,
    arrivals: &[u64],
) -> Result<(), TestCaseError> {
    let limiter = common::Keyed::new(limiter);
    let key = KeyId::from("key");
    common::exactness::check(limit, arrivals, |t| {
        match limiter.check_now(&key, limit, T0 + Duration::from_millis(t)) {
            std::task::Poll::Ready(decision) => decision,
            std::task::Poll::Pending => panic!("the memory limiter decides at once"),
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn the_window_is_exact_at_the_default_limit(arrivals in common::exactness::arrivals(3_000, 400)) {
        check_exactness(RateLimit::default(), &arrivals)?;
    }

    #[test]
    fn the_window_is_exact_for_any_limit(
        n in 1u32..20,
        w in 1u64..5_000,
        arrivals in common::exactness::arrivals(400, 400),
    ) {
        check_exactness(RateLimit::new(n, Duration::from_millis(w)), &arrivals)?;
    }

    /// Limits around the 64 admissions a window holds in place, where it moves to the heap.
    #[test]
    fn the_window_is_exact_past_its_inline_capacity(
        n in 40u32..140,
        w in 100u64..2_000,
        arrivals in common::exactness::arrivals(600, 400),
    ) {
        check_exactness(RateLimit::new(n, Duration::from_millis(w)), &arrivals)?;
    }

    /// The memory limiter chosen at run time is the same limiter.
    #[test]
    fn the_window_is_exact_when_chosen_at_run_time(
        n in 1u32..20,
        w in 1u64..5_000,
        arrivals in common::exactness::arrivals(400, 400),
    ) {
        let limiter = AnyRateLimiter::from(MemoryRateLimiter::new());
        check_exactness_of(limiter, RateLimit::new(n, Duration::from_millis(w)), &arrivals)?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_tasks_on_one_key_get_exactly_n() {
    let limiter = Arc::new(common::Keyed::new(MemoryRateLimiter::new()));
    let key = KeyId::from("key");
    let tasks: Vec<_> = (0..500)
        .map(|_| {
            let (limiter, key) = (limiter.clone(), key.clone());
            tokio::spawn(async move {
                limiter
                    .check(&key, RateLimit::default(), T0)
                    .await
                    .unwrap()
                    .allowed
            })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        admitted += usize::from(task.await.unwrap());
    }
    assert_eq!(admitted, 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_requests_through_the_layer_get_exactly_n() {
    let h = Harness::new().await;
    let key = Arc::new(h.key([nouvel::GENERATE]).await);
    let app = Arc::new(h.app.clone());
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (app, key) = (app.clone(), key.clone());
            tokio::spawn(async move {
                let auth = common::bearer(&key.key);
                common::send(&app, "POST", "/api/v1/generate", Some(&auth))
                    .await
                    .status
            })
        })
        .collect();
    let mut ok = 0;
    let mut limited = 0;
    for task in tasks {
        match task.await.unwrap().as_u16() {
            200 => ok += 1,
            429 => limited += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((ok, limited), (60, 140));
}

#[tokio::test]
async fn headers_count_down_and_429_says_when_to_retry() {
    let h = Harness::new().await;
    let key = h.key([nouvel::GENERATE]).await;
    for i in 1..=60u32 {
        let reply = h.send_key("POST", "/api/v1/generate", &key).await;
        assert_eq!(reply.status, 200);
        let remaining = (60 - i).to_string();
        // The first request, sent (i - 1) × 0.5 s ago, leaves the window 60 s after it.
        let reset = (120 - (i - 1)).div_ceil(2).to_string();
        assert_eq!(
            reply.header("ratelimit-policy"),
            Some(r#""per-key";q=60;w=60"#)
        );
        assert_eq!(
            reply.header("ratelimit"),
            Some(format!(r#""per-key";r={remaining};t={reset}"#).as_str())
        );
        assert_eq!(reply.header("x-ratelimit-limit"), Some("60"));
        assert_eq!(
            reply.header("x-ratelimit-remaining"),
            Some(remaining.as_str())
        );
        assert_eq!(reply.header("x-ratelimit-reset"), Some(reset.as_str()));
        h.advance(Duration::from_millis(500));
    }
    // 30 s after the first request: it leaves the window in 30 s.
    let refused = h.send_key("POST", "/api/v1/generate", &key).await;
    refused.assert_problem(429, "rate_limited");
    assert_eq!(refused.header("retry-after"), Some("30"));
    assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(refused.header("x-ratelimit-reset"), Some("30"));
    assert_eq!(refused.header("ratelimit"), Some(r#""per-key";r=0;t=30"#));
    assert_eq!(refused.body["limit"], 60);
    assert_eq!(refused.body["window_seconds"], 60);
    assert_eq!(refused.body["retry_after"], 30);
    assert_eq!(refused.header("www-authenticate"), None);
}

#[tokio::test]
async fn retry_after_rounds_up_and_is_never_zero() {
    let h = Harness::new().await;
    let key = h.key([nouvel::GENERATE]).await;
    for _ in 0..60 {
        assert_eq!(
            h.send_key("POST", "/api/v1/generate", &key).await.status,
            200
        );
    }
    // 200 ms before the oldest leaves: the wait rounds up to 1 s, not down to 0.
    h.advance(Duration::from_millis(59_800));
    let refused = h.send_key("POST", "/api/v1/generate", &key).await;
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(refused.body["retry_after"], 1);
    // 1.5 s before: 2.
    let h2 = Harness::new().await;
    let key2 = h2.key([nouvel::GENERATE]).await;
    for _ in 0..60 {
        h2.send_key("POST", "/api/v1/generate", &key2).await;
    }
    h2.advance(Duration::from_millis(58_500));
    assert_eq!(
        h2.send_key("POST", "/api/v1/generate", &key2)
            .await
            .header("retry-after"),
        Some("2")
    );
}

#[tokio::test]
async fn refusals_are_not_recorded_so_backing_off_works() {
    let h = Harness::new().await;
    let key = h.key([nouvel::GENERATE]).await;
    for _ in 0..60 {
        h.send_key("POST", "/api/v1/generate", &key).await;
    }
    // Hammering while over the limit does not push the reset back.
    for _ in 0..100 {
        h.advance(Duration::from_millis(100));
        assert_eq!(
            h.send_key("POST", "/api/v1/generate", &key).await.status,
            429
        );
    }
    h.advance(Duration::from_millis(50_000));
    assert_eq!(
        h.send_key("POST", "/api/v1/generate", &key).await.status,
        200
    );
}

#[tokio::test]
async fn limits_are_per_key() {
    let h = Harness::with_profile(|p| p.default_limits(RateLimit::new(2, Duration::from_secs(60))))
        .await;
    let a = h.key([nouvel::GENERATE]).await;
    let b = h.key([nouvel::GENERATE]).await;
    for _ in 0..2 {
        assert_eq!(h.send_key("POST", "/api/v1/generate", &a).await.status, 200);
    }
    assert_eq!(h.send_key("POST", "/api/v1/generate", &a).await.status, 429);
    assert_eq!(h.send_key("POST", "/api/v1/generate", &b).await.status, 200);
    assert_eq!(
        h.send_key("POST", "/api/v1/generate", &b)
            .await
            .header("ratelimit-policy"),
        Some(r#""per-key";q=2;w=60"#)
    );
}

/// Old and new keys of a rotation get the limit once between them during the grace.
async fn a_rotation_shares_one_window<L: nouvel_auth::limit::RateLimiter>(limiter: L) {
    let clock = nouvel_auth::clock::ManualClock::new(T0);
    let store = nouvel_auth::MemoryKeyStore::new();
    let keys = nouvel_auth::Profile::nouvel()
        .clock(clock.clone())
        .key_manager(store.clone());
    let account = keys.create_account("Acme", nouvel::SCALE).await.unwrap();
    let spec = nouvel_auth::KeySpec::new("k", [nouvel::PROJECTS_READ])
        .rate_limits(RateLimit::new(10, Duration::from_secs(60)));
    let old = keys.create_key(&account.id, spec).await.unwrap();
    let layer = nouvel_auth::Profile::nouvel()
        .clock(clock.clone())
        .layer(store)
        .limiter(limiter);
    let app = common::routes().layer(layer);
    let status = |key: &nouvel_auth::manage::NewKey| {
        let (app, auth) = (app.clone(), common::bearer(&key.key));
        async move {
            common::send(&app, "GET", "/api/v1/projects", Some(&auth))
                .await
                .status
                .as_u16()
        }
    };
    for _ in 0..6 {
        assert_eq!(status(&old).await, 200);
    }
    let new = keys
        .rotate_key(&account.id, &old.info.id, Duration::from_secs(3600))
        .await
        .unwrap();
    let (mut admitted, mut refused) = (0, 0);
    for i in 0..10 {
        let key = if i % 2 == 0 { &old } else { &new };
        match status(key).await {
            200 => admitted += 1,
            429 => refused += 1,
            other => panic!("{other}"),
        }
    }
    assert_eq!(
        (admitted, refused),
        (4, 6),
        "10 in the window, old and new together"
    );
    // A replacement of the replacement shares it too.
    let newest = keys
        .rotate_key(&account.id, &new.info.id, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(status(&newest).await, 429);
    clock.advance(Duration::from_secs(61));
    assert_eq!(status(&newest).await, 200);
}

#[tokio::test]
async fn a_rotation_shares_one_window_in_memory() {
    a_rotation_shares_one_window(MemoryRateLimiter::new()).await;
}

#[tokio::test]
async fn a_rotation_shares_one_window_on_redis() {
    let limiter = nouvel_auth::limit::RedisRateLimiter::connect(
        &common::servers::redis_url(),
        &nouvel_auth::Profile::nouvel(),
    )
    .await
    .unwrap()
    .key_prefix(common::servers::unique("rl_rotation"))
    .layer_clock();
    a_rotation_shares_one_window(limiter).await;
}
