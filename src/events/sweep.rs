//! The sweep: events that time brings, not a change.

use std::time::Duration;

use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use super::{Event, EventKind};
use crate::{
    limit::Scope, manage::LimitInfo, store::EventOutbox, BackendError, KeyManager, ManageError,
};

/// A key is told `key.expiring` once it expires within this: 7 days.
pub const EXPIRING_WITHIN: Duration = Duration::from_secs(7 * 86_400);

/// Finished events are kept this long, with the marks that keep the sweep's events to once:
/// longer than any mark is needed.
const KEEP_FINISHED: Duration = Duration::from_secs(40 * 86_400);

/// How far back of the last sweep the quota sweep looks for used keys: their use reaches
/// the store one usage flush late.
const FLUSH_LAG: Duration = Duration::from_secs(300);

/// The shares of a quota that are told once per period, in percent.
const THRESHOLDS: [u64; 2] = [80, 100];

/// When the sweep runs, and when it last did.
pub(super) struct Sweep {
    every: Duration,
    last: std::sync::Mutex<Option<OffsetDateTime>>,
}

impl Sweep {
    pub(super) fn new(every: Duration) -> Self {
        Self {
            every,
            last: std::sync::Mutex::new(None),
        }
    }

    /// Sweeps at `now` if the last sweep was `every` ago (or never): expirations, quotas,
    /// and the pruning of old events.
    pub(super) async fn run_if_due<S: EventOutbox>(
        &self,
        keys: &KeyManager<S>,
        now: OffsetDateTime,
    ) -> Result<(), BackendError> {
        let since = {
            let mut last = crate::lock(&self.last);
            if last.is_some_and(|last| now - last < self.every && now >= last) {
                return Ok(());
            }
            last.replace(now).unwrap_or(now - self.every)
        };
        let outbox = keys.storage();
        expirations(outbox, now).await?;
        quotas(keys, since - FLUSH_LAG, now).await?;
        outbox.prune_events(now - KEEP_FINISHED).await?;
        Ok(())
    }
}

/// Writes `key.expiring` for each live key that expires within [`EXPIRING_WITHIN`] of
/// `now`, and `key.expired` for each that expired in the last [`EXPIRING_WITHIN`], once
/// per key each (a mark of the event's kind and key). A key replaced by a rotation is left
/// out: `key.rotated` told its end.
async fn expirations<S: EventOutbox>(outbox: &S, now: OffsetDateTime) -> Result<(), BackendError> {
    let keys = outbox
        .keys_expiring(now - EXPIRING_WITHIN, now + EXPIRING_WITHIN)
        .await?;
    for key in keys.iter().filter(|key| key.replaced_by.is_none()) {
        let Some(expires_at) = key.expires_at else {
            continue;
        };
        let kind = if expires_at > now {
            EventKind::KeyExpiring
        } else {
            EventKind::KeyExpired
        };
        let event = Event::new(kind, &key.account_id, Some(&key.id), now).data(
            "expires_at",
            expires_at.format(&Rfc3339).unwrap_or_default(),
        );
        outbox
            .add_event(&event, &format!("{kind}:{}", key.id))
            .await?;
    }
    Ok(())
}

/// Writes `quota.threshold` for each quota of the keys used since `since` whose current
/// period has used 80 % (then 100 %) of it, once per period and threshold: per key for a
/// quota per key, per account (no key) for a quota per account. The use is what Key JSON
/// shows ([`QuotaUse`](crate::manage::QuotaUse)).
async fn quotas<S: EventOutbox>(
    keys: &KeyManager<S>,
    since: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<(), BackendError> {
    let outbox = keys.storage();
    for account in outbox.accounts_used_since(since).await? {
        let listed = match keys.keys(&account).await {
            Ok(listed) => listed,
            Err(ManageError::Backend(error)) => return Err(error),
            // Deleted meanwhile, or on a plan without keys: nothing to tell.
            Err(_) => continue,
        };
        for key in &listed {
            for info in &key.rate_limits {
                let Some((quota, start)) = info
                    .quota
                    .zip(info.limit.period_at(now).map(|(start, _)| start))
                else {
                    continue;
                };
                let requests = u64::from(info.limit.requests());
                let key_id = (info.limit.scope() == Scope::Key).then_some(&key.id);
                for threshold in THRESHOLDS {
                    if quota.used * 100 < requests * threshold {
                        break;
                    }
                    let event = threshold_event(info, threshold, &account, key_id, now);
                    let mark = format!(
                        "{}:{}:{}:{}:{threshold}",
                        EventKind::QuotaThreshold,
                        event.subject(),
                        period_name(info),
                        start.unix_timestamp(),
                    );
                    outbox.add_event(&event, &mark).await?;
                }
            }
        }
    }
    Ok(())
}

fn threshold_event(
    info: &LimitInfo,
    threshold: u64,
    account: &crate::AccountId,
    key: Option<&crate::KeyId>,
    now: OffsetDateTime,
) -> Event {
    let mut event = Event::new(EventKind::QuotaThreshold, account, key, now);
    if let Ok(serde_json::Value::Object(quota)) = serde_json::to_value(info) {
        event.data = quota;
    }
    event.data("threshold", threshold)
}

fn period_name(info: &LimitInfo) -> &'static str {
    match info.limit.period() {
        crate::limit::Period::Month => "month",
        _ => "day",
    }
}
