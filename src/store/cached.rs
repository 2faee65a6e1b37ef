//! A cache in front of any key store, for stores across a network.

use std::{fmt, sync::Arc, time::Duration};

use quick_cache::sync::Cache;
use time::OffsetDateTime;

use super::{Invalidation, KeyRecord, KeyStore};
use crate::{
    clock::SharedClock, error::within, Account, AccountId, ApiKey, BackendError, Clock, KeyDigest,
    KeyId, KeyInfo, KeyManager, KeySpec, ManageError, NewKey, Plan, SystemClock, UsageReport,
};

/// Caches lookups of any [`KeyStore`] (feature `cache`, crate `quick_cache`).
///
/// * Known and unknown keys are both cached (unknown ones, so a flood of made-up keys costs
///   the database nothing), bounded in number (default 100 000; S3-FIFO eviction keeps
///   the keys in use). A hit is one shard read, about as fast as a `MemoryKeyStore`
///   lookup (moka, tried first, spent ~110 ns per hit recording reads).
/// * An entry is fresh for `fresh_for` (default 30 s): the backstop when change
///   notifications are lost. Within it a lookup is one in-memory read.
/// * Changes made through this cache's [`KeyManager`] side evict the entries they affect
///   at once; [`invalidate`](Self::invalidate) applies changes announced by other instances
///   (see [`PostgresKeyStore::listen`](crate::store::PostgresKeyStore::listen)).
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
    cache: Arc<Cache<KeyDigest, Arc<Entry>>>,
    fresh_for: Duration,
    stale_for: Duration,
    timeout: Duration,
    clock: SharedClock,
}

struct Entry {
    record: Option<KeyRecord>,
    fetched_at: OffsetDateTime,
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
            fresh_for: Duration::from_secs(30),
            stale_for: Duration::from_secs(300),
            timeout: Duration::from_millis(500),
            clock: Arc::new(SystemClock),
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

    /// Reads entry ages from `clock`.
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
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
        match change {
            Invalidation::All => self.cache.clear(),
            _ => self
                .cache
                .retain(|_, entry| !entry.record.as_ref().is_some_and(concerns)),
        }
    }
}

impl<K: KeyStore> KeyStore for CachedKeyStore<K> {
    fn digest(&self, key: &ApiKey) -> KeyDigest {
        self.inner.digest(key)
    }

    async fn lookup(&self, digest: &KeyDigest) -> Result<Option<KeyRecord>, BackendError> {
        let now = self.clock.now();
        let cached = self.cache.get(digest);
        if let Some(entry) = &cached {
            if now - entry.fetched_at < self.fresh_for {
                return Ok(entry.record.clone());
            }
        }
        match within(self.timeout, self.inner.lookup(digest)).await {
            Ok(record) => {
                let entry = Entry {
                    record: record.clone(),
                    fetched_at: now,
                };
                self.cache.insert(*digest, Arc::new(entry));
                Ok(record)
            }
            Err(error) => match cached.as_deref() {
                Some(Entry {
                    record: Some(record),
                    fetched_at,
                }) if now - *fetched_at < self.stale_for => {
                    tracing::warn!(%error, key_id = %record.id, "nouvel-auth: key store failed; serving a cached key");
                    Ok(Some(record.clone()))
                }
                _ => Err(error),
            },
        }
    }

    async fn record_usage(&self, reports: &[UsageReport]) -> Result<(), BackendError> {
        self.inner.record_usage(reports).await
    }
}

/// Management goes to the wrapped store; what it changes leaves this cache at once.
impl<K: KeyStore + KeyManager> KeyManager for CachedKeyStore<K> {
    async fn create_account(&self, name: &str, plan: Plan) -> Result<Account, ManageError> {
        self.inner.create_account(name, plan).await
    }

    async fn account(&self, id: &AccountId) -> Result<Account, ManageError> {
        self.inner.account(id).await
    }

    async fn set_plan(&self, id: &AccountId, plan: Plan) -> Result<Account, ManageError> {
        let account = self.inner.set_plan(id, plan).await?;
        self.invalidate(&Invalidation::Account(id.clone()));
        Ok(account)
    }

    async fn create_key(&self, account: &AccountId, spec: KeySpec) -> Result<NewKey, ManageError> {
        self.inner.create_key(account, spec).await
    }

    async fn keys(&self, account: &AccountId) -> Result<Vec<KeyInfo>, ManageError> {
        self.inner.keys(account).await
    }

    async fn key(&self, account: &AccountId, key: &KeyId) -> Result<KeyInfo, ManageError> {
        self.inner.key(account, key).await
    }

    async fn delete_key(&self, account: &AccountId, key: &KeyId) -> Result<(), ManageError> {
        self.inner.delete_key(account, key).await?;
        self.invalidate(&Invalidation::Key(key.clone()));
        Ok(())
    }

    async fn rotate_key(
        &self,
        account: &AccountId,
        key: &KeyId,
        grace: Duration,
    ) -> Result<NewKey, ManageError> {
        let created = self.inner.rotate_key(account, key, grace).await?;
        self.invalidate(&Invalidation::Key(key.clone()));
        Ok(created)
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
