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
//! Every answer is JSON, every error problem+json, checked in this order: 401
//! `admin_unauthorized`, 404 `not_found` (unknown ids and paths), 409 `already_rotated` (a
//! rotation of a key that has a replacement), 400 `malformed_json` / 413
//! `payload_too_large` (over 64 KiB) / 422 `invalid_request` (with `errors: [{field,
//! reason}]`, every field at once; a member the endpoint does not take is `unknown field`),
//! 402 `plan_required`; 405 `method_not_allowed` with `Allow`; 503 `auth_unavailable` when
//! the store fails. The key create body may name the key's `"environment"` and set its own
//! `"rate_limit": {"requests": n, "window_seconds": w}`; `GET …/keys?environment=staging`
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
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use axum::{
    extract::{rejection::PathRejection, ConnectInfo, Path, Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use time::OffsetDateTime;

use crate::{
    clock::SharedClock,
    credentials::bearer_token,
    manage::Actor,
    routers::{
        body,
        keys::{audit_routes, key_routes, Owner},
        openapi::{document, Api},
        serve_document, with_problems, Body, Fields, RouterError,
    },
    AccountId, ConcurrentMap, KeyManager, KeyStorage,
};

/// The admin API's bearer token: a secret, compared in constant time.
#[derive(Clone)]
pub struct AdminToken([u8; 32]);

impl AdminToken {
    /// A token from a configured secret (for example `NOUVEL_ADMIN_TOKEN`).
    #[must_use]
    pub fn new(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    /// Whether `presented` is the token (for routes of the application's own that the
    /// token opens too). Compares digests, so neither the time nor the length of the
    /// comparison depends on the secret.
    ///
    /// ```
    /// use nouvel_auth::admin::AdminToken;
    ///
    /// let token = AdminToken::new("s3cret-admin-token");
    /// assert!(token.matches(b"s3cret-admin-token"));
    /// assert!(!token.matches(b"s3cret"));
    /// ```
    #[must_use]
    pub fn matches(&self, presented: &[u8]) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented).into();
        self.0.ct_eq(&presented).into()
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// The admin router over `manager`, guarded by `token`.
///
/// Failed authentications are counted per client address, as axum's
/// `ConnectInfo<SocketAddr>` gives it (`Router::into_make_service_with_connect_info`, or
/// the extension inserted by a server of your own): after 20 within a minute, the address
/// gets 429 (with `Retry-After`) on every admin route until that minute has passed, and
/// failures are logged as warnings, at most one line per 10 s per address. Without a
/// client address nothing is counted.
pub fn router<S: KeyStorage>(manager: KeyManager<S>, token: AdminToken) -> Router {
    let manager = manager.acting_as(Actor::admin());
    let guard = Guard {
        token,
        clock: manager.clock_handle(),
        failures: ConcurrentMap::default(),
    };
    let routes = Router::new()
        .route("/accounts", post(create_account::<S>))
        .route(
            "/accounts/{account_id}",
            get(account::<S>).patch(set_plan::<S>),
        )
        .route(
            "/openapi.json",
            serve_document(&document(Api::Admin, &manager.vocabulary)),
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
    with_problems(routes).layer(middleware::from_fn_with_state(
        Arc::new(guard),
        require_token,
    ))
}

const UNAUTHORIZED: RouterError = RouterError::Unauthorized {
    code: "admin_unauthorized",
    detail: "Send the admin token as `Authorization: Bearer <token>`.",
    realm: "nouvel-admin",
};

/// How many failed authentications an address may make in [`FAILURE_WINDOW`].
const MAX_FAILURES: u32 = 20;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// At most one warning per address this often.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// Past this many addresses, those whose minute has passed are forgotten first.
const ADDRESSES_KEPT: usize = 10_000;

/// The token, and the failed authentications by client address.
struct Guard {
    token: AdminToken,
    clock: SharedClock,
    failures: ConcurrentMap<IpAddr, Failures>,
}

/// One address's failures in its current minute.
struct Failures {
    since: OffsetDateTime,
    count: u32,
    logged_at: Option<OffsetDateTime>,
    unlogged: u32,
}

impl Guard {
    /// How long `client` must still wait, if it failed too often in its minute.
    fn blocked(&self, client: IpAddr, now: OffsetDateTime) -> Option<Duration> {
        let failures = self.failures.get(&client)?;
        let ends = failures.since + FAILURE_WINDOW;
        (failures.count >= MAX_FAILURES && now < ends)
            .then(|| Duration::try_from(ends - now).unwrap_or(FAILURE_WINDOW))
    }

    /// Counts a failure of `client`, and logs it unless the address was logged lately.
    fn failed(&self, client: IpAddr, now: OffsetDateTime) {
        if self.failures.len() >= ADDRESSES_KEPT {
            self.failures
                .retain(|_, failures| now < failures.since + FAILURE_WINDOW);
        }
        let mut failures = self.failures.entry(client).or_insert(Failures {
            since: now,
            count: 0,
            logged_at: None,
            unlogged: 0,
        });
        if now >= failures.since + FAILURE_WINDOW {
            failures.since = now;
            failures.count = 0;
        }
        failures.count += 1;
        if failures.logged_at.is_some_and(|at| now < at + LOG_EVERY) {
            failures.unlogged += 1;
            return;
        }
        tracing::warn!(
            %client,
            failures_this_minute = failures.count,
            not_logged_since_last_line = failures.unlogged,
            "nouvel-auth admin: failed authentication"
        );
        failures.logged_at = Some(now);
        failures.unlogged = 0;
    }
}

async fn require_token(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip());
    let now = guard.clock.now();
    if let Some(wait) = client.and_then(|client| guard.blocked(client, now)) {
        return RouterError::TooManyFailures(wait).into_response();
    }
    match bearer_token(request.headers()) {
        Ok(presented) if guard.token.matches(presented) => next.run(request).await,
        _ => {
            if let Some(client) = client {
                guard.failed(client, now);
            }
            UNAUTHORIZED.into_response()
        }
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
    let parsed = Fields::parse(&body(bytes)?)?.account();
    Ok((
        StatusCode::CREATED,
        Json(m.create_account_parsed(parsed).await?),
    ))
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
    let parsed = body(bytes).and_then(|bytes| Ok(Fields::parse(&bytes)?.plan()));
    Ok(Json(m.set_plan_parsed(&id, parsed).await?))
}
