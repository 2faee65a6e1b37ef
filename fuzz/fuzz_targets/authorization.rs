//! Any bytes as `Authorization` headers, through the whole layer: an answer of the
//! contract's, never a panic, never a 5xx, and never the presented bytes in the answer.
#![no_main]

use std::sync::OnceLock;

use axum::{body::Body, routing::get, Router};
use http::{HeaderValue, Request};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use nouvel_auth::{nouvel, KeyManager, KeySpec, MemoryKeyStore, NouvelAuthLayer};
use tower::ServiceExt;

struct App {
    runtime: tokio::runtime::Runtime,
    router: Router,
    key: String,
    /// The body of every 401, from requests made at the start: refusals are constant.
    refusals: Vec<Vec<u8>>,
}

impl App {
    fn call(&self, request: Request<Body>) -> (u16, Vec<u8>) {
        self.runtime.block_on(async {
            let response = self.router.clone().oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, body.to_vec())
        })
    }
}

fn app() -> &'static App {
    static APP: OnceLock<App> = OnceLock::new();
    APP.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let store = MemoryKeyStore::new();
        let keys = KeyManager::new(store.clone());
        let key = runtime.block_on(async {
            let account = keys.create_account("Fuzz", nouvel::SCALE).await.unwrap();
            keys.create_key(&account.id, KeySpec::new("k", [nouvel::PROJECTS_READ])).await.unwrap()
        });
        let router = Router::new()
            .route("/api/v1/projects", get(|| async { "ok" }))
            .layer(NouvelAuthLayer::new(store));
        let mut app = App { runtime, router, key: key.key.expose_secret().to_owned(), refusals: Vec::new() };
        let made_up = nouvel_auth::key::ApiKey::generate();
        let bad_checksum = format!("{}0", &made_up.expose_secret()[..made_up.expose_secret().len() - 1]);
        for value in [
            None,
            Some("Basic x".to_owned()),
            Some("Bearer nvl_short".to_owned()),
            Some("Bearer xyz_0123456789012345678901234567".to_owned()),
            Some(format!("Bearer nvl_{}", "!".repeat(28))),
            Some(format!("Bearer {bad_checksum}")),
            Some(format!("Bearer {}", made_up.expose_secret())),
        ] {
            let mut request = Request::get("/api/v1/projects");
            if let Some(value) = value {
                request = request.header("authorization", value);
            }
            let (status, body) = app.call(request.body(Body::empty()).unwrap());
            assert_eq!(status, 401);
            app.refusals.push(body);
        }
        app
    })
}

fuzz_target!(|data: &[u8]| {
    let app = app();
    // The input, split at 0xFF, is one or more header values; a leading 0xFE presents the
    // real key first, so inputs reach the checks past the lookup too.
    let (real, data) = match data.split_first() {
        Some((0xFE, rest)) => (true, rest),
        _ => (false, data),
    };
    let mut request = Request::get("/api/v1/projects");
    if real {
        request = request.header("authorization", format!("Bearer {}", app.key));
    }
    for value in data.split(|&b| b == 0xFF) {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            request = request.header("authorization", value);
        }
    }
    let (status, body) = app.call(request.body(Body::empty()).unwrap());
    assert!(matches!(status, 200 | 401 | 429), "status {status}");
    // A 401 is one of the constant refusals: nothing of the header is in it.
    if status == 401 {
        assert!(app.refusals.contains(&body), "{}", String::from_utf8_lossy(&body));
    }
});
