//! Any bytes as a leaked-key report, signed by the scanner's key (so the body itself is
//! read, not refused at the signature): 200 with one feedback entry per reported token,
//! or 400/413; never a panic, never a 5xx, never a token in the answer.
#![no_main]

use std::sync::OnceLock;

use axum::{body::Body, Router};
use base64::Engine;
use http::Request;
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use nouvel_auth::{
    nouvel,
    secret_scanning::{ScannerKeys, SecretScanningRouter},
    KeyManager, KeySpec, MemoryKeyStore,
};
use p256::{
    ecdsa::{signature::Signer, Signature, SigningKey},
    pkcs8::{EncodePublicKey, LineEnding},
};
use tower::ServiceExt;

struct App {
    runtime: tokio::runtime::Runtime,
    router: Router,
    signing: SigningKey,
    /// A live key of the store, which the fuzzer may find.
    live: String,
}

fn app() -> &'static App {
    static APP: OnceLock<App> = OnceLock::new();
    APP.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let signing = SigningKey::from_slice(&[7u8; 32]).unwrap();
        let pem = signing.verifying_key().to_public_key_pem(LineEnding::LF).unwrap();
        let document = serde_json::json!({
            "public_keys": [{"key_identifier": "fuzz", "key": pem, "is_current": true}]
        });
        let keys = KeyManager::new(MemoryKeyStore::new());
        let live = runtime.block_on(async {
            let account = keys.create_account("Fuzz", nouvel::SCALE).await.unwrap();
            let key = keys.create_key(&account.id, KeySpec::new("k", [nouvel::GENERATE])).await.unwrap();
            key.key.expose_secret().to_owned()
        });
        let github = ScannerKeys::from_github(&document.to_string()).unwrap();
        let router = SecretScanningRouter::new(keys, github).report_only().build();
        App { runtime, router, signing, live }
    })
}

fuzz_target!(|data: &[u8]| {
    let app = app();
    // A report that names the live key wherever the input says `LIVE`.
    let body = String::from_utf8_lossy(data).replace("LIVE", &app.live).into_bytes();
    let signature: Signature = app.signing.sign(&body);
    let signature = base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes());
    let request = Request::post("/")
        .header("content-type", "application/json")
        .header("github-public-key-identifier", "fuzz")
        .header("github-public-key-signature", signature)
        .body(Body::from(body.clone()))
        .unwrap();
    let response = app.runtime.block_on(app.router.clone().oneshot(request)).unwrap();
    let status = response.status().as_u16();
    assert!(matches!(status, 200 | 400 | 413), "{status}");
    let answer = app.runtime.block_on(response.into_body().collect()).unwrap().to_bytes();
    let text = String::from_utf8_lossy(&answer);
    assert!(!text.contains(&app.live), "the token came back");
    if status == 200 {
        let sent: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
        let feedback: Vec<serde_json::Value> = serde_json::from_slice(&answer).unwrap();
        assert_eq!(sent.len(), feedback.len());
    }
});
