//! Permissions: the application's own names, up to 64 in a [`PermissionSet`], and
//! [`Permissions`], a set of them held as a bitset (a check is one AND).
//!
//! Nouvel's five are [`nouvel::PERMISSIONS`](crate::nouvel::PERMISSIONS), the default. An
//! application with words of its own defines its set once, as a constant:
//!
//! ```
//! use nouvel_auth::{Permission, PermissionSet, Permissions};
//!
//! const SCOPES: &PermissionSet = &PermissionSet::new(&["videos:read", "videos:write"]);
//! const VIDEOS_READ: Permission = SCOPES.permission("videos:read");
//! const VIDEOS_WRITE: Permission = SCOPES.permission("videos:write");
//!
//! let granted: Permissions = [VIDEOS_READ].into_iter().collect();
//! assert!(granted.contains(VIDEOS_READ));
//! assert!(!granted.contains(VIDEOS_WRITE));
//! assert_eq!(SCOPES.parse("videos:write").unwrap(), VIDEOS_WRITE);
//! assert_eq!(serde_json::to_string(&granted).unwrap(), r#"["videos:read"]"#);
//! assert_eq!(SCOPES.parse("videos:delete").unwrap_err().to_string(), "unknown permission 'videos:delete'");
//! ```
//!
//! A set read from configuration at start-up is made `'static` once with
//! [`PermissionSet::leak`].

use std::fmt;

use serde::{ser::SerializeSeq, Serialize, Serializer};

/// An application's permission names: at most 64, each 1 to 64 characters of `a-z`, `0-9`
/// and `:._-`, no two alike. A permission is its position in the set, so a set's order
/// must stay as it is once keys hold its permissions in memory; stores keep the names.
#[derive(Debug)]
pub struct PermissionSet {
    names: &'static [&'static str],
}

const MAX_PERMISSIONS: usize = 64;

impl PermissionSet {
    /// The set of `names`.
    ///
    /// # Panics
    ///
    /// If there are more than 64 names, a name is empty, longer than 64 characters or holds
    /// another character, or two names are alike: at compile time when used in a `const`.
    #[must_use]
    pub const fn new(names: &'static [&'static str]) -> Self {
        assert!(names.len() <= MAX_PERMISSIONS, "at most 64 permissions");
        let mut i = 0;
        while i < names.len() {
            let name = names[i].as_bytes();
            assert!(
                !name.is_empty() && name.len() <= 64,
                "a permission name is 1 to 64 characters"
            );
            let mut j = 0;
            while j < name.len() {
                let c = name[j];
                assert!(
                    c.is_ascii_lowercase()
                        || c.is_ascii_digit()
                        || matches!(c, b':' | b'.' | b'_' | b'-'),
                    "a permission name holds only a-z, 0-9 and :._-"
                );
                j += 1;
            }
            let mut k = 0;
            while k < i {
                assert!(
                    !bytes_eq(names[k].as_bytes(), name),
                    "permission names are unique"
                );
                k += 1;
            }
            i += 1;
        }
        Self { names }
    }

    /// A set made from names known only at run time (configuration), kept for the rest of
    /// the process. Call it once, at start-up.
    ///
    /// # Errors
    ///
    /// The names break a rule of [`new`](Self::new): the reason, as text.
    pub fn leak(names: impl IntoIterator<Item = String>) -> Result<&'static Self, String> {
        let names: Vec<String> = names.into_iter().collect();
        let valid = names.len() <= MAX_PERMISSIONS
            && names.iter().enumerate().all(|(i, name)| {
                (1..=64).contains(&name.len())
                    && name.bytes().all(|c| {
                        c.is_ascii_lowercase()
                            || c.is_ascii_digit()
                            || matches!(c, b':' | b'.' | b'_' | b'-')
                    })
                    && !names[..i].contains(name)
            });
        if !valid {
            return Err(
                "at most 64 unique permission names of 1 to 64 characters of a-z, 0-9 and :._-"
                    .to_owned(),
            );
        }
        let names: Vec<&'static str> = names
            .into_iter()
            .map(|n| &*Box::leak(n.into_boxed_str()))
            .collect();
        Ok(Box::leak(Box::new(Self {
            names: Box::leak(names.into_boxed_slice()),
        })))
    }

    /// The permission named `name`, for defining constants.
    ///
    /// # Panics
    ///
    /// If the set has no such name: at compile time when used in a `const`.
    #[must_use]
    pub const fn permission(&'static self, name: &str) -> Permission {
        let mut i = 0;
        while i < self.names.len() {
            if bytes_eq(self.names[i].as_bytes(), name.as_bytes()) {
                return Permission {
                    set: self,
                    bit: i as u8,
                };
            }
            i += 1;
        }
        panic!("no such permission in the set");
    }

    /// The permission named `name` (a wire string, as the admin API receives it).
    pub fn parse(&'static self, name: &str) -> Result<Permission, UnknownPermission> {
        self.names
            .iter()
            .position(|known| *known == name)
            .map(|i| Permission {
                set: self,
                bit: i as u8,
            })
            .ok_or_else(|| UnknownPermission(name.to_owned()))
    }

    /// Every permission of the set, in its order.
    pub fn iter(&'static self) -> impl Iterator<Item = Permission> {
        (0..self.names.len()).map(move |i| Permission {
            set: self,
            bit: i as u8,
        })
    }

    /// Every permission of the set, as a [`Permissions`].
    #[must_use]
    pub fn all(&'static self) -> Permissions {
        self.iter().collect()
    }

    /// The names, in the set's order.
    #[must_use]
    pub fn names(&self) -> &'static [&'static str] {
        self.names
    }

    fn same(&self, other: &Self) -> bool {
        std::ptr::eq(self, other) || self.names == other.names
    }
}

const fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// No permission at all: the set of an empty [`Permissions`].
const EMPTY: &PermissionSet = &PermissionSet::new(&[]);

/// One permission of a [`PermissionSet`], granting the routes of the
/// [route table](crate::RouteTable) that name it.
#[derive(Clone, Copy)]
pub struct Permission {
    set: &'static PermissionSet,
    bit: u8,
}

impl Permission {
    /// The wire string (`generate`, `videos:read`, …).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        self.set.names[usize::from(self.bit)]
    }

    /// The set it belongs to.
    #[must_use]
    pub fn set(self) -> &'static PermissionSet {
        self.set
    }

    pub(crate) const fn mask(self) -> u64 {
        1 << self.bit
    }
}

impl PartialEq for Permission {
    fn eq(&self, other: &Self) -> bool {
        self.bit == other.bit && self.set.same(other.set)
    }
}

impl Eq for Permission {}

impl std::hash::Hash for Permission {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Permission({})", self.as_str())
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Permission {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A string that names no permission of the set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown permission '{0}'")]
pub struct UnknownPermission(pub String);

/// A set of [`Permission`]s of one [`PermissionSet`], held as a bitset.
///
/// Serializes as an array of wire strings, in the set's order; duplicates fold.
#[derive(Clone, Copy)]
pub struct Permissions {
    set: &'static PermissionSet,
    bits: u64,
}

impl Default for Permissions {
    /// No permission.
    fn default() -> Self {
        Self {
            set: EMPTY,
            bits: 0,
        }
    }
}

impl Permissions {
    /// Whether the set holds `permission`.
    #[must_use]
    pub fn contains(self, permission: Permission) -> bool {
        self.bits & permission.mask() != 0
    }

    /// The set with `permission` added.
    ///
    /// # Panics
    ///
    /// If `permission` is of another [`PermissionSet`] than the others.
    #[must_use]
    pub fn with(self, permission: Permission) -> Self {
        let set = if self.bits == 0 {
            permission.set
        } else {
            self.set
        };
        assert!(
            set.same(permission.set),
            "permissions of two different sets"
        );
        Self {
            set,
            bits: self.bits | permission.mask(),
        }
    }

    /// The permissions of `set` whose masks are in `bits`.
    pub(crate) fn from_bits(set: &'static PermissionSet, bits: u64) -> Self {
        Self { set, bits }
    }

    /// The set without `permission`.
    #[must_use]
    pub fn without(self, permission: Permission) -> Self {
        Self {
            bits: self.bits & !permission.mask(),
            ..self
        }
    }

    /// Whether the set is empty.
    #[must_use]
    pub fn is_empty(self) -> bool {
        self.bits == 0
    }

    /// The permissions in the set, in the set's order.
    #[must_use]
    pub fn iter(self) -> PermissionIter {
        PermissionIter(self)
    }
}

/// The permissions of a [`Permissions`], in their set's order.
#[derive(Debug, Clone)]
pub struct PermissionIter(Permissions);

impl Iterator for PermissionIter {
    type Item = Permission;

    fn next(&mut self) -> Option<Permission> {
        let Permissions { set, bits } = self.0;
        if bits == 0 {
            return None;
        }
        let bit = bits.trailing_zeros() as u8;
        self.0.bits &= bits - 1;
        Some(Permission { set, bit })
    }
}

impl PartialEq for Permissions {
    fn eq(&self, other: &Self) -> bool {
        self.bits == other.bits && (self.bits == 0 || self.set.same(other.set))
    }
}

impl Eq for Permissions {}

impl From<Permission> for Permissions {
    fn from(permission: Permission) -> Self {
        Self::default().with(permission)
    }
}

impl FromIterator<Permission> for Permissions {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        iter.into_iter().fold(Self::default(), Self::with)
    }
}

impl IntoIterator for Permissions {
    type Item = Permission;
    type IntoIter = PermissionIter;

    fn into_iter(self) -> PermissionIter {
        self.iter()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nouvel;

    #[test]
    fn wire_strings_round_trip() {
        for p in nouvel::PERMISSIONS.iter() {
            assert_eq!(nouvel::PERMISSIONS.parse(p.as_str()).unwrap(), p);
        }
        assert_eq!(
            nouvel::PERMISSIONS
                .parse("Generate")
                .unwrap_err()
                .to_string(),
            "unknown permission 'Generate'"
        );
    }

    #[test]
    fn duplicates_fold_and_order_follows_the_set() {
        let perms: Permissions = [nouvel::PUBLISH, nouvel::GENERATE, nouvel::PUBLISH]
            .into_iter()
            .collect();
        assert_eq!(
            perms.iter().collect::<Vec<_>>(),
            [nouvel::GENERATE, nouvel::PUBLISH]
        );
        assert_eq!(nouvel::PERMISSIONS.all().iter().count(), 5);
        assert_eq!(Permissions::default(), [].into_iter().collect());
    }

    #[test]
    fn sixty_four_names_are_a_bitset_and_sixty_five_are_refused() {
        let names: Vec<String> = (0..64).map(|i| format!("p{i}")).collect();
        let set = PermissionSet::leak(names).unwrap();
        let last = set.parse("p63").unwrap();
        let perms = Permissions::from(last);
        assert!(perms.contains(last) && !perms.contains(set.parse("p0").unwrap()));
        assert!(PermissionSet::leak((0..65).map(|i| format!("p{i}"))).is_err());
        assert!(PermissionSet::leak(["a".to_owned(), "a".to_owned()]).is_err());
        assert!(PermissionSet::leak(["Upper".to_owned()]).is_err());
    }
}
