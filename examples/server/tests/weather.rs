//! The weather example over real HTTP: an application with its own profile, whose every
//! error is in its own shape, whose plans carry their limits, and whose answers never name
//! Nouvel.

mod common;

use common::{Server, ADMIN_TOKEN, WEATHER};
use serde_json::Value;

fn admin_bearer() -> String {
    format!("Bearer {ADMIN_TOKEN}")
}

/// The JSON body of an answer.
fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"))
}

/// Asserts an answer is the weather API's error shape with `status` and `code`.
#[track_caller]
fn assert_error(status: u16, body: &str, expected: u16, code: &str) {
    assert_eq!(status, expected, "{body}");
    let error = &json(body)["error"];
    assert_eq!(error["status"], expected, "{body}");
    assert_eq!(error["code"], code, "{body}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// A key of the demo account with `body`'s settings (the admin API's create body).
fn key(server: &Server, body: &str) -> (String, String) {
    let account = server.demo_account();
    let (status, made) = server
        .admin("POST", &format!("/accounts/{account}/keys"), body)
        .unwrap();
    assert_eq!(status, 201, "{made}");
    (
        made["id"].as_str().unwrap().to_owned(),
        made["key"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn every_error_of_every_origin_is_in_the_applications_shape() {
    let server = Server::start_example(WEATHER, &[]);
    assert!(server.demo_key.starts_with("wx_"), "{}", server.demo_key);
    let (_, reader) = key(
        &server,
        r#"{"name": "Reader", "permissions": ["forecast:read"]}"#,
    );
    let (_, limited) = key(
        &server,
        r#"{"name": "Limited", "permissions": ["forecast:read"], "rate_limit": {"requests": 1, "window_seconds": 60}}"#,
    );
    // The layer's.
    let (status, body) = server.request("GET", "/api/v1/forecast/oslo", &[], "");
    assert_error(status, &body, 401, "missing_api_key");
    assert!(body.contains("Bearer wx_"), "{body}");
    let (status, body) = server.with_key("GET", "/api/v1/forecast/oslo", "wx_made_up");
    assert_error(status, &body, 401, "invalid_api_key");
    let (status, body) = server.with_key("GET", "/api/v1/history/oslo", &reader);
    assert_error(status, &body, 403, "missing_permission");
    assert_eq!(json(&body)["error"]["required_permission"], "history:read");
    let (status, body) = server.with_key("GET", "/api/v1/nowhere", &reader);
    assert_error(status, &body, 403, "route_not_allowed");
    assert_eq!(
        server.with_key("GET", "/api/v1/forecast/oslo", &limited).0,
        200
    );
    let (status, body) = server.with_key("GET", "/api/v1/forecast/oslo", &limited);
    assert_error(status, &body, 429, "rate_limited");
    let error = &json(&body)["error"];
    assert_eq!(
        (error["limit"].as_u64(), error["window_seconds"].as_u64()),
        (Some(1), Some(60))
    );
    assert!(
        error["retry_after"].as_u64().is_some_and(|s| s >= 1),
        "{body}"
    );
    // The admin router's.
    let (status, body) = server.request("GET", "/ops/accounts/acc_none", &[], "");
    assert_error(status, &body, 401, "admin_unauthorized");
    let bearer = admin_bearer();
    let admin = [("Authorization", bearer.as_str())];
    let (status, body) = server.request("GET", "/ops/accounts/acc_none", &admin, "");
    assert_error(status, &body, 404, "not_found");
    let account = server.demo_account();
    let (status, body) = server.request(
        "POST",
        &format!("/ops/accounts/{account}/keys"),
        &admin,
        r#"{"name": "", "permissions": ["generate"]}"#,
    );
    assert_error(status, &body, 422, "invalid_request");
    let answer = json(&body);
    let fields: Vec<&str> = answer["error"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "permissions"], "{body}");
    // The settings router's, and the application's own 404.
    let (status, body) = server.request("GET", "/settings/api-keys/keys", &[], "");
    assert_error(status, &body, 401, "not_signed_in");
    let (status, body) = server.request("GET", "/nowhere", &[], "");
    assert_error(status, &body, 404, "not_found");
    server.signal("TERM");
    assert_eq!(server.wait(), Some(0));
}

#[test]
fn plans_carry_their_limits_and_free_has_no_keys() {
    let server = Server::start_example(WEATHER, &[]);
    let account = server.demo_account();
    let (id, secret) = key(
        &server,
        r#"{"name": "Forecasts", "permissions": ["forecast:read"]}"#,
    );
    let limit = |server: &Server| {
        let bearer = format!("Bearer {secret}");
        let answer = server
            .raw(
                "GET",
                "/api/v1/forecast/oslo",
                &[("Authorization", &bearer)],
                "",
            )
            .unwrap();
        answer
            .lines()
            .find_map(|line| line.strip_prefix("x-ratelimit-limit: "))
            .map(str::to_owned)
    };
    let listed = |server: &Server| {
        let (_, key) = server
            .admin("GET", &format!("/accounts/{account}/keys/{id}"), "")
            .unwrap();
        key["rate_limit"].clone()
    };
    assert_eq!(limit(&server).as_deref(), Some("120"));
    assert_eq!(listed(&server)["requests"], 120);
    let (status, _) = server
        .admin(
            "PATCH",
            &format!("/accounts/{account}"),
            r#"{"plan": "team"}"#,
        )
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(limit(&server).as_deref(), Some("600"));
    assert_eq!(
        listed(&server),
        serde_json::json!({"requests": 600, "window_seconds": 60})
    );
    server
        .admin(
            "PATCH",
            &format!("/accounts/{account}"),
            r#"{"plan": "free"}"#,
        )
        .unwrap();
    let (status, body) = server.with_key("GET", "/api/v1/forecast/oslo", &secret);
    assert_error(status, &body, 402, "plan_required");
    assert_eq!(json(&body)["error"]["plan"], "free");
    assert_eq!(
        json(&body)["error"]["required_plans"],
        serde_json::json!(["pro", "team"])
    );
    server.signal("TERM");
    assert_eq!(server.wait(), Some(0));
}

/// A session of the demo account, for the settings page and its routes: the cookie, and
/// the whole answer that set it.
fn sign_in(server: &Server) -> (String, String) {
    let bearer = admin_bearer();
    let answer = server
        .raw(
            "POST",
            "/demo/sign-in",
            &[("Authorization", bearer.as_str())],
            &format!(r#"{{"account_id": "{}"}}"#, server.demo_account()),
        )
        .unwrap();
    let cookie = answer
        .lines()
        .find_map(|line| line.strip_prefix("set-cookie: "))
        .and_then(|value| value.split(';').next())
        .unwrap()
        .to_owned();
    (cookie, answer)
}

#[test]
fn the_settings_page_wears_the_applications_clothes() {
    let server = Server::start_example(WEATHER, &[]);
    let (cookie, _) = sign_in(&server);
    let session = [
        ("Cookie", cookie.as_str()),
        ("Origin", &format!("http://{}", server.address) as &str),
        ("Content-Type", "application/json"),
    ];
    let (status, page) = server.request("GET", "/settings/api-keys", &session, "");
    assert_eq!(status, 200);
    assert!(page.contains("<title>API Keys · Weather</title>"), "{page}");
    assert!(page.contains(r#"action="/demo/sign-out""#), "{page}");
    // The demo account is on pro: alerts are the team plan's to grant.
    let (_, account) = server.request("GET", "/settings/api-keys/account", &session, "");
    assert_eq!(
        json(&account)["grantable_permissions"],
        serde_json::json!(["forecast:read", "history:read"])
    );
    let (status, body) = server.request(
        "POST",
        "/settings/api-keys/keys",
        &session,
        r#"{"name": "Alerts", "permissions": ["alerts:write"]}"#,
    );
    assert_error(status, &body, 422, "invalid_request");
    assert_eq!(
        json(&body)["error"]["errors"][0]["reason"],
        "not yours to grant: alerts:write"
    );
    // The page's "Sign out" posts here: the session ends and the browser goes back to the
    // page, which asks to sign in.
    let out = server.raw("POST", "/demo/sign-out", &session, "").unwrap();
    assert!(out.starts_with("HTTP/1.1 303"), "{out}");
    assert!(
        out.to_lowercase()
            .contains("location: /settings/api-keys\r\n"),
        "{out}"
    );
    let (status, _) = server.request("GET", "/settings/api-keys/account", &session, "");
    assert_eq!(status, 401);
    server.signal("TERM");
    assert_eq!(server.wait(), Some(0));
}

#[test]
fn no_answer_of_the_weather_api_names_nouvel() {
    let server = Server::start_example(WEATHER, &[]);
    let account = server.demo_account();
    let bearer = admin_bearer();
    let admin = [("Authorization", bearer.as_str())];
    let (cookie, signed_in) = sign_in(&server);
    let session = [("Cookie", cookie.as_str())];
    let key = format!("Bearer {}", server.demo_key);
    let with_key = [("Authorization", key.as_str())];
    let mut answers = Vec::new();
    for (path, headers) in [
        ("/api/v1/forecast/oslo", &with_key[..]),
        ("/api/v1/forecast/oslo", &[][..]),
        ("/api/v1/history/oslo", &with_key[..]),
        ("/api/v1/cities", &[][..]),
        ("/api/status", &[][..]),
        ("/api/v1/nowhere", &[][..]),
        ("/nowhere", &[][..]),
        ("/healthz", &[][..]),
        ("/ops/openapi.json", &admin[..]),
        (&format!("/ops/accounts/{account}/keys") as &str, &admin[..]),
        (
            &format!("/ops/accounts/{account}/audit") as &str,
            &admin[..],
        ),
        ("/settings/api-keys", &session[..]),
        ("/settings/api-keys", &[][..]),
        ("/settings/api-keys/assets/settings.js", &[][..]),
        ("/settings/api-keys/assets/settings.css", &[][..]),
        ("/settings/api-keys/openapi.json", &session[..]),
        ("/settings/api-keys/account", &session[..]),
        ("/settings/api-keys/keys", &session[..]),
        ("/demo/sign-in?code=wrong", &[][..]),
    ] {
        answers.push((
            path.to_owned(),
            server.raw("GET", path, headers, "").unwrap(),
        ));
    }
    answers.push(("sign-in".to_owned(), signed_in));
    for (path, answer) in &answers {
        assert!(answer.starts_with("HTTP/1.1 "), "{path}: {answer}");
        assert!(
            !answer.to_lowercase().contains("nouvel"),
            "{path} names Nouvel: {answer}"
        );
    }
    server.signal("TERM");
    assert_eq!(server.wait(), Some(0));
}
