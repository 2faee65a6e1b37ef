use std::{fmt, sync::Arc, time::Duration};

use tower_layer::Layer;

use super::{Checks, Config, NouvelAuth};
use crate::{
    reject::{ProblemStyle, Problems},
    usage::UsageRecorder,
    BackendError, Clock, KeyStore, MemoryRateLimiter, RateLimit, RateLimiter, RouteTable,
    SystemClock,
};

/// Puts the Nouvel key rules in front of a service.
///
/// Defaults: the seed's [route table](RouteTable::nouvel) with unlisted routes denied, 60
/// requests per 60 s per key in a [`MemoryRateLimiter`], the system clock, 1 s timeouts on
/// store and limiter, realm `nouvel`, problem `type` `about:blank`, the `Authorization`
/// header removed before the inner service, usage flushed every 5 s.
///
/// The services run on Tokio: timeouts use its timer, and the first request starts the
/// usage flush task on the runtime it runs on (axum and hyper servers are Tokio already).
///
/// ```
/// use axum::{routing::post, Extension, Router};
/// use nouvel_auth::{KeyRecord, MemoryKeyStore, NouvelAuthLayer};
///
/// async fn generate(Extension(key): Extension<KeyRecord>) -> String {
///     format!("hello, {}", key.name)
/// }
///
/// let store = MemoryKeyStore::new();
/// let app: Router = Router::new()
///     .route("/api/v1/generate", post(generate))
///     .layer(NouvelAuthLayer::new(store));
/// ```
pub struct NouvelAuthLayer<K, L = MemoryRateLimiter> {
    store: Arc<K>,
    limiter: Arc<L>,
    usage: Arc<UsageRecorder>,
    config: Config,
}

const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(5);

impl<K: KeyStore> NouvelAuthLayer<K> {
    /// A layer reading keys from `store`, with the defaults above.
    pub fn new(store: K) -> Self {
        Self {
            store: Arc::new(store),
            limiter: Arc::new(MemoryRateLimiter::new()),
            usage: Arc::new(UsageRecorder::new(DEFAULT_FLUSH_INTERVAL)),
            config: Config {
                routes: RouteTable::nouvel(),
                clock: Arc::new(SystemClock),
                default_limit: RateLimit::default(),
                lookup_timeout: Duration::from_secs(1),
                limiter_timeout: Duration::from_secs(1),
                style: ProblemStyle::default(),
                keep_authorization: false,
            },
        }
    }
}

impl<K: KeyStore, L: RateLimiter> NouvelAuthLayer<K, L> {
    /// Uses `limiter` instead of the in-memory one.
    pub fn limiter<L2: RateLimiter>(self, limiter: L2) -> NouvelAuthLayer<K, L2> {
        NouvelAuthLayer {
            store: self.store,
            limiter: Arc::new(limiter),
            usage: self.usage,
            config: self.config,
        }
    }

    /// Uses `routes` instead of the seed's table.
    #[must_use]
    pub fn routes(mut self, routes: RouteTable) -> Self {
        self.config.routes = routes;
        self
    }

    /// The limit of keys whose record sets none (default 60 per 60 s).
    #[must_use]
    pub fn default_limit(mut self, limit: RateLimit) -> Self {
        self.config.default_limit = limit;
        self
    }

    /// Reads time from `clock` (expiry, limiter, usage times).
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.config.clock = Arc::new(clock);
        self
    }

    /// How long a key lookup may take before the request gets 503 (default 1 s).
    #[must_use]
    pub fn lookup_timeout(mut self, timeout: Duration) -> Self {
        self.config.lookup_timeout = timeout;
        self
    }

    /// How long a limiter check may take before the request gets 503 (default 1 s).
    #[must_use]
    pub fn limiter_timeout(mut self, timeout: Duration) -> Self {
        self.config.limiter_timeout = timeout;
        self
    }

    /// The realm of `WWW-Authenticate` challenges (default `nouvel`). Characters that
    /// cannot stand in a quoted string (`"`, `\`, controls, non-ASCII) are dropped.
    #[must_use]
    pub fn realm(mut self, realm: &str) -> Self {
        self.config.style.realm = realm
            .chars()
            .filter(|c| (c.is_ascii_graphic() || *c == ' ') && !matches!(c, '"' | '\\'))
            .collect();
        self
    }

    /// Problem `type`s become `{base}{code}` (for example
    /// `https://docs.example.com/errors/` gives `…/errors/missing_api_key`) instead of
    /// `about:blank`.
    #[must_use]
    pub fn problem_type_base(mut self, base: impl Into<String>) -> Self {
        self.config.style.type_base = Some(base.into());
        self
    }

    /// Passes the `Authorization` header on to the inner service (by default it is
    /// removed, so the key cannot leak from there).
    #[must_use]
    pub fn keep_authorization_header(mut self) -> Self {
        self.config.keep_authorization = true;
        self
    }

    /// How often usage is flushed to the store (default 5 s): the bound on how stale
    /// `last_used_at` and the usage counters may be.
    #[must_use]
    pub fn usage_flush_interval(mut self, interval: Duration) -> Self {
        self.usage = Arc::new(UsageRecorder::new(interval));
        self
    }

    /// Hands pending usage to the store now. Call it at shutdown, after the server has
    /// stopped taking requests, so the last interval's usage is kept.
    pub async fn flush_usage(&self) -> Result<(), BackendError> {
        self.usage.flush(&*self.store).await
    }
}

impl<K, L> Clone for NouvelAuthLayer<K, L> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            limiter: self.limiter.clone(),
            usage: self.usage.clone(),
            config: self.config.clone(),
        }
    }
}

impl<S, K: KeyStore, L: RateLimiter> Layer<S> for NouvelAuthLayer<K, L> {
    type Service = NouvelAuth<S, K, L>;

    fn layer(&self, inner: S) -> Self::Service {
        NouvelAuth::new(
            inner,
            Arc::new(Checks {
                store: self.store.clone(),
                limiter: self.limiter.clone(),
                usage: self.usage.clone(),
                problems: Problems::new(self.config.style.clone()),
                config: self.config.clone(),
            }),
        )
    }
}

impl<K, L> fmt::Debug for NouvelAuthLayer<K, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NouvelAuthLayer")
            .field("routes", &self.config.routes)
            .field("default_limit", &self.config.default_limit)
            .finish_non_exhaustive()
    }
}
