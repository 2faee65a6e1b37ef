//! [`BackendError`]: a key store or limiter that failed or did not answer in time.

/// A boxed error from a backend (database, Redis, …).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A key store or rate limiter could not answer. The layer answers 503
/// `auth_unavailable` (fail closed) and logs the cause; the cause never reaches the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// No answer within the configured timeout.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
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
