use std::{fmt, sync::Arc, time::Duration};

use tower_layer::Layer;

use super::{slots::Slots, Checks, Config, NouvelAuth};
use crate::{
    reject::Problems, BackendError, KeyStore, MemoryRateLimiter, Profile, RateLimiter, RouteTable,
};

/// Puts an application's key rules in front of a service: [`NouvelAuthLayer::new`] for
/// Nouvel's [profile](Profile::nouvel), [`Profile::layer`] for an application's own.
///
/// Defaults: the [Nouvel route table](RouteTable::nouvel) with unlisted routes denied, the
/// limit counted in a [`MemoryRateLimiter`], 1 s timeouts on store and limiter,
/// problem+json rejections in the profile's words, the `Authorization` header removed
/// before the inner service, usage flushed every 5 s.
///
/// The services run on Tokio: timeouts use its timer, and the first request starts the
/// usage flush task on the runtime it runs on (axum and hyper servers are Tokio already).
///
/// Every service the layer makes (axum makes one per route, and again per connection)
/// shares its store, limiter, usage and settings, so one key has one limit across routes,
/// and applying the layer costs a reference count.
///
/// ```
/// use axum::{routing::post, Router};
/// use nouvel_auth::{AuthenticatedKey, MemoryKeyStore, NouvelAuthLayer};
///
/// async fn generate(key: AuthenticatedKey) -> String {
///     format!("hello, {}", key.name)
/// }
///
/// let store = MemoryKeyStore::new();
/// let app: Router = Router::new()
///     .route("/api/v1/generate", post(generate))
///     .layer(NouvelAuthLayer::new(store));
/// ```
pub struct NouvelAuthLayer<K, L: RateLimiter = MemoryRateLimiter> {
    // Made once: axum applies a layer to each route, and again for each connection
    // (`Router::with_state`), so `layer` must cost no more than a count on an `Arc`.
    checks: Arc<Checks<K, L>>,
}

const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(5);

impl<K: KeyStore> NouvelAuthLayer<K> {
    /// A layer of Nouvel's profile reading keys from `store`, with the defaults above.
    pub fn new(store: K) -> Self {
        Self::with_profile(store, Profile::nouvel())
    }

    /// [`Profile::layer`].
    pub(crate) fn with_profile(store: K, profile: Profile) -> Self {
        crate::metrics::layer_started();
        Self {
            checks: Arc::new(Checks {
                store: Arc::new(store),
                limiter: Arc::new(MemoryRateLimiter::new()),
                slots: Arc::new(Slots::new(DEFAULT_FLUSH_INTERVAL, profile.permissions())),
                config: Config {
                    routes: RouteTable::nouvel(),
                    clock: profile.clock_handle().clone(),
                    lookup_timeout: Duration::from_secs(1),
                    limiter_timeout: Duration::from_secs(1),
                    keep_authorization: false,
                    flush_interval: DEFAULT_FLUSH_INTERVAL,
                },
                problems: Arc::new(Problems::new(profile)),
            }),
        }
    }
}

impl<K: KeyStore, L: RateLimiter> NouvelAuthLayer<K, L> {
    /// Uses `limiter` instead of the in-memory one.
    pub fn limiter<L2: RateLimiter>(self, limiter: L2) -> NouvelAuthLayer<K, L2> {
        let Checks {
            store,
            problems,
            config,
            ..
        } = Arc::unwrap_or_clone(self.checks);
        NouvelAuthLayer {
            checks: Arc::new(Checks {
                store,
                limiter: Arc::new(limiter),
                slots: Arc::new(Slots::new(
                    config.flush_interval,
                    problems.profile().permissions(),
                )),
                problems,
                config,
            }),
        }
    }

    /// Uses `routes` instead of the seed's table.
    #[must_use]
    pub fn routes(self, routes: RouteTable) -> Self {
        self.change(|checks| checks.config.routes = routes)
    }

    /// How long a key lookup may take before the request gets 503 (default 1 s).
    #[must_use]
    pub fn lookup_timeout(self, timeout: Duration) -> Self {
        self.change(|checks| checks.config.lookup_timeout = timeout)
    }

    /// How long a limiter check may take before the request gets 503 (default 1 s).
    #[must_use]
    pub fn limiter_timeout(self, timeout: Duration) -> Self {
        self.change(|checks| checks.config.limiter_timeout = timeout)
    }

    /// Passes the `Authorization` header on to the inner service (by default it is
    /// removed, so the key cannot leak from there).
    #[must_use]
    pub fn keep_authorization_header(self) -> Self {
        self.change(|checks| checks.config.keep_authorization = true)
    }

    /// How often usage is flushed to the store (default 5 s): the bound on how stale
    /// `last_used_at` and the usage counters may be.
    #[must_use]
    pub fn usage_flush_interval(self, interval: Duration) -> Self {
        self.change(|checks| {
            checks.config.flush_interval = interval;
            checks.slots = Arc::new(Slots::new(
                interval,
                checks.problems.profile().permissions(),
            ));
        })
    }

    /// Hands this layer's pending usage to the store now; [`Profile::flush_usage`] does it
    /// for every layer of a profile, with no layer kept around for it.
    pub async fn flush_usage(&self) -> Result<(), BackendError> {
        self.checks.slots.flush(&*self.checks.store).await
    }

    /// This layer with one setting changed. Its checks are copied only if a clone of the
    /// layer shares them.
    fn change(self, setting: impl FnOnce(&mut Checks<K, L>)) -> Self {
        let mut checks = Arc::unwrap_or_clone(self.checks);
        setting(&mut checks);
        Self {
            checks: Arc::new(checks),
        }
    }
}

impl<K, L: RateLimiter> Clone for NouvelAuthLayer<K, L> {
    fn clone(&self) -> Self {
        Self {
            checks: self.checks.clone(),
        }
    }
}

impl<S, K: KeyStore, L: RateLimiter> Layer<S> for NouvelAuthLayer<K, L> {
    type Service = NouvelAuth<S, K, L>;

    fn layer(&self, inner: S) -> Self::Service {
        NouvelAuth::new(inner, self.checks.clone())
    }
}

impl<K, L: RateLimiter> fmt::Debug for NouvelAuthLayer<K, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NouvelAuthLayer")
            .field("routes", &self.checks.config.routes)
            .field("profile", self.checks.problems.profile())
            .finish_non_exhaustive()
    }
}
