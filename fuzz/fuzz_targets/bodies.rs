//! Any bytes as the body of every route of the admin and settings routers that takes one:
//! a JSON or problem+json answer of the contract's, never a panic, never a 5xx.
#![no_main]

use std::sync::OnceLock;

use axum::{body::Body, http::request::Parts, Router};
use http::Request;
use libfuzzer_sys::fuzz_target;
use nouvel_auth::{
    admin::{self, AdminToken},
    nouvel,
    settings::{self, SignedInUser},
    KeyManager, KeySpec, MemoryKeyStore,
};
use tower::ServiceExt;

struct App {
    runtime: tokio::runtime::Runtime,
    router: Router,
    /// The routes taking a body, as (method, path).
    routes: Vec<(&'static str, String)>,
}

fn app() -> &'static App {
    static APP: OnceLock<App> = OnceLock::new();
    APP.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let keys = KeyManager::new(MemoryKeyStore::new());
        let (account, key) = runtime.block_on(async {
            let account = keys.create_account("Fuzz", nouvel::SCALE).await.unwrap();
            let key = keys.create_key(&account.id, KeySpec::new("k", [nouvel::GENERATE])).await.unwrap();
            (account.id.to_string(), key.info.id.to_string())
        });
        let user = SignedInUser::new(account.as_str(), "fuzzer");
        let session = move |_: &Parts| {
            let user = user.clone();
            async move { Ok(Some(user)) }
        };
        let router = Router::new()
            .nest("/admin", admin::router(keys.clone(), AdminToken::new("fuzz-admin-token-0123")))
            .nest("/settings", settings::router(keys, session));
        let routes = vec![
            ("POST", "/admin/accounts".to_owned()),
            ("PATCH", format!("/admin/accounts/{account}")),
            ("POST", format!("/admin/accounts/{account}/keys")),
            ("POST", format!("/admin/accounts/{account}/keys/{key}/rotate")),
            ("POST", "/settings/keys".to_owned()),
            ("POST", format!("/settings/keys/{key}/rotate")),
        ];
        App { runtime, router, routes }
    })
}

fuzz_target!(|data: &[u8]| {
    let app = app();
    let Some((&route, body)) = data.split_first() else {
        return;
    };
    let (method, path) = &app.routes[usize::from(route) % app.routes.len()];
    let request = Request::builder()
        .method(*method)
        .uri(path)
        .header("host", "fuzz.example")
        .header("origin", "http://fuzz.example")
        .header("authorization", "Bearer fuzz-admin-token-0123")
        .header("content-type", "application/json")
        .body(Body::from(body.to_vec()))
        .unwrap();
    let response = app.runtime.block_on(app.router.clone().oneshot(request)).unwrap();
    let status = response.status().as_u16();
    assert!(
        matches!(status, 200 | 201 | 400 | 402 | 409 | 413 | 422),
        "{method} {path}: {status}"
    );
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok());
    assert!(
        matches!(content_type, Some("application/json" | "application/problem+json")),
        "{content_type:?}"
    );
});
