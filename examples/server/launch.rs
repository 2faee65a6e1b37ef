//! What every example server does around its own routes: read its settings from the
//! environment, choose its store and limiter, make its demo account and key, mount the
//! admin and settings routers and the demo sign-in, print how to try it, serve until a
//! signal, and keep the last usage.
//!
//! Settings, for an example whose variables start with `PREFIX`:
//! * `PREFIX_ADDR`: the address (each example has its default);
//! * `PREFIX_ADMIN_TOKEN`: the admin token, at least 16 characters and no whitespace
//!   (generated and printed when unset);
//! * `DATABASE_URL`: `postgres://…` (schema `PREFIX_SCHEMA`, default the example's name),
//!   or `sqlite://PATH`; without it the example's own SQLite file in the working
//!   directory;
//! * `REDIS_URL`: the limits counted in Redis, once for all instances (several nodes
//!   separated by commas: a Redis Cluster);
//! * `PREFIX_SHUTDOWN_SECONDS`: how long requests under way get at shutdown (default 10);
//! * `PREFIX_WEBHOOK_URL`: where the keys' events are posted as Standard Webhooks, signed
//!   with `PREFIX_WEBHOOK_SECRET` (`whsec_…`; generated and printed when unset);
//!   `PREFIX_SWEEP_SECONDS`: how often expiring keys and quotas are looked for (default 60);
//! * `PREFIX_TRUSTED_PROXIES`: the proxies in front of the server (comma-separated
//!   addresses and CIDRs), whose `X-Forwarded-For` names the client for the keys' network
//!   allow-lists;
//! * `PREFIX_SECRET_SCANNING_KEYS`: a file holding GitHub's secret scanning public keys
//!   (`https://api.github.com/meta/public_keys/secret_scanning`); with it, leaked-key
//!   reports are taken at `/security/secret-scanning` (without it, that path is a 404);
//! * `PREFIX_UNUSED_AFTER`, `PREFIX_ROTATE_AFTER`: the thresholds of the keys' `unused` and
//!   `rotation_due` hints (seconds, or `30d`, `12h`, `90s`; default 30 and 90 days).

use std::{net::SocketAddr, time::Duration};

use axum::{http::StatusCode, response::Response, routing::get, Router};
use nouvel_auth::{
    admin::{self, AdminToken},
    events::{EventDispatcher, WebhookSecret, WebhookSender},
    key::ApiKey,
    limit::MemoryRateLimiter,
    limit::{AnyRateLimiter, RedisRateLimiter},
    manage::{Account, AUDIT_RETENTION},
    network::Networks,
    secret_scanning::{ScannerKeys, SecretScanningRouter},
    settings::SettingsRouter,
    store::{AnyKeyStore, CachedKeyStore, PostgresKeyStore, SqliteKeyStore},
    Expiration, KeyManager, KeySpec, KeyStorage, Plan, Problem, Profile, RouteTable,
};
use tokio::net::TcpListener;

use crate::{
    demo::{Demo, SETTINGS_PAGE},
    serve,
};

pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;

/// The store of every example: the one `DATABASE_URL` names, behind a cache.
pub(crate) type Store = CachedKeyStore<AnyKeyStore>;

/// The settings router of an example, over its store, with the demo's sign-in.
pub(crate) type Settings = SettingsRouter<Store, Demo<Store>>;

/// What tells one example server from another.
pub(crate) struct Example {
    /// As the first printed line says it: "Nouvel API example".
    pub(crate) title: &'static str,
    /// What its environment variables start with: `NOUVEL`.
    pub(crate) env: &'static str,
    pub(crate) default_addr: &'static str,
    /// Its SQLite file, and its PostgreSQL schema unless `PREFIX_SCHEMA` says otherwise.
    pub(crate) default_file: &'static str,
    pub(crate) default_schema: &'static str,
    pub(crate) profile: Profile,
    /// The demo account's plan, and what the printed key line says of it.
    pub(crate) demo_plan: Plan,
    pub(crate) demo_key_says: &'static str,
    /// Where the admin router is mounted: `/admin`.
    pub(crate) admin_at: &'static str,
    /// The path the printed `curl` line tries.
    pub(crate) try_path: &'static str,
}

/// The example's own part: its API (put behind the layer), and any routes of its own.
pub(crate) trait Api {
    /// The API's routes, relative to `/api`.
    fn routes(&self) -> Router;

    /// What each route of the API needs, as the client sees the paths.
    fn table(&self) -> RouteTable;

    /// The settings router in the application's clothes (the page's sign-out button is
    /// the demo's).
    fn settings(&self, settings: Settings) -> Settings {
        settings
    }

    /// More routes beside the API's (guarded by `admin` where they take the token).
    fn more(&self, app: Router, _admin: &AdminToken) -> Router {
        app
    }
}

/// The name of the key each start makes for the demo account.
pub(crate) const DEMO_KEY: &str = "Demo key";

impl Example {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(format!("{}_{name}", self.env))
            .ok()
            .filter(|value| !value.is_empty())
    }

    /// `PREFIX_ADMIN_TOKEN`, refused if shorter than 16 characters or holding whitespace
    /// (an empty one included: it is not "unset").
    fn admin_token(&self) -> Result<Option<String>, Error> {
        let token = std::env::var(format!("{}_ADMIN_TOKEN", self.env)).ok();
        if let Some(token) = &token {
            if token.chars().count() < 16 || token.chars().any(char::is_whitespace) {
                return Err(format!(
                    "{}_ADMIN_TOKEN must be at least 16 characters and hold no whitespace: \
                     a shorter one is guessed, and a spaced one is never sent whole",
                    self.env
                )
                .into());
            }
        }
        Ok(token)
    }

    /// `PREFIX_NAME` as a duration: whole seconds, or a number of days, hours or seconds
    /// (`30d`, `12h`, `90s`).
    fn duration(&self, name: &str) -> Result<Option<Duration>, Error> {
        let Some(text) = self.var(name) else {
            return Ok(None);
        };
        let (number, unit) = match text.char_indices().last() {
            Some((at, 'd')) => (&text[..at], 86_400),
            Some((at, 'h')) => (&text[..at], 3_600),
            Some((at, 's')) => (&text[..at], 1),
            _ => (text.as_str(), 1),
        };
        let seconds = number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(unit))
            .ok_or_else(|| {
                format!(
                    "{}_{name} must be whole seconds, or a number of days, hours or seconds \
                     (30d, 12h, 90s)",
                    self.env
                )
            })?;
        Ok(Some(Duration::from_secs(seconds)))
    }

    /// Runs the example with `api`, on the backends its environment names, logging as
    /// `RUST_LOG` says (default `info`).
    pub(crate) async fn run(mut self, api: impl Api) -> Result<(), Error> {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info".into()),
            )
            .init();
        let admin_token = self.admin_token()?;
        if let Some(after) = self.duration("UNUSED_AFTER")? {
            self.profile = self.profile.unused_after(after);
        }
        if let Some(after) = self.duration("ROTATE_AFTER")? {
            self.profile = self.profile.rotate_after(after);
        }
        if let Some(proxies) = self.var("TRUSTED_PROXIES") {
            let proxies = Networks::parse(proxies.split(','))
                .map_err(|error| format!("{}_TRUSTED_PROXIES: {error}", self.env))?;
            self.profile = self.profile.trusted_proxies(proxies);
        }
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let limiter: AnyRateLimiter = match env("REDIS_URL") {
            Some(url) => RedisRateLimiter::connect(&url, &self.profile).await?.into(),
            None => MemoryRateLimiter::new().into(),
        };
        let store: AnyKeyStore = match env("DATABASE_URL") {
            Some(url) if url.starts_with("postgres") => {
                let schema = self
                    .var("SCHEMA")
                    .unwrap_or_else(|| self.default_schema.to_owned());
                println!("Keys: PostgreSQL (schema {schema}), cached");
                PostgresKeyStore::connect(&url, &schema, &self.profile)
                    .await?
                    .into()
            }
            database => {
                let path = match &database {
                    None => self.default_file,
                    Some(url) => url
                        .strip_prefix("sqlite://")
                        .ok_or("DATABASE_URL must be postgres://… or sqlite://PATH")?,
                };
                println!("Keys: SQLite file {path}, cached");
                SqliteKeyStore::open(path, &self.profile).await?.into()
            }
        };
        store.migrate().await?;
        let demo = store.accounts_named("Demo").await?.into_iter().next();
        let cached = CachedKeyStore::new(store.clone());
        // PostgreSQL's other instances announce their changes; a SQLite file has one writer,
        // this process, whose cache sees every change.
        let cache = cached.clone();
        store
            .listen(move |change| cache.invalidate(&change))
            .await?;
        // It hears every key made: made-up keys need not ask the database.
        cached.refuse_made_up_keys().await?;
        match limiter {
            AnyRateLimiter::Redis(_) => println!("Rate limit: Redis, shared by every instance"),
            _ => println!("Rate limit: in memory, this instance alone"),
        }
        self.serve(cached, limiter, demo, admin_token, api).await
    }

    async fn serve(
        self,
        store: Store,
        limiter: AnyRateLimiter,
        demo: Option<Account>,
        admin_token: Option<String>,
        api: impl Api,
    ) -> Result<(), Error> {
        let addr: SocketAddr = self
            .var("ADDR")
            .unwrap_or_else(|| self.default_addr.to_owned())
            .parse()?;
        let shutdown_deadline = match self.var("SHUTDOWN_SECONDS") {
            Some(seconds) => Duration::from_secs(seconds.parse().map_err(|_| {
                format!(
                    "{}_SHUTDOWN_SECONDS must be a whole number of seconds",
                    self.env
                )
            })?),
            None => Duration::from_secs(10),
        };
        let keys = self.profile.key_manager(store.clone());
        // Maintenance: audit entries older than the retention go, at start and then daily.
        let maintenance = keys.clone();
        tokio::spawn(async move {
            loop {
                if let Err(error) = maintenance.prune_audit(AUDIT_RETENTION).await {
                    tracing::warn!(%error, "could not prune the audit log");
                }
                tokio::time::sleep(Duration::from_secs(86_400)).await;
            }
        });
        self.dispatch_events(&keys)?;
        let account = self.demo_account(&keys, demo).await?;
        let demo_key = keys
            .create_key(
                &account.id,
                KeySpec::new(DEMO_KEY, self.profile.permissions().all())
                    .expiration(Expiration::Days90),
            )
            .await?;
        let generated_token = admin_token.is_none();
        // A fresh key's random part makes a fine throwaway admin token; it opens nothing else.
        let admin_token = admin_token
            .unwrap_or_else(|| format!("admin_{}", &ApiKey::generate().expose_secret()[4..]));
        // One guard for every route that takes the token: one count of failures between them.
        let admin = AdminToken::new(&admin_token);

        let auth = self
            .profile
            .layer(store)
            .limiter(limiter)
            .routes(api.table());
        let demo = Demo::new(keys.clone());
        let code = demo.code_for(&account.id);
        let settings = api
            .settings(SettingsRouter::new(keys.clone(), demo.clone()))
            .sign_out("/demo/sign-out")
            .build();
        // The example's own 404, answered as every refusal of it is: in its profile's words.
        let not_found = {
            let profile = self.profile.clone();
            move || {
                let problem = Problem::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "No such route, account, or key in this account.",
                );
                let answer: Response = profile.respond(&problem).map(axum::body::Body::from);
                async move { answer }
            }
        };
        // Every path under `/api/` is behind the layer, those no route has included: without
        // a key they answer 401, with one 403 `route_not_allowed`, never a 404 that would
        // tell an unauthenticated client which paths exist.
        let api_routes = api.routes().fallback(not_found.clone()).layer(auth);
        let app = Router::new()
            // A nested router never sees its mount point with a trailing slash: that one too.
            .route_service("/api/", api_routes.clone().into_service())
            .nest("/api", api_routes)
            .nest(self.admin_at, admin::router(keys.clone(), admin.clone()))
            .nest(SETTINGS_PAGE, settings)
            .merge(demo.routes(admin.clone()))
            .merge(self.secret_scanning(&keys)?)
            .route("/healthz", get(|| async { "ok" }));
        // Paths no router has (the mount points with a slash among them) answer as the
        // crate's do.
        let app = api.more(app, &admin).fallback(not_found);

        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let secret = demo_key.key.expose_secret();
        println!("{} listening on http://{addr}", self.title);
        println!("{}", self.demo_key_says);
        println!("  {secret}");
        println!("Try it:");
        println!(
            "  curl -i -H 'Authorization: Bearer {secret}' http://{addr}{}",
            self.try_path
        );
        if generated_token {
            println!(
                "Admin token (set {}_ADMIN_TOKEN to choose one): {admin_token}",
                self.env
            );
        }
        println!(
            "Admin API at http://{addr}{}; the demo account is {}:",
            self.admin_at, account.id
        );
        println!(
            "  curl -s -H 'Authorization: Bearer <admin token>' http://{addr}{}/accounts/{}/keys",
            self.admin_at, account.id
        );
        println!("Settings → API Keys of the demo account (this link signs in once):");
        println!("  http://{addr}/demo/sign-in?code={code}");

        serve::until_signalled(listener, app, shutdown_deadline).await;
        // The server has stopped taking requests and closed every connection: keep the last
        // interval's usage.
        self.profile.flush_usage().await?;
        println!("Stopped.");
        Ok(())
    }

    /// Delivers the keys' events in the background: to `PREFIX_WEBHOOK_URL` if set, else
    /// nowhere (they are settled, and pruned later, so the outbox does not grow).
    fn dispatch_events(&self, keys: &KeyManager<Store>) -> Result<(), Error> {
        let mut dispatcher = EventDispatcher::new(keys.clone());
        if let Some(every) = self.duration("SWEEP_SECONDS")? {
            dispatcher = dispatcher.sweep_every(every);
        }
        if let Some(url) = self.var("WEBHOOK_URL") {
            let secret = if let Some(secret) = self.var("WEBHOOK_SECRET") {
                secret
                    .parse::<WebhookSecret>()
                    .map_err(|error| format!("{}_WEBHOOK_SECRET: {error}", self.env))?
            } else {
                let secret = WebhookSecret::generate();
                println!(
                    "Webhook secret (set {}_WEBHOOK_SECRET to choose one): {}",
                    self.env,
                    secret.expose_secret()
                );
                secret
            };
            let sender = WebhookSender::new(&url, secret)
                .map_err(|error| format!("{}_WEBHOOK_URL: {error}", self.env))?;
            println!("Events: webhooks to {url}");
            dispatcher = dispatcher.sink(sender);
        }
        dispatcher.spawn();
        Ok(())
    }

    /// The leaked-key reports' route, if `PREFIX_SECRET_SCANNING_KEYS` names GitHub's keys.
    fn secret_scanning(&self, keys: &KeyManager<Store>) -> Result<Router, Error> {
        let Some(path) = self.var("SECRET_SCANNING_KEYS") else {
            return Ok(Router::new());
        };
        let name = format!("{}_SECRET_SCANNING_KEYS", self.env);
        let document =
            std::fs::read_to_string(&path).map_err(|error| format!("{name}: {path}: {error}"))?;
        let github =
            ScannerKeys::from_github(&document).map_err(|error| format!("{name}: {error}"))?;
        println!("Leaked-key reports from GitHub at /security/secret-scanning");
        Ok(Router::new().nest(
            "/security/secret-scanning",
            SecretScanningRouter::new(keys.clone(), github).build(),
        ))
    }

    /// The demo account of an earlier start (its earlier demo keys deleted), or a new one.
    async fn demo_account(
        &self,
        keys: &KeyManager<Store>,
        earlier: Option<Account>,
    ) -> Result<Account, Error> {
        let Some(account) = earlier else {
            return Ok(keys.create_account("Demo", self.demo_plan.clone()).await?);
        };
        for key in keys.keys(&account.id).await? {
            if key.name == DEMO_KEY {
                keys.delete_key(&account.id, &key.id).await?;
            }
        }
        Ok(account)
    }
}
