//! What a limit is: [`RateLimit`] (a sliding window or a calendar quota, per key or per
//! account) and [`RateLimits`], the list a request is held to.

use std::time::Duration;

use time::{Date, Month, OffsetDateTime, Time, UtcOffset};

/// One limit: N requests per sliding window W, or per calendar day or month (UTC), counted
/// per key (the default) or per account.
///
/// ```
/// use std::time::Duration;
/// use nouvel_auth::{limit::Period, limit::Scope, RateLimit};
///
/// assert_eq!(RateLimit::default(), RateLimit::new(60, Duration::from_secs(60)));
/// let quota = RateLimit::per_month(10_000).per_account();
/// assert_eq!(quota.period(), Period::Month);
/// assert_eq!(quota.scope(), Scope::Account);
/// assert_eq!(quota.window(), None);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    requests: u32,
    /// What it counts, in one word (a limit is copied into every decision): the scope in
    /// the top bit, below it [`DAY`], [`MONTH`] or a window in milliseconds.
    counts: u32,
}

const PER_ACCOUNT: u32 = 1 << 31;
const DAY: u32 = PER_ACCOUNT - 1;
const MONTH: u32 = PER_ACCOUNT - 2;
/// The longest window, in milliseconds: 24.8 days, beyond any sensible window, and it keeps
/// offsets in `u32`.
const MAX_WINDOW: u32 = PER_ACCOUNT - 3;

/// How a limit counts: a window in milliseconds, or a calendar period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Span {
    Window(u32),
    Day,
    Month,
}

/// What a [`RateLimit`] counts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    /// Any interval of this length: an exact sliding window.
    Window(Duration),
    /// A calendar day, UTC: the count starts again at 00:00 UTC.
    Day,
    /// A calendar month, UTC: the count starts again on the first at 00:00 UTC.
    Month,
}

/// Whose requests a [`RateLimit`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Scope {
    /// Each key's own (a replacement key's with its predecessors').
    #[default]
    Key,
    /// Every key of the account whose limits hold this limit, together.
    Account,
}

impl RateLimit {
    /// `requests` per sliding `window`, per key. A window is kept to the millisecond and to
    /// at most 24 days; a zero window counts as one millisecond.
    #[must_use]
    pub const fn new(requests: u32, window: Duration) -> Self {
        let millis = window.as_millis();
        let millis = if millis < 1 {
            1
        } else if millis > MAX_WINDOW as u128 {
            MAX_WINDOW
        } else {
            millis as u32
        };
        Self {
            requests,
            counts: millis,
        }
    }

    /// A quota of `requests` per calendar day (UTC), per key.
    #[must_use]
    pub const fn per_day(requests: u32) -> Self {
        Self {
            requests,
            counts: DAY,
        }
    }

    /// A quota of `requests` per calendar month (UTC), per key.
    #[must_use]
    pub const fn per_month(requests: u32) -> Self {
        Self {
            requests,
            counts: MONTH,
        }
    }

    /// The same limit, counted once for the whole account.
    #[must_use]
    pub const fn per_account(mut self) -> Self {
        self.counts |= PER_ACCOUNT;
        self
    }

    /// N: how many requests a window or a period admits.
    #[must_use]
    pub const fn requests(self) -> u32 {
        self.requests
    }

    /// What it counts over.
    #[must_use]
    pub const fn period(self) -> Period {
        match self.span() {
            Span::Window(millis) => Period::Window(Duration::from_millis(millis as u64)),
            Span::Day => Period::Day,
            Span::Month => Period::Month,
        }
    }

    /// W, for a sliding window; `None` for a calendar quota.
    #[must_use]
    pub const fn window(self) -> Option<Duration> {
        match self.period() {
            Period::Window(window) => Some(window),
            Period::Day | Period::Month => None,
        }
    }

    /// Whose requests it counts.
    #[must_use]
    pub const fn scope(self) -> Scope {
        if self.counts & PER_ACCOUNT == 0 {
            Scope::Key
        } else {
            Scope::Account
        }
    }

    pub(crate) const fn span(self) -> Span {
        match self.counts & !PER_ACCOUNT {
            DAY => Span::Day,
            MONTH => Span::Month,
            millis => Span::Window(millis),
        }
    }

    /// The window in milliseconds, for a sliding window.
    pub(crate) const fn window_millis(self) -> Option<u32> {
        match self.span() {
            Span::Window(millis) => Some(millis),
            Span::Day | Span::Month => None,
        }
    }

    /// Whether two limits count the same thing (the same scope and period, whatever N):
    /// a list holds each at most once, and a count follows its limit through a change of N.
    pub(crate) fn counts_like(self, other: Self) -> bool {
        self.counts == other.counts
    }

    /// The calendar period of a quota that `at` falls in, as `[start, end)`; `None` for a
    /// sliding window.
    #[must_use]
    pub fn period_at(self, at: OffsetDateTime) -> Option<(OffsetDateTime, OffsetDateTime)> {
        let day = at.to_offset(UtcOffset::UTC).date();
        let (start, end) = match self.span() {
            Span::Window(_) => return None,
            Span::Day => (day, day.next_day()?),
            Span::Month => {
                let first = day.replace_day(1).ok()?;
                let next = match first.month() {
                    Month::December => {
                        Date::from_calendar_date(first.year() + 1, Month::January, 1)
                    }
                    month => Date::from_calendar_date(first.year(), month.next(), 1),
                };
                (first, next.ok()?)
            }
        };
        let midnight = |date: Date| date.with_time(Time::MIDNIGHT).assume_utc();
        Some((midnight(start), midnight(end)))
    }

    /// The length of the window, or of the calendar period `at` falls in, in seconds: the
    /// `w` of `RateLimit-Policy`.
    pub(crate) fn seconds_at(self, at: OffsetDateTime) -> u64 {
        match (self.window(), self.period_at(at)) {
            (Some(window), _) => window.as_secs(),
            (None, Some((start, end))) => (end - start).whole_seconds().unsigned_abs(),
            (None, None) => 0,
        }
    }
}

/// As the admin API shows it: `{"requests": n, "window_seconds": w}` or
/// `{"requests": n, "period": "day" | "month"}`, with `"scope": "account"` when counted per
/// account.
impl serde::Serialize for RateLimit {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut limit = serializer.serialize_map(None)?;
        limit.serialize_entry("requests", &self.requests)?;
        match self.period() {
            Period::Window(window) => limit.serialize_entry("window_seconds", &window.as_secs())?,
            Period::Day => limit.serialize_entry("period", "day")?,
            Period::Month => limit.serialize_entry("period", "month")?,
        }
        if self.scope() == Scope::Account {
            limit.serialize_entry("scope", "account")?;
        }
        limit.end()
    }
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("requests", &self.requests)
            .field("period", &self.period())
            .field("scope", &self.scope())
            .finish()
    }
}

impl Default for RateLimit {
    /// The Nouvel API's limit: 60 requests per minute, per key.
    fn default() -> Self {
        Self::new(60, Duration::from_secs(60))
    }
}

/// The limits a request is held to, at most [`RateLimits::MAX`]: admitted only if every one
/// admits it, and then counted in every one. Cheap to copy.
///
/// ```
/// use std::time::Duration;
/// use nouvel_auth::{RateLimit, RateLimits};
///
/// let limits = RateLimits::new([
///     RateLimit::new(10, Duration::from_secs(1)),
///     RateLimit::per_day(1_000),
/// ])
/// .unwrap();
/// assert_eq!(limits.len(), 2);
/// // One count per scope and period: a second daily quota is refused.
/// assert!(RateLimits::new([RateLimit::per_day(5), RateLimit::per_day(9)]).is_err());
/// ```
#[derive(Clone, Copy)]
pub struct RateLimits {
    len: u8,
    items: [RateLimit; Self::MAX],
}

/// Why a list of limits cannot be held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidLimits {
    /// No limit at all.
    #[error("at least one limit is required")]
    Empty,
    /// More than [`RateLimits::MAX`].
    #[error("at most 4 limits")]
    TooMany,
    /// Two limits with one scope and one period (or window length).
    #[error("two limits count the same period in the same scope")]
    Repeated,
}

impl RateLimits {
    /// The most limits a list holds.
    pub const MAX: usize = 4;

    /// The list of `limits`, in their order.
    pub fn new(limits: impl IntoIterator<Item = RateLimit>) -> Result<Self, InvalidLimits> {
        let mut list = Self {
            len: 0,
            items: [RateLimit::default(); Self::MAX],
        };
        for limit in limits {
            if usize::from(list.len) == Self::MAX {
                return Err(InvalidLimits::TooMany);
            }
            if list.iter().any(|held| held.counts_like(limit)) {
                return Err(InvalidLimits::Repeated);
            }
            list.items[usize::from(list.len)] = limit;
            list.len += 1;
        }
        if list.len == 0 {
            return Err(InvalidLimits::Empty);
        }
        Ok(list)
    }

    /// A list of one.
    #[must_use]
    pub const fn one(limit: RateLimit) -> Self {
        Self {
            len: 1,
            items: [limit; Self::MAX],
        }
    }

    /// The limits, in order.
    #[must_use]
    pub fn as_slice(&self) -> &[RateLimit] {
        &self.items[..usize::from(self.len)]
    }

    /// The limits, in order.
    pub fn iter(&self) -> impl Iterator<Item = RateLimit> + '_ {
        self.as_slice().iter().copied()
    }

    /// How many.
    #[must_use]
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Never: a list holds at least one limit.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first sliding window, as Key JSON's `rate_limit` shows it.
    #[must_use]
    pub fn first_window(&self) -> Option<RateLimit> {
        self.iter().find(|limit| limit.window().is_some())
    }

    /// Whether any limit is counted per account.
    #[must_use]
    pub fn has_account_scope(&self) -> bool {
        self.iter().any(|limit| limit.scope() == Scope::Account)
    }
}

impl Default for RateLimits {
    /// [`RateLimit::default`] alone.
    fn default() -> Self {
        Self::one(RateLimit::default())
    }
}

impl From<RateLimit> for RateLimits {
    fn from(limit: RateLimit) -> Self {
        Self::one(limit)
    }
}

// By the limits held: the unused slots do not count.
impl PartialEq for RateLimits {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for RateLimits {}

impl std::hash::Hash for RateLimits {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl serde::Serialize for RateLimits {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn calendar_periods_are_utc_days_and_months() {
        let at = datetime!(2028-02-29 23:59:59.999 UTC);
        let (start, end) = RateLimit::per_day(1).period_at(at).unwrap();
        assert_eq!(
            (start, end),
            (
                datetime!(2028-02-29 0:00 UTC),
                datetime!(2028-03-01 0:00 UTC)
            )
        );
        let (start, end) = RateLimit::per_month(1).period_at(at).unwrap();
        assert_eq!(
            (start, end),
            (
                datetime!(2028-02-01 0:00 UTC),
                datetime!(2028-03-01 0:00 UTC)
            )
        );
        assert_eq!(RateLimit::per_month(1).seconds_at(at), 29 * 86_400);
        let december = datetime!(2026-12-31 12:00 +02:00);
        let (_, end) = RateLimit::per_month(1).period_at(december).unwrap();
        assert_eq!(end, datetime!(2027-01-01 0:00 UTC));
        assert_eq!(RateLimit::default().period_at(at), None);
        assert_eq!(RateLimit::default().seconds_at(at), 60);
    }

    #[test]
    fn limits_serialize_as_the_admin_api_shows_them() {
        let json = serde_json::to_string(
            &RateLimits::new([
                RateLimit::new(120, Duration::from_secs(60)),
                RateLimit::per_day(1000),
                RateLimit::per_month(9000).per_account(),
            ])
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            json,
            r#"[{"requests":120,"window_seconds":60},{"requests":1000,"period":"day"},{"requests":9000,"period":"month","scope":"account"}]"#
        );
    }

    #[test]
    fn a_list_holds_one_to_four_distinct_counts() {
        let minute = RateLimit::default();
        assert_eq!(RateLimits::new([]), Err(InvalidLimits::Empty));
        assert_eq!(
            RateLimits::new([minute, RateLimit::new(5, Duration::from_secs(60))]),
            Err(InvalidLimits::Repeated)
        );
        // The same period, counted per key and per account, is two counts.
        assert!(
            RateLimits::new([RateLimit::per_day(5), RateLimit::per_day(50).per_account()]).is_ok()
        );
        let five = [
            minute,
            RateLimit::new(5, Duration::from_secs(1)),
            RateLimit::per_day(1),
            RateLimit::per_month(1),
            RateLimit::per_day(1).per_account(),
        ];
        assert_eq!(RateLimits::new(five), Err(InvalidLimits::TooMany));
    }
}
