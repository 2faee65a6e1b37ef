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

use redis::{
    aio::ConnectionManager, cluster::ClusterClient, cluster_async::ClusterConnection, Script,
    ScriptInvocation,
};
use time::OffsetDateTime;

use super::{
    memory::{decide, unix_millis},
    MemoryWindow, Period, Scope, Subject, Verdict,
};
use crate::{
    metrics::count,
    quiet::{warn_quietly, Quiet},
    BackendError, Decision, RateLimit, RateLimiter, RateLimits,
};

/// Every limit of a list in one atomic script: each sliding window drops what left it and
/// counts, each quota reads its period's count; only if every one admits is the request
/// added to all of them. Each window is a sorted set whose members are the admission
/// times, expiring one window after its last admission; each quota a counter named after
/// its period, expiring after it; idle keys leave nothing behind. Refusals write nothing.
///
/// KEYS: one per limit, in the list's order. ARGV[1]: now in ms, or empty to use the
/// server's `TIME` (one clock for every instance's windows); then per limit `w` (a
/// window), N and W in ms, or `q` (a quota), N and the period's end in Unix ms (for its
/// expiry). Returns `{allowed, count₁, reset₁ (ms, windows only), count₂, reset₂, …}`.
const LIMITS: &str = r"
local now, stamp
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  stamp = t[1] .. t[2]
else
  now = tonumber(ARGV[1])
  stamp = ARGV[1]
end
local counts, allowed = {}, 1
for i = 1, #KEYS do
  local kind, n, w = ARGV[3 * i - 1], tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1])
  local count
  if kind == 'w' then
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - w)
    count = redis.call('ZCARD', KEYS[i])
  else
    count = tonumber(redis.call('GET', KEYS[i]) or '0')
  end
  counts[i] = count
  if count >= n then allowed = 0 end
end
local result = {allowed}
for i = 1, #KEYS do
  local kind, w = ARGV[3 * i - 1], tonumber(ARGV[3 * i + 1])
  local count, reset = counts[i], 0
  if allowed == 1 then
    if kind == 'w' then
      -- The time and the count make each member unique, even within one microsecond.
      redis.call('ZADD', KEYS[i], now, stamp .. ':' .. count)
      redis.call('PEXPIRE', KEYS[i], w)
    else
      redis.call('INCR', KEYS[i])
      -- A minute past the period's end, counted from now: instances' clocks may differ.
      redis.call('PEXPIRE', KEYS[i], math.max(w - now, 0) + 60000)
    end
    count = count + 1
  end
  if kind == 'w' then
    local oldest = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
    if oldest[2] then reset = tonumber(oldest[2]) + w - now end
  end
  result[2 * i] = count
  result[2 * i + 1] = reset
end
return result
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

/// The rate limiter on Redis: every limit of a key's list across every instance that shares
/// the Redis or Redis Cluster (feature `redis`).
///
/// * One round trip per request: an atomic Lua script over every limit of the list, sent
///   with `EVALSHA` (loaded again on `NOSCRIPT`), using Redis `TIME` as the windows' clock,
///   so instances' clocks may disagree (a quota's period is the instance's day or month).
/// * One Redis key per limit: `{prefix}:{<account id>}:k:<key id>:w<window ms>` for a
///   key's window (a sorted set of admission times), `…:d<day>` and `…:m<month>` for its
///   quotas (counters named after their period), `{prefix}:{<account id>}:a:…` for the
///   account's. The account id is the hash tag: on a Redis Cluster every limit of a request
///   is in one slot, so one script checks them all.
/// * A key the script refused is remembered (in its [`RedisWindow`]) until the refusing
///   limit frees: a client hammering past its limit costs no Redis call (headers stay
///   right).
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
/// * On a Redis Cluster, while a limit's slot has no reachable primary (a primary died and
///   its replica is not yet promoted), the same policy holds for that slot's keys; after a
///   promotion, what the replica had not yet received (Redis replicates asynchronously)
///   can be admitted again (the README states the bound measured on a real cluster).
///
/// ```no_run
/// # async fn run() -> Result<(), nouvel_auth::BackendError> {
/// use nouvel_auth::{limit::RedisRateLimiter, MemoryKeyStore, NouvelAuthLayer, Profile};
///
/// let limiter = RedisRateLimiter::connect("redis://127.0.0.1:6379", &Profile::nouvel()).await?;
/// let layer = NouvelAuthLayer::new(MemoryKeyStore::new()).limiter(limiter);
/// // A Redis Cluster: its nodes (any of them; the rest are discovered), comma-separated.
/// let cluster = RedisRateLimiter::connect(
///     "redis://10.0.0.1:7000,redis://10.0.0.2:7000",
///     &Profile::nouvel(),
/// )
/// .await?;
/// # Ok(()) }
/// ```
pub struct RedisRateLimiter {
    connection: Connection,
    script: Script,
    prefix: String,
    timeout: Duration,
    on_failure: RedisFailure,
    server_time: bool,
    /// Monotonic milliseconds until which Redis is not tried; 0 while it answers.
    down_until: AtomicU64,
    /// Unix milliseconds (the layer's clock) when Redis last answered again after being
    /// down.
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

/// What a [`RedisRateLimiter`] remembers of one key or account in this instance: until when
/// Redis refuses it, and what this instance admitted (the counts it falls back to).
#[derive(Debug, Default)]
pub struct RedisWindow {
    /// Unix milliseconds until which the key is refused without asking Redis; 0 for none.
    blocked_until: AtomicU64,
    /// The list that refusal was under and which of its limits refused (`refusal_bits`): a
    /// key whose limits changed since (its plan's, say) asks Redis again.
    blocked_under: AtomicU64,
    local: MemoryWindow,
}

/// `limits` as one number, with the position of the limit that refused in its low bits.
fn refusal_bits(limits: RateLimits, refused: usize) -> u64 {
    use std::hash::BuildHasher;
    let hash = foldhash::fast::FixedState::with_seed(0).hash_one(limits);
    (hash & !0b11) | (refused as u64 & 0b11)
}

/// One Redis, or a Redis Cluster: a connection the script is sent on.
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Connection {
    async fn invoke(&self, invocation: &ScriptInvocation<'_>) -> redis::RedisResult<Vec<u64>> {
        match self.clone() {
            Self::Single(mut connection) => invocation.invoke_async(&mut connection).await,
            Self::Cluster(mut connection) => invocation.invoke_async(&mut connection).await,
        }
    }
}

impl RedisRateLimiter {
    /// Connects to the Redis at `url` (`redis://host:port/db`), its keys named after the
    /// application of `profile` (`nvl:rl:…` for Nouvel's). Several URLs separated by
    /// commas are the nodes of a Redis Cluster ([`connect_cluster`](Self::connect_cluster)).
    pub async fn connect(url: &str, profile: &crate::Profile) -> Result<Self, BackendError> {
        if url.contains(',') {
            return Self::connect_cluster(url.split(',').map(str::trim), profile).await;
        }
        let client = redis::Client::open(url).map_err(BackendError::failed)?;
        let connection = ConnectionManager::new(client)
            .await
            .map_err(BackendError::failed)?;
        Ok(Self::with(Connection::Single(connection), profile))
    }

    /// Connects to the Redis Cluster that `nodes` belong to (`redis://host:port` each; one
    /// that answers is enough, the others are discovered).
    pub async fn connect_cluster<'a>(
        nodes: impl IntoIterator<Item = &'a str>,
        profile: &crate::Profile,
    ) -> Result<Self, BackendError> {
        let nodes: Vec<&str> = nodes.into_iter().collect();
        let client = ClusterClient::builder(nodes)
            // The limiter's own timeout bounds each call; the client gives up soon after,
            // and finds the promoted replica on its next try.
            .retries(1)
            .connection_timeout(Duration::from_millis(500))
            .response_timeout(Duration::from_millis(500))
            .build()
            .map_err(BackendError::failed)?;
        let connection = client
            .get_async_connection()
            .await
            .map_err(BackendError::failed)?;
        Ok(Self::with(Connection::Cluster(connection), profile))
    }

    fn with(connection: Connection, profile: &crate::Profile) -> Self {
        crate::metrics::redis_started();
        Self {
            connection,
            script: Script::new(LIMITS),
            prefix: format!("{}:rl", profile.namespace()),
            timeout: Duration::from_millis(50),
            on_failure: RedisFailure::default(),
            server_time: true,
            down_until: AtomicU64::new(0),
            back_at: AtomicU64::new(0),
        }
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

    /// The Redis key of `limit` for `subject` at `now`: every key of one account in one
    /// hash slot (the account id is the hash tag), so one script checks a key's and its
    /// account's limits together on a Redis Cluster.
    fn redis_key<W>(
        &self,
        subject: Subject<'_, W>,
        limit: RateLimit,
        now: OffsetDateTime,
    ) -> String {
        let owner = match limit.scope() {
            Scope::Key => format!("k:{}", subject.key),
            Scope::Account => "a".to_owned(),
        };
        let count = match (limit.window_millis(), limit.period_at(now)) {
            (Some(window), _) => format!("w{window}"),
            (None, Some((start, _))) if limit.period() == Period::Day => {
                format!("d{}", start.unix_timestamp())
            }
            (None, Some((start, _))) => format!("m{}", start.unix_timestamp()),
            (None, None) => unreachable!("a limit is a window or a quota"),
        };
        format!("{}:{{{}}}:{owner}:{count}", self.prefix, subject.account)
    }

    async fn eval<W>(
        &self,
        subject: Subject<'_, W>,
        limits: RateLimits,
        now: OffsetDateTime,
    ) -> Result<Decision, BackendError> {
        let mut invocation = self.script.prepare_invoke();
        invocation.arg(if self.server_time {
            String::new()
        } else {
            unix_millis(now).to_string()
        });
        for limit in limits.iter() {
            invocation.key(self.redis_key(subject, limit, now));
            match (limit.window_millis(), limit.period_at(now)) {
                (Some(window), _) => invocation.arg("w").arg(limit.requests()).arg(window),
                (None, Some((_, end))) => invocation
                    .arg("q")
                    .arg(limit.requests())
                    .arg(unix_millis(end)),
                (None, None) => unreachable!("a limit is a window or a quota"),
            };
        }
        let call = self.connection.invoke(&invocation);
        let answer = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| BackendError::Timeout(self.timeout))?
            .map_err(BackendError::failed)?;
        if answer.len() != 1 + 2 * limits.len() {
            return Err(BackendError::failed(
                "the limit script answered out of shape",
            ));
        }
        let allowed = answer[0] == 1;
        let verdicts = limits.iter().enumerate().map(|(i, limit)| {
            let (count, reset) = (answer[1 + 2 * i], answer[2 + 2 * i]);
            let count = u32::try_from(count).unwrap_or(u32::MAX);
            let reset = match limit.period_at(now) {
                Some((_, end)) => {
                    Duration::from_millis(unix_millis(end).saturating_sub(unix_millis(now)))
                }
                None => Duration::from_millis(reset),
            };
            Verdict {
                limit,
                // What this limit alone answers: under its N before this request.
                admits: count.saturating_sub(u32::from(allowed)) < limit.requests(),
                remaining: limit.requests().saturating_sub(count),
                reset,
            }
        });
        Ok(Decision::of(limits, verdicts, now))
    }

    /// The refusal for a key known to be over a limit, if it still is at `now`.
    fn still_blocked(
        window: &RedisWindow,
        limits: RateLimits,
        now: OffsetDateTime,
    ) -> Option<Decision> {
        let now_ms = unix_millis(now);
        let until = window.blocked_until.load(Ordering::Relaxed);
        if now_ms >= until {
            return None;
        }
        let under = window.blocked_under.load(Ordering::Relaxed);
        let refused = (0..limits.len()).find(|&i| refusal_bits(limits, i) == under)?;
        let limit = limits.as_slice()[refused];
        Some(Decision {
            allowed: false,
            limit,
            remaining: 0,
            reset: Duration::from_millis(until - now_ms),
            limits,
            at: now,
        })
    }

    /// The decision while Redis is down, by the policy; `None` for "fail closed".
    fn without_redis(
        &self,
        subject: Subject<'_, RedisWindow>,
        limits: RateLimits,
        now: OffsetDateTime,
    ) -> Option<Decision> {
        count!(REDIS_FALLBACKS);
        match self.on_failure {
            RedisFailure::FallBackToLocal => Some(local(subject, limits, now)),
            RedisFailure::FailOpen => {
                let verdicts = limits.iter().map(|limit| Verdict {
                    limit,
                    admits: true,
                    remaining: limit.requests().saturating_sub(1),
                    reset: limit.window().unwrap_or_else(|| {
                        limit
                            .period_at(now)
                            .map_or(Duration::ZERO, |(_, end)| (end - now).unsigned_abs())
                    }),
                });
                Some(Decision::of(limits, verdicts, now))
            }
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

    /// Redis answered: if it was down, it is back (at `now`, Unix ms), and the local counts
    /// are checked too for a while.
    fn answered(&self, now: u64) {
        if self.down_until.swap(0, Ordering::Relaxed) != 0 {
            self.back_at.store(now, Ordering::Relaxed);
            count!(REDIS_RECOVERIES);
            tracing::info!("nouvel-auth: Redis rate limiter answers again");
        }
    }

    fn failed(
        &self,
        error: &BackendError,
        at: u64,
        subject: Subject<'_, RedisWindow>,
        limits: RateLimits,
        now: OffsetDateTime,
    ) -> Result<Decision, BackendError> {
        self.down_until
            .fetch_max(at + RETRY_EVERY_MS, Ordering::Relaxed);
        static FAULT: Quiet = Quiet::new();
        warn_quietly!(FAULT, %error, policy = ?self.on_failure, "nouvel-auth: Redis rate limiter unavailable; not asking it again for a second");
        self.without_redis(subject, limits, now)
            .ok_or_else(|| BackendError::failed(error.to_string()))
    }

    /// Redis's decision, counted in this instance's memory too. While a limit may still
    /// hold what Redis forgot (within a window of Redis coming back, or in the quota period
    /// it came back in), the local counts must admit as well: a Redis that lost its data
    /// would otherwise admit a full window or quota again.
    fn with_local(
        &self,
        decision: Decision,
        subject: Subject<'_, RedisWindow>,
        now: OffsetDateTime,
    ) -> Decision {
        if !decision.allowed {
            return decision;
        }
        let local = local(subject, decision.limits, now);
        let back_at = self.back_at.load(Ordering::Relaxed);
        let now_ms = unix_millis(now);
        let recently_back = back_at != 0
            && decision.limits.iter().any(|limit| {
                match (limit.window_millis(), limit.period_at(now)) {
                    (Some(window), _) => now_ms < back_at.saturating_add(window.into()),
                    (None, Some((start, _))) => back_at >= unix_millis(start),
                    (None, None) => false,
                }
            });
        if !local.allowed && recently_back {
            return local;
        }
        decision
    }
}

/// This instance's own decision, from the counts it kept beside Redis's.
fn local(subject: Subject<'_, RedisWindow>, limits: RateLimits, now: OffsetDateTime) -> Decision {
    let account = subject.account_window.map(|window| &window.local);
    decide(&subject.key_window.local, account, limits, now)
}

impl RateLimiter for RedisRateLimiter {
    type Window = RedisWindow;

    async fn check(
        &self,
        subject: Subject<'_, RedisWindow>,
        limits: RateLimits,
        now: OffsetDateTime,
    ) -> Result<Decision, BackendError> {
        if let Some(refusal) = Self::still_blocked(subject.key_window, limits, now) {
            return Ok(refusal);
        }
        let at = monotonic_ms();
        if !self.should_try(at) {
            return self
                .without_redis(subject, limits, now)
                .ok_or_else(|| BackendError::failed("Redis is down; retried once a second"));
        }
        match self.eval(subject, limits, now).await {
            Ok(decision) => {
                let now_ms = unix_millis(now);
                self.answered(now_ms);
                if !decision.allowed {
                    let refused = limits
                        .iter()
                        .position(|limit| limit == decision.limit)
                        .unwrap_or(0);
                    let until = now_ms + u64::try_from(decision.reset.as_millis()).unwrap_or(0);
                    let window = subject.key_window;
                    window
                        .blocked_under
                        .store(refusal_bits(limits, refused), Ordering::Relaxed);
                    window.blocked_until.store(until, Ordering::Relaxed);
                }
                Ok(self.with_local(decision, subject, now))
            }
            Err(error) => self.failed(&error, at, subject, limits, now),
        }
    }

    /// A key known to be blocked is refused without asking Redis; while Redis is down and
    /// not due for a retry, the policy decides at once.
    fn check_now(
        &self,
        subject: Subject<'_, RedisWindow>,
        limits: RateLimits,
        now: OffsetDateTime,
    ) -> Poll<Decision> {
        if let Some(refusal) = Self::still_blocked(subject.key_window, limits, now) {
            return Poll::Ready(refusal);
        }
        let down_until = self.down_until.load(Ordering::Relaxed);
        if down_until != 0 && monotonic_ms() < down_until {
            if let Some(decision) = self.without_redis(subject, limits, now) {
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
