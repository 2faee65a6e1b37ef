use std::{
    fmt,
    sync::{Arc, Mutex, MutexGuard, RwLock},
};

use time::OffsetDateTime;

use super::{KeyRecord, KeyStorage, KeyStore, StoredKey};
use crate::{
    Account, AccountId, ApiKey, BackendError, ConcurrentMap, KeyDigest, KeyHasher, KeyId, Plan,
    UsageReport,
};

/// The embedded key store: accounts and keys in memory (DashMap), for one process.
///
/// Clones share the same keys. A lookup is one map read and a reference count; a deleted
/// key is gone from the next lookup on. Usage reports are applied in place.
///
/// ```
/// use nouvel_auth::{nouvel, KeyManager, KeySpec, KeyStore, MemoryKeyStore};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = MemoryKeyStore::new();
/// let keys = KeyManager::new(store.clone());
/// let account = keys.create_account("Acme", nouvel::BUSINESS).await.unwrap();
/// let created = keys.create_key(&account.id, KeySpec::new("CI", [nouvel::PUBLISH])).await.unwrap();
///
/// let now = time::OffsetDateTime::now_utc();
/// let record = store.lookup(&store.digest(&created.key), now).await.unwrap().unwrap();
/// assert_eq!(record.id, created.info.id);
///
/// keys.delete_key(&account.id, &record.id).await.unwrap();
/// assert!(store.lookup(&store.digest(&created.key), now).await.unwrap().is_none());
/// # });
/// ```
#[derive(Clone)]
pub struct MemoryKeyStore {
    inner: Arc<Inner>,
}

struct Inner {
    hasher: KeyHasher,
    accounts: ConcurrentMap<AccountId, Account>,
    by_digest: ConcurrentMap<KeyDigest, Arc<KeyEntry>>,
    by_id: ConcurrentMap<KeyId, Arc<KeyEntry>>,
}

/// A stored key, and the record lookups answer, made from it whenever it changes.
struct KeyEntry {
    record: RwLock<Arc<KeyRecord>>,
    stored: Mutex<StoredKey>,
}

/// Locks `mutex`, going on after a panic elsewhere: every update here leaves valid state.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl KeyEntry {
    fn new(stored: StoredKey, plan: Plan) -> Self {
        Self {
            record: RwLock::new(Arc::new(stored.record(plan))),
            stored: Mutex::new(stored),
        }
    }

    fn record(&self) -> Arc<KeyRecord> {
        let record = self
            .record
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(&record)
    }

    /// Changes the stored key, and the record with it.
    fn update(&self, plan: Option<Plan>, change: impl FnOnce(&mut StoredKey)) {
        let mut stored = lock(&self.stored);
        change(&mut stored);
        let mut record = self
            .record
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let plan = plan.unwrap_or_else(|| record.plan.clone());
        *record = Arc::new(stored.record(plan));
    }
}

impl Default for MemoryKeyStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryKeyStore {
    /// An empty store with plain SHA-256 digests.
    pub fn new() -> Self {
        Self::with_hasher(KeyHasher::default())
    }

    /// An empty store with `hasher` for digests.
    pub fn with_hasher(hasher: KeyHasher) -> Self {
        Self {
            inner: Arc::new(Inner {
                hasher,
                accounts: ConcurrentMap::default(),
                by_digest: ConcurrentMap::default(),
                by_id: ConcurrentMap::default(),
            }),
        }
    }

    fn find(&self, digest: &KeyDigest) -> Option<Arc<KeyRecord>> {
        self.inner.by_digest.get(digest).map(|entry| entry.record())
    }

    /// The live key `key` of `account`.
    fn entry(&self, account: &AccountId, key: &KeyId) -> Option<Arc<KeyEntry>> {
        let entry = self.inner.by_id.get(key)?.clone();
        let belongs = lock(&entry.stored).account_id == *account;
        belongs.then_some(entry)
    }

    fn insert(&self, key: &StoredKey) -> Result<(), BackendError> {
        // The account stays read-locked until the key is in: a plan change waits for it,
        // then updates it with the others.
        let account = self.inner.accounts.get(&key.account_id).ok_or_else(|| {
            BackendError::failed(format!("no account {} for key {}", key.account_id, key.id))
        })?;
        let entry = Arc::new(KeyEntry::new(key.clone(), account.plan.clone()));
        self.inner.by_id.insert(key.id.clone(), entry.clone());
        self.inner.by_digest.insert(key.digest, entry);
        drop(account);
        Ok(())
    }
}

impl KeyStore for MemoryKeyStore {
    fn digest(&self, key: &ApiKey) -> KeyDigest {
        self.inner.hasher.digest(key)
    }

    async fn lookup(
        &self,
        digest: &KeyDigest,
        _now: OffsetDateTime,
    ) -> Result<Option<Arc<KeyRecord>>, BackendError> {
        Ok(self.find(digest))
    }

    fn lookup_now(
        &self,
        digest: &KeyDigest,
        _now: OffsetDateTime,
    ) -> std::task::Poll<Option<Arc<KeyRecord>>> {
        std::task::Poll::Ready(self.find(digest))
    }

    async fn record_usage(&self, reports: &[UsageReport]) -> Result<(), BackendError> {
        for report in reports {
            // A key deleted since has nobody left to show its usage to.
            if let Some(entry) = self.inner.by_id.get(&report.key_id) {
                let mut stored = lock(&entry.stored);
                stored.usage.merge(&report.usage);
                stored.last_used_at = stored.last_used_at.max(report.last_used_at);
            }
        }
        Ok(())
    }
}

impl KeyStorage for MemoryKeyStore {
    async fn insert_account(&self, account: &Account) -> Result<(), BackendError> {
        self.inner
            .accounts
            .insert(account.id.clone(), account.clone());
        Ok(())
    }

    async fn account(&self, id: &AccountId) -> Result<Option<Account>, BackendError> {
        Ok(self.inner.accounts.get(id).map(|a| a.clone()))
    }

    async fn set_plan(&self, id: &AccountId, plan: Plan) -> Result<Option<Account>, BackendError> {
        let Some(mut account) = self.inner.accounts.get_mut(id) else {
            return Ok(None);
        };
        account.plan = plan.clone();
        // Under the account's entry lock: a key inserted meanwhile waits, then reads the new plan.
        for entry in self.inner.by_id.iter() {
            if lock(&entry.stored).account_id == *id {
                entry.update(Some(plan.clone()), |_| {});
            }
        }
        Ok(Some(account.clone()))
    }

    async fn insert_key(&self, key: &StoredKey) -> Result<(), BackendError> {
        self.insert(key)
    }

    async fn keys(&self, account: &AccountId) -> Result<Vec<StoredKey>, BackendError> {
        Ok(self
            .inner
            .by_id
            .iter()
            .map(|entry| lock(&entry.stored).clone())
            .filter(|key| key.account_id == *account)
            .collect())
    }

    async fn key(
        &self,
        account: &AccountId,
        key: &KeyId,
    ) -> Result<Option<StoredKey>, BackendError> {
        Ok(self
            .entry(account, key)
            .map(|entry| lock(&entry.stored).clone()))
    }

    async fn delete_key(&self, account: &AccountId, key: &KeyId) -> Result<bool, BackendError> {
        let Some(entry) = self.entry(account, key) else {
            return Ok(false);
        };
        let digest = lock(&entry.stored).digest;
        // Digest first: from here on the key answers 401.
        self.inner.by_digest.remove(&digest);
        Ok(self.inner.by_id.remove(key).is_some())
    }

    async fn replace_key(
        &self,
        old: &KeyId,
        old_expires_at: OffsetDateTime,
        replacement: &StoredKey,
    ) -> Result<bool, BackendError> {
        let Some(entry) = self.entry(&replacement.account_id, old) else {
            return Ok(false);
        };
        self.insert(replacement)?;
        entry.update(None, |stored| {
            stored.expires_at = Some(
                stored
                    .expires_at
                    .map_or(old_expires_at, |at| at.min(old_expires_at)),
            );
        });
        Ok(true)
    }
}

impl fmt::Debug for MemoryKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryKeyStore")
            .field("accounts", &self.inner.accounts.len())
            .field("keys", &self.inner.by_id.len())
            .field("hasher", &self.inner.hasher)
            .finish_non_exhaustive()
    }
}
