//! The rate limit itself: [`RateLimit`], the [`RateLimiter`] trait, its [`Decision`]s, and
//! the headers written from them.

use std::{cell::RefCell, future::Future, sync::OnceLock, task::Poll, time::Duration};

use http::{HeaderMap, HeaderName, HeaderValue};
use time::OffsetDateTime;

use crate::{BackendError, KeyId};

/// N requests per window W.
///
/// ```
/// use std::time::Duration;
/// use nouvel_auth::RateLimit;
///
/// assert_eq!(RateLimit::default(), RateLimit::new(60, Duration::from_secs(60)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    requests: u32,
    window: Duration,
}

impl RateLimit {
    /// `requests` per `window`. A window is kept to the millisecond and to at most
    /// 24 days; a zero window counts as one millisecond.
    #[must_use]
    pub const fn new(requests: u32, window: Duration) -> Self {
        Self { requests, window }
    }

    /// N: how many requests a window admits.
    #[must_use]
    pub const fn requests(self) -> u32 {
        self.requests
    }

    /// W: the window's length.
    #[must_use]
    pub const fn window(self) -> Duration {
        self.window
    }

    /// The window in milliseconds, as the limiters count it.
    pub(crate) fn window_millis(self) -> u32 {
        // 2^31 ms is 24.8 days: beyond any sensible window, and it keeps offsets in u32.
        u32::try_from(self.window.as_millis())
            .unwrap_or(u32::MAX)
            .clamp(1, 1 << 31)
    }
}

/// As the admin API shows it: `{"requests": n, "window_seconds": w}`.
impl serde::Serialize for RateLimit {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut limit = serializer.serialize_struct("RateLimit", 2)?;
        limit.serialize_field("requests", &self.requests)?;
        limit.serialize_field("window_seconds", &self.window.as_secs())?;
        limit.end()
    }
}

impl Default for RateLimit {
    /// The Nouvel API's limit: 60 requests per minute.
    fn default() -> Self {
        Self::new(60, Duration::from_secs(60))
    }
}

/// A limiter's answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request is admitted (and so recorded).
    pub allowed: bool,
    /// The limit that applied.
    pub limit: RateLimit,
    /// How many more requests the window admits now, this one counted as used.
    pub remaining: u32,
    /// Time until the oldest admitted request leaves the window: when `remaining` grows.
    pub reset: Duration,
}

/// The rate-limit headers on every response that reached the limiter, in the order they
/// are written: `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers),
/// then the `X-RateLimit-*` triple. A CORS layer must expose them (with `Retry-After` and
/// the profile's [expiry header](crate::Profile::expiry_header)) for browser code to read them.
///
/// ```
/// use nouvel_auth::limit::RATE_LIMIT_HEADERS;
///
/// let exposed = RATE_LIMIT_HEADERS.map(|name| name.to_string()).join(", ");
/// assert_eq!(
///     exposed,
///     "ratelimit-policy, ratelimit, x-ratelimit-limit, x-ratelimit-remaining, x-ratelimit-reset"
/// );
/// ```
pub const RATE_LIMIT_HEADERS: [HeaderName; 5] = [
    HeaderName::from_static("ratelimit-policy"),
    HeaderName::from_static("ratelimit"),
    HeaderName::from_static("x-ratelimit-limit"),
    HeaderName::from_static("x-ratelimit-remaining"),
    HeaderName::from_static("x-ratelimit-reset"),
];

impl Decision {
    /// Whole seconds until a slot frees, rounded up.
    #[must_use]
    pub fn reset_seconds(&self) -> u64 {
        let millis = u64::try_from(self.reset.as_millis()).unwrap_or(u64::MAX);
        millis.div_ceil(1000)
    }

    /// The `Retry-After` of a refusal: [`reset_seconds`](Self::reset_seconds), at least 1.
    #[must_use]
    pub fn retry_after(&self) -> u64 {
        self.reset_seconds().max(1)
    }

    /// Writes the [`RATE_LIMIT_HEADERS`], as the layer does on every response that reached
    /// the limiter.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        let (remaining, reset) = (self.remaining, self.reset_seconds());
        let (policy, limit) = limit_values(self.limit);
        let values = [
            policy,
            policy_item([("r", remaining.into()), ("t", reset)]),
            limit,
            number(remaining.into()),
            number(reset),
        ];
        // Room for exactly these five, so the map grows at most once for them; a response
        // with one header so far (as axum's empty ones) fits its first allocation of six.
        headers.reserve(values.len());
        for (name, value) in RATE_LIMIT_HEADERS.into_iter().zip(values) {
            headers.insert(name, value);
        }
    }
}

/// `RateLimit-Policy` and `X-RateLimit-Limit` for `limit`. They depend on the limit alone,
/// which most keys share, so each thread keeps the last pair it made: a response clones them
/// (a count on this thread's copy) instead of formatting and allocating its own.
fn limit_values(limit: RateLimit) -> (HeaderValue, HeaderValue) {
    thread_local! {
        static LAST: RefCell<Option<(RateLimit, HeaderValue, HeaderValue)>> =
            const { RefCell::new(None) };
    }
    let make = || {
        let requests = limit.requests.into();
        let policy = policy_item([("q", requests), ("w", limit.window.as_secs())]);
        (policy, number(requests))
    };
    // `try_with`: a response written while the thread's locals are torn down is made afresh.
    LAST.try_with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some((made_for, policy, count)) if *made_for == limit => {
                (policy.clone(), count.clone())
            }
            _ => {
                let (policy, count) = make();
                *last = Some((limit, policy.clone(), count.clone()));
                (policy, count)
            }
        }
    })
    .unwrap_or_else(|_| make())
}

/// A header value for `n`. Numbers below 4096 (every count and reset of a sensible limit)
/// come from a table made once, so writing them allocates nothing.
pub(crate) fn number(n: u64) -> HeaderValue {
    const TABLE: usize = 4096;
    static DIGITS: OnceLock<Vec<&'static str>> = OnceLock::new();
    let table = DIGITS.get_or_init(|| {
        // One leaked string for the whole table, made once per process.
        let all: &'static str = Box::leak(
            (0..TABLE)
                .map(|i| i.to_string())
                .collect::<String>()
                .into_boxed_str(),
        );
        let mut start = 0;
        (0..TABLE)
            .map(|i| {
                let len = i.to_string().len();
                start += len;
                &all[start - len..start]
            })
            .collect()
    });
    match usize::try_from(n).ok().and_then(|i| table.get(i)) {
        Some(digits) => HeaderValue::from_static(digits),
        // `itoa` rather than `HeaderValue::from(u64)`, which goes through `fmt`.
        None => HeaderValue::from_str(itoa::Buffer::new().format(n)).expect("digits"),
    }
}

/// `"per-key";a=1;b=2`: a structured-field list item with integer parameters, written
/// without `fmt` (which costs more than the rest of the headers together).
fn policy_item(parameters: [(&str, u64); 2]) -> HeaderValue {
    let mut text = [0u8; 64];
    let mut len = 0;
    let mut push = |bytes: &[u8]| {
        text[len..len + bytes.len()].copy_from_slice(bytes);
        len += bytes.len();
    };
    push(b"\"per-key\"");
    for (name, value) in parameters {
        push(b";");
        push(name.as_bytes());
        push(b"=");
        push(itoa::Buffer::new().format(value).as_bytes());
    }
    HeaderValue::from_bytes(&text[..len]).expect("ASCII by construction")
}

/// A header value from ASCII text made by this crate.
pub(crate) fn header_value(text: std::fmt::Arguments<'_>) -> HeaderValue {
    HeaderValue::try_from(text.to_string()).expect("the crate writes visible ASCII")
}

/// Decides whether a key may make one more request.
///
/// Keyed by [`KeyId`] only: a limiter never sees the key, nor anything an unauthenticated
/// client controls, since only requests that passed authentication, plan and permission
/// reach it.
///
/// A limiter keeps no map of keys of its own: what it remembers of a key is its
/// [`Window`](Self::Window), which the layer keeps beside the key's record, so that a
/// request reaches the record, the window and the usage counters through the store's one
/// lookup. The layer drops a key's window once [`is_idle`](Self::is_idle) says it holds
/// nothing and no record refers to it.
pub trait RateLimiter: Send + Sync + 'static {
    /// What the limiter keeps for one key (a memory limiter: the admitted requests in the
    /// window).
    type Window: Default + Send + Sync + 'static;

    /// Admits (and records) or refuses one request of `key` under `limit`, `window` being
    /// the key's. `now` is the layer's clock; a limiter shared by several instances may use
    /// its own clock instead.
    fn check(
        &self,
        window: &Self::Window,
        key: &KeyId,
        limit: RateLimit,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Decision, BackendError>> + Send;

    /// What [`check`](Self::check) would decide, if the limiter can decide without waiting
    /// (in memory, or a key known to be blocked); `Pending` (the default) sends the layer
    /// to `check`.
    ///
    /// The layer asks this first, in its `call`. A `Ready` is the decision, recorded as
    /// `check` would record it; `Pending` must record nothing, since `check` follows.
    ///
    /// ```
    /// use std::{task::Poll, time::Duration};
    /// use nouvel_auth::{
    ///     key::KeyId, limit::MemoryRateLimiter, limit::MemoryWindow, limit::RateLimiter,
    ///     RateLimit,
    /// };
    ///
    /// let (limiter, window) = (MemoryRateLimiter::new(), MemoryWindow::default());
    /// let limit = RateLimit::new(1, Duration::from_secs(60));
    /// let (key, now) = (KeyId::from("key_1"), time::OffsetDateTime::now_utc());
    /// let Poll::Ready(first) = limiter.check_now(&window, &key, limit, now) else { unreachable!() };
    /// assert!(first.allowed);
    /// let Poll::Ready(second) = limiter.check_now(&window, &key, limit, now) else { unreachable!() };
    /// assert!(!second.allowed);
    /// ```
    fn check_now(
        &self,
        window: &Self::Window,
        key: &KeyId,
        limit: RateLimit,
        now: OffsetDateTime,
    ) -> Poll<Decision> {
        let _ = (window, key, limit, now);
        Poll::Pending
    }

    /// Whether `window` remembers nothing that matters at `now` any more, so the layer may
    /// drop it.
    fn is_idle(&self, window: &Self::Window, now: OffsetDateTime) -> bool;
}

/// A shared limiter: several layers (or a test) can hold one.
impl<L: RateLimiter> RateLimiter for std::sync::Arc<L> {
    type Window = L::Window;

    fn check(
        &self,
        window: &Self::Window,
        key: &KeyId,
        limit: RateLimit,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Decision, BackendError>> + Send {
        (**self).check(window, key, limit, now)
    }

    fn check_now(
        &self,
        window: &Self::Window,
        key: &KeyId,
        limit: RateLimit,
        now: OffsetDateTime,
    ) -> Poll<Decision> {
        (**self).check_now(window, key, limit, now)
    }

    fn is_idle(&self, window: &Self::Window, now: OffsetDateTime) -> bool {
        (**self).is_idle(window, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(limit: RateLimit, remaining: u32) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let decision = Decision {
            allowed: true,
            limit,
            remaining,
            reset: Duration::from_millis(1_500),
        };
        decision.write_headers(&mut headers);
        headers
    }

    #[test]
    fn each_limit_gets_its_own_values_on_one_thread() {
        let minute = RateLimit::default();
        let big = RateLimit::new(u32::MAX, Duration::from_secs(3_600));
        for (limit, policy, count) in [
            (minute, r#""per-key";q=60;w=60"#, "60"),
            (big, r#""per-key";q=4294967295;w=3600"#, "4294967295"),
            (minute, r#""per-key";q=60;w=60"#, "60"),
        ] {
            let headers = headers(limit, 7);
            assert_eq!(headers["ratelimit-policy"], policy);
            assert_eq!(headers["x-ratelimit-limit"], count);
            assert_eq!(headers["ratelimit"], r#""per-key";r=7;t=2"#);
            assert_eq!(headers["x-ratelimit-remaining"], "7");
            assert_eq!(headers["x-ratelimit-reset"], "2");
        }
    }
}
