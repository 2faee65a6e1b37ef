//! Step 6 of the request's path, the per-key rate limit. The rule is at the crate root
//! ([`RateLimit`](crate::RateLimit), given to the profile); here are the trait of limiters
//! ([`RateLimiter`]) and their [`Decision`]s, the per-key windows, the headers, the limiter
//! in memory (the default) and on Redis, and [`AnyRateLimiter`], the one chosen at run time.
//!
//! The rule is an exact sliding window (a sliding log): for any key, in any interval of
//! length W at most N requests are admitted, and a request is refused only when N were
//! admitted in the W before it. Refused requests are not recorded, so a client that backs
//! off gets through as soon as its oldest request leaves the window.

mod any;
pub(crate) mod memory;
#[cfg(feature = "redis")]
mod redis;
pub(crate) mod rule;

pub use any::{AnyRateLimiter, AnyWindow};
pub use memory::{MemoryRateLimiter, MemoryWindow};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::{RedisFailure, RedisRateLimiter, RedisWindow};
pub use rule::RATE_LIMIT_HEADERS;
pub(crate) use rule::{header_value, number};
pub use rule::{Decision, RateLimiter};
