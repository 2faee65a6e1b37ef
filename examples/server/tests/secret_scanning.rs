//! Leaked-key reports over real HTTP (README, "Leaked keys"): the example takes them at
//! `/security/secret-scanning` when `NOUVEL_SECRET_SCANNING_KEYS` names GitHub's public
//! keys, and answers 404 there otherwise.

mod common;

use base64::Engine;
use common::Server;
use p256::{
    ecdsa::{signature::Signer, Signature, SigningKey},
    pkcs8::{EncodePublicKey, LineEnding},
};
use sha2::{Digest, Sha256};

const PATH: &str = "/security/secret-scanning";

#[test]
fn without_githubs_keys_the_route_is_a_404() {
    let server = Server::start(&[]);
    let (status, body) = server.request("POST", PATH, &[], "[]");
    assert_eq!(status, 404, "{body}");
}

#[test]
fn a_signed_report_of_the_demo_key_disables_it() {
    let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
    let github = SigningKey::from_slice(&Sha256::digest(seed.as_bytes())).unwrap();
    let pem = github
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let document = serde_json::json!({
        "public_keys": [{"key_identifier": "test-key", "key": pem, "is_current": true}]
    });
    let dir = common::WorkDir::new();
    let file = dir.0.join("github-keys.json");
    std::fs::write(&file, document.to_string()).unwrap();
    let server = Server::start_in(
        dir.clone(),
        &[("NOUVEL_SECRET_SCANNING_KEYS", file.to_str().unwrap())],
    );
    let (status, _) = server.with_key("GET", "/api/v1/projects", &server.demo_key);
    assert_eq!(status, 200);

    let body = serde_json::json!([{
        "token": server.demo_key,
        "type": "nouvel_api_key",
        "url": "https://gist.github.com/someone/abc",
        "source": "gist",
    }])
    .to_string();
    let signature: Signature = github.sign(body.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes());
    let headers = [
        ("Content-Type", "application/json"),
        ("Github-Public-Key-Identifier", "test-key"),
        ("Github-Public-Key-Signature", signature.as_str()),
    ];
    let (status, answer) = server.request("POST", PATH, &headers, &body);
    assert_eq!(status, 200, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let hash: String = Sha256::digest(server.demo_key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        answer,
        serde_json::json!([{"token_hash": hash, "token_type": "nouvel_api_key", "label": "true_positive"}])
    );
    let (status, refused) = server.with_key("GET", "/api/v1/projects", &server.demo_key);
    assert_eq!(status, 401);
    assert!(refused.contains("disabled_api_key"), "{refused}");

    let (status, _) = server.request("POST", PATH, &[("Content-Type", "application/json")], &body);
    assert_eq!(status, 401, "unsigned");
}
