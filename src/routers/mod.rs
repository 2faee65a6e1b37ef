//! What the crate's routers share: reading bodies strictly, field by field, into what the
//! [`KeyManager`](crate::KeyManager) takes; answering every error as problem+json; and
//! the answers to paths, methods and bodies no route takes.

#[cfg(any(feature = "admin", feature = "settings"))]
mod fields;
#[cfg(any(feature = "admin", feature = "settings"))]
pub(crate) mod keys;
#[cfg(any(feature = "admin", feature = "settings"))]
pub(crate) mod openapi;
#[cfg(any(feature = "admin", feature = "secret-scanning"))]
pub(crate) mod per_address;

#[cfg(any(feature = "admin", feature = "settings"))]
pub(crate) use fields::Fields;

use std::{convert::Infallible, time::Duration};

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Router,
};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Serialize;
use serde_json::Value;

use crate::{
    manage::FieldError,
    quiet::{warn_quietly, Quiet},
    reject::{plan_required, render_problem, PROBLEM_JSON},
    ManageError, Plan, Problem, Profile,
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
#[cfg(any(feature = "admin", feature = "settings"))]
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
