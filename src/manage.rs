//! Key management, as "Settings → API Keys" describes it: accounts with a plan; keys
//! created with a name, permissions and an expiration, listed, rotated and deleted.
//!
//! [`KeyManager`] is the management side of a store; [`MemoryKeyStore`](crate::MemoryKeyStore)
//! implements it. Validation lives here, so every store refuses the same input the same way.
//!
//! ```
//! use nouvel_auth::{KeyManager, KeySpec, MemoryKeyStore, Permission, Plan};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let store = MemoryKeyStore::new();
//! let account = store.create_account("Acme", Plan::Scale).await.unwrap();
//! let spec = KeySpec::new("Production Server", [Permission::Generate, Permission::ProjectsRead]);
//! let created = store.create_key(&account.id, spec).await.unwrap();
//! // The plaintext is shown once, here.
//! assert!(created.key.expose_secret().starts_with("nvl_"));
//!
//! let listed = store.keys(&account.id).await.unwrap();
//! assert_eq!(listed[0].name, "Production Server");
//! assert_eq!(listed[0].prefix, created.key.display_prefix());
//! # });
//! ```

use std::{future::Future, time::Duration};

use serde::Serialize;
use time::OffsetDateTime;

use crate::{
    AccountId, ApiKey, BackendError, Expiration, KeyId, Permission, Permissions, Plan, RateLimit,
    Usage,
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
    /// `nvl_` and the next four characters, to tell keys apart.
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
    /// The status of a key that expires at `expires_at`, seen at `now`.
    pub fn status_at(expires_at: Option<OffsetDateTime>, now: OffsetDateTime) -> KeyStatus {
        match expires_at {
            Some(at) if at <= now => KeyStatus::Expired,
            _ => KeyStatus::Active,
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

    /// Checks the spec at `now`: the trimmed name and the expiration instant, or every
    /// field error at once.
    pub fn validate(&self, now: OffsetDateTime) -> Result<ValidKeySpec, ManageError> {
        let mut errors = Vec::new();
        let name = validate_name(&self.name).map_err(|e| errors.push(e)).ok();
        if self.permissions.is_empty() {
            errors.push(FieldError::new(
                "permissions",
                "at least one permission is required",
            ));
        }
        let expires_at = self
            .expiration
            .expires_at(now)
            .map_err(|e| errors.push(FieldError::new("expiration", e.to_string())))
            .ok();
        match (name, expires_at) {
            (Some(name), Some(expires_at)) if errors.is_empty() => {
                Ok(ValidKeySpec { name, expires_at })
            }
            _ => Err(ManageError::Invalid(errors)),
        }
    }
}

/// A [`KeySpec`] that passed [`validate`](KeySpec::validate).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ValidKeySpec {
    /// The trimmed name.
    pub name: String,
    /// The expiration instant.
    pub expires_at: Option<OffsetDateTime>,
}

/// Trims `name` and checks that 1 to 100 characters remain (account and key names alike).
pub fn validate_name(name: &str) -> Result<String, FieldError> {
    let trimmed = name.trim();
    match trimmed.chars().count() {
        0 => Err(FieldError::new("name", "must not be empty")),
        1..=100 => Ok(trimmed.to_owned()),
        _ => Err(FieldError::new("name", "must be at most 100 characters")),
    }
}

/// The longest rotation grace: a year.
pub const MAX_GRACE: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Checks a rotation grace: at most [`MAX_GRACE`].
pub fn validate_grace(grace: Duration) -> Result<(), ManageError> {
    if grace > MAX_GRACE {
        return Err(ManageError::Invalid(vec![FieldError::new(
            "grace_seconds",
            format!("must be at most {} (one year)", MAX_GRACE.as_secs()),
        )]));
    }
    Ok(())
}

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
    /// The account's plan has no API keys (402).
    #[error("API keys need the Scale or Business plan; the account is on {0}")]
    PlanRequired(Plan),
    /// The backing store failed (503).
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// The management side of a key store.
///
/// Calls check, in this order: unknown ids ([`NotFound`](ManageError::NotFound)), input
/// ([`Invalid`](ManageError::Invalid)), plan ([`PlanRequired`](ManageError::PlanRequired)).
pub trait KeyManager: Send + Sync + 'static {
    /// Creates an account.
    fn create_account(
        &self,
        name: &str,
        plan: Plan,
    ) -> impl Future<Output = Result<Account, ManageError>> + Send;

    /// Reads an account.
    fn account(&self, id: &AccountId) -> impl Future<Output = Result<Account, ManageError>> + Send;

    /// Changes an account's plan. Its keys follow from the next request on.
    fn set_plan(
        &self,
        id: &AccountId,
        plan: Plan,
    ) -> impl Future<Output = Result<Account, ManageError>> + Send;

    /// Makes a key. The plaintext is in the result and nowhere else, ever.
    fn create_key(
        &self,
        account: &AccountId,
        spec: KeySpec,
    ) -> impl Future<Output = Result<NewKey, ManageError>> + Send;

    /// The account's keys, newest first; deleted keys are left out.
    fn keys(
        &self,
        account: &AccountId,
    ) -> impl Future<Output = Result<Vec<KeyInfo>, ManageError>> + Send;

    /// One key of the account.
    fn key(
        &self,
        account: &AccountId,
        key: &KeyId,
    ) -> impl Future<Output = Result<KeyInfo, ManageError>> + Send;

    /// Deletes a key: it answers 401 from the next request on.
    fn delete_key(
        &self,
        account: &AccountId,
        key: &KeyId,
    ) -> impl Future<Output = Result<(), ManageError>> + Send;

    /// Replaces a key: a new key with the same name, permissions and expiration option;
    /// the old one keeps working for `grace` (zero: it stops now; at most
    /// [`MAX_GRACE`]), then answers 401 `expired_api_key`. Its expiration becomes the end
    /// of the grace, unless it expires sooner anyway.
    fn rotate_key(
        &self,
        account: &AccountId,
        key: &KeyId,
        grace: Duration,
    ) -> impl Future<Output = Result<NewKey, ManageError>> + Send;
}
