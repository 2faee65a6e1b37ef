//! Key management, as "Settings → API Keys" describes it: accounts with a plan; keys
//! created with a name, permissions and an expiration, listed, rotated and deleted. The
//! [`KeyManager`](crate::KeyManager) is at the crate root; here are what it answers.
//!
//! [`KeyManager`](crate::KeyManager) holds every rule of management, once, over any
//! [`KeyStorage`](crate::KeyStorage): what a name may be, which expirations are
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

pub(crate) mod audit;
mod hints;
pub(crate) mod manager;

pub use audit::{
    Actor, ActorKind, AuditAction, AuditEntry, AuditPage, UnknownAuditName, AUDIT_RETENTION,
};

use serde::Serialize;
use time::OffsetDateTime;

pub use crate::usage::{Granularity, RejectionCounts, Usage, UsageBucket};
use crate::{
    network::Networks, AccountId, ApiKey, Environment, KeyId, Permission, Permissions, Plan,
    RateLimit, StoredKey,
};
pub use hints::{Hint, HintCode};
pub use manager::Rotation;

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
    /// Switched off (whether or not it has expired too; enabled, an expired key is expired).
    Disabled,
}

/// A page of an account's keys, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyPage {
    /// At most the page's limit of keys.
    pub keys: Vec<KeyInfo>,
    /// The cursor of the next (older) page, `None` on the last.
    pub next: Option<String>,
}

/// A key's usage over a range, bucket by bucket: every period in `[from, to)` in time
/// order, the ones with no request as zeros.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyUsage {
    /// The key.
    pub key_id: KeyId,
    /// The buckets' length.
    pub granularity: Granularity,
    /// The first bucket's start.
    #[serde(with = "time::serde::rfc3339")]
    pub from: OffsetDateTime,
    /// The end of the last bucket.
    #[serde(with = "time::serde::rfc3339")]
    pub to: OffsetDateTime,
    /// The buckets, oldest first.
    pub buckets: Vec<UsageBucket>,
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
    /// Active, expired or disabled, now.
    pub status: KeyStatus,
    /// The environment it is for, if its owner named one.
    pub environment: Option<Environment>,
    /// Its replacement, once it has been rotated (it cannot be rotated again).
    pub replaced_by: Option<KeyId>,
    /// The networks it may be used from; `None` for anywhere.
    pub allowed_networks: Option<Networks>,
    /// Where a secret scanner found it in public, if one did (such a key is disabled,
    /// unless the application only reports them).
    pub exposure: Option<Exposure>,
    /// The limits its requests are held to (its own, or its plan's), each calendar quota
    /// with how much of its period is used.
    pub rate_limits: Vec<LimitInfo>,
    /// The first sliding window of [`rate_limits`](Self::rate_limits), if it has one.
    pub rate_limit: Option<RateLimit>,
    /// Its requests, by outcome.
    pub usage: Usage,
    /// When each of its permissions was last used (by an admitted request whose route
    /// needed it), in the order of its permissions; `None` for never.
    #[serde(serialize_with = "serialize_last_used")]
    pub permissions_last_used: Vec<(Permission, Option<OffsetDateTime>)>,
    /// What its owner should look at now (empty when nothing).
    pub hints: Vec<Hint>,
}

/// `{"<permission>": <RFC 3339> | null, …}`.
fn serialize_last_used<S: serde::Serializer>(
    used: &[(Permission, Option<OffsetDateTime>)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::{Error, SerializeMap};
    let mut map = serializer.serialize_map(Some(used.len()))?;
    for (permission, at) in used {
        let at = at
            .map(|at| at.format(&time::format_description::well_known::Rfc3339))
            .transpose()
            .map_err(S::Error::custom)?;
        map.serialize_entry(permission.as_str(), &at)?;
    }
    map.end()
}

impl KeyInfo {
    /// The key as its owner sees it at `now`, held to `rate_limits`, with `profile`'s hints.
    fn new(
        key: StoredKey,
        profile: &crate::Profile,
        rate_limits: Vec<LimitInfo>,
        now: OffsetDateTime,
        used: &[(Permission, OffsetDateTime)],
        recent: &[UsageBucket],
    ) -> Self {
        let rate_limit = rate_limits
            .iter()
            .map(|info| info.limit)
            .find(|limit| limit.window().is_some());
        let permissions_last_used: Vec<(Permission, Option<OffsetDateTime>)> = key
            .permissions
            .iter()
            .map(|permission| {
                let at = used
                    .iter()
                    .find(|(p, _)| *p == permission)
                    .map(|(_, at)| *at);
                (permission, at)
            })
            .collect();
        let hints = hints::of(&key, profile, now, &permissions_last_used, recent);
        let status = match key.expires_at {
            _ if key.disabled => KeyStatus::Disabled,
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
            environment: key.environment,
            replaced_by: key.replaced_by,
            allowed_networks: key.allowed_networks,
            exposure: key.exposure,
            rate_limits,
            rate_limit,
            usage: key.usage,
            permissions_last_used,
            hints,
        }
    }
}

/// One limit of a key, as Key JSON's `rate_limits` shows it: the limit's members, and for a
/// calendar quota `used` and `resets_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LimitInfo {
    /// The limit.
    #[serde(flatten)]
    pub limit: RateLimit,
    /// For a quota: what its period has used so far, and when it starts again.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaUse>,
}

/// How much of a calendar quota's period is used: the admitted requests the store has
/// recorded in it (at most one usage flush behind the limiter), from every key it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct QuotaUse {
    /// Requests admitted in the current period.
    pub used: u64,
    /// When the period ends and the count starts again.
    #[serde(with = "time::serde::rfc3339")]
    pub resets_at: OffsetDateTime,
}

/// Where a secret scanner found a key in public, and when it was told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exposure {
    /// Where it was found (a commit, a file, a gist), as the scanner gave it.
    pub url: String,
    /// What kind of place (`content`, `commit`, …), as the scanner gave it.
    pub source: String,
    /// When the report came.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
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

/// One field of a request that cannot be accepted, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field: a parameter of the [`KeyManager`](crate::KeyManager) call (`name`,
    /// `plan`, `permissions`, `expiration`, `environment`, `rate_limit`, `grace`, `before`),
    /// or, from the routers, a member of the request's body or query.
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

    /// Adds `more`'s errors on fields `errors` has none on: each field is reported by what
    /// found its errors first.
    pub(crate) fn add(errors: &mut Vec<Self>, more: Vec<Self>) {
        let fresh: Vec<Self> = more
            .into_iter()
            .filter(|e| !errors.iter().any(|found| found.field == e.field))
            .collect();
        errors.extend(fresh);
    }
}
