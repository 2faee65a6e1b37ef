//! What the crate's routers share: reading bodies strictly, field by field, into what the
//! [`KeyManager`](crate::KeyManager) takes; answering every error as problem+json; and
//! the answers to paths, methods and bodies no route takes.

pub(crate) mod keys;
pub(crate) mod openapi;
#[cfg(any(feature = "admin", feature = "secret-scanning"))]
pub(crate) mod per_address;

use std::{convert::Infallible, fmt, time::Duration};

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Router,
};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::{
    limit::LIMIT_FORM,
    manage::{manager::KeyDraft, FieldError, Rotation},
    network::Networks,
    quiet::{warn_quietly, Quiet},
    reject::{plan_required, render_problem, PROBLEM_JSON},
    Environment, Expiration, KeySpec, ManageError, Permission, PermissionSet, Permissions, Plan,
    Problem, Profile, RateLimit, RateLimits,
};

/// The largest body a router reads: 64 KiB.
const MAX_BODY: usize = 64 * 1024;
/// How long a router waits for a whole body: a client that holds one back holds no
/// connection longer.
const BODY_DEADLINE: Duration = Duration::from_secs(30);

/// Why a request to one of the crate's routers failed: each becomes a problem+json answer.
#[derive(Debug)]
pub(crate) enum RouterError {
    /// 401: no or the wrong admin token.
    #[cfg(feature = "admin")]
    AdminUnauthorized,
    /// 401: nobody is signed in (the settings router).
    #[cfg(feature = "settings")]
    NotSignedIn,
    /// 403: a request that changes something came from another origin (the settings router).
    #[cfg(feature = "settings")]
    CsrfRejected,
    /// 400: the body is not JSON.
    MalformedJson(String),
    /// 404: no such route, or an id no store made (a segment that is not UTF-8 included).
    NoRoute,
    /// 405: the path exists with other methods, named in `Allow`.
    MethodNotAllowed(Option<HeaderValue>),
    /// 413: the body is over 64 KiB.
    PayloadTooLarge,
    /// 408: the body did not arrive within 30 s.
    RequestTimeout,
    /// 429: too many of something (`too_many_failures` of the admin token,
    /// `too_many_requests` of a scanner) from this client; retry after the wait.
    #[cfg(any(feature = "admin", feature = "secret-scanning"))]
    TooMany(Throttled, Duration),
    /// 401: a scanner's report without a good signature of a configured key.
    #[cfg(feature = "secret-scanning")]
    InvalidSignature,

    /// What the manager answered.
    Manage(ManageError),
}

impl From<ManageError> for RouterError {
    fn from(error: ManageError) -> Self {
        Self::Manage(error)
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum Extra<'a> {
    None {},
    Invalid {
        errors: Vec<FieldError>,
    },
    Plan {
        plan: &'a Plan,
        required_plans: &'a [Plan],
    },
    MaxKeys {
        max_keys: usize,
    },
}

impl IntoResponse for RouterError {
    fn into_response(self) -> Response {
        let not_found = || {
            (
                StatusCode::NOT_FOUND,
                "not_found",
                "No such route, account, or key in this account.".to_owned(),
                Extra::None {},
            )
        };
        let (status, code, detail, extra) = match &self {
            #[cfg(feature = "admin")]
            Self::AdminUnauthorized => (
                StatusCode::UNAUTHORIZED,
                "admin_unauthorized",
                "Send the admin token as `Authorization: Bearer <token>`.".to_owned(),
                Extra::None {},
            ),
            #[cfg(feature = "settings")]
            Self::NotSignedIn => (
                StatusCode::UNAUTHORIZED,
                "not_signed_in",
                "Sign in to manage the API keys of your account; API keys cannot.".to_owned(),
                Extra::None {},
            ),
            #[cfg(feature = "settings")]
            Self::CsrfRejected => (
                StatusCode::FORBIDDEN,
                "csrf_rejected",
                "This request must come from the settings page itself: its Origin is another site's, or missing.".to_owned(),
                Extra::None {},
            ),
            Self::MalformedJson(why) => (
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("The body is not valid JSON: {why}."),
                Extra::None {},
            ),
            Self::NoRoute | Self::Manage(ManageError::NotFound) => not_found(),
            Self::MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "This path does not take this method; see `Allow`.".to_owned(),
                Extra::None {},
            ),
            Self::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("The body is over {} KiB.", MAX_BODY / 1024),
                Extra::None {},
            ),
            Self::RequestTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "The body did not arrive within {} seconds.",
                    BODY_DEADLINE.as_secs()
                ),
                Extra::None {},
            ),
            #[cfg(any(feature = "admin", feature = "secret-scanning"))]
            Self::TooMany(what, wait) => (
                StatusCode::TOO_MANY_REQUESTS,
                what.code(),
                format!(
                    "Too many {} from this address; retry in {} seconds.",
                    what.noun(),
                    retry_after(*wait)
                ),
                Extra::None {},
            ),
            #[cfg(feature = "secret-scanning")]
            Self::InvalidSignature => (
                StatusCode::UNAUTHORIZED,
                "invalid_signature",
                "The report is not signed by a configured key of the scanner.".to_owned(),
                Extra::None {},
            ),
            Self::Manage(ManageError::Invalid(errors)) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                "Some fields cannot be accepted; see `errors`.".to_owned(),
                Extra::Invalid {
                    errors: on_the_wire(errors),
                },
            ),
            Self::Manage(ManageError::AlreadyRotated) => (
                StatusCode::CONFLICT,
                "already_rotated",
                "This key was rotated already; rotate its replacement instead.".to_owned(),
                Extra::None {},
            ),
            Self::Manage(ManageError::TooManyKeys { max }) => (
                StatusCode::CONFLICT,
                "too_many_keys",
                format!("This account holds {max} live keys, as many as it may: delete one first."),
                Extra::MaxKeys { max_keys: *max },
            ),
            Self::Manage(ManageError::PlanRequired { plan, required }) => (
                StatusCode::PAYMENT_REQUIRED,
                "plan_required",
                plan_required(plan, required),
                Extra::Plan {
                    plan,
                    required_plans: required,
                },
            ),
            Self::Manage(error) => {
                static STORE: Quiet = Quiet::new();
                warn_quietly!(STORE, %error, "nouvel-auth: the key store is unavailable; answering 503");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "auth_unavailable",
                    "The key store is unavailable right now; retry shortly.".to_owned(),
                    Extra::None {},
                )
            }
        };
        // Rendered here in no one's style, so the guard of the admin token answers alone
        // too; the routers answer it again as their profile does (`answered_in`).
        let mut problem = Problem::new(status, code, detail);
        if let Ok(Value::Object(members)) = serde_json::to_value(extra) {
            for (name, value) in members {
                problem = problem.with(&name, value);
            }
        }
        let body = render_problem(status, code, problem.detail(), problem.extra(), None);
        let mut response = (status, [(header::CONTENT_TYPE, PROBLEM_JSON)], body).into_response();
        response.extensions_mut().insert(problem);
        match self {
            #[cfg(feature = "admin")]
            Self::AdminUnauthorized => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer realm="admin""#),
                );
            }
            Self::MethodNotAllowed(Some(allow)) => {
                response.headers_mut().insert(header::ALLOW, allow);
            }
            #[cfg(any(feature = "admin", feature = "secret-scanning"))]
            Self::TooMany(_, wait) => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after(wait)));
            }
            _ => {}
        }
        response
    }
}

/// What a client sent too many of.
#[cfg(any(feature = "admin", feature = "secret-scanning"))]
#[derive(Debug, Clone, Copy)]
pub(crate) enum Throttled {
    /// Failed authentications with the admin token.
    #[cfg(feature = "admin")]
    Failures,
    /// Requests (a scanner's reports).
    #[cfg(feature = "secret-scanning")]
    Requests,
}

#[cfg(any(feature = "admin", feature = "secret-scanning"))]
impl Throttled {
    fn code(self) -> &'static str {
        match self {
            #[cfg(feature = "admin")]
            Self::Failures => "too_many_failures",
            #[cfg(feature = "secret-scanning")]
            Self::Requests => "too_many_requests",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            #[cfg(feature = "admin")]
            Self::Failures => "failed authentications",
            #[cfg(feature = "secret-scanning")]
            Self::Requests => "requests",
        }
    }
}

/// Whole seconds to wait, rounded up, at least 1.
#[cfg(any(feature = "admin", feature = "secret-scanning"))]
fn retry_after(wait: Duration) -> u64 {
    wait.as_millis()
        .div_ceil(1000)
        .max(1)
        .try_into()
        .unwrap_or(u64::MAX)
}

/// `router`'s answers as the profile says: every error problem+json in its style, and
/// every answer `Cache-Control: no-store`, since they carry keys, usage and account data
/// that no cache on the way may keep.
pub(crate) fn answered_in(router: Router, profile: Profile) -> Router {
    router.layer(axum::middleware::map_response_with_state(profile, answer))
}

async fn answer(
    axum::extract::State(profile): axum::extract::State<Profile>,
    mut response: Response,
) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // A refusal carries its problem as data: answer it as the profile answers any, keeping
    // the headers of its kind (`Allow`, `Retry-After`, `WWW-Authenticate`).
    let Some(problem) = response.extensions_mut().remove::<Problem>() else {
        return response;
    };
    if profile.type_base().is_none() && profile.responder_handle().is_none() {
        return response;
    }
    let (parts, _) = response.into_parts();
    let mut answered = profile.respond(&problem).map(axum::body::Body::from);
    for (name, value) in &parts.headers {
        if !answered.headers().contains_key(name) && name != header::CONTENT_LENGTH {
            answered.headers_mut().insert(name, value.clone());
        }
    }
    answered
}

/// `router` with every answer of its own in problem+json: 404 for paths it does not
/// have, 405 (with `Allow`) for methods a path does not take.
pub(crate) fn with_problems<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router
        .fallback(|| async { RouterError::NoRoute })
        .method_not_allowed_fallback(|| async { RouterError::MethodNotAllowed(None) })
}

/// A route answering `document` (an OpenAPI document, rendered once).
pub(crate) fn serve_document<S: Clone + Send + Sync + 'static>(
    document: &Value,
) -> axum::routing::MethodRouter<S> {
    let body = Bytes::from(document.to_string());
    axum::routing::get(move || async move {
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    })
}

/// A request's body, read whole: at most 64 KiB (413 past it), within 30 s (408 after).
pub(crate) struct Body(Result<Bytes, RouterError>);

impl Body {
    /// The bytes read, or why they could not be.
    #[cfg(feature = "secret-scanning")]
    pub(crate) fn bytes(self) -> Result<Bytes, RouterError> {
        self.0
    }
}

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = Infallible;

    async fn from_request(request: Request, _: &S) -> Result<Self, Infallible> {
        let body = Limited::new(request.into_body(), MAX_BODY);
        let read = match tokio::time::timeout(BODY_DEADLINE, body.collect()).await {
            Err(_) => Err(RouterError::RequestTimeout),
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(error)) if error.is::<LengthLimitError>() => Err(RouterError::PayloadTooLarge),
            Ok(Err(error)) => Err(RouterError::MalformedJson(error.to_string())),
        };
        Ok(Self(read))
    }
}

/// The order a request's field errors are reported in; members no endpoint knows come last.
const FIELD_ORDER: [&str; 10] = [
    "body",
    "name",
    "plan",
    "permissions",
    "expiration",
    "environment",
    "rate_limit",
    "rate_limits",
    "allowed_networks",
    "grace_seconds",
];

/// `errors` as the wire names them (the manager's `grace` is `grace_seconds`), in the
/// order of the fields.
fn on_the_wire(errors: &[FieldError]) -> Vec<FieldError> {
    let mut errors: Vec<FieldError> = errors
        .iter()
        .map(|e| match e.field.as_str() {
            "grace" => FieldError::new("grace_seconds", e.reason.clone()),
            _ => e.clone(),
        })
        .collect();
    errors.sort_by_key(|e| {
        FIELD_ORDER
            .iter()
            .position(|f| *f == e.field)
            .unwrap_or(FIELD_ORDER.len())
    });
    errors
}

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
