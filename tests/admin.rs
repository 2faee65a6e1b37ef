//! The admin API of the README, over HTTP: every endpoint, success and errors,
//! and a key's whole life.

mod common;

use std::time::Duration;

use axum::{body::Body, http::Request, Router};
use common::{openapi::Document, Harness, Reply};
use nouvel_auth::{
    admin::{self, AdminToken},
    Profile,
};
use serde_json::{json, Value};
use tower::ServiceExt;

const TOKEN: &str = "test-admin-token";

struct Admin {
    h: Harness,
    app: Router,
    document: Document,
}

impl Admin {
    async fn new() -> Self {
        Self::with_profile(|profile| profile).await
    }

    async fn with_profile(profile: impl FnOnce(Profile) -> Profile) -> Self {
        let h = Harness::with(profile, |l| {
            l.usage_flush_interval(Duration::from_secs(3600))
        })
        .await;
        let app = h.app.clone().nest(
            "/admin",
            admin::router(h.keys.clone(), AdminToken::new(TOKEN)),
        );
        let fetched = common::send(
            &app,
            "GET",
            "/admin/openapi.json",
            Some(&format!("Bearer {TOKEN}")),
        )
        .await;
        assert_eq!(fetched.status, 200);
        let document = Document::new(fetched.body);
        Self { h, app, document }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        token: Option<&str>,
    ) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("/admin{path}"));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_owned()));
        let reply = Reply::read(
            self.app
                .clone()
                .oneshot(request.body(body).unwrap())
                .await
                .unwrap(),
        )
        .await;
        // Every answer is one the router's OpenAPI document describes, and no cache keeps.
        assert_eq!(
            reply.header("cache-control"),
            Some("no-store"),
            "{method} {path}"
        );
        let path = path.split('?').next().unwrap_or_default();
        self.document.check(method, path, &reply);
        reply
    }

    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        self.call(
            method,
            path,
            body.map(|b| b.to_string()).as_deref(),
            Some(TOKEN),
        )
        .await
    }

    async fn account(&self, plan: &str) -> String {
        let reply = self
            .send(
                "POST",
                "/accounts",
                Some(json!({"name": "Acme", "plan": plan})),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        reply.body["id"].as_str().unwrap().to_owned()
    }

    async fn key(&self, account: &str, body: Value) -> Reply {
        self.send("POST", &format!("/accounts/{account}/keys"), Some(body))
            .await
    }

    async fn use_key(&self, method: &str, path: &str, key: &str) -> Reply {
        common::send(&self.app, method, path, Some(&format!("Bearer {key}"))).await
    }
}

#[track_caller]
fn assert_invalid(reply: &Reply, field: &str, reason_contains: &str) {
    reply.assert_problem(422, "invalid_request");
    let errors = reply.body["errors"].as_array().expect("errors");
    assert!(
        errors.iter().any(|e| e["field"] == field && e["reason"].as_str().unwrap().contains(reason_contains)),
        "no error on {field} with '{reason_contains}': {}",
        reply.text
    );
}

#[tokio::test]
async fn every_route_needs_the_admin_token() {
    let a = Admin::new().await;
    let account = a.account("scale").await;
    let api_key = a
        .key(&account, json!({"name": "k", "permissions": ["generate"]}))
        .await;
    let api_key = api_key.body["key"].as_str().unwrap().to_owned();
    let routes = [
        ("POST", "/accounts".to_owned()),
        ("GET", format!("/accounts/{account}")),
        ("PATCH", format!("/accounts/{account}")),
        ("POST", format!("/accounts/{account}/keys")),
        ("GET", format!("/accounts/{account}/keys")),
        ("GET", format!("/accounts/{account}/keys/key_x")),
        ("DELETE", format!("/accounts/{account}/keys/key_x")),
        ("POST", format!("/accounts/{account}/keys/key_x/rotate")),
    ];
    for (method, path) in routes {
        for token in [None, Some("wrong"), Some(api_key.as_str()), Some("")] {
            let reply = a.call(method, &path, Some("{}"), token).await;
            reply.assert_problem(401, "admin_unauthorized");
            assert_eq!(
                reply.header("www-authenticate"),
                Some(r#"Bearer realm="admin""#)
            );
        }
    }
}

#[tokio::test]
async fn accounts_are_created_read_and_changed() {
    let a = Admin::new().await;
    let created = a
        .send(
            "POST",
            "/accounts",
            Some(json!({"name": "  Acme  ", "plan": "growth"})),
        )
        .await;
    assert_eq!(created.status, 201);
    assert_eq!(created.body["name"], "Acme");
    assert_eq!(created.body["plan"], "growth");
    assert_eq!(created.body["created_at"], "2026-06-01T12:00:00Z");
    let id = created.body["id"].as_str().unwrap();

    let read = a.send("GET", &format!("/accounts/{id}"), None).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.body, created.body);

    let changed = a
        .send(
            "PATCH",
            &format!("/accounts/{id}"),
            Some(json!({"plan": "business"})),
        )
        .await;
    assert_eq!(changed.status, 200);
    assert_eq!(changed.body["plan"], "business");
    assert_eq!(
        a.send("GET", &format!("/accounts/{id}"), None).await.body["plan"],
        "business"
    );
}

#[tokio::test]
async fn account_errors() {
    let a = Admin::new().await;
    assert_invalid(
        &a.send(
            "POST",
            "/accounts",
            Some(json!({"name": "Acme", "plan": "gold"})),
        )
        .await,
        "plan",
        "unknown plan 'gold'",
    );
    assert_invalid(
        &a.send("POST", "/accounts", Some(json!({"plan": "scale"})))
            .await,
        "name",
        "required",
    );
    assert_invalid(
        &a.send(
            "POST",
            "/accounts",
            Some(json!({"name": "   ", "plan": "scale"})),
        )
        .await,
        "name",
        "empty",
    );
    assert_invalid(
        &a.send(
            "POST",
            "/accounts",
            Some(json!({"name": "x".repeat(101), "plan": "scale"})),
        )
        .await,
        "name",
        "100",
    );
    assert_invalid(
        &a.send("POST", "/accounts", Some(json!([1]))).await,
        "body",
        "object",
    );
    a.call("POST", "/accounts", Some("{not json"), Some(TOKEN))
        .await
        .assert_problem(400, "malformed_json");

    a.send("GET", "/accounts/acc_nope", None)
        .await
        .assert_problem(404, "not_found");
    // 404 comes before the body's errors.
    a.call(
        "PATCH",
        "/accounts/acc_nope",
        Some("{not json"),
        Some(TOKEN),
    )
    .await
    .assert_problem(404, "not_found");
    let id = a.account("scale").await;
    assert_invalid(
        &a.send(
            "PATCH",
            &format!("/accounts/{id}"),
            Some(json!({"plan": 3})),
        )
        .await,
        "plan",
        "string",
    );
    a.call("PATCH", &format!("/accounts/{id}"), Some("]"), Some(TOKEN))
        .await
        .assert_problem(400, "malformed_json");
}

#[tokio::test]
async fn keys_are_created_with_every_expiration_option() {
    let a = Admin::new().await;
    let account = a.account("scale").await;
    for (expiration, expires_at) in [
        (Some("7d"), json!("2026-06-08T12:00:00Z")),
        (Some("30d"), json!("2026-07-01T12:00:00Z")),
        (Some("90d"), json!("2026-08-30T12:00:00Z")),
        (None, json!("2026-08-30T12:00:00Z")),
        (Some("1y"), json!("2027-06-01T12:00:00Z")),
        (Some("never"), Value::Null),
        (
            Some("2026-12-24T18:00:00+01:00"),
            json!("2026-12-24T17:00:00Z"),
        ),
    ] {
        let mut body = json!({"name": "Production Server", "permissions": ["generate", "projects:read", "generate"]});
        if let Some(expiration) = expiration {
            body["expiration"] = json!(expiration);
        }
        let reply = a.key(&account, body).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        assert_eq!(reply.body["expires_at"], expires_at, "{expiration:?}");
        assert_eq!(
            reply.body["permissions"],
            json!(["generate", "projects:read"])
        );
        assert_eq!(reply.body["name"], "Production Server");
        assert_eq!(reply.body["status"], "active");
        assert_eq!(reply.body["last_used_at"], Value::Null);
        assert_eq!(reply.body["created_at"], "2026-06-01T12:00:00Z");
        let key = reply.body["key"].as_str().unwrap();
        assert_eq!(reply.body["prefix"], &key[..8]);
        assert_eq!(
            reply.body["usage"],
            json!({"admitted": 0, "rejected": {"plan_required": 0, "missing_permission": 0, "route_not_allowed": 0, "rate_limited": 0}, "last_request_at": null})
        );
        assert_eq!(a.use_key("POST", "/api/v1/generate", key).await.status, 200);
    }
}

#[tokio::test]
async fn key_errors_name_the_field_and_make_nothing() {
    let a = Admin::new().await;
    let account = a.account("scale").await;
    let cases = [
        (
            json!({"name": "k", "permissions": ["generate", "foo"]}),
            "permissions",
            "unknown permission 'foo'",
        ),
        (
            json!({"name": "k", "permissions": []}),
            "permissions",
            "at least one",
        ),
        (json!({"name": "k"}), "permissions", "required"),
        (
            json!({"name": "k", "permissions": "generate"}),
            "permissions",
            "array",
        ),
        (
            json!({"name": "k", "permissions": [7]}),
            "permissions",
            "string",
        ),
        (
            json!({"name": "", "permissions": ["generate"]}),
            "name",
            "empty",
        ),
        (
            json!({"name": "x".repeat(101), "permissions": ["generate"]}),
            "name",
            "100",
        ),
        (json!({"permissions": ["generate"]}), "name", "required"),
        (
            json!({"name": "k", "permissions": ["generate"], "expiration": "2w"}),
            "expiration",
            "unknown expiration '2w'",
        ),
        (
            json!({"name": "k", "permissions": ["generate"], "expiration": "2020-01-01T00:00:00Z"}),
            "expiration",
            "future",
        ),
    ];
    for (body, field, reason) in cases {
        assert_invalid(&a.key(&account, body).await, field, reason);
    }
    // Several errors at once.
    let both = a
        .key(&account, json!({"name": 5, "permissions": ["nope"]}))
        .await;
    assert_eq!(
        both.body["errors"].as_array().unwrap().len(),
        2,
        "{}",
        both.text
    );
    a.call(
        "POST",
        &format!("/accounts/{account}/keys"),
        Some("{\"name\":"),
        Some(TOKEN),
    )
    .await
    .assert_problem(400, "malformed_json");
    a.key(
        "acc_nope",
        json!({"name": "k", "permissions": ["generate"]}),
    )
    .await
    .assert_problem(404, "not_found");
    assert_eq!(
        a.send("GET", &format!("/accounts/{account}/keys"), None)
            .await
            .body["keys"],
        json!([])
    );
}

#[tokio::test]
async fn starter_and_growth_accounts_cannot_make_or_rotate_keys() {
    let a = Admin::new().await;
    for plan in ["starter", "growth"] {
        let account = a.account(plan).await;
        let reply = a
            .key(&account, json!({"name": "k", "permissions": ["generate"]}))
            .await;
        reply.assert_problem(402, "plan_required");
        assert_eq!(reply.body["plan"], plan);
        assert_eq!(reply.body["required_plans"], json!(["scale", "business"]));
        // 422 comes before 402.
        assert_invalid(
            &a.key(&account, json!({"name": "", "permissions": ["generate"]}))
                .await,
            "name",
            "empty",
        );
        assert_eq!(
            a.send("GET", &format!("/accounts/{account}/keys"), None)
                .await
                .body["keys"],
            json!([])
        );
    }
    let account = a.account("scale").await;
    let key = a
        .key(&account, json!({"name": "k", "permissions": ["generate"]}))
        .await;
    let key_id = key.body["id"].as_str().unwrap();
    a.send(
        "PATCH",
        &format!("/accounts/{account}"),
        Some(json!({"plan": "growth"})),
    )
    .await;
    let rotate = a
        .send(
            "POST",
            &format!("/accounts/{account}/keys/{key_id}/rotate"),
            None,
        )
        .await;
    rotate.assert_problem(402, "plan_required");
    // The failed rotation left the old key as it was, and made no new one.
    let listed = a
        .send("GET", &format!("/accounts/{account}/keys"), None)
        .await;
    assert_eq!(listed.body["keys"].as_array().unwrap().len(), 1);
    assert_eq!(listed.body["keys"][0]["expires_at"], key.body["expires_at"]);
}

#[tokio::test]
async fn keys_are_listed_newest_first_read_and_deleted() {
    let a = Admin::new().await;
    let account = a.account("scale").await;
    let other = a.account("scale").await;
    let first = a
        .key(
            &account,
            json!({"name": "first", "permissions": ["publish"]}),
        )
        .await;
    a.h.advance(Duration::from_secs(60));
    let second = a
        .key(
            &account,
            json!({"name": "second", "permissions": ["analytics:read"], "expiration": "7d"}),
        )
        .await;
    let listed = a
        .send("GET", &format!("/accounts/{account}/keys"), None)
        .await;
    assert_eq!(listed.status, 200);
    let keys = listed.body["keys"].as_array().unwrap();
    assert_eq!(
        keys.iter().map(|k| k["name"].clone()).collect::<Vec<_>>(),
        [json!("second"), json!("first")]
    );
    for (listed, created) in keys.iter().zip([&second, &first]) {
        let mut expected = created.body.clone();
        expected.as_object_mut().unwrap().remove("key");
        assert_eq!(listed, &expected);
        // Never the secret.
        assert!(!listed
            .to_string()
            .contains(created.body["key"].as_str().unwrap()));
    }
    let first_id = first.body["id"].as_str().unwrap();
    let read = a
        .send("GET", &format!("/accounts/{account}/keys/{first_id}"), None)
        .await;
    assert_eq!(read.body, keys[1]);
    // A key is found only under its own account.
    a.send("GET", &format!("/accounts/{other}/keys/{first_id}"), None)
        .await
        .assert_problem(404, "not_found");
    a.send(
        "DELETE",
        &format!("/accounts/{other}/keys/{first_id}"),
        None,
    )
    .await
    .assert_problem(404, "not_found");
    a.send("GET", &format!("/accounts/{account}/keys/key_nope"), None)
        .await
        .assert_problem(404, "not_found");
    a.send("GET", "/accounts/acc_nope/keys", None)
        .await
        .assert_problem(404, "not_found");

    let deleted = a
        .send(
            "DELETE",
            &format!("/accounts/{account}/keys/{first_id}"),
            None,
        )
        .await;
    assert_eq!(deleted.status, 204);
    assert_eq!(deleted.text, "");
    a.send(
        "DELETE",
        &format!("/accounts/{account}/keys/{first_id}"),
        None,
    )
    .await
    .assert_problem(404, "not_found");
    a.send("GET", &format!("/accounts/{account}/keys/{first_id}"), None)
        .await
        .assert_problem(404, "not_found");
    let listed = a
        .send("GET", &format!("/accounts/{account}/keys"), None)
        .await;
    assert_eq!(listed.body["keys"].as_array().unwrap().len(), 1);
    let key = first.body["key"].as_str().unwrap();
    a.use_key("POST", "/api/v1/publish", key)
        .await
        .assert_problem(401, "invalid_api_key");
}

#[tokio::test]
async fn listed_status_turns_expired() {
    let a = Admin::new().await;
    let account = a.account("scale").await;
    let key = a
        .key(
            &account,
            json!({"name": "k", "permissions": ["publish"], "expiration": "7d"}),
        )
        .await;
    a.h.advance(Duration::from_secs(7 * 86_400));
    let id = key.body["id"].as_str().unwrap();
    assert_eq!(
        a.send("GET", &format!("/accounts/{account}/keys/{id}"), None)
            .await
            .body["status"],
        "expired"
    );
}

#[tokio::test]
async fn rotation_errors() {
    let a = Admin::new().await;
    let account = a.account("scale").await;
    let key = a
        .key(&account, json!({"name": "k", "permissions": ["publish"]}))
        .await;
    let id = key.body["id"].as_str().unwrap();
    let path = format!("/accounts/{account}/keys/{id}/rotate");
    for grace in [json!(-1), json!(1.5), json!("60")] {
        assert_invalid(
            &a.send("POST", &path, Some(json!({"grace_seconds": grace})))
                .await,
            "grace_seconds",
            "whole number",
        );
    }
    assert_invalid(
        &a.send("POST", &path, Some(json!({"grace_seconds": 400 * 86_400})))
            .await,
        "grace_seconds",
        "one year",
    );
    a.call("POST", &path, Some("{"), Some(TOKEN))
        .await
        .assert_problem(400, "malformed_json");
    a.send(
        "POST",
        &format!("/accounts/{account}/keys/key_nope/rotate"),
        None,
    )
    .await
    .assert_problem(404, "not_found");
    a.call(
        "POST",
        &format!("/accounts/{account}/keys/key_nope/rotate"),
        Some("{"),
        Some(TOKEN),
    )
    .await
    .assert_problem(404, "not_found");
    assert_eq!(
        a.send("GET", &format!("/accounts/{account}/keys"), None)
            .await
            .body["keys"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn rotation_defaults_to_a_day_of_grace() {
    let a = Admin::new().await;
    let account = a.account("scale").await;
    let old = a
        .key(
            &account,
            json!({"name": "k", "permissions": ["publish"], "expiration": "never"}),
        )
        .await;
    let id = old.body["id"].as_str().unwrap();
    let new = a
        .send(
            "POST",
            &format!("/accounts/{account}/keys/{id}/rotate"),
            None,
        )
        .await;
    assert_eq!(new.status, 201, "{}", new.text);
    assert_eq!(new.body["expires_at"], Value::Null);
    let old_now = a
        .send("GET", &format!("/accounts/{account}/keys/{id}"), None)
        .await;
    assert_eq!(old_now.body["expires_at"], "2026-06-02T12:00:00Z");
}

#[tokio::test]
async fn a_key_lives_its_whole_life_and_never_reaches_the_logs() {
    let logs = common::Captured::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber(tracing::Level::TRACE));

    let a = Admin::new().await;
    let account = a.account("scale").await;
    let created = a
        .key(&account, json!({"name": "Production Server", "permissions": ["generate", "projects:read"], "expiration": "90d"}))
        .await;
    assert_eq!(created.status, 201);
    let old_key = created.body["key"].as_str().unwrap().to_owned();
    let old_id = created.body["id"].as_str().unwrap().to_owned();
    tracing::info!(?created.body, "created (the test logs the response to prove the capture would catch a key)");
    let leaked_by_the_test = logs.0.lock().unwrap().len();

    // Use it: allowed, and refused for a permission it lacks.
    assert_eq!(
        a.use_key("POST", "/api/v1/generate", &old_key).await.status,
        200
    );
    a.use_key("POST", "/api/v1/publish", &old_key)
        .await
        .assert_problem(403, "missing_permission");
    a.use_key("POST", "/api/v1/generate", "nvl_typo")
        .await
        .assert_problem(401, "invalid_api_key");

    // last_used_at moves after a flush, not before.
    let key_path = format!("/accounts/{account}/keys/{old_id}");
    assert_eq!(
        a.send("GET", &key_path, None).await.body["last_used_at"],
        Value::Null
    );
    a.h.layer.flush_usage().await.unwrap();
    let after_flush = a.send("GET", &key_path, None).await;
    assert_eq!(after_flush.body["last_used_at"], "2026-06-01T12:00:00Z");
    assert_eq!(after_flush.body["usage"]["admitted"], 1);
    assert_eq!(
        after_flush.body["usage"]["rejected"]["missing_permission"],
        1
    );
    assert_eq!(
        after_flush.body["usage"]["last_request_at"],
        "2026-06-01T12:00:00Z"
    );

    // Rotate with 10 minutes of grace: both keys work.
    a.h.advance(Duration::from_secs(60));
    let rotated = a
        .send(
            "POST",
            &format!("/accounts/{account}/keys/{old_id}/rotate"),
            Some(json!({"grace_seconds": 600})),
        )
        .await;
    assert_eq!(rotated.status, 201, "{}", rotated.text);
    let new_key = rotated.body["key"].as_str().unwrap().to_owned();
    let new_id = rotated.body["id"].as_str().unwrap().to_owned();
    assert_ne!(new_id, old_id);
    assert_eq!(rotated.body["name"], "Production Server");
    assert_eq!(
        rotated.body["permissions"],
        json!(["generate", "projects:read"])
    );
    assert_eq!(rotated.body["expires_at"], "2026-08-30T12:01:00Z");
    assert_eq!(rotated.body["replaced_by"], Value::Null);
    let old_after = a.send("GET", &key_path, None).await.body;
    assert_eq!(old_after["expires_at"], "2026-06-01T12:11:00Z");
    assert_eq!(old_after["replaced_by"], new_id.as_str());
    assert_eq!(
        a.use_key("GET", "/api/v1/projects", &old_key).await.status,
        200
    );
    assert_eq!(
        a.use_key("GET", "/api/v1/projects", &new_key).await.status,
        200
    );

    // The grace ends: old key 401, new key 200.
    a.h.advance(Duration::from_secs(600));
    a.use_key("GET", "/api/v1/projects", &old_key)
        .await
        .assert_problem(401, "expired_api_key");
    assert_eq!(
        a.use_key("GET", "/api/v1/projects", &new_key).await.status,
        200
    );
    assert_eq!(
        a.send("GET", &key_path, None).await.body["status"],
        "expired"
    );

    // Delete the new key: 401 from the next request on.
    let deleted = a
        .send(
            "DELETE",
            &format!("/accounts/{account}/keys/{new_id}"),
            None,
        )
        .await;
    assert_eq!(deleted.status, 204);
    a.use_key("GET", "/api/v1/projects", &new_key)
        .await
        .assert_problem(401, "invalid_api_key");
    a.h.layer.flush_usage().await.unwrap();

    let logs = logs.text();
    let (by_the_test, by_the_crate) = logs.split_at(leaked_by_the_test);
    assert!(
        by_the_test.contains(&old_key),
        "the capture sees what is logged"
    );
    assert!(
        by_the_crate.contains(&old_id),
        "rejections are logged with the key id"
    );
    assert!(by_the_crate.contains("missing_permission"));
    for secret in [&old_key, &new_key] {
        assert!(
            !by_the_crate.contains(secret.as_str()),
            "a key reached the logs"
        );
        assert!(
            !by_the_crate.contains(&secret[8..]),
            "part of a key reached the logs"
        );
    }
}

#[tokio::test]
async fn keys_are_disabled_enabled_and_labelled_with_an_environment() {
    let a = Admin::new().await;
    let account = a.account("scale").await;
    let keys = format!("/accounts/{account}/keys");
    let staging = a
        .key(
            &account,
            json!({"name": "Staging", "permissions": ["generate"], "environment": "staging"}),
        )
        .await;
    assert_eq!(staging.status, 201, "{}", staging.text);
    assert_eq!(staging.body["environment"], "staging");
    let plain = a
        .key(
            &account,
            json!({"name": "Plain", "permissions": ["generate"]}),
        )
        .await;
    assert_eq!(plain.body["environment"], Value::Null);
    for bad in [
        json!("Staging"),
        json!("-x"),
        json!(7),
        json!("a".repeat(33)),
    ] {
        let refused = a
            .key(
                &account,
                json!({"name": "Bad", "permissions": ["generate"], "environment": bad}),
            )
            .await;
        assert_invalid(&refused, "environment", "");
    }
    assert_eq!(
        a.send("GET", &keys, None).await.body["keys"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // The list filter.
    let listed = a
        .send("GET", &format!("{keys}?environment=staging"), None)
        .await;
    assert_eq!(listed.status, 200);
    let ids: Vec<&Value> = listed.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["id"])
        .collect();
    assert_eq!(ids, [&staging.body["id"]]);
    let none = a
        .send("GET", &format!("{keys}?environment=production"), None)
        .await;
    assert_eq!(none.body["keys"], json!([]));
    assert_invalid(
        &a.send("GET", &format!("{keys}?environment=Prod"), None)
            .await,
        "environment",
        "lowercase",
    );
    a.send("GET", "/accounts/acc_none/keys?environment=Prod", None)
        .await
        .assert_problem(404, "not_found");

    // The handler is told the environment.
    let key = staging.body["key"].as_str().unwrap();
    let used = a.use_key("POST", "/api/v1/generate", key).await;
    assert_eq!(used.status, 200);
    assert_eq!(used.body["environment"], "staging");
    let plain_key = plain.body["key"].as_str().unwrap();
    assert_eq!(
        a.use_key("POST", "/api/v1/generate", plain_key).await.body["environment"],
        Value::Null
    );

    // Disable: 401 disabled_api_key, still listed as disabled.
    let id = staging.body["id"].as_str().unwrap();
    let disabled = a.send("POST", &format!("{keys}/{id}/disable"), None).await;
    assert_eq!(disabled.status, 200, "{}", disabled.text);
    assert_eq!(disabled.body["status"], "disabled");
    assert_eq!(disabled.body["id"], id);
    assert!(disabled.body.get("key").is_none());
    let refused = a.use_key("POST", "/api/v1/generate", key).await;
    refused.assert_problem(401, "disabled_api_key");
    assert_eq!(
        refused.header("www-authenticate"),
        Some(
            r#"Bearer realm="nouvel", error="invalid_token", error_description="The API key is disabled""#
        )
    );
    assert_eq!(
        a.send("GET", &format!("{keys}/{id}"), None).await.body["status"],
        "disabled"
    );
    assert_eq!(
        a.send("POST", &format!("{keys}/{id}/disable"), None)
            .await
            .body["status"],
        "disabled"
    );

    // Enable: it works again.
    let enabled = a.send("POST", &format!("{keys}/{id}/enable"), None).await;
    assert_eq!(enabled.status, 200);
    assert_eq!(enabled.body["status"], "active");
    assert_eq!(a.use_key("POST", "/api/v1/generate", key).await.status, 200);

    // Unknown keys and other accounts' keys: 404; wrong method: 405.
    let other = a.account("scale").await;
    for path in [
        format!("{keys}/key_none/disable"),
        format!("/accounts/{other}/keys/{id}/disable"),
        format!("/accounts/{other}/keys/{id}/enable"),
    ] {
        a.send("POST", &path, None)
            .await
            .assert_problem(404, "not_found");
    }
    let wrong = a.send("GET", &format!("{keys}/{id}/disable"), None).await;
    wrong.assert_problem(405, "method_not_allowed");
    assert_eq!(wrong.header("allow"), Some("POST"));
    a.call("POST", &format!("{keys}/{id}/disable"), None, None)
        .await
        .assert_problem(401, "admin_unauthorized");

    // Rotation keeps the environment; an expired key enabled stays expired.
    let rotated = a
        .send(
            "POST",
            &format!("{keys}/{id}/rotate"),
            Some(json!({"grace_seconds": 0})),
        )
        .await;
    assert_eq!(rotated.body["environment"], "staging");
    a.send("POST", &format!("{keys}/{id}/disable"), None).await;
    let enabled = a.send("POST", &format!("{keys}/{id}/enable"), None).await;
    assert_eq!(enabled.body["status"], "expired");
    a.use_key("POST", "/api/v1/generate", key)
        .await
        .assert_problem(401, "expired_api_key");
}

#[tokio::test]
async fn every_route_answers_as_its_openapi_document_says() {
    let a = Admin::new().await;
    let account = a.account("scale").await;
    assert_eq!(a.send("GET", "/openapi.json", None).await.status, 200);
    assert_eq!(
        a.send("GET", &format!("/accounts/{account}"), None)
            .await
            .status,
        200
    );
    let patched = a
        .send(
            "PATCH",
            &format!("/accounts/{account}"),
            Some(json!({"plan": "business"})),
        )
        .await;
    assert_eq!(patched.status, 200);
    let keys = format!("/accounts/{account}/keys");
    let made = a.key(&account, json!({"name": "k", "permissions": ["generate"], "rate_limit": {"requests": 5, "window_seconds": 10}})).await;
    assert_eq!(made.status, 201);
    let id = made.body["id"].as_str().unwrap();
    for (method, path, status) in [
        ("GET", keys.clone(), 200),
        ("GET", format!("{keys}/{id}"), 200),
        ("GET", format!("{keys}/{id}/usage?granularity=day"), 200),
        ("GET", format!("{keys}/{id}/usage?from=soon"), 422),
        ("POST", format!("{keys}/{id}/disable"), 200),
        ("POST", format!("{keys}/{id}/enable"), 200),
        ("POST", format!("{keys}/{id}/rotate"), 201),
        ("POST", format!("{keys}/{id}/rotate"), 409),
        ("DELETE", format!("{keys}/{id}"), 204),
        ("GET", format!("/accounts/{account}/audit?limit=2"), 200),
    ] {
        assert_eq!(
            a.send(method, &path, None).await.status,
            status,
            "{method} {path}"
        );
    }
    a.document.assert_every_operation_seen();
}

#[tokio::test]
async fn the_audit_log_says_who_did_what_newest_first_a_page_at_a_time() {
    let a = Admin::new().await;
    let account = a.account("scale").await;
    let keys = format!("/accounts/{account}/keys");
    let made = a
        .key(
            &account,
            json!({"name": "Audited", "permissions": ["generate"]}),
        )
        .await;
    let id = made.body["id"].as_str().unwrap();
    let rotated = a
        .send(
            "POST",
            &format!("{keys}/{id}/rotate"),
            Some(json!({"grace_seconds": 0})),
        )
        .await;
    let new_id = rotated.body["id"].as_str().unwrap();
    a.send("POST", &format!("{keys}/{new_id}/disable"), None)
        .await;
    a.send("DELETE", &format!("{keys}/{new_id}"), None).await;
    a.send(
        "PATCH",
        &format!("/accounts/{account}"),
        Some(json!({"plan": "business"})),
    )
    .await;
    // Refused: nothing recorded.
    a.send("DELETE", &format!("{keys}/{new_id}"), None)
        .await
        .assert_problem(404, "not_found");

    let audit = format!("/accounts/{account}/audit");
    let log = a.send("GET", &audit, None).await;
    assert_eq!(log.status, 200, "{}", log.text);
    let actions: Vec<&str> = log.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "account.plan_changed",
            "key.deleted",
            "key.disabled",
            "key.rotated",
            "key.created",
            "account.created"
        ]
    );
    assert_eq!(log.body["next"], Value::Null);
    for entry in log.body["entries"].as_array().unwrap() {
        assert_eq!(entry["actor"], json!({"kind": "admin", "id": null}));
        assert_eq!(entry["account_id"], account.as_str());
    }
    let plan = &log.body["entries"][0];
    assert_eq!(plan["details"], json!({"from": "scale", "to": "business"}));
    assert_eq!(log.body["entries"][3]["details"]["replacement_id"], new_id);
    assert!(!log.text.contains(made.body["key"].as_str().unwrap()));

    let first = a.send("GET", &format!("{audit}?limit=4"), None).await;
    assert_eq!(first.body["entries"].as_array().unwrap().len(), 4);
    let next = first.body["next"].as_str().unwrap();
    let second = a
        .send("GET", &format!("{audit}?limit=4&before={next}"), None)
        .await;
    let rest: Vec<&str> = second.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(rest, ["key.created", "account.created"]);
    assert_eq!(second.body["next"], Value::Null);
    for bad in ["0", "501", "ten", "-1"] {
        assert_invalid(
            &a.send("GET", &format!("{audit}?limit={bad}"), None).await,
            "limit",
            "1 to 500",
        );
    }
    a.send("GET", "/accounts/acc_none/audit", None)
        .await
        .assert_problem(404, "not_found");
    a.call("GET", &audit, None, None)
        .await
        .assert_problem(401, "admin_unauthorized");
}

#[tokio::test]
async fn an_account_holds_at_most_its_cap_of_live_keys() {
    let a = Admin::with_profile(|profile| profile.max_keys_per_account(Some(3))).await;
    let account = a.account("scale").await;
    let body = |name: &str, expiration: &str| json!({"name": name, "permissions": ["generate"], "expiration": expiration});
    let short = a.key(&account, body("Short", "7d")).await;
    let kept = a.key(&account, body("Kept", "90d")).await;
    assert_eq!(a.key(&account, body("Third", "90d")).await.status, 201);
    let refused = a.key(&account, body("Fourth", "90d")).await;
    refused.assert_problem(409, "too_many_keys");
    assert_eq!(refused.body["max_keys"], 3);
    // A rotation replaces a key: it never counts against the cap.
    let id = |reply: &Reply| reply.body["id"].as_str().unwrap().to_owned();
    let rotated = a
        .send(
            "POST",
            &format!("/accounts/{account}/keys/{}/rotate", id(&kept)),
            Some(json!({"grace_seconds": 3600})),
        )
        .await;
    assert_eq!(rotated.status, 201, "{}", rotated.text);
    a.key(&account, body("Fourth", "90d"))
        .await
        .assert_problem(409, "too_many_keys");
    // An expired key no longer counts, nor a deleted one.
    a.h.advance(Duration::from_secs(8 * 86_400));
    assert_eq!(a.key(&account, body("Fourth", "90d")).await.status, 201);
    a.key(&account, body("Fifth", "90d"))
        .await
        .assert_problem(409, "too_many_keys");
    let gone = a
        .send(
            "DELETE",
            &format!("/accounts/{account}/keys/{}", id(&rotated)),
            None,
        )
        .await;
    assert_eq!(gone.status, 204);
    assert_eq!(a.key(&account, body("Fifth", "90d")).await.status, 201);
    // The refused ones made nothing: Short (expired), Kept (rotated), Third, Fourth, Fifth.
    let listed = a
        .send("GET", &format!("/accounts/{account}/keys"), None)
        .await;
    assert_eq!(
        listed.body["keys"].as_array().unwrap().len(),
        5,
        "{}",
        listed.text
    );
    let listed = listed.body["keys"].as_array().unwrap();
    assert!(listed
        .iter()
        .any(|k| k["id"] == id(&short).as_str() && k["status"] == "expired"));
}

#[tokio::test]
async fn key_lists_come_a_page_at_a_time() {
    let a = Admin::new().await;
    let account = a.account("scale").await;
    let mut made = Vec::new();
    for i in 0..5 {
        let reply = a
            .key(
                &account,
                json!({"name": format!("Key {i}"), "permissions": ["generate"]}),
            )
            .await;
        made.push(reply.body["id"].as_str().unwrap().to_owned());
        a.h.advance(Duration::from_secs(1));
    }
    made.reverse();
    let whole = a
        .send("GET", &format!("/accounts/{account}/keys"), None)
        .await;
    assert_eq!(whole.body["next"], Value::Null);
    let ids = |reply: &Reply| -> Vec<String> {
        reply.body["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&whole), made, "newest first");
    let mut paged = Vec::new();
    let mut query = "?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let page = a
            .send("GET", &format!("/accounts/{account}/keys{query}"), None)
            .await;
        assert_eq!(page.status, 200, "{}", page.text);
        pages += 1;
        paged.extend(ids(&page));
        match page.body["next"].as_str() {
            Some(next) => query = format!("?limit=2&before={next}"),
            None => break,
        }
    }
    assert_eq!((pages, paged), (3, made));
    for (query, field) in [
        ("?limit=0", "limit"),
        ("?limit=501", "limit"),
        ("?before=nonsense", "before"),
    ] {
        let refused = a
            .send("GET", &format!("/accounts/{account}/keys{query}"), None)
            .await;
        refused.assert_problem(422, "invalid_request");
        assert_eq!(refused.body["errors"][0]["field"], field, "{query}");
    }
}
