use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::Arc,
    task::Poll,
};

use time::OffsetDateTime;

use super::outbox::MemoryOutbox;
use crate::{
    events::{Event, PendingEvent, Settlement},
    store::EventOutbox,
    KeyRecord, KeyStorage, KeyStore, StoredKey,
};
use crate::{
    manage::{AuditEntry, Exposure},
    usage::{Granularity, UsageBucket},
    Account, AccountId, ApiKey, BackendError, ConcurrentMap, KeyDigest, KeyHasher, KeyId,
    Permission, Plan, UsageReport,
};

/// The embedded key store: accounts and keys in memory (DashMap), for one process.
///
/// Clones share the same keys. A lookup is one map read and a reference count: the map
/// holds each live key's record as lookups answer it, made again whenever the key or its
/// account changes. A deleted key is gone from the next lookup on. Usage reports are
/// applied in place.
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
    /// What lookups answer: the live keys' records.
    records: ConcurrentMap<KeyDigest, Arc<KeyRecord>>,
    /// What management reads and writes: the live keys as stored.
    keys: ConcurrentMap<KeyId, StoredKey>,
    /// When each key last used each permission.
    permission_use: std::sync::Mutex<HashMap<(KeyId, Permission), OffsetDateTime>>,
    /// The usage buckets, by key, granularity and start.
    usage: std::sync::Mutex<BTreeMap<(KeyId, Granularity, OffsetDateTime), UsageBucket>>,
    /// The audit log, oldest first, and the outbox. Held while a change is made, so that
    /// whoever reads them sees a change, its entry and its event together.
    log: std::sync::Mutex<Log>,
}

#[derive(Default)]
struct Log {
    audit: Vec<AuditEntry>,
    outbox: MemoryOutbox,
}

impl Default for MemoryKeyStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryKeyStore {
    /// An empty store with plain SHA-256 digests.
    #[must_use]
    pub fn new() -> Self {
        Self::with_hasher(KeyHasher::default())
    }

    /// An empty store with `hasher` for digests.
    #[must_use]
    pub fn with_hasher(hasher: KeyHasher) -> Self {
        Self {
            inner: Arc::new(Inner {
                hasher,
                accounts: ConcurrentMap::default(),
                records: ConcurrentMap::default(),
                keys: ConcurrentMap::default(),
                usage: std::sync::Mutex::default(),
                permission_use: std::sync::Mutex::default(),
                log: std::sync::Mutex::default(),
            }),
        }
    }

    fn find(&self, digest: &KeyDigest) -> Option<Arc<KeyRecord>> {
        self.inner.records.get(digest).map(|record| record.clone())
    }

    /// Writes `key` and the record lookups answer for it. The account stays read-locked
    /// meanwhile: a plan change waits for it, then updates it with the others.
    fn put(&self, key: StoredKey) -> Result<(), BackendError> {
        let account = self.inner.accounts.get(&key.account_id).ok_or_else(|| {
            BackendError::failed(format!("no account {} for key {}", key.account_id, key.id))
        })?;
        let record = Arc::new(key.record(account.plan.clone()));
        self.inner.records.insert(key.digest, record);
        self.inner.keys.insert(key.id.clone(), key);
        drop(account);
        Ok(())
    }
}

impl MemoryKeyStore {
    /// Applies `change` to a live key of `account` (if it says it changed it: `true`), with
    /// `audit`, and makes the record lookups answer again; the key as it is now.
    fn change_key(
        &self,
        account: &AccountId,
        key: &KeyId,
        audit: &AuditEntry,
        change: impl FnOnce(&mut StoredKey) -> bool,
    ) -> Option<StoredKey> {
        self.audited(audit, || {
            let Some(account) = self.inner.accounts.get(account) else {
                return (None, false);
            };
            let Some(mut key) = self
                .inner
                .keys
                .get_mut(key)
                .filter(|key| key.account_id == account.id)
            else {
                return (None, false);
            };
            if !change(&mut key) {
                return (None, false);
            }
            let record = Arc::new(key.record(account.plan.clone()));
            self.inner.records.insert(key.digest, record);
            (Some(key.clone()), true)
        })
    }

    /// Makes `change` and, if it says it did (`true`), records `audit` and its event: all
    /// under the log's lock.
    fn audited<T>(&self, audit: &AuditEntry, change: impl FnOnce() -> (T, bool)) -> T {
        let mut log = crate::lock(&self.inner.log);
        let (answer, changed) = change();
        if changed {
            log.audit.push(audit.clone());
            if let Some(event) = Event::of(audit) {
                log.outbox.push(event, None);
            }
        }
        answer
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

    fn lookup_now(&self, digest: &KeyDigest, _now: OffsetDateTime) -> Poll<Option<Arc<KeyRecord>>> {
        Poll::Ready(self.find(digest))
    }

    async fn live_digests(&self) -> Result<Option<Vec<KeyDigest>>, BackendError> {
        Ok(Some(self.inner.records.iter().map(|r| *r.key()).collect()))
    }

    async fn record_usage(&self, reports: &[UsageReport]) -> Result<(), BackendError> {
        let mut buckets = crate::lock(&self.inner.usage);
        let mut permission_use = crate::lock(&self.inner.permission_use);
        for report in reports {
            // A key deleted since has nobody left to show its usage to.
            if let Some(mut key) = self.inner.keys.get_mut(&report.key_id) {
                key.usage.merge(&report.usage);
                key.last_used_at = key.last_used_at.max(report.last_used_at);
                if let Some(at) = report.last_used_at {
                    for permission in report.permissions_used {
                        let last = permission_use
                            .entry((report.key_id.clone(), permission))
                            .or_insert(at);
                        *last = (*last).max(at);
                    }
                }
                let hours = report.hours.iter().map(|h| (Granularity::Hour, *h));
                let days = report.days().into_iter().map(|d| (Granularity::Day, d));
                for (granularity, bucket) in hours.chain(days) {
                    buckets
                        .entry((report.key_id.clone(), granularity, bucket.start))
                        .or_insert_with(|| UsageBucket::new(bucket.start))
                        .add(&bucket);
                }
            }
        }
        Ok(())
    }
}

impl KeyStorage for MemoryKeyStore {
    async fn insert_account(
        &self,
        account: &Account,
        audit: &AuditEntry,
    ) -> Result<(), BackendError> {
        self.audited(audit, || {
            self.inner
                .accounts
                .insert(account.id.clone(), account.clone());
            ((), true)
        });
        Ok(())
    }

    async fn account(&self, id: &AccountId) -> Result<Option<Account>, BackendError> {
        Ok(self.inner.accounts.get(id).map(|a| a.clone()))
    }

    async fn accounts_named(&self, name: &str) -> Result<Vec<Account>, BackendError> {
        let mut named: Vec<Account> = self
            .inner
            .accounts
            .iter()
            .filter(|account| account.name == name)
            .map(|account| account.clone())
            .collect();
        named.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(named)
    }

    async fn set_plan(
        &self,
        id: &AccountId,
        plan: Plan,
        audit: &AuditEntry,
    ) -> Result<Option<Account>, BackendError> {
        Ok(self.audited(audit, || {
            let Some(mut account) = self.inner.accounts.get_mut(id) else {
                return (None, false);
            };
            account.plan = plan.clone();
            // Under the account's lock: a key being put meanwhile waits, then reads the new plan.
            for key in self.inner.keys.iter().filter(|key| key.account_id == *id) {
                let record = Arc::new(key.record(plan.clone()));
                self.inner.records.insert(key.digest, record);
            }
            (Some(account.clone()), true)
        }))
    }

    async fn insert_key(&self, key: &StoredKey, audit: &AuditEntry) -> Result<(), BackendError> {
        self.audited(audit, || {
            let put = self.put(key.clone());
            let done = put.is_ok();
            (put, done)
        })
    }

    async fn keys(&self, account: &AccountId) -> Result<Vec<StoredKey>, BackendError> {
        Ok(self
            .inner
            .keys
            .iter()
            .filter(|key| key.account_id == *account)
            .map(|key| key.clone())
            .collect())
    }

    async fn key(
        &self,
        account: &AccountId,
        key: &KeyId,
    ) -> Result<Option<StoredKey>, BackendError> {
        let key = self.inner.keys.get(key);
        Ok(key
            .filter(|key| key.account_id == *account)
            .map(|key| key.clone()))
    }

    async fn delete_key(
        &self,
        account: &AccountId,
        key: &KeyId,
        audit: &AuditEntry,
    ) -> Result<bool, BackendError> {
        Ok(self.audited(audit, || {
            let removed = self
                .inner
                .keys
                .remove_if(key, |_, stored| stored.account_id == *account);
            if let Some((_, stored)) = &removed {
                self.inner.records.remove(&stored.digest);
            }
            (removed.is_some(), removed.is_some())
        }))
    }

    async fn set_disabled(
        &self,
        account: &AccountId,
        key: &KeyId,
        disabled: bool,
        audit: &AuditEntry,
    ) -> Result<Option<StoredKey>, BackendError> {
        Ok(self.change_key(account, key, audit, |key| {
            key.disabled = disabled;
            true
        }))
    }

    async fn expose_key(
        &self,
        account: &AccountId,
        key: &KeyId,
        exposure: &Exposure,
        disable: bool,
        audit: &AuditEntry,
    ) -> Result<Option<StoredKey>, BackendError> {
        Ok(self.change_key(account, key, audit, |key| {
            if key.exposure.is_some() {
                return false;
            }
            key.exposure = Some(exposure.clone());
            key.disabled |= disable;
            true
        }))
    }

    async fn replace_key(
        &self,
        old: &KeyId,
        old_expires_at: OffsetDateTime,
        replacement: &StoredKey,
        audit: &AuditEntry,
    ) -> Result<bool, BackendError> {
        self.audited(audit, || {
            let account = self.inner.accounts.get(&replacement.account_id);
            let Some(account) = account else {
                return (Ok(false), false);
            };
            let Some(mut old) = self.inner.keys.get_mut(old).filter(|key| {
                key.account_id == replacement.account_id && key.replaced_by.is_none()
            }) else {
                return (Ok(false), false);
            };
            // Under the key's lock: a concurrent replacement finds it replaced.
            old.replace_with(&replacement.id, old_expires_at);
            let record = Arc::new(old.record(account.plan.clone()));
            self.inner.records.insert(old.digest, record);
            drop((old, account));
            match self.put(replacement.clone()) {
                Ok(()) => (Ok(true), true),
                Err(error) => (Err(error), false),
            }
        })
    }

    async fn audit(
        &self,
        account: &AccountId,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, BackendError> {
        let log = crate::lock(&self.inner.log);
        let mut entries: Vec<AuditEntry> = log
            .audit
            .iter()
            .filter(|entry| entry.account_id == *account)
            .filter(|entry| before.is_none_or(|before| entry.id.as_str() < before))
            .cloned()
            .collect();
        entries.sort_unstable_by(|a, b| b.id.cmp(&a.id));
        entries.truncate(limit);
        Ok(entries)
    }

    async fn prune_audit(&self, before: OffsetDateTime) -> Result<u64, BackendError> {
        let log = &mut crate::lock(&self.inner.log).audit;
        let kept = log.len();
        log.retain(|entry| entry.at >= before);
        Ok(u64::try_from(kept - log.len()).unwrap_or(u64::MAX))
    }

    async fn usage(
        &self,
        key: &KeyId,
        granularity: Granularity,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<UsageBucket>, BackendError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let range = (key.clone(), granularity, from)..(key.clone(), granularity, to);
        Ok(crate::lock(&self.inner.usage)
            .range(range)
            .map(|(_, bucket)| *bucket)
            .collect())
    }

    async fn permissions_last_used(
        &self,
        account: &AccountId,
    ) -> Result<Vec<(KeyId, Permission, OffsetDateTime)>, BackendError> {
        let of_account = |key: &KeyId| {
            self.inner
                .keys
                .get(key)
                .is_some_and(|stored| stored.account_id == *account)
        };
        Ok(crate::lock(&self.inner.permission_use)
            .iter()
            .filter(|((key, _), _)| of_account(key))
            .map(|((key, permission), at)| (key.clone(), *permission, *at))
            .collect())
    }

    async fn account_usage(
        &self,
        account: &AccountId,
        granularity: Granularity,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<(KeyId, UsageBucket)>, BackendError> {
        let of_account = |key: &KeyId| {
            self.inner
                .keys
                .get(key)
                .is_some_and(|stored| stored.account_id == *account)
        };
        Ok(crate::lock(&self.inner.usage)
            .iter()
            .filter(|((key, g, start), _)| {
                *g == granularity && (from..to).contains(start) && of_account(key)
            })
            .map(|((key, _, _), bucket)| (key.clone(), *bucket))
            .collect())
    }
}

impl EventOutbox for MemoryKeyStore {
    async fn add_event(&self, event: &Event, once: &str) -> Result<bool, BackendError> {
        Ok(crate::lock(&self.inner.log)
            .outbox
            .push(event.clone(), Some(once)))
    }

    async fn claim_events(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<PendingEvent>, BackendError> {
        Ok(crate::lock(&self.inner.log)
            .outbox
            .claim(now, lease_until, limit))
    }

    async fn settle_event(
        &self,
        seq: i64,
        settlement: Settlement,
        now: OffsetDateTime,
    ) -> Result<(), BackendError> {
        crate::lock(&self.inner.log)
            .outbox
            .settle(seq, settlement, now);
        Ok(())
    }

    async fn prune_events(&self, before: OffsetDateTime) -> Result<u64, BackendError> {
        Ok(crate::lock(&self.inner.log).outbox.prune(before))
    }

    async fn accounts_used_since(
        &self,
        since: OffsetDateTime,
    ) -> Result<Vec<AccountId>, BackendError> {
        let mut accounts: Vec<AccountId> = self
            .inner
            .keys
            .iter()
            .filter(|key| key.last_used_at.is_some_and(|at| at >= since))
            .map(|key| key.account_id.clone())
            .collect();
        accounts.sort_unstable();
        accounts.dedup();
        Ok(accounts)
    }

    async fn keys_expiring(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<StoredKey>, BackendError> {
        Ok(self
            .inner
            .keys
            .iter()
            .filter(|key| key.expires_at.is_some_and(|at| (from..=to).contains(&at)))
            .map(|key| key.clone())
            .collect())
    }
}

impl fmt::Debug for MemoryKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryKeyStore")
            .field("accounts", &self.inner.accounts.len())
            .field("keys", &self.inner.keys.len())
            .field("hasher", &self.inner.hasher)
            .finish_non_exhaustive()
    }
}
