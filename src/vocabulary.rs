//! The application's own words: its [permissions](crate::PermissionSet), its
//! [plans](crate::Plans) and which of them may use API keys, and its
//! [key prefix](crate::KeyPrefix). Nouvel's are the default ([`nouvel`](crate::nouvel)).
//!
//! Give the same [`Vocabulary`] to the [`KeyManager`](crate::KeyManager), which makes keys
//! and checks input with it, and to the [`NouvelAuthLayer`](crate::NouvelAuthLayer), which
//! checks requests with it; and its permission set to a store that keeps permission names
//! ([`PostgresKeyStore`](crate::store::PostgresKeyStore)).
//!
//! ```
//! use nouvel_auth::{KeyPrefix, PermissionSet, Plan, Plans, Vocabulary};
//!
//! const SCOPES: &PermissionSet = &PermissionSet::new(&["videos:read", "videos:write"]);
//!
//! let vocabulary = Vocabulary::new(
//!     SCOPES,
//!     Plans::new([Plan::from_static("free"), Plan::from_static("pro")])
//!         .api_keys_on([Plan::from_static("pro")]),
//!     KeyPrefix::new("vid_").unwrap(),
//! );
//! assert_eq!(vocabulary.prefix().as_str(), "vid_");
//! assert_eq!(Vocabulary::default().prefix().as_str(), "nvl_");
//! ```

use crate::{nouvel, KeyPrefix, PermissionSet, Plans};

/// Permissions, plans and key prefix, as one value (cheap to clone).
#[derive(Debug, Clone)]
pub struct Vocabulary {
    permissions: &'static PermissionSet,
    plans: Plans,
    prefix: KeyPrefix,
}

impl Vocabulary {
    /// An application's own words.
    #[must_use]
    pub fn new(permissions: &'static PermissionSet, plans: Plans, prefix: KeyPrefix) -> Self {
        Self {
            permissions,
            plans,
            prefix,
        }
    }

    /// Nouvel's: five permissions, four plans with keys on Scale and Business, `nvl_`.
    #[must_use]
    pub fn nouvel() -> Self {
        Self::new(nouvel::PERMISSIONS, nouvel::plans(), KeyPrefix::NOUVEL)
    }

    /// The permission names.
    #[must_use]
    pub fn permissions(&self) -> &'static PermissionSet {
        self.permissions
    }

    /// The plans, and which may use API keys.
    #[must_use]
    pub fn plans(&self) -> &Plans {
        &self.plans
    }

    /// What every key starts with.
    #[must_use]
    pub fn prefix(&self) -> KeyPrefix {
        self.prefix
    }
}

impl Default for Vocabulary {
    fn default() -> Self {
        Self::nouvel()
    }
}
