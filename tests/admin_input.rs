//! The admin API against bad input, on the memory and PostgreSQL stores alike: strict
//! bodies, every field error at once, names and ids no store made, bounded dates, the
//! rotation rule, problem+json for every answer, and per-key limits. The property tests
//! send arbitrary bodies and ids to both stores and require the same status and code,
//! never a 5xx.

mod common;

use nouvel_auth::Profile;
use std::time::Duration;

use axum::{body::Body, http::Request, Router};
use common::{servers, Reply, T0};
use nouvel_auth::{
    admin::{self, AdminToken},
    clock::ManualClock,
    KeyStorage, MemoryKeyStore,
};
use proptest::prelude::*;
use serde_json::{json, Value};
use tower::ServiceExt;

const TOKEN: &str = "admin-token-for-input-tests";

/// The example server's shape: the API behind the layer, the admin router at `/admin`.
fn app<S: KeyStorage + Clone>(store: S, clock: &ManualClock) -> Router {
    let keys = Profile::nouvel()
        .clock(clock.clone())
        .key_manager(store.clone());
    common::routes()
        .layer(Profile::nouvel().clock(clock.clone()).layer(store))
        .nest("/admin", admin::router(keys, AdminToken::new(TOKEN)))
}

/// A request to the admin router from `from` with `token`.
async fn attempt(app: &Router, from: &str, token: &str) -> Reply {
    let request = Request::get("/admin/accounts/acc_x")
        .header("authorization", format!("Bearer {token}"))
        .extension(axum::extract::ConnectInfo(
            from.parse::<std::net::SocketAddr>().unwrap(),
        ))
        .body(Body::empty())
        .unwrap();
    Reply::read(app.clone().oneshot(request).await.unwrap()).await
}

async fn call(app: &Router, method: &str, path: &str, body: impl Into<Body>) -> Reply {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(body.into())
        .unwrap();
    Reply::read(app.clone().oneshot(request).await.unwrap()).await
}

async fn send(app: &Router, method: &str, path: &str, body: Value) -> Reply {
    call(app, method, path, body.to_string()).await
}

async fn account(app: &Router) -> String {
    let made = send(
        app,
        "POST",
        "/admin/accounts",
        json!({"name": "Acme", "plan": "scale"}),
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.text);
    made.body["id"].as_str().unwrap().to_owned()
}

/// Makes a key in account `id` from `body`.
async fn new_key(app: &Router, id: &str, body: Value) -> Reply {
    send(app, "POST", &format!("/admin/accounts/{id}/keys"), body).await
}

#[track_caller]
fn fields(reply: &Reply) -> Vec<(String, String)> {
    reply.assert_problem(422, "invalid_request");
    reply.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["field"].as_str().unwrap().to_owned(),
                e["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The memory store and a PostgreSQL one, each behind the example's routers.
async fn both() -> [(&'static str, Router); 2] {
    let clock = ManualClock::new(T0);
    [
        ("memory", app(MemoryKeyStore::new(), &clock)),
        ("postgres", app(servers::postgres_store().await, &clock)),
    ]
}

#[tokio::test]
async fn a_date_past_the_year_9999_in_utc_is_422_not_a_panic() {
    for (store, app) in both().await {
        let id = account(&app).await;
        for date in [
            "9999-12-31T23:59:59-00:01",
            "9999-12-31T23:59:60Z",
            "+10000-01-01T00:00:00Z",
        ] {
            let reply = new_key(
                &app,
                &id,
                json!({"name": "k", "permissions": ["generate"], "expiration": date}),
            )
            .await;
            assert_eq!(
                fields(&reply)[0].0,
                "expiration",
                "{store} {date}: {}",
                reply.text
            );
        }
        let latest = new_key(
            &app,
            &id,
            json!({"name": "k", "permissions": ["generate"], "expiration": "9999-12-31T23:59:59Z"}),
        )
        .await;
        assert_eq!(latest.status, 201, "{store}: {}", latest.text);
        assert_eq!(latest.body["expires_at"], "9999-12-31T23:59:59Z");
    }
}

#[tokio::test]
async fn control_characters_and_ids_no_store_made_are_4xx_on_every_store() {
    for (store, app) in both().await {
        for name in [
            "a\u{0}b",
            "a\u{1b}[31mb",
            "line\nbreak",
            "cr\r",
            "del\u{7f}",
            "c1\u{85}",
            "\u{200b}\u{200d}",
            " \u{feff} ",
        ] {
            let reply = send(
                &app,
                "POST",
                "/admin/accounts",
                json!({"name": name, "plan": "scale"}),
            )
            .await;
            assert_eq!(
                fields(&reply)[0].0,
                "name",
                "{store} {name:?}: {}",
                reply.text
            );
        }
        let id = account(&app).await;
        let reply = new_key(
            &app,
            &id,
            json!({"name": "x\u{0}", "permissions": ["generate"]}),
        )
        .await;
        assert_eq!(fields(&reply)[0].0, "name", "{store}");
        for path in [
            "/admin/accounts/acc_x%00".to_owned(),
            format!("/admin/accounts/{id}/keys/key_%00"),
            format!("/admin/accounts/{id}%00/keys"),
            "/admin/accounts/%FF%FE".to_owned(),
            format!("/admin/accounts/{id}/keys/%C3%28"),
        ] {
            for method in ["GET", "DELETE", "PATCH"] {
                let reply = call(&app, method, &path, r#"{"plan": "growth"}"#).await;
                if reply.status == 405 {
                    continue;
                }
                assert_eq!(reply.status, 404, "{store} {method} {path}: {}", reply.text);
                reply.assert_problem(404, "not_found");
            }
        }
    }
}

#[tokio::test]
async fn names_refuse_bidirectional_controls_that_would_display_as_another_name() {
    let clock = ManualClock::new(T0);
    let app = app(MemoryKeyStore::new(), &clock);
    let id = account(&app).await;
    for control in [
        '\u{061C}', '\u{200E}', '\u{200F}', '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}',
        '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
    ] {
        // "Production<RLO>golb" displays as "Productionblog".
        let name = format!("Production{control}golb");
        for reply in [
            send(
                &app,
                "POST",
                "/admin/accounts",
                json!({"name": name, "plan": "scale"}),
            )
            .await,
            new_key(
                &app,
                &id,
                json!({"name": name, "permissions": ["generate"]}),
            )
            .await,
        ] {
            assert_eq!(
                fields(&reply),
                [(
                    "name".to_owned(),
                    "must not hold bidirectional control characters".to_owned()
                )],
                "{control:?}"
            );
        }
    }
    // Right-to-left text itself is a name like any other.
    let hebrew = new_key(
        &app,
        &id,
        json!({"name": "מפתח ראשי", "permissions": ["generate"]}),
    )
    .await;
    assert_eq!(hebrew.status, 201, "{}", hebrew.text);
}

#[tokio::test]
async fn rotation_renews_a_custom_date_as_the_same_length_of_life() {
    let clock = ManualClock::new(T0);
    let app = app(MemoryKeyStore::new(), &clock);
    let id = account(&app).await;
    // Made at T0 to die ten days later.
    let made = new_key(
        &app,
        &id,
        json!({"name": "k", "permissions": ["generate"], "expiration": "2026-06-11T12:00:00Z"}),
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.text);
    let key = made.body["id"].as_str().unwrap().to_owned();
    // Past its date, it still rotates: into ten days from now.
    clock.advance(Duration::from_secs(20 * 86_400));
    let rotated = send(
        &app,
        "POST",
        &format!("/admin/accounts/{id}/keys/{key}/rotate"),
        json!({}),
    )
    .await;
    assert_eq!(rotated.status, 201, "{}", rotated.text);
    assert_eq!(rotated.body["expires_at"], "2026-07-01T12:00:00Z");
    // The rotate body may choose the replacement's expiration.
    let new = rotated.body["id"].as_str().unwrap().to_owned();
    let chosen = send(
        &app,
        "POST",
        &format!("/admin/accounts/{id}/keys/{new}/rotate"),
        json!({"grace_seconds": 0, "expiration": "7d"}),
    )
    .await;
    assert_eq!(chosen.status, 201, "{}", chosen.text);
    assert_eq!(chosen.body["expires_at"], "2026-06-28T12:00:00Z");
    let never = send(
        &app,
        "POST",
        &format!(
            "/admin/accounts/{id}/keys/{}/rotate",
            chosen.body["id"].as_str().unwrap()
        ),
        json!({"expiration": "never", "grace_seconds": 60}),
    )
    .await;
    assert_eq!(never.body["expires_at"], Value::Null, "{}", never.text);
    let bad = send(
        &app,
        "POST",
        &format!(
            "/admin/accounts/{id}/keys/{}/rotate",
            never.body["id"].as_str().unwrap()
        ),
        json!({"expiration": "2w", "grace_seconds": -1, "extra": 1}),
    )
    .await;
    let named: Vec<String> = fields(&bad).into_iter().map(|(f, _)| f).collect();
    assert_eq!(named, ["expiration", "grace_seconds", "extra"]);
}

#[tokio::test]
async fn bodies_are_strict_and_every_field_error_comes_at_once() {
    for (store, app) in both().await {
        let id = account(&app).await;
        let keys = format!("/admin/accounts/{id}/keys");
        let reply = send(
            &app,
            "POST",
            &keys,
            json!({"name": "x", "permissions": ["generate"], "rate_limt": 5}),
        )
        .await;
        assert_eq!(
            fields(&reply),
            [("rate_limt".to_owned(), "unknown field".to_owned())],
            "{store}"
        );
        let reply = send(
            &app,
            "POST",
            &keys,
            json!({"name": "", "permissions": ["foo"], "expiration": "soon"}),
        )
        .await;
        let named: Vec<String> = fields(&reply).into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            named,
            ["name", "permissions", "expiration"],
            "{store}: {}",
            reply.text
        );
        let reply = send(
            &app,
            "POST",
            "/admin/accounts",
            json!({"name": "", "plan": "gold", "x": 1}),
        )
        .await;
        let named: Vec<String> = fields(&reply).into_iter().map(|(f, _)| f).collect();
        assert_eq!(named, ["name", "plan", "x"], "{store}");
        let reply = send(
            &app,
            "PATCH",
            &format!("/admin/accounts/{id}"),
            json!({"plan": "growth", "name": "y"}),
        )
        .await;
        assert_eq!(
            fields(&reply),
            [("name".to_owned(), "unknown field".to_owned())],
            "{store}"
        );
        // Nothing was made by any of them.
        let listed = call(&app, "GET", &keys, "").await;
        assert_eq!(listed.body["keys"], json!([]), "{store}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_body_that_does_not_arrive_within_30_seconds_is_408_and_changes_nothing() {
    let clock = ManualClock::new(T0);
    let app = app(MemoryKeyStore::new(), &clock);
    let id = account(&app).await;
    let keys = format!("/admin/accounts/{id}/keys");
    // The head, then a body that never comes (a client holding its connection).
    let (sender, chunks) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(1);
    sender
        .send(Ok(bytes::Bytes::from_static(br#"{"name": "k", "#)))
        .await
        .unwrap();
    let stalled = Body::from_stream(stream_of(chunks));
    let started = tokio::time::Instant::now();
    let reply = call(&app, "POST", &keys, stalled).await;
    reply.assert_problem(408, "request_timeout");
    assert_eq!(started.elapsed(), Duration::from_secs(30));
    drop(sender);
    let listed = call(&app, "GET", &keys, "").await;
    assert_eq!(listed.body["keys"], json!([]));
}

/// The chunks a channel receives, as a stream.
fn stream_of<T>(mut chunks: tokio::sync::mpsc::Receiver<T>) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| chunks.poll_recv(cx))
}

#[tokio::test]
async fn every_answer_of_the_router_is_problem_json() {
    let clock = ManualClock::new(T0);
    let app = app(MemoryKeyStore::new(), &clock);
    let id = account(&app).await;
    let huge = format!(r#"{{"name": "{}", "plan": "scale"}}"#, "x".repeat(10 << 20));
    call(&app, "POST", "/admin/accounts", huge)
        .await
        .assert_problem(413, "payload_too_large");
    let just_over = format!(r#"{{"name": "{}"}}"#, "x".repeat(64 * 1024));
    call(&app, "POST", "/admin/accounts", just_over)
        .await
        .assert_problem(413, "payload_too_large");
    for path in [
        "/admin/accounts/",
        "/admin/nothing",
        "/admin/accounts/acc/keys/",
    ] {
        let reply = call(&app, "GET", path, "").await;
        assert_eq!(reply.status, 404, "{path}: {}", reply.text);
        reply.assert_problem(404, "not_found");
    }
    let wrong = call(&app, "PUT", &format!("/admin/accounts/{id}"), "{}").await;
    wrong.assert_problem(405, "method_not_allowed");
    let allow = wrong.header("allow").unwrap_or_default();
    assert!(
        allow.contains("GET") && allow.contains("PATCH"),
        "{allow:?}"
    );
    // Without the token, every path says so, never that a key is malformed.
    let request = Request::get("/admin/accounts/")
        .body(Body::empty())
        .unwrap();
    Reply::read(app.clone().oneshot(request).await.unwrap())
        .await
        .assert_problem(401, "admin_unauthorized");
}

#[tokio::test]
async fn a_key_may_have_a_limit_of_its_own_and_every_key_shows_its_limit() {
    for (store, app) in both().await {
        let id = account(&app).await;
        let keys = format!("/admin/accounts/{id}/keys");
        let own = send(
            &app,
            "POST",
            &keys,
            json!({"name": "slow", "permissions": ["generate"], "rate_limit": {"requests": 5, "window_seconds": 10}}),
        )
        .await;
        assert_eq!(own.status, 201, "{store}: {}", own.text);
        assert_eq!(
            own.body["rate_limit"],
            json!({"requests": 5, "window_seconds": 10})
        );
        let default = send(
            &app,
            "POST",
            &keys,
            json!({"name": "plain", "permissions": ["generate"]}),
        )
        .await;
        assert_eq!(
            default.body["rate_limit"],
            json!({"requests": 60, "window_seconds": 60})
        );
        let listed = call(&app, "GET", &keys, "").await;
        for made in [&own, &default] {
            let shown = listed.body["keys"]
                .as_array()
                .unwrap()
                .iter()
                .find(|k| k["id"] == made.body["id"])
                .map(|k| &k["rate_limit"]);
            assert_eq!(shown, Some(&made.body["rate_limit"]), "{store}");
        }
        // The limit holds at the layer.
        let auth = format!("Bearer {}", own.body["key"].as_str().unwrap());
        for _ in 0..5 {
            assert_eq!(
                common::send(&app, "POST", "/api/v1/generate", Some(&auth))
                    .await
                    .status,
                200
            );
        }
        common::send(&app, "POST", "/api/v1/generate", Some(&auth))
            .await
            .assert_problem(429, "rate_limited");
        for bad in [
            json!(5),
            json!({"requests": 0, "window_seconds": 10}),
            json!({"requests": 5, "window_seconds": 86_401}),
            json!({"requests": 5}),
            json!({"requests": 5, "window_seconds": 1.5}),
            json!({"requests": 5, "window_seconds": 10, "burst": 2}),
        ] {
            let reply = send(
                &app,
                "POST",
                &keys,
                json!({"name": "k", "permissions": ["generate"], "rate_limit": bad}),
            )
            .await;
            assert_eq!(fields(&reply)[0].0, "rate_limit", "{store} {bad}");
        }
    }
}

#[tokio::test]
async fn timestamps_read_back_as_written_and_the_expiry_header_has_whole_seconds() {
    for (store, app) in both().await {
        let id = account(&app).await;
        let made = new_key(&app, &id, json!({"name": "k", "permissions": ["generate"], "expiration": "2026-06-03T12:00:00.999999999Z"}),
        )
        .await;
        assert_eq!(made.body["expires_at"], "2026-06-03T12:00:00Z", "{store}");
        let key = made.body["id"].as_str().unwrap();
        let read = call(&app, "GET", &format!("/admin/accounts/{id}/keys/{key}"), "").await;
        for field in ["created_at", "expires_at"] {
            assert_eq!(read.body[field], made.body[field], "{store} {field}");
        }
        let auth = format!("Bearer {}", made.body["key"].as_str().unwrap());
        let reply = common::send(&app, "POST", "/api/v1/generate", Some(&auth)).await;
        assert_eq!(
            reply.header("nouvel-key-expires-at"),
            Some("2026-06-03T12:00:00Z"),
            "{store}"
        );
    }
}

/// Arbitrary JSON: scalars of every kind (strings with control characters and NUL, huge
/// and fractional numbers), arrays and objects, nested.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,12}|[\\x00-\\x1f\\x7f]{0,4}|generate|scale|7d|never|9999-12-31T23:59:59-00:01"
            .prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                "name|plan|permissions|expiration|rate_limit|grace_seconds|requests|window_seconds|\\PC{0,6}",
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A body the admin API takes, with one member made arbitrary.
fn body() -> impl Strategy<Value = String> {
    let member = "name|plan|permissions|expiration|rate_limit|grace_seconds|other";
    prop_oneof![
        json_value().prop_map(|v| v.to_string()),
        (member, json_value()).prop_map(|(field, value)| {
            let mut body = json!({"name": "k", "plan": "scale", "permissions": ["generate"]});
            body[field] = value;
            body.to_string()
        }),
        "\\PC{0,40}",
    ]
}

/// A path segment: any string, percent-encoded byte by byte (NUL, non-UTF-8 sequences).
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_]{0,12}",
        prop::collection::vec(any::<u8>(), 0..12)
            .prop_map(|bytes| bytes.iter().map(|b| format!("%{b:02X}")).collect()),
    ]
}

#[test]
fn arbitrary_bodies_and_ids_answer_alike_on_both_stores_and_never_5xx() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (apps, ids) = runtime.block_on(async {
        let apps = both().await;
        let mut ids = Vec::new();
        for (_, app) in &apps {
            let id = account(app).await;
            let key = new_key(app, &id, json!({"name": "k", "permissions": ["generate"]})).await;
            ids.push((id, key.body["id"].as_str().unwrap().to_owned()));
        }
        (apps, ids)
    });
    let routes = [
        ("POST", "/admin/accounts"),
        ("PATCH", "/admin/accounts/{a}"),
        ("POST", "/admin/accounts/{a}/keys"),
        ("POST", "/admin/accounts/{a}/keys/{k}/rotate"),
        ("GET", "/admin/accounts/{a}/keys/{k}"),
        ("DELETE", "/admin/accounts/{a}/keys/{k}"),
    ];
    proptest!(ProptestConfig::with_cases(150), |(
        route in 0..routes.len(),
        body in body(),
        own_ids in any::<bool>(),
        account_segment in segment(),
        key_segment in segment(),
    )| {
        let (method, template) = routes[route];
        let mut answers = Vec::new();
        for ((store, app), (account, key)) in apps.iter().zip(&ids) {
            let (a, k) = if own_ids {
                (account.clone(), key.clone())
            } else {
                (account_segment.clone(), key_segment.clone())
            };
            let path = template.replace("{a}", &a).replace("{k}", &k);
            let reply = runtime.block_on(call(app, method, &path, body.clone()));
            prop_assert!(reply.status.as_u16() < 500, "{store} {method} {path} {body}: {}", reply.text);
            let expected = match reply.status.as_u16() {
                204 => "",
                200..=299 => "application/json",
                _ => "application/problem+json",
            };
            prop_assert_eq!(reply.header("content-type").unwrap_or(""), expected, "{} {}", store, reply.text);
            answers.push((reply.status, reply.code().to_owned()));
        }
        // A rotation or deletion of each store's own key changes it alike on both; the
        // key may be gone afterwards, on both.
        prop_assert_eq!(&answers[0], &answers[1], "{} {} {}", method, template, body);
    });
}

#[tokio::test]
async fn a_rotated_key_answers_409_already_rotated_on_every_store() {
    for (store, app) in both().await {
        let id = account(&app).await;
        let made = new_key(&app, &id, json!({"name": "k", "permissions": ["generate"]})).await;
        let key = made.body["id"].as_str().unwrap();
        let rotate = format!("/admin/accounts/{id}/keys/{key}/rotate");
        assert_eq!(
            send(&app, "POST", &rotate, json!({})).await.status,
            201,
            "{store}"
        );
        send(&app, "POST", &rotate, json!({}))
            .await
            .assert_problem(409, "already_rotated");
        // Before the body is read: a bad body on a rotated key is still 409.
        send(&app, "POST", &rotate, json!({"grace_seconds": "soon"}))
            .await
            .assert_problem(409, "already_rotated");
        let listed = call(&app, "GET", &format!("/admin/accounts/{id}/keys"), "").await;
        assert_eq!(listed.body["keys"].as_array().unwrap().len(), 2, "{store}");
    }
}

#[tokio::test(start_paused = true)]
async fn twenty_failed_tokens_from_one_address_in_a_minute_get_429_until_it_passes() {
    let logs = common::Captured::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber(tracing::Level::WARN));

    let clock = ManualClock::new(T0);
    let app = app(MemoryKeyStore::new(), &clock);
    for _ in 0..20 {
        attempt(&app, "203.0.113.7:4000", "wrong-guess")
            .await
            .assert_problem(401, "admin_unauthorized");
    }
    tokio::time::advance(Duration::from_secs(15)).await;
    // The 21st try, and even the right token, from that address: 429 for the minute's rest.
    for token in ["wrong-guess", TOKEN] {
        let refused = attempt(&app, "203.0.113.7:4001", token).await;
        refused.assert_problem(429, "too_many_failures");
        assert_eq!(refused.header("retry-after"), Some("45"));
    }
    // Another address is not held back.
    attempt(&app, "198.51.100.1:5000", TOKEN)
        .await
        .assert_problem(404, "not_found");
    tokio::time::advance(Duration::from_secs(45)).await;
    attempt(&app, "203.0.113.7:4002", TOKEN)
        .await
        .assert_problem(404, "not_found");
    // Twenty failures within one second: one warning line, not twenty.
    let text = logs.text();
    let lines = text.matches("failed authentication").count();
    assert_eq!(lines, 1, "{text}");
    assert!(text.contains("203.0.113.7"), "{text}");
    assert!(
        !text.contains("wrong-guess"),
        "a presented token is never logged"
    );
}

#[tokio::test(start_paused = true)]
async fn failures_from_many_addresses_stay_bounded_and_write_one_line() {
    let logs = common::Captured::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber(tracing::Level::WARN));
    let app = app(MemoryKeyStore::new(), &ManualClock::new(T0));
    // 30 000 addresses fail once each: more than the guard keeps.
    for i in 0..30_000u32 {
        let [_, a, b, c] = i.to_be_bytes();
        attempt(&app, &format!("10.{a}.{b}.{c}:1"), "wrong-guess")
            .await
            .assert_problem(401, "admin_unauthorized");
    }
    let text = logs.text();
    assert_eq!(text.matches("failed authentication").count(), 1, "{text}");
    // An IPv6 client is counted by its /64: new addresses in it do not start over.
    for i in 0..20 {
        attempt(&app, &format!("[2001:db8:1:2::{i:x}]:1"), "wrong-guess").await;
    }
    attempt(&app, "[2001:db8:1:2:ffff::1]:1", TOKEN)
        .await
        .assert_problem(429, "too_many_failures");
    attempt(&app, "[2001:db8:1:3::1]:1", TOKEN)
        .await
        .assert_problem(404, "not_found");
    // Ten seconds on, one more line, with the count of those left out.
    tokio::time::advance(Duration::from_secs(10)).await;
    attempt(&app, "192.0.2.1:1", "wrong-guess").await;
    let text = logs.text();
    assert_eq!(text.matches("failed authentication").count(), 2, "{text}");
    assert!(text.contains("left_out=30019"), "{text}");
}
