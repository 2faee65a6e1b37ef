//! "Settings → API Keys" for the application's own signed-in users: an axum [`Router`] over
//! a [`KeyManager`], where each user manages the keys of their own account, with a page.
//!
//! The application says who is signed in through a [`Session`] (its own cookie, session
//! store or JWT; the crate does no sessions). Mount the router under any prefix (the
//! example server uses `/settings/api-keys`); paths below are relative to it.
//!
//! | method and path | success |
//! |---|---|
//! | `GET` on the mount point | 200 the HTML page |
//! | `GET /account` | 200 `{"id", "name", "plan", "api_keys_allowed"}` |
//! | `GET /keys` | 200 `{"keys": [Key, …]}`, newest first (`?environment=` filters) |
//! | `POST /keys` | 201 NewKey (the only time the key is shown) |
//! | `GET /keys/{key_id}` | 200 Key |
//! | `DELETE /keys/{key_id}` | 204 |
//! | `POST /keys/{key_id}/rotate` | 201 NewKey |
//! | `POST /keys/{key_id}/disable`, `POST /keys/{key_id}/enable` | 200 Key |
//! | `GET /audit` | 200 `{"entries": [AuditEntry, …], "next"}`: the account's actions, newest first |
//! | `GET /openapi.json` | 200 this router's OpenAPI 3.1 document |
//!
//! Bodies, Keys and errors are the admin API's (module `admin`), with these
//! differences:
//!
//! * without a signed-in user: 401 `not_signed_in` (the page answers 401 with a short
//!   HTML page saying to sign in). A request presenting an API key (`Bearer nvl_…`) is
//!   never signed in, whatever the session says;
//! * a key of another account is 404 `not_found`, exactly as an unknown id;
//! * every `POST`, `PUT`, `PATCH` and `DELETE` must carry an `Origin` equal to the
//!   request's own (`http://` or `https://` and its `Host`), or, without `Origin`,
//!   `Sec-Fetch-Site: same-origin`; otherwise 403 `csrf_rejected`, and nothing changes;
//! * it never changes a plan, and a create body may not set limits (`rate_limits`,
//!   `rate_limit`): a key's limits are its plan's unless the operator gives it its own.
//!
//! ```
//! use axum::{http::request::Parts, Router};
//! use nouvel_auth::{settings::{self, SignedInUser}, KeyManager, MemoryKeyStore};
//!
//! /// The application's own session: here, a cookie naming the account (do not do this).
//! fn user(parts: &Parts) -> Option<SignedInUser> {
//!     let cookie = parts.headers.get("cookie")?.to_str().ok()?;
//!     let account = cookie.strip_prefix("account=")?;
//!     Some(SignedInUser::new(account, "user_1"))
//! }
//!
//! let keys = KeyManager::new(MemoryKeyStore::new());
//! let session = |parts: &Parts| {
//!     let user = user(parts);
//!     async move { Ok(user) }
//! };
//! let app: Router = Router::new().nest("/settings/api-keys", settings::router(keys, session));
//! ```

mod page;

use std::{fmt, future::Future, sync::Arc};

use axum::{
    extract::{OriginalUri, Request, State},
    http::{header, request::Parts, HeaderMap, Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde::Serialize;

use crate::{
    manage::Account,
    routers::{
        answered_in,
        keys::{audit_routes, key_routes, Grantable, Owner},
        openapi::{document, Api},
        serve_document, with_problems, RouterError,
    },
    AccountId, KeyManager, KeyStorage, Permission, Permissions, Profile,
};

/// Who is signed in: the account whose keys they manage, and the application's own id for
/// them (recorded as the actor of what they do).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SignedInUser {
    /// The account whose keys the user manages.
    pub account_id: AccountId,
    /// The application's id for the user.
    pub user_id: String,
}

impl SignedInUser {
    /// `user_id`, managing the keys of `account_id`.
    pub fn new(account_id: impl Into<AccountId>, user_id: impl Into<String>) -> Self {
        Self {
            account_id: account_id.into(),
            user_id: user_id.into(),
        }
    }
}

/// How the application tells the settings router who is signed in.
///
/// From the request's parts (cookies, headers, extensions an earlier layer put there),
/// answer the user, `None` for nobody (the router answers 401 `not_signed_in`), or a
/// response of the application's own (a redirect, say), which the router returns as it is.
///
/// A closure `Fn(&Parts) -> impl Future<Output = Result<Option<SignedInUser>, Response>>`
/// is a session; its future may not borrow the parts (clone what it needs). Write its
/// argument's type, `|parts: &Parts| …`: Rust infers a closure's signature from `Fn`
/// bounds only, and this is a trait of its own.
///
/// To send a signed-out browser to the application's own sign-in page rather than the
/// router's 401, answer a redirect for the page's path:
///
/// ```
/// use axum::{http::request::Parts, response::{IntoResponse, Redirect}};
/// use nouvel_auth::settings::{Session, SignedInUser};
///
/// # fn user(_: &Parts) -> Option<SignedInUser> { None }
/// let session = |parts: &Parts| {
///     let user = user(parts);
///     // The page (the router sees paths below its mount point); its JSON routes still
///     // answer 401.
///     let page = parts.uri.path() == "/";
///     async move {
///         match user {
///             None if page => Err(Redirect::to("/sign-in").into_response()),
///             user => Ok(user),
///         }
///     }
/// };
/// # fn is_session(_: impl Session) {}
/// # is_session(session);
/// ```
pub trait Session: Send + Sync + 'static {
    /// The user signed in on this request, if any.
    fn signed_in(
        &self,
        request: &Parts,
    ) -> impl Future<Output = Result<Option<SignedInUser>, Response>> + Send;
}

impl<F, Fut> Session for F
where
    F: Fn(&Parts) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<SignedInUser>, Response>> + Send,
{
    fn signed_in(
        &self,
        request: &Parts,
    ) -> impl Future<Output = Result<Option<SignedInUser>, Response>> + Send {
        self(request)
    }
}

/// The settings router over `manager`, for the users `session` says are signed in: every
/// permission of the profile grantable, and a page with no links of the application's
/// ([`SettingsRouter`] adds them).
pub fn router<S: KeyStorage>(manager: KeyManager<S>, session: impl Session) -> Router {
    SettingsRouter::new(manager, session).build()
}

/// Which permissions a signed-in user may grant on keys of their account.
type GrantRule = Arc<dyn Fn(&SignedInUser, &Account) -> Permissions + Send + Sync>;

/// The settings router in the application's clothes: which permissions a user may grant,
/// a link back to the application and a sign-out button on the page. The product's name
/// is the profile's ([`Profile::product`]).
///
/// ```
/// use axum::{http::request::Parts, Router};
/// use nouvel_auth::{nouvel, settings::{SettingsRouter, SignedInUser}, KeyManager, MemoryKeyStore};
///
/// # fn user(_: &Parts) -> Option<SignedInUser> { None }
/// let keys = KeyManager::new(MemoryKeyStore::new());
/// let session = |parts: &Parts| {
///     let user = user(parts);
///     async move { Ok(user) }
/// };
/// let settings = SettingsRouter::new(keys, session)
///     // Publishing is for the Business plan's keys alone.
///     .grantable(|_user, account| {
///         let all = nouvel::PERMISSIONS.all();
///         if account.plan == nouvel::BUSINESS { all } else { all.without(nouvel::PUBLISH) }
///     })
///     .back_link("/dashboard", "Back to the dashboard")
///     .sign_out("/sign-out")
///     .build();
/// let app: Router = Router::new().nest("/settings/api-keys", settings);
/// ```
pub struct SettingsRouter<S, A> {
    manager: KeyManager<S>,
    session: A,
    grantable: Option<GrantRule>,
    links: page::Links,
}

impl<S: KeyStorage, A: Session> SettingsRouter<S, A> {
    /// The router over `manager`, for the users `session` says are signed in.
    pub fn new(manager: KeyManager<S>, session: A) -> Self {
        Self {
            manager,
            session,
            grantable: None,
            links: page::Links::default(),
        }
    }

    /// The permissions a user may grant on keys of their account, by `rule` (default: all
    /// the profile's). A create with others is refused 422 on `permissions`, and the page
    /// offers only these; a rotation keeps the old key's.
    #[must_use]
    pub fn grantable(
        mut self,
        rule: impl Fn(&SignedInUser, &Account) -> Permissions + Send + Sync + 'static,
    ) -> Self {
        self.grantable = Some(Arc::new(rule));
        self
    }

    /// A link back to the application at the top of the page.
    #[must_use]
    pub fn back_link(mut self, href: impl Into<String>, text: impl Into<String>) -> Self {
        self.links.back = Some((href.into(), text.into()));
        self
    }

    /// A "Sign out" button on the page, posting to `action` (the application's own route).
    #[must_use]
    pub fn sign_out(mut self, action: impl Into<String>) -> Self {
        self.links.sign_out = Some(action.into());
        self
    }

    /// The router.
    pub fn build(self) -> Router {
        let Self {
            manager,
            session,
            grantable,
            links,
        } = self;
        build(manager, session, grantable, &links)
    }
}

impl<S, A> fmt::Debug for SettingsRouter<S, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SettingsRouter")
            .field("links", &self.links)
            .finish_non_exhaustive()
    }
}

fn build<S: KeyStorage>(
    manager: KeyManager<S>,
    session: impl Session,
    grantable: Option<GrantRule>,
    links: &page::Links,
) -> Router {
    let profile = manager.profile.clone();
    let gate = Arc::new(Gate {
        session,
        profile: manager.profile.clone(),
        grantable,
    });
    let page = page::Page::new(&manager.profile, links);
    let signed_in = Router::new()
        .route("/account", get(account::<S>))
        .route(
            "/openapi.json",
            serve_document(&document(Api::Settings, &manager.profile)),
        )
        .with_state(manager.clone())
        .nest("/keys", key_routes(manager.clone(), false))
        .nest("/audit", audit_routes(manager))
        .layer(middleware::from_fn_with_state(gate.clone(), require_user));
    let pages = Router::new()
        .route("/", get(page::serve))
        .with_state((gate, Arc::new(page)))
        .merge(page::assets());
    answered_in(with_problems(signed_in.merge(pages)), profile)
}

/// The application's session, and what tells an API key from a session.
struct Gate<A> {
    session: A,
    profile: Profile,
    grantable: Option<GrantRule>,
}

impl<A: Session> Gate<A> {
    /// The signed-in user, `Ok(None)` for nobody, or the application's own answer.
    async fn user(&self, parts: &Parts) -> Result<Option<SignedInUser>, Response> {
        if self.presents_api_key(&parts.headers) {
            return Ok(None);
        }
        self.session.signed_in(parts).await
    }

    /// Whether any `Authorization` header of the request presents one of the application's
    /// API keys, well-formed or not, beside whatever else it carries: those open the API,
    /// never the settings of the account that made them.
    fn presents_api_key(&self, headers: &HeaderMap) -> bool {
        let prefix = self.profile.prefix();
        headers.get_all(header::AUTHORIZATION).iter().any(|value| {
            let value = value.as_bytes().trim_ascii_start();
            let Some((scheme, token)) = value.split_at_checked(b"bearer".len()) else {
                return false;
            };
            scheme.eq_ignore_ascii_case(b"bearer")
                && token
                    .trim_ascii_start()
                    .starts_with(prefix.as_str().as_bytes())
        })
    }
}

/// Lets a request through with its [`Owner`] once a user is signed in and, for a request
/// that changes anything, it comes from the router's own origin.
async fn require_user<A: Session>(
    State(gate): State<Arc<Gate<A>>>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let user = match gate.user(&parts).await {
        Ok(Some(user)) => user,
        Ok(None) => return RouterError::NotSignedIn.into_response(),
        Err(own) => return own,
    };
    if !is_safe(&parts.method) && !same_origin(&parts) {
        return RouterError::CsrfRejected.into_response();
    }
    let grantable = gate.grantable.clone().map(|rule| {
        let user = user.clone();
        Arc::new(move |account: &Account| rule(&user, account)) as Grantable
    });
    parts.extensions.insert(Owner {
        account: user.account_id.clone(),
        actor: crate::manage::Actor::user(user.user_id.clone()),
        grantable,
    });
    parts.extensions.insert(user);
    next.run(Request::from_parts(parts, body)).await
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// `Origin` is the request's own (either scheme, and its host), or, without `Origin`, the
/// browser says the request is same-origin.
fn same_origin(parts: &Parts) -> bool {
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()));
    match parts.headers.get(header::ORIGIN) {
        Some(origin) => {
            let origin = origin.as_bytes();
            host.is_some_and(|host| {
                ["http://", "https://"]
                    .iter()
                    .any(|scheme| origin.strip_prefix(scheme.as_bytes()) == Some(host.as_bytes()))
            })
        }
        None => parts
            .headers
            .get("sec-fetch-site")
            .is_some_and(|site| site == "same-origin"),
    }
}

#[derive(Serialize)]
struct AccountView {
    id: AccountId,
    name: String,
    plan: crate::Plan,
    api_keys_allowed: bool,
    grantable_permissions: Vec<&'static str>,
}

async fn account<S: KeyStorage>(
    State(manager): State<KeyManager<S>>,
    axum::Extension(owner): axum::Extension<Owner>,
) -> Result<impl IntoResponse, RouterError> {
    let account = manager.account(&owner.account).await?;
    let api_keys_allowed = manager.profile.plans().allows_api_keys(&account.plan);
    let grantable = match &owner.grantable {
        Some(rule) => rule(&account),
        None => manager.profile.permissions().all(),
    };
    Ok(Json(AccountView {
        grantable_permissions: grantable.iter().map(Permission::as_str).collect(),
        id: account.id,
        name: account.name,
        plan: account.plan,
        api_keys_allowed,
    }))
}

/// The path the router is mounted at, as the client sent it, without a trailing slash:
/// the page's links start there.
fn mount_point(uri: &OriginalUri) -> &str {
    uri.path().trim_end_matches('/')
}

/// The status a page answers with.
fn html(status: StatusCode, body: String) -> Response {
    (status, page::headers(), body).into_response()
}
