//! Leaked-key reports (README, "Leaked keys"): GitHub's secret scanning partner protocol,
//! with a P-256 key pair of the test's own standing for GitHub's.

mod common;

use std::{net::SocketAddr, time::Duration};

use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{Request, StatusCode},
    Router,
};
use common::{servers, Harness, Reply};
use nouvel_auth::{
    events::{EventDispatcher, EventKind, EventSink},
    manage::{ActorKind, AuditAction},
    nouvel,
    secret_scanning::{ScannerKeys, SecretScanningRouter},
    KeyManager, KeySpec, KeyStorage, Profile,
};
use p256::{
    ecdsa::{signature::Signer, Signature, SigningKey},
    pkcs8::{EncodePublicKey, LineEnding},
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tower::ServiceExt;

/// A key pair made by the test, standing for GitHub's signing key.
struct Scanner {
    signing: SigningKey,
    id: &'static str,
}

impl Scanner {
    fn new(id: &'static str) -> Self {
        // A scalar from a hash of this instant and this process: random enough for a test.
        let seed = format!(
            "{:?}{}{id}",
            std::time::SystemTime::now(),
            std::process::id()
        );
        let signing = SigningKey::from_slice(&Sha256::digest(seed.as_bytes())).unwrap();
        Self { signing, id }
    }

    /// GitHub's public key document, with this key.
    fn document(&self) -> String {
        let pem = self
            .signing
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        json!({"public_keys": [{"key_identifier": self.id, "key": pem, "is_current": true}]})
            .to_string()
    }

    fn sign(&self, body: &str) -> String {
        let signature: Signature = self.signing.sign(body.as_bytes());
        base64_encode(signature.to_der().as_bytes())
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `POST /` of `app` with `body` and the signature headers (if any), from `client`.
async fn post(
    app: &Router,
    body: &str,
    signature: Option<(&str, String)>,
    client: [u8; 4],
) -> Reply {
    let mut request = Request::post("/").header("content-type", "application/json");
    if let Some((id, signature)) = signature {
        request = request
            .header("Github-Public-Key-Identifier", id)
            .header("Github-Public-Key-Signature", signature);
    }
    let mut request = request.body(Body::from(body.to_owned())).unwrap();
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from((client, 40_000))));
    Reply::read(app.clone().oneshot(request).await.unwrap()).await
}

/// What a report of `tokens` looks like: `[{"token", "type", "url", "source"}]`.
fn report(tokens: &[&str]) -> String {
    let found: Vec<Value> = tokens
        .iter()
        .map(|token| {
            json!({
                "token": token,
                "type": "nouvel_api_key",
                "url": "https://github.com/acme/app/blob/abc123/.env",
                "source": "content",
            })
        })
        .collect();
    Value::Array(found).to_string()
}

fn router<S: KeyStorage>(keys: KeyManager<S>, scanner: &Scanner) -> Router {
    SecretScanningRouter::new(keys, ScannerKeys::from_github(&scanner.document()).unwrap()).build()
}

/// Collects events (a sink).
#[derive(Clone, Default)]
struct Events(std::sync::Arc<std::sync::Mutex<Vec<nouvel_auth::events::Event>>>);

impl EventSink for Events {
    async fn deliver(
        &self,
        event: &nouvel_auth::events::Event,
    ) -> Result<(), nouvel_auth::events::SinkError> {
        self.0.lock().unwrap().push(event.clone());
        Ok(())
    }
}

#[tokio::test]
async fn a_signed_report_disables_a_live_key_once_and_answers_in_githubs_format() {
    let h = Harness::new().await;
    let scanner = Scanner::new("github-test-key");
    let app = router(h.keys.clone(), &scanner);
    let events = Events::default();
    let dispatcher = EventDispatcher::new(h.keys.clone()).sink(events.clone());
    let leaked = h.key(nouvel::PERMISSIONS.all()).await;
    let other = h.key([nouvel::GENERATE]).await;
    let never_made = nouvel_auth::key::ApiKey::generate();
    let tokens = [
        leaked.key.expose_secret(),
        never_made.expose_secret(),
        "nvl_not-a-key",
        "ghp_somebody_elses_token",
    ];
    let body = report(&tokens);

    let reply = post(
        &app,
        &body,
        Some((scanner.id, scanner.sign(&body))),
        [203, 0, 113, 1],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let expected: Vec<Value> = tokens
        .iter()
        .zip(["true_positive", "false_positive", "false_positive", "false_positive"])
        .map(|(token, label)| {
            json!({"token_hash": sha256_hex(token), "token_type": "nouvel_api_key", "label": label})
        })
        .collect();
    assert_eq!(reply.body, Value::Array(expected));
    assert!(
        !reply.text.contains(leaked.key.expose_secret()),
        "never the token"
    );

    h.send_key("POST", "/api/v1/generate", &leaked)
        .await
        .assert_problem(401, "disabled_api_key");
    assert_eq!(
        h.send_key("POST", "/api/v1/generate", &other).await.status,
        200,
        "another key works on"
    );
    let info = h.keys.key(&h.account, &leaked.info.id).await.unwrap();
    let exposure = info.exposure.expect("marked");
    assert_eq!(exposure.url, "https://github.com/acme/app/blob/abc123/.env");
    assert_eq!(exposure.source, "content");

    // Again: the same answer, nothing more written.
    let again = post(
        &app,
        &body,
        Some((scanner.id, scanner.sign(&body))),
        [203, 0, 113, 1],
    )
    .await;
    assert_eq!(again.body, reply.body);
    let audit = h.keys.audit(&h.account, None, 50).await.unwrap();
    let exposed: Vec<_> = audit
        .entries
        .iter()
        .filter(|e| e.action == AuditAction::KeyExposed)
        .collect();
    assert_eq!(exposed.len(), 1, "one audit entry");
    assert_eq!(exposed[0].actor.kind, ActorKind::Scanner);
    assert_eq!(exposed[0].actor.id.as_deref(), Some("github"));
    assert_eq!(exposed[0].details["url"], exposure.url.as_str());
    assert_eq!(exposed[0].details["source"], "content");
    while dispatcher.run_once().await.unwrap() > 0 {}
    let told: Vec<_> = events
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.kind == EventKind::KeyExposed)
        .cloned()
        .collect();
    assert_eq!(told.len(), 1, "one event");
    assert_eq!(told[0].key_id.as_ref(), Some(&leaked.info.id));
    assert_eq!(told[0].data["url"], exposure.url.as_str());
    assert_eq!(told[0].data["source"], "content");
}

#[tokio::test]
async fn a_report_without_a_good_signature_is_refused_and_changes_nothing() {
    let h = Harness::new().await;
    let scanner = Scanner::new("github-test-key");
    let impostor = Scanner::new("github-test-key");
    let app = router(h.keys.clone(), &scanner);
    let leaked = h.key([nouvel::GENERATE]).await;
    let body = report(&[leaked.key.expose_secret()]);
    let altered = body.replace("content", "commit");
    for signature in [
        None,
        Some(("another-key", scanner.sign(&body))),
        Some((scanner.id, impostor.sign(&body))),
        Some((scanner.id, scanner.sign(&altered))),
        Some((scanner.id, "not base64!".to_owned())),
        Some((scanner.id, base64_encode(b"not a DER signature"))),
    ] {
        let reply = post(&app, &body, signature, [203, 0, 113, 2]).await;
        reply.assert_problem(401, "invalid_signature");
    }
    assert_eq!(
        h.send_key("POST", "/api/v1/generate", &leaked).await.status,
        200,
        "still works"
    );
    let info = h.keys.key(&h.account, &leaked.info.id).await.unwrap();
    assert!(info.exposure.is_none());

    // Signed, but not a report: 400.
    for not_a_report in ["{}", "[{\"token\": 1}]", "not json"] {
        let reply = post(
            &app,
            not_a_report,
            Some((scanner.id, scanner.sign(not_a_report))),
            [203, 0, 113, 2],
        )
        .await;
        reply.assert_problem(400, "malformed_json");
    }
}

/// Found by `fuzz/fuzz_targets/reports.rs`: a report whose token stood where a member's
/// name should be was refused with serde's message, which quoted the token.
#[tokio::test]
async fn a_report_that_cannot_be_read_never_quotes_its_tokens() {
    let h = Harness::new().await;
    let scanner = Scanner::new("github-test-key");
    let app = router(h.keys.clone(), &scanner);
    let leaked = h.key([nouvel::GENERATE]).await;
    let token = leaked.key.expose_secret();
    for body in [
        format!(r#"["{token}","type":"x"]"#),
        format!(r#"[{{"token": 7, "type": "{token}"}}]"#),
        format!(r#"{{"{token}": 1}}"#),
    ] {
        let reply = post(
            &app,
            &body,
            Some((scanner.id, scanner.sign(&body))),
            [203, 0, 113, 4],
        )
        .await;
        reply.assert_problem(400, "malformed_json");
        assert!(!reply.text.contains(token), "{}", reply.text);
    }
}

#[tokio::test]
async fn a_report_only_router_marks_the_key_and_leaves_it_working() {
    let h = Harness::new().await;
    let scanner = Scanner::new("github-test-key");
    let github = ScannerKeys::from_github(&scanner.document()).unwrap();
    let app = SecretScanningRouter::new(h.keys.clone(), github)
        .report_only()
        .build();
    let leaked = h.key([nouvel::GENERATE]).await;
    let body = report(&[leaked.key.expose_secret()]);
    let reply = post(
        &app,
        &body,
        Some((scanner.id, scanner.sign(&body))),
        [203, 0, 113, 3],
    )
    .await;
    assert_eq!(reply.body[0]["label"], "true_positive");
    assert_eq!(
        h.send_key("POST", "/api/v1/generate", &leaked).await.status,
        200
    );
    let info = h.keys.key(&h.account, &leaked.info.id).await.unwrap();
    assert!(info.exposure.is_some());
    let audit = h.keys.audit(&h.account, None, 1).await.unwrap();
    assert_eq!(audit.entries[0].details["disabled"], false);
}

#[tokio::test]
async fn each_address_may_send_60_reports_a_minute() {
    let h = Harness::new().await;
    let scanner = Scanner::new("github-test-key");
    let app = router(h.keys.clone(), &scanner);
    let body = report(&["nvl_not-a-key"]);
    let signature = || Some((scanner.id, scanner.sign(&body)));
    for _ in 0..60 {
        let reply = post(&app, &body, signature(), [198, 51, 100, 7]).await;
        assert_eq!(reply.status, 200);
    }
    let refused = post(&app, &body, signature(), [198, 51, 100, 7]).await;
    refused.assert_problem(429, "too_many_requests");
    let wait: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait));
    // Unsigned requests count too: a flood of them is cut off the same way.
    let unsigned = post(&app, &body, None, [198, 51, 100, 7]).await;
    unsigned.assert_problem(429, "too_many_requests");
    let elsewhere = post(&app, &body, signature(), [198, 51, 100, 8]).await;
    assert_eq!(elsewhere.status, 200, "another address is not held back");
}

#[tokio::test]
async fn malformed_tokens_cost_no_store_query_and_an_outage_answers_503() {
    let proxy = servers::Proxy::start(5432).await;
    let store =
        servers::postgres_store_at(&proxy.postgres_url(), &servers::unique("nouvel_test")).await;
    let keys = Profile::nouvel().key_manager(store);
    let account = keys.create_account("Acme", nouvel::SCALE).await.unwrap();
    let live = keys
        .create_key(&account.id, KeySpec::new("CI", [nouvel::GENERATE]))
        .await
        .unwrap();
    let scanner = Scanner::new("github-test-key");
    let app = router(keys, &scanner);

    proxy.cut();
    let malformed = report(&["nvl_short", "nvl_0000000000000000000000000000", "ghp_x"]);
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        post(
            &app,
            &malformed,
            Some((scanner.id, scanner.sign(&malformed))),
            [192, 0, 2, 1],
        ),
    )
    .await
    .expect("answered without the store");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert!(reply
        .body
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["label"] == "false_positive"));

    let real = report(&[live.key.expose_secret()]);
    let reply = post(
        &app,
        &real,
        Some((scanner.id, scanner.sign(&real))),
        [192, 0, 2, 1],
    )
    .await;
    reply.assert_problem(503, "auth_unavailable");
}
