//! The built-in sink: events as Standard Webhooks (<https://www.standardwebhooks.com>).

use std::{fmt, str::FromStr, time::Duration};

use base64::{engine::general_purpose::STANDARD, Engine};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::{Event, EventSink, SinkError};

/// The secret a receiver checks webhook signatures with: `whsec_` and the base64 of its
/// bytes, as Standard Webhooks writes it. Its `Debug` shows nothing of it.
///
/// ```
/// use nouvel_auth::events::WebhookSecret;
///
/// let secret: WebhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse().unwrap();
/// let signature = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
/// assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
/// assert!("whsec_not base64".parse::<WebhookSecret>().is_err());
/// ```
#[derive(Clone)]
pub struct WebhookSecret(Zeroizing<Vec<u8>>);

impl WebhookSecret {
    /// A new random secret of 24 bytes.
    #[must_use]
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new(vec![0u8; 24]);
        getrandom::fill(&mut bytes).expect("the operating system's random source");
        Self(bytes)
    }

    /// The secret as a receiver is given it: `whsec_…`.
    #[must_use]
    pub fn expose_secret(&self) -> String {
        format!("whsec_{}", STANDARD.encode(&*self.0))
    }

    /// The `webhook-signature` of a message: `v1,` and the base64 of the HMAC-SHA256 of
    /// `<id>.<timestamp>.<body>` keyed by the secret's bytes.
    #[must_use]
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

impl FromStr for WebhookSecret {
    type Err = InvalidWebhook;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let encoded = text.strip_prefix("whsec_").unwrap_or(text);
        let bytes = STANDARD
            .decode(encoded)
            .map_err(|_| InvalidWebhook::Secret)?;
        if bytes.is_empty() {
            return Err(InvalidWebhook::Secret);
        }
        Ok(Self(Zeroizing::new(bytes)))
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(…)")
    }
}

/// A webhook's URL or secret that cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidWebhook {
    /// The secret is not `whsec_` and base64.
    #[error("a webhook secret is `whsec_` followed by base64")]
    Secret,
    /// The URL is not an `http` or `https` URL.
    #[error("a webhook URL is an http:// or https:// URL")]
    Url,
}

/// The [`EventSink`] that posts each event to a URL as a Standard Webhook: the event's
/// JSON as the body, `webhook-id` (the event's id, the same on every retry),
/// `webhook-timestamp` (Unix seconds of the attempt) and `webhook-signature`
/// ([`WebhookSecret::sign`]). An answer other than 2xx, or none within 10 seconds, is a
/// failure: the dispatcher tries again later. Redirects are not followed.
///
/// ```
/// use nouvel_auth::{
///     events::{EventDispatcher, WebhookSecret, WebhookSender}, KeyManager, MemoryKeyStore,
/// };
///
/// let secret = WebhookSecret::generate();
/// let sender = WebhookSender::new("https://hooks.example.com/nouvel", secret).unwrap();
/// let dispatcher = EventDispatcher::new(KeyManager::new(MemoryKeyStore::new())).sink(sender);
/// # drop(dispatcher);
/// ```
#[derive(Debug, Clone)]
pub struct WebhookSender {
    url: reqwest::Url,
    secret: WebhookSecret,
    client: reqwest::Client,
}

impl WebhookSender {
    /// A sender to `url`, signing with `secret`.
    ///
    /// # Errors
    ///
    /// `url` is not an `http` or `https` URL.
    pub fn new(url: &str, secret: WebhookSecret) -> Result<Self, InvalidWebhook> {
        let url = reqwest::Url::parse(url).map_err(|_| InvalidWebhook::Url)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(InvalidWebhook::Url);
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|_| InvalidWebhook::Url)?;
        Ok(Self {
            url,
            secret,
            client,
        })
    }
}

impl EventSink for WebhookSender {
    async fn deliver(&self, event: &Event) -> Result<(), SinkError> {
        let body = event.to_json();
        let timestamp = OffsetDateTime::now_utc().unix_timestamp();
        let signature = self.secret.sign(&event.id, timestamp, body.as_bytes());
        let answer = self
            .client
            .post(self.url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", &event.id)
            .header("webhook-timestamp", timestamp)
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|error| SinkError::new(error.without_url()))?;
        if answer.status().is_success() {
            Ok(())
        } else {
            Err(SinkError::new(format!(
                "the webhook answered {}",
                answer.status()
            )))
        }
    }
}
