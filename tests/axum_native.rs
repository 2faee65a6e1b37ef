//! The axum pieces: the `AuthenticatedKey` extractor (required and optional), optional
//! routes, and route matching under `Router::nest`.

mod common;

use axum::{routing::get, Router};
use common::{send, Harness};
use nouvel_auth::nouvel;
use nouvel_auth::Profile;
use nouvel_auth::{AuthenticatedKey, RouteTable};

async fn greet(key: Option<AuthenticatedKey>) -> String {
    match key {
        Some(key) => format!("hello, {}", key.id),
        None => "hello, stranger".to_owned(),
    }
}

async fn whoami(key: AuthenticatedKey) -> String {
    key.id.to_string()
}

#[tokio::test]
async fn an_optional_route_serves_without_a_key_and_checks_one_that_comes() {
    let h = Harness::new().await;
    let routes = RouteTable::nouvel()
        .optional("/greeting")
        .unwrap()
        .optional("/whoami")
        .unwrap();
    let app = Router::new()
        .route("/greeting", get(greet))
        .route("/whoami", get(whoami))
        .layer(
            Profile::nouvel()
                .clock(h.clock.clone())
                .layer(h.store.clone())
                .routes(routes),
        );
    let key = h.key([nouvel::PUBLISH]).await;

    let anonymous = send(&app, "GET", "/greeting", None).await;
    assert_eq!(anonymous.status, 200);
    assert_eq!(anonymous.text, "hello, stranger");
    assert_eq!(anonymous.header("x-ratelimit-limit"), None);

    let known = send(&app, "GET", "/greeting", Some(&common::bearer(&key.key))).await;
    assert_eq!(known.status, 200);
    assert_eq!(known.text, format!("hello, {}", key.info.id));
    assert_eq!(known.header("x-ratelimit-remaining"), Some("59"));

    // A key that comes is checked: a bad one is refused, not ignored.
    send(&app, "GET", "/greeting", Some("Bearer nvl_made_up"))
        .await
        .assert_problem(401, "invalid_api_key");
    send(&app, "GET", "/greeting", Some("Basic abc"))
        .await
        .assert_problem(401, "invalid_authorization");
    let deleted = h.key([nouvel::PUBLISH]).await;
    h.keys
        .delete_key(&h.account, &deleted.info.id)
        .await
        .unwrap();
    send(
        &app,
        "GET",
        "/greeting",
        Some(&common::bearer(&deleted.key)),
    )
    .await
    .assert_problem(401, "invalid_api_key");

    // A handler that needs a key, on an optional route without one: 401, not 500.
    send(&app, "GET", "/whoami", None)
        .await
        .assert_problem(401, "missing_api_key");
}

#[tokio::test]
async fn a_handler_without_the_layer_answers_a_clear_500() {
    let app = Router::new()
        .route("/whoami", get(whoami))
        .route("/greeting", get(greet));
    for path in ["/whoami", "/greeting"] {
        let reply = send(&app, "GET", path, None).await;
        assert_eq!(reply.status, 500, "{path}: {}", reply.text);
        assert_eq!(reply.code(), "auth_layer_missing");
        assert_eq!(
            reply.header("content-type"),
            Some("application/problem+json")
        );
    }
}

#[tokio::test]
async fn under_nest_the_route_table_sees_the_path_the_client_sent() {
    let h = Harness::new().await;
    let routes = RouteTable::new()
        .route(http::Method::GET, "/v3/videos/{id}", nouvel::PROJECTS_READ)
        .unwrap();
    let api = Router::new().route("/videos/{id}", get(whoami)).layer(
        Profile::nouvel()
            .clock(h.clock.clone())
            .layer(h.store.clone())
            .routes(routes),
    );
    let app = Router::new().nest("/v3", api);
    let reader = h.key([nouvel::PROJECTS_READ]).await;
    let other = h.key([nouvel::PUBLISH]).await;

    let reply = send(
        &app,
        "GET",
        "/v3/videos/1",
        Some(&common::bearer(&reader.key)),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.text, reader.info.id.to_string());
    send(
        &app,
        "GET",
        "/v3/videos/1",
        Some(&common::bearer(&other.key)),
    )
    .await
    .assert_problem(403, "missing_permission");
}

#[tokio::test]
async fn the_extractor_gives_the_record_the_store_holds() {
    let h = Harness::new().await;
    let key = h.key([nouvel::GENERATE]).await;
    let app = Router::new()
        .route(
            "/api/v1/generate",
            axum::routing::post(|key: AuthenticatedKey| async move {
                format!("{} {} {}", key.id, key.account_id, key.name)
            }),
        )
        .layer(h.layer.clone());
    let reply = send(
        &app,
        "POST",
        "/api/v1/generate",
        Some(&common::bearer(&key.key)),
    )
    .await;
    assert_eq!(
        reply.text,
        format!("{} {} test key", key.info.id, h.account)
    );
}
