//! Usage: what each key did, counted in memory by the layer and flushed to the store in
//! batches, so that a request never waits for a store write.
//!
//! The layer adds every authenticated request to a pending [`Usage`] per key. Every flush
//! interval (default 5 s) a background task hands the pending reports to
//! [`KeyStore::record_usage`](crate::KeyStore::record_usage); call
//! [`Profile::flush_usage`](crate::Profile::flush_usage) once more at shutdown. So `last_used_at` and the counters a store shows are at most one flush
//! interval stale. A failed flush puts the reports back; nothing is lost.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::KeyId;

/// What happened to a request that authenticated with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It reached the service.
    Admitted,
    /// 402 `plan_required`.
    PlanRequired,
    /// 403 `missing_permission`.
    MissingPermission,
    /// 403 `route_not_allowed`.
    RouteNotAllowed,
    /// 429 `rate_limited`.
    RateLimited,
}

/// Rejections of authenticated requests, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)] // each field is the count for the code of the same name
pub struct RejectionCounts {
    pub plan_required: u64,
    pub missing_permission: u64,
    pub route_not_allowed: u64,
    pub rate_limited: u64,
}

/// A key's usage: counts of admitted and rejected requests, and the last request's time.
/// Requests rejected with 401 count for no key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Requests that reached the service.
    pub admitted: u64,
    /// Requests refused after authentication, by reason.
    pub rejected: RejectionCounts,
    /// The last request that authenticated with the key, whatever its outcome.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_request_at: Option<OffsetDateTime>,
}

impl Usage {
    /// Adds `other`'s counts to these, keeping the later time.
    pub fn merge(&mut self, other: &Self) {
        self.admitted += other.admitted;
        self.rejected.plan_required += other.rejected.plan_required;
        self.rejected.missing_permission += other.rejected.missing_permission;
        self.rejected.route_not_allowed += other.rejected.route_not_allowed;
        self.rejected.rate_limited += other.rejected.rate_limited;
        self.last_request_at = self.last_request_at.max(other.last_request_at);
    }
}

/// One key's usage since the last flush: what [`KeyStore::record_usage`](crate::KeyStore::record_usage) receives.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UsageReport {
    /// The key.
    pub key_id: KeyId,
    /// Requests since the last flush.
    pub usage: Usage,
    /// The last admitted request since the last flush: the key's new "last used".
    pub last_used_at: Option<OffsetDateTime>,
}
