use std::{collections::VecDeque, sync::Mutex, task::Poll, time::Duration};

use time::OffsetDateTime;

use super::{Scope, Subject, Verdict};
use crate::{lock, BackendError, Decision, RateLimit, RateLimiter, RateLimits};

/// The in-memory limiter: the default, exact for one process.
///
/// Each key's [`MemoryWindow`] keeps the times of its admitted requests in each sliding
/// window, as `u32` millisecond offsets from a per-key base (at N = 60 a ring of 240 bytes
/// in place, beside the key's other state), and the count of each quota in its current
/// period; an account's window does the same for the limits counted per account. The layer
/// keeps the windows beside the key's record and drops one once it is idle (its windows
/// empty, its quotas' periods over) and the key is no longer held (`cargo bench --bench
/// memory` counts the bytes per active key); keys that never authenticated have no window
/// at all.
///
/// ```
/// use std::time::Duration;
/// use nouvel_auth::{
///     key::{AccountId, KeyId}, limit::MemoryRateLimiter, limit::MemoryWindow,
///     limit::RateLimiter, limit::Subject, RateLimit, RateLimits,
/// };
/// use time::macros::datetime;
///
/// # tokio_test_block_on(async {
/// let (limiter, window) = (MemoryRateLimiter::new(), MemoryWindow::default());
/// let (key, account) = (KeyId::from("key_1"), AccountId::from("acc_1"));
/// let subject = Subject { key: &key, account: &account, key_window: &window, account_window: None };
/// // Two a minute, three a day.
/// let limits = RateLimits::new([
///     RateLimit::new(2, Duration::from_secs(60)),
///     RateLimit::per_day(3),
/// ]).unwrap();
/// let now = datetime!(2026-01-01 00:00 UTC);
///
/// assert!(limiter.check(subject, limits, now).await.unwrap().allowed);
/// assert!(limiter.check(subject, limits, now).await.unwrap().allowed);
/// let refused = limiter.check(subject, limits, now).await.unwrap();
/// assert!(!refused.allowed);
/// assert_eq!(refused.retry_after(), 60);
/// // A minute after the first request, one slot is free again; then the day's quota is
/// // spent until midnight.
/// let later = now + Duration::from_secs(60);
/// assert!(limiter.check(subject, limits, later).await.unwrap().allowed);
/// let spent = limiter.check(subject, limits, later + Duration::from_secs(60)).await.unwrap();
/// assert_eq!((spent.allowed, spent.limit), (false, RateLimit::per_day(3)));
/// assert_eq!(spent.retry_after(), 86_400 - 120);
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct MemoryRateLimiter;

/// What the [`MemoryRateLimiter`] keeps for one key or account.
#[derive(Debug, Default)]
pub struct MemoryWindow(Mutex<Counts>);

/// The counts of one key or account.
#[derive(Debug, Default)]
struct Counts {
    /// The list's first sliding window of this scope, in place: the common single limit
    /// needs no allocation. It follows the first window through a change of length.
    first: Window,
    /// Every other limit counted here, by what it counts ([`RateLimit::counts_like`]), so
    /// a count follows its limit through a change of N. Boxed: most keys have none, and
    /// an empty box is one word beside every key.
    #[allow(clippy::box_collection)]
    more: Option<Box<Vec<(RateLimit, Count)>>>,
}

#[derive(Debug)]
enum Count {
    /// Boxed: a second window is rare, and a quota's count should not take a window's room.
    Window(Box<Window>),
    Quota(Quota),
}

/// A calendar quota's count in its period.
#[derive(Debug, Default, Clone, Copy)]
struct Quota {
    /// The period's start, Unix seconds.
    start: i64,
    /// Its end, Unix milliseconds: until then the count matters.
    end: u64,
    used: u32,
}

impl MemoryWindow {
    /// Decides one request under `limits`, counted in this window alone.
    #[cfg(test)]
    pub(crate) fn admit(&self, limits: impl Into<RateLimits>, now: OffsetDateTime) -> Decision {
        decide(self, None, limits.into(), now)
    }

    pub(crate) fn is_idle(&self, now: OffsetDateTime) -> bool {
        let counts = lock(&self.0);
        let now = unix_millis(now);
        counts.first.is_idle(now)
            && counts
                .more
                .iter()
                .flat_map(|more| more.iter())
                .all(|(_, count)| match count {
                    Count::Window(window) => window.is_idle(now),
                    Count::Quota(quota) => quota.used == 0 || now >= quota.end,
                })
    }
}

/// One limit's count, wherever it is kept.
enum Counter<'a> {
    Window(&'a mut Window),
    Quota(&'a mut Quota),
}

impl Counts {
    /// The count of `limit`, made if new; `first` says it is the list's first sliding
    /// window of its scope.
    #[inline]
    fn of(&mut self, limit: RateLimit, first: bool) -> Counter<'_> {
        if first {
            return Counter::Window(&mut self.first);
        }
        let more = self.more.get_or_insert_default();
        let held = more.iter().position(|(held, _)| held.counts_like(limit));
        let index = held.unwrap_or_else(|| {
            let count = match limit.window_millis() {
                Some(_) => Count::Window(Box::default()),
                None => Count::Quota(Quota::default()),
            };
            // Exactly the room needed: a list is at most four, and rarely changes.
            more.reserve_exact(1);
            more.push((limit, count));
            more.len() - 1
        });
        match &mut more[index].1 {
            Count::Window(window) => Counter::Window(window),
            Count::Quota(quota) => Counter::Quota(quota),
        }
    }

    /// Forgets the counts of limits `limits` no longer holds (a plan change, say).
    fn keep_only(&mut self, limits: &RateLimits) {
        if let Some(more) = &mut self.more {
            more.retain(|(held, _)| limits.iter().any(|limit| limit.counts_like(*held)));
            if more.is_empty() {
                self.more = None;
            }
        }
    }
}

impl Counter<'_> {
    /// What `limit` answers alone at `now`, and the instant an admission is counted at.
    #[inline]
    fn judge(&mut self, limit: RateLimit, now: OffsetDateTime) -> (Verdict, u32) {
        match self {
            Self::Window(window) => window.judge(limit, unix_millis(now)),
            Self::Quota(quota) => (quota.judge(limit, now), 0),
        }
    }

    fn count(&mut self, at: u32) {
        match self {
            Self::Window(window) => window.admitted.push_back(at),
            Self::Quota(quota) => quota.used += 1,
        }
    }

    /// Undoes the [`count`](Self::count) just made.
    fn take_back(&mut self) {
        match self {
            Self::Window(window) => window.admitted.pop_back(),
            Self::Quota(quota) => quota.used -= 1,
        }
    }
}

impl Quota {
    fn judge(&mut self, limit: RateLimit, now: OffsetDateTime) -> Verdict {
        let (start, end) = limit.period_at(now).expect("a quota has a period");
        // A new period starts from zero; a clock stepping back stays in the later one.
        if start.unix_timestamp() > self.start {
            *self = Self {
                start: start.unix_timestamp(),
                end: unix_millis(end),
                used: 0,
            };
        }
        let admits = self.used < limit.requests();
        Verdict {
            limit,
            admits,
            remaining: limit
                .requests()
                .saturating_sub(self.used + u32::from(admits)),
            reset: Duration::from_millis(self.end.saturating_sub(unix_millis(now))),
        }
    }
}

/// Decides one request of `subject` under `limits`: every limit judged, then counted in
/// all of them if all admit.
pub(super) fn decide(
    key_window: &MemoryWindow,
    account_window: Option<&MemoryWindow>,
    limits: RateLimits,
    now: OffsetDateTime,
) -> Decision {
    let mut key = lock(&key_window.0);
    // A key's window is always locked before its account's, so two requests never wait on
    // each other in a circle. Without an account window, account limits count in the key's.
    let mut account = account_window
        .filter(|account| limits.has_account_scope() && !std::ptr::eq(*account, key_window))
        .map(|account| lock(&account.0));
    // Each limit judged where it counts (the first sliding window of each scope in place),
    // and counted at once while every limit so far admits: one pass for the common list of
    // one. A later refusal takes those counts back.
    let mut firsts = [false; RateLimits::MAX];
    let mut seen_window = [false; 2];
    let mut counted = 0;
    let verdicts = limits.iter().enumerate().map(|(i, limit)| {
        let scope = usize::from(limit.scope() == Scope::Account && account.is_some());
        firsts[i] =
            limit.window_millis().is_some() && !std::mem::replace(&mut seen_window[scope], true);
        let counts = match (scope, account.as_deref_mut()) {
            (1, Some(account)) => account,
            _ => &mut *key,
        };
        let mut counter = counts.of(limit, firsts[i]);
        let (verdict, instant) = counter.judge(limit, now);
        if verdict.admits && counted == i {
            counter.count(instant);
            counted += 1;
        }
        verdict
    });
    let decision = Decision::of(limits, verdicts, now);
    if !decision.allowed {
        for (i, limit) in limits.iter().enumerate().take(counted) {
            let counts = match (limit.scope(), account.as_deref_mut()) {
                (Scope::Account, Some(account)) => account,
                _ => &mut *key,
            };
            counts.of(limit, firsts[i]).take_back();
        }
    }
    key.keep_only(&limits);
    if let Some(account) = account.as_deref_mut() {
        account.keep_only(&limits);
    }
    decision
}

#[derive(Debug, Default)]
struct Window {
    /// Unix milliseconds that the offsets count from.
    base: u64,
    /// The window length that applied last, for the sweep.
    window: u32,
    /// Admitted requests in the window, oldest first, as offsets from `base`.
    admitted: Ring,
}

/// How many admissions a window holds in place, beside its key's other state: the default
/// limit and any below it need no allocation of their own (and no second cache miss).
const INLINE: usize = 64;
/// A full inline ring's length.
const FULL: u8 = INLINE as u8;

/// The admitted requests' offsets, oldest first: in place up to [`INLINE`] of them, on
/// the heap for larger limits.
#[derive(Debug)]
// The inline variant is the point: the common limits keep their ring beside the key.
#[allow(clippy::large_enum_variant)]
enum Ring {
    Inline {
        slots: [u32; INLINE],
        // Bytes: the ring holds at most 64 (and so keeps the window 16 bytes smaller).
        head: u8,
        len: u8,
    },
    Heap(VecDeque<u32>),
}

impl Default for Ring {
    fn default() -> Self {
        Self::Inline {
            slots: [0; INLINE],
            head: 0,
            len: 0,
        }
    }
}

impl Ring {
    fn len(&self) -> usize {
        match self {
            Self::Inline { len, .. } => usize::from(*len),
            Self::Heap(times) => times.len(),
        }
    }

    fn front(&self) -> Option<u32> {
        match self {
            Self::Inline { len: 0, .. } => None,
            Self::Inline { slots, head, .. } => Some(slots[usize::from(*head)]),
            Self::Heap(times) => times.front().copied(),
        }
    }

    fn back(&self) -> Option<u32> {
        match self {
            Self::Inline { len: 0, .. } => None,
            Self::Inline { slots, head, len } => {
                Some(slots[(usize::from(*head) + usize::from(*len) - 1) % INLINE])
            }
            Self::Heap(times) => times.back().copied(),
        }
    }

    fn pop_front(&mut self) {
        match self {
            Self::Inline { len: 0, .. } => {}
            Self::Inline { head, len, .. } => {
                *head = (*head + 1) % INLINE as u8;
                *len -= 1;
            }
            Self::Heap(times) => drop(times.pop_front()),
        }
    }

    fn pop_back(&mut self) {
        match self {
            Self::Inline { len: 0, .. } => {}
            Self::Inline { len, .. } => *len -= 1,
            Self::Heap(times) => drop(times.pop_back()),
        }
    }

    /// Adds the newest admission; a full inline ring moves to the heap first.
    fn push_back(&mut self, t: u32) {
        if let Self::Inline {
            slots,
            head,
            len: FULL,
        } = self
        {
            let mut times = VecDeque::with_capacity(INLINE * 2);
            times.extend((0..INLINE).map(|i| slots[(usize::from(*head) + i) % INLINE]));
            *self = Self::Heap(times);
        }
        match self {
            Self::Inline { slots, head, len } => {
                slots[(usize::from(*head) + usize::from(*len)) % INLINE] = t;
                *len += 1;
            }
            Self::Heap(times) => times.push_back(t),
        }
    }

    fn for_each_mut(&mut self, mut change: impl FnMut(&mut u32)) {
        match self {
            Self::Inline { slots, head, len } => {
                for i in 0..usize::from(*len) {
                    change(&mut slots[(usize::from(*head) + i) % INLINE]);
                }
            }
            Self::Heap(times) => times.iter_mut().for_each(change),
        }
    }
}

impl Window {
    /// Offset of `now`, never before the newest admitted request (clocks may step back).
    fn offset(&mut self, now: u64) -> u32 {
        let mut offset = now.saturating_sub(self.base);
        if offset >= 1 << 31 {
            // Rebase so offsets stay in u32; live entries are within one window of now.
            let shift = offset - u64::from(self.window);
            // Entries older than the shift are out of the window: they become 0 and are
            // pruned just below. (The shift may exceed u32 after a long idle.)
            self.admitted.for_each_mut(|t| {
                *t = u32::try_from(u64::from(*t).saturating_sub(shift)).unwrap_or(0);
            });
            self.base += shift;
            offset -= shift;
        }
        let offset = offset as u32;
        self.admitted
            .back()
            .map_or(offset, |newest| offset.max(newest))
    }

    /// What `limit` (a sliding window) answers alone at `now` (Unix milliseconds), and the
    /// offset an admission is counted at.
    fn judge(&mut self, limit: RateLimit, now: u64) -> (Verdict, u32) {
        if self.window == 0 {
            // A new window (a window's length is never 0 once used): it counts from now.
            self.base = now;
        }
        self.window = limit.window_millis().unwrap_or(1);
        let now = self.offset(now);
        // A request admitted at t counts during [t, t + W).
        while self
            .admitted
            .front()
            .is_some_and(|t| now - t >= self.window)
        {
            self.admitted.pop_front();
        }
        let used = u32::try_from(self.admitted.len()).unwrap_or(u32::MAX);
        let admits = used < limit.requests();
        let reset = match self.admitted.front() {
            Some(oldest) => oldest + self.window - now,
            // Admitted into an empty window, this request is the oldest.
            None if admits => self.window,
            None => 0,
        };
        let verdict = Verdict {
            limit,
            admits,
            remaining: limit.requests().saturating_sub(used + u32::from(admits)),
            reset: Duration::from_millis(reset.into()),
        };
        (verdict, now)
    }

    fn is_idle(&self, now: u64) -> bool {
        let newest = self.admitted.back().map_or(0, |t| self.base + u64::from(t));
        now >= newest + u64::from(self.window)
    }
}

pub(super) fn unix_millis(at: OffsetDateTime) -> u64 {
    let millis = at.unix_timestamp() * 1000 + i64::from(at.millisecond());
    u64::try_from(millis).unwrap_or(0)
}

impl MemoryRateLimiter {
    /// The limiter.
    #[must_use]
    pub fn new() -> Self {
        Self
    }
}

impl RateLimiter for MemoryRateLimiter {
    type Window = MemoryWindow;

    async fn check(
        &self,
        subject: Subject<'_, MemoryWindow>,
        limits: RateLimits,
        now: OffsetDateTime,
    ) -> Result<Decision, BackendError> {
        Ok(decide(
            subject.key_window,
            subject.account_window,
            limits,
            now,
        ))
    }

    fn check_now(
        &self,
        subject: Subject<'_, MemoryWindow>,
        limits: RateLimits,
        now: OffsetDateTime,
    ) -> Poll<Decision> {
        Poll::Ready(decide(
            subject.key_window,
            subject.account_window,
            limits,
            now,
        ))
    }

    fn is_idle(&self, window: &MemoryWindow, now: OffsetDateTime) -> bool {
        window.is_idle(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

    #[test]
    fn a_window_is_idle_once_its_last_request_left_it() {
        let window = MemoryWindow::default();
        let limit = RateLimit::default();
        assert!(window.is_idle(T0));
        window.admit(limit, T0);
        assert!(!window.is_idle(T0 + Duration::from_secs(59)));
        assert!(window.is_idle(T0 + Duration::from_secs(60)));
    }

    #[test]
    fn offsets_survive_a_rebase() {
        let window = MemoryWindow::default();
        let limit = RateLimit::new(2, Duration::from_secs(60));
        // Keep the key busy for 30 days so its base must move past u32 milliseconds.
        let mut now = T0;
        for _ in 0..(30 * 24 * 60) {
            assert!(window.admit(limit, now).allowed);
            now += Duration::from_secs(59);
        }
        assert!(window.admit(limit, now).allowed);
        let refused = window.admit(limit, now);
        assert!(!refused.allowed);
        assert_eq!(refused.reset, Duration::from_secs(1));
    }

    #[test]
    fn a_window_idle_for_weeks_starts_empty() {
        let limit = RateLimit::new(1, Duration::from_secs(60));
        let start = unix_millis(T0);
        let mut window = Window {
            base: start,
            window: 60_000,
            admitted: Ring::default(),
        };
        // Admitted 11.6 days after the base: stored as offset 10^9.
        let (verdict, at) = window.judge(limit, start + 1_000_000_000);
        assert!(verdict.admits);
        window.admitted.push_back(at);
        // Idle until the shift needed exceeds u32 (2^32 ms is 49.7 days), with no sweep in
        // between: the old request is long out of the window.
        let later = start + (1 << 32) + 61_000;
        let (verdict, _) = window.judge(limit, later);
        assert!(verdict.admits, "{verdict:?}");
        assert_eq!(verdict.reset, Duration::from_secs(60));
    }

    #[test]
    fn a_limit_above_the_inline_ring_moves_to_the_heap_and_stays_exact() {
        let window = MemoryWindow::default();
        let limit = RateLimit::new(100, Duration::from_secs(60));
        for i in 0..100 {
            let decision = window.admit(limit, T0 + Duration::from_millis(i));
            assert!(decision.allowed, "{i}");
            assert_eq!(decision.remaining, 99 - i as u32);
        }
        let refused = window.admit(limit, T0 + Duration::from_millis(500));
        assert!(!refused.allowed);
        assert_eq!(refused.reset, Duration::from_millis(59_500));
        // The oldest leaves first, a millisecond apart.
        assert!(
            window
                .admit(limit, T0 + Duration::from_millis(60_000))
                .allowed
        );
        assert!(
            !window
                .admit(limit, T0 + Duration::from_millis(60_000))
                .allowed
        );
        assert!(
            window
                .admit(limit, T0 + Duration::from_millis(60_001))
                .allowed
        );
    }

    #[test]
    fn the_inline_ring_wraps_around() {
        let window = MemoryWindow::default();
        let limit = RateLimit::new(3, Duration::from_secs(1));
        // 200 requests a second apart cycle the ring's head many times round.
        for i in 0..200 {
            let decision = window.admit(limit, T0 + Duration::from_secs(i));
            assert!(
                decision.allowed && decision.remaining == 2,
                "{i}: {decision:?}"
            );
        }
        let at = T0 + Duration::from_secs(300);
        for remaining in [2, 1, 0] {
            assert_eq!(window.admit(limit, at).remaining, remaining);
        }
        assert!(!window.admit(limit, at).allowed);
    }

    #[test]
    fn a_clock_stepping_back_admits_nothing_extra() {
        let window = MemoryWindow::default();
        let limit = RateLimit::new(1, Duration::from_secs(60));
        assert!(window.admit(limit, T0).allowed);
        assert!(!window.admit(limit, T0 - Duration::from_secs(3600)).allowed);
    }
}
