//! A cache in front of any key store, for stores across a network.

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use quick_cache::sync::Cache;
use time::OffsetDateTime;

use super::Invalidation;
use crate::{
    error::within,
    quiet::{warn_quietly, Quiet},
    Account, AccountId, ApiKey, BackendError, KeyDigest, KeyId, Plan, UsageReport,
};
use crate::{KeyRecord, KeyStorage, KeyStore, StoredKey};

/// Caches lookups of any [`KeyStore`] (feature `cache`, crate `quick_cache`).
///
/// * Known and unknown keys are both cached (unknown ones, so a flood of made-up keys costs
///   the database nothing), bounded in number (default 100 000; S3-FIFO eviction keeps
///   the keys in use). A hit is one shard read, about as fast as a `MemoryKeyStore`
///   lookup (moka, tried first, spent ~110 ns per hit recording reads).
/// * An entry is fresh for `fresh_for` (default 30 s): the backstop when change
///   notifications are lost. Within it a lookup is one in-memory read. Ages are judged
///   by the layer's clock (the `now` of [`KeyStore::lookup`]), so a hit reads no clock.
/// * Changes made through this cache's [`KeyStorage`] side evict the entries they affect
///   at once; [`invalidate`](Self::invalidate) applies changes announced by other instances
///   (see [`PostgresKeyStore::listen`](crate::store::PostgresKeyStore::listen)). A lookup
///   under way when a change is announced answers what it read but does not cache it.
/// * When the store fails or is slower than `timeout` (default 500 ms), a known key whose entry is at most `stale_for` old (default
///   5 min) is still served; past that, and for keys not cached as known, the lookup
///   fails, and the layer answers 503, never 401.
///
/// ```
/// use std::time::Duration;
/// use nouvel_auth::{store::CachedKeyStore, MemoryKeyStore, NouvelAuthLayer};
///
/// let store = CachedKeyStore::new(MemoryKeyStore::new()).fresh_for(Duration::from_secs(10));
/// let layer = NouvelAuthLayer::new(store);
/// ```
#[derive(Clone)]
pub struct CachedKeyStore<K> {
    inner: K,
    cache: Arc<Cache<KeyDigest, Entry>>,
    /// How many invalidations there have been, so a lookup under way when one arrives
    /// does not cache what it read before it.
    invalidations: Arc<AtomicU64>,
    fresh_for: Duration,
    stale_for: Duration,
    timeout: Duration,
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
}

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
        Self {
            inner,
            cache: Arc::new(Cache::new(capacity)),
            invalidations: Arc::default(),
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
    pub fn inner(&self) -> &K {
        &self.inner
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
            Invalidation::All => self.cache.clear(),
            _ => self
                .cache
                .retain(|_, entry| !entry.record.as_deref().is_some_and(concerns)),
        }
    }

    /// A miss, or a stale entry: asks the inner store, and caches its answer. When the
    /// store fails, serves a known key's `cached` entry until it is too stale.
    async fn refresh(
        &self,
        digest: &KeyDigest,
        now: OffsetDateTime,
        cached: Option<Entry>,
    ) -> Result<Option<Arc<KeyRecord>>, BackendError> {
        let invalidations = self.invalidations.load(Ordering::SeqCst);
        match within(self.timeout, self.inner.lookup(digest, now)).await {
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
                Ok(record)
            }
            Err(error) => match cached {
                Some(Entry {
                    record: Some(record),
                    stale_until,
                    ..
                }) if now < stale_until => {
                    static STALE: Quiet = Quiet::new();
                    warn_quietly!(STALE, %error, key_id = %record.id, "nouvel-auth: key store failed; serving a cached key");
                    Ok(Some(record))
                }
                _ => Err(error),
            },
        }
    }
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
            Some(entry) if entry.is_fresh(now) => return Ok(entry.record),
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
            Some(entry) if entry.is_fresh(now) => std::task::Poll::Ready(entry.record),
            _ => std::task::Poll::Pending,
        }
    }

    async fn record_usage(&self, reports: &[UsageReport]) -> Result<(), BackendError> {
        self.inner.record_usage(reports).await
    }
}

/// Writes go to the wrapped storage; what they change leaves this cache at once.
impl<K: KeyStorage> KeyStorage for CachedKeyStore<K> {
    async fn insert_account(&self, account: &Account) -> Result<(), BackendError> {
        self.inner.insert_account(account).await
    }

    async fn account(&self, id: &AccountId) -> Result<Option<Account>, BackendError> {
        self.inner.account(id).await
    }

    async fn set_plan(&self, id: &AccountId, plan: Plan) -> Result<Option<Account>, BackendError> {
        let account = self.inner.set_plan(id, plan).await?;
        self.invalidate(&Invalidation::Account(id.clone()));
        Ok(account)
    }

    async fn insert_key(&self, key: &StoredKey) -> Result<(), BackendError> {
        self.inner.insert_key(key).await
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

    async fn delete_key(&self, account: &AccountId, key: &KeyId) -> Result<bool, BackendError> {
        let deleted = self.inner.delete_key(account, key).await?;
        self.invalidate(&Invalidation::Key(key.clone()));
        Ok(deleted)
    }

    async fn set_disabled(
        &self,
        account: &AccountId,
        key: &KeyId,
        disabled: bool,
    ) -> Result<Option<StoredKey>, BackendError> {
        let changed = self.inner.set_disabled(account, key, disabled).await?;
        self.invalidate(&Invalidation::Key(key.clone()));
        Ok(changed)
    }

    async fn replace_key(
        &self,
        old: &KeyId,
        old_expires_at: OffsetDateTime,
        replacement: &StoredKey,
    ) -> Result<bool, BackendError> {
        let replaced = self
            .inner
            .replace_key(old, old_expires_at, replacement)
            .await?;
        self.invalidate(&Invalidation::Key(old.clone()));
        Ok(replaced)
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
