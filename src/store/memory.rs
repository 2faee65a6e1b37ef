use std::{
    fmt,
    sync::{
        atomic::{AtomicI64, AtomicU8, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::Duration,
};

use time::OffsetDateTime;

use super::{KeyRecord, KeyStore};
use crate::{
    clock::SharedClock,
    key::random_id,
    manage::{
        validate_grace, validate_name, Account, KeyInfo, KeyManager, KeySpec, ManageError, NewKey,
    },
    AccountId, ApiKey, BackendError, Clock, ConcurrentMap, KeyDigest, KeyHasher, KeyId, Plan,
    SystemClock, Usage, UsageReport,
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
/// let now = time::OffsetDateTime::now_utc();
/// let record = store.lookup(&store.digest(&created.key), now).await.unwrap().unwrap();
/// assert_eq!(record.id, created.info.id);
///
/// store.delete_key(&account.id, &record.id).await.unwrap();
/// assert!(store.lookup(&store.digest(&created.key), now).await.unwrap().is_none());
/// # });
/// ```
#[derive(Clone)]
pub struct MemoryKeyStore {
    inner: Arc<Inner>,
}

struct Inner {
    hasher: KeyHasher,
    clock: SharedClock,
    accounts: ConcurrentMap<AccountId, Arc<AccountEntry>>,
    by_digest: ConcurrentMap<KeyDigest, Arc<KeyEntry>>,
    by_id: ConcurrentMap<KeyId, Arc<KeyEntry>>,
}

/// An account. The plan is an atomic: every lookup reads it, and no lock is needed.
struct AccountEntry {
    id: AccountId,
    name: String,
    created_at: OffsetDateTime,
    plan: AtomicU8,
}

/// A stored key. Lookups read only `record` and the atomics; the mutex holds what only
/// usage flushes and the admin side touch.
struct KeyEntry {
    record: KeyRecord,
    digest: KeyDigest,
    account: Arc<AccountEntry>,
    prefix: String,
    spec: KeySpec,
    created_at: OffsetDateTime,
    expires_at: AtomicExpiry,
    usage: Mutex<KeyUsage>,
}

struct KeyUsage {
    last_used_at: Option<OffsetDateTime>,
    usage: Usage,
}

const PLANS: [Plan; 4] = [Plan::Starter, Plan::Growth, Plan::Scale, Plan::Business];

impl AccountEntry {
    fn plan(&self) -> Plan {
        PLANS[usize::from(self.plan.load(Ordering::Acquire))]
    }

    fn account(&self) -> Account {
        Account {
            id: self.id.clone(),
            name: self.name.clone(),
            plan: self.plan(),
            created_at: self.created_at,
        }
    }
}

/// An expiration read without a lock: microseconds since the epoch, `i64::MAX` for never.
/// (Expirations are kept to the microsecond, as PostgreSQL keeps them.)
struct AtomicExpiry(AtomicI64);

impl AtomicExpiry {
    const NEVER: i64 = i64::MAX;

    fn new(at: Option<OffsetDateTime>) -> Self {
        Self(AtomicI64::new(Self::encode(at)))
    }

    fn encode(at: Option<OffsetDateTime>) -> i64 {
        at.map_or(Self::NEVER, |at| {
            i64::try_from(at.unix_timestamp_nanos() / 1_000).unwrap_or(Self::NEVER)
        })
    }

    fn get(&self) -> Option<OffsetDateTime> {
        match self.0.load(Ordering::Acquire) {
            Self::NEVER => None,
            // Seconds, then microseconds: no 128-bit division on every lookup.
            micros => OffsetDateTime::from_unix_timestamp(micros.div_euclid(1_000_000))
                .and_then(|at| at.replace_microsecond(micros.rem_euclid(1_000_000) as u32))
                .ok(),
        }
    }

    /// Brings the expiration forward to `at`, never back.
    fn at_most(&self, at: OffsetDateTime) {
        self.0.fetch_min(Self::encode(Some(at)), Ordering::AcqRel);
    }
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
                accounts: ConcurrentMap::default(),
                by_digest: ConcurrentMap::default(),
                by_id: ConcurrentMap::default(),
            }),
        }
    }

    /// The live key with this digest: what both `lookup` and `lookup_now` answer.
    fn find(&self, digest: &KeyDigest) -> Option<KeyRecord> {
        self.inner.by_digest.get(digest).map(|entry| entry.record())
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
        let record = KeyRecord::new(
            random_id("key_"),
            account.id.clone(),
            name,
            account.plan(),
            spec.permissions,
        )
        .rate_limit(spec.rate_limit);
        let entry = Arc::new(KeyEntry {
            record,
            digest: self.inner.hasher.digest(&key),
            account: account.clone(),
            prefix: key.display_prefix().to_owned(),
            spec,
            created_at: now,
            expires_at: AtomicExpiry::new(expires_at),
            usage: Mutex::new(KeyUsage {
                last_used_at: None,
                usage: Usage::default(),
            }),
        });
        self.inner
            .by_id
            .insert(entry.record.id.clone(), entry.clone());
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
        let plan = account.plan();
        if !plan.allows_api_keys() {
            return Err(ManageError::PlanRequired(plan));
        }
        Ok(self.insert_key(account, spec, valid.name, valid.expires_at, now))
    }
}

impl KeyEntry {
    fn record(&self) -> KeyRecord {
        let mut record = self.record.clone();
        record.plan = self.account.plan();
        record.expires_at = self.expires_at.get();
        record
    }

    fn info(&self, now: OffsetDateTime) -> KeyInfo {
        let usage = lock(&self.usage);
        let expires_at = self.expires_at.get();
        KeyInfo {
            id: self.record.id.clone(),
            name: self.record.name.to_string(),
            prefix: self.prefix.clone(),
            permissions: self.spec.permissions,
            created_at: self.created_at,
            last_used_at: usage.last_used_at,
            expires_at,
            status: KeyInfo::status_at(expires_at, now),
            usage: usage.usage,
        }
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
    ) -> Result<Option<KeyRecord>, BackendError> {
        Ok(self.find(digest))
    }

    fn lookup_now(&self, digest: &KeyDigest, _now: OffsetDateTime) -> Option<Option<KeyRecord>> {
        Some(self.find(digest))
    }

    async fn record_usage(&self, reports: &[UsageReport]) -> Result<(), BackendError> {
        for report in reports {
            // A key deleted since has nobody left to show its usage to.
            if let Some(entry) = self.inner.by_id.get(&report.key_id) {
                let mut state = lock(&entry.usage);
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
        let entry = Arc::new(AccountEntry {
            id: random_id("acc_").into(),
            name,
            created_at: self.inner.clock.now(),
            plan: AtomicU8::new(plan as u8),
        });
        self.inner.accounts.insert(entry.id.clone(), entry.clone());
        Ok(entry.account())
    }

    async fn account(&self, id: &AccountId) -> Result<Account, ManageError> {
        Ok(self.account_entry(id)?.account())
    }

    async fn set_plan(&self, id: &AccountId, plan: Plan) -> Result<Account, ManageError> {
        let entry = self.account_entry(id)?;
        entry.plan.store(plan as u8, Ordering::Release);
        Ok(entry.account())
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
        self.inner.by_id.remove(&entry.record.id);
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
        old.expires_at.at_most(self.inner.clock.now() + grace);
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
