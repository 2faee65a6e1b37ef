//! Leaked-key reports: a router for GitHub's secret scanning partner program (feature
//! `secret-scanning`).
//!
//! GitHub scans public repositories, gists and more for strings that look like the
//! application's keys (its prefix and checksum: the README gives the regular expression to
//! register) and posts what it finds. The router checks the report's signature against
//! GitHub's public keys, and for each reported token answers whether it is a key of this
//! store (`true_positive`) or not (`false_positive`), in GitHub's feedback format: the
//! token's SHA-256 in hex, never the token. A key it finds is disabled (or only reported:
//! [`SecretScanningRouter::report_only`]) with an audit entry `key.exposed` by the actor
//! `{"kind": "scanner", "id": "github"}` and a `key.exposed` event carrying where it was
//! found; a second report of the same key changes nothing more.
//!
//! * `POST /` with a JSON array `[{"token", "type", "url", "source"}]` and the headers
//!   `Github-Public-Key-Identifier` and `Github-Public-Key-Signature` (the base64 of an
//!   ASN.1 ECDSA P-256 SHA-256 signature over the raw body): 200 and
//!   `[{"token_hash", "token_type", "label"}]`, one entry per reported token, in order.
//! * A missing, unknown or bad signature: 401 `invalid_signature`, nothing changes. A body
//!   that is not such an array: 400. Over 64 KiB: 413.
//! * A token that is not well-formed for the profile (prefix, length, checksum) is a
//!   `false_positive` without a store query.
//! * Each client address may send 60 requests a minute (axum's `ConnectInfo`); then 429
//!   `too_many_requests` with `Retry-After`.
//!
//! ```
//! use nouvel_auth::{secret_scanning::{ScannerKeys, SecretScanningRouter}, KeyManager, MemoryKeyStore};
//!
//! // GitHub's keys, as https://api.github.com/meta/public_keys/secret_scanning serves them
//! // (this one is made up).
//! let document = r#"{"public_keys": [{
//!     "key_identifier": "90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a",
//!     "key": "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEvWoYb6Zerey0/mSDjI6e+FNhg9yN\nt/tGkKECS2ymBZwPGHPQhPSofej3HCEGtGlX+DdMw0LBFEFBRM6kaQrIPA==\n-----END PUBLIC KEY-----\n",
//!     "is_current": true
//! }]}"#;
//! let github = ScannerKeys::from_github(document).unwrap();
//! assert!(ScannerKeys::from_github(r#"{"public_keys": []}"#).is_err());
//! let keys = KeyManager::new(MemoryKeyStore::new());
//! let app: axum::Router = axum::Router::new()
//!     .nest("/security/secret-scanning", SecretScanningRouter::new(keys, github).build());
//! ```

use std::{fmt, sync::Arc};

use axum::{
    extract::{FromRequest, Request, State},
    http::HeaderMap,
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use base64::{engine::general_purpose::STANDARD, Engine};
use p256::ecdsa::{signature::Verifier, Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::{
    manage::Actor,
    routers::{
        answered_in,
        per_address::{client_of, PerAddress},
        with_problems, Body, RouterError, Throttled,
    },
    KeyManager, KeyStorage, ManageError,
};

/// Requests a client address may send in a minute.
const REQUESTS_PER_MINUTE: u32 = 60;

/// The public keys a scanner signs its reports with.
#[derive(Clone)]
pub struct ScannerKeys(Vec<(String, VerifyingKey)>);

/// A public key document that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the scanner's public keys: {0}")]
pub struct InvalidScannerKeys(String);

#[derive(Deserialize)]
struct KeyDocument {
    public_keys: Vec<PublicKey>,
}

#[derive(Deserialize)]
struct PublicKey {
    key_identifier: String,
    key: String,
}

impl ScannerKeys {
    /// The keys of GitHub's document (`{"public_keys": [{"key_identifier", "key": "<PEM>",
    /// "is_current"}]}`), every one of them: a report signed by a key GitHub no longer
    /// calls current is still GitHub's.
    ///
    /// # Errors
    ///
    /// The document is not such JSON, holds no key, or a key is not a P-256 public key in
    /// PEM.
    pub fn from_github(document: &str) -> Result<Self, InvalidScannerKeys> {
        let document: KeyDocument =
            serde_json::from_str(document).map_err(|e| InvalidScannerKeys(e.to_string()))?;
        let keys = document
            .public_keys
            .into_iter()
            .map(|key| {
                VerifyingKey::from_public_key_pem(&key.key)
                    .map(|verifying| (key.key_identifier.clone(), verifying))
                    .map_err(|e| InvalidScannerKeys(format!("{}: {e}", key.key_identifier)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(InvalidScannerKeys("no key".to_owned()));
        }
        Ok(Self(keys))
    }

    /// Whether `signature` (base64 of ASN.1 DER) is the key `identifier`'s over `body`.
    fn verify(&self, identifier: &str, signature: &str, body: &[u8]) -> bool {
        let Some((_, key)) = self.0.iter().find(|(id, _)| id == identifier) else {
            return false;
        };
        let Ok(der) = STANDARD.decode(signature) else {
            return false;
        };
        Signature::from_der(&der).is_ok_and(|signature| key.verify(body, &signature).is_ok())
    }
}

impl fmt::Debug for ScannerKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(id, _)| id))
            .finish()
    }
}

/// The router that takes leaked-key reports; see [the module](self).
#[derive(Debug)]
pub struct SecretScanningRouter<S> {
    keys: KeyManager<S>,
    scanner: ScannerKeys,
    disable: bool,
}

impl<S: KeyStorage> SecretScanningRouter<S> {
    /// Reports from GitHub, signed by one of `github`'s keys, about `keys`' keys: a key
    /// found is disabled.
    #[must_use]
    pub fn new(keys: KeyManager<S>, github: ScannerKeys) -> Self {
        Self {
            keys: keys.acting_as(Actor::scanner("github")),
            scanner: github,
            disable: true,
        }
    }

    /// Marks a key found as exposed (audit entry, event, Key JSON's `exposure`) and leaves
    /// it working, for the application (or the key's owner) to decide.
    #[must_use]
    pub fn report_only(mut self) -> Self {
        self.disable = false;
        self
    }

    /// The router: `POST /`.
    pub fn build(self) -> Router {
        let profile = self.keys.profile().clone();
        let state = Arc::new(Scanning {
            keys: self.keys,
            scanner: self.scanner,
            disable: self.disable,
            requests: PerAddress::new(REQUESTS_PER_MINUTE),
        });
        let routes = Router::new()
            .route("/", post(report::<S>))
            .with_state(state);
        answered_in(with_problems(routes), profile)
    }
}

struct Scanning<S> {
    keys: KeyManager<S>,
    scanner: ScannerKeys,
    disable: bool,
    requests: PerAddress,
}

/// One reported token.
#[derive(Deserialize)]
struct Found {
    token: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    source: String,
}

/// What GitHub is told of one token.
#[derive(Serialize)]
struct Feedback {
    token_hash: String,
    token_type: String,
    label: &'static str,
}

async fn report<S: KeyStorage>(
    State(scanning): State<Arc<Scanning<S>>>,
    request: Request,
) -> Response {
    match answer(&scanning, request).await {
        Ok(feedback) => Json(feedback).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn answer<S: KeyStorage>(
    scanning: &Scanning<S>,
    request: Request,
) -> Result<Vec<Feedback>, RouterError> {
    if let Some(client) = client_of(&request) {
        let now = Instant::now();
        if let Some(wait) = scanning.requests.blocked(client, now) {
            return Err(RouterError::TooMany(Throttled::Requests, wait));
        }
        scanning.requests.count(client, now);
    }
    let headers: HeaderMap = request.headers().clone();
    let Ok(body) = Body::from_request(request, &()).await;
    let body = body.bytes()?;
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let signed = match (
        header("github-public-key-identifier"),
        header("github-public-key-signature"),
    ) {
        (Some(identifier), Some(signature)) => {
            scanning.scanner.verify(identifier, signature, &body)
        }
        _ => false,
    };
    if !signed {
        return Err(RouterError::InvalidSignature);
    }
    // Not serde's message: it would quote the body's strings, and they are tokens.
    let found: Vec<Found> = serde_json::from_slice(&body).map_err(|_| {
        RouterError::MalformedJson(
            "a report is an array of {\"token\", \"type\", \"url\", \"source\"} objects of strings"
                .to_owned(),
        )
    })?;
    let mut feedback = Vec::with_capacity(found.len());
    for found in found {
        let live = scanning.expose(&found).await?;
        feedback.push(Feedback {
            token_hash: hex(&Sha256::digest(found.token.as_bytes())),
            token_type: found.kind,
            label: if live {
                "true_positive"
            } else {
                "false_positive"
            },
        });
    }
    Ok(feedback)
}

impl<S: KeyStorage> Scanning<S> {
    /// Whether `found` is a key of the store; marks it exposed if it is.
    async fn expose(&self, found: &Found) -> Result<bool, ManageError> {
        let profile = self.keys.profile();
        // Not well-formed for the profile: no key of the store, and no query to say so.
        let Ok(key) = profile.prefix().parse(&found.token) else {
            return Ok(false);
        };
        let storage = self.keys.storage();
        let now = profile.clock_handle().now();
        let Some(record) = storage.lookup(&storage.digest(&key), now).await? else {
            return Ok(false);
        };
        let exposed = self
            .keys
            .expose_key(
                &record.account_id,
                &record.id,
                &found.url,
                &found.source,
                self.disable,
            )
            .await;
        match exposed {
            Ok(_) => Ok(true),
            // Deleted since the lookup: no longer a key of the store.
            Err(ManageError::NotFound) => Ok(false),
            Err(error) => Err(error),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
