//! The Redis limiter against a real Redis: the same exactness rule, one limit across
//! instances, the local memory of blocked keys, and each fault policy.

mod common;

use std::{sync::Arc, time::Duration};

use common::{
    servers::{redis_url, unique, RedisServer},
    Keyed, T0,
};
use nouvel_auth::{
    key::KeyId,
    limit::RateLimiter,
    limit::{AnyRateLimiter, RedisFailure, RedisRateLimiter},
    BackendError, RateLimit,
};
use proptest::prelude::*;

async fn limiter(prefix: &str) -> Keyed<RedisRateLimiter> {
    Keyed::new(connect(prefix).await)
}

async fn connect(prefix: &str) -> RedisRateLimiter {
    RedisRateLimiter::connect(&redis_url(), &nouvel_auth::Profile::nouvel())
        .await
        .unwrap()
        .key_prefix(prefix)
}

fn at(ms: u64) -> time::OffsetDateTime {
    T0 + Duration::from_millis(ms)
}

#[test]
fn the_window_is_exact_on_redis() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let limiter = Keyed::new(runtime.block_on(connect(&unique("exact"))).layer_clock());
    proptest!(ProptestConfig::with_cases(40), |(
        n in 1u32..20,
        w in 1u64..3_000,
        arrivals in common::exactness::arrivals(300, 150),
    )| {
        let key = KeyId::from(unique("case"));
        let limit = RateLimit::new(n, Duration::from_millis(w));
        common::exactness::check(limit, &arrivals, |t| {
            runtime.block_on(limiter.check(&key, limit, at(t))).unwrap()
        })?;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_one_limit() {
    let prefix = unique("shared");
    let mut instances = Vec::new();
    for _ in 0..4 {
        instances.push(Arc::new(limiter(&prefix).await));
    }
    assert_eq!(admitted_of_240_at_once(instances).await, 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_one_limit_when_redis_is_chosen_at_run_time() {
    let prefix = unique("chosen");
    let mut instances = Vec::new();
    for _ in 0..4 {
        let limiter = AnyRateLimiter::from(connect(&prefix).await);
        instances.push(Arc::new(Keyed::new(limiter)));
    }
    assert_eq!(admitted_of_240_at_once(instances).await, 60);
}

/// How many of 240 requests of one key at one instant, spread over `instances`, are
/// admitted at the default limit.
async fn admitted_of_240_at_once<L: RateLimiter>(instances: Vec<Arc<Keyed<L>>>) -> usize {
    let key = KeyId::from("key_shared");
    let tasks: Vec<_> = (0..240)
        .map(|i| {
            let (limiter, key) = (instances[i % instances.len()].clone(), key.clone());
            tokio::spawn(
                async move { limiter.check(&key, RateLimit::default(), T0).await.unwrap() },
            )
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        admitted += usize::from(task.await.unwrap().allowed);
    }
    admitted
}

#[tokio::test]
async fn headers_come_from_redis_time() {
    let limiter = limiter(&unique("time")).await;
    let key = KeyId::from("k");
    let limit = RateLimit::new(2, Duration::from_secs(30));
    let first = limiter.check(&key, limit, T0).await.unwrap();
    assert!(first.allowed);
    assert_eq!(first.remaining, 1);
    assert_eq!(first.reset_seconds(), 30);
    assert!(limiter.check(&key, limit, T0).await.unwrap().allowed);
    let refused = limiter.check(&key, limit, T0).await.unwrap();
    assert!(!refused.allowed);
    assert_eq!(refused.remaining, 0);
    assert!((29..=30).contains(&refused.retry_after()), "{refused:?}");
}

#[tokio::test]
async fn one_command_per_request_and_none_while_blocked() {
    let server = RedisServer::start().await;
    let limiter = Keyed::new(
        RedisRateLimiter::connect(&server.url(), &nouvel_auth::Profile::nouvel())
            .await
            .unwrap()
            .layer_clock(),
    );
    let key = KeyId::from("k");
    // Load the script once so the count below is of requests alone.
    limiter
        .check(&KeyId::from("warm-up"), RateLimit::default(), T0)
        .await
        .unwrap();
    let before = server.calls("evalsha").await;
    let total_before = server.data_commands().await;
    for _ in 0..60 {
        assert!(
            limiter
                .check(&key, RateLimit::default(), at(1))
                .await
                .unwrap()
                .allowed
        );
    }
    let refused = limiter
        .check(&key, RateLimit::default(), at(1_000))
        .await
        .unwrap();
    assert!(!refused.allowed);
    assert_eq!(server.calls("evalsha").await - before, 61);
    // Hammering while blocked costs no Redis call, and the headers still count down.
    for i in 0..100u64 {
        let refused = limiter
            .check(&key, RateLimit::default(), at(1_000 + i * 100))
            .await
            .unwrap();
        assert!(!refused.allowed);
        assert_eq!(refused.reset, Duration::from_millis(59_001 - i * 100));
    }
    assert_eq!(server.calls("evalsha").await - before, 61);
    // And the limiter sent no other command.
    assert_eq!(server.data_commands().await - total_before, 61);
    // Once the oldest request leaves the window, Redis is asked again.
    assert!(
        limiter
            .check(&key, RateLimit::default(), at(60_001))
            .await
            .unwrap()
            .allowed
    );
    assert_eq!(server.calls("evalsha").await - before, 62);
}

#[tokio::test]
async fn idle_keys_leave_nothing_in_redis() {
    let server = RedisServer::start().await;
    let limiter = Keyed::new(
        RedisRateLimiter::connect(&server.url(), &nouvel_auth::Profile::nouvel())
            .await
            .unwrap()
            .key_prefix("idle"),
    );
    limiter
        .check(
            &KeyId::from("k"),
            RateLimit::new(5, Duration::from_millis(200)),
            T0,
        )
        .await
        .unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut connection)
        .await
        .unwrap();
    // Named after its account (the hash tag), its key and its window.
    assert_eq!(keys, ["idle:{acc_keyed}:k:k:w200"]);
    let ttl: i64 = redis::cmd("PTTL")
        .arg("idle:{acc_keyed}:k:k:w200")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!((1..=200).contains(&ttl), "expiry set on the write: {ttl}");
}

/// Each policy against a Redis that dies mid-run, and recovery when it is back.
#[tokio::test]
async fn fault_policies_do_what_they_promise() {
    let mut server = RedisServer::start().await;
    let limit = RateLimit::new(1, Duration::from_secs(60));
    let timeout = Duration::from_millis(50);
    let make = |policy| {
        let url = server.url();
        async move {
            Keyed::new(
                RedisRateLimiter::connect(&url, &nouvel_auth::Profile::nouvel())
                    .await
                    .unwrap()
                    .timeout(timeout)
                    .on_failure(policy)
                    .layer_clock(),
            )
        }
    };
    let local = make(RedisFailure::FallBackToLocal).await;
    let closed = make(RedisFailure::FailClosed).await;
    let open = make(RedisFailure::FailOpen).await;
    let (k1, k2, k3) = (KeyId::from("k1"), KeyId::from("k2"), KeyId::from("k3"));

    server.stop();
    // Fall back: counts locally, so the limit still holds on this instance.
    assert!(local.check(&k1, limit, T0).await.unwrap().allowed);
    assert!(!local.check(&k1, limit, T0).await.unwrap().allowed);
    // Fail closed: an error, which the layer answers with 503.
    let error = closed.check(&k2, limit, T0).await.unwrap_err();
    assert!(
        matches!(error, BackendError::Failed(_) | BackendError::Timeout(_)),
        "{error:?}"
    );
    // Fail open: everything passes.
    for _ in 0..3 {
        assert!(open.check(&k3, limit, T0).await.unwrap().allowed);
    }

    // Back: each limiter uses Redis again without being told.
    server.resume().await;
    let fresh = KeyId::from("after");
    let mut recovered = false;
    for _ in 0..100 {
        if closed.check(&fresh, limit, T0).await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered, "the limiter reconnected");
    // The fallback limiter goes back to Redis too: it sees the admission made above
    // through another instance (until it reconnects, it counts locally and admits).
    let mut shared_again = false;
    for _ in 0..100 {
        if !local.check(&fresh, limit, T0).await.unwrap().allowed {
            shared_again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(shared_again, "the fallback limiter went back to Redis");
}

/// A Redis that hangs (paused clients) costs a request at most the timeout.
#[tokio::test]
async fn a_slow_redis_costs_at_most_the_timeout() {
    let server = RedisServer::start().await;
    let limiter = Keyed::new(
        RedisRateLimiter::connect(&server.url(), &nouvel_auth::Profile::nouvel())
            .await
            .unwrap()
            .timeout(Duration::from_millis(50))
            .on_failure(RedisFailure::FailClosed),
    );
    let client = redis::Client::open(server.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(3_000)
        .query_async(&mut admin)
        .await
        .unwrap();
    let error = limiter
        .check(&KeyId::from("k"), RateLimit::default(), T0)
        .await
        .unwrap_err();
    // The call gave up on its own timeout, before Redis (paused) answered.
    assert!(matches!(error, BackendError::Failed(_)), "{error:?}");
    assert!(error.to_string().contains("timed out"), "{error}");
}

/// An outage never raises a key's limit on one instance: the local count starts from what
/// the instance admitted through Redis, requests stop waiting for Redis after the first
/// failure, and a Redis back without its data does not admit a fresh window.
#[tokio::test]
async fn an_outage_never_raises_the_limit_on_one_instance() {
    let mut server = RedisServer::start().await;
    let limit = RateLimit::new(5, Duration::from_secs(60));
    let make = || {
        let url = server.url();
        async move {
            Keyed::new(
                RedisRateLimiter::connect(&url, &nouvel_auth::Profile::nouvel())
                    .await
                    .unwrap()
                    .timeout(Duration::from_millis(50))
                    .layer_clock(),
            )
        }
    };
    let (a, b) = (make().await, make().await);
    let key = KeyId::from("k");
    for ms in 0..3 {
        assert!(a.check(&key, limit, at(ms)).await.unwrap().allowed);
    }

    server.stop();
    // A admitted 3 through Redis: 2 more on its own, then refusals.
    let mut admitted = 0;
    for ms in 10..30 {
        admitted += usize::from(a.check(&key, limit, at(ms)).await.unwrap().allowed);
    }
    assert_eq!(admitted, 2, "A holds to 5 in all");
    // After the first failure, A decides at once, without waiting for Redis.
    assert!(matches!(
        a.check_now(&key, limit, at(31)),
        std::task::Poll::Ready(decision) if !decision.allowed
    ));
    // B admitted nothing through Redis: 5 on its own. Two instances: at most 2 × 5.
    let mut admitted = 0;
    for ms in 10..30 {
        admitted += usize::from(b.check(&key, limit, at(ms)).await.unwrap().allowed);
    }
    assert_eq!(admitted, 5);

    // Redis is back, empty. Within the window, A still counts its own 5: refused, though
    // Redis, having lost its log, would admit.
    server.resume().await;
    let client = redis::Client::open(server.url()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let mut asked_redis = false;
    for attempt in 0..100 {
        let decision = a.check(&key, limit, at(40 + attempt)).await.unwrap();
        assert!(!decision.allowed, "A admitted a sixth in one window");
        let logged: u64 = redis::cmd("ZCARD")
            .arg("nvl:rl:{acc_keyed}:k:k:w60000")
            .query_async(&mut redis)
            .await
            .unwrap();
        if logged > 0 {
            asked_redis = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(asked_redis, "A went back to Redis");
    // Once the window has passed, Redis decides alone again.
    assert!(a.check(&key, limit, at(61_000)).await.unwrap().allowed);
}
