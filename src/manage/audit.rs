//! The audit log: who did what to which key, and when.

use std::{
    fmt,
    str::FromStr,
    sync::atomic::{AtomicU64, Ordering},
};

use serde::Serialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::{key::random_id, AccountId, KeyId};

/// How long entries are kept by default: 400 days.
pub const AUDIT_RETENTION: std::time::Duration = std::time::Duration::from_secs(400 * 86_400);

/// One management action, recorded in the same transaction as the change it describes.
/// It never holds a secret or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// Its id: entries sort by it, newest last (`aud_` and the time in hex first).
    pub id: String,
    /// When the action was taken.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// What was done.
    pub action: AuditAction,
    /// The account it was done to.
    pub account_id: AccountId,
    /// The key it was done to, if a key.
    pub key_id: Option<KeyId>,
    /// Who did it.
    pub actor: Actor,
    /// What else there is to know (`from` and `to` of a plan change, a rotation's
    /// `replacement_id`, a new key's name, permissions and environment).
    pub details: Map<String, Value>,
}

impl AuditEntry {
    /// An entry of `action` on `account` (and `key`) by `actor` at `at`, with no details.
    #[must_use]
    pub fn new(
        action: AuditAction,
        account: &AccountId,
        key: Option<&KeyId>,
        actor: &Actor,
        at: OffsetDateTime,
    ) -> Self {
        Self {
            id: sortable_id("aud_", at),
            at,
            action,
            account_id: account.clone(),
            key_id: key.cloned(),
            actor: actor.clone(),
            details: Map::new(),
        }
    }

    /// Adds `name: value` to the details.
    #[must_use]
    pub fn detail(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.details.insert(name.to_owned(), value.into());
        self
    }
}

/// `prefix`, then the time in hex and eight random characters: ids made later sort after.
pub(crate) fn sortable_id(prefix: &str, at: OffsetDateTime) -> String {
    let random = random_id("");
    format!(
        "{prefix}{:014x}{}",
        stamp(at),
        &random[..8.min(random.len())]
    )
}

/// The microseconds of `at`, made greater than any stamp this process gave before: the ids
/// of entries made in one instant still sort in the order they were made.
fn stamp(at: OffsetDateTime) -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let micros = u64::try_from(crate::clock::micros(at)).unwrap_or(0);
    let previous = LAST
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(micros.max(last + 1))
        })
        .unwrap_or(0);
    micros.max(previous + 1)
}

/// What an [`AuditEntry`] records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuditAction {
    /// `account.created`
    AccountCreated,
    /// `account.plan_changed`, with `from` and `to`.
    PlanChanged,
    /// `key.created`
    KeyCreated,
    /// `key.rotated`, with `replacement_id`.
    KeyRotated,
    /// `key.deleted`
    KeyDeleted,
    /// `key.disabled`
    KeyDisabled,
    /// `key.enabled`
    KeyEnabled,
    /// `key.exposed`: a secret scanner found the key in public, with `url` and `source`.
    KeyExposed,
}

const ACTIONS: [(AuditAction, &str); 8] = [
    (AuditAction::AccountCreated, "account.created"),
    (AuditAction::PlanChanged, "account.plan_changed"),
    (AuditAction::KeyCreated, "key.created"),
    (AuditAction::KeyRotated, "key.rotated"),
    (AuditAction::KeyDeleted, "key.deleted"),
    (AuditAction::KeyDisabled, "key.disabled"),
    (AuditAction::KeyEnabled, "key.enabled"),
    (AuditAction::KeyExposed, "key.exposed"),
];

impl AuditAction {
    /// The wire name (`key.created`, …).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        ACTIONS
            .iter()
            .find(|(action, _)| *action == self)
            .map_or("", |(_, name)| name)
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is no [`AuditAction`] or [`ActorKind`] (read back from a store).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown audit name '{0}'")]
pub struct UnknownAuditName(String);

impl FromStr for AuditAction {
    type Err = UnknownAuditName;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        ACTIONS
            .iter()
            .find(|(_, wire)| *wire == name)
            .map(|(action, _)| *action)
            .ok_or_else(|| UnknownAuditName(name.to_owned()))
    }
}

impl Serialize for AuditAction {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Who took an action: the operator (`admin`), a signed-in user of the application
/// (`user`, with the application's id for them), a secret scanner that reported the key
/// (`scanner`, with its name: `github`), or the crate and the application's own code
/// (`system`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Actor {
    /// Which kind.
    pub kind: ActorKind,
    /// The user's id, for a user.
    pub id: Option<String>,
}

/// The kinds of [`Actor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorKind {
    /// The admin token's holder.
    Admin,
    /// A signed-in user of the application.
    User,
    /// The application's own code, through the library.
    System,
    /// A secret scanner's report.
    Scanner,
}

impl ActorKind {
    /// The wire name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::User => "user",
            Self::System => "system",
            Self::Scanner => "scanner",
        }
    }
}

impl FromStr for ActorKind {
    type Err = UnknownAuditName;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "admin" => Ok(Self::Admin),
            "user" => Ok(Self::User),
            "system" => Ok(Self::System),
            "scanner" => Ok(Self::Scanner),
            _ => Err(UnknownAuditName(name.to_owned())),
        }
    }
}

impl Actor {
    /// The operator.
    #[must_use]
    pub fn admin() -> Self {
        Self {
            kind: ActorKind::Admin,
            id: None,
        }
    }

    /// A signed-in user with the application's `id` for them.
    #[must_use]
    pub fn user(id: impl Into<String>) -> Self {
        Self {
            kind: ActorKind::User,
            id: Some(id.into()),
        }
    }

    /// The application's own code.
    #[must_use]
    pub fn system() -> Self {
        Self {
            kind: ActorKind::System,
            id: None,
        }
    }

    /// The secret scanner named `name` (`github`).
    #[must_use]
    pub fn scanner(name: impl Into<String>) -> Self {
        Self {
            kind: ActorKind::Scanner,
            id: Some(name.into()),
        }
    }
}

/// A page of an account's audit log, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditPage {
    /// At most the page's limit of entries.
    pub entries: Vec<AuditEntry>,
    /// The cursor of the next (older) page, `None` on the last.
    pub next: Option<String>,
}
