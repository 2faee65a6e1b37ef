//! An application's own profile (permissions, plans, key prefix) and its own rejection
//! responses, end to end: the manager, the layer and the admin API speak it.

mod common;

use axum::{
    body::Body,
    http::{Method, Request},
    routing::get,
    Router,
};
use bytes::Bytes;
use common::{send, Reply};
use http::{Response, StatusCode};
use nouvel_auth::{
    admin::{self, AdminToken},
    AuthenticatedKey, KeyManager, KeyPrefix, KeySpec, MemoryKeyStore, Permission, PermissionSet,
    Plan, Plans, Problem, Profile, Rejection, RouteTable,
};
use serde_json::json;
use tower::ServiceExt;

const SCOPES: &PermissionSet = &PermissionSet::new(&["videos:read", "videos:write"]);
const VIDEOS_READ: Permission = SCOPES.permission("videos:read");
const VIDEOS_WRITE: Permission = SCOPES.permission("videos:write");
const FREE: Plan = Plan::from_static("free");
const PRO: Plan = Plan::from_static("pro");

fn profile() -> Profile {
    Profile::new(
        SCOPES,
        Plans::new([FREE, PRO]).api_keys_on([PRO]),
        KeyPrefix::new("vid_").unwrap(),
    )
}

struct App {
    keys: KeyManager<MemoryKeyStore>,
    app: Router,
}

async fn app(profile: impl FnOnce(Profile) -> Profile) -> App {
    let profile = profile(self::profile());
    let store = MemoryKeyStore::new();
    let keys = profile.key_manager(store.clone());
    let routes = RouteTable::new()
        .route(Method::GET, "/videos", VIDEOS_READ)
        .unwrap()
        .route(Method::POST, "/videos", VIDEOS_WRITE)
        .unwrap();
    let auth = profile.layer(store).routes(routes);
    let app = Router::new()
        .route(
            "/videos",
            get(|key: AuthenticatedKey| async move { key.name.to_string() })
                .post(|| async { "made" }),
        )
        .layer(auth)
        .nest(
            "/admin",
            admin::router(keys.clone(), AdminToken::new("admin-token-0123456789")),
        );
    App { keys, app }
}

async fn admin(app: &Router, method: &str, path: &str, body: serde_json::Value) -> Reply {
    let request = Request::builder()
        .method(method)
        .uri(format!("/admin{path}"))
        .header("authorization", "Bearer admin-token-0123456789")
        .body(Body::from(body.to_string()))
        .unwrap();
    Reply::read(app.clone().oneshot(request).await.unwrap()).await
}

#[tokio::test]
async fn the_applications_permissions_plans_and_prefix_hold_everywhere() {
    let App { keys, app } = app(|profile| profile).await;

    // The admin API takes the application's words, and refuses Nouvel's.
    let account = admin(
        &app,
        "POST",
        "/accounts",
        json!({"name": "Studio", "plan": "pro"}),
    )
    .await;
    assert_eq!(account.status, 201, "{}", account.text);
    let id = account.body["id"].as_str().unwrap().to_owned();
    let refused = admin(
        &app,
        "POST",
        "/accounts",
        json!({"name": "S", "plan": "scale"}),
    )
    .await;
    refused.assert_problem(422, "invalid_request");
    assert_eq!(refused.body["errors"][0]["field"], "plan");
    let refused = admin(
        &app,
        "POST",
        &format!("/accounts/{id}/keys"),
        json!({"name": "k", "permissions": ["generate"]}),
    )
    .await;
    refused.assert_problem(422, "invalid_request");
    assert_eq!(
        refused.body["errors"][0]["reason"],
        "unknown permission 'generate'"
    );
    let made = admin(
        &app,
        "POST",
        &format!("/accounts/{id}/keys"),
        json!({"name": "Reader", "permissions": ["videos:read"]}),
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.text);
    assert_eq!(made.body["permissions"], json!(["videos:read"]));
    let secret = made.body["key"].as_str().unwrap().to_owned();
    assert!(
        secret.starts_with("vid_") && secret.len() == 4 + 28,
        "{secret}"
    );
    assert!(made.body["prefix"].as_str().unwrap().starts_with("vid_"));

    // The layer checks the application's permissions and names them in its 403.
    let auth = format!("Bearer {secret}");
    let read = send(&app, "GET", "/videos", Some(&auth)).await;
    assert_eq!(
        (read.status, read.text.as_str()),
        (StatusCode::OK, "Reader")
    );
    let write = send(&app, "POST", "/videos", Some(&auth)).await;
    write.assert_problem(403, "missing_permission");
    assert_eq!(write.body["required_permission"], "videos:write");
    assert_eq!(
        write.header("www-authenticate"),
        Some(r#"Bearer realm="api", error="insufficient_scope", scope="videos:write""#)
    );

    // A Nouvel key is malformed here: the prefix is the application's.
    let nouvel_key = nouvel_auth::key::ApiKey::generate();
    let wrong = send(&app, "GET", "/videos", Some(&common::bearer(&nouvel_key))).await;
    wrong.assert_problem(401, "invalid_api_key");
    assert!(
        wrong.body["detail"].as_str().unwrap().contains("`vid_`"),
        "{}",
        wrong.text
    );
    send(&app, "GET", "/videos", None).await.body["detail"]
        .as_str()
        .unwrap()
        .contains("Bearer vid_…")
        .then_some(())
        .expect("the missing-key detail names the prefix");

    // The plan gate is the application's: 402 names the plans that have keys.
    keys.set_plan(&id.clone().into(), FREE).await.unwrap();
    let gated = send(&app, "GET", "/videos", Some(&auth)).await;
    gated.assert_problem(402, "plan_required");
    assert_eq!(gated.body["plan"], "free");
    assert_eq!(gated.body["required_plans"], json!(["pro"]));
    assert_eq!(
        gated.body["detail"],
        "API keys need the Pro plan; this account is on the free plan."
    );
    let refused = admin(
        &app,
        "POST",
        &format!("/accounts/{id}/keys"),
        json!({"name": "k", "permissions": ["videos:read"]}),
    )
    .await;
    refused.assert_problem(402, "plan_required");
    assert_eq!(refused.body["required_plans"], json!(["pro"]));
}

#[tokio::test]
async fn permissions_of_another_profile_are_refused_by_the_manager() {
    let App { keys, .. } = app(|profile| profile).await;
    let account = keys.create_account("Studio", PRO).await.unwrap();
    let refused = keys
        .create_key(
            &account.id,
            KeySpec::new("k", [nouvel_auth::nouvel::GENERATE]),
        )
        .await;
    let Err(nouvel_auth::ManageError::Invalid(errors)) = refused else {
        panic!("{refused:?}");
    };
    assert_eq!(errors[0].field, "permissions");
}

#[tokio::test]
async fn without_a_plan_gate_no_plan_is_refused() {
    let store = MemoryKeyStore::new();
    let open = Profile::new(SCOPES, Plans::any(), KeyPrefix::new("vid_").unwrap());
    let keys = open.clone().key_manager(store.clone());
    let account = keys
        .create_account("Anyone", Plan::new("hobby"))
        .await
        .unwrap();
    let key = keys
        .create_key(&account.id, KeySpec::new("k", [VIDEOS_READ]))
        .await
        .unwrap();
    let routes = RouteTable::new()
        .route(Method::GET, "/videos", VIDEOS_READ)
        .unwrap();
    let app = Router::new()
        .route("/videos", get(|| async { "ok" }))
        .layer(open.layer(store).routes(routes));
    let reply = send(&app, "GET", "/videos", Some(&common::bearer(&key.key))).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

/// Plain-text refusals in the application's own words; the rest as the default made them.
fn plain_401(problem: &Problem, default: Response<Bytes>) -> Response<Bytes> {
    if problem.status() != StatusCode::UNAUTHORIZED {
        return default;
    }
    Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .header("content-type", "text/plain; charset=utf-8")
        .header("www-authenticate", r#"Bearer realm="videos""#)
        .body(Bytes::from(format!("Who are you? ({})", problem.code())))
        .unwrap()
}

#[tokio::test]
async fn a_responder_answers_in_the_applications_words_and_the_rejection_stays_typed() {
    let App { keys, app } = app(|profile| profile.responder(plain_401)).await;
    let reply = send(&app, "GET", "/videos", None).await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(reply.text, "Who are you? (missing_api_key)");
    assert_eq!(
        reply.header("www-authenticate"),
        Some(r#"Bearer realm="videos""#)
    );

    // What it leaves alone keeps the default.
    let account = keys.create_account("Studio", PRO).await.unwrap();
    let key = keys
        .create_key(&account.id, KeySpec::new("k", [VIDEOS_READ]))
        .await
        .unwrap();
    send(&app, "POST", "/videos", Some(&common::bearer(&key.key)))
        .await
        .assert_problem(403, "missing_permission");
}

#[tokio::test]
async fn a_responder_works_with_plain_hyper_types() {
    use http_body_util::{BodyExt, Full};
    use tower::{service_fn, Layer};

    let inner = service_fn(|_: Request<Full<Bytes>>| async {
        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    });
    let service = Profile::nouvel()
        .responder(plain_401)
        .layer(MemoryKeyStore::new())
        .layer(inner);
    let response = service
        .oneshot(
            Request::get("/api/v1/projects")
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.extensions().get::<Rejection>(),
        Some(&Rejection::MissingApiKey)
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "Who are you? (missing_api_key)");
}

const TEAM: Plan = Plan::from_static("team");

/// The weather application's profile: its plans carry their limits.
fn weather() -> Profile {
    use std::time::Duration;
    Profile::new(
        SCOPES,
        Plans::new([FREE, PRO, TEAM]).api_keys_on([PRO, TEAM]),
        KeyPrefix::new("wx_").unwrap(),
    )
    .realm("weather")
    .expiry_header(http::HeaderName::from_static("weather-key-expires-at"))
    .problem_type_base("https://weather.example/errors/")
    .plan_limits(
        PRO,
        nouvel_auth::RateLimit::new(120, Duration::from_secs(60)),
    )
    .plan_limits(
        TEAM,
        nouvel_auth::RateLimit::new(600, Duration::from_secs(60)),
    )
}

#[tokio::test]
async fn limits_follow_the_plan_at_once_and_a_keys_own_limit_wins() {
    let store = MemoryKeyStore::new();
    let profile = weather();
    let keys = profile.key_manager(store.clone());
    let routes = RouteTable::new()
        .route(Method::GET, "/forecast", VIDEOS_READ)
        .unwrap();
    let app = Router::new()
        .route("/forecast", get(|| async { "sunny" }))
        .layer(profile.layer(store).routes(routes))
        .nest(
            "/ops",
            admin::router(keys.clone(), AdminToken::new("admin-token-0123456789")),
        );
    let account = keys.create_account("Acme", PRO).await.unwrap();
    let made = keys
        .create_key(&account.id, KeySpec::new("Reader", [VIDEOS_READ]))
        .await
        .unwrap();
    let own = keys
        .create_key(
            &account.id,
            KeySpec::new("Own", [VIDEOS_READ]).rate_limits(nouvel_auth::RateLimit::new(
                5,
                std::time::Duration::from_secs(10),
            )),
        )
        .await
        .unwrap();
    let limit_of = |key: &nouvel_auth::manage::NewKey| {
        let auth = format!("Bearer {}", key.key.expose_secret());
        let app = app.clone();
        async move {
            let reply = send(&app, "GET", "/forecast", Some(&auth)).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
            reply.header("x-ratelimit-limit").unwrap().to_owned()
        }
    };
    let listed = |keys: KeyManager<MemoryKeyStore>, id| {
        let account = account.id.clone();
        async move {
            let info = keys.key(&account, &id).await.unwrap();
            serde_json::to_value(&info).unwrap()["rate_limit"]["requests"].clone()
        }
    };
    assert_eq!(limit_of(&made).await, "120");
    assert_eq!(listed(keys.clone(), made.info.id.clone()).await, 120);
    // The plan changes: the next request, and the listing, have the new plan's limit.
    keys.set_plan(&account.id, TEAM).await.unwrap();
    assert_eq!(limit_of(&made).await, "600");
    assert_eq!(listed(keys.clone(), made.info.id.clone()).await, 600);
    // A key's own limit wins over its plan's.
    assert_eq!(limit_of(&own).await, "5");
    assert_eq!(listed(keys.clone(), own.info.id.clone()).await, 5);
}

/// An application of `profile`: `/forecast` (a permission), `/cities` (optional), the
/// admin router at `/ops`.
fn weather_app(profile: &Profile) -> (KeyManager<MemoryKeyStore>, Router) {
    let store = MemoryKeyStore::new();
    let keys = profile.key_manager(store.clone());
    let routes = RouteTable::new()
        .route(Method::GET, "/forecast", VIDEOS_READ)
        .unwrap()
        .optional("/cities")
        .unwrap();
    let app = Router::new()
        .route("/forecast", get(|| async { "sunny" }))
        .route(
            "/cities",
            get(|key: AuthenticatedKey| async move { key.name.to_string() }),
        )
        .layer(profile.layer(store).routes(routes))
        .nest(
            "/ops",
            admin::router(keys.clone(), AdminToken::new("admin-token-0123456789")),
        );
    (keys, app)
}

#[tokio::test]
async fn nothing_of_nouvel_reaches_an_application_with_its_own_profile() {
    let (keys, app) = weather_app(&weather());
    let account = keys.create_account("Acme", PRO).await.unwrap();
    let soon = keys
        .create_key(
            &account.id,
            KeySpec::new("Soon", [VIDEOS_READ]).expiration(nouvel_auth::Expiration::Days7),
        )
        .await
        .unwrap();
    let deleted = keys
        .create_key(&account.id, KeySpec::new("Gone", [VIDEOS_READ]))
        .await
        .unwrap();
    keys.delete_key(&account.id, &deleted.info.id)
        .await
        .unwrap();

    let mut replies = Vec::new();
    let bearer = |key: &nouvel_auth::manage::NewKey| format!("Bearer {}", key.key.expose_secret());
    let ok = send(&app, "GET", "/forecast", Some(&bearer(&soon))).await;
    assert_eq!(ok.header("weather-key-expires-at").map(str::len), Some(20));
    replies.push(ok);
    // The extractor's own 401, on an optional route without a key, is the layer's.
    let optional = send(&app, "GET", "/cities", None).await;
    assert_eq!(
        (optional.status.as_u16(), optional.code()),
        (401, "missing_api_key")
    );
    assert!(optional.text.contains("Bearer wx_"), "{}", optional.text);
    assert_eq!(
        optional.header("www-authenticate"),
        Some(r#"Bearer realm="weather""#)
    );
    assert_eq!(
        optional.body["type"],
        "https://weather.example/errors/missing_api_key"
    );
    replies.push(optional);
    replies.push(send(&app, "GET", "/forecast", Some(&bearer(&deleted))).await);
    replies.push(send(&app, "GET", "/forecast", Some("Bearer nvl_madeup")).await);
    replies.push(send(&app, "GET", "/forecast", Some("Bearer wx_madeup")).await);
    // The admin router speaks the profile too.
    replies.push(
        Reply::read(
            app.clone()
                .oneshot(
                    Request::get("/ops/accounts/acc_none")
                        .header("authorization", "Bearer admin-token-0123456789")
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap(),
        )
        .await,
    );
    let ops = replies.last().unwrap();
    assert_eq!((ops.status.as_u16(), ops.code()), (404, "not_found"));
    assert_eq!(ops.body["type"], "https://weather.example/errors/not_found");
    for reply in &replies {
        let mut seen = reply.text.to_lowercase();
        for (name, value) in reply.headers.iter() {
            seen.push_str(
                &format!("{name}: {}", value.to_str().unwrap_or_default()).to_lowercase(),
            );
        }
        assert!(!seen.contains("nouvel"), "{seen}");
        assert!(!seen.contains("settings → api keys"), "{seen}");
    }
}

/// The weather application's own error shape: `{"error": {"status", "code", "message", …}}`.
fn weather_errors(problem: &Problem, default: Response<Bytes>) -> Response<Bytes> {
    let mut error = serde_json::Map::new();
    error.insert("status".into(), problem.status().as_u16().into());
    error.insert("code".into(), problem.code().into());
    error.insert("message".into(), problem.detail().into());
    error.extend(problem.extra().clone());
    let (mut parts, _) = default.into_parts();
    parts.headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Bytes::from(json!({ "error": error }).to_string()))
}

#[tokio::test]
async fn one_responder_answers_every_refusal_of_the_application() {
    use nouvel_auth::settings::{self, SignedInUser};
    let profile = weather().responder(weather_errors);
    let (keys, app) = weather_app(&profile);
    let session = |_: &http::request::Parts| async {
        Ok::<Option<SignedInUser>, axum::response::Response>(None)
    };
    let not_found = {
        let profile = profile.clone();
        move || {
            let problem = Problem::new(StatusCode::NOT_FOUND, "not_found", "No such route.");
            let answer = profile.respond(&problem);
            async move { answer.map(Body::from) }
        }
    };
    let app = app
        .nest(
            "/settings/api-keys",
            settings::router(keys.clone(), session),
        )
        .fallback(not_found);
    let account = keys.create_account("Acme", PRO).await.unwrap();
    let ops = |method: &str, path: &str, body: &str| {
        Request::builder()
            .method(method)
            .uri(format!("/ops{path}"))
            .header("authorization", "Bearer admin-token-0123456789")
            .body(Body::from(body.to_owned()))
            .unwrap()
    };
    let answers = [
        (
            send(&app, "GET", "/forecast", None).await,
            401,
            "missing_api_key",
        ),
        (
            send(&app, "GET", "/cities", None).await,
            401,
            "missing_api_key",
        ),
        (
            send(&app, "GET", "/forecast", Some("Bearer wx_madeup")).await,
            401,
            "invalid_api_key",
        ),
        (
            Reply::read(
                app.clone()
                    .oneshot(ops("GET", "/accounts/acc_none", ""))
                    .await
                    .unwrap(),
            )
            .await,
            404,
            "not_found",
        ),
        (
            Reply::read(
                app.clone()
                    .oneshot(ops(
                        "POST",
                        &format!("/accounts/{}/keys", account.id),
                        r#"{"name": ""}"#,
                    ))
                    .await
                    .unwrap(),
            )
            .await,
            422,
            "invalid_request",
        ),
        (
            send(&app, "GET", "/ops/accounts", None).await,
            401,
            "admin_unauthorized",
        ),
        (
            send(&app, "GET", "/settings/api-keys/keys", None).await,
            401,
            "not_signed_in",
        ),
        (send(&app, "GET", "/nowhere", None).await, 404, "not_found"),
    ];
    for (reply, status, code) in &answers {
        assert_eq!(reply.status.as_u16(), *status, "{}", reply.text);
        assert_eq!(
            reply.header("content-type"),
            Some("application/json"),
            "{}",
            reply.text
        );
        assert_eq!(reply.body["error"]["status"], *status, "{}", reply.text);
        assert_eq!(reply.body["error"]["code"], *code, "{}", reply.text);
        assert!(reply.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    // The extra members of a kind come along, and the headers of a kind stay.
    assert!(
        answers[4].0.body["error"]["errors"].is_array(),
        "{}",
        answers[4].0.text
    );
    assert_eq!(
        answers[0].0.header("www-authenticate"),
        Some(r#"Bearer realm="weather""#)
    );
    assert_eq!(answers[5].0.header("cache-control"), Some("no-store"));
}

#[tokio::test]
async fn the_profile_writes_the_last_usage_of_its_layers_with_no_layer_kept() {
    let profile = profile();
    let store = MemoryKeyStore::new();
    let keys = profile.key_manager(store.clone());
    let account = keys.create_account("Acme", PRO).await.unwrap();
    let made = keys
        .create_key(&account.id, KeySpec::new("Reporting", [VIDEOS_READ]))
        .await
        .unwrap();
    let bearer = format!("Bearer {}", made.key.expose_secret());
    let routes = RouteTable::new()
        .route(Method::GET, "/videos", VIDEOS_READ)
        .unwrap();
    // Two layers of one profile, neither flushing on its own within the test.
    let hour = std::time::Duration::from_secs(3600);
    let app = |store: MemoryKeyStore| {
        Router::new()
            .route("/videos", get(|| async { "listed" }))
            .layer(
                profile
                    .layer(store)
                    .routes(routes.clone())
                    .usage_flush_interval(hour),
            )
    };
    let (first, second) = (app(store.clone()), app(store.clone()));
    for app in [first.clone(), second.clone(), second] {
        let request = Request::get("/videos")
            .header("authorization", &bearer)
            .body(Body::empty())
            .unwrap();
        assert_eq!(app.oneshot(request).await.unwrap().status(), StatusCode::OK);
    }
    let used = async || {
        let key = keys.key(&account.id, &made.info.id).await.unwrap();
        (key.usage.admitted, key.last_used_at.is_some())
    };
    assert_eq!(used().await, (0, false), "nothing written yet");

    drop(first);
    profile.flush_usage().await.unwrap();
    assert_eq!(
        used().await,
        (3, true),
        "both layers' usage, one of them dropped"
    );
    profile.flush_usage().await.unwrap();
    assert_eq!(used().await.0, 3, "a second flush writes nothing twice");
}

#[tokio::test]
async fn a_dropped_layers_usage_is_written_when_the_next_layer_of_its_profile_starts() {
    let profile = profile();
    let store = MemoryKeyStore::new();
    let keys = profile.key_manager(store.clone());
    let account = keys.create_account("Acme", PRO).await.unwrap();
    let made = keys
        .create_key(&account.id, KeySpec::new("Reporting", [VIDEOS_READ]))
        .await
        .unwrap();
    let routes = RouteTable::new()
        .route(Method::GET, "/videos", VIDEOS_READ)
        .unwrap();
    let hour = std::time::Duration::from_secs(3600);
    let app = || {
        Router::new()
            .route("/videos", get(|| async { "listed" }))
            .layer(
                profile
                    .layer(store.clone())
                    .routes(routes.clone())
                    .usage_flush_interval(hour),
            )
    };
    let request = || {
        Request::get("/videos")
            .header(
                "authorization",
                format!("Bearer {}", made.key.expose_secret()),
            )
            .body(Body::empty())
            .unwrap()
    };
    // The first layer serves one request and is dropped with it, unflushed.
    assert_eq!(
        app().oneshot(request()).await.unwrap().status(),
        StatusCode::OK
    );
    let next = app();
    assert_eq!(
        next.oneshot(request()).await.unwrap().status(),
        StatusCode::OK
    );
    let mut admitted = 0;
    for _ in 0..100 {
        admitted = keys
            .key(&account.id, &made.info.id)
            .await
            .unwrap()
            .usage
            .admitted;
        if admitted > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        admitted, 1,
        "the dropped layer's request, and not yet the live one's"
    );
}

#[tokio::test]
async fn hints_tell_the_owner_what_to_do_by_the_thresholds_of_the_profile() {
    use nouvel_auth::{clock::ManualClock, manage::HintCode, Expiration};
    let day = std::time::Duration::from_secs(86_400);
    let clock = ManualClock::new(common::T0);
    let profile = profile()
        .clock(clock.clone())
        .unused_after(10 * day)
        .rotate_after(20 * day);
    let store = MemoryKeyStore::new();
    let keys = profile.key_manager(store.clone());
    let account = keys.create_account("Acme", PRO).await.unwrap();
    let used = keys
        .create_key(
            &account.id,
            KeySpec::new("Used", [VIDEOS_READ]).expiration(Expiration::Days30),
        )
        .await
        .unwrap();
    keys.create_key(
        &account.id,
        KeySpec::new("Idle", [VIDEOS_READ]).expiration(Expiration::Never),
    )
    .await
    .unwrap();
    let hints = async |name: &str| {
        let listed = keys.keys(&account.id).await.unwrap();
        let key = listed.into_iter().find(|k| k.name == name).unwrap();
        key.hints
    };
    let codes = async |name: &str| -> Vec<HintCode> {
        hints(name).await.into_iter().map(|h| h.code).collect()
    };
    assert_eq!(codes("Used").await, []);
    assert_eq!(codes("Idle").await, [HintCode::NeverExpires]);

    // Day 5: one request with the first key, written by the profile's flush.
    clock.advance(5 * day);
    let routes = RouteTable::new()
        .route(Method::GET, "/videos", VIDEOS_READ)
        .unwrap();
    let app = Router::new()
        .route("/videos", get(|| async { "listed" }))
        .layer(profile.layer(store.clone()).routes(routes));
    let request = Request::get("/videos")
        .header(
            "authorization",
            format!("Bearer {}", used.key.expose_secret()),
        )
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.oneshot(request).await.unwrap().status(), StatusCode::OK);
    profile.flush_usage().await.unwrap();

    // Day 11: the idle key is older than 10 days and was never used; the used one was used
    // 6 days ago.
    clock.advance(6 * day);
    assert_eq!(codes("Used").await, []);
    assert_eq!(
        codes("Idle").await,
        [HintCode::Unused, HintCode::NeverExpires]
    );
    assert_eq!(
        hints("Idle").await[0].message,
        "No request in the last 10 days: delete the key if nothing uses it."
    );
    // Day 21: both are older than 20 days; the used one idles for 16.
    clock.advance(10 * day);
    assert_eq!(
        codes("Used").await,
        [HintCode::Unused, HintCode::RotationDue]
    );
    assert_eq!(
        hints("Used").await[1].message,
        "Created more than 20 days ago: rotate it."
    );
    // Day 24: the 30-day key has 6 days left.
    clock.advance(3 * day);
    assert_eq!(
        codes("Used").await,
        [
            HintCode::Unused,
            HintCode::RotationDue,
            HintCode::ExpiresSoon
        ]
    );
    // A rotated key's hints are its replacement's to give.
    let rotated = keys
        .rotate_key(
            &account.id,
            &used.info.id,
            std::time::Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(
        keys.key(&account.id, &used.info.id).await.unwrap().hints,
        []
    );
    assert_eq!(rotated.info.hints, []);
}

#[tokio::test]
async fn the_last_use_of_each_permission_shows_which_a_key_does_not_need() {
    use nouvel_auth::{clock::ManualClock, manage::HintCode};
    let day = std::time::Duration::from_secs(86_400);
    let clock = ManualClock::new(common::T0);
    let profile = profile().clock(clock.clone()).unused_after(10 * day);
    let store = MemoryKeyStore::new();
    let keys = profile.key_manager(store.clone());
    let account = keys.create_account("Acme", PRO).await.unwrap();
    let made = keys
        .create_key(
            &account.id,
            KeySpec::new("Wide", [VIDEOS_READ, VIDEOS_WRITE]),
        )
        .await
        .unwrap();
    let routes = RouteTable::new()
        .route(Method::GET, "/videos", VIDEOS_READ)
        .unwrap()
        .route(Method::POST, "/videos", VIDEOS_WRITE)
        .unwrap();
    let app = Router::new()
        .route("/videos", get(|| async { "listed" }))
        .layer(profile.layer(store.clone()).routes(routes));
    let read = async || {
        let request = Request::get("/videos")
            .header(
                "authorization",
                format!("Bearer {}", made.key.expose_secret()),
            )
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            app.clone().oneshot(request).await.unwrap().status(),
            StatusCode::OK
        );
        profile.flush_usage().await.unwrap();
    };
    read().await;
    let key = keys.key(&account.id, &made.info.id).await.unwrap();
    let json = serde_json::to_value(&key).unwrap();
    assert_eq!(
        json["permissions_last_used"],
        json!({"videos:read": "2026-06-01T12:00:00Z", "videos:write": null})
    );

    // Day 11: read again; the key is older than 10 days and has never written.
    clock.advance(11 * day);
    read().await;
    let key = keys.key(&account.id, &made.info.id).await.unwrap();
    let hint = &key.hints[0];
    assert_eq!(hint.code, HintCode::UnusedPermissions);
    assert_eq!(hint.permissions, [VIDEOS_WRITE]);
    assert_eq!(
        serde_json::to_value(hint).unwrap()["message"],
        "Not used in the last 10 days: videos:write. Rotate the key with only the permissions it uses."
    );
    // Acting on it: a rotation keeping what the key uses.
    let narrowed = keys
        .rotate_key(
            &account.id,
            &made.info.id,
            nouvel_auth::manage::Rotation::grace(std::time::Duration::ZERO)
                .permissions([VIDEOS_READ]),
        )
        .await
        .unwrap();
    assert_eq!(
        narrowed.info.permissions.iter().collect::<Vec<_>>(),
        [VIDEOS_READ]
    );
    assert_eq!(narrowed.info.hints, []);
}

#[tokio::test]
async fn a_key_refused_more_than_admitted_in_the_last_hour_says_so() {
    use nouvel_auth::{clock::ManualClock, manage::HintCode};
    let clock = ManualClock::new(common::T0 + std::time::Duration::from_secs(1_800));
    let profile = profile().clock(clock.clone());
    let store = MemoryKeyStore::new();
    let keys = profile.key_manager(store.clone());
    let account = keys.create_account("Acme", PRO).await.unwrap();
    let made = keys
        .create_key(&account.id, KeySpec::new("Reader", [VIDEOS_READ]))
        .await
        .unwrap();
    let routes = RouteTable::new()
        .route(Method::GET, "/videos", VIDEOS_READ)
        .unwrap()
        .route(Method::POST, "/videos", VIDEOS_WRITE)
        .unwrap();
    let app = Router::new()
        .route(
            "/videos",
            get(|| async { "listed" }).post(|| async { "made" }),
        )
        .layer(profile.layer(store.clone()).routes(routes));
    let send = async |method: Method, n: usize| {
        for _ in 0..n {
            let request = Request::builder()
                .method(method.clone())
                .uri("/videos")
                .header(
                    "authorization",
                    format!("Bearer {}", made.key.expose_secret()),
                )
                .body(Body::empty())
                .unwrap();
            app.clone().oneshot(request).await.unwrap();
        }
        profile.flush_usage().await.unwrap();
    };
    let codes = async || -> Vec<HintCode> {
        let key = keys.key(&account.id, &made.info.id).await.unwrap();
        key.hints.into_iter().map(|h| h.code).collect()
    };
    send(Method::GET, 5).await;
    send(Method::POST, 19).await;
    assert_eq!(codes().await, [], "19 refusals are not yet many");
    send(Method::POST, 6).await;
    assert_eq!(codes().await, [HintCode::ManyRejections]);
    let key = keys.key(&account.id, &made.info.id).await.unwrap();
    assert_eq!(
        key.hints[0].message,
        "About 25 of its 30 requests in the last hour were refused for its plan or permissions (402, 403): check what calls with it."
    );
    // Two hours on, the last hour is quiet.
    clock.advance(std::time::Duration::from_secs(7_200));
    assert_eq!(codes().await, []);
}

/// A store whose usage writes fail while `down` is set.
#[derive(Clone)]
struct Flaky {
    inner: MemoryKeyStore,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl nouvel_auth::KeyStore for Flaky {
    fn digest(&self, key: &nouvel_auth::key::ApiKey) -> nouvel_auth::key::KeyDigest {
        self.inner.digest(key)
    }

    async fn lookup(
        &self,
        digest: &nouvel_auth::key::KeyDigest,
        now: time::OffsetDateTime,
    ) -> Result<Option<std::sync::Arc<nouvel_auth::KeyRecord>>, nouvel_auth::BackendError> {
        self.inner.lookup(digest, now).await
    }

    async fn record_usage(
        &self,
        reports: &[nouvel_auth::store::UsageReport],
    ) -> Result<(), nouvel_auth::BackendError> {
        if self.down.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(nouvel_auth::BackendError::failed("down"));
        }
        self.inner.record_usage(reports).await
    }
}

#[tokio::test]
async fn usage_a_failed_flush_could_not_write_is_written_whole_by_the_next() {
    use nouvel_auth::{clock::ManualClock, manage::Granularity};
    let clock = ManualClock::new(common::T0);
    let profile = profile().clock(clock.clone());
    let store = Flaky {
        inner: MemoryKeyStore::new(),
        down: std::sync::Arc::default(),
    };
    let keys = profile.key_manager(store.inner.clone());
    let account = keys.create_account("Acme", PRO).await.unwrap();
    let made = keys
        .create_key(&account.id, KeySpec::new("Reader", [VIDEOS_READ]))
        .await
        .unwrap();
    let routes = RouteTable::new()
        .route(Method::GET, "/videos", VIDEOS_READ)
        .unwrap();
    let app = Router::new()
        .route("/videos", get(|| async { "listed" }))
        .layer(profile.layer(store.clone()).routes(routes));
    let read = async || {
        let request = Request::get("/videos")
            .header(
                "authorization",
                format!("Bearer {}", made.key.expose_secret()),
            )
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            app.clone().oneshot(request).await.unwrap().status(),
            StatusCode::OK
        );
    };
    // Two requests at 12:00 that the store cannot take, one at 13:00 when it can again.
    store.down.store(true, std::sync::atomic::Ordering::Relaxed);
    read().await;
    read().await;
    assert!(profile.flush_usage().await.is_err());
    clock.advance(std::time::Duration::from_secs(3_600));
    store
        .down
        .store(false, std::sync::atomic::Ordering::Relaxed);
    read().await;
    profile.flush_usage().await.unwrap();
    let key = keys.key(&account.id, &made.info.id).await.unwrap();
    assert_eq!(key.usage.admitted, 3);
    let usage = keys
        .usage(&account.id, &made.info.id, Granularity::Hour, None, None)
        .await
        .unwrap();
    let counts: Vec<u64> = usage.buckets.iter().map(|b| b.admitted).collect();
    assert_eq!(counts[22..], [2, 1], "each hour keeps its own requests");
    assert_eq!(
        key.permissions_last_used,
        [(
            VIDEOS_READ,
            Some(common::T0 + std::time::Duration::from_secs(3_600))
        )]
    );
}
