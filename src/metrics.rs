//! What the crate reports through the [`metrics`](https://docs.rs/metrics) facade (feature
//! `metrics`), to whatever recorder the application installs (Prometheus, StatsD, …).
//! Labels take a handful of fixed values each: never a key id, an account or a path.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `nouvel_auth_requests_total` | counter | `outcome`: `admitted`, `passed` (no key needed), or the rejection's `code` | requests the layer decided |
//! | `nouvel_auth_check_duration_seconds` | histogram | | the layer's own checks, from the request's arrival to the inner service's call or the rejection (the handler's time is not in it) |
//! | `nouvel_auth_key_lookups_total` | counter | `result`: `hit`, `miss`, `stale`, `error` | lookups of a `CachedKeyStore`: answered from the cache, by the store, from a stale entry while the store fails, or failed |
//! | `nouvel_auth_made_up_keys_refused_total` | counter | | digests no live key has, answered without a lookup |
//! | `nouvel_auth_redis_fallbacks_total` | counter | | requests the Redis limiter decided without Redis (it was failing) |
//! | `nouvel_auth_redis_recoveries_total` | counter | | times Redis answered again after failing |
//! | `nouvel_auth_usage_flushes_total` | counter | `result`: `ok`, `error` | batches of usage handed to the store |
//!
//! Every series exists from the start of the part that reports it, at zero and described
//! with its unit and help text (the layer's when a layer is made, the cache's when a
//! `CachedKeyStore` is, Redis' when a `RedisRateLimiter` connects), so dashboards and
//! alerts work before the first request. Without the feature these calls compile to
//! nothing.

/// Requests the layer decided, by `outcome`.
pub const REQUESTS: &str = "nouvel_auth_requests_total";
/// The layer's own check time, in seconds.
pub const CHECK_DURATION: &str = "nouvel_auth_check_duration_seconds";
/// Lookups of a cached store, by `result`.
pub const KEY_LOOKUPS: &str = "nouvel_auth_key_lookups_total";
/// Made-up keys answered without a lookup.
pub const MADE_UP_KEYS_REFUSED: &str = "nouvel_auth_made_up_keys_refused_total";
/// Requests decided without Redis.
pub const REDIS_FALLBACKS: &str = "nouvel_auth_redis_fallbacks_total";
/// Times Redis answered again after failing.
pub const REDIS_RECOVERIES: &str = "nouvel_auth_redis_recoveries_total";
/// Usage flushes, by `result`.
pub const USAGE_FLUSHES: &str = "nouvel_auth_usage_flushes_total";

/// Adds one to the counter named by the constant `name` (labelled `label => value`, both
/// literals). Its key is made at compile time, so counting builds, allocates and hashes
/// nothing; without the feature it compiles to nothing.
macro_rules! count {
    ($name:ident $(, $label:literal => $value:literal)?) => {{
        #[cfg(feature = "metrics")]
        {
            static LABELS: &[::metrics::Label] = &[$(::metrics::Label::from_static_parts($label, $value))?];
            static KEY: ::metrics::Key =
                ::metrics::Key::from_static_parts($crate::metrics::$name, LABELS);
            $crate::metrics::increment(&KEY);
        }
    }};
}
pub(crate) use count;

/// Where the crate's metrics say they come from.
#[cfg(feature = "metrics")]
static METADATA: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// Adds one to the counter `key`, on the recorder in use now.
#[cfg(feature = "metrics")]
pub(crate) fn increment(key: &metrics::Key) {
    metrics::with_recorder(|recorder| recorder.register_counter(key, &METADATA)).increment(1);
}

/// The outcomes of [`REQUESTS`] (`OUTCOMES`), and the key of each (made at compile time).
#[cfg(feature = "metrics")]
macro_rules! request_keys {
    ($($outcome:literal),+ $(,)?) => {
        const OUTCOMES: &[&str] = &[$($outcome),+];

        fn request_key(outcome: &str) -> Option<&'static metrics::Key> {
            $(
                if outcome == $outcome {
                    static LABELS: &[metrics::Label] =
                        &[metrics::Label::from_static_parts("outcome", $outcome)];
                    static KEY: metrics::Key = metrics::Key::from_static_parts(REQUESTS, LABELS);
                    return Some(&KEY);
                }
            )+
            None
        }
    };
}

#[cfg(feature = "metrics")]
request_keys!(
    "admitted",
    "passed",
    "missing_api_key",
    "invalid_authorization",
    "invalid_api_key",
    "expired_api_key",
    "disabled_api_key",
    "plan_required",
    "missing_permission",
    "route_not_allowed",
    "network_not_allowed",
    "rate_limited",
    "quota_exceeded",
    "auth_unavailable",
);

/// Describes the counter `name` and makes each of its series exist at zero: one per value
/// of `label`, or one without labels.
#[cfg(feature = "metrics")]
fn counter_at_zero(
    name: &'static str,
    help: &'static str,
    label: Option<(&'static str, &[&'static str])>,
) {
    metrics::describe_counter!(name, metrics::Unit::Count, help);
    match label {
        None => metrics::counter!(name).increment(0),
        Some((label, values)) => {
            for &value in values {
                metrics::counter!(name, label => value).increment(0);
            }
        }
    }
}

/// The layer's series, at zero and described: requests by outcome, check time, flushes.
pub(crate) fn layer_started() {
    #[cfg(feature = "metrics")]
    {
        counter_at_zero(
            REQUESTS,
            "Requests the layer decided, by outcome: admitted, passed (no key needed), or the rejection's code.",
            Some(("outcome", OUTCOMES)),
        );
        metrics::describe_histogram!(
            CHECK_DURATION,
            metrics::Unit::Seconds,
            "The layer's own checks of a request, from its arrival to the inner service's call or the rejection."
        );
        let _ = metrics::histogram!(CHECK_DURATION);
        counter_at_zero(
            USAGE_FLUSHES,
            "Batches of usage handed to the key store, by result.",
            Some(("result", &["ok", "error"])),
        );
    }
}

/// A cached store's series, at zero and described.
#[cfg(feature = "cache")]
pub(crate) fn cache_started() {
    #[cfg(feature = "metrics")]
    {
        counter_at_zero(
            KEY_LOOKUPS,
            "Lookups of a cached key store, by result: hit, miss, stale (served while the store fails) or error.",
            Some(("result", &["hit", "miss", "stale", "error"])),
        );
        counter_at_zero(
            MADE_UP_KEYS_REFUSED,
            "Digests no live key has, answered without a lookup.",
            None,
        );
    }
}

/// The Redis limiter's series, at zero and described.
#[cfg(feature = "redis")]
pub(crate) fn redis_started() {
    #[cfg(feature = "metrics")]
    {
        counter_at_zero(
            REDIS_FALLBACKS,
            "Requests the Redis limiter decided without Redis, while it failed.",
            None,
        );
        counter_at_zero(
            REDIS_RECOVERIES,
            "Times Redis answered again after failing.",
            None,
        );
    }
}

/// Times the layer's checks of one request. Without the feature the layer has no timer at
/// all: not even a zero-sized one changes its code.
#[cfg(feature = "metrics")]
pub(crate) struct CheckTimer {
    started: std::time::Instant,
}

#[cfg(feature = "metrics")]
impl CheckTimer {
    pub(crate) fn start() -> Self {
        Self {
            started: std::time::Instant::now(),
        }
    }

    /// The checks are over, with `outcome` (`admitted`, `passed` or a rejection's code).
    pub(crate) fn finish(self, outcome: &'static str) {
        static DURATION: metrics::Key = metrics::Key::from_static_name(CHECK_DURATION);
        let elapsed = self.started.elapsed();
        metrics::with_recorder(|recorder| recorder.register_histogram(&DURATION, &METADATA))
            .record(elapsed);
        match request_key(outcome) {
            Some(key) => increment(key),
            // An outcome missing from the table above is still counted, more slowly.
            None => metrics::counter!(REQUESTS, "outcome" => outcome).increment(1),
        }
    }
}

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use std::time::Duration;

    use super::request_key;
    use crate::{nouvel, Decision, KeyFormatError, RateLimit, Rejection};

    /// A 429 of `limit`: `rate_limited` for a window, `quota_exceeded` for a quota.
    fn refusal(limit: RateLimit) -> Rejection {
        Rejection::RateLimited(Box::new(Decision {
            allowed: false,
            limit,
            remaining: 0,
            reset: Duration::ZERO,
            limits: limit.into(),
            at: time::OffsetDateTime::UNIX_EPOCH,
        }))
    }

    #[test]
    fn every_outcome_has_a_key_made_at_compile_time() {
        let rejections = [
            Rejection::MissingApiKey,
            Rejection::InvalidAuthorization,
            Rejection::MalformedApiKey(KeyFormatError::Checksum),
            Rejection::UnknownApiKey,
            Rejection::ExpiredApiKey,
            Rejection::DisabledApiKey,
            Rejection::PlanRequired(nouvel::STARTER),
            Rejection::MissingPermission(nouvel::GENERATE),
            Rejection::RouteNotAllowed,
            Rejection::NetworkNotAllowed,
            refusal(RateLimit::default()),
            refusal(RateLimit::per_day(5)),
            Rejection::Unavailable,
        ];
        for rejection in &rejections {
            // A new variant fails to compile here until it is listed above.
            match rejection {
                Rejection::MissingApiKey
                | Rejection::InvalidAuthorization
                | Rejection::MalformedApiKey(_)
                | Rejection::UnknownApiKey
                | Rejection::ExpiredApiKey
                | Rejection::DisabledApiKey
                | Rejection::PlanRequired(_)
                | Rejection::MissingPermission(_)
                | Rejection::RouteNotAllowed
                | Rejection::NetworkNotAllowed
                | Rejection::RateLimited(_)
                | Rejection::Unavailable => {}
            }
            let code = rejection.code();
            let key = request_key(code).unwrap_or_else(|| panic!("no key for {code}"));
            assert_eq!(key.labels().next().unwrap().value(), code);
        }
        for &outcome in super::OUTCOMES {
            assert!(request_key(outcome).is_some(), "{outcome}");
        }
        let codes: std::collections::BTreeSet<&str> =
            rejections.iter().map(Rejection::code).collect();
        for code in &codes {
            assert!(super::OUTCOMES.contains(code), "{code} is not made at zero");
        }
        assert_eq!(
            super::OUTCOMES.len(),
            codes.len() + 2,
            "admitted, passed, the codes"
        );
    }
}
