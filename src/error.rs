//! [`BackendError`]: a key store or limiter that failed or did not answer in time.

use std::{future::Future, task::Poll, time::Duration};

/// A boxed error from a backend (database, Redis, …).
type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A key store or rate limiter could not answer. The layer answers 503
/// `auth_unavailable` (fail closed) and logs the cause; the cause never reaches the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// No answer within the configured timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The backend answered with an error.
    #[error("backend failed: {0}")]
    Failed(#[source] BoxError),
}

impl BackendError {
    /// Wraps any backend error.
    pub fn failed(error: impl Into<BoxError>) -> Self {
        Self::Failed(error.into())
    }
}

/// Runs `future` with a timeout, but arms no timer when it is ready at once, as a
/// memory store or a warm cache is.
pub(crate) async fn within<T>(
    limit: Duration,
    future: impl Future<Output = Result<T, BackendError>>,
) -> Result<T, BackendError> {
    let mut future = std::pin::pin!(future);
    let first = std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await;
    match first {
        Poll::Ready(output) => output,
        // Boxed: the timer is big, and a future that waits pays for a network trip anyway.
        Poll::Pending => Box::pin(tokio::time::timeout(limit, future))
            .await
            .map_err(|_| BackendError::Timeout(limit))?,
    }
}
