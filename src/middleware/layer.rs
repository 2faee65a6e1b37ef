use std::{fmt, sync::Arc, time::Duration};

use tower_layer::Layer;

use super::{slots::Slots, Checks, Config, NouvelAuth};
use crate::{
    reject::{ProblemStyle, Problems},
    BackendError, Clock, KeyStore, MemoryRateLimiter, RateLimit, RateLimiter, Responder,
    RouteTable, SystemClock, Vocabulary,
};

/// Puts the Nouvel key rules in front of a service.
///
/// Defaults: Nouvel's [vocabulary](Vocabulary::nouvel) and [route table](RouteTable::nouvel)
/// with unlisted routes denied, 60 requests per 60 s per key in a [`MemoryRateLimiter`],
/// the system clock, 1 s timeouts on store and limiter, problem+json rejections with realm
/// `nouvel` and problem `type` `about:blank`, the `Authorization` header removed before
/// the inner service, usage flushed every 5 s.
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
    /// A layer reading keys from `store`, with the defaults above.
    pub fn new(store: K) -> Self {
        Self {
            checks: Arc::new(Checks {
                store: Arc::new(store),
                limiter: Arc::new(MemoryRateLimiter::new()),
                slots: Arc::new(Slots::new(DEFAULT_FLUSH_INTERVAL)),
                problems: Problems::new(ProblemStyle::default()),
                config: Config {
                    routes: RouteTable::nouvel(),
                    clock: Arc::new(SystemClock),
                    default_limit: RateLimit::default(),
                    lookup_timeout: Duration::from_secs(1),
                    limiter_timeout: Duration::from_secs(1),
                    keep_authorization: false,
                    flush_interval: DEFAULT_FLUSH_INTERVAL,
                },
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
                slots: Arc::new(Slots::new(config.flush_interval)),
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

    /// The limit of keys whose record sets none (default 60 per 60 s).
    #[must_use]
    pub fn default_limit(self, limit: RateLimit) -> Self {
        self.change(|checks| checks.config.default_limit = limit)
    }

    /// Reads time from `clock` (expiry, limiter, usage times).
    #[must_use]
    pub fn clock(self, clock: impl Clock) -> Self {
        self.change(|checks| checks.config.clock = Arc::new(clock))
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

    /// The application's permissions, plans and key prefix (default Nouvel's): the plan
    /// gate (402), the key format (401) and the texts of rejections follow it. Give the
    /// [`KeyManager`](crate::KeyManager) the same one.
    #[must_use]
    pub fn vocabulary(self, vocabulary: Vocabulary) -> Self {
        self.change(|checks| {
            checks
                .problems
                .restyle(|style| style.vocabulary = vocabulary)
        })
    }

    /// Answers rejections through `responder` (see [`Responder`]) instead of with the
    /// problem+json default, which it is handed to change or keep.
    #[must_use]
    pub fn responder(self, responder: impl Responder) -> Self {
        self.change(|checks| checks.problems.set_responder(responder))
    }

    /// The realm of `WWW-Authenticate` challenges (default `nouvel`). Characters that
    /// cannot stand in a quoted string (`"`, `\`, controls, non-ASCII) are dropped.
    #[must_use]
    pub fn realm(self, realm: &str) -> Self {
        let realm = realm
            .chars()
            .filter(|c| (c.is_ascii_graphic() || *c == ' ') && !matches!(c, '"' | '\\'))
            .collect();
        self.change(|checks| checks.problems.restyle(|style| style.realm = realm))
    }

    /// Problem `type`s become `{base}{code}` (for example
    /// `https://docs.example.com/errors/` gives `…/errors/missing_api_key`) instead of
    /// `about:blank`.
    #[must_use]
    pub fn problem_type_base(self, base: impl Into<String>) -> Self {
        let base = base.into();
        self.change(|checks| {
            checks
                .problems
                .restyle(|style| style.type_base = Some(base))
        })
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
            checks.slots = Arc::new(Slots::new(interval));
        })
    }

    /// Hands pending usage to the store now. Call it at shutdown, after the server has
    /// stopped taking requests, so the last interval's usage is kept.
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
            .field("default_limit", &self.checks.config.default_limit)
            .finish_non_exhaustive()
    }
}
