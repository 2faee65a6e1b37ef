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
    /// A custom date (RFC 3339), which must lie in the future when the key is made and no
    /// later than [`Expiration::LATEST`]; [`Expiration::at`] makes one in UTC, to the second.
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
    /// The custom date is later than [`Expiration::LATEST`] in UTC.
    #[error("the expiration date must be no later than 9999-12-31T23:59:59Z")]
    TooLate,
}

impl Expiration {
    /// The latest custom date: 9999-12-31T23:59:59Z.
    pub const LATEST: OffsetDateTime = time::macros::datetime!(9999-12-31 23:59:59 UTC);

    /// A custom date, in UTC and to the second (what every store keeps exactly), if it is
    /// no later than [`LATEST`](Self::LATEST).
    pub fn at(date: OffsetDateTime) -> Result<Self, ExpirationError> {
        let utc = date
            .checked_to_offset(time::UtcOffset::UTC)
            .filter(|utc| *utc <= Self::LATEST)
            .ok_or(ExpirationError::TooLate)?;
        Ok(Self::At(utc.replace_nanosecond(0).unwrap_or(utc)))
    }

    /// The option a rotation at `now` gives the replacement of a key made at `created`
    /// with this one: the same option, and for a custom date the same length of life (the
    /// date less `created`, rounded up to whole seconds) from now. So a replacement never
    /// dies before the key it replaces.
    pub(crate) fn renewed(
        self,
        created: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Self, ExpirationError> {
        let Self::At(at) = self else {
            return Ok(self);
        };
        let life = at - created;
        let whole = Duration::seconds(life.whole_seconds());
        let life = if whole < life {
            whole + Duration::SECOND
        } else {
            whole
        };
        Self::at(now.checked_add(life).ok_or(ExpirationError::TooLate)?)
    }

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
            Self::At(at) if at > Self::LATEST => return Err(ExpirationError::TooLate),
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
            _ => Self::at(
                OffsetDateTime::parse(s, &Rfc3339)
                    .map_err(|_| ExpirationError::Unknown(s.to_owned()))?,
            )?,
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

    #[test]
    fn custom_dates_are_bounded_in_utc_and_kept_to_the_second() {
        // Legal RFC 3339, but the year 10000 once in UTC: refused, not a panic.
        for late in ["9999-12-31T23:59:59-00:01", "9999-12-31T23:59:59.5-23:59"] {
            assert_eq!(
                late.parse::<Expiration>(),
                Err(ExpirationError::TooLate),
                "{late}"
            );
        }
        let latest: Expiration = "9999-12-31T23:59:59Z".parse().unwrap();
        assert_eq!(latest, Expiration::At(Expiration::LATEST));
        let earlier: Expiration = "9999-12-31T23:59:59+00:01".parse().unwrap();
        assert_eq!(earlier, Expiration::At(datetime!(9999-12-31 23:58:59 UTC)));
        let fine: Expiration = "2030-01-01T00:00:00.999999999Z".parse().unwrap();
        assert_eq!(fine, Expiration::At(datetime!(2030-01-01 00:00:00 UTC)));
        assert_eq!(fine.to_string(), "2030-01-01T00:00:00Z");
    }

    #[test]
    fn a_renewed_custom_date_never_comes_before_the_old_one() {
        let at = datetime!(2030-01-01 13:00 UTC);
        for created in [
            datetime!(2030-01-01 12:00:00.5 UTC),
            datetime!(2030-01-01 12:00:00.000001 UTC),
            datetime!(2030-01-01 12:00 UTC),
        ] {
            // Rotated the instant it was made: the replacement lives at least as long.
            let renewed = Expiration::At(at).renewed(created, created).unwrap();
            let Expiration::At(renewed) = renewed else {
                panic!("{renewed:?}")
            };
            assert!(renewed >= at, "{created}: {renewed} < {at}");
            assert!(renewed - at < Duration::SECOND, "{created}: {renewed}");
        }
    }
}
