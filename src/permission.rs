//! The five permissions a key can hold, and [`Permissions`], a set of them.
//!
//! ```
//! use nouvel_auth::{Permission, Permissions};
//!
//! let perms: Permissions = [Permission::Generate, Permission::ProjectsRead].into_iter().collect();
//! assert!(perms.contains(Permission::Generate));
//! assert!(!perms.contains(Permission::Publish));
//! assert_eq!(serde_json::to_string(&perms).unwrap(), r#"["generate","projects:read"]"#);
//! assert_eq!("copilot:chat".parse::<Permission>().unwrap(), Permission::CopilotChat);
//! ```

use std::{fmt, str::FromStr};

use serde::{de, ser::SerializeSeq, Deserialize, Deserializer, Serialize, Serializer};

/// One permission, granting the routes of the [route table](crate::RouteTable) that name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Permission {
    /// `generate`: start generations.
    Generate = 1 << 0,
    /// `projects:read`: read projects and jobs.
    ProjectsRead = 1 << 1,
    /// `publish`: publish and read publications.
    Publish = 1 << 2,
    /// `analytics:read`: read analytics.
    AnalyticsRead = 1 << 3,
    /// `copilot:chat`: talk to the copilot.
    CopilotChat = 1 << 4,
}

impl Permission {
    /// All five, in the order of the Nouvel docs.
    pub const ALL: [Permission; 5] = [
        Self::Generate,
        Self::ProjectsRead,
        Self::Publish,
        Self::AnalyticsRead,
        Self::CopilotChat,
    ];

    /// The wire string (`generate`, `projects:read`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Generate => "generate",
            Self::ProjectsRead => "projects:read",
            Self::Publish => "publish",
            Self::AnalyticsRead => "analytics:read",
            Self::CopilotChat => "copilot:chat",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names none of the five permissions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown permission '{0}'")]
pub struct UnknownPermission(pub String);

impl FromStr for Permission {
    type Err = UnknownPermission;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownPermission(s.to_owned()))
    }
}

impl Serialize for Permission {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Permission {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// A set of [`Permission`]s, held as a bitset: a check is one AND.
///
/// Serializes as an array of wire strings; duplicates fold.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Permissions(u8);

impl Permissions {
    /// No permission.
    pub const NONE: Self = Self(0);
    /// All five permissions.
    pub const ALL: Self = Self(0b1_1111);

    /// Whether the set holds `permission`.
    pub const fn contains(self, permission: Permission) -> bool {
        self.0 & permission as u8 != 0
    }

    /// The set with `permission` added.
    #[must_use]
    pub const fn with(self, permission: Permission) -> Self {
        Self(self.0 | permission as u8)
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The set as bits (`generate` = 1, `projects:read` = 2, `publish` = 4,
    /// `analytics:read` = 8, `copilot:chat` = 16), for storing in a column.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// The set from [`bits`](Self::bits); unknown bits are dropped.
    pub const fn from_bits(bits: u8) -> Self {
        Self(bits & Self::ALL.0)
    }

    /// The permissions in the set, in the order of [`Permission::ALL`].
    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .into_iter()
            .filter(move |&p| self.contains(p))
    }
}

impl From<Permission> for Permissions {
    fn from(permission: Permission) -> Self {
        Self::NONE.with(permission)
    }
}

impl FromIterator<Permission> for Permissions {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        iter.into_iter().fold(Self::NONE, Self::with)
    }
}

impl fmt::Debug for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(Permission::as_str))
            .finish()
    }
}

impl Serialize for Permissions {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(None)?;
        for permission in self.iter() {
            seq.serialize_element(&permission)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Permissions {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Vec::<Permission>::deserialize(deserializer)?
            .into_iter()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_strings_round_trip() {
        for p in Permission::ALL {
            assert_eq!(p.as_str().parse::<Permission>().unwrap(), p);
        }
        assert_eq!(
            "Generate".parse::<Permission>().unwrap_err().to_string(),
            "unknown permission 'Generate'"
        );
    }

    #[test]
    fn duplicates_fold() {
        let perms: Permissions = serde_json::from_str(r#"["publish","publish"]"#).unwrap();
        assert_eq!(perms, Permissions::from(Permission::Publish));
        assert_eq!(Permissions::ALL.iter().count(), 5);
    }
}
