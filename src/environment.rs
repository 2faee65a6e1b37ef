//! The environment label of a key: which deployment made a request.

use std::{fmt, str::FromStr, sync::Arc};

use serde::{Serialize, Serializer};

/// An environment a key is for (`production`, `staging`, `development`, …): a lowercase
/// letter, then up to 31 of `a-z`, `0-9` and `-`. Chosen when the key is made, kept by
/// rotation, and handed to the service with every request the key makes, so a service can
/// tell which environment called it.
///
/// ```
/// use nouvel_auth::key::Environment;
///
/// let staging: Environment = "staging".parse().unwrap();
/// assert_eq!(staging.as_str(), "staging");
/// assert!("Staging".parse::<Environment>().is_err());
/// assert!("-prod".parse::<Environment>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Environment(Arc<str>);

/// A label that is not an [`Environment`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be a lowercase letter, then up to 31 of a-z, 0-9 and -")]
pub struct InvalidEnvironment;

impl Environment {
    /// The label.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Environment {
    type Err = InvalidEnvironment;

    fn from_str(label: &str) -> Result<Self, Self::Err> {
        let mut bytes = label.bytes();
        let first = bytes.next().is_some_and(|b| b.is_ascii_lowercase());
        let rest = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if first && rest && label.len() <= 32 {
            Ok(Self(label.into()))
        } else {
            Err(InvalidEnvironment)
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for Environment {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        for good in [
            "a",
            "production",
            "eu-west-1",
            &format!("a{}", "b".repeat(31)),
        ] {
            assert!(good.parse::<Environment>().is_ok(), "{good}");
        }
        for bad in [
            "",
            "1a",
            "-a",
            "A",
            "prod_1",
            "pröd",
            " a",
            &format!("a{}", "b".repeat(32)),
        ] {
            assert!(bad.parse::<Environment>().is_err(), "{bad}");
        }
    }
}
