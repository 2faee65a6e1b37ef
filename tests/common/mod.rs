//! The app the integration tests drive: the seed's seven routes behind the layer, a
//! memory store and a manual clock.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different part

pub mod exactness;
pub mod openapi;
pub mod servers;

use nouvel_auth::nouvel;
use nouvel_auth::Profile;
use std::time::Duration;

use axum::{
    body::Body,
    http::{Method, Request, Response, StatusCode},
    routing::{get, post},
    Json, Router,
};
use http_body_util::BodyExt;
use nouvel_auth::{
    clock::ManualClock, key::AccountId, manage::NewKey, AuthenticatedKey, Expiration, KeyManager,
    KeySpec, MemoryKeyStore, NouvelAuthLayer, Permission,
};
use serde_json::{json, Value};
use time::{macros::datetime, OffsetDateTime};
use tower::ServiceExt;

pub const T0: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);

/// The seven Nouvel routes as `(method, concrete path, permission)`.
pub const ROUTES: [(&str, &str, Permission); 7] = [
    ("POST", "/api/v1/generate", nouvel::GENERATE),
    ("GET", "/api/v1/jobs/job_42", nouvel::PROJECTS_READ),
    ("GET", "/api/v1/projects", nouvel::PROJECTS_READ),
    ("POST", "/api/v1/publish", nouvel::PUBLISH),
    ("GET", "/api/v1/publish/pub_7", nouvel::PUBLISH),
    ("GET", "/api/v1/analytics", nouvel::ANALYTICS_READ),
    ("POST", "/api/v1/copilot/chat", nouvel::COPILOT_CHAT),
];

async fn echo(key: AuthenticatedKey, request: Request<Body>) -> Json<Value> {
    Json(json!({
        "key_id": key.id,
        "environment": key.environment,
        "route": request.uri().path(),
        "authorization_seen": request.headers().contains_key("authorization"),
    }))
}

/// The seed's routes with a handler that echoes the key id and route, plus `/healthz`
/// and an unlisted `/api/v1/other`.
pub fn routes() -> Router {
    Router::new()
        .route("/api/v1/generate", post(echo))
        .route("/api/v1/jobs/{jobId}", get(echo))
        .route("/api/v1/projects", get(echo))
        .route("/api/v1/publish", post(echo))
        .route("/api/v1/publish/{id}", get(echo))
        .route("/api/v1/analytics", get(echo))
        .route("/api/v1/copilot/chat", post(echo))
        .route("/api/v1/other", get(echo))
        .route("/healthz", get(|| async { "ok" }))
}

/// A store on the system clock with a `scale` account and one key holding `permission`.
pub async fn store_with_key(permission: Permission) -> (MemoryKeyStore, NewKey) {
    let store = MemoryKeyStore::new();
    let keys = KeyManager::new(store.clone());
    let account = keys.create_account("Acme", nouvel::SCALE).await.unwrap();
    let key = keys
        .create_key(&account.id, KeySpec::new("k", [permission]))
        .await
        .unwrap();
    (store, key)
}

pub struct Harness {
    pub clock: ManualClock,
    pub store: MemoryKeyStore,
    pub keys: KeyManager<MemoryKeyStore>,
    pub account: AccountId,
    pub layer: NouvelAuthLayer<MemoryKeyStore>,
    pub app: Router,
}

impl Harness {
    pub async fn new() -> Self {
        Self::with_layer(|layer| layer).await
    }

    pub async fn with_layer(
        configure: impl FnOnce(NouvelAuthLayer<MemoryKeyStore>) -> NouvelAuthLayer<MemoryKeyStore>,
    ) -> Self {
        Self::with(|profile| profile, configure).await
    }

    /// A harness speaking Nouvel's profile as `profile` changes it.
    pub async fn with_profile(profile: impl FnOnce(Profile) -> Profile) -> Self {
        Self::with(profile, |layer| layer).await
    }

    pub async fn with(
        profile: impl FnOnce(Profile) -> Profile,
        configure: impl FnOnce(NouvelAuthLayer<MemoryKeyStore>) -> NouvelAuthLayer<MemoryKeyStore>,
    ) -> Self {
        let clock = ManualClock::new(T0);
        let store = MemoryKeyStore::new();
        let profile = profile(Profile::nouvel().clock(clock.clone()));
        let keys = profile.key_manager(store.clone());
        let account = keys.create_account("Acme", nouvel::SCALE).await.unwrap().id;
        let layer = configure(profile.layer(store.clone()));
        let app = routes().layer(layer.clone());
        Self {
            clock,
            store,
            keys,
            account,
            layer,
            app,
        }
    }

    pub async fn key(&self, permissions: impl IntoIterator<Item = Permission>) -> NewKey {
        self.key_with(KeySpec::new("test key", permissions)).await
    }

    pub async fn key_with(&self, spec: KeySpec) -> NewKey {
        self.keys.create_key(&self.account, spec).await.unwrap()
    }

    pub async fn all_permissions_key(&self) -> NewKey {
        self.key_with(KeySpec::new("all", nouvel::PERMISSIONS.all()).expiration(Expiration::Never))
            .await
    }

    pub async fn send(&self, method: &str, path: &str, auth: Option<&str>) -> Reply {
        send(&self.app, method, path, auth).await
    }

    pub async fn send_key(&self, method: &str, path: &str, key: &NewKey) -> Reply {
        self.send(method, path, Some(&bearer(&key.key))).await
    }

    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}

/// The `Authorization` value that presents `key`.
pub fn bearer(key: &nouvel_auth::key::ApiKey) -> String {
    format!("Bearer {}", key.expose_secret())
}

pub async fn send(app: &Router, method: &str, path: &str, auth: Option<&str>) -> Reply {
    let mut request = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(path);
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    Reply::read(
        app.clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap(),
    )
    .await
}

/// A response with its body read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub async fn read(response: Response<Body>) -> Self {
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        Self {
            status: parts.status,
            headers: parts.headers,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    /// Asserts a problem+json rejection with `status` and `code`.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        assert_eq!(self.code(), code, "{}", self.text);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        assert_eq!(self.body["status"], status);
        assert_eq!(self.body["type"], "about:blank");
        assert_eq!(self.body["title"], self.status.canonical_reason().unwrap());
        assert!(self.body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
}

/// A limiter driven outside the layer: one window per key id, and one for the one account
/// all its keys belong to (`acc_keyed`), kept as the layer keeps them beside each record.
pub struct Keyed<L: nouvel_auth::limit::RateLimiter> {
    limiter: L,
    windows: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<L::Window>>>,
}

impl<L: nouvel_auth::limit::RateLimiter> Keyed<L> {
    pub const ACCOUNT: &'static str = "acc_keyed";

    pub fn new(limiter: L) -> Self {
        Self {
            limiter,
            windows: Default::default(),
        }
    }

    fn window(&self, id: &str) -> std::sync::Arc<L::Window> {
        self.windows
            .lock()
            .unwrap()
            .entry(id.to_owned())
            .or_default()
            .clone()
    }

    /// What `key`'s requests are counted in: its window and the account's.
    fn windows(&self, key: &nouvel_auth::key::KeyId) -> Windows<L::Window> {
        Windows {
            account: nouvel_auth::key::AccountId::from(Self::ACCOUNT),
            key: self.window(key.as_str()),
            of_account: self.window(Self::ACCOUNT),
        }
    }

    pub async fn check(
        &self,
        key: &nouvel_auth::key::KeyId,
        limits: impl Into<nouvel_auth::RateLimits>,
        now: OffsetDateTime,
    ) -> Result<nouvel_auth::limit::Decision, nouvel_auth::BackendError> {
        let windows = self.windows(key);
        let subject = windows.subject(key);
        self.limiter.check(subject, limits.into(), now).await
    }

    pub fn check_now(
        &self,
        key: &nouvel_auth::key::KeyId,
        limits: impl Into<nouvel_auth::RateLimits>,
        now: OffsetDateTime,
    ) -> std::task::Poll<nouvel_auth::limit::Decision> {
        let windows = self.windows(key);
        self.limiter
            .check_now(windows.subject(key), limits.into(), now)
    }
}

/// A key's and its account's windows, as the layer holds them while a request is decided.
struct Windows<W> {
    account: nouvel_auth::key::AccountId,
    key: std::sync::Arc<W>,
    of_account: std::sync::Arc<W>,
}

impl<W> Windows<W> {
    fn subject<'a>(
        &'a self,
        key: &'a nouvel_auth::key::KeyId,
    ) -> nouvel_auth::limit::Subject<'a, W> {
        nouvel_auth::limit::Subject {
            key,
            account: &self.account,
            key_window: &self.key,
            account_window: Some(&self.of_account),
        }
    }
}

/// A `tracing` writer that keeps everything written to it, for tests that read the logs.
#[derive(Clone, Default)]
pub struct Captured(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    /// A subscriber up to `level`, without colours, writing here.
    pub fn subscriber(&self, level: tracing::Level) -> impl tracing::Subscriber + Send + Sync {
        let writer = self.clone();
        tracing_subscriber::fmt()
            .with_max_level(level)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish()
    }

    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
