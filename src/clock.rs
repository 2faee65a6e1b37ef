//! Where the crate reads the time: the system clock, or a [`ManualClock`] that tests move.
//!
//! Expiry, rotation grace, last-used times and the rate limiter all read one [`Clock`],
//! so a test can walk a key through its whole life without sleeping.
//!
//! ```
//! use std::time::Duration;
//! use nouvel_auth::{clock::Clock, clock::ManualClock};
//! use time::macros::datetime;
//!
//! let clock = ManualClock::new(datetime!(2026-01-01 00:00 UTC));
//! clock.advance(Duration::from_secs(90));
//! assert_eq!(clock.now(), datetime!(2026-01-01 00:01:30 UTC));
//! ```

use std::{
    fmt,
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
    time::Duration,
};

use time::OffsetDateTime;

/// A source of the current time, in UTC.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> OffsetDateTime;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    /// Now, to the microsecond: the precision databases keep, so a timestamp reads back
    /// as it was written.
    fn now(&self) -> OffsetDateTime {
        let now = OffsetDateTime::now_utc();
        now.replace_nanosecond(now.nanosecond() / 1_000 * 1_000)
            .unwrap_or(now)
    }
}

/// A clock that moves only when told to. Clones share one time.
#[derive(Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock that reads `start` until moved (kept to the microsecond).
    #[must_use]
    pub fn new(start: OffsetDateTime) -> Self {
        Self(Arc::new(AtomicI64::new(micros(start))))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        self.0.fetch_add(by, Ordering::SeqCst);
    }

    /// Sets the clock to `to`.
    pub fn set(&self, to: OffsetDateTime) {
        self.0.store(micros(to), Ordering::SeqCst);
    }
}

/// `at` as unix microseconds (rounded down), the one form the crate keeps times in (atomics,
/// the SQLite file). In 64-bit arithmetic, saturating: years beyond ±292 000 (possible
/// where another crate turns on `time`'s `large-dates`) read as the end of time.
pub(crate) fn micros(at: OffsetDateTime) -> i64 {
    at.unix_timestamp()
        .saturating_mul(1_000_000)
        .saturating_add(i64::from(at.microsecond()))
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        let micros = i128::from(self.0.load(Ordering::SeqCst));
        OffsetDateTime::from_unix_timestamp_nanos(micros * 1_000).expect("set from a valid time")
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ManualClock").field(&self.now()).finish()
    }
}

/// A clock shared by the parts that read it.
pub(crate) type SharedClock = Arc<dyn Clock>;

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn micros_are_unix_microseconds_rounded_down() {
        assert_eq!(
            micros(datetime!(2026-01-01 00:00:00.123_456_789 UTC)),
            1_767_225_600_123_456
        );
        assert_eq!(micros(datetime!(1969-12-31 23:59:59.5 UTC)), -500_000);
        assert_eq!(
            micros(datetime!(2026-01-01 01:00 +01:00)),
            1_767_225_600_000_000
        );
        // The latest time there is: no overflow, whatever `time`'s features.
        let end = time::PrimitiveDateTime::MAX.assume_utc();
        assert!(micros(end) > micros(datetime!(9999-01-01 00:00 UTC)));
    }
}
