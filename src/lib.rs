//! Tower middleware that puts API-key rules in front of any axum or hyper service:
//! `Authorization: Bearer <prefix>…` keys checked against a pluggable [`KeyStore`],
//! per-route [permissions](Permission), [plan](Plans) gating, expiry, and exact
//! [rate limits](RateLimits) (sliding windows and daily or monthly quotas, per key or per
//! account), in the application's own [`Profile`] or the Nouvel API's, the default.
//!
//! # Quick start
//!
//! An application with its own routes, permissions and key prefix:
//!
//! ```
//! use axum::{body::Body, routing::get, Router};
//! use http::{Method, Request, StatusCode};
//! use nouvel_auth::{
//!     AuthenticatedKey, KeyManager, KeyPrefix, KeySpec, MemoryKeyStore, NouvelAuthLayer,
//!     Permission, PermissionSet, Plan, Plans, RouteTable, Profile,
//! };
//! use tower::ServiceExt;
//!
//! const SCOPES: &PermissionSet = &PermissionSet::new(&["videos:read", "videos:write"]);
//! const VIDEOS_READ: Permission = SCOPES.permission("videos:read");
//! const VIDEOS_WRITE: Permission = SCOPES.permission("videos:write");
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let words = Profile::new(SCOPES, Plans::any(), KeyPrefix::new("vid_").unwrap());
//! let store = MemoryKeyStore::new();
//! let keys = words.clone().key_manager(store.clone());
//! let account = keys.create_account("Acme", Plan::from_static("pro")).await.unwrap();
//! let created = keys
//!     .create_key(&account.id, KeySpec::new("Reporting", [VIDEOS_READ]))
//!     .await
//!     .unwrap();
//! assert!(created.key.expose_secret().starts_with("vid_"));
//!
//! let routes = RouteTable::new()
//!     .route(Method::GET, "/videos", VIDEOS_READ).unwrap()
//!     .route(Method::POST, "/videos", VIDEOS_WRITE).unwrap();
//! let app = Router::new()
//!     .route("/videos", get(|key: AuthenticatedKey| async move { key.name.to_string() })
//!         .post(|| async { "uploaded" }))
//!     .layer(words.layer(store).routes(routes));
//!
//! let request = |method: Method, auth: &str| {
//!     Request::builder().method(method).uri("/videos").header("authorization", auth)
//!         .body(Body::empty()).unwrap()
//! };
//! let bearer = format!("Bearer {}", created.key.expose_secret());
//! let ok = app.clone().oneshot(request(Method::GET, &bearer)).await.unwrap();
//! assert_eq!(ok.status(), StatusCode::OK);
//! assert_eq!(ok.headers()["x-ratelimit-remaining"], "59");
//!
//! // Least privilege: a read key cannot write.
//! let refused = app.clone().oneshot(request(Method::POST, &bearer)).await.unwrap();
//! assert_eq!(refused.status(), StatusCode::FORBIDDEN);
//! assert_eq!(refused.headers()["content-type"], "application/problem+json");
//!
//! let made_up = app.oneshot(request(Method::GET, "Bearer vid_madeup")).await.unwrap();
//! assert_eq!(made_up.status(), StatusCode::UNAUTHORIZED);
//! # }
//! ```
//!
//! Nouvel's profile is the default: `NouvelAuthLayer::new(store)` alone checks `nvl_` keys
//! against the seed's seven routes ([`RouteTable::nouvel`]) with the permissions and plans
//! of [`nouvel`].
//!
//! # The request's path
//!
//! Each step has one place, so the answer to "why did I get 403" is in one module:
//!
//! 1. route: [`RouteTable`] says what the path needs ([`Access`](routes::Access)); public paths stop here;
//! 2. credentials: the `Bearer` key, its prefix, format and checksum (401, no I/O);
//! 3. lookup: the [`KeyStore`] finds the digest (401 unknown, 503 outage), then expiry
//!    (401 expired);
//! 4. plan: the [`Profile`]'s [`Plans`] (402);
//! 5. permission: the route's [`Permission`] against the key's (403);
//! 6. limit: the [`RateLimiter`], every limit of the key's list (429);
//! 7. the inner service, with the key as an [`AuthenticatedKey`].
//!
//! Every refusal of the layer is a [`Rejection`]; it and every other refusal of the crate
//! (the extractor's, the routers') is a [`Problem`], answered as
//! `application/problem+json` in the [`Profile`]'s style unless its [`Responder`] answers
//! otherwise. Management (accounts, keys, rotation) is the
//! [`KeyManager`]'s, over any [`KeyStorage`].
//!
//! # Features
//!
//! `axum` (default): the extractor, and route matching under `nest`. `admin`: the operator's
//! HTTP API (module `admin`). `settings`: "Settings → API Keys" for the application's
//! signed-in users, JSON and a page (module `settings`). `cache`, `postgres`, `sqlite`:
//! `store::CachedKeyStore`, `store::PostgresKeyStore` and `store::SqliteKeyStore`. `redis`:
//! `limit::RedisRateLimiter`. `metrics`: counters and a histogram through the `metrics`
//! facade ([`metrics`]). `testing`: the conformance kit for stores (module `testing`). The
//! links are in the documentation built with the features on (docs.rs builds it with all).

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "admin")]
#[cfg_attr(docsrs, doc(cfg(feature = "admin")))]
pub mod admin;
mod attachment;
pub mod clock;
mod credentials;
mod environment;
mod error;
pub mod events;
pub mod expiration;
mod extract;
pub mod key;
pub mod limit;
pub mod manage;
pub mod metrics;
pub mod middleware;
pub mod network;
pub mod nouvel;
pub mod permission;
pub mod plan;
mod profile;
mod quiet;
mod reject;
#[cfg(any(feature = "admin", feature = "settings", feature = "secret-scanning"))]
mod routers;
pub mod routes;
#[cfg(feature = "secret-scanning")]
#[cfg_attr(docsrs, doc(cfg(feature = "secret-scanning")))]
pub mod secret_scanning;
#[cfg(feature = "settings")]
#[cfg_attr(docsrs, doc(cfg(feature = "settings")))]
pub mod settings;
pub mod store;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
mod usage;

/// The concurrent map of the memory store, limiter and usage counters. Its keys are ids
/// and digests the server made, so a fast seeded hash (foldhash) is safe where SipHash
/// would cost more than the rest of a lookup.
type ConcurrentMap<K, V> = dashmap::DashMap<K, V, foldhash::fast::RandomState>;

// The crate root holds what an integrator types in the common case: the profile and what
// it is made of, the layer, the extractor, the manager, the traits a store implements with
// their record types, and the rejections. Everything else is in its module, once.
pub use error::BackendError;
pub use expiration::Expiration;
pub use extract::AuthenticatedKey;
pub use key::KeyPrefix;
pub use limit::limits::{RateLimit, RateLimits};
pub use manage::manager::{KeyManager, KeySpec, ManageError};
pub use middleware::layer::NouvelAuthLayer;
pub use permission::{Permission, PermissionSet, Permissions};
pub use plan::{Plan, Plans};
pub use profile::Profile;
pub use reject::{Problem, Rejection, Responder};
pub use routes::RouteTable;
pub use store::{
    memory::MemoryKeyStore,
    traits::{KeyRecord, KeyStorage, KeyStore, StoredKey},
};
/// The `time` crate, whose [`OffsetDateTime`](time::OffsetDateTime) is every instant in
/// this crate's signatures (expirations, the clock, `now` in lookups).
pub use time;

/// Locks `mutex`, going on after a panic elsewhere: every update under the crate's locks
/// leaves a valid state (a window, a log, a list).
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

// Short paths for the crate's own code; each item's public path is its module's.
pub(crate) use clock::{Clock, SystemClock};
pub(crate) use environment::Environment;
pub(crate) use key::{AccountId, ApiKey, KeyDigest, KeyFormatError, KeyHasher, KeyId};
pub(crate) use limit::{Decision, MemoryRateLimiter, RateLimiter};
pub(crate) use manage::Account;
pub(crate) use usage::{Usage, UsageReport};
