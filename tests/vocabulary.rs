//! An application's own vocabulary (permissions, plans, key prefix) and its own rejection
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
    AuthenticatedKey, KeyManager, KeyPrefix, KeySpec, MemoryKeyStore, NouvelAuthLayer, Permission,
    PermissionSet, Plan, Plans, Rejection, RouteTable, Vocabulary,
};
use serde_json::json;
use tower::ServiceExt;

const SCOPES: &PermissionSet = &PermissionSet::new(&["videos:read", "videos:write"]);
const VIDEOS_READ: Permission = SCOPES.permission("videos:read");
const VIDEOS_WRITE: Permission = SCOPES.permission("videos:write");
const FREE: Plan = Plan::from_static("free");
const PRO: Plan = Plan::from_static("pro");

fn vocabulary() -> Vocabulary {
    Vocabulary::new(
        SCOPES,
        Plans::new([FREE, PRO]).api_keys_on([PRO]),
        KeyPrefix::new("vid_").unwrap(),
    )
}

struct App {
    keys: KeyManager<MemoryKeyStore>,
    app: Router,
}

async fn app(
    layer: impl FnOnce(NouvelAuthLayer<MemoryKeyStore>) -> NouvelAuthLayer<MemoryKeyStore>,
) -> App {
    let store = MemoryKeyStore::new();
    let keys = KeyManager::new(store.clone()).vocabulary(vocabulary());
    let routes = RouteTable::new()
        .route(Method::GET, "/videos", VIDEOS_READ)
        .unwrap()
        .route(Method::POST, "/videos", VIDEOS_WRITE)
        .unwrap();
    let auth = layer(
        NouvelAuthLayer::new(store)
            .vocabulary(vocabulary())
            .routes(routes),
    );
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
    let App { keys, app } = app(|layer| layer).await;

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
        Some(r#"Bearer realm="nouvel", error="insufficient_scope", scope="videos:write""#)
    );

    // A Nouvel key is malformed here: the prefix is the application's.
    let nouvel_key = nouvel_auth::ApiKey::generate();
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
async fn permissions_of_another_vocabulary_are_refused_by_the_manager() {
    let App { keys, .. } = app(|layer| layer).await;
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
    let open = Vocabulary::new(SCOPES, Plans::any(), KeyPrefix::new("vid_").unwrap());
    let keys = KeyManager::new(store.clone()).vocabulary(open.clone());
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
        .layer(NouvelAuthLayer::new(store).vocabulary(open).routes(routes));
    let reply = send(&app, "GET", "/videos", Some(&common::bearer(&key.key))).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

/// Plain-text refusals in the application's own words; the rest as the default made them.
fn plain_401(rejection: &Rejection, problem: Response<Bytes>) -> Response<Bytes> {
    if rejection.status() != StatusCode::UNAUTHORIZED {
        return problem;
    }
    Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .header("content-type", "text/plain; charset=utf-8")
        .header("www-authenticate", r#"Bearer realm="videos""#)
        .body(Bytes::from(format!("Who are you? ({})", rejection.code())))
        .unwrap()
}

#[tokio::test]
async fn a_responder_answers_in_the_applications_words_and_the_rejection_stays_typed() {
    let App { keys, app } = app(|layer| layer.responder(plain_401)).await;
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
    let service = NouvelAuthLayer::new(MemoryKeyStore::new())
        .responder(plain_401)
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
