//! The key routes of both routers: the same handlers, for the account the router has put
//! in the request (the admin router from the path, the settings router from the session).

use axum::{
    extract::{
        rejection::{PathRejection, QueryRejection},
        Path, Query, State,
    },
    http::StatusCode,
    response::IntoResponse,
    routing::{get, post},
    Extension, Json, Router,
};
use serde::{Deserialize, Serialize};

use super::{body, Body, Fields, RouterError};
use crate::{
    manage::{FieldError, KeyInfo},
    AccountId, Environment, KeyId, KeyManager, KeyStorage, ManageError,
};

/// The account whose keys a request manages, put in its extensions by the router.
#[derive(Debug, Clone)]
pub(crate) struct Owner(pub(crate) AccountId);

struct KeyRoutes<S> {
    manager: KeyManager<S>,
    /// Whether a create body may set the key's own limit (the operator's router only).
    take_limit: bool,
}

impl<S> Clone for KeyRoutes<S> {
    fn clone(&self) -> Self {
        Self {
            manager: self.manager.clone(),
            take_limit: self.take_limit,
        }
    }
}

/// `/` (list, create), `/{key_id}` (read, delete), and its `rotate`, `disable` and
/// `enable`, over `manager`, for the [`Owner`] a layer of the router puts in each request.
pub(crate) fn key_routes<S: KeyStorage>(manager: KeyManager<S>, take_limit: bool) -> Router {
    Router::new()
        .route("/", get(list::<S>).post(create::<S>))
        .route("/{key_id}", get(read::<S>).delete(delete::<S>))
        .route("/{key_id}/rotate", post(rotate::<S>))
        .route("/{key_id}/disable", post(disable::<S>))
        .route("/{key_id}/enable", post(enable::<S>))
        .with_state(KeyRoutes {
            manager,
            take_limit,
        })
}

type Keys<S> = State<KeyRoutes<S>>;

#[derive(Deserialize)]
struct KeyPath {
    key_id: String,
}

/// The key id of the path; one that cannot be read (not UTF-8) names nothing the store made.
fn key_id(path: Result<Path<KeyPath>, PathRejection>) -> Result<KeyId, RouterError> {
    path.map(|Path(path)| KeyId::from(path.key_id))
        .map_err(|_| RouterError::NoRoute)
}

#[derive(Serialize)]
struct KeyList {
    keys: Vec<KeyInfo>,
}

#[derive(Deserialize)]
struct ListQuery {
    environment: Option<String>,
}

async fn list<S: KeyStorage>(
    State(keys): Keys<S>,
    Extension(Owner(account)): Extension<Owner>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<impl IntoResponse, RouterError> {
    let invalid = |reason: String| {
        RouterError::Manage(ManageError::Invalid(vec![FieldError::new(
            "environment",
            reason,
        )]))
    };
    // The account first: an unknown one is 404 whatever the query says.
    keys.manager.account(&account).await?;
    let Query(query) = query.map_err(|rejection| invalid(rejection.body_text()))?;
    let environment = query
        .environment
        .map(|label| label.parse::<Environment>())
        .transpose()
        .map_err(|error| invalid(error.to_string()))?;
    Ok(Json(KeyList {
        keys: keys.manager.listed(&account, environment.as_ref()).await?,
    }))
}

async fn create<S: KeyStorage>(
    State(keys): Keys<S>,
    Extension(Owner(account)): Extension<Owner>,
    bytes: Body,
) -> Result<impl IntoResponse, RouterError> {
    let set = keys.manager.vocabulary.permissions();
    let parsed =
        body(bytes).and_then(|bytes| Ok(Fields::parse(&bytes)?.key_spec(set, keys.take_limit)));
    let created = keys.manager.create_key_parsed(&account, parsed).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn read<S: KeyStorage>(
    State(keys): Keys<S>,
    Extension(Owner(account)): Extension<Owner>,
    path: Result<Path<KeyPath>, PathRejection>,
) -> Result<impl IntoResponse, RouterError> {
    Ok(Json(keys.manager.key(&account, &key_id(path)?).await?))
}

async fn delete<S: KeyStorage>(
    State(keys): Keys<S>,
    Extension(Owner(account)): Extension<Owner>,
    path: Result<Path<KeyPath>, PathRejection>,
) -> Result<impl IntoResponse, RouterError> {
    keys.manager.delete_key(&account, &key_id(path)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn rotate<S: KeyStorage>(
    State(keys): Keys<S>,
    Extension(Owner(account)): Extension<Owner>,
    path: Result<Path<KeyPath>, PathRejection>,
    bytes: Body,
) -> Result<impl IntoResponse, RouterError> {
    let key = key_id(path)?;
    let parsed = body(bytes).and_then(|bytes| Ok(Fields::parse(&bytes)?.rotation()));
    let created = keys
        .manager
        .rotate_key_parsed(&account, &key, parsed)
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn disable<S: KeyStorage>(
    State(keys): Keys<S>,
    Extension(Owner(account)): Extension<Owner>,
    path: Result<Path<KeyPath>, PathRejection>,
) -> Result<impl IntoResponse, RouterError> {
    Ok(Json(
        keys.manager.disable_key(&account, &key_id(path)?).await?,
    ))
}

async fn enable<S: KeyStorage>(
    State(keys): Keys<S>,
    Extension(Owner(account)): Extension<Owner>,
    path: Result<Path<KeyPath>, PathRejection>,
) -> Result<impl IntoResponse, RouterError> {
    Ok(Json(
        keys.manager.enable_key(&account, &key_id(path)?).await?,
    ))
}
