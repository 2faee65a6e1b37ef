//! Where keys live. What a store must do is two traits at the crate root:
//! [`KeyStore`](crate::KeyStore), the lookups the layer makes (and usage reports), and
//! [`KeyStorage`](crate::KeyStorage), the accounts and keys the
//! [`KeyManager`](crate::KeyManager) reads and writes; `testing::conformance` (feature
//! `testing`) checks that a store keeps them. This module holds what comes with them:
//! the [`UsageReport`]s stores receive, the [`Invalidation`]s they announce, and the
//! stores beside [`MemoryKeyStore`](crate::MemoryKeyStore): a cache for any store, and
//! PostgreSQL.
//!
//! A store keeps only [`KeyDigest`](crate::KeyDigest)s, never keys. The layer uses the
//! store generically (`NouvelAuthLayer<K: KeyStore>`), not as a trait object: a lookup
//! costs no allocation and no virtual call. See `examples/custom_store.rs`.

#[cfg(feature = "cache")]
mod cached;
pub(crate) mod memory;
#[cfg(feature = "postgres")]
mod postgres;
pub(crate) mod traits;

use std::fmt;

pub use crate::usage::UsageReport;
#[cfg(feature = "cache")]
#[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
pub use cached::CachedKeyStore;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::PostgresKeyStore;

use crate::{AccountId, KeyId};

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
    #[must_use]
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
