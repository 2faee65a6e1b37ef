use std::{collections::VecDeque, sync::Mutex, task::Poll, time::Duration};

use time::OffsetDateTime;

use crate::{lock, BackendError, KeyId};
use crate::{Decision, RateLimit, RateLimiter};

/// The in-memory sliding-log limiter: the default, exact for one process.
///
/// Each key's [`MemoryWindow`] keeps the times of its admitted requests in the window, as
/// `u32` millisecond offsets from a per-key base: at N = 60 a ring of 240 bytes. The layer
/// keeps the window beside the key's record and drops it once the window is empty and the
/// key is no longer held (`cargo bench --bench memory` counts the bytes per active key);
/// keys that never authenticated have no window at all.
///
/// ```
/// use std::time::Duration;
/// use nouvel_auth::{
///     key::KeyId, limit::MemoryRateLimiter, limit::MemoryWindow, limit::RateLimiter,
///     RateLimit,
/// };
/// use time::macros::datetime;
///
/// # tokio_test_block_on(async {
/// let (limiter, window) = (MemoryRateLimiter::new(), MemoryWindow::default());
/// let key = KeyId::from("key_1");
/// let limit = RateLimit::new(2, Duration::from_secs(60));
/// let now = datetime!(2026-01-01 00:00 UTC);
///
/// assert!(limiter.check(&window, &key, limit, now).await.unwrap().allowed);
/// assert!(limiter.check(&window, &key, limit, now).await.unwrap().allowed);
/// let refused = limiter.check(&window, &key, limit, now).await.unwrap();
/// assert!(!refused.allowed);
/// assert_eq!(refused.retry_after(), 60);
/// // A minute after the first request, one slot is free again.
/// let later = now + Duration::from_secs(60);
/// assert!(limiter.check(&window, &key, limit, later).await.unwrap().allowed);
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct MemoryRateLimiter;

/// One key's admitted requests, for the [`MemoryRateLimiter`].
#[derive(Debug, Default)]
pub struct MemoryWindow(Mutex<Window>);

impl MemoryWindow {
    /// Admits or refuses one request at `now` under `limit`: the sliding log's decision.
    pub(crate) fn admit(&self, limit: RateLimit, now: OffsetDateTime) -> Decision {
        lock(&self.0).admit(unix_millis(now), limit)
    }

    pub(crate) fn is_idle(&self, now: OffsetDateTime) -> bool {
        lock(&self.0).is_idle(unix_millis(now))
    }
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

/// The admitted requests' offsets, oldest first: in place up to [`INLINE`] of them, on
/// the heap for larger limits.
#[derive(Debug)]
// The inline variant is the point: the common limits keep their ring beside the key.
#[allow(clippy::large_enum_variant)]
enum Ring {
    Inline {
        slots: [u32; INLINE],
        head: usize,
        len: usize,
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
            Self::Inline { len, .. } => *len,
            Self::Heap(times) => times.len(),
        }
    }

    fn front(&self) -> Option<u32> {
        match self {
            Self::Inline { len: 0, .. } => None,
            Self::Inline { slots, head, .. } => Some(slots[*head]),
            Self::Heap(times) => times.front().copied(),
        }
    }

    fn back(&self) -> Option<u32> {
        match self {
            Self::Inline { len: 0, .. } => None,
            Self::Inline { slots, head, len } => Some(slots[(head + len - 1) % INLINE]),
            Self::Heap(times) => times.back().copied(),
        }
    }

    fn pop_front(&mut self) {
        match self {
            Self::Inline { len: 0, .. } => {}
            Self::Inline { head, len, .. } => {
                *head = (*head + 1) % INLINE;
                *len -= 1;
            }
            Self::Heap(times) => drop(times.pop_front()),
        }
    }

    /// Adds the newest admission; a full inline ring moves to the heap first.
    fn push_back(&mut self, t: u32) {
        if let Self::Inline {
            slots,
            head,
            len: INLINE,
        } = self
        {
            let mut times = VecDeque::with_capacity(INLINE * 2);
            times.extend((0..INLINE).map(|i| slots[(*head + i) % INLINE]));
            *self = Self::Heap(times);
        }
        match self {
            Self::Inline { slots, head, len } => {
                slots[(*head + *len) % INLINE] = t;
                *len += 1;
            }
            Self::Heap(times) => times.push_back(t),
        }
    }

    fn for_each_mut(&mut self, mut change: impl FnMut(&mut u32)) {
        match self {
            Self::Inline { slots, head, len } => {
                for i in 0..*len {
                    change(&mut slots[(*head + i) % INLINE]);
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

    fn admit(&mut self, now: u64, limit: RateLimit) -> Decision {
        if self.window == 0 {
            // A new window (a window's length is never 0 once used): it counts from now.
            self.base = now;
        }
        self.window = limit.window_millis();
        let now = self.offset(now);
        // A request admitted at t counts during [t, t + W).
        while self
            .admitted
            .front()
            .is_some_and(|t| now - t >= self.window)
        {
            self.admitted.pop_front();
        }
        let allowed = self.admitted.len() < limit.requests() as usize;
        if allowed {
            self.admitted.push_back(now);
        }
        let reset = self
            .admitted
            .front()
            .map_or(0, |oldest| oldest + self.window - now);
        Decision {
            allowed,
            limit,
            remaining: limit.requests().saturating_sub(self.admitted.len() as u32),
            reset: Duration::from_millis(reset.into()),
        }
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
        window: &MemoryWindow,
        _key: &KeyId,
        limit: RateLimit,
        now: OffsetDateTime,
    ) -> Result<Decision, BackendError> {
        Ok(window.admit(limit, now))
    }

    fn check_now(
        &self,
        window: &MemoryWindow,
        _key: &KeyId,
        limit: RateLimit,
        now: OffsetDateTime,
    ) -> Poll<Decision> {
        Poll::Ready(window.admit(limit, now))
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
            window: limit.window_millis(),
            admitted: Ring::default(),
        };
        // Admitted 11.6 days after the base: stored as offset 10^9.
        assert!(window.admit(start + 1_000_000_000, limit).allowed);
        // Idle until the shift needed exceeds u32 (2^32 ms is 49.7 days), with no sweep in
        // between: the old request is long out of the window.
        let later = start + (1 << 32) + 61_000;
        let decision = window.admit(later, limit);
        assert!(decision.allowed, "{decision:?}");
        assert_eq!(decision.reset, Duration::from_secs(60));
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
