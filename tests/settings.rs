//! The settings router of the README, "Settings → API Keys for the signed-in
//! account", over HTTP: each route, the session, the CSRF rule, and what it refuses.

mod common;

use std::time::Duration;

use axum::{
    body::Body,
    http::{request::Parts, Request, StatusCode},
    response::IntoResponse,
    Router,
};
use common::{openapi::Document, Harness, Reply};
use nouvel_auth::{
    nouvel,
    settings::{self, SettingsRouter, SignedInUser},
};
use serde_json::{json, Value};
use tower::ServiceExt;

const HOST: &str = "app.example";
const ORIGIN: &str = "http://app.example";

/// The test's session: the `x-user` header names the account; `x-user: redirect` is the
/// application's own answer.
fn session(
    parts: &Parts,
) -> impl std::future::Future<Output = Result<Option<SignedInUser>, axum::response::Response>> {
    let user = parts
        .headers
        .get("x-user")
        .map(|v| v.to_str().unwrap().to_owned());
    async move {
        match user.as_deref() {
            Some("redirect") => {
                Err((StatusCode::SEE_OTHER, [("location", "/login")]).into_response())
            }
            Some(account) => Ok(Some(SignedInUser::new(account, "user_7"))),
            None => Ok(None),
        }
    }
}

struct Settings {
    h: Harness,
    app: Router,
    document: Document,
}

/// How a request is sent: as whom, and from which origin.
#[derive(Clone, Copy)]
struct As<'a> {
    user: Option<&'a str>,
    origin: Option<&'a str>,
    fetch_site: Option<&'a str>,
    authorization: Option<&'a str>,
}

impl<'a> As<'a> {
    fn user(account: &'a str) -> Self {
        Self {
            user: Some(account),
            origin: Some(ORIGIN),
            fetch_site: None,
            authorization: None,
        }
    }

    fn nobody() -> Self {
        Self {
            user: None,
            origin: Some(ORIGIN),
            fetch_site: None,
            authorization: None,
        }
    }
}

impl Settings {
    async fn new() -> Self {
        Self::with(|h| settings::router(h.keys.clone(), session)).await
    }

    /// The settings router `router` makes, mounted at `/settings/api-keys`.
    async fn with(router: impl FnOnce(&Harness) -> Router) -> Self {
        let h = Harness::with_layer(|l| l.usage_flush_interval(Duration::from_secs(3600))).await;
        let app = h.app.clone().nest("/settings/api-keys", router(&h));
        let fetched = send(
            &app,
            "GET",
            "/openapi.json",
            None,
            As::user(h.account.as_str()),
        )
        .await;
        assert_eq!(fetched.status, 200);
        let document = Document::new(fetched.body);
        Self { h, app, document }
    }

    /// The answer to a request, checked against the router's OpenAPI document.
    async fn call(&self, method: &str, path: &str, body: Option<Value>, who: As<'_>) -> Reply {
        let reply = send(&self.app, method, path, body, who).await;
        if who.user != Some("redirect") {
            // Keys, usage and account data: no cache on the way may keep any answer.
            assert_eq!(
                reply.header("cache-control"),
                Some("no-store"),
                "{method} {path}"
            );
            let path = path.split('?').next().unwrap_or_default();
            self.document
                .check(method, if path.is_empty() { "/" } else { path }, &reply);
        }
        reply
    }

    fn me(&self) -> As<'_> {
        As::user(self.h.account.as_str())
    }

    async fn create(&self, body: Value) -> Reply {
        self.call("POST", "/keys", Some(body), self.me()).await
    }

    async fn use_key(&self, method: &str, path: &str, key: &str) -> Reply {
        common::send(&self.app, method, path, Some(&format!("Bearer {key}"))).await
    }
}

async fn send(app: &Router, method: &str, path: &str, body: Option<Value>, who: As<'_>) -> Reply {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("/settings/api-keys{path}"))
        .header("host", HOST);
    for (name, value) in [
        ("x-user", who.user),
        ("origin", who.origin),
        ("sec-fetch-site", who.fetch_site),
        ("authorization", who.authorization),
    ] {
        if let Some(value) = value {
            request = request.header(name, value);
        }
    }
    let body = match body {
        Some(body) => {
            request = request.header("content-type", "application/json");
            Body::from(body.to_string())
        }
        None => Body::empty(),
    };
    Reply::read(
        app.clone()
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn the_account_and_its_keys_through_every_route() {
    let s = Settings::new().await;
    let account = s.call("GET", "/account", None, s.me()).await;
    assert_eq!(account.status, 200, "{}", account.text);
    assert_eq!(
        account.body,
        json!({"id": s.h.account.as_str(), "name": "Acme", "plan": "scale", "api_keys_allowed": true,
               "grantable_permissions": ["generate", "projects:read", "publish", "analytics:read", "copilot:chat"]})
    );

    let created = s
        .create(json!({"name": "CI", "permissions": ["generate", "projects:read"], "expiration": "30d", "environment": "staging"}))
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let key = created.body["key"].as_str().unwrap().to_owned();
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(created.body["environment"], "staging");
    assert_eq!(created.body["expires_at"], "2026-07-01T12:00:00Z");
    assert_eq!(
        s.use_key("POST", "/api/v1/generate", &key).await.status,
        200
    );
    s.use_key("POST", "/api/v1/publish", &key)
        .await
        .assert_problem(403, "missing_permission");

    let listed = s.call("GET", "/keys", None, s.me()).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["keys"].as_array().unwrap().len(), 1);
    assert_eq!(listed.body["keys"][0]["id"], id.as_str());
    assert!(
        listed.body["keys"][0].get("key").is_none(),
        "the plaintext is shown once"
    );
    assert!(!listed.text.contains(&key));
    let filtered = s
        .call("GET", "/keys?environment=production", None, s.me())
        .await;
    assert_eq!(filtered.body["keys"], json!([]));

    let read = s.call("GET", &format!("/keys/{id}"), None, s.me()).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.body["name"], "CI");

    let disabled = s
        .call("POST", &format!("/keys/{id}/disable"), None, s.me())
        .await;
    assert_eq!(disabled.body["status"], "disabled");
    s.use_key("POST", "/api/v1/generate", &key)
        .await
        .assert_problem(401, "disabled_api_key");
    let enabled = s
        .call("POST", &format!("/keys/{id}/enable"), None, s.me())
        .await;
    assert_eq!(enabled.body["status"], "active");
    assert_eq!(
        s.use_key("POST", "/api/v1/generate", &key).await.status,
        200
    );

    let rotated = s
        .call(
            "POST",
            &format!("/keys/{id}/rotate"),
            Some(json!({"grace_seconds": 0})),
            s.me(),
        )
        .await;
    assert_eq!(rotated.status, 201, "{}", rotated.text);
    let new_key = rotated.body["key"].as_str().unwrap().to_owned();
    s.use_key("POST", "/api/v1/generate", &key)
        .await
        .assert_problem(401, "expired_api_key");
    assert_eq!(
        s.use_key("POST", "/api/v1/generate", &new_key).await.status,
        200
    );
    s.call("POST", &format!("/keys/{id}/rotate"), None, s.me())
        .await
        .assert_problem(409, "already_rotated");

    let new_id = rotated.body["id"].as_str().unwrap();
    let deleted = s
        .call("DELETE", &format!("/keys/{new_id}"), None, s.me())
        .await;
    assert_eq!(deleted.status, 204);
    s.use_key("POST", "/api/v1/generate", &new_key)
        .await
        .assert_problem(401, "invalid_api_key");
}

#[tokio::test]
async fn nobody_signed_in_gets_401_and_the_application_may_answer_itself() {
    let s = Settings::new().await;
    let made = s
        .create(json!({"name": "k", "permissions": ["generate"]}))
        .await;
    let id = made.body["id"].as_str().unwrap();
    for (method, path) in [
        ("GET", "/account".to_owned()),
        ("GET", "/keys".to_owned()),
        ("POST", "/keys".to_owned()),
        ("GET", format!("/keys/{id}")),
        ("DELETE", format!("/keys/{id}")),
        ("POST", format!("/keys/{id}/rotate")),
        ("POST", format!("/keys/{id}/disable")),
        ("POST", format!("/keys/{id}/enable")),
        ("GET", "/openapi.json".to_owned()),
    ] {
        s.call(method, &path, None, As::nobody())
            .await
            .assert_problem(401, "not_signed_in");
    }
    let page = s.call("GET", "", None, As::nobody()).await;
    assert_eq!(page.status, 401);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page.text.contains("Sign in"));

    let redirect = s.call("GET", "/keys", None, As::user("redirect")).await;
    assert_eq!(redirect.status, 303);
    assert_eq!(redirect.header("location"), Some("/login"));
    // Nothing was changed by any of it.
    let read = s.call("GET", &format!("/keys/{id}"), None, s.me()).await;
    assert_eq!(read.body["status"], "active");
}

#[tokio::test]
async fn an_api_key_never_opens_the_settings() {
    let s = Settings::new().await;
    let made = s
        .create(json!({"name": "k", "permissions": ["generate"]}))
        .await;
    let key = made.body["key"].as_str().unwrap();
    let bearer = format!("Bearer {key}");
    let with_key = As {
        authorization: Some(&bearer),
        ..s.me()
    };
    for (method, path) in [("GET", "/keys"), ("GET", "/account"), ("POST", "/keys")] {
        s.call(
            method,
            path,
            Some(json!({"name": "x", "permissions": ["generate"]})),
            with_key,
        )
        .await
        .assert_problem(401, "not_signed_in");
    }
    assert_eq!(s.call("GET", "", None, with_key).await.status, 401);
    // Beside another `Authorization` header, in any case and spacing, well-formed or not.
    for presented in [key.to_owned(), format!("{key}x"), "nvl_".to_owned()] {
        for (scheme, other) in [
            ("Bearer ", "Basic dXNlcjpwYXNz"),
            ("bearer  ", "Bearer junk"),
        ] {
            let request = Request::get("/settings/api-keys/keys")
                .header("host", HOST)
                .header("x-user", s.h.account.as_str())
                .header("authorization", other)
                .header("authorization", format!("{scheme}{presented}"))
                .body(Body::empty())
                .unwrap();
            let reply = Reply::read(s.app.clone().oneshot(request).await.unwrap()).await;
            reply.assert_problem(401, "not_signed_in");
        }
    }
    let listed = s.call("GET", "/keys", None, s.me()).await;
    assert_eq!(listed.body["keys"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn another_accounts_key_is_not_found() {
    let s = Settings::new().await;
    let theirs =
        s.h.keys
            .create_account("Other", nouvel::SCALE)
            .await
            .unwrap();
    let made = s
        .create(json!({"name": "mine", "permissions": ["generate"]}))
        .await;
    let id = made.body["id"].as_str().unwrap();
    let them = As::user(theirs.id.as_str());
    for (method, path) in [
        ("GET", format!("/keys/{id}")),
        ("DELETE", format!("/keys/{id}")),
        ("POST", format!("/keys/{id}/rotate")),
        ("POST", format!("/keys/{id}/disable")),
        ("POST", format!("/keys/{id}/enable")),
        ("GET", "/keys/key_never_made".to_owned()),
    ] {
        s.call(method, &path, None, them)
            .await
            .assert_problem(404, "not_found");
    }
    assert_eq!(
        s.call("GET", "/keys", None, them).await.body["keys"],
        json!([])
    );
    let read = s.call("GET", &format!("/keys/{id}"), None, s.me()).await;
    assert_eq!(read.body["status"], "active", "untouched");
    // A session naming an account no store made.
    s.call("GET", "/keys", None, As::user("acc_gone"))
        .await
        .assert_problem(404, "not_found");
}

#[tokio::test]
async fn unsafe_requests_from_another_origin_are_refused_and_change_nothing() {
    let s = Settings::new().await;
    let made = s
        .create(json!({"name": "k", "permissions": ["generate"]}))
        .await;
    let id = made.body["id"].as_str().unwrap().to_owned();
    let key = made.body["key"].as_str().unwrap().to_owned();
    let me = s.me();
    let cross_site = [
        As { origin: None, ..me },
        As {
            origin: Some("http://evil.example"),
            ..me
        },
        As {
            origin: Some("https://app.example.evil"),
            ..me
        },
        As {
            origin: Some("null"),
            ..me
        },
        As {
            origin: None,
            fetch_site: Some("cross-site"),
            ..me
        },
        As {
            origin: None,
            fetch_site: Some("same-site"),
            ..me
        },
        As {
            origin: Some("http://evil.example"),
            fetch_site: Some("same-origin"),
            ..me
        },
    ];
    for who in cross_site {
        for (method, path, body) in [
            (
                "POST",
                "/keys".to_owned(),
                Some(json!({"name": "x", "permissions": ["generate"]})),
            ),
            ("DELETE", format!("/keys/{id}"), None),
            ("POST", format!("/keys/{id}/rotate"), None),
            ("POST", format!("/keys/{id}/disable"), None),
        ] {
            s.call(method, &path, body, who)
                .await
                .assert_problem(403, "csrf_rejected");
        }
    }
    let listed = s
        .call("GET", "/keys", None, As { origin: None, ..me })
        .await;
    assert_eq!(listed.status, 200, "reads need no Origin");
    let keys = listed.body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["status"], "active");
    assert_eq!(keys[0]["expires_at"], made.body["expires_at"]);
    assert_eq!(
        s.use_key("POST", "/api/v1/generate", &key).await.status,
        200
    );

    // Same origin by either scheme, or by Sec-Fetch-Site alone.
    for who in [
        As {
            origin: Some("https://app.example"),
            ..me
        },
        As {
            origin: None,
            fetch_site: Some("same-origin"),
            ..me
        },
    ] {
        let disabled = s
            .call("POST", &format!("/keys/{id}/disable"), None, who)
            .await;
        assert_eq!(disabled.status, 200, "{}", disabled.text);
    }
}

#[tokio::test]
async fn it_never_changes_a_plan_nor_takes_a_limit_and_refuses_keys_on_starter() {
    let s = Settings::new().await;
    s.call(
        "PATCH",
        "/account",
        Some(json!({"plan": "business"})),
        s.me(),
    )
    .await
    .assert_problem(405, "method_not_allowed");
    let limited = s
        .create(json!({"name": "k", "permissions": ["generate"], "rate_limit": {"requests": 1000, "window_seconds": 60}}))
        .await;
    limited.assert_problem(422, "invalid_request");
    assert_eq!(
        limited.body["errors"],
        json!([{"field": "rate_limit", "reason": "unknown field"}])
    );
    let quota = json!([{"requests": 1_000_000, "period": "month"}]);
    let listed = s
        .create(json!({"name": "k", "permissions": ["generate"], "rate_limits": quota}))
        .await;
    listed.assert_problem(422, "invalid_request");
    assert_eq!(
        listed.body["errors"],
        json!([{"field": "rate_limits", "reason": "unknown field"}])
    );
    let invalid = s
        .create(json!({"name": "", "permissions": ["nope"], "expiration": "2d"}))
        .await;
    let fields: Vec<&Value> = invalid.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["field"])
        .collect();
    assert_eq!(fields, ["name", "permissions", "expiration"]);
    s.call("POST", "/keys", None, s.me())
        .await
        .assert_problem(422, "invalid_request");
    s.call("GET", "/nowhere", None, s.me())
        .await
        .assert_problem(404, "not_found");
    s.call("GET", "/keys/", None, s.me())
        .await
        .assert_problem(404, "not_found");

    s.h.keys
        .set_plan(&s.h.account, nouvel::STARTER)
        .await
        .unwrap();
    let account = s.call("GET", "/account", None, s.me()).await;
    assert_eq!(account.body["api_keys_allowed"], false);
    assert_eq!(account.body["plan"], "starter");
    let refused = s
        .create(json!({"name": "k", "permissions": ["generate"]}))
        .await;
    refused.assert_problem(402, "plan_required");
    assert_eq!(refused.body["required_plans"], json!(["scale", "business"]));
    assert_eq!(
        s.call("GET", "/keys", None, s.me()).await.body["keys"],
        json!([])
    );
}

#[tokio::test]
async fn a_user_limits_a_key_to_networks_on_create_and_rotate() {
    let s = Settings::new().await;
    let made = s
        .create(json!({"name": "Office", "permissions": ["generate"], "allowed_networks": ["203.0.113.0/24"]}))
        .await;
    assert_eq!(made.status, 201, "{}", made.text);
    assert_eq!(made.body["allowed_networks"], json!(["203.0.113.0/24"]));
    let id = made.body["id"].as_str().unwrap();
    let bad = s
        .create(json!({"name": "Bad", "permissions": ["generate"], "allowed_networks": ["203.0.113.1/24"]}))
        .await;
    bad.assert_problem(422, "invalid_request");
    assert_eq!(bad.body["errors"][0]["field"], "allowed_networks");
    let rotated = s
        .call(
            "POST",
            &format!("/keys/{id}/rotate"),
            Some(json!({"allowed_networks": ["2001:db8::/48"]})),
            s.me(),
        )
        .await;
    assert_eq!(rotated.status, 201, "{}", rotated.text);
    assert_eq!(rotated.body["allowed_networks"], json!(["2001:db8::/48"]));
}

#[tokio::test]
async fn the_page_and_its_assets() {
    let s = Settings::new().await;
    let page = s.call("GET", "", None, s.me()).await;
    assert_eq!(page.status, 200);
    for (name, value) in [
        ("content-type", "text/html; charset=utf-8"),
        ("cache-control", "no-store"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
    ] {
        assert_eq!(page.header(name), Some(value), "{name}");
    }
    let policy = page.header("content-security-policy").unwrap();
    for directive in [
        "default-src 'self'",
        "frame-ancestors 'none'",
        "script-src 'self'",
    ] {
        assert!(policy.contains(directive), "{policy}");
    }
    assert!(!policy.contains("unsafe-inline"));
    assert!(page
        .text
        .contains(r#"<script src="/settings/api-keys/assets/settings.js" defer></script>"#));
    assert!(!page.text.contains("<script>"), "no inline script");
    assert!(!page.text.contains("style="), "no inline style");
    for permission in nouvel::PERMISSIONS.names() {
        assert!(
            page.text.contains(&format!(r#"value="{permission}""#)),
            "{permission}"
        );
    }
    assert!(page.text.contains("scale or business"));
    for (path, content_type) in [
        ("/assets/settings.js", "text/javascript; charset=utf-8"),
        ("/assets/settings.css", "text/css; charset=utf-8"),
    ] {
        let asset = s.call("GET", path, None, As::nobody()).await;
        assert_eq!(asset.status, 200);
        assert_eq!(asset.header("content-type"), Some(content_type));
        assert_eq!(asset.header("x-content-type-options"), Some("nosniff"));
    }
}

#[tokio::test]
async fn every_route_answers_as_its_openapi_document_says() {
    let s = Settings::new().await;
    let me = s.me();
    for path in [
        "",
        "/assets/settings.js",
        "/assets/settings.css",
        "/openapi.json",
        "/account",
        "/keys",
    ] {
        assert_eq!(s.call("GET", path, None, me).await.status, 200, "{path}");
    }
    let made = s
        .create(json!({"name": "k", "permissions": ["generate"]}))
        .await;
    let id = made.body["id"].as_str().unwrap();
    for (method, path, status) in [
        ("GET", format!("/keys/{id}"), 200),
        ("GET", format!("/keys/{id}/usage"), 200),
        ("GET", "/keys/key_nope/usage".to_owned(), 404),
        ("POST", format!("/keys/{id}/disable"), 200),
        ("POST", format!("/keys/{id}/enable"), 200),
        ("POST", format!("/keys/{id}/rotate"), 201),
        ("DELETE", format!("/keys/{id}"), 204),
        ("GET", "/audit".to_owned(), 200),
    ] {
        assert_eq!(
            s.call(method, &path, None, me).await.status,
            status,
            "{method} {path}"
        );
    }
    s.document.assert_every_operation_seen();
}

#[tokio::test]
#[should_panic(expected = "does not match the document")]
async fn an_answer_unlike_the_document_fails_the_check() {
    let s = Settings::new().await;
    let mut reply = s.call("GET", "/keys", None, s.me()).await;
    reply.body = json!({"keys": [{"id": "key_1"}]});
    s.document.check("GET", "/keys", &reply);
}

#[tokio::test]
async fn the_audit_log_names_the_signed_in_user() {
    let s = Settings::new().await;
    let made = s
        .create(json!({"name": "k", "permissions": ["generate"]}))
        .await;
    let id = made.body["id"].as_str().unwrap();
    s.call("POST", &format!("/keys/{id}/disable"), None, s.me())
        .await;
    let log = s.call("GET", "/audit", None, s.me()).await;
    assert_eq!(log.status, 200, "{}", log.text);
    let entries = log.body["entries"].as_array().unwrap();
    assert_eq!(entries[0]["action"], "key.disabled");
    assert_eq!(entries[0]["actor"], json!({"kind": "user", "id": "user_7"}));
    assert_eq!(entries[1]["action"], "key.created");
    assert_eq!(entries[1]["key_id"], id);
    // The account was made by the application's own code: the system.
    assert_eq!(entries[2]["action"], "account.created");
    assert_eq!(entries[2]["actor"]["kind"], "system");
    s.call("GET", "/audit", None, As::nobody())
        .await
        .assert_problem(401, "not_signed_in");
}

#[tokio::test]
async fn the_application_dresses_the_page_and_says_what_a_user_may_grant() {
    let s = Settings::with(|h| {
        SettingsRouter::new(h.keys.clone(), session)
            .grantable(|_user, account| {
                let all = nouvel::PERMISSIONS.all();
                if account.plan == nouvel::BUSINESS {
                    all
                } else {
                    all.without(nouvel::PUBLISH)
                }
            })
            .back_link("/dashboard", "Back to <Nouvel>")
            .sign_out("/sign-out")
            .build()
    })
    .await;
    let page = s.call("GET", "", None, s.me()).await;
    assert_eq!(page.status, 200);
    assert!(
        page.text.contains("<title>API Keys · Nouvel</title>"),
        "{}",
        page.text
    );
    assert!(page
        .text
        .contains(r#"<a href="/dashboard" class="back">Back to &lt;Nouvel&gt;</a>"#));
    assert!(page
        .text
        .contains(r#"<form method="post" action="/sign-out""#));

    let account = s.call("GET", "/account", None, s.me()).await;
    assert_eq!(
        account.body["grantable_permissions"],
        json!([
            "generate",
            "projects:read",
            "analytics:read",
            "copilot:chat"
        ])
    );

    let withheld = s
        .create(json!({"name": " ", "permissions": ["generate", "publish"]}))
        .await;
    withheld.assert_problem(422, "invalid_request");
    assert_eq!(
        withheld.body["errors"],
        json!([
            {"field": "name", "reason": "must not be empty"},
            {"field": "permissions", "reason": "not yours to grant: publish"},
        ])
    );
    let listed = s.call("GET", "/keys", None, s.me()).await;
    assert_eq!(listed.body["keys"], json!([]), "nothing was made");
    let made = s
        .create(json!({"name": "Reports", "permissions": ["generate"]}))
        .await;
    assert_eq!(made.status, 201);

    // On the Business plan, publishing is the user's to grant.
    s.h.keys
        .set_plan(&s.h.account, nouvel::BUSINESS)
        .await
        .unwrap();
    let account = s.call("GET", "/account", None, s.me()).await;
    assert_eq!(
        account.body["grantable_permissions"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    let publishing = s
        .create(json!({"name": "Publisher", "permissions": ["publish"]}))
        .await;
    assert_eq!(publishing.status, 201);
}

#[tokio::test]
async fn without_the_applications_links_the_page_has_none() {
    let s = Settings::new().await;
    let page = s.call("GET", "", None, s.me()).await;
    assert!(page.text.contains("<title>API Keys · Nouvel</title>"));
    assert!(!page.text.contains("<nav"));
    let account = s.call("GET", "/account", None, s.me()).await;
    assert_eq!(
        account.body["grantable_permissions"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
}

#[tokio::test]
async fn a_rotation_narrows_a_key_to_the_permissions_it_keeps() {
    let s = Settings::new().await;
    let made = s
        .create(json!({"name": "Wide", "permissions": ["generate", "projects:read", "publish"]}))
        .await;
    let id = made.body["id"].as_str().unwrap();
    let rotate = format!("/keys/{id}/rotate");
    for (body, reason) in [
        (
            json!({"permissions": []}),
            "at least one permission is required",
        ),
        (
            json!({"permissions": ["projects:read", "analytics:read"]}),
            "not held by the old key: analytics:read",
        ),
        (
            json!({"permissions": "publish"}),
            "must be an array of permissions",
        ),
    ] {
        let refused = s.call("POST", &rotate, Some(body), s.me()).await;
        refused.assert_problem(422, "invalid_request");
        assert_eq!(
            refused.body["errors"],
            json!([{"field": "permissions", "reason": reason}])
        );
    }
    let read = s.call("GET", &format!("/keys/{id}"), None, s.me()).await;
    assert_eq!(read.body["replaced_by"], Value::Null, "nothing was rotated");

    let narrowed = s
        .call(
            "POST",
            &rotate,
            Some(json!({"permissions": ["projects:read"], "grace_seconds": 0})),
            s.me(),
        )
        .await;
    assert_eq!(narrowed.status, 201, "{}", narrowed.text);
    assert_eq!(narrowed.body["permissions"], json!(["projects:read"]));
    let key = narrowed.body["key"].as_str().unwrap();
    assert_eq!(s.use_key("GET", "/api/v1/projects", key).await.status, 200);
    let refused = s.use_key("POST", "/api/v1/generate", key).await;
    refused.assert_problem(403, "missing_permission");
}

#[tokio::test]
async fn usage_by_hour_and_by_day_with_every_bucket_as_json_or_csv() {
    let s = Settings::new().await;
    let made = s
        .create(json!({"name": "Watched", "permissions": ["projects:read"]}))
        .await;
    let key = made.body["key"].as_str().unwrap().to_owned();
    let usage = format!("/keys/{}/usage", made.body["id"].as_str().unwrap());
    // T0 is 12:00 UTC: two requests at 12:00, one refused with 403 at 14:30.
    for _ in 0..2 {
        assert_eq!(s.use_key("GET", "/api/v1/projects", &key).await.status, 200);
    }
    s.h.clock.advance(Duration::from_secs(2 * 3_600 + 1_800));
    s.use_key("POST", "/api/v1/generate", &key)
        .await
        .assert_problem(403, "missing_permission");
    s.h.layer.flush_usage().await.unwrap();

    // By default, the 24 hours ending with the current one's end (15:00).
    let hours = s.call("GET", &usage, None, s.me()).await;
    assert_eq!(hours.status, 200, "{}", hours.text);
    assert_eq!(hours.body["granularity"], "hour");
    assert_eq!(hours.body["from"], "2026-05-31T15:00:00Z");
    assert_eq!(hours.body["to"], "2026-06-01T15:00:00Z");
    let buckets = hours.body["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 24, "zeros included");
    assert_eq!(
        buckets[21],
        json!({"start": "2026-06-01T12:00:00Z", "admitted": 2, "rejected": {
            "plan_required": 0, "missing_permission": 0, "route_not_allowed": 0, "rate_limited": 0}})
    );
    assert_eq!(buckets[22]["admitted"], 0);
    assert_eq!(buckets[23]["rejected"]["missing_permission"], 1);

    // A range, rounded down to the buckets' starts; by day.
    let range = s
        .call(
            "GET",
            &format!("{usage}?granularity=hour&from=2026-06-01T12:59:59Z&to=2026-06-01T14:10:00Z"),
            None,
            s.me(),
        )
        .await;
    assert_eq!(range.body["from"], "2026-06-01T12:00:00Z");
    assert_eq!(range.body["buckets"].as_array().unwrap().len(), 2);
    let days = s
        .call("GET", &format!("{usage}?granularity=day"), None, s.me())
        .await;
    let days = days.body["buckets"].as_array().unwrap().clone();
    assert_eq!(days.len(), 30);
    assert_eq!(days[29]["start"], "2026-06-01T00:00:00Z");
    assert_eq!(days[29]["admitted"], 2);
    assert_eq!(days[29]["rejected"]["missing_permission"], 1);

    // The same as CSV.
    let csv = send(&s.app, "GET", &usage, None, s.me()).await;
    assert_eq!(csv.status, 200);
    let csv = {
        let mut request = Request::get(format!("/settings/api-keys{usage}"))
            .header("host", HOST)
            .header("x-user", s.h.account.as_str())
            .header("accept", "text/csv")
            .body(Body::empty())
            .unwrap();
        request
            .headers_mut()
            .insert("origin", ORIGIN.parse().unwrap());
        Reply::read(s.app.clone().oneshot(request).await.unwrap()).await
    };
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    let lines: Vec<&str> = csv.text.lines().collect();
    assert_eq!(lines.len(), 25);
    assert_eq!(
        lines[0],
        "start,admitted,plan_required,missing_permission,route_not_allowed,rate_limited"
    );
    assert_eq!(lines[22], "2026-06-01T12:00:00Z,2,0,0,0,0");
    assert_eq!(lines[24], "2026-06-01T14:00:00Z,0,0,1,0,0");

    // What cannot be answered: 422 on the field, every one at once.
    for (query, fields) in [
        (
            "granularity=week&from=yesterday",
            json!(["granularity", "from"]),
        ),
        (
            "from=2026-06-01T12:00:00Z&to=2026-06-01T12:00:00Z",
            json!(["from"]),
        ),
        ("from=2026-01-01T00:00:00Z", json!(["from"])),
        ("granularity=day&from=2025-01-01T00:00:00Z", json!(["from"])),
    ] {
        let refused = s
            .call("GET", &format!("{usage}?{query}"), None, s.me())
            .await;
        refused.assert_problem(422, "invalid_request");
        let named: Vec<&str> = refused.body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(json!(named), fields, "{query}");
    }
}
