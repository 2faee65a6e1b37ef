//! What a store is: [`KeyStore`] (the layer's lookups), [`KeyStorage`] (the manager's
//! writes), the [`KeyRecord`] a lookup answers and the [`StoredKey`] storage keeps.

use std::{future::Future, sync::Arc, task::Poll};

use time::OffsetDateTime;

use crate::{
    attachment::Attachment,
    events::{Event, PendingEvent, Settlement},
    manage::{AuditEntry, Exposure},
    network::Networks,
    usage::{Granularity, UsageBucket},
    Account, AccountId, ApiKey, BackendError, Environment, Expiration, KeyDigest, KeyId,
    Permission, Permissions, Plan, RateLimits, Usage, UsageReport,
};

/// What the layer needs to know about a live key. Handlers get it as an
/// [`AuthenticatedKey`](crate::AuthenticatedKey) once the layer has admitted the request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyRecord {
    /// The key's id.
    pub id: KeyId,
    /// The account that owns the key.
    pub account_id: AccountId,
    /// The key's name, as its owner gave it.
    pub name: std::sync::Arc<str>,
    /// The account's plan, now.
    pub plan: Plan,
    /// What the key may do.
    pub permissions: Permissions,
    /// When the key stops working; `None` for never.
    pub expires_at: Option<OffsetDateTime>,
    /// Limits for this key instead of its plan's.
    pub rate_limits: Option<RateLimits>,
    /// Switched off by its owner or an operator: the layer answers 401 `disabled_api_key`.
    pub disabled: bool,
    /// The environment the key is for, if its owner named one.
    pub environment: Option<Environment>,
    /// The key whose rate-limit window this one counts in, if not its own: a replacement
    /// shares the window of the first key of its rotation chain, so during a grace period
    /// old and new keys together get the limit once.
    pub shares_limit_with: Option<KeyId>,
    /// The networks requests with the key must come from; `None` for anywhere.
    pub allowed_networks: Option<Networks>,
    /// The layer's state for this key (window, pending usage), once it has seen the record.
    pub(crate) layer_state: Attachment,
}

impl KeyRecord {
    /// An enabled record with no environment, that never expires and uses the layer's
    /// default limit.
    pub fn new(
        id: impl Into<KeyId>,
        account_id: impl Into<AccountId>,
        name: impl Into<std::sync::Arc<str>>,
        plan: Plan,
        permissions: Permissions,
    ) -> Self {
        Self {
            id: id.into(),
            account_id: account_id.into(),
            name: name.into(),
            plan,
            permissions,
            expires_at: None,
            rate_limits: None,
            disabled: false,
            environment: None,
            shares_limit_with: None,
            allowed_networks: None,
            layer_state: Attachment::default(),
        }
    }

    /// Sets when the key expires.
    #[must_use]
    pub fn expires_at(mut self, at: Option<OffsetDateTime>) -> Self {
        self.expires_at = at;
        self
    }

    /// Holds this key to `limits` instead of its plan's.
    #[must_use]
    pub fn rate_limits(mut self, limits: Option<RateLimits>) -> Self {
        self.rate_limits = limits;
        self
    }

    /// Marks the key disabled (or enabled).
    #[must_use]
    pub fn disabled(mut self, disabled: bool) -> Self {
        self.disabled = disabled;
        self
    }

    /// Sets the environment the key is for.
    #[must_use]
    pub fn environment(mut self, environment: Option<Environment>) -> Self {
        self.environment = environment;
        self
    }

    /// Counts the key's requests in `key`'s rate-limit window instead of its own.
    #[must_use]
    pub fn shares_limit_with(mut self, key: Option<KeyId>) -> Self {
        self.shares_limit_with = key;
        self
    }

    /// Lets the key be used only from `networks` (`None`: from anywhere).
    #[must_use]
    pub fn allowed_networks(mut self, networks: Option<Networks>) -> Self {
        self.allowed_networks = networks;
        self
    }

    /// The id the rate limit counts this key's requests under: its own, or the one it
    /// [shares a window with](Self::shares_limit_with).
    #[must_use]
    pub fn limit_id(&self) -> &KeyId {
        self.shares_limit_with.as_ref().unwrap_or(&self.id)
    }

    /// Whether the key has expired at `now` (an expiration instant is already expired).
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// The read path of a key store: what the layer needs. Look a digest up, take usage reports.
///
/// Implement it to back keys with your own database; implement [`KeyStorage`] too for the
/// keys to be managed there. Return only live keys from [`lookup`](Self::lookup): unknown,
/// deleted and revoked keys are all `Ok(None)`, so they get one and the same 401. Expiry is
/// checked by the layer, so an expired key may be returned (and gets 401
/// `expired_api_key`). Return `Err` when the backend fails; the layer answers 503, never
/// 401, so an outage never looks like a bad key.
///
/// ```
/// use std::sync::Arc;
/// use nouvel_auth::{
///     key::KeyDigest, store::{UsageReport}, BackendError, KeyRecord, KeyStore,
/// };
/// use time::OffsetDateTime;
///
/// struct NoKeys;
///
/// impl KeyStore for NoKeys {
///     async fn lookup(
///         &self,
///         _digest: &KeyDigest,
///         _now: OffsetDateTime,
///     ) -> Result<Option<Arc<KeyRecord>>, BackendError> {
///         Ok(None)
///     }
///
///     async fn record_usage(&self, _reports: &[UsageReport]) -> Result<(), BackendError> {
///         Ok(())
///     }
/// }
/// ```
pub trait KeyStore: Send + Sync + 'static {
    /// The digest under which this store keeps `key`. Plain SHA-256 unless the store
    /// uses a pepper ([`KeyHasher`](crate::key::KeyHasher)).
    fn digest(&self, key: &ApiKey) -> KeyDigest {
        key.digest()
    }

    /// The live key with this digest, if any. The record is shared (an `Arc`), so the
    /// layer hands it to the handler without copying it.
    ///
    /// `now` is the instant the layer judges the request at, read once from its clock: a
    /// store that caches judges freshness by it instead of reading a clock of its own.
    fn lookup(
        &self,
        digest: &KeyDigest,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Option<Arc<KeyRecord>>, BackendError>> + Send;

    /// What [`lookup`](Self::lookup) would answer, if the store knows it without waiting
    /// (a store in memory, a warm cache); `Pending` (the default) sends the layer to
    /// `lookup`.
    ///
    /// The layer asks this first, in its `call`: an answer here lets it check the request
    /// and call the inner service at once, with no allocation. It must have no side effects
    /// the layer could repeat, since `Pending` is followed by `lookup`.
    ///
    /// ```
    /// use std::{collections::HashMap, sync::Arc, task::Poll};
    /// use nouvel_auth::{
    ///     key::ApiKey, key::KeyDigest, store::{UsageReport}, BackendError, KeyRecord,
    ///     KeyStore,
    /// };
    /// use time::OffsetDateTime;
    ///
    /// /// Keys loaded at start-up: every answer is at hand.
    /// struct Preloaded(HashMap<KeyDigest, Arc<KeyRecord>>);
    ///
    /// impl KeyStore for Preloaded {
    ///     async fn lookup(
    ///         &self,
    ///         digest: &KeyDigest,
    ///         _now: OffsetDateTime,
    ///     ) -> Result<Option<Arc<KeyRecord>>, BackendError> {
    ///         Ok(self.0.get(digest).cloned())
    ///     }
    ///
    ///     fn lookup_now(&self, digest: &KeyDigest, _now: OffsetDateTime) -> Poll<Option<Arc<KeyRecord>>> {
    ///         Poll::Ready(self.0.get(digest).cloned())
    ///     }
    ///
    ///     async fn record_usage(&self, _reports: &[UsageReport]) -> Result<(), BackendError> {
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let store = Preloaded(HashMap::new());
    /// let unknown = ApiKey::generate().digest();
    /// assert_eq!(store.lookup_now(&unknown, OffsetDateTime::now_utc()), Poll::Ready(None));
    /// ```
    fn lookup_now(&self, digest: &KeyDigest, now: OffsetDateTime) -> Poll<Option<Arc<KeyRecord>>> {
        let _ = (digest, now);
        Poll::Pending
    }

    /// Adds a batch of usage (admitted and rejected requests, last-used times) to the
    /// keys' totals, its [`hours`](UsageReport::hours) to the keys' hourly and daily
    /// buckets ([`UsageReport::days`]), and keeps when each permission was last used
    /// (`KeyStorage::permissions_last_used`), all in one write: a failed call has added
    /// nothing.
    /// Reports of keys the store does not hold are left out. The layer calls it once per
    /// flush interval, not once per request.
    fn record_usage(
        &self,
        reports: &[UsageReport],
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// The digest of every live key, for a cache that refuses made-up keys without asking
    /// (`CachedKeyStore::refuse_made_up_keys`);
    /// `None` (the default) for a store that cannot list them.
    fn live_digests(
        &self,
    ) -> impl Future<Output = Result<Option<Vec<KeyDigest>>, BackendError>> + Send {
        std::future::ready(Ok(None))
    }
}

/// A shared store: several layers (or a manager) can hold one.
impl<K: KeyStore> KeyStore for Arc<K> {
    fn digest(&self, key: &ApiKey) -> KeyDigest {
        (**self).digest(key)
    }

    fn lookup(
        &self,
        digest: &KeyDigest,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Option<Arc<KeyRecord>>, BackendError>> + Send {
        (**self).lookup(digest, now)
    }

    fn lookup_now(&self, digest: &KeyDigest, now: OffsetDateTime) -> Poll<Option<Arc<KeyRecord>>> {
        (**self).lookup_now(digest, now)
    }

    fn record_usage(
        &self,
        reports: &[UsageReport],
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        (**self).record_usage(reports)
    }

    fn live_digests(
        &self,
    ) -> impl Future<Output = Result<Option<Vec<KeyDigest>>, BackendError>> + Send {
        (**self).live_digests()
    }
}

/// A key as storage keeps it: everything but the secret. The [`KeyManager`](crate::KeyManager)
/// makes it, validated; storage writes it and reads it back as it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Its id.
    pub id: KeyId,
    /// The account that owns it.
    pub account_id: AccountId,
    /// Its name, trimmed.
    pub name: String,
    /// The key's first characters, to tell keys apart (`nvl_AbCd`).
    pub prefix: String,
    /// The digest a lookup finds it by ([`KeyStore::digest`] of the key).
    pub digest: KeyDigest,
    /// What it may do.
    pub permissions: Permissions,
    /// The expiration option it was made with; a rotation makes its replacement with it again.
    pub expiration: Expiration,
    /// Limits for this key instead of its plan's.
    pub rate_limits: Option<RateLimits>,
    /// When it was made.
    pub created_at: OffsetDateTime,
    /// When it stops working; `None` for never. A rotation brings it forward.
    pub expires_at: Option<OffsetDateTime>,
    /// The last admitted request, as usage reports tell.
    pub last_used_at: Option<OffsetDateTime>,
    /// Its requests, as usage reports tell.
    pub usage: Usage,
    /// The key a rotation replaced it with; a key is replaced once at most.
    pub replaced_by: Option<KeyId>,
    /// Switched off, without being deleted.
    pub disabled: bool,
    /// The environment it is for; a rotation keeps it.
    pub environment: Option<Environment>,
    /// The key whose rate-limit window it counts in, if not its own (a replacement: the
    /// first key of its rotation chain).
    pub shares_limit_with: Option<KeyId>,
    /// Where a secret scanner found it, if one did.
    pub exposure: Option<Exposure>,
    /// The networks requests with it must come from; `None` for anywhere. A rotation keeps
    /// them unless it is given others.
    pub allowed_networks: Option<Networks>,
}

impl StoredKey {
    /// What [`KeyStorage::replace_key`] does to the old key: marks it replaced by
    /// `replacement` and brings its expiration forward to `expires_at` (never back).
    pub fn replace_with(&mut self, replacement: &KeyId, expires_at: OffsetDateTime) {
        self.replaced_by = Some(replacement.clone());
        self.expires_at = Some(self.expires_at.map_or(expires_at, |at| at.min(expires_at)));
    }

    /// The record a lookup answers for this key, its account being on `plan`.
    #[must_use]
    pub fn record(&self, plan: Plan) -> KeyRecord {
        KeyRecord::new(
            self.id.clone(),
            self.account_id.clone(),
            self.name.as_str(),
            plan,
            self.permissions,
        )
        .expires_at(self.expires_at)
        .rate_limits(self.rate_limits)
        .disabled(self.disabled)
        .environment(self.environment.clone())
        .shares_limit_with(self.shares_limit_with.clone())
        .allowed_networks(self.allowed_networks.clone())
    }
}

/// The write side of a store: accounts and keys, read and written as given, and the audit
/// log of every change.
///
/// Storage validates nothing and decides nothing: the [`KeyManager`](crate::KeyManager)
/// checks names, permissions, expirations, plans and rotation rules before it calls any
/// of these, so every store behaves alike. Storage only has to keep what it is given,
/// answer lookups from it ([`KeyStore`]), and make each call atomic: a call that fails
/// leaves nothing half-written. Each change comes with its [`AuditEntry`], written in the
/// same transaction: when the change is made, the entry is too, and when it is not
/// (`None`, `false`, `Err`), neither is.
///
/// `None` and `false` answers mean "no such account", or "no such live key in that
/// account" (deleted keys are gone for every method). An id that storage never made,
/// whatever its bytes, is such an answer, never an error. `Err` is for a backend that failed.
///
/// Run `testing::conformance` (feature `testing`) on a
/// store of your own to check that it keeps this contract.
pub trait KeyStorage: KeyStore {
    /// Writes a new account.
    fn insert_account(
        &self,
        account: &Account,
        audit: &AuditEntry,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Reads an account.
    fn account(
        &self,
        id: &AccountId,
    ) -> impl Future<Output = Result<Option<Account>, BackendError>> + Send;

    /// The accounts named `name` exactly, oldest first (an application finds its own
    /// accounts again by name, a demo account say).
    fn accounts_named(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Vec<Account>, BackendError>> + Send;

    /// Changes an account's plan; lookups of its keys answer the new plan from now on.
    fn set_plan(
        &self,
        id: &AccountId,
        plan: Plan,
        audit: &AuditEntry,
    ) -> impl Future<Output = Result<Option<Account>, BackendError>> + Send;

    /// Writes a new key of an existing account.
    fn insert_key(
        &self,
        key: &StoredKey,
        audit: &AuditEntry,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// The account's live keys, in any order (the manager lists them newest first).
    fn keys(
        &self,
        account: &AccountId,
    ) -> impl Future<Output = Result<Vec<StoredKey>, BackendError>> + Send;

    /// One live key of the account.
    fn key(
        &self,
        account: &AccountId,
        key: &KeyId,
    ) -> impl Future<Output = Result<Option<StoredKey>, BackendError>> + Send;

    /// Deletes a live key of the account: lookups stop finding it at once. `false` if
    /// there was none.
    fn delete_key(
        &self,
        account: &AccountId,
        key: &KeyId,
        audit: &AuditEntry,
    ) -> impl Future<Output = Result<bool, BackendError>> + Send;

    /// Disables (or enables) a live key of the account: lookups answer the change at once.
    /// The key as it is now, or `None` if there was none.
    fn set_disabled(
        &self,
        account: &AccountId,
        key: &KeyId,
        disabled: bool,
        audit: &AuditEntry,
    ) -> impl Future<Output = Result<Option<StoredKey>, BackendError>> + Send;

    /// Marks a live key of the account as found in public (`exposure`), and disables it if
    /// `disable`, unless it is marked already: the key as it is now, or `None` (and nothing
    /// written) if there is no such live key or it was marked before. Of concurrent calls
    /// for one key, exactly one marks it.
    fn expose_key(
        &self,
        account: &AccountId,
        key: &KeyId,
        exposure: &Exposure,
        disable: bool,
        audit: &AuditEntry,
    ) -> impl Future<Output = Result<Option<StoredKey>, BackendError>> + Send;

    /// In one atomic step: writes `replacement` (a key of the same account), marks the live
    /// key `old` as replaced by it, and brings `old`'s expiration forward to
    /// `old_expires_at` (never back: the earlier of the two stays). `false`, and nothing
    /// written, if `old` is not live or already replaced: of concurrent replacements of
    /// one key, exactly one is written.
    fn replace_key(
        &self,
        old: &KeyId,
        old_expires_at: OffsetDateTime,
        replacement: &StoredKey,
        audit: &AuditEntry,
    ) -> impl Future<Output = Result<bool, BackendError>> + Send;

    /// The account's audit entries with an id before `before` (all if `None`), newest
    /// (greatest id) first, at most `limit`.
    fn audit(
        &self,
        account: &AccountId,
        before: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<AuditEntry>, BackendError>> + Send;

    /// Deletes the audit entries made before `before`; how many.
    fn prune_audit(
        &self,
        before: OffsetDateTime,
    ) -> impl Future<Output = Result<u64, BackendError>> + Send;

    /// When each key of `account` last used each permission it used: the
    /// [`last_used_at`](UsageReport::last_used_at) of the latest report that had the
    /// permission among its [`permissions_used`](UsageReport::permissions_used). A
    /// permission the store's profile no longer has is left out.
    fn permissions_last_used(
        &self,
        account: &AccountId,
    ) -> impl Future<Output = Result<Vec<(KeyId, Permission, OffsetDateTime)>, BackendError>> + Send;

    /// The buckets of `granularity` of every key of `account` that start in
    /// `[from, to)`, each with its key (the hints read the last hours of a whole list of
    /// keys with it).
    fn account_usage(
        &self,
        account: &AccountId,
        granularity: Granularity,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> impl Future<Output = Result<Vec<(KeyId, UsageBucket)>, BackendError>> + Send;

    /// `key`'s buckets of `granularity` that start in `[from, to)`, oldest first, as
    /// [`record_usage`](KeyStore::record_usage) added them up; a period with no request
    /// may be left out. Hourly buckets are kept at least 35 days, daily ones at least 400.
    fn usage(
        &self,
        key: &KeyId,
        granularity: Granularity,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> impl Future<Output = Result<Vec<UsageBucket>, BackendError>> + Send;
}

/// The outbox of a store that keeps [events](crate::events): what the
/// [`EventDispatcher`](crate::events::EventDispatcher) reads and settles.
///
/// A store that implements it writes, in the same transaction as each audit entry of a
/// [`KeyStorage`] call, the entry's event ([`Event::of`]) when it has one: a change is
/// never kept without its event, nor an event without its change. Events are kept in the
/// order they are written (`seq`), each with its delivery state.
///
/// Run `testing::outbox_conformance` (feature `testing`) on a store of your own to check
/// that it keeps this contract.
pub trait EventOutbox: KeyStorage {
    /// Writes an event the sweep found, unless an event with the same `once` mark was
    /// written before (a mark is kept as long as its event); whether it wrote it.
    fn add_event(
        &self,
        event: &Event,
        once: &str,
    ) -> impl Future<Output = Result<bool, BackendError>> + Send;

    /// Claims at most `limit` events for delivery, oldest first, and keeps others from
    /// claiming them until `lease_until`. An event is claimable when it is unfinished, due
    /// at `now`, not claimed by a lease that runs past `now`, and the oldest unfinished
    /// event of its [subject](Event::subject): a key's events are delivered in order,
    /// one at a time, however many dispatchers share the outbox.
    fn claim_events(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<PendingEvent>, BackendError>> + Send;

    /// Records what became of an attempt to deliver the event at `seq`, and ends its lease.
    fn settle_event(
        &self,
        seq: i64,
        settlement: Settlement,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Deletes the events finished before `before`; how many.
    fn prune_events(
        &self,
        before: OffsetDateTime,
    ) -> impl Future<Output = Result<u64, BackendError>> + Send;

    /// The accounts with a live key last used at `since` or later, each once.
    fn accounts_used_since(
        &self,
        since: OffsetDateTime,
    ) -> impl Future<Output = Result<Vec<AccountId>, BackendError>> + Send;

    /// The live keys of every account that expire in `[from, to]`.
    fn keys_expiring(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> impl Future<Output = Result<Vec<StoredKey>, BackendError>> + Send;
}
