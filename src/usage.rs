//! Usage: what each key did, counted in memory by the layer and flushed to the store in
//! batches, so that a request never waits for a store write.
//!
//! The layer adds every authenticated request to a pending [`Usage`] per key. Every flush
//! interval (default 5 s) a background task hands the pending reports to
//! [`KeyStore::record_usage`](crate::KeyStore::record_usage); call
//! [`NouvelAuthLayer::flush_usage`](crate::NouvelAuthLayer::flush_usage) once more at
//! shutdown. So `last_used_at` and the counters a store shows are at most one flush
//! interval stale. A failed flush puts the reports back; nothing is lost.

use std::{
    sync::{Arc, Once, Weak},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{ConcurrentMap, KeyId, KeyStore};

/// What happened to a request that authenticated with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
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
    /// Counts one request with `outcome` at `at`.
    pub fn count(&mut self, outcome: Outcome, at: OffsetDateTime) {
        let counter = match outcome {
            Outcome::Admitted => &mut self.admitted,
            Outcome::PlanRequired => &mut self.rejected.plan_required,
            Outcome::MissingPermission => &mut self.rejected.missing_permission,
            Outcome::RouteNotAllowed => &mut self.rejected.route_not_allowed,
            Outcome::RateLimited => &mut self.rejected.rate_limited,
        };
        *counter += 1;
        self.last_request_at = self.last_request_at.max(Some(at));
    }

    /// Adds `other`'s counts to these, keeping the later time.
    pub fn merge(&mut self, other: &Usage) {
        self.admitted += other.admitted;
        self.rejected.plan_required += other.rejected.plan_required;
        self.rejected.missing_permission += other.rejected.missing_permission;
        self.rejected.route_not_allowed += other.rejected.route_not_allowed;
        self.rejected.rate_limited += other.rejected.rate_limited;
        self.last_request_at = self.last_request_at.max(other.last_request_at);
    }
}

/// One key's usage since the last flush: what [`KeyStore::record_usage`] receives.
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

impl UsageReport {
    /// Folds `other` (a report for the same key) into this one.
    pub fn merge(&mut self, other: &UsageReport) {
        self.usage.merge(&other.usage);
        self.last_used_at = self.last_used_at.max(other.last_used_at);
    }
}

/// The layer's pending usage, per key.
#[derive(Debug)]
pub(crate) struct UsageRecorder {
    pending: ConcurrentMap<KeyId, UsageReport>,
    flusher: Once,
    interval: Duration,
}

impl UsageRecorder {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            pending: ConcurrentMap::default(),
            flusher: Once::new(),
            interval,
        }
    }

    pub(crate) fn record(&self, key_id: &KeyId, outcome: Outcome, at: OffsetDateTime) {
        let count = |report: &mut UsageReport| {
            report.usage.count(outcome, at);
            if outcome == Outcome::Admitted {
                report.last_used_at = report.last_used_at.max(Some(at));
            }
        };
        // `get_mut` first: the common case costs no clone of the id.
        if let Some(mut report) = self.pending.get_mut(key_id) {
            return count(&mut report);
        }
        count(
            &mut self
                .pending
                .entry(key_id.clone())
                .or_insert_with(|| UsageReport {
                    key_id: key_id.clone(),
                    usage: Usage::default(),
                    last_used_at: None,
                }),
        );
    }

    fn restore(&self, reports: Vec<UsageReport>) {
        for report in reports {
            self.pending
                .entry(report.key_id.clone())
                .and_modify(|pending| pending.merge(&report))
                .or_insert(report);
        }
    }

    /// Hands the pending reports to `store`; on failure keeps them for the next flush.
    pub(crate) async fn flush<K: KeyStore>(&self, store: &K) -> Result<(), crate::BackendError> {
        let keys: Vec<KeyId> = self
            .pending
            .iter()
            .map(|entry| entry.key().clone())
            .collect();
        let reports: Vec<UsageReport> = keys
            .iter()
            .filter_map(|key| self.pending.remove(key))
            .map(|(_, report)| report)
            .collect();
        if reports.is_empty() {
            return Ok(());
        }
        let flushed = store.record_usage(&reports).await;
        if let Err(error) = &flushed {
            tracing::warn!(%error, "nouvel-auth could not flush key usage; will retry");
            self.restore(reports);
        }
        flushed
    }

    /// Starts the periodic flush once, on the runtime of the first request. The task
    /// holds weak references, so it ends when the layer and its services are dropped.
    pub(crate) fn start_flushing<K: KeyStore>(self: &Arc<Self>, store: &Arc<K>) {
        self.flusher.call_once(|| {
            let (recorder, store) = (Arc::downgrade(self), Arc::downgrade(store));
            let interval = self.interval;
            tokio::spawn(flush_periodically(recorder, store, interval));
        });
    }
}

async fn flush_periodically<K: KeyStore>(
    recorder: Weak<UsageRecorder>,
    store: Weak<K>,
    interval: Duration,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let (Some(recorder), Some(store)) = (recorder.upgrade(), store.upgrade()) else {
            return;
        };
        // A failure was logged and the reports kept; try again next tick.
        let _ = recorder.flush(&*store).await;
    }
}
