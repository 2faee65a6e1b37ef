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
//!
//! Errors are problem+json, checked in this order: 401 `admin_unauthorized`, 404
//! `not_found`, 400 `malformed_json` / 422 `invalid_request` (with `errors: [{field,
//! reason}]`), 402 `plan_required`; 503 `auth_unavailable` when the store fails.
//!
//! ```
//! use axum::Router;
//! use nouvel_auth::{admin::{self, AdminToken}, KeyManager, MemoryKeyStore};
//!
//! let keys = KeyManager::new(MemoryKeyStore::new());
//! let app: Router = Router::new().nest("/admin", admin::router(keys, AdminToken::new("s3cret-admin-token")));
//! ```

use std::{fmt, sync::Arc, time::Duration};

use axum::{
    body::Bytes,
    extract::{Path, Request, State},
    http::{header, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{
    credentials::bearer_token,
    manage::{FieldError, KeyInfo},
    reject::{plan_required, render_problem, ProblemStyle, PROBLEM_JSON},
    AccountId, Expiration, KeyId, KeyManager, KeySpec, KeyStorage, ManageError, PermissionSet,
    Permissions, Plan,
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

    /// Whether `presented` is the token. Compares digests, so neither the time nor the
    /// length of the comparison depends on the secret.
    fn matches(&self, presented: &[u8]) -> bool {
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
pub fn router<S: KeyStorage>(manager: KeyManager<S>, token: AdminToken) -> Router {
    Router::new()
        .route("/accounts", post(create_account::<S>))
        .route(
            "/accounts/{account_id}",
            get(account::<S>).patch(set_plan::<S>),
        )
        .route(
            "/accounts/{account_id}/keys",
            post(create_key::<S>).get(keys::<S>),
        )
        .route(
            "/accounts/{account_id}/keys/{key_id}",
            get(key::<S>).delete(delete_key::<S>),
        )
        .route(
            "/accounts/{account_id}/keys/{key_id}/rotate",
            post(rotate_key::<S>),
        )
        .with_state(manager)
        .layer(middleware::from_fn_with_state(
            Arc::new(token),
            require_token,
        ))
}

/// Why an admin request failed.
#[derive(Debug)]
enum AdminError {
    Unauthorized,
    MalformedJson(String),
    Manage(ManageError),
}

impl From<ManageError> for AdminError {
    fn from(error: ManageError) -> Self {
        Self::Manage(error)
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum Extra<'a> {
    None {},
    Invalid {
        errors: &'a [FieldError],
    },
    Plan {
        plan: &'a Plan,
        required_plans: &'a [Plan],
    },
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, code, detail, extra) = match &self {
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "admin_unauthorized",
                "Send the admin token as `Authorization: Bearer <token>`.".to_owned(),
                Extra::None {},
            ),
            Self::MalformedJson(why) => (
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("The body is not valid JSON: {why}."),
                Extra::None {},
            ),
            Self::Manage(ManageError::NotFound) => (
                StatusCode::NOT_FOUND,
                "not_found",
                "No such account, or no such key in this account.".to_owned(),
                Extra::None {},
            ),
            Self::Manage(ManageError::Invalid(errors)) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                "Some fields cannot be accepted; see `errors`.".to_owned(),
                Extra::Invalid { errors },
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
                tracing::warn!(%error, "nouvel-auth admin: the store is unavailable; answering 503");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "auth_unavailable",
                    "The key store is unavailable right now; retry shortly.".to_owned(),
                    Extra::None {},
                )
            }
        };
        let style = ProblemStyle {
            realm: "nouvel-admin".to_owned(),
            ..ProblemStyle::default()
        };
        let body = render_problem(status, code, &detail, extra, &style);
        let mut response = (status, [(header::CONTENT_TYPE, PROBLEM_JSON)], body).into_response();
        if matches!(self, Self::Unauthorized) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer realm="nouvel-admin""#),
            );
        }
        response
    }
}

async fn require_token(
    State(token): State<Arc<AdminToken>>,
    request: Request,
    next: Next,
) -> Response {
    match bearer_token(request.headers()) {
        Ok(presented) if token.matches(presented) => next.run(request).await,
        _ => AdminError::Unauthorized.into_response(),
    }
}

/// A JSON object body, read field by field so every error names its field.
struct Fields {
    object: Map<String, Value>,
    errors: Vec<FieldError>,
}

impl Fields {
    /// Parses `body`; an empty body is an empty object (for optional bodies).
    fn parse(body: &[u8]) -> Result<Self, AdminError> {
        let object = if body.iter().all(u8::is_ascii_whitespace) {
            Map::new()
        } else {
            match serde_json::from_slice(body)
                .map_err(|e| AdminError::MalformedJson(e.to_string()))?
            {
                Value::Object(object) => object,
                _ => {
                    return Err(ManageError::Invalid(vec![FieldError::new(
                        "body",
                        "must be a JSON object",
                    )])
                    .into())
                }
            }
        };
        Ok(Self {
            object,
            errors: Vec::new(),
        })
    }

    fn reject(&mut self, field: &str, reason: impl Into<String>) {
        self.errors.push(FieldError::new(field, reason));
    }

    /// A string field; `None` (and an error if `required`) when absent or not a string.
    fn string(&mut self, field: &str, required: bool) -> Option<String> {
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
    fn parsed<T: std::str::FromStr>(&mut self, field: &str, required: bool) -> Option<T>
    where
        T::Err: fmt::Display,
    {
        let text = self.string(field, required)?;
        text.parse()
            .map_err(|e: T::Err| self.reject(field, e.to_string()))
            .ok()
    }

    fn permissions(&mut self, set: &'static PermissionSet) -> Option<Permissions> {
        let Some(Value::Array(items)) = self.object.remove("permissions") else {
            self.reject("permissions", "must be an array of permissions");
            return None;
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

    fn grace(&mut self) -> Duration {
        const DEFAULT: Duration = Duration::from_secs(86_400);
        match self.object.remove("grace_seconds") {
            None | Some(Value::Null) => DEFAULT,
            Some(value) => value.as_u64().map(Duration::from_secs).unwrap_or_else(|| {
                self.reject(
                    "grace_seconds",
                    "must be a whole number of seconds, 0 or more",
                );
                DEFAULT
            }),
        }
    }

    /// `value` if no field failed, else every field error.
    fn finish<T>(self, value: Option<T>) -> Result<T, AdminError> {
        match value {
            Some(value) if self.errors.is_empty() => Ok(value),
            _ => Err(ManageError::Invalid(self.errors).into()),
        }
    }
}

type Manager<S> = State<KeyManager<S>>;

async fn create_account<S: KeyStorage>(
    State(m): Manager<S>,
    body: Bytes,
) -> Result<impl IntoResponse, AdminError> {
    let mut fields = Fields::parse(&body)?;
    let name = fields.string("name", true);
    let plan = fields.string("plan", true).map(Plan::new);
    let (name, plan) = fields.finish(name.zip(plan))?;
    Ok((
        StatusCode::CREATED,
        Json(m.create_account(&name, plan).await?),
    ))
}

async fn account<S: KeyStorage>(
    State(m): Manager<S>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, AdminError> {
    Ok(Json(m.account(&AccountId::from(id)).await?))
}

async fn set_plan<S: KeyStorage>(
    State(m): Manager<S>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<impl IntoResponse, AdminError> {
    let plan = Fields::parse(&body).and_then(|mut fields| {
        let plan = fields.string("plan", true).map(Plan::new);
        fields.finish(plan)
    });
    Ok(Json(m.set_plan_parsed(&AccountId::from(id), plan).await?))
}

async fn create_key<S: KeyStorage>(
    State(m): Manager<S>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<impl IntoResponse, AdminError> {
    let spec = Fields::parse(&body).and_then(|mut fields| {
        let name = fields.string("name", true);
        let permissions = fields.permissions(m.vocabulary.permissions());
        let expiration = fields
            .parsed::<Expiration>("expiration", false)
            .unwrap_or_default();
        let (name, permissions) = fields.finish(name.zip(permissions))?;
        Ok(KeySpec::new(name, permissions.iter()).expiration(expiration))
    });
    let created = m.create_key_parsed(&AccountId::from(id), spec).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[derive(Serialize)]
struct KeyList {
    keys: Vec<KeyInfo>,
}

async fn keys<S: KeyStorage>(
    State(m): Manager<S>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, AdminError> {
    Ok(Json(KeyList {
        keys: m.keys(&AccountId::from(id)).await?,
    }))
}

async fn key<S: KeyStorage>(
    State(m): Manager<S>,
    Path((account, key)): Path<(String, String)>,
) -> Result<impl IntoResponse, AdminError> {
    Ok(Json(m.key(&account.into(), &KeyId::from(key)).await?))
}

async fn delete_key<S: KeyStorage>(
    State(m): Manager<S>,
    Path((account, key)): Path<(String, String)>,
) -> Result<impl IntoResponse, AdminError> {
    m.delete_key(&account.into(), &KeyId::from(key)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn rotate_key<S: KeyStorage>(
    State(m): Manager<S>,
    Path((account, key)): Path<(String, String)>,
    body: Bytes,
) -> Result<impl IntoResponse, AdminError> {
    let grace = Fields::parse(&body).and_then(|mut fields| {
        let grace = fields.grace();
        fields.finish(Some(grace))
    });
    let created = m
        .rotate_key_parsed(&AccountId::from(account), &KeyId::from(key), grace)
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}
