//! Every way the layer refuses a request, and the response it gets.
//!
//! Each [`Rejection`] becomes an `application/problem+json` body (RFC 9457) with a stable
//! `code`, plus `WWW-Authenticate` on 401 and 403 and the rate-limit headers on 429. The
//! rejection itself rides in the response's extensions, for logging or for a
//! `map_response` that wants to answer differently.
//!
//! | status | `code` | cause |
//! |---|---|---|
//! | 401 | `missing_api_key` | no `Authorization` header |
//! | 401 | `invalid_authorization` | not `Bearer <token>` |
//! | 401 | `invalid_api_key` | malformed, unknown, deleted or revoked key |
//! | 401 | `expired_api_key` | past its expiration (or its rotation grace) |
//! | 402 | `plan_required` | the account is on `starter` or `growth` |
//! | 403 | `missing_permission` | the key lacks the route's permission |
//! | 403 | `route_not_allowed` | the route is in no table entry |
//! | 429 | `rate_limited` | over the key's limit |
//! | 503 | `auth_unavailable` | key store or limiter failed or timed out |

use std::borrow::Cow;

use bytes::Bytes;
use http::{header, Extensions, HeaderMap, HeaderValue, Response, StatusCode};
use serde::Serialize;

use crate::{
    limit::{header_value, number, Decision},
    usage::Outcome,
    ConcurrentMap, KeyFormatError, Permission, Plan, RateLimit,
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
    /// 402: the key's account is on a plan without API keys.
    PlanRequired(Plan),
    /// 403: the key lacks the route's permission.
    MissingPermission(Permission),
    /// 403: the route is in no table entry and unlisted routes are denied.
    RouteNotAllowed,
    /// 429: the key is over its limit.
    RateLimited(Decision),
    /// 503: the key store or the limiter failed or timed out.
    Unavailable,
}

/// How problem bodies and challenges are written: the `type` base URI and the realm.
#[derive(Debug, Clone)]
pub(crate) struct ProblemStyle {
    pub(crate) type_base: Option<String>,
    pub(crate) realm: String,
}

impl Default for ProblemStyle {
    fn default() -> Self {
        Self {
            type_base: None,
            realm: "nouvel".to_owned(),
        }
    }
}

/// An RFC 9457 problem, members in the RFC's order.
#[derive(Serialize)]
struct Problem<'a, E> {
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
enum Extra {
    None {},
    Plan {
        plan: Plan,
        required_plans: [Plan; 2],
    },
    Permission {
        required_permission: Permission,
    },
    RateLimit {
        limit: u32,
        window_seconds: u64,
        retry_after: u64,
    },
}

impl Rejection {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingApiKey
            | Self::InvalidAuthorization
            | Self::MalformedApiKey(_)
            | Self::UnknownApiKey
            | Self::ExpiredApiKey => StatusCode::UNAUTHORIZED,
            Self::PlanRequired(_) => StatusCode::PAYMENT_REQUIRED,
            Self::MissingPermission(_) | Self::RouteNotAllowed => StatusCode::FORBIDDEN,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable, machine-readable `code` of the body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingApiKey => "missing_api_key",
            Self::InvalidAuthorization => "invalid_authorization",
            Self::MalformedApiKey(_) | Self::UnknownApiKey => "invalid_api_key",
            Self::ExpiredApiKey => "expired_api_key",
            Self::PlanRequired(_) => "plan_required",
            Self::MissingPermission(_) => "missing_permission",
            Self::RouteNotAllowed => "route_not_allowed",
            Self::RateLimited(_) => "rate_limited",
            Self::Unavailable => "auth_unavailable",
        }
    }

    /// A sentence that helps the caller fix the request. Never echoes the key.
    pub fn detail(&self) -> Cow<'static, str> {
        match self {
            Self::MissingApiKey => "Send your API key as `Authorization: Bearer nvl_…`.".into(),
            Self::InvalidAuthorization => {
                "The Authorization header must be exactly one `Bearer <key>`.".into()
            }
            Self::MalformedApiKey(why) => format!("The API key is malformed: {why}.").into(),
            Self::UnknownApiKey => {
                "The API key is not valid: it may have been deleted or revoked. Create a new one in Settings → API Keys.".into()
            }
            Self::ExpiredApiKey => {
                "The API key has expired. Create a new one in Settings → API Keys.".into()
            }
            Self::PlanRequired(plan) => format!(
                "API keys need the Scale or Business plan; this account is on the {} plan.",
                plan.as_str()
            )
            .into(),
            Self::MissingPermission(permission) => format!(
                "This key lacks the `{permission}` permission that this route needs."
            )
            .into(),
            Self::RouteNotAllowed => "No API key may use this route.".into(),
            Self::RateLimited(decision) => format!(
                "Over the limit of {} requests per {} seconds; retry in {} seconds.",
                decision.limit.requests(),
                decision.limit.window().as_secs(),
                decision.retry_after()
            )
            .into(),
            Self::Unavailable => {
                "Authentication is unavailable right now; retry shortly.".into()
            }
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

    /// The members beyond `type`, `title`, `status`, `detail` and `code`.
    fn extra_members(&self) -> Extra {
        match *self {
            Self::PlanRequired(plan) => Extra::Plan {
                plan,
                required_plans: Plan::WITH_API_KEYS,
            },
            Self::MissingPermission(required_permission) => Extra::Permission {
                required_permission,
            },
            Self::RateLimited(decision) => Extra::RateLimit {
                limit: decision.limit.requests(),
                window_seconds: decision.limit.window().as_secs(),
                retry_after: decision.retry_after(),
            },
            _ => Extra::None {},
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
            Self::MissingPermission(permission) => {
                return Some(header_value(format_args!(
                    r#"Bearer realm="{realm}", error="insufficient_scope", scope="{permission}""#
                )));
            }
            Self::RouteNotAllowed => r#", error="insufficient_scope""#,
            _ => return None,
        };
        Some(header_value(format_args!(
            r#"Bearer realm="{realm}"{error}"#
        )))
    }

    /// The problem+json response for this rejection, written into `headers` and
    /// `extensions` after emptying them: given the refused request's, the response reuses
    /// their allocations instead of making its own.
    pub(crate) fn to_response(
        &self,
        problems: &Problems,
        mut headers: HeaderMap,
        mut extensions: Extensions,
    ) -> Response<Bytes> {
        let (body, challenge) = problems.body_and_challenge(self);
        headers.clear();
        headers.insert(header::CONTENT_TYPE, PROBLEM_JSON);
        if let Some(challenge) = challenge {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        if let Self::RateLimited(decision) = self {
            decision.write_headers(&mut headers);
            headers.insert(header::RETRY_AFTER, number(decision.retry_after()));
        }
        extensions.clear();
        extensions.insert(self.clone());
        let mut response = Response::new(body);
        *response.status_mut() = self.status();
        *response.headers_mut() = headers;
        *response.extensions_mut() = extensions;
        response
    }

    fn render(&self, style: &ProblemStyle) -> Bytes {
        render_problem(
            self.status(),
            self.code(),
            &self.detail(),
            self.extra_members(),
            style,
        )
    }

    /// Every rejection whose response never varies: all but [`RateLimited`](Self::RateLimited).
    fn constant() -> impl Iterator<Item = Rejection> {
        use KeyFormatError::*;
        let fixed = [
            Self::MissingApiKey,
            Self::InvalidAuthorization,
            Self::UnknownApiKey,
            Self::ExpiredApiKey,
            Self::RouteNotAllowed,
            Self::Unavailable,
        ];
        let malformed = [Length, Prefix, Charset, Checksum].map(Self::MalformedApiKey);
        let plans = [Plan::Starter, Plan::Growth].map(Self::PlanRequired);
        let permissions = Permission::ALL.map(Self::MissingPermission);
        fixed
            .into_iter()
            .chain(malformed)
            .chain(plans)
            .chain(permissions)
    }
}

/// The problem bodies and challenges of every constant rejection, rendered once per layer:
/// a refusal then costs no JSON and no formatting.
#[derive(Debug, Clone)]
pub(crate) struct Problems {
    style: ProblemStyle,
    rendered: Vec<Rendered>,
    /// 429 bodies by limit and seconds to wait, the only things they vary by.
    rate_limited: ConcurrentMap<(RateLimit, u64), Bytes>,
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
    pub(crate) fn new(style: ProblemStyle) -> Self {
        let rendered = Rejection::constant()
            .map(|rejection| Rendered {
                body: rejection.render(&style),
                challenge: rejection.challenge(&style.realm),
                rejection,
            })
            .collect();
        Self {
            style,
            rendered,
            rate_limited: ConcurrentMap::default(),
        }
    }

    /// Renders them again in a changed style.
    pub(crate) fn restyle(&mut self, change: impl FnOnce(&mut ProblemStyle)) {
        let mut style = self.style.clone();
        change(&mut style);
        *self = Self::new(style);
    }

    /// The body and `WWW-Authenticate` challenge of `rejection`'s response: rendered in
    /// advance for the constant rejections, else now.
    fn body_and_challenge(&self, rejection: &Rejection) -> (Bytes, Option<HeaderValue>) {
        match self.rendered.iter().find(|r| r.rejection == *rejection) {
            Some(rendered) => (rendered.body.clone(), rendered.challenge.clone()),
            None => (self.body(rejection), rejection.challenge(&self.style.realm)),
        }
    }

    /// A body not rendered in advance. A client over its limit may send many requests, and
    /// their 429s differ only by limit and wait, so each 429 body is rendered once and kept
    /// (a bounded number of them).
    fn body(&self, rejection: &Rejection) -> Bytes {
        let Rejection::RateLimited(decision) = rejection else {
            return rejection.render(&self.style);
        };
        let key = (decision.limit, decision.retry_after());
        if let Some(body) = self.rate_limited.get(&key) {
            return body.clone();
        }
        if self.rate_limited.len() >= RATE_LIMITED_KEPT {
            self.rate_limited.clear();
        }
        let body = rejection.render(&self.style);
        self.rate_limited.insert(key, body.clone());
        body
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
    style: &ProblemStyle,
) -> Bytes {
    let problem_type = match &style.type_base {
        Some(base) => Cow::Owned(format!("{base}{code}")),
        None => Cow::Borrowed("about:blank"),
    };
    // Room for the longest body in one allocation (serde_json would start at 128 bytes).
    let mut body = Vec::with_capacity(384);
    let problem = Problem {
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
        Rejection::RateLimited(Decision {
            allowed: false,
            limit,
            remaining: 0,
            reset: Duration::from_millis(reset_ms),
        })
    }

    fn body(problems: &Problems, rejection: &Rejection) -> Bytes {
        let response = rejection.to_response(problems, HeaderMap::new(), Extensions::new());
        response.into_body()
    }

    #[test]
    fn a_429_body_is_rendered_once_per_limit_and_wait() {
        let problems = Problems::new(ProblemStyle::default());
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
        let problems = Problems::new(ProblemStyle::default());
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
