use std::{
    collections::VecDeque,
    sync::atomic::{AtomicU64, Ordering},
    task::Poll,
    time::Duration,
};

use time::OffsetDateTime;

use super::{Decision, RateLimit, RateLimiter};
use crate::{BackendError, ConcurrentMap, KeyId};

/// The in-memory sliding-log limiter: the default, exact for one process.
///
/// Each active key keeps the times of its admitted requests in the window, as `u32`
/// millisecond offsets from a per-key base: at N = 60 that is 240 bytes of ring plus a
/// 56-byte map slot (key id, base, ring header) and the map's spare capacity, 347 bytes
/// per key as counted by the allocator (`cargo bench --bench memory`). A key's state
/// is dropped once its window is empty, by a sweep that runs at most once a minute; keys
/// that never authenticated have no state at all.
///
/// ```
/// use std::time::Duration;
/// use nouvel_auth::{KeyId, MemoryRateLimiter, RateLimit, RateLimiter};
/// use time::macros::datetime;
///
/// # tokio_test_block_on(async {
/// let limiter = MemoryRateLimiter::new();
/// let key = KeyId::from("key_1");
/// let limit = RateLimit::new(2, Duration::from_secs(60));
/// let now = datetime!(2026-01-01 00:00 UTC);
///
/// assert!(limiter.check(&key, limit, now).await.unwrap().allowed);
/// assert!(limiter.check(&key, limit, now).await.unwrap().allowed);
/// let refused = limiter.check(&key, limit, now).await.unwrap();
/// assert!(!refused.allowed);
/// assert_eq!(refused.retry_after(), 60);
/// // A minute after the first request, one slot is free again.
/// let later = now + Duration::from_secs(60);
/// assert!(limiter.check(&key, limit, later).await.unwrap().allowed);
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug, Default)]
pub struct MemoryRateLimiter {
    windows: ConcurrentMap<KeyId, Window>,
    last_sweep: AtomicU64,
}

/// How often, at most, idle keys are swept out (in milliseconds).
const SWEEP_EVERY_MS: u64 = 60_000;

#[derive(Debug)]
struct Window {
    /// Unix milliseconds that the offsets count from.
    base: u64,
    /// The window length that applied last, for the sweep.
    window: u32,
    /// Admitted requests in the window, oldest first, as offsets from `base`.
    admitted: VecDeque<u32>,
}

impl Window {
    fn new(now: u64, limit: RateLimit) -> Self {
        Self {
            base: now,
            window: limit.window_millis(),
            // Enough for the default limit; a huge per-key limit grows only as it is used.
            admitted: VecDeque::with_capacity(limit.requests().min(64) as usize),
        }
    }

    /// Offset of `now`, never before the newest admitted request (clocks may step back).
    fn offset(&mut self, now: u64) -> u32 {
        let mut offset = now.saturating_sub(self.base);
        if offset >= 1 << 31 {
            // Rebase so offsets stay in u32; live entries are within one window of now.
            let shift = offset - u64::from(self.window);
            for t in &mut self.admitted {
                // Entries older than the shift are out of the window: they become 0 and
                // are pruned just below. (The shift may exceed u32 after a long idle.)
                *t = u32::try_from(u64::from(*t).saturating_sub(shift)).unwrap_or(0);
            }
            self.base += shift;
            offset -= shift;
        }
        let offset = offset as u32;
        self.admitted
            .back()
            .map_or(offset, |&newest| offset.max(newest))
    }

    fn admit(&mut self, now: u64, limit: RateLimit) -> Decision {
        self.window = limit.window_millis();
        let now = self.offset(now);
        // A request admitted at t counts during [t, t + W).
        while self
            .admitted
            .front()
            .is_some_and(|&t| now - t >= self.window)
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
            .map_or(0, |&oldest| oldest + self.window - now);
        Decision {
            allowed,
            limit,
            remaining: limit.requests().saturating_sub(self.admitted.len() as u32),
            reset: Duration::from_millis(reset.into()),
        }
    }

    fn is_idle(&self, now: u64) -> bool {
        let newest = self
            .admitted
            .back()
            .map_or(0, |&t| self.base + u64::from(t));
        now >= newest + u64::from(self.window)
    }
}

pub(super) fn unix_millis(at: OffsetDateTime) -> u64 {
    let millis = at.unix_timestamp() * 1000 + i64::from(at.millisecond());
    u64::try_from(millis).unwrap_or(0)
}

impl MemoryRateLimiter {
    /// An empty limiter.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many keys have state now: those with admitted requests in their window
    /// (and, until the next sweep, some whose window just emptied).
    pub fn tracked_keys(&self) -> usize {
        self.windows.len()
    }

    /// The decision, made at once: what `check` and `check_now` both answer.
    pub(crate) fn decide(&self, key: &KeyId, limit: RateLimit, now: OffsetDateTime) -> Decision {
        let now = unix_millis(now);
        self.sweep_if_due(now);
        if let Some(mut window) = self.windows.get_mut(key) {
            return window.admit(now, limit);
        }
        self.windows
            .entry(key.clone())
            .or_insert_with(|| Window::new(now, limit))
            .admit(now, limit)
    }

    fn sweep_if_due(&self, now: u64) {
        let last = self.last_sweep.load(Ordering::Relaxed);
        let due = now >= last + SWEEP_EVERY_MS;
        // One caller wins the exchange and sweeps; the others go on.
        if due
            && self
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.windows.retain(|_, window| !window.is_idle(now));
        }
    }
}

impl RateLimiter for MemoryRateLimiter {
    async fn check(
        &self,
        key: &KeyId,
        limit: RateLimit,
        now: OffsetDateTime,
    ) -> Result<Decision, BackendError> {
        Ok(self.decide(key, limit, now))
    }

    fn check_now(&self, key: &KeyId, limit: RateLimit, now: OffsetDateTime) -> Poll<Decision> {
        Poll::Ready(self.decide(key, limit, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

    #[test]
    fn idle_keys_are_swept() {
        let limiter = MemoryRateLimiter::new();
        let limit = RateLimit::default();
        limiter.decide(&"a".into(), limit, T0);
        limiter.decide(&"b".into(), limit, T0 + Duration::from_secs(30));
        assert_eq!(limiter.tracked_keys(), 2);
        // At T0 + 61 s, a's window is empty, b's is not.
        limiter.decide(&"b".into(), limit, T0 + Duration::from_secs(61));
        assert_eq!(limiter.tracked_keys(), 1);
    }

    #[test]
    fn offsets_survive_a_rebase() {
        let limiter = MemoryRateLimiter::new();
        let limit = RateLimit::new(2, Duration::from_secs(60));
        let key = KeyId::from("k");
        // Keep the key busy for 30 days so its base must move past u32 milliseconds.
        let mut now = T0;
        for _ in 0..(30 * 24 * 60) {
            assert!(limiter.decide(&key, limit, now).allowed);
            now += Duration::from_secs(59);
        }
        assert!(limiter.decide(&key, limit, now).allowed);
        let refused = limiter.decide(&key, limit, now);
        assert!(!refused.allowed);
        assert_eq!(refused.reset, Duration::from_secs(1));
    }

    #[test]
    fn a_window_idle_for_weeks_starts_empty() {
        let limit = RateLimit::new(1, Duration::from_secs(60));
        let start = unix_millis(T0);
        let mut window = Window::new(start, limit);
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
    fn a_clock_stepping_back_admits_nothing_extra() {
        let limiter = MemoryRateLimiter::new();
        let limit = RateLimit::new(1, Duration::from_secs(60));
        let key = KeyId::from("k");
        assert!(limiter.decide(&key, limit, T0).allowed);
        assert!(
            !limiter
                .decide(&key, limit, T0 - Duration::from_secs(3600))
                .allowed
        );
    }
}
