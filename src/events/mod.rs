//! What happened to keys, told to the application: lifecycle events, written to an outbox
//! with the change that causes them and delivered at least once, in order per key.
//!
//! * A change made through the [`KeyManager`](crate::KeyManager) (create, rotate, disable,
//!   enable, delete, a leaked-key report) writes its [`Event`] in the same transaction as
//!   the change and its audit entry: a store that keeps an outbox
//!   ([`EventOutbox`](crate::store::EventOutbox)) never has one without the other, so a
//!   crash between the change and the delivery loses nothing.
//! * Time brings the others: `key.expiring` (once per key, within 7 days of its
//!   expiration), `key.expired` (once), and `quota.threshold` (once per quota period at
//!   80 % and at 100 % of a calendar quota), found by the dispatcher's sweep.
//! * An [`EventDispatcher`] runs in the background: it claims the events that are due
//!   (the oldest unfinished one of each key, so a key's events arrive in order), hands each
//!   to every [`EventSink`] (the application's own, and the Standard Webhooks sender
//!   `WebhookSender`, feature `webhooks`), and retries a failed one with exponential
//!   backoff for 24 hours. Dispatchers of several instances on one PostgreSQL database
//!   share the work: each event is claimed by one of them at a time.
//!
//! ```
//! use nouvel_auth::{
//!     events::{Event, EventDispatcher, EventKind, EventSink, SinkError},
//!     nouvel, KeyManager, KeySpec, MemoryKeyStore,
//! };
//! use std::sync::{Arc, Mutex};
//!
//! /// Collects what it is told (an application would send its owners an e-mail).
//! #[derive(Clone, Default)]
//! struct Told(Arc<Mutex<Vec<Event>>>);
//!
//! impl EventSink for Told {
//!     async fn deliver(&self, event: &Event) -> Result<(), SinkError> {
//!         self.0.lock().unwrap().push(event.clone());
//!         Ok(())
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let store = MemoryKeyStore::new();
//! let keys = KeyManager::new(store.clone());
//! let told = Told::default();
//! let dispatcher = EventDispatcher::new(keys.clone()).sink(told.clone());
//!
//! let account = keys.create_account("Acme", nouvel::SCALE).await.unwrap();
//! let created = keys.create_key(&account.id, KeySpec::new("CI", [nouvel::PUBLISH])).await.unwrap();
//! keys.disable_key(&account.id, &created.info.id).await.unwrap();
//!
//! // The background task does this every second; here, once.
//! assert_eq!(dispatcher.run_once().await.unwrap(), 1);
//! assert_eq!(dispatcher.run_once().await.unwrap(), 1);
//! let told = told.0.lock().unwrap();
//! assert_eq!(told[0].kind, EventKind::KeyCreated);
//! assert_eq!(told[1].kind, EventKind::KeyDisabled);
//! assert_eq!(told[1].key_id.as_ref(), Some(&created.info.id));
//! # });
//! ```

mod dispatch;
mod sweep;
#[cfg(feature = "webhooks")]
mod webhook;

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::{
    manage::{audit::sortable_id, AuditAction, AuditEntry},
    AccountId, KeyId,
};
pub use dispatch::{EventDispatcher, EventSink, SinkError, RETRY_FOR};
pub use sweep::EXPIRING_WITHIN;
#[cfg(feature = "webhooks")]
#[cfg_attr(docsrs, doc(cfg(feature = "webhooks")))]
pub use webhook::{InvalidWebhook, WebhookSecret, WebhookSender};

/// Something that happened to a key, as sinks and webhooks receive it:
/// `{"id", "type", "at", "account_id", "key_id", "data"}`. It never holds a secret or a
/// digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Event {
    /// Its id (`evt_…`): the same on every delivery of it, so a receiver can drop repeats.
    pub id: String,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// When it happened.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The account of the key.
    pub account_id: AccountId,
    /// The key.
    pub key_id: Option<KeyId>,
    /// What else there is to know: a new key's `name`, `permissions` and `environment`; a
    /// rotation's `replacement_id`; an exposure's `url` and `source`; an expiration's
    /// `expires_at`.
    pub data: Map<String, Value>,
}

impl Event {
    /// A new event of `kind` about `key` of `account`, at `at`, with no data.
    #[must_use]
    pub fn new(
        kind: EventKind,
        account: &AccountId,
        key: Option<&KeyId>,
        at: OffsetDateTime,
    ) -> Self {
        Self {
            id: sortable_id("evt_", at),
            kind,
            at,
            account_id: account.clone(),
            key_id: key.cloned(),
            data: Map::new(),
        }
    }

    /// The event a management action causes, if it causes one: the key actions do,
    /// account actions do not. Its id follows the audit entry's, so the two are found
    /// together.
    #[must_use]
    pub fn of(entry: &AuditEntry) -> Option<Self> {
        let kind = match entry.action {
            AuditAction::KeyCreated => EventKind::KeyCreated,
            AuditAction::KeyRotated => EventKind::KeyRotated,
            AuditAction::KeyDisabled => EventKind::KeyDisabled,
            AuditAction::KeyEnabled => EventKind::KeyEnabled,
            AuditAction::KeyDeleted => EventKind::KeyDeleted,
            AuditAction::KeyExposed => EventKind::KeyExposed,
            AuditAction::AccountCreated | AuditAction::PlanChanged => return None,
        };
        Some(Self {
            id: format!("evt_{}", entry.id.strip_prefix("aud_").unwrap_or(&entry.id)),
            kind,
            at: entry.at,
            account_id: entry.account_id.clone(),
            key_id: entry.key_id.clone(),
            data: entry.details.clone(),
        })
    }

    /// Adds `name: value` to the data.
    #[must_use]
    pub fn data(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.data.insert(name.to_owned(), value.into());
        self
    }

    /// What the events of one key are ordered by: the key's id (the account's for an event
    /// of no key).
    #[must_use]
    pub fn subject(&self) -> &str {
        self.key_id
            .as_ref()
            .map_or(self.account_id.as_str(), KeyId::as_str)
    }

    /// The event as sinks and webhooks receive it, in JSON.
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

macro_rules! event_kinds {
    ($($kind:ident = $name:literal: $doc:literal,)*) => {
        /// What an [`Event`] tells.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[non_exhaustive]
        pub enum EventKind {
            $(#[doc = concat!("`", $name, "`: ", $doc)] #[serde(rename = $name)] $kind,)*
        }

        impl EventKind {
            /// The wire name (`key.created`, …).
            #[must_use]
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$kind => $name,)*
                }
            }
        }
    };
}

event_kinds! {
    KeyCreated = "key.created": "a key was made (a rotation's replacement is told by `key.rotated`).",
    KeyRotated = "key.rotated": "the key was replaced by `data.replacement_id`.",
    KeyDisabled = "key.disabled": "the key was switched off.",
    KeyEnabled = "key.enabled": "the key was switched on again.",
    KeyDeleted = "key.deleted": "the key was deleted.",
    KeyExposed = "key.exposed": "a secret scanner found the key at `data.url` (`data.source`).",
    KeyExpiring = "key.expiring": "the key expires within 7 days, at `data.expires_at`.",
    KeyExpired = "key.expired": "the key expired at `data.expires_at`.",
    QuotaThreshold = "quota.threshold": "a calendar quota's period has used `data.threshold` percent of it (80, then 100): `data` is the quota as Key JSON shows it (`requests`, `period`, `scope`, `used`, `resets_at`); `key_id` is `null` for a quota per account.",
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event waiting in an outbox, as [`EventOutbox::claim_events`](crate::store::EventOutbox::claim_events)
/// hands it to the dispatcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEvent {
    /// Its place in the outbox: events are written, and a key's are delivered, in this order.
    pub seq: i64,
    /// The event.
    pub event: Event,
    /// How many attempts failed so far.
    pub attempts: u32,
    /// The sinks that took it already (bit `i` for the dispatcher's sink `i`).
    pub delivered_to: u32,
}

/// What became of an attempt to deliver a [`PendingEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Every sink took it: finished.
    Delivered,
    /// Some sink did not: try again at `at`, for the sinks not in `delivered_to`.
    Retry {
        /// When the next attempt is due.
        at: OffsetDateTime,
        /// Failed attempts so far.
        attempts: u32,
        /// The sinks that took it.
        delivered_to: u32,
    },
    /// Retried for [`RETRY_FOR`] and still not taken: finished, undelivered; the key's later
    /// events go on.
    Abandoned,
}
