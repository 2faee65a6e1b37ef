//! The application's own words, given once: its [permissions](crate::PermissionSet), its
//! [plans](crate::Plans) with their limits, its [key prefix](crate::KeyPrefix), the realm
//! of its challenges, the name of its expiry-warning header, where its users manage keys,
//! its problem `type` base, its clock and its cap on keys per account. Nouvel's are the
//! default ([`Profile::nouvel`]).
//!
//! The parts are made from the profile, so each speaks it: [`Profile::layer`] and
//! [`Profile::key_manager`] (whose routers, [`admin`](crate::admin) and
//! [`settings`](crate::settings), speak its profile too). `NouvelAuthLayer::new(store)`
//! and `KeyManager::new(store)` are Nouvel's profile's.
//!
//! ```
//! use std::time::Duration;
//! use nouvel_auth::{
//!     KeyPrefix, MemoryKeyStore, PermissionSet, Plan, Plans, Profile, RateLimit,
//! };
//!
//! const SCOPES: &PermissionSet = &PermissionSet::new(&["forecast:read", "alerts:write"]);
//! const PRO: Plan = Plan::from_static("pro");
//! const TEAM: Plan = Plan::from_static("team");
//!
//! let profile = Profile::new(
//!     SCOPES,
//!     Plans::new([Plan::from_static("free"), PRO, TEAM]).api_keys_on([PRO, TEAM]),
//!     KeyPrefix::new("wx_").unwrap(),
//! )
//! .realm("weather")
//! .expiry_header(http::HeaderName::from_static("weather-key-expires-at"))
//! .plan_limits(PRO, RateLimit::new(120, Duration::from_secs(60)))
//! .plan_limits(TEAM, RateLimit::new(600, Duration::from_secs(60)));
//! assert_eq!(profile.limits_of(&TEAM, None).first_window().unwrap().requests(), 600);
//!
//! let store = MemoryKeyStore::new();
//! let keys = profile.key_manager(store.clone());
//! let layer = profile.layer(store);
//! assert_eq!(Profile::default().prefix().as_str(), "nvl_");
//! ```

use std::{
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use http::HeaderName;

use crate::middleware::Unflushed;

use crate::{
    clock::SharedClock, lock, network::Networks, nouvel, BackendError, Clock, KeyManager,
    KeyPrefix, KeyStorage, KeyStore, NouvelAuthLayer, PermissionSet, Plan, Plans, RateLimits,
    Responder, SystemClock,
};

/// The application's words, as one value (cheap to clone: a reference count).
#[derive(Clone)]
pub struct Profile(Arc<Words>);

#[derive(Clone)]
struct Words {
    permissions: &'static PermissionSet,
    plans: Plans,
    prefix: KeyPrefix,
    realm: Arc<str>,
    expiry_header: HeaderName,
    key_settings: Option<Arc<str>>,
    product: Option<Arc<str>>,
    problem_type_base: Option<Arc<str>>,
    clock: SharedClock,
    responder: Option<Arc<dyn Responder>>,
    default_limits: RateLimits,
    plan_limits: Vec<(Plan, RateLimits)>,
    max_keys: Option<usize>,
    unused_after: Duration,
    rotate_after: Duration,
    trusted_proxies: Option<Networks>,
    /// The layers made from this profile (and the profiles built from it) that have
    /// counted usage: what [`Profile::flush_usage`] writes.
    layers: Arc<Mutex<Vec<Arc<dyn Unflushed>>>>,
}

impl Profile {
    /// The most live keys an account holds unless
    /// [`max_keys_per_account`](Profile::max_keys_per_account) says otherwise.
    pub const DEFAULT_MAX_KEYS: usize = 100;

    /// An application's own words, with these defaults until set: realm `api`, the
    /// expiry-warning header `Api-Key-Expires-At`, problem `type` `about:blank`, the
    /// system clock, 60 requests per 60 s per key on every plan, 100 live keys per
    /// account.
    #[must_use]
    pub fn new(permissions: &'static PermissionSet, plans: Plans, prefix: KeyPrefix) -> Self {
        Self(Arc::new(Words {
            permissions,
            plans,
            prefix,
            realm: "api".into(),
            expiry_header: HeaderName::from_static("api-key-expires-at"),
            key_settings: None,
            product: None,
            problem_type_base: None,
            clock: Arc::new(SystemClock),
            responder: None,
            default_limits: RateLimits::default(),
            plan_limits: Vec::new(),
            max_keys: Some(Self::DEFAULT_MAX_KEYS),
            unused_after: Duration::from_secs(30 * 86_400),
            rotate_after: Duration::from_secs(90 * 86_400),
            trusted_proxies: None,
            layers: Arc::default(),
        }))
    }

    /// Nouvel's: five permissions, four plans with keys (60 requests per 60 s) on Scale and
    /// Business, `nvl_`, realm `nouvel`, `Nouvel-Key-Expires-At`, keys managed in
    /// "Settings → API Keys".
    #[must_use]
    pub fn nouvel() -> Self {
        Self::new(nouvel::PERMISSIONS, nouvel::plans(), KeyPrefix::NOUVEL)
            .realm("nouvel")
            .expiry_header(HeaderName::from_static("nouvel-key-expires-at"))
            .key_settings("Settings → API Keys")
            .product("Nouvel")
    }

    fn change(mut self, change: impl FnOnce(&mut Words)) -> Self {
        change(Arc::make_mut(&mut self.0));
        self
    }

    /// The proxies in front of the application (a load balancer's networks, say): behind
    /// them, a request's client address is the right-most address of `X-Forwarded-For`
    /// that is not one of them, for the keys' [network allow-lists](crate::network). By
    /// default none: the connection's address, and `X-Forwarded-For` ignored.
    ///
    /// ```
    /// use nouvel_auth::{network::Networks, Profile};
    ///
    /// let proxies = Networks::parse(["10.0.0.0/8"]).unwrap();
    /// let profile = Profile::nouvel().trusted_proxies(proxies);
    /// ```
    #[must_use]
    pub fn trusted_proxies(self, proxies: Networks) -> Self {
        self.change(|words| words.trusted_proxies = Some(proxies))
    }

    /// The realm of `WWW-Authenticate` challenges. Characters that cannot stand in a
    /// quoted string (`"`, `\`, controls, non-ASCII) are left out.
    #[must_use]
    pub fn realm(self, realm: &str) -> Self {
        let realm: String = realm
            .chars()
            .filter(|c| (c.is_ascii_graphic() || *c == ' ') && !matches!(c, '"' | '\\'))
            .collect();
        self.change(|words| words.realm = realm.into())
    }

    /// The header that warns of a key expiring within 7 days, on successful responses.
    #[must_use]
    pub fn expiry_header(self, name: HeaderName) -> Self {
        self.change(|words| words.expiry_header = name)
    }

    /// Where the application's users manage their keys ("Settings → API Keys"): the
    /// texts of 401s for deleted, expired and disabled keys send them there.
    #[must_use]
    pub fn key_settings(self, place: &str) -> Self {
        let place: Arc<str> = place.into();
        self.change(|words| words.key_settings = Some(place))
    }

    /// How long a key may go without an admitted request before its hints say `unused`
    /// (default 30 days).
    #[must_use]
    pub fn unused_after(self, after: Duration) -> Self {
        self.change(|words| words.unused_after = after)
    }

    /// How old a key may get before its hints say `rotation_due` (default 90 days).
    #[must_use]
    pub fn rotate_after(self, after: Duration) -> Self {
        self.change(|words| words.rotate_after = after)
    }

    /// The product's name, as the settings page's title says it ("API Keys · Weather").
    #[must_use]
    pub fn product(self, name: &str) -> Self {
        let name: Arc<str> = name.into();
        self.change(|words| words.product = Some(name))
    }

    /// Problem `type`s become `{base}{code}` (for example
    /// `https://docs.example.com/errors/` gives `…/errors/rate_limited`) instead of
    /// `about:blank`.
    #[must_use]
    pub fn problem_type_base(self, base: impl Into<String>) -> Self {
        let base: Arc<str> = base.into().into();
        self.change(|words| words.problem_type_base = Some(base))
    }

    /// Answers every refusal through `responder` (see [`Responder`]) instead of with the
    /// problem+json default, which it is handed to change or keep: the layer's, the
    /// extractor's, both routers', and the application's own through [`Profile::respond`].
    #[must_use]
    pub fn responder(self, responder: impl Responder) -> Self {
        let responder: Arc<dyn Responder> = Arc::new(responder);
        self.change(|words| words.responder = Some(responder))
    }

    /// Reads time from `clock`: creation and expiry, the limiter, usage times.
    #[must_use]
    pub fn clock(self, clock: impl Clock) -> Self {
        let clock: SharedClock = Arc::new(clock);
        self.change(|words| words.clock = clock)
    }

    /// The limits of keys whose plan has none of its own and that have none of their own
    /// (default 60 per 60 s per key).
    #[must_use]
    pub fn default_limits(self, limits: impl Into<RateLimits>) -> Self {
        let limits = limits.into();
        self.change(|words| words.default_limits = limits)
    }

    /// The limits of the keys of accounts on `plan` (one [`RateLimit`](crate::RateLimit), or a
    /// [`RateLimits`] list of windows and quotas, per key or per account), unless a key
    /// has limits of its own.
    ///
    /// ```
    /// use std::time::Duration;
    /// use nouvel_auth::{nouvel, Profile, RateLimit, RateLimits};
    ///
    /// // 60 a minute per key, and 100 000 a month for the whole account.
    /// let limits = RateLimits::new([
    ///     RateLimit::new(60, Duration::from_secs(60)),
    ///     RateLimit::per_month(100_000).per_account(),
    /// ])
    /// .unwrap();
    /// let profile = Profile::nouvel().plan_limits(nouvel::SCALE, limits);
    /// assert_eq!(profile.limits_of(&nouvel::SCALE, None), limits);
    /// ```
    #[must_use]
    pub fn plan_limits(self, plan: Plan, limits: impl Into<RateLimits>) -> Self {
        let limits = limits.into();
        self.change(|words| {
            words.plan_limits.retain(|(known, _)| *known != plan);
            words.plan_limits.push((plan, limits));
        })
    }

    /// How many live keys (neither deleted, expired nor rotated) an account may hold
    /// (default [`DEFAULT_MAX_KEYS`](Self::DEFAULT_MAX_KEYS), 100); `None` for no cap
    /// (keys made at start-up by the application itself, say), which also spares each
    /// creation the read of the account's keys.
    #[must_use]
    pub fn max_keys_per_account(self, max: Option<usize>) -> Self {
        self.change(|words| words.max_keys = max)
    }

    /// The layer checking requests with this profile, reading keys from `store`.
    pub fn layer<K: KeyStore>(&self, store: K) -> NouvelAuthLayer<K> {
        NouvelAuthLayer::with_profile(store, self.clone())
    }

    /// Writes the usage every layer made from this profile has counted and not yet
    /// written. Call it at shutdown, once the server has stopped taking requests, so the
    /// last interval's usage is kept; no layer needs to be kept around for it. Every
    /// layer is flushed, and the first failure is answered.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use nouvel_auth::{MemoryKeyStore, Profile};
    ///
    /// let profile = Profile::nouvel();
    /// let app = axum::Router::<()>::new().layer(profile.layer(MemoryKeyStore::new()));
    /// // … serve `app` until a signal, then:
    /// drop(app);
    /// profile.flush_usage().await.unwrap();
    /// # }
    /// ```
    pub async fn flush_usage(&self) -> Result<(), BackendError> {
        let layers: Vec<_> = lock(&self.0.layers).clone();
        let mut first_failure = Ok(());
        for layer in layers {
            let flushed = layer.flush().await;
            if first_failure.is_ok() {
                first_failure = flushed;
            }
        }
        first_failure
    }

    /// Remembers a layer's usage for [`flush_usage`](Self::flush_usage). Layers dropped
    /// since (only this list holds their state) are flushed one last time and forgotten, so
    /// the list holds the live layers and their usage is not lost.
    pub(crate) fn keep_usage_of(&self, layer: Arc<dyn Unflushed>) {
        let mut layers = lock(&self.0.layers);
        let (gone, live): (Vec<_>, Vec<_>) = layers.drain(..).partition(|l| l.is_dropped());
        *layers = live;
        layers.push(layer);
        for layer in gone {
            tokio::spawn(async move { layer.flush().await });
        }
    }

    /// The key manager making and checking keys with this profile, over `storage`; the
    /// admin and settings routers made from it speak this profile too.
    pub fn key_manager<S: KeyStorage>(&self, storage: S) -> KeyManager<S> {
        KeyManager::with_profile(storage, self.clone())
    }

    /// The permission names.
    #[must_use]
    pub fn permissions(&self) -> &'static PermissionSet {
        self.0.permissions
    }

    /// The plans, and which may use API keys.
    #[must_use]
    pub fn plans(&self) -> &Plans {
        &self.0.plans
    }

    /// What every key starts with.
    #[must_use]
    pub fn prefix(&self) -> KeyPrefix {
        self.0.prefix
    }

    /// The realm of challenges.
    #[must_use]
    pub fn realm_name(&self) -> &str {
        &self.0.realm
    }

    /// The expiry-warning header's name.
    #[must_use]
    pub fn expiry_header_name(&self) -> &HeaderName {
        &self.0.expiry_header
    }

    /// The name the profile's keys in shared backends start with (Redis keys, PostgreSQL
    /// channels): its key prefix without the trailing `_` (`nvl`, `wx`).
    #[cfg(any(feature = "postgres", feature = "redis"))]
    pub(crate) fn namespace(&self) -> &str {
        match self.0.prefix.as_str().trim_end_matches('_') {
            "" => "keys",
            name => name,
        }
    }

    /// Where users manage their keys, if the profile says.
    pub(crate) fn key_settings_place(&self) -> Option<&str> {
        self.0.key_settings.as_deref()
    }

    pub(crate) fn unused_after_threshold(&self) -> Duration {
        self.0.unused_after
    }

    pub(crate) fn rotate_after_threshold(&self) -> Duration {
        self.0.rotate_after
    }

    /// The product's name, if the profile says.
    #[cfg(feature = "settings")]
    pub(crate) fn product_name(&self) -> Option<&str> {
        self.0.product.as_deref()
    }

    /// The problem `type` base, if any.
    pub(crate) fn type_base(&self) -> Option<&str> {
        self.0.problem_type_base.as_deref()
    }

    pub(crate) fn trusted_proxy_networks(&self) -> Option<&Networks> {
        self.0.trusted_proxies.as_ref()
    }

    pub(crate) fn clock_handle(&self) -> &SharedClock {
        &self.0.clock
    }

    pub(crate) fn responder_handle(&self) -> Option<&dyn Responder> {
        self.0.responder.as_deref()
    }

    /// The limits a key on `plan` is held to: its `own` if it has them, else its plan's,
    /// else the profile's default.
    #[must_use]
    pub fn limits_of(&self, plan: &Plan, own: Option<RateLimits>) -> RateLimits {
        own.or_else(|| {
            self.0
                .plan_limits
                .iter()
                .find(|(known, _)| known == plan)
                .map(|(_, limits)| *limits)
        })
        .unwrap_or(self.0.default_limits)
    }

    /// How many live keys an account may hold, if the profile caps them.
    #[must_use]
    pub fn max_keys(&self) -> Option<usize> {
        self.0.max_keys
    }
}

impl Default for Profile {
    fn default() -> Self {
        Self::nouvel()
    }
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words = &self.0;
        f.debug_struct("Profile")
            .field("permissions", &words.permissions)
            .field("plans", &words.plans)
            .field("prefix", &words.prefix)
            .field("realm", &words.realm)
            .field("expiry_header", &words.expiry_header)
            .field("product", &words.product)
            .field("default_limits", &words.default_limits)
            .field("plan_limits", &words.plan_limits)
            .field("max_keys", &words.max_keys)
            .field("unused_after", &words.unused_after)
            .field("rotate_after", &words.rotate_after)
            .field("responder", &words.responder.is_some())
            .finish_non_exhaustive()
    }
}
