//! The account plans, and which of them may use API keys.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// An account's plan. API keys work only on [`Scale`](Plan::Scale) and [`Business`](Plan::Business).
///
/// ```
/// use nouvel_auth::Plan;
///
/// assert!(Plan::Scale.allows_api_keys());
/// assert!(!"growth".parse::<Plan>().unwrap().allows_api_keys());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Plan {
    /// `starter`: no API keys.
    Starter,
    /// `growth`: no API keys.
    Growth,
    /// `scale`: API keys.
    Scale,
    /// `business`: API keys.
    Business,
}

impl Plan {
    /// The plans whose accounts may use API keys, as listed in a 402 body.
    pub const WITH_API_KEYS: [Plan; 2] = [Plan::Scale, Plan::Business];

    /// Whether accounts on this plan may use API keys.
    pub const fn allows_api_keys(self) -> bool {
        matches!(self, Self::Scale | Self::Business)
    }

    /// The wire string (`starter`, `growth`, `scale`, `business`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Starter => "starter",
            Self::Growth => "growth",
            Self::Scale => "scale",
            Self::Business => "business",
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown plan '{0}'; expected starter, growth, scale or business")]
pub struct UnknownPlan(pub String);

impl FromStr for Plan {
    type Err = UnknownPlan;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Starter, Self::Growth, Self::Scale, Self::Business]
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownPlan(s.to_owned()))
    }
}
