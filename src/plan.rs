//! Plans: an account's [`Plan`] is a name of the application's, and [`Plans`] says which
//! names exist and which of them may use API keys (or that any may).
//!
//! ```
//! use nouvel_auth::{nouvel, Plan, Plans};
//!
//! // Nouvel's: four plans, keys on Scale and Business.
//! let plans = nouvel::plans();
//! assert!(plans.allows_api_keys(&nouvel::SCALE));
//! assert!(!plans.allows_api_keys(&plans.parse("growth").unwrap()));
//!
//! // An application's own: keys on "team" only.
//! let plans = Plans::new([Plan::from_static("free"), Plan::from_static("team")])
//!     .api_keys_on([Plan::from_static("team")]);
//! assert!(!plans.allows_api_keys(&Plan::from_static("free")));
//! assert!(plans.parse("gold").is_err());
//!
//! // Or no plan gate at all.
//! assert!(Plans::any().allows_api_keys(&Plan::new("whatever")));
//! ```

use std::{fmt, sync::Arc};

use serde::{Serialize, Serializer};

/// An account's plan: a name such as `scale`. Cloning is cheap.
#[derive(Clone)]
pub struct Plan(Name);

#[derive(Clone)]
enum Name {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Plan {
    /// A plan named by a string constant.
    #[must_use]
    pub const fn from_static(name: &'static str) -> Self {
        Self(Name::Static(name))
    }

    /// A plan named `name` (read from a store, say).
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self(Name::Shared(name.into()))
    }

    /// The name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Name::Static(name) => name,
            Name::Shared(name) => name,
        }
    }
}

impl PartialEq for Plan {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Plan {}

impl std::hash::Hash for Plan {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Plan({})", self.as_str())
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Plan {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A string that names no plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown plan '{name}'; expected {expected}")]
pub struct UnknownPlan {
    name: String,
    expected: String,
}

/// Which plans exist, and which may use API keys: the plan gate (402 `plan_required`).
#[derive(Debug, Clone)]
pub struct Plans {
    /// Every plan an account may be on; empty for any name.
    known: Arc<[Plan]>,
    /// The plans that may use keys; `None` for every plan.
    with_api_keys: Option<Arc<[Plan]>>,
}

impl Plans {
    /// These plans, every one of them with API keys (no gate until
    /// [`api_keys_on`](Self::api_keys_on)).
    pub fn new(known: impl IntoIterator<Item = Plan>) -> Self {
        Self {
            known: known.into_iter().collect(),
            with_api_keys: None,
        }
    }

    /// Any plan name (1 to 64 characters), and no plan gate at all: no request gets 402.
    #[must_use]
    pub fn any() -> Self {
        Self::new([])
    }

    /// Only `plans` may use API keys; the others get 402.
    #[must_use]
    pub fn api_keys_on(mut self, plans: impl IntoIterator<Item = Plan>) -> Self {
        self.with_api_keys = Some(plans.into_iter().collect());
        self
    }

    /// Whether accounts on `plan` may use API keys.
    #[must_use]
    pub fn allows_api_keys(&self, plan: &Plan) -> bool {
        self.with_api_keys
            .as_deref()
            .is_none_or(|allowed| allowed.contains(plan))
    }

    /// The plans that may use API keys, as a 402 names them; `None` when every plan may.
    #[must_use]
    pub fn with_api_keys(&self) -> Option<&[Plan]> {
        self.with_api_keys.as_deref()
    }

    /// The known plans; empty when any name is a plan.
    #[cfg(any(feature = "admin", feature = "settings"))]
    pub(crate) fn known(&self) -> &[Plan] {
        &self.known
    }

    /// The plans without API keys among the known ones.
    pub(crate) fn without_api_keys(&self) -> impl Iterator<Item = &Plan> {
        self.known.iter().filter(|plan| !self.allows_api_keys(plan))
    }

    /// The plan named `name`, if it is one.
    pub fn parse(&self, name: &str) -> Result<Plan, UnknownPlan> {
        if self.known.is_empty() && (1..=64).contains(&name.chars().count()) {
            return Ok(Plan::new(name));
        }
        self.known
            .iter()
            .find(|plan| plan.as_str() == name)
            .cloned()
            .ok_or_else(|| UnknownPlan {
                name: name.to_owned(),
                expected: if self.known.is_empty() {
                    "1 to 64 characters".to_owned()
                } else {
                    or_list(self.known.iter().map(Plan::as_str))
                },
            })
    }
}

/// `a`, `a or b`, `a, b or c`.
pub(crate) fn or_list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let items: Vec<&str> = items.collect();
    match items.split_last() {
        None => String::new(),
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}
