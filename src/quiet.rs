//! Warnings that an outage would repeat on every request, written at most once per 10 s
//! per kind, with the count of those left out since the last line.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::Duration,
};

use tokio::time::Instant;

/// How often, at most, one kind of warning is written.
const EVERY: Duration = Duration::from_secs(10);

/// One kind of warning: when it was last written, and how many were left out since.
#[derive(Debug)]
pub(crate) struct Quiet {
    last: Mutex<Option<Instant>>,
    left_out: AtomicU64,
}

impl Quiet {
    pub(crate) const fn new() -> Self {
        Self {
            last: Mutex::new(None),
            left_out: AtomicU64::new(0),
        }
    }

    /// `Some(left_out)` when this warning is due (write it, with that count), `None` when
    /// one was written less than 10 s ago (it is counted instead).
    pub(crate) fn due(&self) -> Option<u64> {
        let now = Instant::now();
        let mut last = crate::lock(&self.last);
        if last.is_some_and(|at| now < at + EVERY) {
            self.left_out.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.left_out.swap(0, Ordering::Relaxed))
    }
}

/// Writes `tracing::warn!` for the kind `$quiet` (a `static Quiet`) if it is due, with the
/// count of those left out as `left_out`.
macro_rules! warn_quietly {
    ($quiet:expr, $($arg:tt)+) => {
        if let Some(left_out) = $quiet.due() {
            tracing::warn!(left_out, $($arg)+);
        }
    };
}

pub(crate) use warn_quietly;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_line_per_ten_seconds_with_the_count_left_out() {
        let quiet = Quiet::new();
        assert_eq!(quiet.due(), Some(0));
        for _ in 0..99 {
            assert_eq!(quiet.due(), None);
        }
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert_eq!(quiet.due(), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(quiet.due(), Some(100));
        assert_eq!(quiet.due(), None);
    }
}
