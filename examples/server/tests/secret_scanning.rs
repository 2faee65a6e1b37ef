//! Leaked-key reports over real HTTP (README, "Leaked keys"): the example takes them at
//! `/security/secret-scanning` when `NOUVEL_SECRET_SCANNING_KEYS` names GitHub's public
//! keys, and answers 404 there otherwise.

mod common;

use common::{Scanner, Server, WorkDir};
use sha2::{Digest, Sha256};

#[test]
fn without_githubs_keys_the_route_is_a_404() {
    let server = Server::start(&[]);
    let (status, body) = server.request("POST", "/security/secret-scanning", &[], "[]");
    assert_eq!(status, 404, "{body}");
}

#[test]
fn a_signed_report_of_the_demo_key_disables_it() {
    let dir = WorkDir::new();
    let scanner = Scanner::new(&dir);
    let server = Server::start_in(
        dir,
        &[(
            "NOUVEL_SECRET_SCANNING_KEYS",
            scanner.document.to_str().unwrap(),
        )],
    );
    let (status, _) = server.with_key("GET", "/api/v1/projects", &server.demo_key);
    assert_eq!(status, 200);

    let url = "https://gist.github.com/someone/abc";
    let (status, answer) = scanner.report(&server, &server.demo_key, url, "gist");
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

    let unsigned = r#"[{"token": "nvl_x", "type": "nouvel_api_key"}]"#;
    let (status, _) = server.request(
        "POST",
        "/security/secret-scanning",
        &[("Content-Type", "application/json")],
        unsigned,
    );
    assert_eq!(status, 401, "unsigned");
}
