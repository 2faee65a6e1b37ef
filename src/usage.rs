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

use crate::{KeyId, Permissions};

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

/// The requests of a key in one period (an hour or a day, UTC), by outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct UsageBucket {
    /// When the period starts.
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    /// Requests that reached the service.
    pub admitted: u64,
    /// Requests refused after authentication, by reason.
    pub rejected: RejectionCounts,
}

impl UsageBucket {
    /// An empty bucket starting at `start`.
    #[must_use]
    pub fn new(start: OffsetDateTime) -> Self {
        Self {
            start,
            admitted: 0,
            rejected: RejectionCounts::default(),
        }
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Self) {
        self.admitted += other.admitted;
        self.rejected.plan_required += other.rejected.plan_required;
        self.rejected.missing_permission += other.rejected.missing_permission;
        self.rejected.route_not_allowed += other.rejected.route_not_allowed;
        self.rejected.rate_limited += other.rejected.rate_limited;
    }

    /// Whether it counts no request.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.admitted == 0 && self.rejected == RejectionCounts::default()
    }
}

/// The length of a [`UsageBucket`]'s period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    /// An hour (UTC).
    Hour,
    /// A day (UTC).
    Day,
}

impl Granularity {
    /// The start of the period holding `at`.
    #[must_use]
    pub fn start_of(self, at: OffsetDateTime) -> OffsetDateTime {
        let length = self.seconds();
        let start = at.unix_timestamp().div_euclid(length) * length;
        OffsetDateTime::from_unix_timestamp(start).unwrap_or(at)
    }

    /// The period's length.
    #[must_use]
    pub fn length(self) -> std::time::Duration {
        std::time::Duration::from_secs(self.seconds().unsigned_abs())
    }

    fn seconds(self) -> i64 {
        match self {
            Self::Hour => 3_600,
            Self::Day => 86_400,
        }
    }

    /// The name the stores and the wire use: `hour`, `day`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
        }
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
    /// The same requests by hour (UTC), oldest first: one bucket, or more when the
    /// batch spans the turn of an hour. A store adds them to its hourly and daily buckets.
    pub hours: Vec<UsageBucket>,
    /// The permissions the admitted requests' routes needed: each was last used at
    /// `last_used_at` (within the batch's flush interval).
    pub permissions_used: Permissions,
}

impl UsageReport {
    /// Adds `other` (of the same key) to this report.
    pub(crate) fn merge(&mut self, other: &Self) {
        self.usage.merge(&other.usage);
        self.last_used_at = self.last_used_at.max(other.last_used_at);
        for permission in other.permissions_used {
            self.permissions_used = self.permissions_used.with(permission);
        }
        for bucket in &other.hours {
            match self.hours.iter_mut().find(|b| b.start == bucket.start) {
                Some(same) => same.add(bucket),
                None => self.hours.push(*bucket),
            }
        }
        self.hours.sort_by_key(|b| b.start);
    }

    /// The hours as days (UTC), oldest first.
    #[must_use]
    pub fn days(&self) -> Vec<UsageBucket> {
        let mut days: Vec<UsageBucket> = Vec::new();
        for hour in &self.hours {
            let start = Granularity::Day.start_of(hour.start);
            if let Some(day) = days.iter_mut().find(|d| d.start == start) {
                day.add(hour);
            } else {
                let mut day = UsageBucket::new(start);
                day.add(hour);
                days.push(day);
            }
        }
        days
    }
}
