//! The account's routes of both routers (its keys, its audit log): the same handlers, for
//! the account the router has put in the request (the admin router from the path, the
//! settings router from the session), acting as whoever the router says.

use axum::{
    extract::{
        rejection::{PathRejection, QueryRejection},
        Path, Query, State,
    },
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Extension, Json, Router,
};
use std::sync::Arc;

use serde::Deserialize;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use super::{Body, Fields, RouterError};
use crate::{
    manage::{Account, Actor, FieldError, Granularity},
    AccountId, Environment, KeyId, KeyManager, KeyStorage, ManageError, Permissions,
};

/// The account whose keys a request manages, and who acts: put in its extensions by the
/// router.
#[derive(Clone)]
pub(crate) struct Owner {
    pub(crate) account: AccountId,
    pub(crate) actor: Actor,
    /// Which permissions the actor may grant on the account's keys, if not all.
    pub(crate) grantable: Option<Grantable>,
}

/// The permissions a signed-in user may grant on keys of an account (the application's
/// rule, bound to the user).
pub(crate) type Grantable = Arc<dyn Fn(&Account) -> Permissions + Send + Sync>;

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
        .route("/{key_id}/usage", get(usage::<S>))
        .with_state(KeyRoutes {
            manager,
            take_limit,
        })
}

type Keys<S> = State<KeyRoutes<S>>;

impl<S: KeyStorage> KeyRoutes<S> {
    /// The manager, acting as the request's actor, and the account.
    fn of(&self, Owner { account, actor, .. }: Owner) -> (KeyManager<S>, AccountId) {
        (self.manager.clone().acting_as(actor), account)
    }
}

#[derive(Deserialize)]
struct KeyPath {
    key_id: String,
}

/// The key id of the path; one that cannot be read (not UTF-8) names nothing the store made.
fn key_id(path: Result<Path<KeyPath>, PathRejection>) -> Result<KeyId, RouterError> {
    path.map(|Path(path)| KeyId::from(path.key_id))
        .map_err(|_| RouterError::NoRoute)
}

#[derive(Deserialize)]
struct ListQuery {
    environment: Option<String>,
    limit: Option<String>,
    before: Option<String>,
}

/// Keys a page holds unless `limit` says otherwise: every key an account holds by default.
const KEY_PAGE: usize = crate::Profile::DEFAULT_MAX_KEYS;

async fn list<S: KeyStorage>(
    State(keys): Keys<S>,
    Extension(owner): Extension<Owner>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<impl IntoResponse, RouterError> {
    let (manager, account) = keys.of(owner);
    // The account first: an unknown one is 404 whatever the query says.
    manager.account(&account).await?;
    let Query(query) = query.map_err(|rejection| invalid("query", rejection.body_text()))?;
    let environment = query
        .environment
        .map(|label| label.parse::<Environment>())
        .transpose()
        .map_err(|error| invalid("environment", error.to_string()))?;
    let limit = page_limit(query.limit, KEY_PAGE)?;
    Ok(Json(
        manager
            .key_page(
                &account,
                environment.as_ref(),
                query.before.as_deref(),
                limit,
            )
            .await?,
    ))
}

async fn create<S: KeyStorage>(
    State(keys): Keys<S>,
    Extension(owner): Extension<Owner>,
    bytes: Body,
) -> Result<impl IntoResponse, RouterError> {
    let take_limit = keys.take_limit;
    let grantable = owner.grantable.clone();
    let (manager, account) = keys.of(owner);
    let mut spec = Fields::read(bytes).key_spec(manager.profile.permissions(), take_limit);
    if let Some(grantable) = grantable {
        spec.grantable_only(grantable(&manager.account(&account).await?));
    }
    let created = spec
        .key(&manager, async |spec| {
            manager.prepare_key(&account, spec).await
        })
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn read<S: KeyStorage>(
    State(keys): Keys<S>,
    Extension(owner): Extension<Owner>,
    path: Result<Path<KeyPath>, PathRejection>,
) -> Result<impl IntoResponse, RouterError> {
    let (manager, account) = keys.of(owner);
    Ok(Json(manager.key(&account, &key_id(path)?).await?))
}

async fn delete<S: KeyStorage>(
    State(keys): Keys<S>,
    Extension(owner): Extension<Owner>,
    path: Result<Path<KeyPath>, PathRejection>,
) -> Result<impl IntoResponse, RouterError> {
    let (manager, account) = keys.of(owner);
    manager.delete_key(&account, &key_id(path)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn rotate<S: KeyStorage>(
    State(keys): Keys<S>,
    Extension(owner): Extension<Owner>,
    path: Result<Path<KeyPath>, PathRejection>,
    bytes: Body,
) -> Result<impl IntoResponse, RouterError> {
    let key = key_id(path)?;
    let (manager, account) = keys.of(owner);
    let created = Fields::read(bytes)
        .rotation(manager.profile.permissions())
        .key(&manager, async |rotation| {
            manager.prepare_rotation(&account, &key, rotation).await
        })
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn disable<S: KeyStorage>(
    State(keys): Keys<S>,
    Extension(owner): Extension<Owner>,
    path: Result<Path<KeyPath>, PathRejection>,
) -> Result<impl IntoResponse, RouterError> {
    let (manager, account) = keys.of(owner);
    Ok(Json(manager.disable_key(&account, &key_id(path)?).await?))
}

async fn enable<S: KeyStorage>(
    State(keys): Keys<S>,
    Extension(owner): Extension<Owner>,
    path: Result<Path<KeyPath>, PathRejection>,
) -> Result<impl IntoResponse, RouterError> {
    let (manager, account) = keys.of(owner);
    Ok(Json(manager.enable_key(&account, &key_id(path)?).await?))
}

#[derive(Deserialize)]
struct UsageQuery {
    granularity: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// The key's usage by hour or by day over a range, as JSON or, asked with
/// `Accept: text/csv`, as CSV.
async fn usage<S: KeyStorage>(
    State(keys): Keys<S>,
    Extension(owner): Extension<Owner>,
    path: Result<Path<KeyPath>, PathRejection>,
    headers: HeaderMap,
    query: Result<Query<UsageQuery>, QueryRejection>,
) -> Result<Response, RouterError> {
    let (manager, account) = keys.of(owner);
    let key = key_id(path)?;
    let mut errors = Vec::new();
    let (granularity, from, to) = match query {
        Err(rejection) => {
            errors.push(FieldError::new("query", rejection.body_text()));
            (Granularity::Hour, None, None)
        }
        Ok(Query(query)) => {
            let granularity = match query.granularity.as_deref() {
                None | Some("hour") => Granularity::Hour,
                Some("day") => Granularity::Day,
                Some(_) => {
                    errors.push(FieldError::new("granularity", "must be hour or day"));
                    Granularity::Hour
                }
            };
            let mut instant = |field: &str, text: Option<String>| {
                let text = text?;
                OffsetDateTime::parse(&text, &Rfc3339)
                    .map_err(|_| errors.push(FieldError::new(field, "must be an RFC 3339 time")))
                    .ok()
            };
            let from = instant("from", query.from);
            let to = instant("to", query.to);
            (granularity, from, to)
        }
    };
    if !errors.is_empty() {
        // An unknown key first, as everywhere.
        manager.key(&account, &key).await?;
        return Err(ManageError::Invalid(errors).into());
    }
    let usage = manager.usage(&account, &key, granularity, from, to).await?;
    let csv = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("text/csv"));
    if !csv {
        return Ok(Json(usage).into_response());
    }
    let mut body = String::from(
        "start,admitted,plan_required,missing_permission,route_not_allowed,rate_limited\n",
    );
    for bucket in &usage.buckets {
        let start = bucket.start.format(&Rfc3339).unwrap_or_default();
        let r = &bucket.rejected;
        body.push_str(&format!(
            "{start},{},{},{},{},{}\n",
            bucket.admitted,
            r.plan_required,
            r.missing_permission,
            r.route_not_allowed,
            r.rate_limited
        ));
    }
    Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response())
}

/// A 422 on `field`.
fn invalid(field: &str, reason: String) -> RouterError {
    RouterError::Manage(ManageError::Invalid(vec![FieldError::new(field, reason)]))
}

/// A page's `limit`: `default` when absent, else a whole number from 1 to 500.
fn page_limit(limit: Option<String>, default: usize) -> Result<usize, RouterError> {
    let max = crate::manage::manager::MAX_PAGE;
    match limit {
        None => Ok(default),
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| invalid("limit", format!("must be a whole number from 1 to {max}"))),
    }
}

/// `/` (`GET`, `?limit=&before=`): the account's audit log, newest first, a page at a time.
pub(crate) fn audit_routes<S: KeyStorage>(manager: KeyManager<S>) -> Router {
    Router::new()
        .route("/", get(audit::<S>))
        .with_state(KeyRoutes {
            manager,
            take_limit: false,
        })
}

#[derive(Deserialize)]
struct AuditQuery {
    limit: Option<String>,
    before: Option<String>,
}

/// Entries a page holds unless `limit` says otherwise.
const AUDIT_PAGE: usize = 50;

async fn audit<S: KeyStorage>(
    State(keys): Keys<S>,
    Extension(owner): Extension<Owner>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<impl IntoResponse, RouterError> {
    let (manager, account) = keys.of(owner);
    manager.account(&account).await?;
    let Query(query) = query.map_err(|rejection| invalid("query", rejection.body_text()))?;
    let limit = page_limit(query.limit, AUDIT_PAGE)?;
    Ok(Json(
        manager
            .audit(&account, query.before.as_deref(), limit)
            .await?,
    ))
}
