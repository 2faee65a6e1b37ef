//! The exact sliding window on Redis, shared by every instance of an app.

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        OnceLock,
    },
    task::Poll,
    time::{Duration, Instant},
};

use redis::{aio::ConnectionManager, Script};
use time::OffsetDateTime;

use super::{memory::unix_millis, MemoryWindow};
use crate::{
    metrics::count,
    quiet::{warn_quietly, Quiet},
    Decision, RateLimit, RateLimiter,
};
use crate::{BackendError, KeyId};

/// The sliding log as one atomic script: drop what left the window, count, admit if under
/// the limit, and report the oldest admitted request. One sorted set per API key, its
/// members the admission times; the key expires one window after its last admission, so
/// idle keys leave nothing behind. Refusals write nothing.
///
/// KEYS[1] the key's log; ARGV[1] N; ARGV[2] W in ms; ARGV[3] now in ms, or empty to use
/// the server's `TIME` (one clock for every instance).
const SLIDING_LOG: &str = r"
local now, stamp
if ARGV[3] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  stamp = t[1] .. t[2]
else
  now = tonumber(ARGV[3])
  stamp = ARGV[3]
end
local n, w = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - w)
local count = redis.call('ZCARD', KEYS[1])
local allowed = 0
if count < n then
  -- The time and the count make each member unique, even within one microsecond.
  redis.call('ZADD', KEYS[1], now, stamp .. ':' .. count)
  redis.call('PEXPIRE', KEYS[1], w)
  count = count + 1
  allowed = 1
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local reset = 0
if oldest[2] then reset = tonumber(oldest[2]) + w - now end
return {allowed, count, reset}
";

/// What [`RedisRateLimiter`] does when Redis fails or is slower than its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RedisFailure {
    /// Count locally, in this instance's own memory, until Redis is back: the limit holds
    /// per instance instead of globally, counting what this instance admitted through
    /// Redis before the outage. The default.
    #[default]
    FallBackToLocal,
    /// Answer 503 `auth_unavailable`.
    FailClosed,
    /// Admit every request, as if each key's window were empty.
    FailOpen,
}

/// The rate limiter on Redis: one limit per key across every instance that shares the
/// Redis (feature `redis`).
///
/// * One round trip per request: an atomic Lua script sent with `EVALSHA` (loaded again
///   on `NOSCRIPT`), using Redis `TIME` as the clock, so instances' clocks may disagree.
/// * One Redis key per API key, `{prefix}:{<key id>}`, a sorted set of admission times;
///   the hash tag makes the slot follow the key id on Redis Cluster.
/// * A key the script refused is remembered (in its [`RedisWindow`]) until its oldest
///   request leaves the window: a client hammering past its limit costs no Redis call
///   (headers stay right).
/// * Each call has a timeout (default 50 ms); on a fault the limiter follows its
///   [`RedisFailure`] policy and logs a warning at most every 10 s. From the first fault
///   on, requests stop waiting for Redis: they are decided at once by the policy, and at
///   most one request a second tries Redis again, until it answers (recovery needs
///   nothing).
/// * Every admission through Redis is also counted in this instance's memory, so the
///   local fallback starts from what the instance admitted before the outage, and for one
///   window after Redis is back (possibly empty, having lost its data) a request must pass
///   both counts. One instance thus never admits more than N per W for a key, outage or
///   not; K instances sharing a Redis that fails admit at most K × N per W while it is
///   down, and N per W as soon as it is back with its data.
///
/// ```no_run
/// # async fn run() -> Result<(), nouvel_auth::BackendError> {
/// use nouvel_auth::{limit::RedisRateLimiter, MemoryKeyStore, NouvelAuthLayer, Profile};
///
/// let limiter = RedisRateLimiter::connect("redis://127.0.0.1:6379", &Profile::nouvel()).await?;
/// let layer = NouvelAuthLayer::new(MemoryKeyStore::new()).limiter(limiter);
/// # Ok(()) }
/// ```
pub struct RedisRateLimiter {
    connection: ConnectionManager,
    script: Script,
    prefix: String,
    timeout: Duration,
    on_failure: RedisFailure,
    server_time: bool,
    /// Monotonic milliseconds until which Redis is not tried; 0 while it answers.
    down_until: AtomicU64,
    /// Monotonic milliseconds when Redis last answered again after being down.
    back_at: AtomicU64,
}

/// How often a Redis that failed is tried again.
const RETRY_EVERY_MS: u64 = 1_000;

/// Milliseconds on a monotonic clock of this process (never 0).
fn monotonic_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX) + 1
}

/// What a [`RedisRateLimiter`] remembers of one key in this instance: until when Redis
/// refuses it, and what this instance admitted (the count it falls back to).
#[derive(Debug, Default)]
pub struct RedisWindow {
    /// Unix milliseconds until which the key is refused without asking Redis; 0 for none.
    blocked_until: AtomicU64,
    /// The limit that refusal was under (`limit_bits`): a key whose limit changed since
    /// (its plan's, say) asks Redis again.
    blocked_under: AtomicU64,
    local: MemoryWindow,
}

/// `limit` as one number: its requests, and its window in milliseconds (at most a day).
fn limit_bits(limit: RateLimit) -> u64 {
    let window = u64::try_from(limit.window().as_millis()).unwrap_or(u64::MAX);
    (u64::from(limit.requests()) << 32) | (window & u64::from(u32::MAX))
}

impl RedisRateLimiter {
    /// Connects to the Redis at `url` (`redis://host:port/db`), its keys named after the
    /// application of `profile` (`nvl:rl:…` for Nouvel's).
    pub async fn connect(url: &str, profile: &crate::Profile) -> Result<Self, BackendError> {
        let client = redis::Client::open(url).map_err(BackendError::failed)?;
        let connection = ConnectionManager::new(client)
            .await
            .map_err(BackendError::failed)?;
        crate::metrics::redis_started();
        Ok(Self {
            connection,
            script: Script::new(SLIDING_LOG),
            prefix: format!("{}:rl", profile.namespace()),
            timeout: Duration::from_millis(50),
            on_failure: RedisFailure::default(),
            server_time: true,
            down_until: AtomicU64::new(0),
            back_at: AtomicU64::new(0),
        })
    }

    /// Prefixes every Redis key (default the profile's, `nvl:rl` for Nouvel's).
    #[must_use]
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long a call may take before the failure policy applies (default 50 ms).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// What to do when Redis fails or is slow (default: fall back to local counting).
    #[must_use]
    pub fn on_failure(mut self, policy: RedisFailure) -> Self {
        self.on_failure = policy;
        self
    }

    /// Uses the layer's clock instead of Redis `TIME`. Only for tests that drive time
    /// with a [`ManualClock`](crate::clock::ManualClock): instances' clocks would disagree.
    #[must_use]
    pub fn layer_clock(mut self) -> Self {
        self.server_time = false;
        self
    }

    async fn eval(
        &self,
        key: &KeyId,
        limit: RateLimit,
        now: u64,
    ) -> Result<Decision, BackendError> {
        let mut connection = self.connection.clone();
        let mut invocation = self.script.key(format!("{}:{{{key}}}", self.prefix));
        invocation
            .arg(limit.requests())
            .arg(limit.window_millis())
            .arg(if self.server_time {
                String::new()
            } else {
                now.to_string()
            });
        let call = invocation.invoke_async::<(u8, u32, u64)>(&mut connection);
        let (allowed, count, reset) = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| BackendError::Timeout(self.timeout))?
            .map_err(BackendError::failed)?;
        Ok(Decision {
            allowed: allowed == 1,
            limit,
            remaining: limit.requests().saturating_sub(count),
            reset: Duration::from_millis(reset),
        })
    }

    /// The refusal for a key known to be over its limit, if it still is at `now` (ms).
    fn still_blocked(window: &RedisWindow, limit: RateLimit, now: u64) -> Option<Decision> {
        let until = window.blocked_until.load(Ordering::Relaxed);
        let same_limit = window.blocked_under.load(Ordering::Relaxed) == limit_bits(limit);
        (now < until && same_limit).then(|| Decision {
            allowed: false,
            limit,
            remaining: 0,
            reset: Duration::from_millis(until - now),
        })
    }

    /// The decision while Redis is down, by the policy; `None` for "fail closed".
    fn without_redis(
        &self,
        window: &RedisWindow,
        limit: RateLimit,
        now: OffsetDateTime,
    ) -> Option<Decision> {
        count!(REDIS_FALLBACKS);
        match self.on_failure {
            RedisFailure::FallBackToLocal => Some(window.local.admit(limit, now)),
            RedisFailure::FailOpen => Some(Decision {
                allowed: true,
                limit,
                remaining: limit.requests().saturating_sub(1),
                reset: limit.window(),
            }),
            RedisFailure::FailClosed => None,
        }
    }

    /// Whether this request should ask Redis: yes while it answers; while it is down, for
    /// one request a second (the one that claims the retry).
    fn should_try(&self, at: u64) -> bool {
        let down_until = self.down_until.load(Ordering::Relaxed);
        down_until == 0
            || (at >= down_until
                && self
                    .down_until
                    .compare_exchange(
                        down_until,
                        at + RETRY_EVERY_MS,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    )
                    .is_ok())
    }

    /// Redis answered: if it was down, it is back, and the local count is checked too for
    /// a window.
    fn answered(&self, at: u64) {
        if self.down_until.swap(0, Ordering::Relaxed) != 0 {
            self.back_at.store(at, Ordering::Relaxed);
            count!(REDIS_RECOVERIES);
            tracing::info!("nouvel-auth: Redis rate limiter answers again");
        }
    }

    fn failed(
        &self,
        error: &BackendError,
        at: u64,
        window: &RedisWindow,
        limit: RateLimit,
        now: OffsetDateTime,
    ) -> Result<Decision, BackendError> {
        self.down_until
            .fetch_max(at + RETRY_EVERY_MS, Ordering::Relaxed);
        static FAULT: Quiet = Quiet::new();
        warn_quietly!(FAULT, %error, policy = ?self.on_failure, "nouvel-auth: Redis rate limiter unavailable; not asking it again for a second");
        self.without_redis(window, limit, now)
            .ok_or_else(|| BackendError::failed(error.to_string()))
    }

    /// Redis's decision, counted in this instance's memory too. Within a window of Redis
    /// coming back, the local count must admit as well: a Redis that lost its data would
    /// otherwise admit a full window again.
    fn with_local(
        &self,
        decision: Decision,
        window: &RedisWindow,
        at: u64,
        now: OffsetDateTime,
    ) -> Decision {
        if !decision.allowed {
            return decision;
        }
        let local = window.local.admit(decision.limit, now);
        let back_at = self.back_at.load(Ordering::Relaxed);
        let window_ms = u64::from(decision.limit.window_millis());
        if !local.allowed && back_at != 0 && at < back_at.saturating_add(window_ms) {
            return local;
        }
        decision
    }
}

impl RateLimiter for RedisRateLimiter {
    type Window = RedisWindow;

    async fn check(
        &self,
        window: &RedisWindow,
        key: &KeyId,
        limit: RateLimit,
        now: OffsetDateTime,
    ) -> Result<Decision, BackendError> {
        let now_ms = unix_millis(now);
        if let Some(refusal) = Self::still_blocked(window, limit, now_ms) {
            return Ok(refusal);
        }
        let at = monotonic_ms();
        if !self.should_try(at) {
            return self
                .without_redis(window, limit, now)
                .ok_or_else(|| BackendError::failed("Redis is down; retried once a second"));
        }
        match self.eval(key, limit, now_ms).await {
            Ok(decision) => {
                self.answered(at);
                if !decision.allowed {
                    let until = now_ms + u64::try_from(decision.reset.as_millis()).unwrap_or(0);
                    window
                        .blocked_under
                        .store(limit_bits(limit), Ordering::Relaxed);
                    window.blocked_until.fetch_max(until, Ordering::Relaxed);
                }
                Ok(self.with_local(decision, window, at, now))
            }
            Err(error) => self.failed(&error, at, window, limit, now),
        }
    }

    /// A key known to be blocked is refused without asking Redis; while Redis is down and
    /// not due for a retry, the policy decides at once.
    fn check_now(
        &self,
        window: &RedisWindow,
        _key: &KeyId,
        limit: RateLimit,
        now: OffsetDateTime,
    ) -> Poll<Decision> {
        if let Some(refusal) = Self::still_blocked(window, limit, unix_millis(now)) {
            return Poll::Ready(refusal);
        }
        let down_until = self.down_until.load(Ordering::Relaxed);
        if down_until != 0 && monotonic_ms() < down_until {
            if let Some(decision) = self.without_redis(window, limit, now) {
                return Poll::Ready(decision);
            }
        }
        Poll::Pending
    }

    fn is_idle(&self, window: &RedisWindow, now: OffsetDateTime) -> bool {
        window.blocked_until.load(Ordering::Relaxed) <= unix_millis(now)
            && window.local.is_idle(now)
    }
}

impl fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("on_failure", &self.on_failure)
            .finish_non_exhaustive()
    }
}
