//! What a layer keeps per key: the limiter's window and the usage not yet flushed, in one
//! [`Slot`] reached from the key's record. A request thus reaches record, window and
//! usage through one map lookup, the store's: the slot is attached to the record the
//! store holds (a memory store, a cache) the first time the layer sees it, and found by
//! key id only when a record is new (a store that builds one per lookup, or a record
//! rebuilt after a change).
//!
//! A replacement key's slot counts in the window of the first key of its rotation chain
//! (the record's [`limit_id`](crate::KeyRecord::limit_id)): it holds that key's slot and
//! uses its window, so a key that was never rotated keeps its window in place.
//!
//! Slots are dropped once nothing refers to them but this map, their window is idle and
//! their usage flushed: a sweep at most once a minute. A slot is never dropped while a
//! record or a replacement's slot holds it, so a key never gets two windows.

use std::{
    future::Future,
    ops::Deref,
    pin::Pin,
    sync::{
        atomic::{AtomicI32, AtomicI64, AtomicU32, AtomicU64, Ordering},
        Arc, Once, Weak,
    },
    time::Duration,
};

use time::OffsetDateTime;

use crate::{
    clock::micros,
    metrics::count,
    quiet::{warn_quietly, Quiet},
    usage::{Outcome, RejectionCounts, UsageBucket},
    AccountId, BackendError, ConcurrentMap, KeyId, KeyRecord, KeyStore, Permission, PermissionSet,
    Permissions, Profile, RateLimiter, RateLimits, Usage, UsageReport,
};

/// A layer's slots, by key id.
pub(crate) struct Slots<L: RateLimiter> {
    /// Tells this layer's slots from another's on a record two layers share.
    id: u64,
    map: ConcurrentMap<KeyId, Arc<Slot<L::Window>>>,
    /// The windows of accounts with a limit counted per account.
    accounts: ConcurrentMap<AccountId, Arc<L::Window>>,
    last_sweep: AtomicI64,
    flusher: Once,
    interval: Duration,
    /// The profile's permissions, which the pending usage's bits are of.
    permissions: &'static PermissionSet,
    /// Reports a flush failed to write, for the next flush: by then the hours they count
    /// may be past, so they do not go back into the slots' cells.
    retry: std::sync::Mutex<Reports>,
}

/// One key's window and pending usage; a replacement's window is the first key's of its
/// rotation chain.
pub(crate) struct Slot<W> {
    own_window: W,
    /// The slot of the key whose window this one counts in, for a replacement.
    counts_in: Option<Arc<Self>>,
    usage: PendingUsage,
}

/// A slot reached from a record (borrowed), or from the map (shared).
pub(crate) enum SlotRef<'r, W> {
    Attached(&'r Slot<W>),
    Shared(Arc<Slot<W>>),
}

impl<W> Deref for SlotRef<'_, W> {
    type Target = Slot<W>;

    fn deref(&self) -> &Slot<W> {
        match self {
            Self::Attached(slot) => slot,
            Self::Shared(slot) => slot,
        }
    }
}

const SWEEP_EVERY_MICROS: i64 = 60_000_000;

static NEXT_LAYER: AtomicU64 = AtomicU64::new(1);

impl<L: RateLimiter> Slots<L> {
    pub(crate) fn new(interval: Duration, permissions: &'static PermissionSet) -> Self {
        Self {
            id: NEXT_LAYER.fetch_add(1, Ordering::Relaxed),
            map: ConcurrentMap::default(),
            accounts: ConcurrentMap::default(),
            last_sweep: AtomicI64::new(i64::MIN),
            flusher: Once::new(),
            interval,
            permissions,
            retry: std::sync::Mutex::default(),
        }
    }

    /// The slot of `record`'s key: the one the record carries, else the map's (made if
    /// need be, and attached to the record for next time).
    pub(crate) fn of<'r>(&self, record: &'r KeyRecord) -> SlotRef<'r, L::Window> {
        if let Some(slot) = record.layer_state.get::<Slot<L::Window>>(self.id) {
            return SlotRef::Attached(slot);
        }
        let slot = self.by_id(&record.id, record.limit_id());
        record.layer_state.attach(self.id, slot.clone());
        SlotRef::Shared(slot)
    }

    /// Key `id`'s slot, made (counting in `limit_id`'s window, if another) if it has none.
    fn by_id(&self, id: &KeyId, limit_id: &KeyId) -> Arc<Slot<L::Window>> {
        if let Some(slot) = self.map.get(id) {
            return slot.clone();
        }
        // Outside the entry below: the first key's slot may be made too, in the same map.
        let counts_in = (limit_id != id).then(|| self.by_id(limit_id, limit_id));
        self.map
            .entry(id.clone())
            .or_insert_with(|| {
                Arc::new(Slot {
                    own_window: L::Window::default(),
                    counts_in,
                    usage: PendingUsage::default(),
                })
            })
            .clone()
    }

    /// The window of `key`'s account, if `limits` count anything per account. Found by
    /// account id (not kept in the key's slot, which most keys would pay for unused).
    pub(crate) fn account_window(
        &self,
        key: &KeyRecord,
        limits: &RateLimits,
    ) -> Option<Arc<L::Window>> {
        limits.has_account_scope().then(|| {
            if let Some(window) = self.accounts.get(&key.account_id) {
                return window.clone();
            }
            self.accounts
                .entry(key.account_id.clone())
                .or_default()
                .clone()
        })
    }

    /// Drops the slots nothing else holds, whose window is idle and usage flushed; at most
    /// once a minute, by whichever request comes first.
    pub(crate) fn sweep_if_due(&self, limiter: &L, now: OffsetDateTime) {
        let now_micros = micros(now);
        let last = self.last_sweep.load(Ordering::Relaxed);
        let due = last == i64::MIN || now_micros >= last.saturating_add(SWEEP_EVERY_MICROS);
        if due
            && self
                .last_sweep
                .compare_exchange(last, now_micros, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.map.retain(|_, slot| {
                Arc::strong_count(slot) > 1
                    || !slot.usage.is_empty()
                    || !limiter.is_idle(slot.window(), now)
            });
            self.accounts
                .retain(|_, window| Arc::strong_count(window) > 1 || !limiter.is_idle(window, now));
        }
    }

    /// Counts one request of `key` (whose slot is `slot`) with `outcome` at `at`. The
    /// counts of an hour no flush took before the cell was needed again (the flush
    /// interval is an hour or more, or the flusher was held up) wait for the next flush
    /// beside the slots, in their own hour.
    pub(crate) fn count(
        &self,
        key: &KeyId,
        slot: &Slot<L::Window>,
        outcome: Outcome,
        needed: Option<Permission>,
        at: OffsetDateTime,
    ) {
        if let Some(stale) = slot.usage.count(outcome, needed, at) {
            self.keep_for_next_flush(key, stale);
        }
    }

    /// Keeps `stale`, an hour of `key`'s counts taken out of its cell, for the next flush.
    #[cold]
    fn keep_for_next_flush(&self, key: &KeyId, stale: UsageBucket) {
        {
            let mut usage = Usage::default();
            usage.merge(&Usage {
                admitted: stale.admitted,
                rejected: stale.rejected,
                last_request_at: None,
            });
            let report = UsageReport {
                key_id: key.clone(),
                usage,
                last_used_at: None,
                hours: vec![stale],
                permissions_used: Permissions::default(),
            };
            keep(&mut crate::lock(&self.retry), report);
        }
    }

    /// Hands the pending usage to `store`; on failure keeps it for the next flush.
    pub(crate) async fn flush<K: KeyStore>(&self, store: &K) -> Result<(), BackendError> {
        // One report per key: the failed ones first, this interval's merged into them.
        let mut reports = std::mem::take(&mut *crate::lock(&self.retry));
        for entry in &self.map {
            if let Some(fresh) = entry.value().usage.take(entry.key(), self.permissions) {
                keep(&mut reports, fresh);
            }
        }
        let reports: Vec<UsageReport> = reports.into_values().collect();
        if reports.is_empty() {
            return Ok(());
        }
        let flushed = store.record_usage(&reports).await;
        if let Err(error) = &flushed {
            count!(USAGE_FLUSHES, "result" => "error");
            static FLUSH: Quiet = Quiet::new();
            warn_quietly!(FLUSH, %error, "nouvel-auth could not flush key usage; will retry");
            // A flush that ran meanwhile may have failed too: still one report per key.
            let mut retry = crate::lock(&self.retry);
            for report in reports {
                keep(&mut retry, report);
            }
        } else {
            count!(USAGE_FLUSHES, "result" => "ok");
        }
        flushed
    }

    /// Starts the periodic flush once, on the runtime of the first request. The task
    /// holds weak references, so it ends when the layer and its services are dropped.
    pub(crate) fn start_flushing<K: KeyStore>(self: &Arc<Self>, store: &Arc<K>, profile: &Profile) {
        self.flusher.call_once(|| {
            let (slots, weak_store) = (Arc::downgrade(self), Arc::downgrade(store));
            tokio::spawn(flush_periodically(slots, weak_store, self.interval));
            profile.keep_usage_of(Arc::new(LayerUsage {
                slots: self.clone(),
                store: store.clone(),
            }));
        });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

impl<W> Slot<W> {
    /// The window the key's requests count in.
    pub(crate) fn window(&self) -> &W {
        self.counts_in
            .as_deref()
            .map_or(&self.own_window, |first| &first.own_window)
    }
}

/// Reports by key: one per key, however many intervals it gathers.
type Reports = std::collections::HashMap<KeyId, UsageReport>;

/// Adds `report` to the one `reports` holds for its key, if any.
fn keep(reports: &mut Reports, report: UsageReport) {
    match reports.entry(report.key_id.clone()) {
        std::collections::hash_map::Entry::Occupied(mut kept) => kept.get_mut().merge(&report),
        std::collections::hash_map::Entry::Vacant(slot) => {
            slot.insert(report);
        }
    }
}

/// A layer's usage not yet written, as its profile keeps it for the last flush.
pub(crate) trait Unflushed: Send + Sync {
    /// Writes it.
    fn flush(&self) -> Pin<Box<dyn Future<Output = Result<(), BackendError>> + Send + '_>>;

    /// Whether the layer was dropped: nothing but the profile holds its state.
    fn is_dropped(&self) -> bool;
}

/// A layer's slots and store.
struct LayerUsage<L: RateLimiter, K> {
    slots: Arc<Slots<L>>,
    store: Arc<K>,
}

impl<L: RateLimiter, K: KeyStore> Unflushed for LayerUsage<L, K> {
    fn flush(&self) -> Pin<Box<dyn Future<Output = Result<(), BackendError>> + Send + '_>> {
        Box::pin(self.slots.flush(&*self.store))
    }

    fn is_dropped(&self) -> bool {
        Arc::strong_count(&self.slots) == 1
    }
}

async fn flush_periodically<L: RateLimiter, K: KeyStore>(
    slots: Weak<Slots<L>>,
    store: Weak<K>,
    interval: Duration,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let (Some(slots), Some(store)) = (slots.upgrade(), store.upgrade()) else {
            return;
        };
        // A failure was logged and the usage kept; try again next tick.
        let _ = slots.flush(&*store).await;
    }
}

/// Usage since the last flush, as counters a request adds to without a lock.
#[derive(Default)]
struct PendingUsage {
    /// The counts by hour: an hour's cell is the one of its parity, so a batch that spans
    /// the turn of an hour keeps both hours apart. A cell takes a new hour when a request
    /// of that hour comes; its counts are flushed every few seconds, so it holds an older
    /// hour's only when nothing was flushed for an hour (a failed flush hands its counts
    /// to the layer's retry list, not back to the cell).
    hours: [HourCell; 2],
    last_used: AtomicI64Time,
    last_request: AtomicI64Time,
    /// The permissions admitted requests' routes needed, as the masks of the profile's.
    permissions: AtomicU64,
}

/// One hour's counts, by outcome.
#[derive(Default)]
struct HourCell {
    /// Unix hours (seconds / 3600; 32 bits last 245 000 years).
    hour: AtomicI32,
    /// Admitted, then the four rejections, in the order of [`Outcome`]. A cell is emptied
    /// at every flush (a few seconds), so 32 bits are plenty, and they keep the slot small.
    counts: [AtomicU32; 5],
}

/// A time kept as unix microseconds in an atomic; `i64::MIN` for none.
struct AtomicI64Time(AtomicI64);

impl Default for AtomicI64Time {
    fn default() -> Self {
        Self(AtomicI64::new(i64::MIN))
    }
}

impl AtomicI64Time {
    /// Keeps the later of its time and `micros` (unix microseconds).
    fn at_least(&self, micros: i64) {
        self.0.fetch_max(micros, Ordering::Relaxed);
    }

    fn take(&self) -> Option<OffsetDateTime> {
        match self.0.swap(i64::MIN, Ordering::Relaxed) {
            i64::MIN => None,
            micros => OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000).ok(),
        }
    }

    fn is_none(&self) -> bool {
        self.0.load(Ordering::Relaxed) == i64::MIN
    }
}

impl HourCell {
    /// Makes the cell `hour`'s, handing back the counts of the hour it held, if any.
    #[cold]
    fn turn(&self, hour: i32) -> Option<UsageBucket> {
        let stale = self.take();
        self.hour.store(hour, Ordering::Relaxed);
        stale
    }

    /// Its counts, emptied, as a bucket; `None` if it counted nothing.
    fn take(&self) -> Option<UsageBucket> {
        let start = OffsetDateTime::from_unix_timestamp(
            i64::from(self.hour.load(Ordering::Relaxed)) * 3_600,
        )
        .ok()?;
        let [admitted, plan_required, missing_permission, route_not_allowed, rate_limited] = self
            .counts
            .each_ref()
            .map(|n| u64::from(n.swap(0, Ordering::Relaxed)));
        let bucket = UsageBucket {
            start,
            admitted,
            rejected: RejectionCounts {
                plan_required,
                missing_permission,
                route_not_allowed,
                rate_limited,
            },
        };
        (!bucket.is_empty()).then_some(bucket)
    }
}

impl PendingUsage {
    /// Counts one request; the counts of another hour the cell still held, if any, moved
    /// out of it.
    fn count(
        &self,
        outcome: Outcome,
        needed: Option<Permission>,
        at: OffsetDateTime,
    ) -> Option<UsageBucket> {
        const MICROS_PER_HOUR: i64 = 3_600_000_000;
        let at = micros(at);
        let hour = i32::try_from(at.div_euclid(MICROS_PER_HOUR)).unwrap_or(i32::MAX);
        let cell = &self.hours[usize::from(hour.rem_euclid(2) == 1)];
        let stale = if cell.hour.load(Ordering::Relaxed) == hour {
            None
        } else {
            cell.turn(hour)
        };
        let index = match outcome {
            Outcome::Admitted => 0,
            Outcome::PlanRequired => 1,
            Outcome::MissingPermission => 2,
            Outcome::RouteNotAllowed => 3,
            Outcome::RateLimited => 4,
        };
        cell.counts[index].fetch_add(1, Ordering::Relaxed);
        self.last_request.at_least(at);
        if outcome == Outcome::Admitted {
            self.last_used.at_least(at);
            if let Some(permission) = needed {
                self.permissions
                    .fetch_or(permission.mask(), Ordering::Relaxed);
            }
        }
        stale
    }

    fn is_empty(&self) -> bool {
        self.last_request.is_none()
    }

    /// What was counted since the last take, as `key`'s report; `None` if nothing was.
    /// The time goes first, so a request counted meanwhile is in this report or the next.
    fn take(&self, key: &KeyId, set: &'static PermissionSet) -> Option<UsageReport> {
        let last_request_at = self.last_request.take()?;
        let last_used_at = self.last_used.take();
        let used = self.permissions.swap(0, Ordering::Relaxed);
        let mut hours: Vec<UsageBucket> = self.hours.iter().filter_map(HourCell::take).collect();
        hours.sort_by_key(|bucket| bucket.start);
        let mut usage = Usage {
            last_request_at: Some(last_request_at),
            ..Usage::default()
        };
        for hour in &hours {
            usage.merge(&Usage {
                admitted: hour.admitted,
                rejected: hour.rejected,
                last_request_at: None,
            });
        }
        Some(UsageReport {
            key_id: key.clone(),
            usage,
            last_used_at,
            hours,
            permissions_used: Permissions::from_bits(set, used),
        })
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::{nouvel, MemoryRateLimiter, RateLimit};

    const T0: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

    fn record(id: &str) -> KeyRecord {
        KeyRecord::new(id, "acc", "k", nouvel::SCALE, nouvel::GENERATE.into())
    }

    #[test]
    fn a_record_reaches_its_slot_without_the_map_and_two_layers_keep_their_own() {
        let (a, b) = (
            Slots::<MemoryRateLimiter>::new(Duration::from_secs(5), nouvel::PERMISSIONS),
            Slots::<MemoryRateLimiter>::new(Duration::from_secs(5), nouvel::PERMISSIONS),
        );
        let key = record("key_1");
        assert!(
            matches!(a.of(&key), SlotRef::Shared(_)),
            "first sight: from the map"
        );
        assert!(
            matches!(a.of(&key), SlotRef::Attached(_)),
            "then from the record"
        );
        a.of(&key)
            .window()
            .admit(RateLimit::new(1, Duration::from_secs(60)), T0);
        // Another layer on the same record: its own slot, by the map each time.
        let theirs = b.of(&key);
        assert!(matches!(theirs, SlotRef::Shared(_)));
        assert!(theirs.window().is_idle(T0));
        // A record rebuilt for the same key (after a plan change) finds the same slot.
        let rebuilt = record("key_1");
        assert!(
            !a.of(&rebuilt)
                .window()
                .admit(RateLimit::new(1, Duration::from_secs(60)), T0)
                .allowed
        );
    }

    #[test]
    fn a_replacement_shares_its_predecessors_window_but_not_its_usage() {
        let slots = Slots::<MemoryRateLimiter>::new(Duration::from_secs(5), nouvel::PERMISSIONS);
        let limit = RateLimit::new(2, Duration::from_secs(60));
        let old = record("key_old");
        let new = record("key_new").shares_limit_with(Some(KeyId::from("key_old")));
        let newer = record("key_newer").shares_limit_with(Some(KeyId::from("key_old")));
        assert!(slots.of(&old).window().admit(limit, T0).allowed);
        assert!(slots.of(&new).window().admit(limit, T0).allowed);
        assert!(
            !slots.of(&newer).window().admit(limit, T0).allowed,
            "two in all"
        );
        slots.count(&new.id, &slots.of(&new), Outcome::Admitted, None, T0);
        assert!(slots.of(&old).usage.is_empty(), "usage stays per key");
        assert!(!slots.of(&new).usage.is_empty());
    }

    #[test]
    fn only_idle_slots_nothing_holds_are_swept() {
        let slots = Slots::<MemoryRateLimiter>::new(Duration::from_secs(5), nouvel::PERMISSIONS);
        let limit = RateLimit::default();
        let held = record("held");
        slots.of(&held).window().admit(limit, T0);
        {
            let dropped = record("dropped");
            slots.of(&dropped).window().admit(limit, T0);
            let counted = record("counted");
            slots.count(
                &counted.id,
                &slots.of(&counted),
                Outcome::Admitted,
                None,
                T0,
            );
        }
        assert_eq!(slots.len(), 3);
        // A minute on, every window is idle; only the held record and the unflushed usage stay.
        slots.sweep_if_due(&MemoryRateLimiter, T0 + Duration::from_secs(61));
        assert_eq!(slots.len(), 2);
        assert!(slots.map.contains_key(&KeyId::from("held")));
        assert!(slots.map.contains_key(&KeyId::from("counted")));
    }

    #[test]
    fn pending_usage_is_taken_once_by_hour() {
        let usage = PendingUsage::default();
        let key = KeyId::from("k");
        assert!(usage.take(&key, nouvel::PERMISSIONS).is_none());
        // T0 is on the hour: one request in the hour before, two in T0's.
        usage.count(
            Outcome::Admitted,
            Some(nouvel::GENERATE),
            T0 - Duration::from_secs(1),
        );
        usage.count(Outcome::Admitted, None, T0);
        usage.count(Outcome::RateLimited, None, T0 + Duration::from_secs(2));
        let report = usage.take(&key, nouvel::PERMISSIONS).unwrap();
        assert_eq!(report.usage.admitted, 2);
        assert_eq!(report.usage.rejected.rate_limited, 1);
        assert_eq!(report.last_used_at, Some(T0));
        assert_eq!(
            report.usage.last_request_at,
            Some(T0 + Duration::from_secs(2))
        );
        let hours: Vec<_> = report
            .hours
            .iter()
            .map(|h| (h.start, h.admitted, h.rejected.rate_limited))
            .collect();
        assert_eq!(hours, [(T0 - Duration::from_secs(3_600), 1, 0), (T0, 1, 1)]);
        let used: Vec<_> = report.permissions_used.iter().collect();
        assert_eq!(
            used,
            [nouvel::GENERATE],
            "the admitted requests' permissions"
        );
        assert!(usage.take(&key, nouvel::PERMISSIONS).is_none());
        // The next hour takes the cell of the hour before T0's, now flushed.
        usage.count(Outcome::Admitted, None, T0 + Duration::from_secs(3_600));
        let report = usage.take(&key, nouvel::PERMISSIONS).unwrap();
        assert_eq!(report.hours.len(), 1);
        assert_eq!(report.hours[0].start, T0 + Duration::from_secs(3_600));
    }
}
