//! Where keys live. What a store must do is two traits at the crate root:
//! [`KeyStore`](crate::KeyStore), the lookups the layer makes (and usage reports), and
//! [`KeyStorage`](crate::KeyStorage), the accounts and keys the
//! [`KeyManager`](crate::KeyManager) reads and writes; `testing::conformance` (feature
//! `testing`) checks that a store keeps them. This module holds what comes with them:
//! the [`UsageReport`]s stores receive, the [`Invalidation`]s they announce, and the
//! stores beside [`MemoryKeyStore`](crate::MemoryKeyStore): a cache for any store,
//! PostgreSQL and SQLite, and [`AnyKeyStore`], the one of them chosen at run time.
//!
//! A store keeps only [`KeyDigest`]s, never keys. The layer uses the
//! store generically (`NouvelAuthLayer<K: KeyStore>`), not as a trait object: a lookup
//! costs no allocation and no virtual call. See `examples/custom_store.rs`.

mod any;
#[cfg(feature = "cache")]
mod cached;
pub(crate) mod memory;
mod outbox;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod rows;
#[cfg(feature = "sqlite")]
mod sqlite;
pub(crate) mod traits;

use std::fmt;

pub use crate::usage::UsageReport;
pub use any::AnyKeyStore;
#[cfg(feature = "cache")]
#[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
pub use cached::CachedKeyStore;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::PostgresKeyStore;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::SqliteKeyStore;
pub use traits::EventOutbox;

use crate::{AccountId, KeyDigest, KeyId};

/// A change that makes cached lookups stale: what stores announce and caches act on.
///
/// Its text form (`k:<key id>`, `a:<account id>`, `c:<digest in hex>`, `*`) travels between
/// instances, for example as a PostgreSQL `NOTIFY` payload.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Invalidation {
    /// The key with this id was deleted, revoked or rotated.
    Key(KeyId),
    /// The account's plan changed: all its keys.
    Account(AccountId),
    /// A key with this digest was made: a cache that
    /// refuses made-up keys (`CachedKeyStore::refuse_made_up_keys`) knows it from now on.
    Created(KeyDigest),
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
            "c" => hex_digest(value).map(Self::Created),
            _ => None,
        }
    }
}

impl fmt::Display for Invalidation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Key(id) => write!(f, "k:{id}"),
            Self::Account(id) => write!(f, "a:{id}"),
            Self::Created(digest) => {
                f.write_str("c:")?;
                digest
                    .as_bytes()
                    .iter()
                    .try_for_each(|byte| write!(f, "{byte:02x}"))
            }
            Self::All => f.write_str("*"),
        }
    }
}

/// A digest from 64 hex digits.
fn hex_digest(text: &str) -> Option<KeyDigest> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut bytes = [0; 32];
    for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(KeyDigest::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalidations_read_back_their_text() {
        let digest = crate::ApiKey::generate().digest();
        for change in [
            Invalidation::Key("key_1".into()),
            Invalidation::Account("acc_1".into()),
            Invalidation::Created(digest),
            Invalidation::All,
        ] {
            assert_eq!(Invalidation::parse(&change.to_string()), Some(change));
        }
        for junk in ["", "c:", "c:zz", &format!("c:{}", "é".repeat(32)), "x:1"] {
            assert_eq!(Invalidation::parse(junk), None, "{junk}");
        }
    }
}
