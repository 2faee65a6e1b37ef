//! The response contract of the README: every rejection's status, code and
//! headers, and the order of the checks.

mod common;

use nouvel_auth::nouvel;
use nouvel_auth::Profile;
use std::time::Duration;

use common::{Harness, Reply};
use nouvel_auth::{
    key::KeyDigest, limit::Decision, limit::MemoryRateLimiter, limit::RateLimiter,
    store::UsageReport, BackendError, Expiration, KeyManager, KeyRecord, KeySpec, KeyStore,
    MemoryKeyStore, NouvelAuthLayer, Permissions, RateLimit, RouteTable,
};

const INVALID_TOKEN: &str =
    r#"Bearer realm="nouvel", error="invalid_token", error_description="The API key is invalid""#;

#[tokio::test]
async fn a_valid_key_reaches_the_service_with_its_record() {
    let h = Harness::new().await;
    let key = h.key([nouvel::GENERATE]).await;
    let reply = h.send_key("POST", "/api/v1/generate", &key).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["key_id"], key.info.id.as_str());
    assert_eq!(reply.body["route"], "/api/v1/generate");
    // The key never reaches the handler.
    assert_eq!(reply.body["authorization_seen"], false);
    assert_eq!(reply.header("www-authenticate"), None);
}

#[tokio::test]
async fn the_authorization_header_can_be_kept() {
    let h = Harness::with_layer(|l| l.keep_authorization_header()).await;
    let key = h.key([nouvel::GENERATE]).await;
    let reply = h.send_key("POST", "/api/v1/generate", &key).await;
    assert_eq!(reply.body["authorization_seen"], true);
}

#[tokio::test]
async fn missing_header_is_missing_api_key() {
    let h = Harness::new().await;
    let reply = h.send("POST", "/api/v1/generate", None).await;
    reply.assert_problem(401, "missing_api_key");
    assert_eq!(
        reply.header("www-authenticate"),
        Some(r#"Bearer realm="nouvel""#)
    );
    assert_eq!(reply.header("ratelimit"), None);
}

#[tokio::test]
async fn a_header_that_is_not_one_bearer_token_is_invalid_authorization() {
    let h = Harness::new().await;
    let key = h.key([nouvel::GENERATE]).await;
    let secret = key.key.expose_secret();
    for auth in [
        format!("Basic {secret}"),
        format!("Token {secret}"),
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        format!("Bearer  {secret}"),
        format!("Bearer {secret} {secret}"),
        secret.to_owned(),
    ] {
        let reply = h.send("POST", "/api/v1/generate", Some(&auth)).await;
        reply.assert_problem(401, "invalid_authorization");
        assert_eq!(
            reply.header("www-authenticate"),
            Some(r#"Bearer realm="nouvel""#)
        );
        assert!(!reply.text.contains(secret));
    }
}

#[tokio::test]
async fn several_authorization_headers_are_invalid_authorization() {
    let h = Harness::new().await;
    let key = h.key([nouvel::GENERATE]).await;
    let bearer = common::bearer(&key.key);
    let request = axum::http::Request::post("/api/v1/generate")
        .header("authorization", &bearer)
        .header("authorization", &bearer)
        .body(axum::body::Body::empty())
        .unwrap();
    let reply = Reply::read(
        tower::ServiceExt::oneshot(h.app.clone(), request)
            .await
            .unwrap(),
    )
    .await;
    reply.assert_problem(401, "invalid_authorization");
}

#[tokio::test]
async fn the_scheme_is_case_insensitive() {
    let h = Harness::new().await;
    let key = h.key([nouvel::GENERATE]).await;
    for scheme in ["bearer", "BEARER", "bEaReR"] {
        let auth = format!("{scheme} {}", key.key.expose_secret());
        assert_eq!(
            h.send("POST", "/api/v1/generate", Some(&auth)).await.status,
            200
        );
    }
}

#[tokio::test]
async fn malformed_keys_are_invalid_api_key() {
    let h = Harness::new().await;
    let key = h.key([nouvel::GENERATE]).await;
    let good = key.key.expose_secret();
    let mut typo = good.as_bytes().to_vec();
    typo[10] = if typo[10] == b'x' { b'y' } else { b'x' };
    let typo = String::from_utf8(typo).unwrap();
    for (token, says) in [
        ("nvl_short".to_owned(), "characters long"),
        (good.replacen("nvl_", "sk_x", 1), "starts with `nvl_`"),
        (
            format!("{}-{}", &good[..10], &good[11..]),
            "0-9, A-Z and a-z",
        ),
        (typo, "checksum"),
    ] {
        let reply = h
            .send("POST", "/api/v1/generate", Some(&format!("Bearer {token}")))
            .await;
        reply.assert_problem(401, "invalid_api_key");
        assert_eq!(reply.header("www-authenticate"), Some(INVALID_TOKEN));
        assert!(
            reply.body["detail"].as_str().unwrap().contains(says),
            "{}",
            reply.text
        );
        assert!(!reply.text.contains(&token));
    }
}

#[tokio::test]
async fn unknown_deleted_and_revoked_keys_get_one_answer() {
    let h = Harness::new().await;
    let unknown = nouvel_auth::key::ApiKey::generate();
    let deleted = h.key([nouvel::GENERATE]).await;
    h.keys
        .delete_key(&h.account, &deleted.info.id)
        .await
        .unwrap();
    let rotated_now = h.key([nouvel::GENERATE]).await;

    let unknown_reply = h
        .send("POST", "/api/v1/generate", Some(&common::bearer(&unknown)))
        .await;
    let deleted_reply = h.send_key("POST", "/api/v1/generate", &deleted).await;
    unknown_reply.assert_problem(401, "invalid_api_key");
    assert_eq!(
        unknown_reply.header("www-authenticate"),
        Some(INVALID_TOKEN)
    );
    assert_eq!(unknown_reply.text, deleted_reply.text);
    assert_eq!(unknown_reply.headers, deleted_reply.headers);
    assert_eq!(
        h.send_key("POST", "/api/v1/generate", &rotated_now)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn expired_keys_are_expired_api_key() {
    let h = Harness::new().await;
    let key = h
        .key_with(KeySpec::new("week", [nouvel::GENERATE]).expiration(Expiration::Days7))
        .await;
    h.advance(Duration::from_secs(7 * 86_400 - 1));
    assert_eq!(
        h.send_key("POST", "/api/v1/generate", &key).await.status,
        200
    );
    h.advance(Duration::from_secs(1));
    let reply = h.send_key("POST", "/api/v1/generate", &key).await;
    reply.assert_problem(401, "expired_api_key");
    assert_eq!(
        reply.header("www-authenticate"),
        Some(
            r#"Bearer realm="nouvel", error="invalid_token", error_description="The API key has expired""#
        )
    );
}

#[tokio::test]
async fn keys_expiring_within_7_days_carry_a_warning_header() {
    let h = Harness::new().await;
    let key = h
        .key_with(KeySpec::new("month", [nouvel::GENERATE]).expiration(Expiration::Days30))
        .await;
    let never = h.all_permissions_key().await;
    assert_eq!(
        h.send_key("POST", "/api/v1/generate", &key)
            .await
            .header("nouvel-key-expires-at"),
        None
    );
    h.advance(Duration::from_secs(23 * 86_400));
    let reply = h.send_key("POST", "/api/v1/generate", &key).await;
    assert_eq!(
        reply.header("nouvel-key-expires-at"),
        Some("2026-07-01T12:00:00Z")
    );
    let reply = h.send_key("POST", "/api/v1/generate", &never).await;
    assert_eq!(reply.header("nouvel-key-expires-at"), None);
}

#[tokio::test]
async fn starter_and_growth_accounts_get_plan_required() {
    let h = Harness::new().await;
    let key = h.key([nouvel::GENERATE]).await;
    for plan in [nouvel::STARTER, nouvel::GROWTH] {
        h.keys.set_plan(&h.account, plan.clone()).await.unwrap();
        let reply = h.send_key("POST", "/api/v1/generate", &key).await;
        reply.assert_problem(402, "plan_required");
        assert_eq!(reply.body["plan"], plan.as_str());
        assert_eq!(
            reply.body["required_plans"],
            serde_json::json!(["scale", "business"])
        );
        assert_eq!(reply.header("www-authenticate"), None);
        assert_eq!(reply.header("ratelimit"), None);
    }
    h.keys.set_plan(&h.account, nouvel::BUSINESS).await.unwrap();
    assert_eq!(
        h.send_key("POST", "/api/v1/generate", &key).await.status,
        200
    );
}

#[tokio::test]
async fn a_missing_permission_is_named() {
    let h = Harness::new().await;
    let key = h.key([nouvel::PROJECTS_READ]).await;
    let reply = h.send_key("POST", "/api/v1/publish", &key).await;
    reply.assert_problem(403, "missing_permission");
    assert_eq!(reply.body["required_permission"], "publish");
    assert_eq!(
        reply.header("www-authenticate"),
        Some(r#"Bearer realm="nouvel", error="insufficient_scope", scope="publish""#)
    );
    assert_eq!(reply.header("ratelimit"), None);
}

#[tokio::test]
async fn unlisted_routes_are_denied_by_default() {
    let h = Harness::new().await;
    let key = h.all_permissions_key().await;
    for (method, path) in [
        ("GET", "/api/v1/other"),
        ("DELETE", "/api/v1/projects"),
        ("GET", "/api/v1/generate"),
    ] {
        let reply = h.send_key(method, path, &key).await;
        reply.assert_problem(403, "route_not_allowed");
        assert_eq!(
            reply.header("www-authenticate"),
            Some(r#"Bearer realm="nouvel", error="insufficient_scope""#)
        );
    }
    // Without a key, an unlisted route still asks for one first.
    h.send("GET", "/api/v1/other", None)
        .await
        .assert_problem(401, "missing_api_key");
}

#[tokio::test]
async fn unlisted_routes_can_need_only_a_valid_key_and_public_paths_none() {
    let routes = RouteTable::nouvel()
        .public("/healthz")
        .unwrap()
        .authenticate_unlisted();
    let h = Harness::with_layer(|l| l.routes(routes)).await;
    let key = h.key([nouvel::GENERATE]).await;
    assert_eq!(h.send_key("GET", "/api/v1/other", &key).await.status, 200);
    h.send("GET", "/api/v1/other", None)
        .await
        .assert_problem(401, "missing_api_key");
    // Listed routes still need their permission.
    h.send_key("GET", "/api/v1/projects", &key)
        .await
        .assert_problem(403, "missing_permission");
    let health = h.send("GET", "/healthz", None).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.text, "ok");
    assert_eq!(health.header("ratelimit"), None);
}

#[tokio::test]
async fn the_checks_run_in_the_contracts_order() {
    let h = Harness::with_profile(|p| p.default_limits(RateLimit::new(1, Duration::from_secs(60))))
        .await;
    let key = h.key([nouvel::GENERATE]).await;
    assert_eq!(
        h.send_key("POST", "/api/v1/generate", &key).await.status,
        200
    );
    // Over the limit, but on a route it may not use: 403 first.
    h.send_key("POST", "/api/v1/publish", &key)
        .await
        .assert_problem(403, "missing_permission");
    h.send_key("GET", "/api/v1/other", &key)
        .await
        .assert_problem(403, "route_not_allowed");
    h.send_key("POST", "/api/v1/generate", &key)
        .await
        .assert_problem(429, "rate_limited");
    // A starter key on an unknown route: 402 first.
    h.keys.set_plan(&h.account, nouvel::STARTER).await.unwrap();
    h.send_key("GET", "/api/v1/other", &key)
        .await
        .assert_problem(402, "plan_required");
    // An expired key on a starter account: 401 first.
    h.advance(Duration::from_secs(91 * 86_400));
    h.send_key("GET", "/api/v1/other", &key)
        .await
        .assert_problem(401, "expired_api_key");
}

#[tokio::test]
async fn rejections_are_typed_in_the_response_extensions() {
    use tower::ServiceExt;
    let h = Harness::new().await;
    let response = h
        .app
        .clone()
        .oneshot(
            axum::http::Request::get("/api/v1/projects")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        response.extensions().get::<nouvel_auth::Rejection>(),
        Some(&nouvel_auth::Rejection::MissingApiKey)
    );
}

#[tokio::test]
async fn realm_and_problem_type_are_configurable() {
    let h = Harness::with_profile(|p| {
        p.realm("acme \"api\"")
            .problem_type_base("https://docs.example.com/errors/")
    })
    .await;
    let reply = h.send("GET", "/api/v1/projects", None).await;
    assert_eq!(
        reply.header("www-authenticate"),
        Some(r#"Bearer realm="acme api""#)
    );
    assert_eq!(
        reply.body["type"],
        "https://docs.example.com/errors/missing_api_key"
    );
}

#[tokio::test]
async fn changing_a_clone_of_the_layer_leaves_the_original_as_it_was() {
    let (store, key) = common::store_with_key(nouvel::PROJECTS_READ).await;
    let original = NouvelAuthLayer::new(store);
    let changed = original.clone().routes(
        nouvel_auth::RouteTable::nouvel()
            .public("/healthz")
            .unwrap(),
    );
    let original = common::routes().layer(original);
    let changed = common::routes().layer(changed);
    let bearer = common::bearer(&key.key);

    let status = |app| async move { common::send(app, "GET", "/healthz", None).await.status };
    assert_eq!(status(&original).await, 401);
    assert_eq!(
        status(&changed).await,
        200,
        "public on the changed clone alone"
    );

    // Both read the same store and count in the same limiter.
    let reply = common::send(&original, "GET", "/api/v1/jobs/j", Some(&bearer)).await;
    assert_eq!(reply.header("x-ratelimit-remaining"), Some("59"));
    let reply = common::send(&changed, "GET", "/api/v1/jobs/j", Some(&bearer)).await;
    assert_eq!(reply.header("x-ratelimit-remaining"), Some("58"));
}

/// A store whose backend is down, or hangs.
struct BrokenStore {
    hang: bool,
}

impl KeyStore for BrokenStore {
    async fn lookup(
        &self,
        _digest: &KeyDigest,
        _now: time::OffsetDateTime,
    ) -> Result<Option<std::sync::Arc<KeyRecord>>, BackendError> {
        if self.hang {
            std::future::pending::<()>().await;
        }
        Err(BackendError::failed(
            "connection refused to db.internal:5432",
        ))
    }

    async fn record_usage(&self, _reports: &[UsageReport]) -> Result<(), BackendError> {
        Err(BackendError::failed("down"))
    }
}

async fn broken_reply(hang: bool) -> Reply {
    let layer =
        NouvelAuthLayer::new(BrokenStore { hang }).lookup_timeout(Duration::from_millis(50));
    let app = common::routes().layer(layer);
    let key = nouvel_auth::key::ApiKey::generate();
    common::send(
        &app,
        "POST",
        "/api/v1/generate",
        Some(&common::bearer(&key)),
    )
    .await
}

#[tokio::test]
async fn a_store_outage_answers_503_without_leaking_the_cause() {
    let reply = broken_reply(false).await;
    reply.assert_problem(503, "auth_unavailable");
    assert!(!reply.text.contains("db.internal"));
    assert_eq!(reply.header("www-authenticate"), None);
}

#[tokio::test(start_paused = true)]
async fn a_store_that_hangs_times_out_with_503() {
    let started = tokio::time::Instant::now();
    broken_reply(true)
        .await
        .assert_problem(503, "auth_unavailable");
    // Paused time: the timeout fired at its deadline, not earlier and not much later.
    assert_eq!(started.elapsed(), Duration::from_millis(50));
}

/// A limiter whose backend is down.
struct BrokenLimiter;

impl nouvel_auth::limit::RateLimiter for BrokenLimiter {
    type Window = ();

    async fn check(
        &self,
        _subject: nouvel_auth::limit::Subject<'_, ()>,
        _limits: nouvel_auth::RateLimits,
        _now: time::OffsetDateTime,
    ) -> Result<nouvel_auth::limit::Decision, BackendError> {
        Err(BackendError::failed("redis down"))
    }

    fn is_idle(&self, _window: &(), _now: time::OffsetDateTime) -> bool {
        true
    }
}

#[tokio::test]
async fn a_limiter_outage_answers_503() {
    let (store, key) = common::store_with_key(nouvel::GENERATE).await;
    let app = common::routes().layer(NouvelAuthLayer::new(store).limiter(BrokenLimiter));
    let reply = common::send(
        &app,
        "POST",
        "/api/v1/generate",
        Some(&common::bearer(&key.key)),
    )
    .await;
    reply.assert_problem(503, "auth_unavailable");
    assert!(!reply.text.contains("redis"));
}

#[tokio::test]
async fn a_custom_store_record_drives_the_checks() {
    // A store built from records alone: what a user's own database would return.
    struct OneKey(KeyDigest, KeyRecord);
    impl KeyStore for OneKey {
        async fn lookup(
            &self,
            digest: &KeyDigest,
            _now: time::OffsetDateTime,
        ) -> Result<Option<std::sync::Arc<KeyRecord>>, BackendError> {
            Ok((*digest == self.0).then(|| std::sync::Arc::new(self.1.clone())))
        }
        async fn record_usage(&self, _reports: &[UsageReport]) -> Result<(), BackendError> {
            Ok(())
        }
    }
    let key = nouvel_auth::key::ApiKey::generate();
    let record = KeyRecord::new(
        "key_1",
        "acc_1",
        "custom",
        nouvel::SCALE,
        Permissions::from(nouvel::PUBLISH),
    )
    .expires_at(Some(time::macros::datetime!(2100-01-01 00:00 UTC)))
    .rate_limits(Some(RateLimit::new(1, Duration::from_secs(10)).into()));
    let app = common::routes().layer(NouvelAuthLayer::new(OneKey(key.digest(), record)));
    let auth = common::bearer(&key);
    let first = common::send(&app, "POST", "/api/v1/publish", Some(&auth)).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body["key_id"], "key_1");
    // The record's own limit applies: 1 per 10 s.
    assert_eq!(first.header("x-ratelimit-limit"), Some("1"));
    let second = common::send(&app, "POST", "/api/v1/publish", Some(&auth)).await;
    second.assert_problem(429, "rate_limited");
    assert_eq!(second.header("retry-after"), Some("10"));
    common::send(&app, "POST", "/api/v1/generate", Some(&auth))
        .await
        .assert_problem(403, "missing_permission");
}

#[tokio::test]
async fn a_peppered_store_authenticates_and_keeps_no_plain_digest() {
    let clock = nouvel_auth::clock::ManualClock::new(common::T0);
    let hasher = nouvel_auth::key::KeyHasher::hmac_sha256(b"server-side pepper");
    let store = nouvel_auth::MemoryKeyStore::with_hasher(hasher);
    let keys = Profile::nouvel()
        .clock(clock.clone())
        .key_manager(store.clone());
    let account = keys.create_account("Acme", nouvel::SCALE).await.unwrap();
    let key = keys
        .create_key(&account.id, KeySpec::new("k", [nouvel::GENERATE]))
        .await
        .unwrap();
    // The layer asks the store how it digests, so the pepper is configured once.
    let app = common::routes().layer(Profile::nouvel().clock(clock).layer(store.clone()));
    let auth = common::bearer(&key.key);
    assert_eq!(
        common::send(&app, "POST", "/api/v1/generate", Some(&auth))
            .await
            .status,
        200
    );
    // A leaked table cannot be checked against a guessed key without the pepper.
    assert!(store
        .lookup(&key.key.digest(), common::T0)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .lookup(&store.digest(&key.key), common::T0)
        .await
        .unwrap()
        .is_some());
}

/// A store that remembers the instants it was asked at.
#[derive(Clone, Default)]
struct Recording {
    inner: nouvel_auth::MemoryKeyStore,
    asked_at: std::sync::Arc<std::sync::Mutex<Vec<time::OffsetDateTime>>>,
}

impl KeyStore for Recording {
    async fn lookup(
        &self,
        digest: &KeyDigest,
        now: time::OffsetDateTime,
    ) -> Result<Option<std::sync::Arc<KeyRecord>>, BackendError> {
        self.asked_at.lock().unwrap().push(now);
        self.inner.lookup(digest, now).await
    }

    async fn record_usage(&self, reports: &[UsageReport]) -> Result<(), BackendError> {
        self.inner.record_usage(reports).await
    }
}

#[tokio::test]
async fn only_well_formed_keys_reach_the_store_at_the_layers_instant() {
    let clock = nouvel_auth::clock::ManualClock::new(common::T0);
    let store = Recording::default();
    let routes = RouteTable::nouvel().public("/healthz").unwrap();
    let layer = Profile::nouvel()
        .clock(clock.clone())
        .layer(store.clone())
        .routes(routes);
    let app = common::routes().layer(layer);
    let asked = || store.asked_at.lock().unwrap().clone();

    // A public path, a missing header, a malformed key, a bad checksum: no lookup.
    assert_eq!(
        common::send(&app, "GET", "/healthz", None).await.status,
        200
    );
    let bad_checksum = {
        let mut key = nouvel_auth::key::ApiKey::generate()
            .expose_secret()
            .to_owned();
        let last = if key.ends_with('a') { "b" } else { "a" };
        key.replace_range(key.len() - 1.., last);
        key
    };
    for auth in [
        None,
        Some("Bearer nvl_this-is-not-a-key".to_owned()),
        Some(format!("Bearer {bad_checksum}")),
    ] {
        let reply = common::send(&app, "POST", "/api/v1/generate", auth.as_deref()).await;
        assert_eq!(reply.status, 401);
    }
    assert!(asked().is_empty());

    // A well-formed key is looked up once, at the instant the layer judges it at.
    clock.advance(Duration::from_secs(90));
    let unknown = common::bearer(&nouvel_auth::key::ApiKey::generate());
    common::send(&app, "POST", "/api/v1/generate", Some(&unknown))
        .await
        .assert_problem(401, "invalid_api_key");
    assert_eq!(asked(), [common::T0 + Duration::from_secs(90)]);
}

/// A memory store and limiter that may decline to answer at once, and log what they were
/// asked: `lookup_now`, `lookup`, `check_now`, `check`.
#[derive(Clone)]
struct Answering {
    store: MemoryKeyStore,
    limiter: std::sync::Arc<MemoryRateLimiter>,
    store_now: bool,
    limiter_now: bool,
    asked: std::sync::Arc<std::sync::Mutex<Vec<&'static str>>>,
}

impl Answering {
    fn ask(&self, what: &'static str) {
        self.asked.lock().unwrap().push(what);
    }

    fn take_asked(&self) -> Vec<&'static str> {
        std::mem::take(&mut self.asked.lock().unwrap())
    }
}

impl KeyStore for Answering {
    async fn lookup(
        &self,
        digest: &KeyDigest,
        now: time::OffsetDateTime,
    ) -> Result<Option<std::sync::Arc<KeyRecord>>, BackendError> {
        self.ask("lookup");
        self.store.lookup(digest, now).await
    }

    fn lookup_now(
        &self,
        digest: &KeyDigest,
        now: time::OffsetDateTime,
    ) -> std::task::Poll<Option<std::sync::Arc<KeyRecord>>> {
        self.ask("lookup_now");
        if self.store_now {
            self.store.lookup_now(digest, now)
        } else {
            std::task::Poll::Pending
        }
    }

    async fn record_usage(&self, reports: &[UsageReport]) -> Result<(), BackendError> {
        self.store.record_usage(reports).await
    }
}

impl RateLimiter for Answering {
    type Window = nouvel_auth::limit::MemoryWindow;

    async fn check(
        &self,
        subject: nouvel_auth::limit::Subject<'_, Self::Window>,
        limits: nouvel_auth::RateLimits,
        now: time::OffsetDateTime,
    ) -> Result<Decision, BackendError> {
        self.ask("check");
        self.limiter.check(subject, limits, now).await
    }

    fn check_now(
        &self,
        subject: nouvel_auth::limit::Subject<'_, Self::Window>,
        limits: nouvel_auth::RateLimits,
        now: time::OffsetDateTime,
    ) -> std::task::Poll<Decision> {
        self.ask("check_now");
        // Declining must record nothing, as the trait asks.
        if self.limiter_now {
            self.limiter.check_now(subject, limits, now)
        } else {
            std::task::Poll::Pending
        }
    }

    fn is_idle(&self, window: &Self::Window, now: time::OffsetDateTime) -> bool {
        self.limiter.is_idle(window, now)
    }
}

#[tokio::test]
async fn each_request_counts_once_whether_store_and_limiter_answer_at_once_or_later() {
    for (store_now, limiter_now, expected) in [
        (true, true, &["lookup_now", "check_now"][..]),
        (true, false, &["lookup_now", "check_now", "check"]),
        (false, true, &["lookup_now", "lookup", "check"]),
        (false, false, &["lookup_now", "lookup", "check"]),
    ] {
        let store = MemoryKeyStore::new();
        let keys = KeyManager::new(store.clone());
        let account = keys.create_account("Acme", nouvel::SCALE).await.unwrap();
        let spec = KeySpec::new("k", [nouvel::GENERATE])
            .rate_limits(RateLimit::new(2, Duration::from_secs(60)));
        let key = keys.create_key(&account.id, spec).await.unwrap();
        let answering = Answering {
            store,
            limiter: Default::default(),
            store_now,
            limiter_now,
            asked: Default::default(),
        };
        let layer = NouvelAuthLayer::new(answering.clone()).limiter(answering.clone());
        let app = common::routes().layer(layer);
        let auth = common::bearer(&key.key);
        let case = format!("store now: {store_now}, limiter now: {limiter_now}");
        for _ in 0..2 {
            let reply = common::send(&app, "POST", "/api/v1/generate", Some(&auth)).await;
            assert_eq!(reply.status, 200, "{case}");
            assert_eq!(reply.header("x-ratelimit-limit"), Some("2"), "{case}");
            assert_eq!(answering.take_asked(), expected, "{case}");
        }
        common::send(&app, "POST", "/api/v1/generate", Some(&auth))
            .await
            .assert_problem(429, "rate_limited");
        answering.take_asked();
        // A 403 is decided before the limiter, at once or not.
        let reply = common::send(&app, "GET", "/api/v1/projects", Some(&auth)).await;
        reply.assert_problem(403, "missing_permission");
        let asked = answering.take_asked();
        assert!(
            !asked.contains(&"check") && !asked.contains(&"check_now"),
            "{case}: {asked:?}"
        );
    }
}

#[tokio::test]
async fn a_refusal_carries_none_of_the_requests_headers_or_extensions() {
    use tower::ServiceExt;
    let app = common::routes().layer(NouvelAuthLayer::new(MemoryKeyStore::new()));
    let unknown = common::bearer(&nouvel_auth::key::ApiKey::generate());
    // Refused in `call` (malformed) and after the store's answer (unknown).
    for auth in ["Bearer nvl_this-is-not-a-key", unknown.as_str()] {
        let request = http::Request::post("/api/v1/generate")
            .header("authorization", auth)
            .header("x-request-id", "req-1")
            .header("cookie", "session=secret")
            .extension("request state")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.extensions().get::<&str>(), None, "{auth}");
        assert!(response
            .extensions()
            .get::<nouvel_auth::Rejection>()
            .is_some());
        let mut names: Vec<_> = response.headers().keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["content-length", "content-type", "www-authenticate"],
            "{auth}"
        );
        Reply::read(response)
            .await
            .assert_problem(401, "invalid_api_key");
    }
}
