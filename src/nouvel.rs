//! Nouvel's profile, the default: its five permissions, its four plans, and its route
//! table ([`RouteTable::nouvel`](crate::RouteTable::nouvel)).
//!
//! ```
//! use nouvel_auth::{nouvel, Profile};
//!
//! assert_eq!(nouvel::PROJECTS_READ.as_str(), "projects:read");
//! assert_eq!(nouvel::PERMISSIONS.names().len(), 5);
//! assert!(Profile::nouvel().plans().allows_api_keys(&nouvel::BUSINESS));
//! ```

use crate::{Permission, PermissionSet, Plan, Plans};

/// The five permissions, in the order of the Nouvel docs.
pub const PERMISSIONS: &PermissionSet = &PermissionSet::new(&[
    "generate",
    "projects:read",
    "publish",
    "analytics:read",
    "copilot:chat",
]);

/// `generate`: start generations.
pub const GENERATE: Permission = PERMISSIONS.permission("generate");
/// `projects:read`: read projects and jobs.
pub const PROJECTS_READ: Permission = PERMISSIONS.permission("projects:read");
/// `publish`: publish and read publications.
pub const PUBLISH: Permission = PERMISSIONS.permission("publish");
/// `analytics:read`: read analytics.
pub const ANALYTICS_READ: Permission = PERMISSIONS.permission("analytics:read");
/// `copilot:chat`: talk to the copilot.
pub const COPILOT_CHAT: Permission = PERMISSIONS.permission("copilot:chat");

/// `starter`: no API keys.
pub const STARTER: Plan = Plan::from_static("starter");
/// `growth`: no API keys.
pub const GROWTH: Plan = Plan::from_static("growth");
/// `scale`: API keys.
pub const SCALE: Plan = Plan::from_static("scale");
/// `business`: API keys.
pub const BUSINESS: Plan = Plan::from_static("business");

/// The four plans, API keys on Scale and Business.
#[must_use]
pub fn plans() -> Plans {
    Plans::new([STARTER, GROWTH, SCALE, BUSINESS]).api_keys_on([SCALE, BUSINESS])
}
