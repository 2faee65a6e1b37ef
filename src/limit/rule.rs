//! The [`RateLimiter`] trait, its [`Decision`]s, and the headers written from them.

use std::{cell::RefCell, future::Future, io::Write, sync::OnceLock, task::Poll, time::Duration};

use http::{HeaderMap, HeaderName, HeaderValue};
use time::OffsetDateTime;

use super::limits::{RateLimit, RateLimits, Scope, Span};
use crate::{AccountId, BackendError, KeyId};

/// A limiter's answer for one request, under every limit of its list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request is admitted (and so counted in every limit).
    pub allowed: bool,
    /// The limit the answer reports: of those that refused, the one whose wait is longest;
    /// of an admission, the one with the least remaining (the nearest to refusal).
    pub limit: RateLimit,
    /// How many more requests that limit admits now, this one counted as used.
    pub remaining: u32,
    /// Time until `remaining` grows: until the oldest admitted request leaves a window,
    /// or until a quota's period ends.
    pub reset: Duration,
    /// Every limit the request was held to, for `RateLimit-Policy`.
    pub limits: RateLimits,
    /// When it was decided: a quota's `w` is the length of the period this falls in.
    pub at: OffsetDateTime,
}

/// One limit's part of a [`Decision`]: what it would answer alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub(crate) limit: RateLimit,
    pub(crate) admits: bool,
    /// Remaining once this request is counted (if every limit admits it), else as it is.
    pub(crate) remaining: u32,
    pub(crate) reset: Duration,
}

impl Decision {
    /// The decision of a list from its limits' verdicts, in the list's order: admitted if
    /// every one admits.
    #[inline]
    pub(crate) fn of(
        limits: RateLimits,
        verdicts: impl IntoIterator<Item = Verdict>,
        at: OffsetDateTime,
    ) -> Self {
        let mut reported: Option<Verdict> = None;
        let mut allowed = true;
        for verdict in verdicts {
            let nearer = match reported {
                None => true,
                // A refusal outranks any admission; among refusals the longest wait.
                Some(held) if !verdict.admits => held.admits || verdict.reset > held.reset,
                Some(held) => held.admits && verdict.remaining < held.remaining,
            };
            allowed &= verdict.admits;
            if nearer {
                reported = Some(verdict);
            }
        }
        let reported = reported.unwrap_or(Verdict {
            limit: limits.as_slice()[0],
            admits: true,
            remaining: 0,
            reset: Duration::ZERO,
        });
        Self {
            allowed,
            limit: reported.limit,
            remaining: reported.remaining,
            reset: reported.reset,
            limits,
            at,
        }
    }
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
    /// Whole seconds until `remaining` grows, rounded up.
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
    /// the limiter: `RateLimit-Policy` names every limit; the others report
    /// [`limit`](Self::limit).
    ///
    /// Each limit's name is its period (`"minute"`, `"day"`, `"month"`, `"30s"`, …, with
    /// `account-` before it when counted per account); a list of one sliding window per key
    /// is the contract's `"per-key"`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use nouvel_auth::{limit::Decision, RateLimit, RateLimits};
    /// use time::macros::datetime;
    ///
    /// let minute = RateLimit::new(60, Duration::from_secs(60));
    /// let day = RateLimit::per_day(1_000);
    /// let decision = Decision {
    ///     allowed: true,
    ///     limit: day,
    ///     remaining: 2,
    ///     reset: Duration::from_secs(3_600),
    ///     limits: RateLimits::new([minute, day]).unwrap(),
    ///     at: datetime!(2026-12-31 23:00 UTC),
    /// };
    /// let mut headers = http::HeaderMap::new();
    /// decision.write_headers(&mut headers);
    /// assert_eq!(headers["ratelimit-policy"], r#""minute";q=60;w=60, "day";q=1000;w=86400"#);
    /// assert_eq!(headers["ratelimit"], r#""day";r=2;t=3600"#);
    /// assert_eq!(headers["x-ratelimit-limit"], "1000");
    /// ```
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        let (remaining, reset) = (self.remaining, self.reset_seconds());
        let (policy, limit) = limit_values(self.limits, self.limit, self.at);
        let values = [
            policy,
            current_item(&self.limits, self.limit, remaining.into(), reset),
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

/// `RateLimit-Policy` and `X-RateLimit-Limit`. They depend on the list, the reported limit
/// and (for a month) the month's length alone, which most keys share, so each thread keeps
/// the last pair it made: a response clones them (a count on this thread's copy) instead of
/// formatting and allocating its own.
fn limit_values(
    limits: RateLimits,
    reported: RateLimit,
    at: OffsetDateTime,
) -> (HeaderValue, HeaderValue) {
    type Made = (RateLimits, RateLimit, u64, HeaderValue, HeaderValue);
    thread_local! {
        static LAST: RefCell<Option<Made>> = const { RefCell::new(None) };
    }
    // Only a month's `w` changes with the date; 0 stands for "no month in the list".
    let month = limits
        .iter()
        .find(|limit| limit.span() == Span::Month)
        .map_or(0, |month| month.seconds_at(at));
    let make = || {
        let mut policy = Vec::with_capacity(48 * limits.len());
        for (i, limit) in limits.iter().enumerate() {
            if i > 0 {
                policy.extend_from_slice(b", ");
            }
            push_name(&mut policy, &limits, limit);
            let window = limit.seconds_at(at);
            push_parameters(&mut policy, [("q", limit.requests().into()), ("w", window)]);
        }
        let policy = HeaderValue::from_bytes(&policy).expect("ASCII by construction");
        (policy, number(reported.requests().into()))
    };
    // `try_with`: a response written while the thread's locals are torn down is made afresh.
    LAST.try_with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some((list, limit, made_month, policy, count))
                if *list == limits && *limit == reported && *made_month == month =>
            {
                (policy.clone(), count.clone())
            }
            _ => {
                let (policy, count) = make();
                *last = Some((limits, reported, month, policy.clone(), count.clone()));
                (policy, count)
            }
        }
    })
    .unwrap_or_else(|_| make())
}

/// `RateLimit`'s item: the reported limit's name, `r` and `t`, written without `fmt` (which
/// costs more than the rest of the headers together) on the stack: a quoted name of at
/// most 30 bytes and two parameters of at most 23.
fn current_item(limits: &RateLimits, limit: RateLimit, remaining: u64, reset: u64) -> HeaderValue {
    const ROOM: usize = 96;
    let mut text = [0; ROOM];
    let mut rest = &mut text[..];
    push_name(&mut rest, limits, limit);
    push_parameters(&mut rest, [("r", remaining), ("t", reset)]);
    let written = ROOM - rest.len();
    HeaderValue::from_bytes(&text[..written]).expect("ASCII by construction")
}

/// The quoted name of `limit` in `limits` (see [`Decision::write_headers`]).
fn push_name(text: &mut impl Write, limits: &RateLimits, limit: RateLimit) {
    if limits.len() == 1 && limit.scope() == Scope::Key && limit.window().is_some() {
        return push(text, b"\"per-key\"");
    }
    push(text, b"\"");
    if limit.scope() == Scope::Account {
        push(text, b"account-");
    }
    match limit.span() {
        Span::Day => push(text, b"day"),
        Span::Month => push(text, b"month"),
        Span::Window(1_000) => push(text, b"second"),
        Span::Window(60_000) => push(text, b"minute"),
        Span::Window(3_600_000) => push(text, b"hour"),
        Span::Window(millis) if millis % 1_000 == 0 => {
            push(text, itoa::Buffer::new().format(millis / 1_000).as_bytes());
            push(text, b"s");
        }
        Span::Window(millis) => {
            push(text, itoa::Buffer::new().format(millis).as_bytes());
            push(text, b"ms");
        }
    }
    push(text, b"\"");
}

/// `;a=1;b=2`: structured-field integer parameters.
fn push_parameters(text: &mut impl Write, parameters: [(&str, u64); 2]) {
    for (name, value) in parameters {
        push(text, b";");
        push(text, name.as_bytes());
        push(text, b"=");
        push(text, itoa::Buffer::new().format(value).as_bytes());
    }
}

/// Appends `bytes` to `text`: a `Vec`, or room on the stack made large enough for them.
fn push(text: &mut impl Write, bytes: &[u8]) {
    text.write_all(bytes)
        .expect("room for every header this crate writes");
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

/// A header value from ASCII text made by this crate.
pub(crate) fn header_value(text: std::fmt::Arguments<'_>) -> HeaderValue {
    HeaderValue::try_from(text.to_string()).expect("the crate writes visible ASCII")
}

/// Whose request a limiter counts, and the windows the layer keeps for it.
#[derive(Debug)]
pub struct Subject<'a, W> {
    /// The key its limits are counted for: the first key of its rotation chain
    /// ([`KeyRecord::limit_id`](crate::KeyRecord::limit_id)).
    pub key: &'a KeyId,
    /// Its account.
    pub account: &'a AccountId,
    /// What the limiter keeps for the key.
    pub key_window: &'a W,
    /// What the limiter keeps for the account: given whenever a limit of the list is
    /// counted per account ([`Scope::Account`]).
    pub account_window: Option<&'a W>,
}

impl<W> Clone for Subject<'_, W> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<W> Copy for Subject<'_, W> {}

impl<'a, W> Subject<'a, W> {
    /// The same subject with each window seen through `part` (`None` if either has none).
    pub(crate) fn map<V>(self, part: impl Fn(&'a W) -> Option<&'a V>) -> Option<Subject<'a, V>> {
        let account_window = match self.account_window {
            Some(window) => Some(part(window)?),
            None => None,
        };
        Some(Subject {
            key: self.key,
            account: self.account,
            key_window: part(self.key_window)?,
            account_window,
        })
    }
}

/// Decides whether a key may make one more request, under every limit of its list.
///
/// Keyed by [`KeyId`] and [`AccountId`] only: a limiter never sees the key, nor anything an
/// unauthenticated client controls, since only requests that passed authentication, plan
/// and permission reach it.
///
/// A request is admitted only if every limit of the list admits it, and then counted in
/// every one; a refused request is counted in none.
///
/// A limiter keeps no map of keys of its own: what it remembers of a key (and of an
/// account) is its [`Window`](Self::Window), which the layer keeps beside the key's record,
/// so that a request reaches the record, the window and the usage counters through the
/// store's one lookup. The layer drops a window once [`is_idle`](Self::is_idle) says it
/// holds nothing and no record refers to it.
pub trait RateLimiter: Send + Sync + 'static {
    /// What the limiter keeps for one key or account (a memory limiter: the admitted
    /// requests in each window, the count of each quota).
    type Window: Default + Send + Sync + 'static;

    /// Admits (and counts) or refuses one request of `subject` under `limits`. `now` is the
    /// layer's clock; a limiter shared by several instances may use its own clock for its
    /// windows instead.
    fn check(
        &self,
        subject: Subject<'_, Self::Window>,
        limits: RateLimits,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Decision, BackendError>> + Send;

    /// What [`check`](Self::check) would decide, if the limiter can decide without waiting
    /// (in memory, or a key known to be blocked); `Pending` (the default) sends the layer
    /// to `check`.
    ///
    /// The layer asks this first, in its `call`. A `Ready` is the decision, counted as
    /// `check` would count it; `Pending` must count nothing, since `check` follows.
    ///
    /// ```
    /// use std::{task::Poll, time::Duration};
    /// use nouvel_auth::{
    ///     key::KeyId, limit::MemoryRateLimiter, limit::MemoryWindow, limit::RateLimiter,
    ///     limit::Subject, key::AccountId, RateLimit, RateLimits,
    /// };
    ///
    /// let (limiter, window) = (MemoryRateLimiter::new(), MemoryWindow::default());
    /// let (key, account) = (KeyId::from("key_1"), AccountId::from("acc_1"));
    /// let subject = Subject { key: &key, account: &account, key_window: &window, account_window: None };
    /// let limits = RateLimits::one(RateLimit::new(1, Duration::from_secs(60)));
    /// let now = time::OffsetDateTime::now_utc();
    /// let Poll::Ready(first) = limiter.check_now(subject, limits, now) else { unreachable!() };
    /// assert!(first.allowed);
    /// let Poll::Ready(second) = limiter.check_now(subject, limits, now) else { unreachable!() };
    /// assert!(!second.allowed);
    /// ```
    fn check_now(
        &self,
        subject: Subject<'_, Self::Window>,
        limits: RateLimits,
        now: OffsetDateTime,
    ) -> Poll<Decision> {
        let _ = (subject, limits, now);
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
        subject: Subject<'_, Self::Window>,
        limits: RateLimits,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Decision, BackendError>> + Send {
        (**self).check(subject, limits, now)
    }

    fn check_now(
        &self,
        subject: Subject<'_, Self::Window>,
        limits: RateLimits,
        now: OffsetDateTime,
    ) -> Poll<Decision> {
        (**self).check_now(subject, limits, now)
    }

    fn is_idle(&self, window: &Self::Window, now: OffsetDateTime) -> bool {
        (**self).is_idle(window, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn headers(limits: RateLimits, limit: RateLimit, remaining: u32) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let decision = Decision {
            allowed: true,
            limit,
            remaining,
            reset: Duration::from_millis(1_500),
            limits,
            at: datetime!(2027-02-10 12:00 UTC),
        };
        decision.write_headers(&mut headers);
        headers
    }

    #[test]
    fn each_list_gets_its_own_values_on_one_thread() {
        let minute = RateLimit::default();
        let big = RateLimit::new(u32::MAX, Duration::from_secs(3_600));
        let month = RateLimit::per_month(5_000).per_account();
        let list = RateLimits::new([RateLimit::new(5, Duration::from_secs(30)), month]).unwrap();
        for (limits, limit, policy, current, count) in [
            (
                minute.into(),
                minute,
                r#""per-key";q=60;w=60"#,
                r#""per-key";r=7;t=2"#,
                "60",
            ),
            (
                big.into(),
                big,
                r#""per-key";q=4294967295;w=3600"#,
                r#""per-key";r=7;t=2"#,
                "4294967295",
            ),
            (
                list,
                month,
                r#""30s";q=5;w=30, "account-month";q=5000;w=2419200"#,
                r#""account-month";r=7;t=2"#,
                "5000",
            ),
            (
                minute.into(),
                minute,
                r#""per-key";q=60;w=60"#,
                r#""per-key";r=7;t=2"#,
                "60",
            ),
        ] {
            let headers = headers(limits, limit, 7);
            assert_eq!(headers["ratelimit-policy"], policy);
            assert_eq!(headers["x-ratelimit-limit"], count);
            assert_eq!(headers["ratelimit"], current);
            assert_eq!(headers["x-ratelimit-remaining"], "7");
            assert_eq!(headers["x-ratelimit-reset"], "2");
        }
    }

    #[test]
    fn a_decision_reports_the_longest_refusal_or_the_nearest_admission() {
        let at = datetime!(2027-02-10 12:00 UTC);
        let (minute, day) = (RateLimit::default(), RateLimit::per_day(100));
        let limits = RateLimits::new([minute, day]).unwrap();
        let verdict = |limit, admits, remaining, reset| Verdict {
            limit,
            admits,
            remaining,
            reset: Duration::from_secs(reset),
        };
        let admitted = Decision::of(
            limits,
            [verdict(minute, true, 5, 10), verdict(day, true, 3, 900)],
            at,
        );
        assert!(admitted.allowed);
        assert_eq!((admitted.limit, admitted.remaining), (day, 3));
        let refused = Decision::of(
            limits,
            [verdict(minute, false, 0, 10), verdict(day, true, 3, 900)],
            at,
        );
        assert!(!refused.allowed);
        assert_eq!(
            (refused.limit, refused.reset),
            (minute, Duration::from_secs(10))
        );
        let both = Decision::of(
            limits,
            [verdict(minute, false, 0, 10), verdict(day, false, 0, 900)],
            at,
        );
        assert_eq!(both.limit, day);
    }
}
