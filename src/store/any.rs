//! [`AnyKeyStore`]: the store chosen at run time.

use std::{sync::Arc, task::Poll};

use time::OffsetDateTime;

use super::EventOutbox;
#[cfg(feature = "postgres")]
use super::PostgresKeyStore;
#[cfg(feature = "sqlite")]
use super::SqliteKeyStore;
use crate::{
    events::{Event, PendingEvent, Settlement},
    manage::{AuditEntry, Exposure, Granularity, UsageBucket},
    Account, AccountId, ApiKey, BackendError, KeyDigest, KeyId, KeyRecord, KeyStorage, KeyStore,
    MemoryKeyStore, Permission, Plan, StoredKey, UsageReport,
};

/// One of the built-in stores, chosen at run time (from a `DATABASE_URL`, say), behind one
/// type: the application's layer, manager and routers have one type whichever it is. Put
/// the cache (`CachedKeyStore`, feature `cache`) in front of it as of any store.
///
/// ```
/// use nouvel_auth::{store::AnyKeyStore, MemoryKeyStore, Profile};
///
/// # async fn run() -> Result<(), nouvel_auth::BackendError> {
/// let profile = Profile::nouvel();
/// let store: AnyKeyStore = match std::env::var("DATABASE_URL") {
///     # #[cfg(feature = "sqlite")]
///     Ok(url) => nouvel_auth::store::SqliteKeyStore::open(&url, &profile).await?.into(),
///     _ => MemoryKeyStore::new().into(),
/// };
/// store.migrate().await?;
/// let keys = profile.key_manager(store.clone());
/// let layer = profile.layer(store);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
// One value per application, cloned into its parts: a box would cost more than the bytes.
#[allow(clippy::large_enum_variant)]
pub enum AnyKeyStore {
    /// [`MemoryKeyStore`].
    Memory(MemoryKeyStore),
    /// [`SqliteKeyStore`].
    #[cfg(feature = "sqlite")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
    Sqlite(SqliteKeyStore),
    /// [`PostgresKeyStore`].
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    Postgres(PostgresKeyStore),
}

/// `$call` on whichever store it is, as `$store`.
macro_rules! each {
    ($self:expr, |$store:ident| $call:expr) => {
        match $self {
            AnyKeyStore::Memory($store) => $call,
            #[cfg(feature = "sqlite")]
            AnyKeyStore::Sqlite($store) => $call,
            #[cfg(feature = "postgres")]
            AnyKeyStore::Postgres($store) => $call,
        }
    };
}

impl AnyKeyStore {
    /// Makes or updates the store's tables (nothing to do in memory).
    pub async fn migrate(&self) -> Result<(), BackendError> {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(store) => store.migrate().await,
            #[cfg(feature = "postgres")]
            Self::Postgres(store) => store.migrate().await,
            _ => Ok(()),
        }
    }

    /// Hands every change other instances make to `on_change` (typically
    /// `CachedKeyStore::invalidate`), from a background task: PostgreSQL's. The other
    /// stores are written by this process alone, whose cache sees every change: `None`.
    pub async fn listen(
        &self,
        on_change: impl Fn(super::Invalidation) + Send + Sync + 'static,
    ) -> Result<Option<tokio::task::JoinHandle<()>>, BackendError> {
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(store) => store.listen(on_change).await.map(Some),
            _ => {
                drop(on_change);
                Ok(None)
            }
        }
    }
}

impl From<MemoryKeyStore> for AnyKeyStore {
    fn from(store: MemoryKeyStore) -> Self {
        Self::Memory(store)
    }
}

#[cfg(feature = "sqlite")]
impl From<SqliteKeyStore> for AnyKeyStore {
    fn from(store: SqliteKeyStore) -> Self {
        Self::Sqlite(store)
    }
}

#[cfg(feature = "postgres")]
impl From<PostgresKeyStore> for AnyKeyStore {
    fn from(store: PostgresKeyStore) -> Self {
        Self::Postgres(store)
    }
}

impl KeyStore for AnyKeyStore {
    fn digest(&self, key: &ApiKey) -> KeyDigest {
        each!(self, |store| store.digest(key))
    }

    async fn lookup(
        &self,
        digest: &KeyDigest,
        now: OffsetDateTime,
    ) -> Result<Option<Arc<KeyRecord>>, BackendError> {
        each!(self, |store| store.lookup(digest, now).await)
    }

    fn lookup_now(&self, digest: &KeyDigest, now: OffsetDateTime) -> Poll<Option<Arc<KeyRecord>>> {
        each!(self, |store| store.lookup_now(digest, now))
    }

    async fn record_usage(&self, reports: &[UsageReport]) -> Result<(), BackendError> {
        each!(self, |store| store.record_usage(reports).await)
    }

    async fn live_digests(&self) -> Result<Option<Vec<KeyDigest>>, BackendError> {
        each!(self, |store| store.live_digests().await)
    }
}

impl KeyStorage for AnyKeyStore {
    async fn insert_account(
        &self,
        account: &Account,
        audit: &AuditEntry,
    ) -> Result<(), BackendError> {
        each!(self, |store| store.insert_account(account, audit).await)
    }

    async fn account(&self, id: &AccountId) -> Result<Option<Account>, BackendError> {
        each!(self, |store| store.account(id).await)
    }

    async fn accounts_named(&self, name: &str) -> Result<Vec<Account>, BackendError> {
        each!(self, |store| store.accounts_named(name).await)
    }

    async fn set_plan(
        &self,
        id: &AccountId,
        plan: Plan,
        audit: &AuditEntry,
    ) -> Result<Option<Account>, BackendError> {
        each!(self, |store| store.set_plan(id, plan, audit).await)
    }

    async fn insert_key(&self, key: &StoredKey, audit: &AuditEntry) -> Result<(), BackendError> {
        each!(self, |store| store.insert_key(key, audit).await)
    }

    async fn keys(&self, account: &AccountId) -> Result<Vec<StoredKey>, BackendError> {
        each!(self, |store| store.keys(account).await)
    }

    async fn key(
        &self,
        account: &AccountId,
        key: &KeyId,
    ) -> Result<Option<StoredKey>, BackendError> {
        each!(self, |store| store.key(account, key).await)
    }

    async fn delete_key(
        &self,
        account: &AccountId,
        key: &KeyId,
        audit: &AuditEntry,
    ) -> Result<bool, BackendError> {
        each!(self, |store| store.delete_key(account, key, audit).await)
    }

    async fn set_disabled(
        &self,
        account: &AccountId,
        key: &KeyId,
        disabled: bool,
        audit: &AuditEntry,
    ) -> Result<Option<StoredKey>, BackendError> {
        each!(self, |store| store
            .set_disabled(account, key, disabled, audit)
            .await)
    }

    async fn expose_key(
        &self,
        account: &AccountId,
        key: &KeyId,
        exposure: &Exposure,
        disable: bool,
        audit: &AuditEntry,
    ) -> Result<Option<StoredKey>, BackendError> {
        each!(self, |store| store
            .expose_key(account, key, exposure, disable, audit)
            .await)
    }

    async fn replace_key(
        &self,
        old: &KeyId,
        old_expires_at: OffsetDateTime,
        replacement: &StoredKey,
        audit: &AuditEntry,
    ) -> Result<bool, BackendError> {
        each!(self, |store| store
            .replace_key(old, old_expires_at, replacement, audit)
            .await)
    }

    async fn audit(
        &self,
        account: &AccountId,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, BackendError> {
        each!(self, |store| store.audit(account, before, limit).await)
    }

    async fn prune_audit(&self, before: OffsetDateTime) -> Result<u64, BackendError> {
        each!(self, |store| store.prune_audit(before).await)
    }

    async fn permissions_last_used(
        &self,
        account: &AccountId,
    ) -> Result<Vec<(KeyId, Permission, OffsetDateTime)>, BackendError> {
        each!(self, |store| store.permissions_last_used(account).await)
    }

    async fn account_usage(
        &self,
        account: &AccountId,
        granularity: Granularity,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<(KeyId, UsageBucket)>, BackendError> {
        each!(self, |store| store
            .account_usage(account, granularity, from, to)
            .await)
    }

    async fn usage(
        &self,
        key: &KeyId,
        granularity: Granularity,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<UsageBucket>, BackendError> {
        each!(self, |store| store.usage(key, granularity, from, to).await)
    }
}

impl EventOutbox for AnyKeyStore {
    async fn add_event(&self, event: &Event, once: &str) -> Result<bool, BackendError> {
        each!(self, |store| store.add_event(event, once).await)
    }

    async fn claim_events(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<PendingEvent>, BackendError> {
        each!(self, |store| store
            .claim_events(now, lease_until, limit)
            .await)
    }

    async fn settle_event(
        &self,
        seq: i64,
        settlement: Settlement,
        now: OffsetDateTime,
    ) -> Result<(), BackendError> {
        each!(self, |store| store.settle_event(seq, settlement, now).await)
    }

    async fn prune_events(&self, before: OffsetDateTime) -> Result<u64, BackendError> {
        each!(self, |store| store.prune_events(before).await)
    }

    async fn accounts_used_since(
        &self,
        since: OffsetDateTime,
    ) -> Result<Vec<AccountId>, BackendError> {
        each!(self, |store| store.accounts_used_since(since).await)
    }

    async fn keys_expiring(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<StoredKey>, BackendError> {
        each!(self, |store| store.keys_expiring(from, to).await)
    }
}
