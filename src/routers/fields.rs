//! Request bodies read field by field, into what the key manager takes.

use std::{fmt, time::Duration};

use serde_json::{Map, Value};

use super::{Body, RouterError};
#[cfg(feature = "admin")]
use crate::Plan;
use crate::{
    limit::LIMIT_FORM,
    manage::{manager::KeyDraft, FieldError, Rotation},
    network::Networks,
    Environment, Expiration, KeySpec, ManageError, Permission, PermissionSet, Permissions,
    RateLimit, RateLimits,
};

/// A request body as a router read it: the value (with defaults where a field was
/// missing or bad), the errors of its fields, and why it could not be read at all, if so.
pub(crate) struct Parsed<T> {
    value: T,
    errors: Vec<FieldError>,
    unreadable: Option<RouterError>,
}

impl<T> Parsed<T> {
    /// The call for this body: `prepare` checks it as the manager does (unknown ids, then
    /// its fields, then the rest), `commit` writes what was prepared. The manager's unknown
    /// ids come first, then an unreadable body, then every field error at once (the body's,
    /// and the manager's on the other fields), then the manager's other refusals; nothing
    /// is written unless all is well.
    pub(crate) async fn call<P, R>(
        self,
        prepare: impl AsyncFnOnce(&T) -> Result<P, ManageError>,
        commit: impl AsyncFnOnce(P) -> Result<R, ManageError>,
    ) -> Result<R, RouterError> {
        let prepared = prepare(&self.value).await;
        if let Err(
            error @ (ManageError::NotFound | ManageError::AlreadyRotated | ManageError::Backend(_)),
        ) = prepared
        {
            return Err(error.into());
        }
        if let Some(unreadable) = self.unreadable {
            return Err(unreadable);
        }
        let mut errors = self.errors;
        match prepared {
            Err(ManageError::Invalid(own)) => {
                FieldError::add(&mut errors, own);
                Err(ManageError::Invalid(errors).into())
            }
            _ if !errors.is_empty() => Err(ManageError::Invalid(errors).into()),
            Ok(prepared) => Ok(commit(prepared).await?),
            Err(refused) => Err(refused.into()),
        }
    }

    /// [`call`](Self::call) for a key made or rotated.
    pub(crate) async fn key<S: crate::KeyStorage>(
        self,
        manager: &crate::KeyManager<S>,
        prepare: impl AsyncFnOnce(&T) -> Result<KeyDraft, ManageError>,
    ) -> Result<crate::manage::NewKey, RouterError> {
        self.call(prepare, async |draft| manager.commit(draft).await)
            .await
    }
}

impl Parsed<KeySpec> {
    /// Refuses the permissions beyond `grantable`: those are not the signed-in user's to
    /// grant.
    pub(crate) fn grantable_only(&mut self, grantable: Permissions) {
        let withheld: Vec<&str> = self
            .value
            .permissions
            .iter()
            .filter(|&p| !grantable.contains(p))
            .map(Permission::as_str)
            .collect();
        if !withheld.is_empty() {
            self.errors.push(FieldError::new(
                "permissions",
                format!("not yours to grant: {}", withheld.join(", ")),
            ));
        }
    }
}

/// A JSON object body, read field by field so that every error names its field, and
/// strictly: a member the endpoint does not take is an error of its own.
pub(crate) struct Fields {
    object: Map<String, Value>,
    errors: Vec<FieldError>,
    unreadable: Option<RouterError>,
}

impl Fields {
    /// Reads `body`; an empty body is an empty object (for optional bodies). A body that
    /// cannot be read reads as an empty object, and the answer says why.
    pub(crate) fn read(body: Body) -> Self {
        let mut fields = Self {
            object: Map::new(),
            errors: Vec::new(),
            unreadable: None,
        };
        let object = body.0.and_then(|body| {
            if body.iter().all(u8::is_ascii_whitespace) {
                return Ok(Value::Object(Map::new()));
            }
            serde_json::from_slice(&body).map_err(|e| RouterError::MalformedJson(e.to_string()))
        });
        match object {
            Ok(Value::Object(object)) => fields.object = object,
            Ok(_) => fields.reject("body", "must be a JSON object"),
            Err(unreadable) => fields.unreadable = Some(unreadable),
        }
        fields
    }

    fn reject(&mut self, field: &str, reason: impl Into<String>) {
        self.errors.push(FieldError::new(field, reason));
    }

    /// A string field; `None` (and an error if `required`) when absent, null or not a string.
    pub(crate) fn string(&mut self, field: &str, required: bool) -> Option<String> {
        match self.object.remove(field) {
            Some(Value::String(s)) => Some(s),
            None | Some(Value::Null) if !required => None,
            None | Some(Value::Null) => {
                self.reject(field, "is required");
                None
            }
            Some(_) => {
                self.reject(field, "must be a string");
                None
            }
        }
    }

    /// A string field parsed with `FromStr`, whose error names the problem.
    fn parsed<T: std::str::FromStr>(&mut self, field: &str) -> Option<T>
    where
        T::Err: fmt::Display,
    {
        let text = self.string(field, false)?;
        text.parse()
            .map_err(|e: T::Err| self.reject(field, e.to_string()))
            .ok()
    }

    fn permissions(&mut self, set: &'static PermissionSet) -> Permissions {
        if matches!(self.object.get("permissions"), None | Some(Value::Null)) {
            self.reject("permissions", "is required");
        }
        self.optional_permissions(set).unwrap_or_default()
    }

    /// The permissions, if the member is there and not null.
    fn optional_permissions(&mut self, set: &'static PermissionSet) -> Option<Permissions> {
        let items = match self.object.remove("permissions") {
            Some(Value::Array(items)) => items,
            None | Some(Value::Null) => return None,
            Some(_) => {
                self.reject("permissions", "must be an array of permissions");
                return Some(Permissions::default());
            }
        };
        let mut permissions = Permissions::default();
        for item in items {
            match item.as_str().map(|name| set.parse(name)) {
                Some(Ok(permission)) => permissions = permissions.with(permission),
                Some(Err(unknown)) => self.reject("permissions", unknown.to_string()),
                None => self.reject("permissions", "each permission must be a string"),
            }
        }
        Some(permissions)
    }

    /// A whole number, 0 or more, if the member is there.
    fn whole_number(&mut self, field: &str) -> Option<u64> {
        match self.object.remove(field) {
            None | Some(Value::Null) => None,
            Some(value) => value.as_u64().or_else(|| {
                self.reject(field, "must be a whole number, 0 or more");
                None
            }),
        }
    }

    /// A key's own limits: `rate_limits` (a list of at most 4) or `rate_limit` (one, as
    /// before lists), not both; `null` or absent for its plan's.
    fn rate_limits(&mut self) -> Option<RateLimits> {
        let list = self.object.remove("rate_limits").filter(|v| !v.is_null());
        let one = self.object.remove("rate_limit").filter(|v| !v.is_null());
        match (list, one) {
            (Some(_), Some(_)) => {
                self.reject("rate_limits", "give rate_limits or rate_limit, not both");
                None
            }
            (Some(list), None) => RateLimits::from_json(&list)
                .map_err(|reason| self.reject("rate_limits", reason))
                .ok(),
            (None, Some(one)) => {
                let limit = RateLimit::from_json(&one).map(RateLimits::one);
                if limit.is_none() {
                    self.reject("rate_limit", LIMIT_FORM);
                }
                limit
            }
            (None, None) => None,
        }
    }

    /// `allowed_networks`: absent (`None`), `null` or `[]` for anywhere (`Some(None)`), or
    /// a list of addresses and CIDRs.
    #[allow(clippy::option_option)] // absent, null, or a list
    fn allowed_networks(&mut self) -> Option<Option<Networks>> {
        const FIELD: &str = "allowed_networks";
        let value = self.object.remove(FIELD)?;
        let texts = match value {
            Value::Null => return Some(None),
            Value::Array(items) if items.is_empty() => return Some(None),
            Value::Array(items) => items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect::<Option<Vec<String>>>(),
            _ => None,
        };
        let Some(texts) = texts else {
            self.reject(
                FIELD,
                "must be a list of addresses and networks (CIDR), or null",
            );
            return None;
        };
        match Networks::parse(texts) {
            Ok(networks) => Some(Some(networks)),
            Err(error) => {
                self.reject(FIELD, error.to_string());
                None
            }
        }
    }

    /// `value`, with the errors found and one for each member left unread.
    pub(crate) fn finish<T>(mut self, value: T) -> Parsed<T> {
        for member in std::mem::take(&mut self.object).keys() {
            self.reject(member, "unknown field");
        }
        Parsed {
            value,
            errors: self.errors,
            unreadable: self.unreadable,
        }
    }

    /// An account's name and plan (`POST /accounts`).
    #[cfg(feature = "admin")]
    pub(crate) fn account(mut self) -> Parsed<(String, Plan)> {
        let name = self.string("name", true).unwrap_or_default();
        let plan = self.string("plan", true).unwrap_or_default();
        self.finish((name, Plan::new(plan)))
    }

    /// A plan (`PATCH /accounts/{id}`).
    #[cfg(feature = "admin")]
    pub(crate) fn plan(mut self) -> Parsed<Plan> {
        let plan = self.string("plan", true).unwrap_or_default();
        self.finish(Plan::new(plan))
    }

    /// What a new key should be (`POST …/keys`); with `take_limit`, limits of its own
    /// (without, `rate_limits` and `rate_limit` are unknown fields).
    pub(crate) fn key_spec(
        mut self,
        set: &'static PermissionSet,
        take_limit: bool,
    ) -> Parsed<KeySpec> {
        let name = self.string("name", true).unwrap_or_default();
        let permissions = self.permissions(set);
        let expiration = self.parsed::<Expiration>("expiration").unwrap_or_default();
        let environment = self.parsed::<Environment>("environment");
        let rate_limits = if take_limit { self.rate_limits() } else { None };
        let allowed_networks = self.allowed_networks().flatten();
        let mut spec = KeySpec::new(name, permissions).expiration(expiration);
        spec.environment = environment;
        spec.rate_limits = rate_limits;
        spec.allowed_networks = allowed_networks;
        self.finish(spec)
    }

    /// How to rotate (`POST …/rotate`): a grace (default a day), an expiration, and the
    /// replacement's permissions and networks.
    pub(crate) fn rotation(mut self, set: &'static PermissionSet) -> Parsed<Rotation> {
        const DAY: u64 = 86_400;
        let grace = self.whole_number("grace_seconds").unwrap_or(DAY);
        let mut rotation = Rotation::grace(Duration::from_secs(grace));
        rotation.expiration = self.parsed::<Expiration>("expiration");
        rotation.permissions = self.optional_permissions(set);
        rotation.allowed_networks = self.allowed_networks();
        self.finish(rotation)
    }
}
