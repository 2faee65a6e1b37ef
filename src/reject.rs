//! Every way the layer refuses a request, and the response it gets.
//!
//! Each [`Rejection`] becomes an `application/problem+json` body (RFC 9457) with a stable
//! `code`, plus `WWW-Authenticate` on 401 and 403 and the rate-limit headers on 429. A
//! [`Responder`] given to the layer may answer differently (its own status, headers, body
//! and texts); either way the typed rejection rides in the response's extensions.
//!
//! | status | `code` | cause |
//! |---|---|---|
//! | 401 | `missing_api_key` | no `Authorization` header |
//! | 401 | `invalid_authorization` | not `Bearer <token>` |
//! | 401 | `invalid_api_key` | malformed, unknown, deleted or revoked key |
//! | 401 | `expired_api_key` | past its expiration (or its rotation grace) |
//! | 401 | `disabled_api_key` | disabled by its owner or an operator |
//! | 402 | `plan_required` | the account's plan has no API keys (Nouvel: `starter`, `growth`) |
//! | 403 | `missing_permission` | the key lacks the route's permission |
//! | 403 | `route_not_allowed` | the route is in no table entry |
//! | 429 | `rate_limited` | over a sliding window of the key's limits |
//! | 429 | `quota_exceeded` | over a daily or monthly quota of the key's limits |
//! | 503 | `auth_unavailable` | key store or limiter failed or timed out |

use std::borrow::Cow;

use bytes::Bytes;
use http::{header, Extensions, HeaderMap, HeaderValue, Response, StatusCode};
use serde::Serialize;

use crate::{
    limit::{header_value, number, Period, Scope},
    plan::or_list,
    usage::Outcome,
    ConcurrentMap, Decision, KeyFormatError, Permission, Plan, Profile, RateLimit,
};

/// Why the layer refused a request. Found in the response's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// 401: no `Authorization` header.
    MissingApiKey,
    /// 401: the header is not `Bearer <token>` (another scheme, no token, bytes that are
    /// not visible ASCII, or several `Authorization` headers).
    InvalidAuthorization,
    /// 401: the token is not a well-formed key.
    MalformedApiKey(KeyFormatError),
    /// 401: no live key has this digest (unknown, deleted and revoked look the same).
    UnknownApiKey,
    /// 401: the key has expired.
    ExpiredApiKey,
    /// 401: the key is disabled.
    DisabledApiKey,
    /// 402: the key's account is on a plan without API keys.
    PlanRequired(Plan),
    /// 403: the key lacks the route's permission.
    MissingPermission(Permission),
    /// 403: the route is in no table entry and unlisted routes are denied.
    RouteNotAllowed,
    /// 403: the key may be used only from networks the request's client address is not in.
    NetworkNotAllowed,
    /// 429: the key is over a limit: a sliding window (`rate_limited`) or a calendar quota
    /// (`quota_exceeded`), the decision's [`limit`](Decision::limit).
    RateLimited(Box<Decision>),
    /// 503: the key store or the limiter failed or timed out.
    Unavailable,
}

/// A refusal as data, whatever refused: the layer (from a [`Rejection`]), the extractor,
/// the admin and settings routers, or the application's own code. Its status, its stable
/// `code`, a sentence for the caller, and the extra members of its kind
/// (`required_permission`, `plan`, `retry_after`, `errors`, …).
///
/// [`Profile::respond`] answers it as every refusal of the application is answered:
/// problem+json in the profile's style, through its [`Responder`] if it has one.
///
/// ```
/// use http::StatusCode;
/// use nouvel_auth::{Problem, Profile};
///
/// let problem = Problem::new(StatusCode::NOT_FOUND, "not_found", "No such city.")
///     .with("city", "Atlantis");
/// let response = Profile::nouvel().respond(&problem);
/// assert_eq!(response.status(), StatusCode::NOT_FOUND);
/// assert_eq!(response.headers()["content-type"], "application/problem+json");
/// let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
/// assert_eq!(body["code"], "not_found");
/// assert_eq!(body["city"], "Atlantis");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    status: StatusCode,
    code: Cow<'static, str>,
    detail: Cow<'static, str>,
    extra: serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    /// A problem with `status`, `code` and `detail`, and no extra member yet.
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        detail: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            code: code.into(),
            detail: detail.into(),
            extra: serde_json::Map::new(),
        }
    }

    /// The same problem with the extra member `name` (a member of the problem body).
    #[must_use]
    pub fn with(mut self, name: &str, value: impl Serialize) -> Self {
        let value = serde_json::to_value(value).unwrap_or_default();
        self.extra.insert(name.to_owned(), value);
        self
    }

    /// The HTTP status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable, machine-readable code.
    #[must_use]
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The sentence that helps the caller fix the request.
    #[must_use]
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The members of its kind beyond the RFC 9457 ones and `code`.
    #[must_use]
    pub fn extra(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.extra
    }
}

/// How the application answers refusals when the problem+json default will not do: its
/// own status, headers, body or texts, for every refusal of the crate (the layer's, the
/// extractor's, both routers') and of its own ([`Profile::respond`]). Works with any
/// framework, since the body is plain bytes. The layer puts the typed [`Rejection`] in the
/// response's extensions afterwards.
///
/// A closure `Fn(&Problem, Response<Bytes>) -> Response<Bytes>` is a responder. Write its
/// arguments' types, `|problem: &Problem, default: Response<Bytes>| …`, as below: Rust
/// infers a closure's signature from `Fn` bounds only, and this is a trait of its own. A
/// `fn` item needs nothing.
///
/// ```
/// use bytes::Bytes;
/// use http::{Response, StatusCode};
/// use nouvel_auth::{MemoryKeyStore, Problem, Profile};
///
/// // Plain text for 401s, the default for the rest.
/// let profile = Profile::nouvel().responder(|problem: &Problem, default: Response<Bytes>| {
///     if problem.status() != StatusCode::UNAUTHORIZED {
///         return default;
///     }
///     Response::builder()
///         .status(StatusCode::UNAUTHORIZED)
///         .header("content-type", "text/plain")
///         .body(Bytes::from(problem.detail().to_owned()))
///         .unwrap()
/// });
/// let layer = profile.layer(MemoryKeyStore::new());
/// ```
pub trait Responder: Send + Sync + 'static {
    /// The response to `problem`. `default` is the problem+json one, made in advance:
    /// return it as it is for the problems this responder leaves alone.
    fn respond(&self, problem: &Problem, default: Response<Bytes>) -> Response<Bytes>;
}

impl<F> Responder for F
where
    F: Fn(&Problem, Response<Bytes>) -> Response<Bytes> + Send + Sync + 'static,
{
    fn respond(&self, problem: &Problem, default: Response<Bytes>) -> Response<Bytes> {
        self(problem, default)
    }
}

impl Profile {
    /// `problem` answered as this application answers every refusal: problem+json in the
    /// profile's style, through its responder if it has one.
    #[must_use]
    pub fn respond(&self, problem: &Problem) -> Response<Bytes> {
        let body = render_problem(
            problem.status,
            &problem.code,
            &problem.detail,
            &problem.extra,
            self.type_base(),
        );
        let mut response = Response::new(body);
        *response.status_mut() = problem.status;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, PROBLEM_JSON);
        self.through_responder(problem, response)
    }

    /// `default`, or what the profile's responder makes of it.
    pub(crate) fn through_responder(
        &self,
        problem: &Problem,
        default: Response<Bytes>,
    ) -> Response<Bytes> {
        match self.responder_handle() {
            Some(responder) => responder.respond(problem, default),
            None => default,
        }
    }
}

/// An RFC 9457 problem body, members in the RFC's order.
#[derive(Serialize)]
struct ProblemBody<'a, E> {
    #[serde(rename = "type")]
    problem_type: &'a str,
    title: &'a str,
    status: u16,
    detail: &'a str,
    code: &'a str,
    #[serde(flatten)]
    extra: E,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Extra<'a> {
    None {},
    Plan {
        plan: &'a Plan,
        required_plans: &'a [Plan],
    },
    Permission {
        required_permission: Permission,
    },
    RateLimit {
        limit: u32,
        window_seconds: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        scope: Option<&'static str>,
        retry_after: u64,
    },
    Quota {
        limit: u32,
        period: &'static str,
        scope: &'static str,
        retry_after: u64,
    },
}

impl Rejection {
    /// The HTTP status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingApiKey
            | Self::InvalidAuthorization
            | Self::MalformedApiKey(_)
            | Self::UnknownApiKey
            | Self::ExpiredApiKey
            | Self::DisabledApiKey => StatusCode::UNAUTHORIZED,
            Self::PlanRequired(_) => StatusCode::PAYMENT_REQUIRED,
            Self::MissingPermission(_) | Self::RouteNotAllowed | Self::NetworkNotAllowed => {
                StatusCode::FORBIDDEN
            }
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable, machine-readable `code` of the body.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingApiKey => "missing_api_key",
            Self::InvalidAuthorization => "invalid_authorization",
            Self::MalformedApiKey(_) | Self::UnknownApiKey => "invalid_api_key",
            Self::ExpiredApiKey => "expired_api_key",
            Self::DisabledApiKey => "disabled_api_key",
            Self::PlanRequired(_) => "plan_required",
            Self::MissingPermission(_) => "missing_permission",
            Self::RouteNotAllowed => "route_not_allowed",
            Self::NetworkNotAllowed => "network_not_allowed",
            Self::RateLimited(decision) if decision.limit.window().is_none() => "quota_exceeded",
            Self::RateLimited(_) => "rate_limited",
            Self::Unavailable => "auth_unavailable",
        }
    }

    /// The rejection as data, in `profile`'s words: what its problem+json body says, and
    /// what a [`Responder`] is given.
    #[must_use]
    pub fn problem(&self, profile: &Profile) -> Problem {
        let extra = match serde_json::to_value(extra(self, profile)) {
            Ok(serde_json::Value::Object(members)) => members,
            _ => serde_json::Map::new(),
        };
        Problem {
            status: self.status(),
            code: Cow::Borrowed(self.code()),
            detail: detail(self, profile),
            extra,
        }
    }

    /// How the rejection counts in the key's [`Usage`](crate::Usage); `None` when no key
    /// authenticated, or the failure was ours (503).
    pub(crate) fn outcome(&self) -> Option<Outcome> {
        match self {
            Self::PlanRequired(_) => Some(Outcome::PlanRequired),
            Self::MissingPermission(_) => Some(Outcome::MissingPermission),
            Self::RouteNotAllowed => Some(Outcome::RouteNotAllowed),
            Self::RateLimited(_) => Some(Outcome::RateLimited),
            _ => None,
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750), on 401 and 403 only.
    fn challenge(&self, realm: &str) -> Option<HeaderValue> {
        let error = match self {
            Self::MissingApiKey | Self::InvalidAuthorization => "",
            Self::MalformedApiKey(_) | Self::UnknownApiKey => {
                r#", error="invalid_token", error_description="The API key is invalid""#
            }
            Self::ExpiredApiKey => {
                r#", error="invalid_token", error_description="The API key has expired""#
            }
            Self::DisabledApiKey => {
                r#", error="invalid_token", error_description="The API key is disabled""#
            }
            Self::MissingPermission(permission) => {
                return Some(header_value(format_args!(
                    r#"Bearer realm="{realm}", error="insufficient_scope", scope="{permission}""#
                )));
            }
            Self::RouteNotAllowed => r#", error="insufficient_scope""#,
            Self::NetworkNotAllowed => {
                r#", error="insufficient_scope", error_description="The API key may not be used from this network""#
            }
            _ => return None,
        };
        Some(header_value(format_args!(
            r#"Bearer realm="{realm}"{error}"#
        )))
    }
}

/// The layer's answers to rejections: the problem+json bodies and challenges of every
/// constant rejection, rendered once per layer (a refusal then costs no JSON and no
/// formatting), and the application's [`Responder`], if it has one.
#[derive(Clone)]
pub(crate) struct Problems {
    profile: Profile,
    rendered: Vec<Rendered>,
    /// 429 bodies by limit and seconds to wait, the only things they vary by.
    rate_limited: ConcurrentMap<(RateLimit, u64), Bytes>,
}

impl std::fmt::Debug for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Problems")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

/// How many 429 bodies a layer keeps before it starts afresh (a few hundred bytes each).
const RATE_LIMITED_KEPT: usize = 1024;

#[derive(Debug, Clone)]
struct Rendered {
    rejection: Rejection,
    body: Bytes,
    challenge: Option<HeaderValue>,
}

impl Problems {
    pub(crate) fn new(profile: Profile) -> Self {
        let rendered = constant_rejections(&profile)
            .map(|rejection| Rendered {
                body: render(&rejection, &profile),
                challenge: rejection.challenge(profile.realm_name()),
                rejection,
            })
            .collect();
        Self {
            profile,
            rendered,
            rate_limited: ConcurrentMap::default(),
        }
    }

    pub(crate) fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The response refusing a request for `rejection`, written into `headers` and
    /// `extensions` after emptying them: given the refused request's, the response reuses
    /// their allocations instead of making its own.
    pub(crate) fn respond(
        &self,
        rejection: &Rejection,
        mut headers: HeaderMap,
        mut extensions: Extensions,
    ) -> Response<Bytes> {
        let (body, challenge) = self.body_and_challenge(rejection);
        headers.clear();
        headers.insert(header::CONTENT_TYPE, PROBLEM_JSON);
        if let Some(challenge) = challenge {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        if let Rejection::RateLimited(decision) = rejection {
            decision.write_headers(&mut headers);
            headers.insert(header::RETRY_AFTER, number(decision.retry_after()));
        }
        extensions.clear();
        let mut response = Response::new(body);
        *response.status_mut() = rejection.status();
        *response.headers_mut() = headers;
        if self.profile.responder_handle().is_some() {
            response = self
                .profile
                .through_responder(&rejection.problem(&self.profile), response);
            extensions.extend(std::mem::take(response.extensions_mut()));
        }
        extensions.insert(rejection.clone());
        *response.extensions_mut() = extensions;
        response
    }

    /// The body and `WWW-Authenticate` challenge of `rejection`'s response: rendered in
    /// advance for the constant rejections, else now.
    fn body_and_challenge(&self, rejection: &Rejection) -> (Bytes, Option<HeaderValue>) {
        match self.rendered.iter().find(|r| r.rejection == *rejection) {
            Some(rendered) => (rendered.body.clone(), rendered.challenge.clone()),
            None => (
                self.body(rejection),
                rejection.challenge(self.profile.realm_name()),
            ),
        }
    }

    /// A body not rendered in advance. A client over its limit may send many requests, and
    /// their 429s differ only by limit and wait, so each 429 body is rendered once and kept
    /// (a bounded number of them).
    fn body(&self, rejection: &Rejection) -> Bytes {
        let Rejection::RateLimited(decision) = rejection else {
            return render(rejection, &self.profile);
        };
        let key = (decision.limit, decision.retry_after());
        if let Some(body) = self.rate_limited.get(&key) {
            return body.clone();
        }
        if self.rate_limited.len() >= RATE_LIMITED_KEPT {
            self.rate_limited.clear();
        }
        let body = render(rejection, &self.profile);
        self.rate_limited.insert(key, body.clone());
        body
    }
}

/// Every rejection whose response never varies for a profile: all but
/// [`RateLimited`](Rejection::RateLimited) and 402s on plans it does not know.
fn constant_rejections(profile: &Profile) -> impl Iterator<Item = Rejection> + '_ {
    let prefix = profile.prefix();
    let fixed = [
        Rejection::MissingApiKey,
        Rejection::InvalidAuthorization,
        Rejection::UnknownApiKey,
        Rejection::ExpiredApiKey,
        Rejection::DisabledApiKey,
        Rejection::RouteNotAllowed,
        Rejection::NetworkNotAllowed,
        Rejection::Unavailable,
    ];
    let malformed = [
        KeyFormatError::Length(prefix),
        KeyFormatError::Prefix(prefix),
        KeyFormatError::Charset(prefix),
        KeyFormatError::Checksum,
    ]
    .map(Rejection::MalformedApiKey);
    let plans = profile
        .plans()
        .without_api_keys()
        .cloned()
        .map(Rejection::PlanRequired);
    let permissions = profile
        .permissions()
        .iter()
        .map(Rejection::MissingPermission);
    fixed
        .into_iter()
        .chain(malformed)
        .chain(plans)
        .chain(permissions)
}

/// A sentence that helps the caller fix the request. Never echoes the key.
fn detail(rejection: &Rejection, profile: &Profile) -> Cow<'static, str> {
    match rejection {
        Rejection::MissingApiKey => format!(
            "Send your API key as `Authorization: Bearer {}…`.",
            profile.prefix()
        )
        .into(),
        Rejection::InvalidAuthorization => {
            "The Authorization header must be exactly one `Bearer <key>`.".into()
        }
        Rejection::MalformedApiKey(why) => format!("The API key is malformed: {why}.").into(),
        Rejection::UnknownApiKey => format!(
            "The API key is not valid: it may have been deleted or revoked. Create a new one{}.",
            in_settings(profile)
        )
        .into(),
        Rejection::ExpiredApiKey => format!(
            "The API key has expired. Create a new one{}.",
            in_settings(profile)
        )
        .into(),
        Rejection::DisabledApiKey => format!(
            "The API key is disabled. Enable it again{}.",
            in_settings(profile)
        )
        .into(),
        Rejection::PlanRequired(plan) => {
            plan_required(plan, profile.plans().with_api_keys().unwrap_or_default()).into()
        }
        Rejection::MissingPermission(permission) => {
            format!("This key lacks the `{permission}` permission that this route needs.").into()
        }
        Rejection::RouteNotAllowed => "No API key may use this route.".into(),
        Rejection::NetworkNotAllowed => {
            "This API key may be used only from the networks allowed for it, and this request comes from another.".into()
        }
        Rejection::RateLimited(decision) => {
            let limit = decision.limit;
            let whose = match limit.scope() {
                Scope::Key => "",
                Scope::Account => " for this account",
            };
            match limit.period() {
                Period::Window(window) => format!(
                    "Over the limit of {} requests per {} seconds{whose}; retry in {} seconds.",
                    limit.requests(),
                    window.as_secs(),
                    decision.retry_after()
                ),
                Period::Day | Period::Month => format!(
                    "Over the quota of {} requests per {} (UTC){whose}; it starts again in {} seconds.",
                    limit.requests(),
                    period_name(limit.period()),
                    decision.retry_after()
                ),
            }
            .into()
        }
        Rejection::Unavailable => "Authentication is unavailable right now; retry shortly.".into(),
    }
}

/// `day` or `month`, as a quota's `period` member says it.
fn period_name(period: Period) -> &'static str {
    match period {
        Period::Month => "month",
        Period::Day | Period::Window(_) => "day",
    }
}

/// ` in Settings → API Keys`, where the profile says its users manage keys.
fn in_settings(profile: &Profile) -> String {
    profile
        .key_settings_place()
        .map_or_else(String::new, |place| format!(" in {place}"))
}

/// The detail of a 402, from the layer or from the admin API.
pub(crate) fn plan_required(plan: &Plan, required: &[Plan]) -> String {
    let names: Vec<String> = required.iter().map(|p| capitalized(p.as_str())).collect();
    format!(
        "API keys need the {} plan; this account is on the {plan} plan.",
        or_list(names.iter().map(String::as_str))
    )
}

fn capitalized(name: &str) -> String {
    let mut chars = name.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

/// The problem+json body of `rejection` in `profile`'s words.
fn render(rejection: &Rejection, profile: &Profile) -> Bytes {
    render_problem(
        rejection.status(),
        rejection.code(),
        &detail(rejection, profile),
        extra(rejection, profile),
        profile.type_base(),
    )
}

/// The extra members of `rejection`'s problem.
fn extra<'a>(rejection: &'a Rejection, profile: &'a Profile) -> Extra<'a> {
    let required = profile.plans().with_api_keys().unwrap_or_default();
    match rejection {
        Rejection::PlanRequired(plan) => Extra::Plan {
            plan,
            required_plans: required,
        },
        Rejection::MissingPermission(permission) => Extra::Permission {
            required_permission: *permission,
        },
        Rejection::RateLimited(decision) => {
            let (limit, retry_after) = (decision.limit, decision.retry_after());
            let scope = match limit.scope() {
                Scope::Key => "key",
                Scope::Account => "account",
            };
            match limit.window() {
                Some(window) => Extra::RateLimit {
                    limit: limit.requests(),
                    window_seconds: window.as_secs(),
                    scope: (limit.scope() == Scope::Account).then_some(scope),
                    retry_after,
                },
                None => Extra::Quota {
                    limit: limit.requests(),
                    period: period_name(limit.period()),
                    scope,
                    retry_after,
                },
            }
        }
        _ => Extra::None {},
    }
}

/// The body of an `application/problem+json` response: the RFC 9457 members, `code`, and
/// `extra` flattened after them. The layer's rejections and the admin API's errors both
/// use it.
pub(crate) fn render_problem(
    status: StatusCode,
    code: &str,
    detail: &str,
    extra: impl Serialize,
    type_base: Option<&str>,
) -> Bytes {
    let problem_type = match type_base {
        Some(base) => Cow::Owned(format!("{base}{code}")),
        None => Cow::Borrowed("about:blank"),
    };
    // Room for the longest body in one allocation (serde_json would start at 128 bytes).
    let mut body = Vec::with_capacity(384);
    let problem = ProblemBody {
        problem_type: &problem_type,
        title: status.canonical_reason().unwrap_or_default(),
        status: status.as_u16(),
        detail,
        code,
        extra,
    };
    serde_json::to_writer(&mut body, &problem).expect("a problem serializes");
    Bytes::from(body)
}

/// The `Content-Type` of every problem body.
pub(crate) const PROBLEM_JSON: HeaderValue = HeaderValue::from_static("application/problem+json");

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn refusal(limit: RateLimit, reset_ms: u64) -> Rejection {
        Rejection::RateLimited(Box::new(Decision {
            allowed: false,
            limit,
            remaining: 0,
            reset: Duration::from_millis(reset_ms),
            limits: limit.into(),
            at: time::OffsetDateTime::UNIX_EPOCH,
        }))
    }

    fn body(problems: &Problems, rejection: &Rejection) -> Bytes {
        let response = problems.respond(rejection, HeaderMap::new(), Extensions::new());
        response.into_body()
    }

    #[test]
    fn a_429_body_is_rendered_once_per_limit_and_wait() {
        let problems = Problems::new(Profile::nouvel());
        let limit = RateLimit::default();
        // 29.2 s and 29.9 s both say "retry in 30 seconds": one body, shared.
        let first = body(&problems, &refusal(limit, 29_200));
        let again = body(&problems, &refusal(limit, 29_900));
        assert_eq!(first.as_ptr(), again.as_ptr());
        let text = std::str::from_utf8(&first).unwrap();
        assert!(text.contains(r#""retry_after":30"#), "{text}");
        // Another wait or another limit says so.
        let later = body(&problems, &refusal(limit, 45_000));
        assert!(std::str::from_utf8(&later)
            .unwrap()
            .contains(r#""retry_after":45"#));
        let other = body(
            &problems,
            &refusal(RateLimit::new(5, Duration::from_secs(1)), 900),
        );
        let other = std::str::from_utf8(&other).unwrap();
        assert!(
            other.contains(r#""limit":5,"window_seconds":1,"retry_after":1"#),
            "{other}"
        );
    }

    #[test]
    fn kept_429_bodies_stay_bounded() {
        let problems = Problems::new(Profile::nouvel());
        let limit = RateLimit::new(10, Duration::from_secs(100_000));
        for seconds in 1..=(RATE_LIMITED_KEPT as u64 + 10) {
            body(&problems, &refusal(limit, seconds * 1000));
        }
        assert!(problems.rate_limited.len() <= RATE_LIMITED_KEPT);
        let text = body(&problems, &refusal(limit, 7_000));
        assert!(std::str::from_utf8(&text)
            .unwrap()
            .contains(r#""retry_after":7"#));
    }
}
