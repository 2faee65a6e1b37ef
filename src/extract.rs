//! Step 7 of the request's path: the key the handler receives, [`AuthenticatedKey`].
//!
//! The layer puts it in the extensions of every request it admits with a key. In axum it
//! is an extractor (feature `axum`, on by default): `AuthenticatedKey` for routes that need
//! a key, `Option<AuthenticatedKey>` for routes the [route table](crate::RouteTable) marks
//! [optional](crate::RouteTable::optional). With plain hyper, read it from the request:
//! `request.extensions().get::<AuthenticatedKey>()`.
//!
//! A handler whose router lacks the layer answers 500 `auth_layer_missing` (problem+json)
//! and logs an error once, rather than serving a request nobody checked. On an optional
//! route without a key, `AuthenticatedKey` answers the layer's own 401
//! `missing_api_key`, in its profile's words and through its responder.
//!
//! ```
//! use axum::{body::Body, routing::get, Router};
//! use http::{Request, StatusCode};
//! use nouvel_auth::AuthenticatedKey;
//! use tower::ServiceExt;
//!
//! async fn whoami(key: AuthenticatedKey) -> String {
//!     format!("{} of {}", key.id, key.account_id)
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // The layer was forgotten:
//! let app = Router::new().route("/whoami", get(whoami));
//! let response = app.oneshot(Request::get("/whoami").body(Body::empty()).unwrap()).await.unwrap();
//! assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
//! assert_eq!(response.headers()["content-type"], "application/problem+json");
//! # }
//! ```

use std::{ops::Deref, sync::Arc};

use crate::KeyRecord;

/// The key that authenticated the request: its [`KeyRecord`], shared with the store (a
/// reference count, no copy). Derefs to the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedKey(Arc<KeyRecord>);

impl AuthenticatedKey {
    pub(crate) fn new(record: Arc<KeyRecord>) -> Self {
        Self(record)
    }

    /// The shared record.
    #[must_use]
    pub fn record(&self) -> &Arc<KeyRecord> {
        &self.0
    }
}

impl Deref for AuthenticatedKey {
    type Target = KeyRecord;

    fn deref(&self) -> &KeyRecord {
        &self.0
    }
}

/// Put by the layer on requests it let through without a key (optional routes), so that
/// `Option<AuthenticatedKey>` can tell "no key" from "no layer", and `AuthenticatedKey`
/// answers the layer's 401.
#[derive(Debug, Clone)]
pub(crate) struct Unauthenticated(
    #[cfg_attr(not(feature = "axum"), allow(dead_code))] // read by the axum extractor
    pub(crate)  std::sync::Arc<crate::reject::Problems>,
);

#[cfg(feature = "axum")]
mod axum_extract {
    use std::sync::Once;

    use axum::{
        extract::{FromRequestParts, OptionalFromRequestParts},
        response::{IntoResponse, Response},
    };
    use http::{header, request::Parts, StatusCode};

    use super::{AuthenticatedKey, Unauthenticated};
    use crate::{
        reject::{render_problem, Problems, PROBLEM_JSON},
        Rejection,
    };

    /// Why a handler could not have its [`AuthenticatedKey`]: no key came on an optional
    /// route (the layer's 401 `missing_api_key`), or no
    /// [`NouvelAuthLayer`](crate::NouvelAuthLayer) is in front of the handler (500).
    #[derive(Debug)]
    pub struct KeyRejection(Kind);

    #[derive(Debug)]
    enum Kind {
        Missing(std::sync::Arc<Problems>),
        LayerMissing,
    }

    impl KeyRejection {
        /// 401 or 500.
        #[must_use]
        pub fn status(&self) -> StatusCode {
            match self.0 {
                Kind::Missing(_) => StatusCode::UNAUTHORIZED,
                Kind::LayerMissing => StatusCode::INTERNAL_SERVER_ERROR,
            }
        }
    }

    impl IntoResponse for KeyRejection {
        fn into_response(self) -> Response {
            match self.0 {
                Kind::Missing(problems) => problems
                    .respond(
                        &Rejection::MissingApiKey,
                        Default::default(),
                        Default::default(),
                    )
                    .map(axum::body::Body::from),
                Kind::LayerMissing => {
                    static LOGGED: Once = Once::new();
                    LOGGED.call_once(|| {
                        tracing::error!(
                            "nouvel-auth: a handler takes AuthenticatedKey but no NouvelAuthLayer is in front of it; answering 500"
                        );
                    });
                    let status = StatusCode::INTERNAL_SERVER_ERROR;
                    let body = render_problem(
                        status,
                        "auth_layer_missing",
                        "The server is misconfigured: this route is not behind its authentication layer.",
                        serde_json::Map::new(),
                        // No layer, so no profile: the plain problem.
                        None,
                    );
                    (status, [(header::CONTENT_TYPE, PROBLEM_JSON)], body).into_response()
                }
            }
        }
    }

    impl<S: Send + Sync> FromRequestParts<S> for AuthenticatedKey {
        type Rejection = KeyRejection;

        async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
            match parts.extensions.get::<Self>() {
                Some(key) => Ok(key.clone()),
                None => Err(KeyRejection(
                    match parts.extensions.get::<Unauthenticated>() {
                        Some(Unauthenticated(problems)) => Kind::Missing(problems.clone()),
                        None => Kind::LayerMissing,
                    },
                )),
            }
        }
    }

    impl<S: Send + Sync> OptionalFromRequestParts<S> for AuthenticatedKey {
        type Rejection = KeyRejection;

        async fn from_request_parts(
            parts: &mut Parts,
            _: &S,
        ) -> Result<Option<Self>, Self::Rejection> {
            match parts.extensions.get::<Self>() {
                Some(key) => Ok(Some(key.clone())),
                None if parts.extensions.get::<Unauthenticated>().is_some() => Ok(None),
                None => Err(KeyRejection(Kind::LayerMissing)),
            }
        }
    }
}

#[cfg(feature = "axum")]
pub use axum_extract::KeyRejection;
