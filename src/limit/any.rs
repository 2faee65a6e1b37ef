//! [`AnyRateLimiter`]: the limiter chosen at run time.

use std::{sync::OnceLock, task::Poll};

use time::OffsetDateTime;

use super::Subject;
#[cfg(feature = "redis")]
use super::{RedisRateLimiter, RedisWindow};
use crate::{
    limit::MemoryWindow, BackendError, Decision, MemoryRateLimiter, RateLimiter, RateLimits,
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

impl AnyWindow {
    fn memory(&self, limiter: &AnyRateLimiter) -> Option<&MemoryWindow> {
        match self.of(limiter) {
            ChosenWindow::Memory(window) => Some(window),
            #[cfg(feature = "redis")]
            ChosenWindow::Redis(_) => None,
        }
    }

    #[cfg(feature = "redis")]
    fn redis(&self, limiter: &AnyRateLimiter) -> Option<&RedisWindow> {
        match self.of(limiter) {
            ChosenWindow::Redis(window) => Some(window),
            ChosenWindow::Memory(_) => None,
        }
    }
}

impl RateLimiter for AnyRateLimiter {
    type Window = AnyWindow;

    async fn check(
        &self,
        subject: Subject<'_, AnyWindow>,
        limits: RateLimits,
        now: OffsetDateTime,
    ) -> Result<Decision, BackendError> {
        let mismatch = || BackendError::failed("a window of another limiter");
        match self {
            Self::Memory(limiter) => {
                let subject = subject.map(|w| w.memory(self)).ok_or_else(mismatch)?;
                limiter.check(subject, limits, now).await
            }
            #[cfg(feature = "redis")]
            Self::Redis(limiter) => {
                let subject = subject.map(|w| w.redis(self)).ok_or_else(mismatch)?;
                limiter.check(subject, limits, now).await
            }
        }
    }

    fn check_now(
        &self,
        subject: Subject<'_, AnyWindow>,
        limits: RateLimits,
        now: OffsetDateTime,
    ) -> Poll<Decision> {
        match self {
            Self::Memory(limiter) => subject
                .map(|w| w.memory(self))
                .map_or(Poll::Pending, |subject| {
                    limiter.check_now(subject, limits, now)
                }),
            #[cfg(feature = "redis")]
            Self::Redis(limiter) => subject
                .map(|w| w.redis(self))
                .map_or(Poll::Pending, |subject| {
                    limiter.check_now(subject, limits, now)
                }),
        }
    }

    fn is_idle(&self, window: &AnyWindow, now: OffsetDateTime) -> bool {
        match (self, window.0.get()) {
            (_, None) => true,
            (Self::Memory(limiter), Some(ChosenWindow::Memory(window))) => {
                limiter.is_idle(window, now)
            }
            #[cfg(feature = "redis")]
            (Self::Redis(limiter), Some(ChosenWindow::Redis(window))) => {
                limiter.is_idle(window, now)
            }
            #[cfg(feature = "redis")]
            _ => true,
        }
    }
}
