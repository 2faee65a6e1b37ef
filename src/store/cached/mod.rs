//! A cache in front of any key store, for stores across a network.

mod live;

use std::{
    fmt,
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use quick_cache::sync::Cache;
use time::OffsetDateTime;
use tokio::sync::OnceCell;

use super::{EventOutbox, Invalidation};
use crate::{
    clock::micros,
    error::within,
    events::{Event, PendingEvent, Settlement},
    manage::{AuditEntry, Exposure, Granularity, UsageBucket},
    metrics::count,
    quiet::{warn_quietly, Quiet},
    Account, AccountId, ApiKey, BackendError, ConcurrentMap, KeyDigest, KeyId, Permission, Plan,
    UsageReport,
};
use crate::{KeyRecord, KeyStorage, KeyStore, StoredKey};
use live::{fingerprint, LiveKeys, Verdict};

/// Caches lookups of any [`KeyStore`] (feature `cache`, crate `quick_cache`).
///
/// * Known and unknown keys are both cached, bounded in number (default 100 000; S3-FIFO
///   eviction keeps the keys in use). A hit is one shard read, about as fast as a
///   `MemoryKeyStore` lookup (moka, tried first, spent ~110 ns per hit recording reads).
/// * An entry is fresh for `fresh_for` (default 30 s): the backstop when change
///   notifications are lost. Within it a lookup is one in-memory read. Ages are judged
///   by the layer's clock (the `now` of [`KeyStore::lookup`]), so a hit reads no clock.
/// * Concurrent lookups of one digest the cache lacks make one store query between them.
/// * Changes made through this cache's [`KeyStorage`] side evict the entries they affect
///   at once; [`invalidate`](Self::invalidate) applies changes announced by other instances
///   (see `PostgresKeyStore::listen`). A lookup
///   under way when a change is announced answers what it read but does not cache it.
/// * With [`refuse_made_up_keys`](Self::refuse_made_up_keys), it knows every live key
///   (8 bytes of each digest) and answers "unknown" for a digest none has without asking
///   the store: a flood of distinct made-up keys costs at most one store query per 100, or
///   one a second when fewer come (so a key made on another instance a moment ago, whose
///   announcement is still on its way, is found), and caches nothing, so real keys stay
///   cached.
/// * When the store fails or is slower than `timeout` (default 500 ms), a known key whose
///   entry is at most `stale_for` old (default 5 min) is still served; past that, and for
///   keys not cached as known, the lookup fails, and the layer answers 503, never 401.
///   After a failure, for a second, such keys are served without asking the store at all,
///   and while one lookup of a key waits for the store, the others of that key are served
///   at once: a hanging store costs one request per key and second the timeout, not every
///   request.
///
/// ```
/// use std::time::Duration;
/// use nouvel_auth::{store::CachedKeyStore, MemoryKeyStore, NouvelAuthLayer};
///
/// let store = CachedKeyStore::new(MemoryKeyStore::new()).fresh_for(Duration::from_secs(10));
/// let layer = NouvelAuthLayer::new(store);
/// ```
pub struct CachedKeyStore<K> {
    inner: Arc<K>,
    cache: Arc<Cache<KeyDigest, Entry>>,
    /// How many invalidations there have been, so a lookup under way when one arrives
    /// does not cache what it read before it.
    invalidations: Arc<AtomicU64>,
    /// The lookups waiting on the store, by digest: others of the same digest join them.
    in_flight: Arc<ConcurrentMap<KeyDigest, Arc<OnceCell<Answer>>>>,
    live: Arc<LiveKeys>,
    /// Until when (the layer's clock, unix microseconds) the store is taken as failing.
    failing_until: Arc<AtomicI64>,
    fresh_for: Duration,
    stale_for: Duration,
    timeout: Duration,
}

impl<K> Clone for CachedKeyStore<K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            cache: self.cache.clone(),
            invalidations: self.invalidations.clone(),
            in_flight: self.in_flight.clone(),
            live: self.live.clone(),
            failing_until: self.failing_until.clone(),
            fresh_for: self.fresh_for,
            stale_for: self.stale_for,
            timeout: self.timeout,
        }
    }
}

/// Held by value: a hit clones the shared record it returns, and nothing else.
#[derive(Clone)]
struct Entry {
    record: Option<Arc<KeyRecord>>,
    /// Served without asking the inner store until then,
    fresh_until: OffsetDateTime,
    /// and while the inner store fails, until then.
    stale_until: OffsetDateTime,
}

impl Entry {
    fn is_fresh(&self, now: OffsetDateTime) -> bool {
        now < self.fresh_until
    }

    /// The known key it holds, if it may still be served while the store fails.
    fn servable(&self, now: OffsetDateTime) -> Option<Arc<KeyRecord>> {
        self.record.clone().filter(|_| now < self.stale_until)
    }
}

/// What one store lookup answered, for every lookup that waited on it.
#[derive(Clone)]
enum Answer {
    Found(Option<Arc<KeyRecord>>),
    TimedOut(Duration),
    Failed(Arc<str>),
}

impl Answer {
    fn new(result: Result<Option<Arc<KeyRecord>>, BackendError>) -> Self {
        match result {
            Ok(record) => Self::Found(record),
            Err(BackendError::Timeout(after)) => Self::TimedOut(after),
            Err(error) => Self::Failed(error.to_string().into()),
        }
    }

    fn result(self) -> Result<Option<Arc<KeyRecord>>, BackendError> {
        match self {
            Self::Found(record) => Ok(record),
            Self::TimedOut(after) => Err(BackendError::Timeout(after)),
            Self::Failed(error) => Err(BackendError::failed(error.to_string())),
        }
    }
}

/// How long a failed store is left alone by lookups that can be served stale.
const FAILING_FOR: Duration = Duration::from_secs(1);

/// `now + after`, saturating: a hit then compares two times and computes none.
fn later(now: OffsetDateTime, after: Duration) -> OffsetDateTime {
    time::Duration::try_from(after)
        .ok()
        .and_then(|after| now.checked_add(after))
        .unwrap_or(time::PrimitiveDateTime::MAX.assume_utc())
}

impl<K: KeyStore> CachedKeyStore<K> {
    /// A cache of 100 000 entries, fresh for 30 s, served stale for up to 5 min in an outage.
    pub fn new(inner: K) -> Self {
        Self::with_capacity(inner, 100_000)
    }

    /// A cache of at most `capacity` entries.
    pub fn with_capacity(inner: K, capacity: usize) -> Self {
        crate::metrics::cache_started();
        Self {
            inner: Arc::new(inner),
            cache: Arc::new(Cache::new(capacity)),
            invalidations: Arc::default(),
            in_flight: Arc::default(),
            live: Arc::default(),
            failing_until: Arc::new(AtomicI64::new(i64::MIN)),
            fresh_for: Duration::from_secs(30),
            stale_for: Duration::from_secs(300),
            timeout: Duration::from_millis(500),
        }
    }

    /// How long an entry is used without asking the store (default 30 s).
    #[must_use]
    pub fn fresh_for(mut self, fresh_for: Duration) -> Self {
        self.fresh_for = fresh_for;
        self
    }

    /// How long a known key is still served while the store fails (default 5 min).
    #[must_use]
    pub fn stale_for(mut self, stale_for: Duration) -> Self {
        self.stale_for = stale_for;
        self
    }

    /// How long the wrapped store may take before a cached key is served stale (default
    /// 500 ms; keep it under the layer's lookup timeout, 1 s by default).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The wrapped store.
    #[must_use]
    pub fn inner(&self) -> &K {
        &self.inner
    }

    /// Loads every live key's digest from the store ([`KeyStore::live_digests`], one
    /// query) and from then on answers "unknown" for digests no live key has without
    /// asking the store. The number of keys loaded; `None` if the store cannot list them
    /// (nothing changes then).
    ///
    /// Only for a cache that hears every key made on every instance: wire the store's
    /// announcements to [`invalidate`](Self::invalidate) first (for PostgreSQL,
    /// `PostgresKeyStore::listen`), so that no key is made between
    /// the load and the first announcement heard. When announcements are missed
    /// ([`Invalidation::All`]) every digest is asked about again until the keys are
    /// loaded anew, which happens by itself on a Tokio runtime. Memory: about 15 bytes
    /// per key made since the start (deleted keys stay); a made-up key refused costs
    /// nothing, and the one in 100 that asks is cached as unknown, within the capacity.
    pub async fn refuse_made_up_keys(&self) -> Result<Option<usize>, BackendError> {
        load_live_keys(&self.inner, &self.live).await
    }

    /// How many keys are known live, when made-up keys are refused; `None` until then, and
    /// while announcements are being caught up with.
    #[must_use]
    pub fn live_keys(&self) -> Option<usize> {
        self.live.is_complete().then(|| self.live.len())
    }

    /// Evicts what `change` makes stale. Cheap to call from a notification listener for a
    /// single key; a key or account change scans the cache once.
    pub fn invalidate(&self, change: &Invalidation) {
        let concerns = |record: &KeyRecord| match change {
            Invalidation::Key(id) => record.id == *id,
            Invalidation::Account(id) => record.account_id == *id,
            _ => true,
        };
        self.invalidations.fetch_add(1, Ordering::SeqCst);
        match change {
            Invalidation::All => {
                self.cache.clear();
                self.reload_live_keys();
            }
            Invalidation::Created(digest) => {
                self.live.add(fingerprint(digest));
                self.cache.remove(digest);
            }
            _ => self
                .cache
                .retain(|_, entry| !entry.record.as_deref().is_some_and(concerns)),
        }
    }

    /// Announcements were missed: asks about every digest until the keys are loaded again,
    /// in the background.
    fn reload_live_keys(&self) {
        if !self.live.is_complete() {
            return;
        }
        self.live.incomplete();
        let (inner, live) = (self.inner.clone(), self.live.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                while let Err(error) = load_live_keys(&inner, &live).await {
                    static RELOAD: Quiet = Quiet::new();
                    warn_quietly!(RELOAD, %error, "nouvel-auth: cannot list live keys; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            });
        }
    }

    fn store_failing(&self, now: OffsetDateTime) -> bool {
        micros(now) < self.failing_until.load(Ordering::Relaxed)
    }

    /// A miss, or a stale entry: asks the inner store (one query for every concurrent
    /// lookup of the digest), and caches its answer. When the store fails, serves a known
    /// key's `cached` entry until it is too stale.
    async fn refresh(
        &self,
        digest: &KeyDigest,
        now: OffsetDateTime,
        cached: Option<Entry>,
    ) -> Result<Option<Arc<KeyRecord>>, BackendError> {
        let servable = cached.as_ref().and_then(|entry| entry.servable(now));
        if let Some(record) = &servable {
            if self.store_failing(now) || self.in_flight.contains_key(digest) {
                count!(KEY_LOOKUPS, "result" => "stale");
                return Ok(Some(record.clone()));
            }
        }
        // Join a lookup of the digest under way; else, unless it is made up, start one. (In
        // the entry, so that of racing lookups of a new key one asks and the rest join it.)
        let cell = match self.in_flight.entry(*digest) {
            dashmap::Entry::Occupied(waiting) => waiting.get().clone(),
            dashmap::Entry::Vacant(vacant) => {
                if cached.is_none() && self.live.verdict(digest, now) == Verdict::MadeUp {
                    count!(MADE_UP_KEYS_REFUSED);
                    return Ok(None);
                }
                vacant.insert(Arc::default()).clone()
            }
        };
        let mut asked = false;
        let answer = cell
            .get_or_init(|| {
                asked = true;
                self.ask(digest, now)
            })
            .await
            .clone();
        if asked {
            self.in_flight
                .remove_if(digest, |_, waiting| Arc::ptr_eq(waiting, &cell));
        }
        match (answer.result(), servable) {
            (Ok(record), _) => {
                count!(KEY_LOOKUPS, "result" => "miss");
                Ok(record)
            }
            (Err(error), Some(record)) => {
                count!(KEY_LOOKUPS, "result" => "stale");
                static STALE: Quiet = Quiet::new();
                warn_quietly!(STALE, %error, key_id = %record.id, "nouvel-auth: key store failed; serving cached keys");
                Ok(Some(record))
            }
            (Err(error), None) => {
                count!(KEY_LOOKUPS, "result" => "error");
                Err(error)
            }
        }
    }

    /// The store's answer for `digest`, cached; on failure, the store is left alone for a
    /// second by lookups that can be served stale.
    async fn ask(&self, digest: &KeyDigest, now: OffsetDateTime) -> Answer {
        let invalidations = self.invalidations.load(Ordering::SeqCst);
        let result = within(self.timeout, self.inner.lookup(digest, now)).await;
        match &result {
            Ok(record) => {
                let entry = Entry {
                    record: record.clone(),
                    fresh_until: later(now, self.fresh_for),
                    stale_until: later(now, self.stale_for),
                };
                self.cache.insert(*digest, entry);
                // An invalidation since the read may concern it: forget it again. (One
                // after this check evicts it itself, since it counts before it evicts.)
                if self.invalidations.load(Ordering::SeqCst) != invalidations {
                    self.cache.remove(digest);
                }
            }
            Err(_) => {
                self.failing_until
                    .fetch_max(micros(later(now, FAILING_FOR)), Ordering::Relaxed);
            }
        }
        Answer::new(result)
    }
}

/// Loads the store's live keys into `live`: the number loaded, `None` if it cannot list
/// them.
async fn load_live_keys<K: KeyStore>(
    inner: &K,
    live: &LiveKeys,
) -> Result<Option<usize>, BackendError> {
    let Some(digests) = inner.live_digests().await? else {
        return Ok(None);
    };
    let loaded = digests.len();
    live.load(digests.iter().map(fingerprint));
    Ok(Some(loaded))
}

impl<K: KeyStore> KeyStore for CachedKeyStore<K> {
    fn digest(&self, key: &ApiKey) -> KeyDigest {
        self.inner.digest(key)
    }

    async fn lookup(
        &self,
        digest: &KeyDigest,
        now: OffsetDateTime,
    ) -> Result<Option<Arc<KeyRecord>>, BackendError> {
        let cached = match self.cache.get(digest) {
            Some(entry) if entry.is_fresh(now) => {
                count!(KEY_LOOKUPS, "result" => "hit");
                return Ok(entry.record);
            }
            cached => cached,
        };
        // Boxed: a miss waits on the network anyway, and a hit's future stays small.
        Box::pin(self.refresh(digest, now, cached)).await
    }

    /// A fresh entry; anything else waits for `lookup`.
    fn lookup_now(
        &self,
        digest: &KeyDigest,
        now: OffsetDateTime,
    ) -> std::task::Poll<Option<Arc<KeyRecord>>> {
        match self.cache.get(digest) {
            Some(entry) if entry.is_fresh(now) => {
                count!(KEY_LOOKUPS, "result" => "hit");
                std::task::Poll::Ready(entry.record)
            }
            _ => std::task::Poll::Pending,
        }
    }

    async fn record_usage(&self, reports: &[UsageReport]) -> Result<(), BackendError> {
        self.inner.record_usage(reports).await
    }

    async fn live_digests(&self) -> Result<Option<Vec<KeyDigest>>, BackendError> {
        self.inner.live_digests().await
    }
}

/// The outbox is the wrapped storage's.
impl<K: EventOutbox> EventOutbox for CachedKeyStore<K> {
    async fn add_event(&self, event: &Event, once: &str) -> Result<bool, BackendError> {
        self.inner.add_event(event, once).await
    }

    async fn claim_events(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<PendingEvent>, BackendError> {
        self.inner.claim_events(now, lease_until, limit).await
    }

    async fn settle_event(
        &self,
        seq: i64,
        settlement: Settlement,
        now: OffsetDateTime,
    ) -> Result<(), BackendError> {
        self.inner.settle_event(seq, settlement, now).await
    }

    async fn prune_events(&self, before: OffsetDateTime) -> Result<u64, BackendError> {
        self.inner.prune_events(before).await
    }

    async fn accounts_used_since(
        &self,
        since: OffsetDateTime,
    ) -> Result<Vec<AccountId>, BackendError> {
        self.inner.accounts_used_since(since).await
    }

    async fn keys_expiring(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<StoredKey>, BackendError> {
        self.inner.keys_expiring(from, to).await
    }
}

/// Writes go to the wrapped storage; what they change leaves this cache at once.
impl<K: KeyStorage> KeyStorage for CachedKeyStore<K> {
    async fn insert_account(
        &self,
        account: &Account,
        audit: &AuditEntry,
    ) -> Result<(), BackendError> {
        self.inner.insert_account(account, audit).await
    }

    async fn account(&self, id: &AccountId) -> Result<Option<Account>, BackendError> {
        self.inner.account(id).await
    }

    async fn accounts_named(&self, name: &str) -> Result<Vec<Account>, BackendError> {
        self.inner.accounts_named(name).await
    }

    async fn permissions_last_used(
        &self,
        account: &AccountId,
    ) -> Result<Vec<(KeyId, Permission, OffsetDateTime)>, BackendError> {
        self.inner.permissions_last_used(account).await
    }

    async fn account_usage(
        &self,
        account: &AccountId,
        granularity: Granularity,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<(KeyId, UsageBucket)>, BackendError> {
        self.inner
            .account_usage(account, granularity, from, to)
            .await
    }

    async fn usage(
        &self,
        key: &KeyId,
        granularity: Granularity,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<UsageBucket>, BackendError> {
        self.inner.usage(key, granularity, from, to).await
    }

    async fn set_plan(
        &self,
        id: &AccountId,
        plan: Plan,
        audit: &AuditEntry,
    ) -> Result<Option<Account>, BackendError> {
        let account = self.inner.set_plan(id, plan, audit).await?;
        self.invalidate(&Invalidation::Account(id.clone()));
        Ok(account)
    }

    async fn insert_key(&self, key: &StoredKey, audit: &AuditEntry) -> Result<(), BackendError> {
        self.inner.insert_key(key, audit).await?;
        self.live.add(fingerprint(&key.digest));
        Ok(())
    }

    async fn keys(&self, account: &AccountId) -> Result<Vec<StoredKey>, BackendError> {
        self.inner.keys(account).await
    }

    async fn key(
        &self,
        account: &AccountId,
        key: &KeyId,
    ) -> Result<Option<StoredKey>, BackendError> {
        self.inner.key(account, key).await
    }

    async fn delete_key(
        &self,
        account: &AccountId,
        key: &KeyId,
        audit: &AuditEntry,
    ) -> Result<bool, BackendError> {
        let deleted = self.inner.delete_key(account, key, audit).await?;
        self.invalidate(&Invalidation::Key(key.clone()));
        Ok(deleted)
    }

    async fn set_disabled(
        &self,
        account: &AccountId,
        key: &KeyId,
        disabled: bool,
        audit: &AuditEntry,
    ) -> Result<Option<StoredKey>, BackendError> {
        let changed = self
            .inner
            .set_disabled(account, key, disabled, audit)
            .await?;
        self.invalidate(&Invalidation::Key(key.clone()));
        Ok(changed)
    }

    async fn expose_key(
        &self,
        account: &AccountId,
        key: &KeyId,
        exposure: &Exposure,
        disable: bool,
        audit: &AuditEntry,
    ) -> Result<Option<StoredKey>, BackendError> {
        let changed = self
            .inner
            .expose_key(account, key, exposure, disable, audit)
            .await?;
        self.invalidate(&Invalidation::Key(key.clone()));
        Ok(changed)
    }

    async fn replace_key(
        &self,
        old: &KeyId,
        old_expires_at: OffsetDateTime,
        replacement: &StoredKey,
        audit: &AuditEntry,
    ) -> Result<bool, BackendError> {
        let replaced = self
            .inner
            .replace_key(old, old_expires_at, replacement, audit)
            .await?;
        self.live.add(fingerprint(&replacement.digest));
        self.invalidate(&Invalidation::Key(old.clone()));
        Ok(replaced)
    }

    async fn audit(
        &self,
        account: &AccountId,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, BackendError> {
        self.inner.audit(account, before, limit).await
    }

    async fn prune_audit(&self, before: OffsetDateTime) -> Result<u64, BackendError> {
        self.inner.prune_audit(before).await
    }
}

impl<K: fmt::Debug> fmt::Debug for CachedKeyStore<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedKeyStore")
            .field("inner", &self.inner)
            .field("entries", &self.cache.len())
            .field("fresh_for", &self.fresh_for)
            .field("stale_for", &self.stale_for)
            .finish_non_exhaustive()
    }
}
