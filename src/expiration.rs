//! When a new key stops working: 7, 30 or 90 days, a year, never, or a custom date.
//!
//! ```
//! use nouvel_auth::Expiration;
//! use time::macros::datetime;
//!
//! let now = datetime!(2026-01-01 00:00 UTC);
//! let exp: Expiration = "30d".parse().unwrap();
//! assert_eq!(exp.expires_at(now).unwrap(), Some(datetime!(2026-01-31 00:00 UTC)));
//! assert_eq!(Expiration::Never.expires_at(now).unwrap(), None);
//!
//! // A custom date must lie in the future.
//! let past: Expiration = "2025-06-01T00:00:00Z".parse().unwrap();
//! assert!(past.expires_at(now).is_err());
//! ```

use std::{fmt, str::FromStr};

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use time::{format_description::well_known::Rfc3339, Duration, OffsetDateTime};

/// An expiration option, chosen when a key is created (and kept by its rotations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Expiration {
    /// `7d`.
    Days7,
    /// `30d`.
    Days30,
    /// `90d`: the default, matching the advice to rotate every 90 days.
    #[default]
    Days90,
    /// `1y`: 365 days.
    Year1,
    /// `never`.
    Never,
    /// A custom date (RFC 3339), which must lie in the future when the key is made.
    At(OffsetDateTime),
}

/// Why an expiration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExpirationError {
    /// The string is neither an option nor an RFC 3339 timestamp.
    #[error("unknown expiration '{0}'; expected 7d, 30d, 90d, 1y, never or an RFC 3339 date")]
    Unknown(String),
    /// The custom date is not in the future.
    #[error("the expiration date must lie in the future")]
    InPast,
}

impl Expiration {
    /// When a key made at `now` with this option expires; `None` for never.
    pub fn expires_at(
        self,
        now: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>, ExpirationError> {
        let days = match self {
            Self::Days7 => 7,
            Self::Days30 => 30,
            Self::Days90 => 90,
            Self::Year1 => 365,
            Self::Never => return Ok(None),
            Self::At(at) if at <= now => return Err(ExpirationError::InPast),
            Self::At(at) => return Ok(Some(at)),
        };
        Ok(Some(now + Duration::days(days)))
    }
}

impl FromStr for Expiration {
    type Err = ExpirationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "7d" => Self::Days7,
            "30d" => Self::Days30,
            "90d" => Self::Days90,
            "1y" => Self::Year1,
            "never" => Self::Never,
            _ => Self::At(
                OffsetDateTime::parse(s, &Rfc3339)
                    .map_err(|_| ExpirationError::Unknown(s.to_owned()))?
                    .to_offset(time::UtcOffset::UTC),
            ),
        })
    }
}

impl fmt::Display for Expiration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Days7 => "7d",
            Self::Days30 => "30d",
            Self::Days90 => "90d",
            Self::Year1 => "1y",
            Self::Never => "never",
            Self::At(at) => {
                return f.write_str(&at.format(&Rfc3339).map_err(|_| fmt::Error)?);
            }
        })
    }
}

impl Serialize for Expiration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Expiration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn every_option_has_its_length() {
        let now = datetime!(2026-03-01 12:00 UTC);
        for (s, days) in [("7d", 7), ("30d", 30), ("90d", 90), ("1y", 365)] {
            let exp: Expiration = s.parse().unwrap();
            assert_eq!(exp.to_string(), s);
            assert_eq!(
                exp.expires_at(now).unwrap(),
                Some(now + Duration::days(days))
            );
        }
        assert_eq!(
            "never"
                .parse::<Expiration>()
                .unwrap()
                .expires_at(now)
                .unwrap(),
            None
        );
    }

    #[test]
    fn bad_options_are_named() {
        assert_eq!(
            "2w".parse::<Expiration>().unwrap_err(),
            ExpirationError::Unknown("2w".into())
        );
        let now = datetime!(2026-03-01 12:00 UTC);
        assert_eq!(
            Expiration::At(now).expires_at(now),
            Err(ExpirationError::InPast)
        );
        let custom: Expiration = "2026-03-02T00:00:00+02:00".parse().unwrap();
        assert_eq!(
            custom.expires_at(now).unwrap(),
            Some(datetime!(2026-03-01 22:00 UTC))
        );
    }
}
