//! Key management, as "Settings → API Keys" describes it: accounts with a plan; keys
//! created with a name, permissions and an expiration, listed, rotated and deleted.
//!
//! [`KeyManager`] holds every rule of management, once, over any
//! [`KeyStorage`](crate::store::KeyStorage): what a name may be, which expirations are
//! valid, which plans may have keys, what a rotation makes, and the order errors are
//! checked in (unknown ids, then input, then plan). Storage only keeps what it is given,
//! so every store refuses the same input the same way.
//!
//! ```
//! use nouvel_auth::{nouvel, KeyManager, KeySpec, MemoryKeyStore};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let keys = KeyManager::new(MemoryKeyStore::new());
//! let account = keys.create_account("Acme", nouvel::SCALE).await.unwrap();
//! let spec = KeySpec::new("Production Server", [nouvel::GENERATE, nouvel::PROJECTS_READ]);
//! let created = keys.create_key(&account.id, spec).await.unwrap();
//! // The plaintext is shown once, here.
//! assert!(created.key.expose_secret().starts_with("nvl_"));
//!
//! let listed = keys.keys(&account.id).await.unwrap();
//! assert_eq!(listed[0].name, "Production Server");
//! assert_eq!(listed[0].prefix, created.key.display_prefix());
//! # });
//! ```

use std::{fmt, sync::Arc, time::Duration};

use serde::Serialize;
use time::OffsetDateTime;

use crate::{
    clock::SharedClock, key::random_id, store::StoredKey, AccountId, ApiKey, BackendError, Clock,
    Expiration, KeyId, KeyStorage, Permission, PermissionSet, Permissions, Plan, RateLimit,
    SystemClock, Usage, Vocabulary,
};

/// An account: it owns keys and has a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Account {
    /// Its id.
    pub id: AccountId,
    /// Its name.
    pub name: String,
    /// Its plan.
    pub plan: Plan,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// Whether a listed key still works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    /// It works.
    Active,
    /// Past its expiration.
    Expired,
}

/// A key as its owner sees it: never the secret, never the digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    /// Its id.
    pub id: KeyId,
    /// Its name.
    pub name: String,
    /// The key prefix and the next four characters (`nvl_AbCd`), to tell keys apart.
    pub prefix: String,
    /// What it may do.
    pub permissions: Permissions,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The last request that reached the service with it (at most one flush interval stale).
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    /// When it stops working; `None` for never.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Active or expired, now.
    pub status: KeyStatus,
    /// Its requests, by outcome.
    pub usage: Usage,
}

impl KeyInfo {
    /// The key as its owner sees it at `now`.
    fn new(key: StoredKey, now: OffsetDateTime) -> Self {
        let status = match key.expires_at {
            Some(at) if at <= now => KeyStatus::Expired,
            _ => KeyStatus::Active,
        };
        Self {
            id: key.id,
            name: key.name,
            prefix: key.prefix,
            permissions: key.permissions,
            created_at: key.created_at,
            last_used_at: key.last_used_at,
            expires_at: key.expires_at,
            status,
            usage: key.usage,
        }
    }
}

/// A freshly made key: the only time its plaintext is shown.
#[derive(Debug, Clone, Serialize)]
pub struct NewKey {
    /// The key as it will be listed.
    #[serde(flatten)]
    pub info: KeyInfo,
    /// The plaintext. Give it to the owner once; it cannot be shown again.
    #[serde(serialize_with = "serialize_secret")]
    pub key: ApiKey,
}

fn serialize_secret<S: serde::Serializer>(key: &ApiKey, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(key.expose_secret())
}

/// What a new key should be: a name, permissions, an expiration and an optional limit.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeySpec {
    /// 1 to 100 characters once trimmed.
    pub name: String,
    /// At least one.
    pub permissions: Permissions,
    /// Default `90d`.
    pub expiration: Expiration,
    /// A limit for this key instead of the layer's default.
    pub rate_limit: Option<RateLimit>,
}

impl KeySpec {
    /// A key named `name` with `permissions`, expiring in 90 days, at the default limit.
    pub fn new(name: impl Into<String>, permissions: impl IntoIterator<Item = Permission>) -> Self {
        Self {
            name: name.into(),
            permissions: permissions.into_iter().collect(),
            expiration: Expiration::default(),
            rate_limit: None,
        }
    }

    /// Sets the expiration.
    #[must_use]
    pub fn expiration(mut self, expiration: Expiration) -> Self {
        self.expiration = expiration;
        self
    }

    /// Sets a per-key limit.
    #[must_use]
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// The trimmed name and the expiration instant at `now`, or every field error at once.
    fn validate(
        &self,
        set: &'static PermissionSet,
        now: OffsetDateTime,
    ) -> Result<(String, Option<OffsetDateTime>), ManageError> {
        let mut errors = Vec::new();
        let name = valid_name(&self.name).map_err(|e| errors.push(e)).ok();
        if self.permissions.is_empty() {
            errors.push(FieldError::new(
                "permissions",
                "at least one permission is required",
            ));
        }
        for foreign in self
            .permissions
            .iter()
            .filter(|&p| set.parse(p.as_str()) != Ok(p))
        {
            errors.push(FieldError::new(
                "permissions",
                format!("'{foreign}' is not a permission of this application"),
            ));
        }
        let expires_at = self
            .expiration
            .expires_at(now)
            .map_err(|e| errors.push(FieldError::new("expiration", e.to_string())))
            .ok();
        match (name, expires_at) {
            (Some(name), Some(expires_at)) if errors.is_empty() => Ok((name, expires_at)),
            _ => Err(ManageError::Invalid(errors)),
        }
    }
}

/// Trims `name` and checks that 1 to 100 characters remain (account and key names alike).
fn valid_name(name: &str) -> Result<String, FieldError> {
    let trimmed = name.trim();
    match trimmed.chars().count() {
        0 => Err(FieldError::new("name", "must not be empty")),
        1..=100 => Ok(trimmed.to_owned()),
        _ => Err(FieldError::new("name", "must be at most 100 characters")),
    }
}

/// The longest rotation grace: a year.
const MAX_GRACE: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// One field of a request that cannot be accepted, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field's name in the admin API.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FieldError {
    /// An error on `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Why a management call failed. Nothing is half-made on any of them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManageError {
    /// No such account, or no such key in that account (404).
    #[error("not found")]
    NotFound,
    /// Invalid input (422), every field error at once.
    #[error("invalid request: {}", .0.iter().map(|e| format!("{}: {}", e.field, e.reason)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// The account's plan has no API keys (402); `required` lists the plans that have.
    #[error("the account's plan, {plan}, has no API keys")]
    PlanRequired {
        /// The account's plan.
        plan: Plan,
        /// The plans with API keys.
        required: Vec<Plan>,
    },
    /// The storage failed (503).
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Every rule of key management, over any [`KeyStorage`].
///
/// Each call checks, in this order: unknown ids ([`NotFound`](ManageError::NotFound)),
/// input ([`Invalid`](ManageError::Invalid), every field at once), plan
/// ([`PlanRequired`](ManageError::PlanRequired)); only then does it write, in one storage
/// call. Clones share the storage.
pub struct KeyManager<S> {
    storage: Arc<S>,
    clock: SharedClock,
    pub(crate) vocabulary: Vocabulary,
}

impl<S> Clone for KeyManager<S> {
    fn clone(&self) -> Self {
        Self {
            storage: self.storage.clone(),
            clock: self.clock.clone(),
            vocabulary: self.vocabulary.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for KeyManager<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyManager")
            .field("storage", &self.storage)
            .finish_non_exhaustive()
    }
}

impl<S: KeyStorage> KeyManager<S> {
    /// A manager over `storage`, on the system clock, with Nouvel's vocabulary.
    pub fn new(storage: S) -> Self {
        Self {
            storage: Arc::new(storage),
            clock: Arc::new(SystemClock),
            vocabulary: Vocabulary::nouvel(),
        }
    }

    /// Makes keys with the prefix of `vocabulary`, and takes only its permissions and plans
    /// (default Nouvel's). Give the layer the same one.
    #[must_use]
    pub fn vocabulary(mut self, vocabulary: Vocabulary) -> Self {
        self.vocabulary = vocabulary;
        self
    }

    /// Reads creation and expiry times from `clock`.
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The storage it manages.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// Creates an account.
    pub async fn create_account(&self, name: &str, plan: Plan) -> Result<Account, ManageError> {
        let mut errors = Vec::new();
        let name = valid_name(name).map_err(|e| errors.push(e)).ok();
        let plan = self.known_plan(&plan).map_err(|e| errors.push(e)).ok();
        let (Some(name), Some(plan)) = (name, plan) else {
            return Err(ManageError::Invalid(errors));
        };
        let account = Account {
            id: random_id("acc_").into(),
            name,
            plan,
            created_at: self.clock.now(),
        };
        self.storage.insert_account(&account).await?;
        Ok(account)
    }

    /// Reads an account.
    pub async fn account(&self, id: &AccountId) -> Result<Account, ManageError> {
        self.storage.account(id).await?.ok_or(ManageError::NotFound)
    }

    /// Changes an account's plan. Its keys follow from the next request on.
    pub async fn set_plan(&self, id: &AccountId, plan: Plan) -> Result<Account, ManageError> {
        self.set_plan_parsed(id, Ok::<_, ManageError>(plan)).await
    }

    /// Makes a key. The plaintext is in the result and nowhere else, ever.
    pub async fn create_key(
        &self,
        account: &AccountId,
        spec: KeySpec,
    ) -> Result<NewKey, ManageError> {
        self.create_key_parsed(account, Ok::<_, ManageError>(spec))
            .await
    }

    /// The account's keys, newest first; deleted keys are left out.
    pub async fn keys(&self, account: &AccountId) -> Result<Vec<KeyInfo>, ManageError> {
        self.account(account).await?;
        let now = self.clock.now();
        let mut keys = self.storage.keys(account).await?;
        // Newest first; keys made in one instant by id, so the order is stable.
        keys.sort_unstable_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        Ok(keys.into_iter().map(|key| KeyInfo::new(key, now)).collect())
    }

    /// One key of the account.
    pub async fn key(&self, account: &AccountId, key: &KeyId) -> Result<KeyInfo, ManageError> {
        let stored = self.stored_key(account, key).await?;
        Ok(KeyInfo::new(stored, self.clock.now()))
    }

    /// Deletes a key: it answers 401 from the next request on.
    pub async fn delete_key(&self, account: &AccountId, key: &KeyId) -> Result<(), ManageError> {
        match self.storage.delete_key(account, key).await? {
            true => Ok(()),
            false => Err(ManageError::NotFound),
        }
    }

    /// Replaces a key: a new key with the same name, permissions, expiration option and
    /// limit; the old one keeps working for `grace` (zero: it stops now; at most a year),
    /// then answers 401 `expired_api_key`. Its expiration becomes the end of the grace,
    /// unless it expires sooner anyway.
    pub async fn rotate_key(
        &self,
        account: &AccountId,
        key: &KeyId,
        grace: Duration,
    ) -> Result<NewKey, ManageError> {
        self.rotate_key_parsed(account, key, Ok::<_, ManageError>(grace))
            .await
    }

    /// [`set_plan`](Self::set_plan) with a plan that may have failed to parse: the
    /// routers hand their body over as it came, so the order of errors is kept here alone.
    pub(crate) async fn set_plan_parsed<E: From<ManageError>>(
        &self,
        id: &AccountId,
        plan: Result<Plan, E>,
    ) -> Result<Account, E> {
        self.account(id).await?;
        let plan = self
            .known_plan(&plan?)
            .map_err(|e| ManageError::Invalid(vec![e]))?;
        let account = self
            .storage
            .set_plan(id, plan)
            .await
            .map_err(ManageError::from)?;
        Ok(account.ok_or(ManageError::NotFound)?)
    }

    /// [`create_key`](Self::create_key) with a spec that may have failed to parse.
    pub(crate) async fn create_key_parsed<E: From<ManageError>>(
        &self,
        account: &AccountId,
        spec: Result<KeySpec, E>,
    ) -> Result<NewKey, E> {
        let account = self.account(account).await?;
        let spec = spec?;
        let now = self.clock.now();
        let (key, stored) = self.make_key(&account, &spec, now)?;
        self.storage
            .insert_key(&stored)
            .await
            .map_err(ManageError::from)?;
        Ok(NewKey {
            info: KeyInfo::new(stored, now),
            key,
        })
    }

    /// [`rotate_key`](Self::rotate_key) with a grace that may have failed to parse.
    pub(crate) async fn rotate_key_parsed<E: From<ManageError>>(
        &self,
        account: &AccountId,
        key: &KeyId,
        grace: Result<Duration, E>,
    ) -> Result<NewKey, E> {
        let old = self.stored_key(account, key).await?;
        let grace = grace?;
        if grace > MAX_GRACE {
            return Err(ManageError::Invalid(vec![FieldError::new(
                "grace_seconds",
                format!("must be at most {} (one year)", MAX_GRACE.as_secs()),
            )])
            .into());
        }
        let account = self.account(account).await?;
        let now = self.clock.now();
        let spec = KeySpec {
            name: old.name,
            permissions: old.permissions,
            expiration: old.expiration,
            rate_limit: old.rate_limit,
        };
        let (key, stored) = self.make_key(&account, &spec, now)?;
        let replaced = self
            .storage
            .replace_key(&old.id, now + grace, &stored)
            .await
            .map_err(ManageError::from)?;
        if !replaced {
            return Err(ManageError::NotFound.into());
        }
        Ok(NewKey {
            info: KeyInfo::new(stored, now),
            key,
        })
    }

    fn known_plan(&self, plan: &Plan) -> Result<Plan, FieldError> {
        self.vocabulary
            .plans()
            .parse(plan.as_str())
            .map_err(|e| FieldError::new("plan", e.to_string()))
    }

    async fn stored_key(&self, account: &AccountId, key: &KeyId) -> Result<StoredKey, ManageError> {
        self.storage
            .key(account, key)
            .await?
            .ok_or(ManageError::NotFound)
    }

    /// A new key for `account` from `spec`, checked at `now`: input first, then the plan.
    fn make_key(
        &self,
        account: &Account,
        spec: &KeySpec,
        now: OffsetDateTime,
    ) -> Result<(ApiKey, StoredKey), ManageError> {
        let (name, expires_at) = spec.validate(self.vocabulary.permissions(), now)?;
        if !self.vocabulary.plans().allows_api_keys(&account.plan) {
            return Err(ManageError::PlanRequired {
                plan: account.plan.clone(),
                required: self
                    .vocabulary
                    .plans()
                    .with_api_keys()
                    .unwrap_or_default()
                    .to_vec(),
            });
        }
        let key = self.vocabulary.prefix().generate();
        let stored = StoredKey {
            id: random_id("key_").into(),
            account_id: account.id.clone(),
            name,
            prefix: key.display_prefix().to_owned(),
            digest: self.storage.digest(&key),
            permissions: spec.permissions,
            expiration: spec.expiration,
            rate_limit: spec.rate_limit,
            created_at: now,
            expires_at,
            last_used_at: None,
            usage: Usage::default(),
        };
        Ok((key, stored))
    }
}
