use std::{
    fmt,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use dashmap::DashMap;
use time::OffsetDateTime;

use super::{KeyRecord, KeyStore};
use crate::{
    clock::SharedClock,
    key::random_id,
    manage::{
        validate_grace, validate_name, Account, KeyInfo, KeyManager, KeySpec, ManageError, NewKey,
    },
    AccountId, ApiKey, BackendError, Clock, KeyDigest, KeyHasher, KeyId, Plan, SystemClock, Usage,
    UsageReport,
};

/// The embedded key store: accounts and keys in memory (DashMap), for one process.
///
/// Clones share the same keys. A lookup is one map read; a deleted key is gone from the
/// next lookup on. Usage reports are applied in place.
///
/// ```
/// use nouvel_auth::{ApiKey, KeyManager, KeySpec, KeyStore, MemoryKeyStore, Permission, Plan};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = MemoryKeyStore::new();
/// let account = store.create_account("Acme", Plan::Business).await.unwrap();
/// let created = store.create_key(&account.id, KeySpec::new("CI", [Permission::Publish])).await.unwrap();
///
/// let record = store.lookup(&store.digest(&created.key)).await.unwrap().unwrap();
/// assert_eq!(record.id, created.info.id);
///
/// store.delete_key(&account.id, &record.id).await.unwrap();
/// assert!(store.lookup(&store.digest(&created.key)).await.unwrap().is_none());
/// # });
/// ```
#[derive(Clone)]
pub struct MemoryKeyStore {
    inner: Arc<Inner>,
}

struct Inner {
    hasher: KeyHasher,
    clock: SharedClock,
    accounts: DashMap<AccountId, Arc<AccountEntry>>,
    by_digest: DashMap<KeyDigest, Arc<KeyEntry>>,
    by_id: DashMap<KeyId, Arc<KeyEntry>>,
}

struct AccountEntry {
    account: Mutex<Account>,
}

/// A stored key. What never changes is plain; what does is behind the mutex.
struct KeyEntry {
    id: KeyId,
    digest: KeyDigest,
    account: Arc<AccountEntry>,
    name: Arc<str>,
    prefix: String,
    spec: KeySpec,
    created_at: OffsetDateTime,
    state: Mutex<KeyState>,
}

struct KeyState {
    expires_at: Option<OffsetDateTime>,
    last_used_at: Option<OffsetDateTime>,
    usage: Usage,
}

/// Locks `mutex`, going on after a panic elsewhere: every update here leaves valid state.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Default for MemoryKeyStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryKeyStore {
    /// An empty store with plain SHA-256 digests and the system clock.
    pub fn new() -> Self {
        Self::with(KeyHasher::default(), SystemClock)
    }

    /// An empty store with `hasher` for digests and `clock` for creation and expiry times.
    pub fn with(hasher: KeyHasher, clock: impl Clock) -> Self {
        Self {
            inner: Arc::new(Inner {
                hasher,
                clock: Arc::new(clock),
                accounts: DashMap::new(),
                by_digest: DashMap::new(),
                by_id: DashMap::new(),
            }),
        }
    }

    fn account_entry(&self, id: &AccountId) -> Result<Arc<AccountEntry>, ManageError> {
        self.inner
            .accounts
            .get(id)
            .map(|a| a.clone())
            .ok_or(ManageError::NotFound)
    }

    fn key_entry(&self, account: &AccountId, key: &KeyId) -> Result<Arc<KeyEntry>, ManageError> {
        let account = self.account_entry(account)?;
        let entry = self.inner.by_id.get(key).map(|k| k.clone());
        entry
            .filter(|entry| Arc::ptr_eq(&entry.account, &account))
            .ok_or(ManageError::NotFound)
    }

    /// Makes and stores a key for `account` from an already validated `spec`.
    fn insert_key(
        &self,
        account: &Arc<AccountEntry>,
        spec: KeySpec,
        name: String,
        expires_at: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> NewKey {
        let key = ApiKey::generate();
        let entry = Arc::new(KeyEntry {
            id: random_id("key_").into(),
            digest: self.inner.hasher.digest(&key),
            account: account.clone(),
            name: name.into(),
            prefix: key.display_prefix().to_owned(),
            spec,
            created_at: now,
            state: Mutex::new(KeyState {
                expires_at,
                last_used_at: None,
                usage: Usage::default(),
            }),
        });
        self.inner.by_id.insert(entry.id.clone(), entry.clone());
        self.inner.by_digest.insert(entry.digest, entry.clone());
        NewKey {
            info: entry.info(now),
            key,
        }
    }

    /// Checks `spec` and the account's plan, in the contract's order, then makes the key.
    fn create_validated(
        &self,
        account: &Arc<AccountEntry>,
        spec: KeySpec,
    ) -> Result<NewKey, ManageError> {
        let now = self.inner.clock.now();
        let valid = spec.validate(now)?;
        let plan = lock(&account.account).plan;
        if !plan.allows_api_keys() {
            return Err(ManageError::PlanRequired(plan));
        }
        Ok(self.insert_key(account, spec, valid.name, valid.expires_at, now))
    }
}

impl KeyEntry {
    fn record(&self) -> KeyRecord {
        let (account_id, plan) = {
            let account = lock(&self.account.account);
            (account.id.clone(), account.plan)
        };
        KeyRecord {
            id: self.id.clone(),
            account_id,
            name: self.name.clone(),
            plan,
            permissions: self.spec.permissions,
            expires_at: lock(&self.state).expires_at,
            rate_limit: self.spec.rate_limit,
        }
    }

    fn info(&self, now: OffsetDateTime) -> KeyInfo {
        let state = lock(&self.state);
        KeyInfo {
            id: self.id.clone(),
            name: self.name.to_string(),
            prefix: self.prefix.clone(),
            permissions: self.spec.permissions,
            created_at: self.created_at,
            last_used_at: state.last_used_at,
            expires_at: state.expires_at,
            status: KeyInfo::status_at(state.expires_at, now),
            usage: state.usage,
        }
    }
}

impl KeyStore for MemoryKeyStore {
    fn digest(&self, key: &ApiKey) -> KeyDigest {
        self.inner.hasher.digest(key)
    }

    async fn lookup(&self, digest: &KeyDigest) -> Result<Option<KeyRecord>, BackendError> {
        Ok(self.inner.by_digest.get(digest).map(|entry| entry.record()))
    }

    async fn record_usage(&self, reports: &[UsageReport]) -> Result<(), BackendError> {
        for report in reports {
            // A key deleted since has nobody left to show its usage to.
            if let Some(entry) = self.inner.by_id.get(&report.key_id) {
                let mut state = lock(&entry.state);
                state.usage.merge(&report.usage);
                state.last_used_at = state.last_used_at.max(report.last_used_at);
            }
        }
        Ok(())
    }
}

impl KeyManager for MemoryKeyStore {
    async fn create_account(&self, name: &str, plan: Plan) -> Result<Account, ManageError> {
        let name = validate_name(name).map_err(|e| ManageError::Invalid(vec![e]))?;
        let account = Account {
            id: random_id("acc_").into(),
            name,
            plan,
            created_at: self.inner.clock.now(),
        };
        let entry = Arc::new(AccountEntry {
            account: Mutex::new(account.clone()),
        });
        self.inner.accounts.insert(account.id.clone(), entry);
        Ok(account)
    }

    async fn account(&self, id: &AccountId) -> Result<Account, ManageError> {
        Ok(lock(&self.account_entry(id)?.account).clone())
    }

    async fn set_plan(&self, id: &AccountId, plan: Plan) -> Result<Account, ManageError> {
        let entry = self.account_entry(id)?;
        let mut account = lock(&entry.account);
        account.plan = plan;
        Ok(account.clone())
    }

    async fn create_key(&self, account: &AccountId, spec: KeySpec) -> Result<NewKey, ManageError> {
        let account = self.account_entry(account)?;
        self.create_validated(&account, spec)
    }

    async fn keys(&self, account: &AccountId) -> Result<Vec<KeyInfo>, ManageError> {
        let account = self.account_entry(account)?;
        let now = self.inner.clock.now();
        let mut keys: Vec<KeyInfo> = self
            .inner
            .by_id
            .iter()
            .filter(|entry| Arc::ptr_eq(&entry.account, &account))
            .map(|entry| entry.info(now))
            .collect();
        keys.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| b.id.cmp(&a.id))
        });
        Ok(keys)
    }

    async fn key(&self, account: &AccountId, key: &KeyId) -> Result<KeyInfo, ManageError> {
        Ok(self.key_entry(account, key)?.info(self.inner.clock.now()))
    }

    async fn delete_key(&self, account: &AccountId, key: &KeyId) -> Result<(), ManageError> {
        let entry = self.key_entry(account, key)?;
        // Digest first: from here on the key answers 401.
        self.inner.by_digest.remove(&entry.digest);
        self.inner.by_id.remove(&entry.id);
        Ok(())
    }

    async fn rotate_key(
        &self,
        account: &AccountId,
        key: &KeyId,
        grace: Duration,
    ) -> Result<NewKey, ManageError> {
        let old = self.key_entry(account, key)?;
        validate_grace(grace)?;
        let new = self.create_validated(&old.account, old.spec.clone())?;
        let grace_ends = self.inner.clock.now() + grace;
        let mut state = lock(&old.state);
        state.expires_at = Some(state.expires_at.map_or(grace_ends, |at| at.min(grace_ends)));
        Ok(new)
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
