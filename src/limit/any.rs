//! [`AnyRateLimiter`]: the limiter chosen at run time.

use std::{sync::OnceLock, task::Poll};

use time::OffsetDateTime;

#[cfg(feature = "redis")]
use super::{RedisRateLimiter, RedisWindow};
use crate::{
    limit::MemoryWindow, BackendError, Decision, KeyId, MemoryRateLimiter, RateLimit, RateLimiter,
};

/// One of the built-in limiters, chosen at run time (from the environment, say), behind
/// one type: the application's layer and router have one type whichever it is.
///
/// ```
/// use nouvel_auth::{
///     limit::AnyRateLimiter, limit::MemoryRateLimiter, MemoryKeyStore, Profile,
/// };
///
/// # async fn run() -> Result<(), nouvel_auth::BackendError> {
/// let profile = Profile::nouvel();
/// let limiter: AnyRateLimiter = match std::env::var("REDIS_URL") {
///     # #[cfg(feature = "redis")]
///     Ok(url) => nouvel_auth::limit::RedisRateLimiter::connect(&url, &profile).await?.into(),
///     _ => MemoryRateLimiter::new().into(),
/// };
/// let layer = profile.layer(MemoryKeyStore::new()).limiter(limiter);
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyRateLimiter {
    /// [`MemoryRateLimiter`]: this instance alone.
    Memory(MemoryRateLimiter),
    /// [`RedisRateLimiter`]: once for every instance.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    Redis(RedisRateLimiter),
}

/// The window of a key under an [`AnyRateLimiter`]: the chosen limiter's, made on first use.
#[derive(Debug, Default)]
pub struct AnyWindow(OnceLock<ChosenWindow>);

#[derive(Debug)]
enum ChosenWindow {
    Memory(MemoryWindow),
    #[cfg(feature = "redis")]
    Redis(RedisWindow),
}

impl AnyWindow {
    /// The window as `limiter` keeps it; a window is only ever used by one limiter.
    fn of(&self, limiter: &AnyRateLimiter) -> &ChosenWindow {
        self.0.get_or_init(|| match limiter {
            AnyRateLimiter::Memory(_) => ChosenWindow::Memory(MemoryWindow::default()),
            #[cfg(feature = "redis")]
            AnyRateLimiter::Redis(_) => ChosenWindow::Redis(RedisWindow::default()),
        })
    }
}

impl From<MemoryRateLimiter> for AnyRateLimiter {
    fn from(limiter: MemoryRateLimiter) -> Self {
        Self::Memory(limiter)
    }
}

#[cfg(feature = "redis")]
impl From<RedisRateLimiter> for AnyRateLimiter {
    fn from(limiter: RedisRateLimiter) -> Self {
        Self::Redis(limiter)
    }
}

/// Both `match`es of a call: the limiter's variant and its window's, which are the same.
macro_rules! with_window {
    ($limiter:expr, $window:expr, |$l:ident, $w:ident| $call:expr, $mismatch:expr) => {
        match ($limiter, $window.of($limiter)) {
            (AnyRateLimiter::Memory($l), ChosenWindow::Memory($w)) => $call,
            #[cfg(feature = "redis")]
            (AnyRateLimiter::Redis($l), ChosenWindow::Redis($w)) => $call,
            #[cfg(feature = "redis")]
            _ => $mismatch,
        }
    };
}

impl RateLimiter for AnyRateLimiter {
    type Window = AnyWindow;

    async fn check(
        &self,
        window: &AnyWindow,
        key: &KeyId,
        limit: RateLimit,
        now: OffsetDateTime,
    ) -> Result<Decision, BackendError> {
        with_window!(
            self,
            window,
            |l, w| l.check(w, key, limit, now).await,
            Err(BackendError::failed("a window of another limiter"))
        )
    }

    fn check_now(
        &self,
        window: &AnyWindow,
        key: &KeyId,
        limit: RateLimit,
        now: OffsetDateTime,
    ) -> Poll<Decision> {
        with_window!(
            self,
            window,
            |l, w| l.check_now(w, key, limit, now),
            Poll::Pending
        )
    }

    fn is_idle(&self, window: &AnyWindow, now: OffsetDateTime) -> bool {
        match window.0.get() {
            None => true,
            Some(_) => with_window!(self, window, |l, w| l.is_idle(w, now), true),
        }
    }
}
