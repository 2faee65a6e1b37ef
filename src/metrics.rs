//! What the crate reports through the [`metrics`](https://docs.rs/metrics) facade (feature
//! `metrics`), to whatever recorder the application installs (Prometheus, StatsD, …).
//! Labels take a handful of fixed values each: never a key id, an account or a path.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `nouvel_auth_requests_total` | counter | `outcome`: `admitted`, `passed` (no key needed), or the rejection's `code` | requests the layer decided |
//! | `nouvel_auth_check_duration_seconds` | histogram | | the layer's own checks, from the request's arrival to the inner service's call or the rejection (the handler's time is not in it) |
//! | `nouvel_auth_key_lookups_total` | counter | `result`: `hit`, `miss`, `stale`, `error` | lookups of a [`CachedKeyStore`](crate::store::CachedKeyStore): answered from the cache, by the store, from a stale entry while the store fails, or failed |
//! | `nouvel_auth_made_up_keys_refused_total` | counter | | digests no live key has, answered without a lookup |
//! | `nouvel_auth_redis_fallbacks_total` | counter | | requests the Redis limiter decided without Redis (it was failing) |
//! | `nouvel_auth_redis_recoveries_total` | counter | | times Redis answered again after failing |
//! | `nouvel_auth_usage_flushes_total` | counter | `result`: `ok`, `error` | batches of usage handed to the store |
//!
//! Without the feature these calls compile to nothing.

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

    /// The checks are over, with `outcome`.
    pub(crate) fn finish(self, outcome: &'static str) {
        metrics::histogram!(CHECK_DURATION).record(self.started.elapsed());
        metrics::counter!(REQUESTS, "outcome" => outcome).increment(1);
    }
}

/// Adds one to the counter `name`, labelled `label = value` when `label` is not empty.
pub(crate) fn count(name: &'static str, label: &'static str, value: &'static str) {
    #[cfg(feature = "metrics")]
    if label.is_empty() {
        metrics::counter!(name).increment(1);
    } else {
        metrics::counter!(name, label => value).increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (name, label, value);
}
