//! Which permission each route needs: the [`RouteTable`].
//!
//! ```
//! use http::Method;
//! use nouvel_auth::{nouvel, routes::Access, RouteTable};
//!
//! let table = RouteTable::nouvel();
//! assert_eq!(
//!     table.access(&Method::GET, "/api/v1/jobs/job_123"),
//!     Access::Requires(nouvel::PROJECTS_READ),
//! );
//! // HEAD is treated as GET.
//! assert_eq!(
//!     table.access(&Method::HEAD, "/api/v1/projects"),
//!     Access::Requires(nouvel::PROJECTS_READ),
//! );
//! // Routes in no entry are denied by default.
//! assert_eq!(table.access(&Method::DELETE, "/api/v1/projects"), Access::Denied);
//!
//! let custom = RouteTable::new()
//!     .route(Method::GET, "/v2/reports/{id}", nouvel::ANALYTICS_READ).unwrap()
//!     .public("/healthz").unwrap()
//!     .authenticate_unlisted();
//! assert_eq!(custom.access(&Method::GET, "/healthz"), Access::Public);
//! assert_eq!(custom.access(&Method::POST, "/other"), Access::Authenticated);
//! ```

use http::Method;

use crate::{Permission, Permissions, Rejection};

/// What a request needs, according to the [`RouteTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Access {
    /// A public path: no authentication at all.
    Public,
    /// An optional route: a request without `Authorization` passes without a key; one
    /// with a key is checked as for [`Authenticated`](Self::Authenticated).
    Optional,
    /// A valid key holding this permission.
    Requires(Permission),
    /// A route in no entry, under the "authenticate only" policy: any valid key.
    Authenticated,
    /// A route in no entry, under the default policy: refused with 403 `route_not_allowed`.
    Denied,
}

impl Access {
    /// Whether a key holding `permissions` may pass. Every 403 comes from here.
    pub(crate) fn authorize(self, permissions: Permissions) -> Result<(), Rejection> {
        match self {
            Self::Public | Self::Optional | Self::Authenticated => Ok(()),
            Self::Requires(needed) if permissions.contains(needed) => Ok(()),
            Self::Requires(needed) => Err(Rejection::MissingPermission(needed)),
            Self::Denied => Err(Rejection::RouteNotAllowed),
        }
    }
}

/// The methods of one path template and what each needs.
#[derive(Debug, Clone, Default)]
struct PathEntry {
    /// Public or optional for every method, if set.
    all_methods: Option<Access>,
    methods: Vec<(Method, Access)>,
}

/// A route table: `(method, path template) → permission`, plus public paths and the
/// policy for requests that match no entry.
///
/// Templates use `{param}` segments (as axum 0.8 does), matched by `matchit`.
#[derive(Debug, Clone)]
pub struct RouteTable {
    paths: matchit::Router<usize>,
    entries: Vec<PathEntry>,
    templates: Vec<String>,
    unlisted: Access,
}

/// A route template that cannot be added to the table.
#[derive(Debug, thiserror::Error)]
#[error("invalid route template '{template}': {source}")]
pub struct RouteError {
    template: String,
    #[source]
    source: TemplateError,
}

#[derive(Debug, thiserror::Error)]
enum TemplateError {
    #[error(transparent)]
    Matchit(#[from] matchit::InsertError),
    #[error("more than {MAX_PARAMETERS} parameters")]
    TooManyParameters,
}

/// The most parameters a template may have (the router, `matchit`, panics past them).
const MAX_PARAMETERS: usize = 25;

/// The parameters of `template`: its `{`, less the escaped `{{`.
fn parameters(template: &str) -> usize {
    template.matches('{').count() - 2 * template.matches("{{").count()
}

impl Default for RouteTable {
    fn default() -> Self {
        Self::new()
    }
}

impl RouteTable {
    /// An empty table that denies every route.
    #[must_use]
    pub fn new() -> Self {
        Self {
            paths: matchit::Router::new(),
            entries: Vec::new(),
            templates: Vec::new(),
            unlisted: Access::Denied,
        }
    }

    /// The seven routes of the Nouvel API.
    #[must_use]
    pub fn nouvel() -> Self {
        use crate::nouvel::*;
        [
            (Method::POST, "/api/v1/generate", GENERATE),
            (Method::GET, "/api/v1/jobs/{jobId}", PROJECTS_READ),
            (Method::GET, "/api/v1/projects", PROJECTS_READ),
            (Method::POST, "/api/v1/publish", PUBLISH),
            (Method::GET, "/api/v1/publish/{id}", PUBLISH),
            (Method::GET, "/api/v1/analytics", ANALYTICS_READ),
            (Method::POST, "/api/v1/copilot/chat", COPILOT_CHAT),
        ]
        .into_iter()
        .try_fold(Self::new(), |table, (method, path, permission)| {
            table.route(method, path, permission)
        })
        .expect("the seed's templates are valid")
    }

    /// Adds `method template` needing `permission`. A `GET` entry also serves `HEAD`.
    pub fn route(
        mut self,
        method: Method,
        template: &str,
        permission: Permission,
    ) -> Result<Self, RouteError> {
        self.entry(template)?
            .methods
            .push((method, Access::Requires(permission)));
        Ok(self)
    }

    /// Makes `template` public: every method on it skips authentication (health checks).
    pub fn public(mut self, template: &str) -> Result<Self, RouteError> {
        self.entry(template)?.all_methods = Some(Access::Public);
        Ok(self)
    }

    /// Makes `template` optional: on every method, a request without `Authorization`
    /// passes without a key (`Option<AuthenticatedKey>` is `None`), and one with a key
    /// must present a valid one (401 otherwise), on a plan with API keys, within its
    /// limit. For routes that serve both the public and key holders.
    pub fn optional(mut self, template: &str) -> Result<Self, RouteError> {
        self.entry(template)?.all_methods = Some(Access::Optional);
        Ok(self)
    }

    /// Lets any valid key through on routes in no entry, instead of answering 403.
    #[must_use]
    pub fn authenticate_unlisted(mut self) -> Self {
        self.unlisted = Access::Authenticated;
        self
    }

    fn entry(&mut self, template: &str) -> Result<&mut PathEntry, RouteError> {
        let index = if let Some(index) = self.templates.iter().position(|t| t == template) {
            index
        } else {
            let index = self.entries.len();
            let refused = |source| RouteError {
                template: template.to_owned(),
                source,
            };
            if parameters(template) > MAX_PARAMETERS {
                return Err(refused(TemplateError::TooManyParameters));
            }
            self.paths
                .insert(template, index)
                .map_err(|error| refused(error.into()))?;
            self.entries.push(PathEntry::default());
            self.templates.push(template.to_owned());
            index
        };
        Ok(&mut self.entries[index])
    }

    /// What a request with `method` on `path` needs.
    pub fn access(&self, method: &Method, path: &str) -> Access {
        let Ok(found) = self.paths.at(path) else {
            return self.unlisted;
        };
        let entry = &self.entries[*found.value];
        if let Some(access) = entry.all_methods {
            return access;
        }
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        entry
            .methods
            .iter()
            .find(|(m, _)| m == method)
            .map_or(self.unlisted, |&(_, access)| access)
    }
}

/// The path the client sent: axum's `OriginalUri` when a router has nested the service
/// (its own URI then lacks the prefix), else the request's.
pub(crate) fn client_path<B>(request: &http::Request<B>) -> &str {
    #[cfg(feature = "axum")]
    if let Some(axum::extract::OriginalUri(uri)) = request.extensions().get() {
        return uri.path();
    }
    request.uri().path()
}
