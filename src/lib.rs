//! Tower middleware that puts the Nouvel API's key rules in front of any axum or hyper
//! service: `Authorization: Bearer nvl_…` keys checked against a pluggable [`KeyStore`],
//! per-route [permissions](Permission), [plan](Plan) gating, expiry, and an exact
//! per-key sliding-window [rate limit](RateLimit).
//!
//! # Quick start
//!
//! ```
//! use axum::{body::Body, routing::post, Router};
//! use http::{Request, StatusCode};
//! use nouvel_auth::{nouvel, AuthenticatedKey, KeyManager, KeySpec, MemoryKeyStore, NouvelAuthLayer};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let store = MemoryKeyStore::new();
//! let keys = KeyManager::new(store.clone());
//! let account = keys.create_account("Acme", nouvel::SCALE).await.unwrap();
//! let created = keys
//!     .create_key(&account.id, KeySpec::new("Production Server", [nouvel::GENERATE]))
//!     .await
//!     .unwrap();
//!
//! let app = Router::new()
//!     .route("/api/v1/generate", post(|key: AuthenticatedKey| async move {
//!         format!("generating for {}", key.id)
//!     }))
//!     .layer(NouvelAuthLayer::new(store));
//!
//! let request = |auth: &str| {
//!     Request::post("/api/v1/generate").header("authorization", auth).body(Body::empty()).unwrap()
//! };
//! let bearer = format!("Bearer {}", created.key.expose_secret());
//! let ok = app.clone().oneshot(request(&bearer)).await.unwrap();
//! assert_eq!(ok.status(), StatusCode::OK);
//! assert_eq!(ok.headers()["x-ratelimit-remaining"], "59");
//!
//! let refused = app.oneshot(request("Bearer nvl_madeup")).await.unwrap();
//! assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
//! assert_eq!(refused.headers()["content-type"], "application/problem+json");
//! # }
//! ```
//!
//! # The request's path
//!
//! Each step has one place, so the answer to "why did I get 403" is in one module:
//!
//! 1. route: [`RouteTable`] says what the path needs ([`Access`]); public paths stop here;
//! 2. credentials: the `Bearer` key, its prefix, format and checksum (401, no I/O);
//! 3. lookup: the [`KeyStore`] finds the digest (401 unknown, 503 outage), then expiry
//!    (401 expired);
//! 4. plan: the [`Vocabulary`]'s [`Plans`] (402);
//! 5. permission: the route's [`Permission`] against the key's (403);
//! 6. limit: the [`RateLimiter`] (429);
//! 7. the inner service, with the key as an [`AuthenticatedKey`].
//!
//! Every refusal is a [`Rejection`], answered as `application/problem+json` unless a
//! [`Responder`] answers otherwise. Management (accounts, keys, rotation) is the
//! [`KeyManager`]'s, over any [`KeyStorage`].
//!
//! # Features
//!
//! `axum` (default): the extractor, and route matching under `nest`. `admin`: the operator's
//! HTTP API ([`admin`]). `cache`, `postgres`: [`store::CachedKeyStore`] and
//! [`store::PostgresKeyStore`]. `redis`: [`limit::RedisRateLimiter`]. `testing`: the
//! conformance kit for stores ([`testing`]).

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "admin")]
#[cfg_attr(docsrs, doc(cfg(feature = "admin")))]
pub mod admin;
mod clock;
mod credentials;
mod error;
mod expiration;
mod extract;
mod key;
pub mod limit;
pub mod manage;
pub mod middleware;
pub mod nouvel;
mod permission;
mod plan;
mod reject;
mod routes;
pub mod store;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
mod usage;
mod vocabulary;

/// The concurrent map of the memory store, limiter and usage counters. Its keys are ids
/// and digests the server made, so a fast seeded hash (foldhash) is safe where SipHash
/// would cost more than the rest of a lookup.
type ConcurrentMap<K, V> = dashmap::DashMap<K, V, foldhash::fast::RandomState>;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::BackendError;
pub use expiration::{Expiration, ExpirationError};
pub use extract::AuthenticatedKey;
pub use key::{
    AccountId, ApiKey, InvalidPrefix, KeyDigest, KeyFormatError, KeyHasher, KeyId, KeyPrefix,
};
pub use limit::{
    memory::MemoryRateLimiter,
    rule::{Decision, RateLimit, RateLimiter},
};
pub use manage::manager::{KeyManager, KeySpec, ManageError};
pub use middleware::layer::NouvelAuthLayer;
pub use permission::{Permission, PermissionIter, PermissionSet, Permissions, UnknownPermission};
pub use plan::{Plan, Plans, UnknownPlan};
pub use reject::{Rejection, Responder};
pub use routes::{Access, RouteError, RouteTable};
pub use store::{
    memory::MemoryKeyStore,
    traits::{KeyRecord, KeyStorage, KeyStore, StoredKey},
};
/// The `time` crate, whose [`OffsetDateTime`](time::OffsetDateTime) is every instant in
/// this crate's signatures (expirations, the clock, `now` in lookups).
pub use time;
pub use vocabulary::Vocabulary;

// Short paths for the crate's own code; each item's public path is its module's.
pub(crate) use manage::Account;
pub(crate) use usage::{Usage, UsageReport};
