//! Step 6 of the request's path, the rate limits. The rules are at the crate root
//! ([`RateLimit`](crate::RateLimit) and the list of them a request is held to,
//! [`RateLimits`](crate::RateLimits), given to the profile's plans or to a key); here are
//! what they count over ([`Period`], [`Scope`]), the trait of limiters ([`RateLimiter`]) and
//! their [`Decision`]s, the windows, the headers, the limiter in memory (the default) and on
//! Redis, and [`AnyRateLimiter`], the one chosen at run time.
//!
//! A sliding window is exact (a sliding log): in any interval of length W at most N
//! requests are admitted, and a request is refused only when N were admitted in the W
//! before it. A quota admits N per calendar day or month (UTC). Each counts per key (a
//! replacement key with its predecessors) or per account. A request is admitted only if
//! every limit of its list admits it, and then counted in every one; refused requests are
//! counted in none, so a client that backs off gets through as soon as the limit that
//! refused it frees.

mod any;
#[cfg(any(
    feature = "admin",
    feature = "settings",
    feature = "postgres",
    feature = "sqlite"
))]
mod json;
pub(crate) mod limits;
pub(crate) mod memory;
#[cfg(feature = "redis")]
mod redis;
pub(crate) mod rule;

pub use any::{AnyRateLimiter, AnyWindow};
#[cfg(any(feature = "admin", feature = "settings"))]
pub(crate) use json::LIMIT_FORM;
pub use limits::{InvalidLimits, Period, Scope};
pub use memory::{MemoryRateLimiter, MemoryWindow};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::{RedisFailure, RedisRateLimiter, RedisWindow};
pub(crate) use rule::Verdict;
pub use rule::RATE_LIMIT_HEADERS;
pub(crate) use rule::{header_value, number};
pub use rule::{Decision, RateLimiter, Subject};
