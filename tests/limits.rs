//! Several limits at once (README, "Rate limit"): sliding windows and calendar quotas, per
//! key and per account, all or nothing, in memory and on Redis across instances; the
//! answers and headers they give; the admin API's lists.

mod common;

use std::time::Duration;

use common::{Harness, Keyed, T0};
use nouvel_auth::{
    key::KeyId,
    limit::{AnyRateLimiter, MemoryRateLimiter, RateLimiter, RedisRateLimiter, Scope},
    nouvel, KeySpec, RateLimit, RateLimits,
};
use proptest::prelude::*;
use serde_json::{json, Value};
use time::OffsetDateTime;

/// The rule, written plainly: a request of `key` at `t` is admitted only if every limit
/// admits it, and then counts in every one.
struct Model {
    limits: Vec<RateLimit>,
    /// Admitted requests: when (ms after `T0`), and by which key.
    admitted: Vec<(u64, usize)>,
}

impl Model {
    fn at(t: u64) -> OffsetDateTime {
        T0 + Duration::from_millis(t)
    }

    /// What each limit holds for `key` at `t`.
    fn counts(&self, t: u64, key: usize) -> Vec<u32> {
        self.limits
            .iter()
            .map(|limit| {
                let counted = |&&(a, by): &&(u64, usize)| {
                    let mine = limit.scope() == Scope::Account || by == key;
                    let inside = match limit.window() {
                        Some(window) => a + window.as_millis() as u64 > t,
                        None => limit.period_at(Self::at(a)) == limit.period_at(Self::at(t)),
                    };
                    mine && inside
                };
                self.admitted.iter().filter(counted).count() as u32
            })
            .collect()
    }

    /// Whether the request is admitted, and what each limit has left after it.
    fn decide(&mut self, t: u64, key: usize) -> (bool, Vec<u32>) {
        let counts = self.counts(t, key);
        let allowed = self
            .limits
            .iter()
            .zip(&counts)
            .all(|(limit, &count)| count < limit.requests());
        if allowed {
            self.admitted.push((t, key));
        }
        let left = self
            .limits
            .iter()
            .zip(&counts)
            .map(|(limit, &count)| limit.requests() - count - u32::from(allowed))
            .collect();
        (allowed, left)
    }
}

/// Feeds `arrivals` to `decide` and checks each decision against the model: admitted or
/// not, the remaining it reports (the least of the list's), and that a refusal names a
/// limit that refused.
fn check_against_model(
    limits: RateLimits,
    arrivals: &[(u64, usize)],
    mut decide: impl FnMut(u64, usize) -> nouvel_auth::limit::Decision,
) -> Result<(), TestCaseError> {
    let mut model = Model {
        limits: limits.iter().collect(),
        admitted: Vec::new(),
    };
    for &(t, key) in arrivals {
        let decision = decide(t, key);
        let (allowed, left) = model.decide(t, key);
        prop_assert_eq!(decision.allowed, allowed, "at {} by key {}", t, key);
        let reported = limits
            .iter()
            .position(|limit| limit == decision.limit)
            .expect("the decision names a limit of the list");
        if allowed {
            prop_assert_eq!(
                decision.remaining,
                *left.iter().min().unwrap(),
                "at {} by key {}: {:?}, model {:?}",
                t,
                key,
                decision,
                left
            );
            prop_assert_eq!(left[reported], decision.remaining);
        } else {
            let refused = limits.as_slice()[reported];
            prop_assert_eq!(
                left[reported],
                0,
                "{:?} did not refuse at {} by key {}: {:?}, model {:?}",
                refused,
                t,
                key,
                decision,
                left
            );
        }
    }
    Ok(())
}

fn lists() -> impl Strategy<Value = RateLimits> {
    (
        (1u32..6, 1u64..120),
        (2u32..10, 1u64..240, any::<bool>()),
        (3u32..20, any::<bool>(), any::<bool>()),
    )
        .prop_map(|((n1, w1), (n2, w2, second), (q, daily, per_account))| {
            let minutes = |m: u64| Duration::from_secs(m * 60);
            let mut limits = vec![RateLimit::new(n1, minutes(w1))];
            if second {
                limits.push(RateLimit::new(n2, minutes(w2)).per_account());
            }
            let quota = if daily {
                RateLimit::per_day(q)
            } else {
                RateLimit::per_month(q)
            };
            limits.push(if per_account {
                quota.per_account()
            } else {
                quota
            });
            RateLimits::new(limits).expect("distinct limits")
        })
}

/// Requests of two keys of one account over three days (across two midnights).
fn arrivals() -> impl Strategy<Value = Vec<(u64, usize)>> {
    prop::collection::vec((0u64..3 * 86_400_000, 0usize..2), 1..300).prop_map(|mut arrivals| {
        arrivals.sort_unstable();
        arrivals
    })
}

fn check_limiter<L: RateLimiter>(
    limiter: &Keyed<L>,
    limits: RateLimits,
    arrivals: &[(u64, usize)],
) -> Result<(), TestCaseError> {
    let keys = [KeyId::from("k0"), KeyId::from("k1")];
    check_against_model(limits, arrivals, |t, key| {
        match limiter.check_now(&keys[key], limits, Model::at(t)) {
            std::task::Poll::Ready(decision) => decision,
            std::task::Poll::Pending => panic!("the memory limiter decides at once"),
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_limit_of_a_list_holds_exactly_in_memory(limits in lists(), arrivals in arrivals()) {
        check_limiter(&Keyed::new(MemoryRateLimiter::new()), limits, &arrivals)?;
    }

    #[test]
    fn every_limit_of_a_list_holds_exactly_when_chosen_at_run_time(
        limits in lists(),
        arrivals in arrivals(),
    ) {
        let limiter = AnyRateLimiter::from(MemoryRateLimiter::new());
        check_limiter(&Keyed::new(limiter), limits, &arrivals)?;
    }
}

/// Two instances sharing one Redis (or one Redis Cluster) of `urls`, taking turns through
/// two days of requests of two keys of one account, give the decisions of one limiter.
async fn two_instances_decide_as_one(urls: &str) {
    let prefix = common::servers::unique("limits");
    let instance = || async {
        Keyed::new(
            RedisRateLimiter::connect(urls, &nouvel_auth::Profile::nouvel())
                .await
                .unwrap()
                .key_prefix(prefix.clone())
                .layer_clock(),
        )
    };
    let instances = [instance().await, instance().await];
    let limits = RateLimits::new([
        RateLimit::new(3, Duration::from_secs(600)),
        RateLimit::new(5, Duration::from_secs(3_600)).per_account(),
        RateLimit::per_day(9).per_account(),
    ])
    .unwrap();
    // A fixed walk through two days: bursts and gaps, both keys, both instances.
    let mut state = 0x2545_f491_u64;
    let mut t = 0;
    let mut arrivals = Vec::new();
    for _ in 0..400 {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        t += (state >> 33) % 900_000;
        arrivals.push((t, ((state >> 20) & 1) as usize));
    }
    let keys = [KeyId::from("k0"), KeyId::from("k1")];
    let mut decisions = Vec::new();
    for (turn, &(t, key)) in arrivals.iter().enumerate() {
        let decision = instances[turn % 2]
            .check(&keys[key], limits, Model::at(t))
            .await
            .unwrap();
        decisions.push(decision);
    }
    let mut replay = decisions.into_iter();
    check_against_model(limits, &arrivals, |_, _| replay.next().unwrap()).unwrap();
}

#[tokio::test]
async fn every_limit_of_a_list_holds_exactly_across_instances_on_redis() {
    two_instances_decide_as_one(&common::servers::redis_url()).await;
}

/// On a Redis Cluster (three primaries, a replica each), a key's and its account's limits
/// share one hash slot, so one script still checks them all.
#[tokio::test]
async fn every_limit_of_a_list_holds_exactly_across_instances_on_a_redis_cluster() {
    let cluster = common::servers::RedisCluster::start().await;
    two_instances_decide_as_one(&cluster.urls()).await;
}

/// A primary killed mid-window: no request fails (the outage policy counts locally while
/// the slot has no primary), then the promoted replica decides again. Prints what was
/// measured: the failover time, the admissions the replica had not received, and the
/// admissions in the window past N.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_failover_keeps_the_outage_promise() {
    let mut cluster = common::servers::RedisCluster::start().await;
    let prefix = common::servers::unique("failover");
    let instance = || async {
        Keyed::new(
            RedisRateLimiter::connect(&cluster.urls(), &nouvel_auth::Profile::nouvel())
                .await
                .unwrap()
                .key_prefix(prefix.clone()),
        )
    };
    let instances = [instance().await, instance().await];
    let n = 50;
    // A window longer than the whole test: every admission below is in one window.
    let limits = RateLimits::one(RateLimit::new(n, Duration::from_secs(600)));
    let (key, now) = (KeyId::from("k"), OffsetDateTime::now_utc);
    let mut admitted = 0;
    for turn in 0..20 {
        admitted += usize::from(
            instances[turn % 2]
                .check(&key, limits, now())
                .await
                .unwrap()
                .allowed,
        );
    }
    assert_eq!(admitted, 20);

    let redis_key = format!(
        "{prefix}:{{{}}}:k:k:w600000",
        Keyed::<RedisRateLimiter>::ACCOUNT
    );
    let killed = cluster.primary_of(&redis_key).await;
    cluster.nodes[killed].stop();
    let started = std::time::Instant::now();
    let (mut failures, mut promoted_after) = (0, None);
    while promoted_after.is_none() {
        for instance in &instances {
            match instance.check(&key, limits, now()).await {
                Ok(decision) => admitted += usize::from(decision.allowed),
                Err(_) => failures += 1,
            }
        }
        if let Some(primary) = cluster.try_primary_of(&redis_key).await {
            assert_ne!(primary, killed);
            promoted_after = Some((started.elapsed(), primary));
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no failover within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (failover, primary) = promoted_after.unwrap();
    let held: u64 = cluster.query(primary, &["ZCARD", &redis_key]).await;
    let unreplicated = 20u64.saturating_sub(held);
    // Both instances exhausted their local counts during the outage: at most N each.
    assert!(
        admitted <= 2 * n as usize,
        "{admitted} admitted by two instances"
    );
    // Until the window has passed, nothing more: the instances' own counts hold.
    let before = admitted;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut answered_by_redis = false;
    while std::time::Instant::now() < deadline && !answered_by_redis {
        for instance in &instances {
            match instance.check(&key, limits, now()).await {
                Ok(decision) => admitted += usize::from(decision.allowed),
                Err(_) => failures += 1,
            }
        }
        answered_by_redis = cluster.query::<u64>(primary, &["EXISTS", &redis_key]).await == 1
            && instances[0]
                .check(&KeyId::from("fresh"), limits, now())
                .await
                .is_ok_and(|decision| decision.allowed && decision.remaining == n - 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        answered_by_redis,
        "the limiter went back to the promoted replica"
    );
    assert_eq!(
        failures, 0,
        "no request failed: the outage policy decided while the slot had no primary"
    );
    assert_eq!(
        admitted, before,
        "no admission after the promotion in the same window"
    );
    eprintln!(
        "failover in {failover:?}; the promoted replica lacked {unreplicated} of 20 admissions; \
         {admitted} admitted in one window by 2 instances (N = {n}, {} past N)",
        admitted.saturating_sub(n as usize)
    );
}

/// What a quota admitted through Redis is counted on this instance too: an outage does not
/// give it a fresh quota.
#[tokio::test]
async fn an_outage_never_raises_a_quota_on_one_instance() {
    let mut server = common::servers::RedisServer::start().await;
    let limiter = Keyed::new(
        RedisRateLimiter::connect(&server.url(), &nouvel_auth::Profile::nouvel())
            .await
            .unwrap()
            .timeout(Duration::from_millis(50))
            .layer_clock(),
    );
    let (key, quota) = (KeyId::from("k"), RateLimits::one(RateLimit::per_day(5)));
    let at = |s: u64| T0 + Duration::from_secs(s);
    for s in 0..3 {
        assert!(limiter.check(&key, quota, at(s)).await.unwrap().allowed);
    }
    server.stop();
    let mut admitted = 0;
    for s in 10..30 {
        admitted += usize::from(limiter.check(&key, quota, at(s)).await.unwrap().allowed);
    }
    assert_eq!(admitted, 2, "5 a day in all, Redis or not");
    // Redis is back, empty: within the day it came back in, this instance's own count of 5
    // still refuses, though Redis, having lost its count, would admit.
    server.resume().await;
    let mut asked_redis = false;
    for attempt in 0..100 {
        let decision = limiter.check(&key, quota, at(40 + attempt)).await.unwrap();
        assert!(!decision.allowed, "a sixth admitted in one day");
        asked_redis = common::servers::command_stats(&server.url())
            .await
            .iter()
            .any(|(command, _)| command == "evalsha" || command == "eval");
        if asked_redis {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(asked_redis, "the instance went back to Redis");
    // The next day the local count starts again.
    let tomorrow = 12 * 3_600;
    assert!(
        limiter
            .check(&key, quota, at(tomorrow))
            .await
            .unwrap()
            .allowed
    );
}

fn two_a_minute_five_a_day() -> RateLimits {
    RateLimits::new([
        RateLimit::new(2, Duration::from_secs(60)),
        RateLimit::per_day(5),
    ])
    .unwrap()
}

#[tokio::test]
async fn a_spent_quota_answers_429_quota_exceeded_until_midnight() {
    let h =
        Harness::with_profile(|p| p.plan_limits(nouvel::SCALE, two_a_minute_five_a_day())).await;
    let key = h.key([nouvel::GENERATE]).await;
    let send = || h.send_key("POST", "/api/v1/generate", &key);

    let first = send().await;
    assert_eq!(first.status, 200);
    assert_eq!(
        first.header("ratelimit-policy"),
        Some(r#""minute";q=2;w=60, "day";q=5;w=86400"#)
    );
    // The minute has 1 left, the day 4: the minute is nearer to refusal.
    assert_eq!(first.header("ratelimit"), Some(r#""minute";r=1;t=60"#));
    assert_eq!(first.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(send().await.status, 200);
    let refused = send().await;
    refused.assert_problem(429, "rate_limited");
    assert_eq!(refused.body["limit"], 2);
    assert_eq!(refused.body["window_seconds"], 60);

    for minute in 1..=2 {
        h.advance(Duration::from_secs(60));
        let admitted = send().await;
        assert_eq!(admitted.status, 200, "minute {minute}");
        if minute == 2 {
            // 5 of the day used (this one counted): the day is nearer now.
            assert_eq!(admitted.header("ratelimit"), Some(r#""day";r=0;t=43080"#));
            assert_eq!(admitted.header("x-ratelimit-limit"), Some("5"));
            assert_eq!(admitted.header("x-ratelimit-remaining"), Some("0"));
        } else {
            assert_eq!(send().await.status, 200);
        }
    }
    // 12:02 UTC, the day's 5 spent: refused until midnight, whatever the minute says.
    h.advance(Duration::from_secs(60));
    let spent = send().await;
    spent.assert_problem(429, "quota_exceeded");
    let until_midnight = 12 * 3_600 - 180;
    assert_eq!(spent.body["limit"], 5);
    assert_eq!(spent.body["period"], "day");
    assert_eq!(spent.body["scope"], "key");
    assert_eq!(spent.body["retry_after"], until_midnight);
    assert_eq!(
        spent.header("retry-after"),
        Some(until_midnight.to_string().as_str())
    );
    assert_eq!(
        spent.header("ratelimit"),
        Some(&*format!(r#""day";r=0;t={until_midnight}"#))
    );
    assert!(spent.body["detail"]
        .as_str()
        .unwrap()
        .contains("5 requests per day"));

    h.advance(Duration::from_secs(until_midnight - 1));
    send().await.assert_problem(429, "quota_exceeded");
    h.advance(Duration::from_secs(1));
    assert_eq!(send().await.status, 200, "a new day");
}

#[tokio::test]
async fn an_account_quota_counts_every_key_that_holds_it() {
    let per_account = RateLimits::new([
        RateLimit::new(100, Duration::from_secs(60)),
        RateLimit::per_day(4).per_account(),
    ])
    .unwrap();
    let h = Harness::with_profile(|p| p.plan_limits(nouvel::SCALE, per_account)).await;
    let (a, b) = (
        h.key([nouvel::GENERATE]).await,
        h.key([nouvel::GENERATE]).await,
    );
    // A key with limits of its own does not hold the account's quota.
    let own = h
        .key_with(
            KeySpec::new("own", [nouvel::GENERATE])
                .rate_limits(RateLimit::new(100, Duration::from_secs(60))),
        )
        .await;
    let send = |key| h.send_key("POST", "/api/v1/generate", key);
    for key in [&a, &b, &a, &b] {
        assert_eq!(send(key).await.status, 200);
    }
    for key in [&a, &b] {
        let spent = send(key).await;
        spent.assert_problem(429, "quota_exceeded");
        assert_eq!(spent.body["scope"], "account");
        assert!(spent.body["detail"]
            .as_str()
            .unwrap()
            .contains("for this account"));
        assert_eq!(
            spent.header("ratelimit-policy"),
            Some(r#""minute";q=100;w=60, "account-day";q=4;w=86400"#)
        );
    }
    for _ in 0..5 {
        assert_eq!(send(&own).await.status, 200);
    }
}

#[tokio::test]
async fn a_rotation_shares_every_limit_with_its_predecessor() {
    let h = Harness::new().await;
    let spec = KeySpec::new("k", [nouvel::GENERATE]).rate_limits(RateLimit::per_month(3));
    let old = h.key_with(spec).await;
    for _ in 0..2 {
        assert_eq!(
            h.send_key("POST", "/api/v1/generate", &old).await.status,
            200
        );
    }
    h.keys.profile().flush_usage().await.unwrap();
    let new = h
        .keys
        .rotate_key(&h.account, &old.info.id, Duration::from_secs(3_600))
        .await
        .unwrap();
    let quota = new.info.rate_limits[0].quota.expect("a quota");
    assert_eq!(
        quota.used, 2,
        "the replacement shows its chain's use at once"
    );
    assert_eq!(
        h.send_key("POST", "/api/v1/generate", &new).await.status,
        200
    );
    for key in [&new, &old] {
        let spent = h.send_key("POST", "/api/v1/generate", key).await;
        spent.assert_problem(429, "quota_exceeded");
        assert_eq!(spent.body["period"], "month");
        // June has 30 days: its `w` is 30 days long.
        assert_eq!(
            spent.header("ratelimit-policy"),
            Some(r#""month";q=3;w=2592000"#)
        );
    }
}

/// A plan's list moves every key of the account when its plan changes.
#[tokio::test]
async fn a_plan_change_moves_keys_to_the_new_plans_list() {
    let h = Harness::with_profile(|p| {
        p.plan_limits(nouvel::SCALE, two_a_minute_five_a_day())
            .plan_limits(
                nouvel::BUSINESS,
                RateLimit::new(10, Duration::from_secs(60)),
            )
    })
    .await;
    let key = h.key([nouvel::GENERATE]).await;
    for _ in 0..2 {
        assert_eq!(
            h.send_key("POST", "/api/v1/generate", &key).await.status,
            200
        );
    }
    assert_eq!(
        h.send_key("POST", "/api/v1/generate", &key).await.status,
        429
    );
    h.keys.set_plan(&h.account, nouvel::BUSINESS).await.unwrap();
    let admitted = h.send_key("POST", "/api/v1/generate", &key).await;
    assert_eq!(admitted.status, 200);
    assert_eq!(
        admitted.header("ratelimit-policy"),
        Some(r#""per-key";q=10;w=60"#)
    );
}

/// The admin API takes a key's own list, shows the effective one with each quota's use,
/// and refuses lists it cannot hold, on the field that holds them.
#[tokio::test]
async fn the_admin_api_takes_and_shows_lists_of_limits() {
    let h =
        Harness::with_profile(|p| p.plan_limits(nouvel::SCALE, two_a_minute_five_a_day())).await;
    let token = "a".repeat(32);
    let admin =
        nouvel_auth::admin::router(h.keys.clone(), nouvel_auth::admin::AdminToken::new(&token));
    let call = |method: &'static str, path: String, body: Option<Value>| {
        let admin = admin.clone();
        async move {
            let request = http::Request::builder()
                .method(method)
                .uri(path)
                .header("authorization", format!("Bearer {}", "a".repeat(32)))
                .header("content-type", "application/json");
            let body = body.map_or_else(String::new, |b| b.to_string());
            let response = tower::ServiceExt::oneshot(
                admin,
                request.body(axum::body::Body::from(body)).unwrap(),
            )
            .await
            .unwrap();
            common::Reply::read(response).await
        }
    };
    let keys = format!("/accounts/{}/keys", h.account);

    // The plan's list, effective, with the quota's use.
    let made = call(
        "POST",
        keys.clone(),
        Some(json!({"name": "plan's", "permissions": ["generate"]})),
    )
    .await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    assert_eq!(
        made.body["rate_limits"],
        json!([
            {"requests": 2, "window_seconds": 60},
            {"requests": 5, "period": "day", "used": 0, "resets_at": "2026-06-02T00:00:00Z"},
        ])
    );
    assert_eq!(
        made.body["rate_limit"],
        json!({"requests": 2, "window_seconds": 60})
    );
    let key = nouvel_auth::key::ApiKey::parse(made.body["key"].as_str().unwrap()).unwrap();
    for _ in 0..2 {
        let reply = common::send(
            &h.app,
            "POST",
            "/api/v1/generate",
            Some(&common::bearer(&key)),
        )
        .await;
        assert_eq!(reply.status, 200);
    }
    h.keys.profile().flush_usage().await.unwrap();
    let read = call(
        "GET",
        format!("{keys}/{}", made.body["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(read.body["rate_limits"][1]["used"], 2, "{:?}", read.body);

    // A list of its own: a quota for the whole month, per account, and no window.
    let own = call(
        "POST",
        keys.clone(),
        Some(
            json!({"name": "own", "permissions": ["generate"], "rate_limits": [
                {"requests": 1000, "period": "month", "scope": "account"},
            ]}),
        ),
    )
    .await;
    assert_eq!(own.status, 201, "{:?}", own.body);
    assert_eq!(own.body["rate_limit"], Value::Null);
    assert_eq!(own.body["rate_limits"][0]["scope"], "account");
    assert_eq!(
        own.body["rate_limits"][0]["resets_at"],
        "2026-07-01T00:00:00Z"
    );

    // The single limit of before is a list of one.
    let single = call(
        "POST",
        keys.clone(),
        Some(json!({"name": "single", "permissions": ["generate"], "rate_limit": {"requests": 7, "window_seconds": 30}})),
    )
    .await;
    assert_eq!(
        single.body["rate_limits"],
        json!([{"requests": 7, "window_seconds": 30}])
    );

    let window = json!({"requests": 1, "window_seconds": 1});
    for (body, field) in [
        (
            json!({"rate_limits": [window, {"requests": 1, "window_seconds": 2}, {"requests": 1, "window_seconds": 3}, {"requests": 1, "window_seconds": 4}, {"requests": 1, "window_seconds": 5}]}),
            "rate_limits",
        ),
        (
            json!({"rate_limits": [{"requests": 1, "period": "day"}, {"requests": 9, "period": "day"}]}),
            "rate_limits",
        ),
        (json!({"rate_limits": []}), "rate_limits"),
        (
            json!({"rate_limits": [{"requests": 1, "period": "week"}]}),
            "rate_limits",
        ),
        (
            json!({"rate_limits": [{"requests": 1, "period": "day", "window_seconds": 5}]}),
            "rate_limits",
        ),
        (
            json!({"rate_limits": [{"requests": 0, "period": "day"}]}),
            "rate_limits",
        ),
        (
            json!({"rate_limits": [window], "rate_limit": window}),
            "rate_limits",
        ),
        (
            json!({"rate_limit": {"requests": 1, "window_seconds": 1, "scope": "team"}}),
            "rate_limit",
        ),
    ] {
        let mut body = body;
        body["name"] = json!("bad");
        body["permissions"] = json!(["generate"]);
        let refused = call("POST", keys.clone(), Some(body.clone())).await;
        refused.assert_problem(422, "invalid_request");
        assert_eq!(
            refused.body["errors"][0]["field"], field,
            "{body}: {:?}",
            refused.body
        );
    }
    let listed = call("GET", keys.clone(), None).await;
    assert_eq!(
        listed.body["keys"].as_array().unwrap().len(),
        3,
        "nothing half-made"
    );
}
