//! Where keys live: the [`KeyStore`] trait the layer reads through, and [`KeyRecord`].
//!
//! A store keeps only [`KeyDigest`]s, never keys. The layer asks it for the digest of a
//! presented key ([`KeyStore::digest`]), looks the digest up, and reports usage in batches.
//!
//! The layer uses the store generically (`NouvelAuthLayer<K: KeyStore>`), not as a trait
//! object: a lookup costs no allocation and no virtual call, and a custom store is just a
//! type with two `async fn`s. See `examples/custom_store.rs`.

#[cfg(feature = "cache")]
mod cached;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;

use std::{fmt, future::Future};

use time::OffsetDateTime;

#[cfg(feature = "cache")]
pub use cached::CachedKeyStore;
pub use memory::MemoryKeyStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresKeyStore;

use crate::{
    limit::RateLimit, usage::UsageReport, AccountId, ApiKey, BackendError, KeyDigest, KeyId,
    Permissions, Plan,
};

/// What the layer needs to know about a live key. Handlers find it in the request's
/// extensions (`Extension<KeyRecord>` in axum) once the layer has admitted the request.
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
    /// A limit for this key instead of the layer's default.
    pub rate_limit: Option<RateLimit>,
}

impl KeyRecord {
    /// A record that never expires and uses the layer's default limit.
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
            rate_limit: None,
        }
    }

    /// Sets when the key expires.
    #[must_use]
    pub fn expires_at(mut self, at: Option<OffsetDateTime>) -> Self {
        self.expires_at = at;
        self
    }

    /// Overrides the layer's default limit for this key.
    #[must_use]
    pub fn rate_limit(mut self, limit: Option<RateLimit>) -> Self {
        self.rate_limit = limit;
        self
    }

    /// Whether the key has expired at `now` (an expiration instant is already expired).
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// The read path of a key store: look a digest up, take usage reports.
///
/// Implement it to back keys with your own database. Return only live keys from
/// [`lookup`](Self::lookup): unknown, deleted and revoked keys are all `Ok(None)`, so they
/// get one and the same 401. Expiry is checked by the layer, so an expired key may be
/// returned (and gets 401 `expired_api_key`). Return `Err` when the backend fails; the
/// layer answers 503, never 401, so an outage never looks like a bad key.
///
/// ```
/// use nouvel_auth::{BackendError, KeyDigest, KeyRecord, KeyStore, UsageReport};
/// use time::OffsetDateTime;
///
/// struct NoKeys;
///
/// impl KeyStore for NoKeys {
///     async fn lookup(
///         &self,
///         _digest: &KeyDigest,
///         _now: OffsetDateTime,
///     ) -> Result<Option<KeyRecord>, BackendError> {
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
    /// uses a pepper ([`KeyHasher`](crate::KeyHasher)).
    fn digest(&self, key: &ApiKey) -> KeyDigest {
        key.digest()
    }

    /// The live key with this digest, if any.
    ///
    /// `now` is the instant the layer judges the request at, read once from its clock: a
    /// store that caches judges freshness by it instead of reading a clock of its own.
    fn lookup(
        &self,
        digest: &KeyDigest,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Option<KeyRecord>, BackendError>> + Send;

    /// What [`lookup`](Self::lookup) would answer, if the store knows it without waiting
    /// (a store in memory, a warm cache); `None` (the default) sends the layer to `lookup`.
    ///
    /// The layer asks this first, in its `call`: an answer here lets it check the request
    /// and call the inner service at once, with no allocation. It must have no side effects
    /// the layer could repeat, since a `None` is followed by `lookup`.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use nouvel_auth::{ApiKey, BackendError, KeyDigest, KeyRecord, KeyStore, UsageReport};
    /// use time::OffsetDateTime;
    ///
    /// /// Keys loaded at start-up: every answer is at hand.
    /// struct Preloaded(HashMap<KeyDigest, KeyRecord>);
    ///
    /// impl KeyStore for Preloaded {
    ///     async fn lookup(
    ///         &self,
    ///         digest: &KeyDigest,
    ///         now: OffsetDateTime,
    ///     ) -> Result<Option<KeyRecord>, BackendError> {
    ///         Ok(self.lookup_now(digest, now).flatten())
    ///     }
    ///
    ///     fn lookup_now(&self, digest: &KeyDigest, _now: OffsetDateTime) -> Option<Option<KeyRecord>> {
    ///         Some(self.0.get(digest).cloned())
    ///     }
    ///
    ///     async fn record_usage(&self, _reports: &[UsageReport]) -> Result<(), BackendError> {
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let store = Preloaded(HashMap::new());
    /// let unknown = ApiKey::generate().digest();
    /// assert_eq!(store.lookup_now(&unknown, OffsetDateTime::now_utc()), Some(None));
    /// ```
    fn lookup_now(&self, digest: &KeyDigest, now: OffsetDateTime) -> Option<Option<KeyRecord>> {
        let _ = (digest, now);
        None
    }

    /// Adds a batch of usage (admitted and rejected requests, last-used times) to the
    /// keys' totals. The layer calls it once per flush interval, not once per request.
    fn record_usage(
        &self,
        reports: &[UsageReport],
    ) -> impl Future<Output = Result<(), BackendError>> + Send;
}

/// A shared store: several layers (or the admin API) can hold one.
impl<K: KeyStore> KeyStore for std::sync::Arc<K> {
    fn digest(&self, key: &ApiKey) -> KeyDigest {
        (**self).digest(key)
    }

    fn lookup(
        &self,
        digest: &KeyDigest,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Option<KeyRecord>, BackendError>> + Send {
        (**self).lookup(digest, now)
    }

    fn lookup_now(&self, digest: &KeyDigest, now: OffsetDateTime) -> Option<Option<KeyRecord>> {
        (**self).lookup_now(digest, now)
    }

    fn record_usage(
        &self,
        reports: &[UsageReport],
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        (**self).record_usage(reports)
    }
}

/// A change that makes cached lookups stale: what stores announce and caches act on.
///
/// Its text form (`k:<key id>`, `a:<account id>`, `*`) travels between instances, for
/// example as a PostgreSQL `NOTIFY` payload. New keys need none: a key cannot have been
/// looked up (and cached as unknown) before it was made, short of guessing 131 bits.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Invalidation {
    /// The key with this id was deleted, revoked or rotated.
    Key(KeyId),
    /// The account's plan changed: all its keys.
    Account(AccountId),
    /// Anything may have changed (for example, notifications were missed).
    All,
}

impl Invalidation {
    /// Reads the text form; `None` if it is not one.
    pub fn parse(text: &str) -> Option<Self> {
        if text == "*" {
            return Some(Self::All);
        }
        let (kind, value) = text.split_once(':')?;
        match kind {
            "k" => Some(Self::Key(value.into())),
            "a" => Some(Self::Account(value.into())),
            _ => None,
        }
    }
}

impl fmt::Display for Invalidation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Key(id) => write!(f, "k:{id}"),
            Self::Account(id) => write!(f, "a:{id}"),
            Self::All => f.write_str("*"),
        }
    }
}
