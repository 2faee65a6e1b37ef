//! The "Settings → API Keys" admin API: an axum [`Router`] over a [`KeyManager`].
//!
//! Mount it under any prefix (the example server uses `/admin`). Every route needs
//! `Authorization: Bearer <admin token>`; `nvl_` keys never open it.
//!
//! | method and path | success |
//! |---|---|
//! | `POST /accounts` | 201 Account |
//! | `GET /accounts/{account_id}` | 200 Account |
//! | `PATCH /accounts/{account_id}` | 200 Account |
//! | `POST /accounts/{account_id}/keys` | 201 NewKey (the only time the key is shown) |
//! | `GET /accounts/{account_id}/keys` | 200 `{"keys": [Key, …]}`, newest first |
//! | `GET /accounts/{account_id}/keys/{key_id}` | 200 Key |
//! | `DELETE /accounts/{account_id}/keys/{key_id}` | 204 |
//! | `POST /accounts/{account_id}/keys/{key_id}/rotate` | 201 NewKey |
//! | `POST /accounts/{account_id}/keys/{key_id}/disable` | 200 Key |
//! | `POST /accounts/{account_id}/keys/{key_id}/enable` | 200 Key |
//! | `GET /accounts/{account_id}/audit` | 200 `{"entries": [AuditEntry, …], "next"}`, newest first (`?limit=`, default 50, at most 500; `?before=` the `next` cursor) |
//! | `GET /openapi.json` | 200 this router's OpenAPI 3.1 document |
//!
//! Every answer is JSON and `Cache-Control: no-store`, every error problem+json, checked
//! in this order: 429 `too_many_failures` and 401 `admin_unauthorized` (see
//! [`AdminToken`]), 404 `not_found` (unknown ids and paths), 409 `already_rotated` (a
//! rotation of a key that has a replacement), 400 `malformed_json` / 413
//! `payload_too_large` (over 64 KiB) / 422 `invalid_request` (with `errors: [{field,
//! reason}]`, every field at once; a member the endpoint does not take is `unknown field`),
//! 402 `plan_required`; 405 `method_not_allowed` with `Allow`; 503 `auth_unavailable` when
//! the store fails. The key create body may name the key's `"environment"` and set its own
//! limits, `"rate_limits": [{"requests": n, "window_seconds": w}, {"requests": n,
//! "period": "day"}]` (or one, `"rate_limit"`); `GET …/keys?environment=staging`
//! lists only the keys for that environment.
//!
//! ```
//! use axum::Router;
//! use nouvel_auth::{admin::{self, AdminToken}, KeyManager, MemoryKeyStore};
//!
//! let keys = KeyManager::new(MemoryKeyStore::new());
//! let app: Router = Router::new().nest("/admin", admin::router(keys, AdminToken::new("s3cret-admin-token")));
//! ```

use std::{
    fmt,
    future::Future,
    net::IpAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{
    extract::{rejection::PathRejection, Path, Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::{
    credentials::bearer_token,
    manage::Actor,
    quiet::{warn_quietly, Quiet},
    routers::{
        answered_in,
        keys::{audit_routes, key_routes, Owner},
        openapi::{document, Api},
        per_address::{client_of, PerAddress},
        serve_document, with_problems, Body, Fields, RouterError, Throttled,
    },
    AccountId, KeyManager, KeyStorage,
};

/// The admin token, and the guard of every route that takes it: a [`Layer`] that lets a
/// request through only if it presents `Authorization: Bearer <token>`.
///
/// The admin router is guarded by it; guard routes of the application's own with a clone
/// of the same token, and they share its count of failures:
///
/// * the token is compared as a SHA-256 digest, in constant time, so neither the time nor
///   the length of the comparison depends on the secret;
/// * failures are counted per client address, as axum's `ConnectInfo<SocketAddr>` gives it
///   (`Router::into_make_service_with_connect_info`, or the extension inserted by a server
///   of your own), an IPv6 address by its /64: after 20 within a minute, the address gets
///   429 `too_many_failures` (with `Retry-After`) on every guarded route until the minute
///   has passed. The count is kept for the 10 000 addresses seen last (bounded memory,
///   constant time per failure). Without a client address nothing is counted;
/// * failures are logged as one warning per 10 s at most, however many addresses fail,
///   with the count of those left out; never the presented token.
///
/// A refusal is problem+json: 401 `admin_unauthorized` with `WWW-Authenticate: Bearer
/// realm="admin"`, or the 429.
///
/// ```
/// use axum::{routing::get, Router};
/// use nouvel_auth::admin::AdminToken;
///
/// let token = AdminToken::new("s3cret-admin-token");
/// let app: Router = Router::new()
///     .route("/metrics", get(|| async { "requests 1" }))
///     .route_layer(token.clone());
/// ```
#[derive(Clone)]
pub struct AdminToken(Arc<Guard>);

impl AdminToken {
    /// A token from a configured secret (for example `NOUVEL_ADMIN_TOKEN`).
    #[must_use]
    pub fn new(secret: &str) -> Self {
        Self(Arc::new(Guard {
            digest: Sha256::digest(secret.as_bytes()).into(),
            failures: PerAddress::new(MAX_FAILURES),
            warnings: Quiet::new(),
        }))
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl<S> Layer<S> for AdminToken {
    type Service = RequireAdminToken<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireAdminToken {
            inner,
            token: self.clone(),
        }
    }
}

/// The service of the [`AdminToken`] layer: `S` for requests that present the token, a
/// refusal for the others.
#[derive(Clone, Debug)]
pub struct RequireAdminToken<S> {
    inner: S,
    token: AdminToken,
}

impl<S, B> Service<axum::http::Request<B>> for RequireAdminToken<S>
where
    S: Service<axum::http::Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        match self.token.0.admit(&request) {
            Ok(()) => ResponseFuture {
                kind: Kind::Admitted {
                    future: self.inner.call(request),
                },
            },
            Err(refusal) => ResponseFuture {
                kind: Kind::Refused {
                    response: Some(refusal.into_response()),
                },
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`RequireAdminToken`]: the inner service's, or a refusal.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = Projected]
    #[derive(Debug)]
    enum Kind<F> {
        Admitted { #[pin] future: F },
        // The refusal, taken when polled.
        Refused { response: Option<Response> },
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            Projected::Admitted { future } => future.poll(cx),
            Projected::Refused { response } => {
                Poll::Ready(Ok(response.take().expect("polled after completion")))
            }
        }
    }
}

/// The admin router over `manager`, guarded by `token` (see [`AdminToken`]).
pub fn router<S: KeyStorage>(manager: KeyManager<S>, token: AdminToken) -> Router {
    let manager = manager.acting_as(Actor::admin());
    let profile = manager.profile.clone();
    let routes = Router::new()
        .route("/accounts", post(create_account::<S>))
        .route(
            "/accounts/{account_id}",
            get(account::<S>).patch(set_plan::<S>),
        )
        .route(
            "/openapi.json",
            serve_document(&document(Api::Admin, &manager.profile)),
        )
        .with_state(manager.clone())
        .nest(
            "/accounts/{account_id}/keys",
            key_routes(manager.clone(), true).route_layer(middleware::from_fn(owner_from_path)),
        )
        .nest(
            "/accounts/{account_id}/audit",
            audit_routes(manager).route_layer(middleware::from_fn(owner_from_path)),
        );
    answered_in(with_problems(routes).layer(token), profile)
}

/// How many failed authentications an address may make in a minute.
const MAX_FAILURES: u32 = 20;

/// The token's digest, and the failed authentications by client address.
struct Guard {
    digest: [u8; 32],
    failures: PerAddress,
    warnings: Quiet,
}

impl Guard {
    /// Lets `request` through if it presents the token, and its address has not failed
    /// too often lately; counts a failure otherwise.
    fn admit<B>(&self, request: &axum::http::Request<B>) -> Result<(), RouterError> {
        let client = client_of(request);
        let now = Instant::now();
        if let Some(wait) = client.and_then(|client| self.failures.blocked(client, now)) {
            return Err(RouterError::TooMany(Throttled::Failures, wait));
        }
        match bearer_token(request.headers()) {
            Ok(presented) if self.matches(presented) => Ok(()),
            _ => {
                if let Some(client) = client {
                    self.failed(client, now);
                }
                Err(RouterError::AdminUnauthorized)
            }
        }
    }

    fn matches(&self, presented: &[u8]) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented).into();
        self.digest.ct_eq(&presented).into()
    }

    /// Counts a failure of `client`, and logs it unless a failure was logged lately.
    fn failed(&self, client: IpAddr, now: Instant) {
        let count = self.failures.count(client, now);
        warn_quietly!(
            self.warnings,
            %client,
            failures_this_minute = count,
            "nouvel-auth admin: failed authentication"
        );
    }
}

type Manager<S> = State<KeyManager<S>>;
type Ids<T> = Result<Path<T>, PathRejection>;

/// The ids of the path; one that cannot be read (not UTF-8) names nothing the store made.
fn ids<T>(ids: Ids<T>) -> Result<T, RouterError> {
    ids.map(|Path(ids)| ids).map_err(|_| RouterError::NoRoute)
}

#[derive(Deserialize)]
struct AccountPath {
    account_id: String,
}

/// The key routes' [`Owner`]: the account of the path.
async fn owner_from_path(path: Ids<AccountPath>, mut request: Request, next: Next) -> Response {
    match ids(path) {
        Ok(path) => {
            let owner = Owner {
                account: AccountId::from(path.account_id),
                actor: Actor::admin(),
                grantable: None,
            };
            request.extensions_mut().insert(owner);
            next.run(request).await
        }
        Err(error) => error.into_response(),
    }
}

async fn create_account<S: KeyStorage>(
    State(m): Manager<S>,
    bytes: Body,
) -> Result<impl IntoResponse, RouterError> {
    let account = Fields::read(bytes)
        .account()
        .call(
            async |(name, plan)| m.prepare_account(name, plan),
            async |account| m.insert_account(account).await,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(account)))
}

async fn account<S: KeyStorage>(
    State(m): Manager<S>,
    id: Ids<String>,
) -> Result<impl IntoResponse, RouterError> {
    Ok(Json(m.account(&AccountId::from(ids(id)?)).await?))
}

async fn set_plan<S: KeyStorage>(
    State(m): Manager<S>,
    id: Ids<String>,
    bytes: Body,
) -> Result<impl IntoResponse, RouterError> {
    let id = AccountId::from(ids(id)?);
    let account = Fields::read(bytes)
        .plan()
        .call(
            async |plan| m.prepare_plan(&id, plan).await,
            async |(before, plan)| m.change_plan(before, plan).await,
        )
        .await?;
    Ok(Json(account))
}
