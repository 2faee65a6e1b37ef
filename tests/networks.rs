//! Network allow-lists (README, "Network allow-lists"): 403 `network_not_allowed` after the
//! permission and before the limit, the client behind trusted proxies, and the lists
//! through both routers.

mod common;

use std::{net::SocketAddr, time::Duration};

use axum::{body::Body, extract::ConnectInfo, http::Request, Router};
use common::{Harness, Reply};
use nouvel_auth::{
    admin::{self, AdminToken},
    manage::NewKey,
    network::Networks,
    nouvel, KeySpec, RateLimit,
};
use serde_json::{json, Value};
use tower::ServiceExt;

/// `POST /api/v1/generate` with `key`, from `peer` (none: no connection address), with
/// `X-Forwarded-For` values.
async fn call(app: &Router, key: &NewKey, peer: Option<&str>, forwarded: &[&str]) -> Reply {
    let mut request =
        Request::post("/api/v1/generate").header("authorization", common::bearer(&key.key));
    for value in forwarded {
        request = request.header("x-forwarded-for", *value);
    }
    let mut request = request.body(Body::empty()).unwrap();
    if let Some(peer) = peer {
        let address = SocketAddr::new(peer.parse().unwrap(), 50_000);
        request.extensions_mut().insert(ConnectInfo(address));
    }
    Reply::read(app.clone().oneshot(request).await.unwrap()).await
}

fn office() -> Networks {
    Networks::parse(["203.0.113.0/24", "2001:db8::/32"]).unwrap()
}

#[tokio::test]
async fn a_key_with_networks_is_refused_from_elsewhere_after_its_permission_and_before_its_limit() {
    let h = Harness::new().await;
    let key = h
        .key_with(
            KeySpec::new("Office", [nouvel::GENERATE])
                .allowed_networks(office())
                .rate_limits(RateLimit::new(2, Duration::from_secs(60))),
        )
        .await;
    for _ in 0..3 {
        let refused = call(&h.app, &key, Some("198.51.100.1"), &[]).await;
        refused.assert_problem(403, "network_not_allowed");
        assert!(refused
            .header("www-authenticate")
            .unwrap()
            .contains(r#"error="insufficient_scope""#));
        assert!(
            refused.header("ratelimit").is_none(),
            "not counted in the limit"
        );
    }
    call(&h.app, &key, None, &[])
        .await
        .assert_problem(403, "network_not_allowed");
    assert_eq!(
        call(&h.app, &key, Some("203.0.113.7"), &[]).await.status,
        200
    );
    assert_eq!(
        call(&h.app, &key, Some("2001:db8::9"), &[]).await.status,
        200,
        "IPv6"
    );
    call(&h.app, &key, Some("203.0.113.7"), &[])
        .await
        .assert_problem(429, "rate_limited");

    // The permission is checked first.
    let narrow = h
        .key_with(KeySpec::new("Narrow", [nouvel::PUBLISH]).allowed_networks(office()))
        .await;
    call(&h.app, &narrow, Some("198.51.100.1"), &[])
        .await
        .assert_problem(403, "missing_permission");

    // A key without a list works from anywhere, with or without a known address.
    let open = h.key([nouvel::GENERATE]).await;
    assert_eq!(call(&h.app, &open, None, &[]).await.status, 200);
    assert_eq!(
        call(&h.app, &open, Some("198.51.100.1"), &[]).await.status,
        200
    );
}

#[tokio::test]
async fn behind_trusted_proxies_the_client_is_the_right_most_untrusted_forwarded_address() {
    let proxies = Networks::parse(["10.0.0.0/8"]).unwrap();
    let h = Harness::with_profile(|profile| profile.trusted_proxies(proxies)).await;
    let key = h
        .key_with(KeySpec::new("Office", [nouvel::GENERATE]).allowed_networks(office()))
        .await;
    let from = |peer, forwarded| call(&h.app, &key, Some(peer), forwarded);
    assert_eq!(from("10.0.0.1", &["203.0.113.9"]).await.status, 200);
    assert_eq!(
        from("10.0.0.1", &["198.51.100.1, 203.0.113.9, 10.0.0.2"])
            .await
            .status,
        200,
        "the right-most hop that is not a proxy"
    );
    from("10.0.0.1", &["203.0.113.9, 198.51.100.1"])
        .await
        .assert_problem(403, "network_not_allowed");
    from("198.51.100.1", &["203.0.113.9"])
        .await
        .assert_problem(403, "network_not_allowed");
    from("10.0.0.1", &[])
        .await
        .assert_problem(403, "network_not_allowed");
}

const TOKEN: &str = "networks-admin-token";

async fn admin(app: &Router, method: &str, path: &str, body: Value) -> Reply {
    let request = Request::builder()
        .method(method)
        .uri(format!("/admin{path}"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    Reply::read(app.clone().oneshot(request).await.unwrap()).await
}

#[tokio::test]
async fn the_admin_api_sets_networks_on_create_and_rotate_and_refuses_bad_ones() {
    let h = Harness::new().await;
    let app = h.app.clone().nest(
        "/admin",
        admin::router(h.keys.clone(), AdminToken::new(TOKEN)),
    );
    let keys = format!("/accounts/{}/keys", h.account);
    let created = admin(
        &app,
        "POST",
        &keys,
        json!({"name": "Office", "permissions": ["generate"],
               "allowed_networks": ["203.0.113.0/24", "2001:db8::1"]}),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(
        created.body["allowed_networks"],
        json!(["203.0.113.0/24", "2001:db8::1/128"])
    );
    let id = created.body["id"].as_str().unwrap().to_owned();
    let open = admin(
        &app,
        "POST",
        &keys,
        json!({"name": "Open", "permissions": ["generate"]}),
    )
    .await;
    assert_eq!(open.body["allowed_networks"], Value::Null);

    for (networks, reason) in [
        (json!(["10.1.2.3/16"]), "host bits"),
        (json!(["not-an-address"]), "is not an IPv4 or IPv6"),
        (json!("10.0.0.0/8"), "must be a list"),
        (json!([7]), "must be a list"),
        (
            Value::Array((0..17).map(|n| json!(format!("10.0.{n}.0/24"))).collect()),
            "at most 16",
        ),
    ] {
        let refused = admin(
            &app,
            "POST",
            &keys,
            json!({"name": "Bad", "permissions": ["generate"], "allowed_networks": networks}),
        )
        .await;
        refused.assert_problem(422, "invalid_request");
        let error = &refused.body["errors"][0];
        assert_eq!(error["field"], "allowed_networks", "{}", refused.text);
        assert!(
            error["reason"].as_str().unwrap().contains(reason),
            "{}",
            refused.text
        );
    }

    // A rotation keeps the list, or takes another, or clears it with null.
    let kept = admin(&app, "POST", &format!("{keys}/{id}/rotate"), json!({})).await;
    assert_eq!(kept.status, 201, "{}", kept.text);
    assert_eq!(
        kept.body["allowed_networks"],
        created.body["allowed_networks"]
    );
    let kept_id = kept.body["id"].as_str().unwrap();
    let changed = admin(
        &app,
        "POST",
        &format!("{keys}/{kept_id}/rotate"),
        json!({"allowed_networks": ["198.51.100.0/24"]}),
    )
    .await;
    assert_eq!(changed.body["allowed_networks"], json!(["198.51.100.0/24"]));
    let changed_id = changed.body["id"].as_str().unwrap();
    let cleared = admin(
        &app,
        "POST",
        &format!("{keys}/{changed_id}/rotate"),
        json!({"allowed_networks": null}),
    )
    .await;
    assert_eq!(cleared.body["allowed_networks"], Value::Null);
}
