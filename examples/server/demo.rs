//! The example's own sign-in (an application brings its own): one-time codes for links,
//! sessions by cookie, and sign-out.
//!
//! * `GET /demo/sign-in?code=CODE`: a printed link, good once and for 10 minutes; sets
//!   the session cookie and answers 303 to the settings page.
//! * `POST /demo/sign-in` with the admin token and `{"account_id": "…"}`: signs in as any
//!   account, for scripts (204 with the cookie). The token is guarded as on `/admin`.
//! * `POST /demo/sign-out`: ends the session (the cookie cleared) and answers 303 to the
//!   settings page, which then asks to sign in: the page's "Sign out" button posts here.
//!
//! A session ends after 12 hours without a request.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::{Query, State},
    http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use nouvel_auth::{
    admin::AdminToken,
    key::AccountId,
    key::ApiKey,
    settings::{Session, SignedInUser},
    KeyManager, KeyStorage, ManageError, Problem,
};
use serde_json::Value;
use tokio::time::Instant;

/// The session cookie's name.
const COOKIE: &str = "demo_session";
/// Where the settings router is mounted.
pub(crate) const SETTINGS_PAGE: &str = "/settings/api-keys";
/// How long a printed sign-in link works.
const CODE_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// How long a session lasts without a request.
const SESSION_IDLE: Duration = Duration::from_secs(12 * 60 * 60);

/// Random letters and digits: 26 base62 characters, from a fresh key's random part.
pub(crate) fn random_token() -> String {
    ApiKey::generate().expose_secret()[4..30].to_owned()
}

/// One-time codes and sessions, each with the time it was made or last used.
pub(crate) struct Demo<K> {
    keys: KeyManager<K>,
    codes: Arc<Mutex<HashMap<String, (AccountId, Instant)>>>,
    sessions: Arc<Mutex<HashMap<String, (AccountId, Instant)>>>,
}

impl<K> Clone for Demo<K> {
    fn clone(&self) -> Self {
        Self {
            keys: self.keys.clone(),
            codes: self.codes.clone(),
            sessions: self.sessions.clone(),
        }
    }
}

/// `map` locked; a panic elsewhere left its data whole, so poisoning is ignored.
fn locked<T>(map: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    map.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<K: KeyStorage> Demo<K> {
    /// An error answered as the application answers every refusal (its profile's).
    fn refused(&self, status: StatusCode, code: &'static str, detail: &'static str) -> Response {
        let problem = Problem::new(status, code, detail);
        self.keys
            .profile()
            .respond(&problem)
            .map(axum::body::Body::from)
    }

    pub(crate) fn new(keys: KeyManager<K>) -> Self {
        Self {
            keys,
            codes: Arc::default(),
            sessions: Arc::default(),
        }
    }

    /// A one-time code that signs in as `account` within the next 10 minutes.
    pub(crate) fn code_for(&self, account: &AccountId) -> String {
        let code = random_token();
        let now = Instant::now();
        let mut codes = locked(&self.codes);
        codes.retain(|_, (_, made)| now < *made + CODE_LIFETIME);
        codes.insert(code.clone(), (account.clone(), now));
        code
    }

    /// The account of `code`, once, if it is not older than 10 minutes.
    fn redeem(&self, code: &str) -> Option<AccountId> {
        let (account, made) = locked(&self.codes).remove(code)?;
        (Instant::now() < made + CODE_LIFETIME).then_some(account)
    }

    /// 204 or 303 with a new session's cookie.
    fn signed_in(&self, account: AccountId, status: StatusCode) -> Response {
        let session = random_token();
        let now = Instant::now();
        let mut sessions = locked(&self.sessions);
        sessions.retain(|_, (_, seen)| now < *seen + SESSION_IDLE);
        sessions.insert(session.clone(), (account, now));
        let cookie = format!("{COOKIE}={session}; HttpOnly; SameSite=Strict; Path=/");
        let mut response = (status, [(header::SET_COOKIE, cookie)]).into_response();
        if status == StatusCode::SEE_OTHER {
            response
                .headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static(SETTINGS_PAGE));
        }
        response
    }

    /// The user of the request's session, if it names one that has not idled out; the
    /// request counts as its use.
    pub(crate) fn user(&self, headers: &HeaderMap) -> Option<SignedInUser> {
        let session = session_in(headers)?;
        let now = Instant::now();
        let mut sessions = locked(&self.sessions);
        let (account, seen) = sessions.get_mut(session)?;
        if now >= *seen + SESSION_IDLE {
            sessions.remove(session);
            return None;
        }
        *seen = now;
        let user = format!("demo-user-of-{account}");
        Some(SignedInUser::new(account.clone(), user))
    }

    /// The routes of the sign-in; the admin token guards the one for scripts.
    pub(crate) fn routes(self, admin: AdminToken) -> Router {
        Router::new()
            .route("/demo/sign-in", get(sign_in_by_link::<K>))
            .route("/demo/sign-in", post(sign_in_as::<K>).route_layer(admin))
            .route("/demo/sign-out", post(sign_out::<K>))
            .with_state(self)
    }
}

/// The demo's sessions are the settings router's.
impl<K: KeyStorage> Session for Demo<K> {
    async fn signed_in(&self, request: &Parts) -> Result<Option<SignedInUser>, Response> {
        Ok(self.user(&request.headers))
    }
}

/// The session named by the request's cookie.
fn session_in(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// `GET /demo/sign-in?code=…`: the printed link, good once.
async fn sign_in_by_link<K: KeyStorage>(
    State(demo): State<Demo<K>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    match query.get("code").and_then(|code| demo.redeem(code)) {
        Some(account) => demo.signed_in(account, StatusCode::SEE_OTHER),
        None => demo.refused(
            StatusCode::UNAUTHORIZED,
            "invalid_code",
            "This sign-in link was used already, has expired, or was never made.",
        ),
    }
}

/// `POST /demo/sign-in` with `{"account_id": "…"}`, behind the admin token: for scripts.
async fn sign_in_as<K: KeyStorage>(State(demo): State<Demo<K>>, body: Bytes) -> Response {
    let account = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|body| body.get("account_id")?.as_str().map(AccountId::from));
    let Some(account) = account else {
        return demo.refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "The body must be {\"account_id\": \"…\"}.",
        );
    };
    match demo.keys.account(&account).await {
        Ok(_) => demo.signed_in(account, StatusCode::NO_CONTENT),
        Err(ManageError::NotFound) => {
            demo.refused(StatusCode::NOT_FOUND, "not_found", "No such account.")
        }
        Err(_) => demo.refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "auth_unavailable",
            "The key store is unavailable.",
        ),
    }
}

/// `POST /demo/sign-out`: the session ends, and its cookie is cleared.
async fn sign_out<K: KeyStorage>(State(demo): State<Demo<K>>, headers: HeaderMap) -> Response {
    if let Some(session) = session_in(&headers) {
        locked(&demo.sessions).remove(session);
    }
    let cleared = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cleared),
            (header::LOCATION, SETTINGS_PAGE.to_owned()),
        ],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nouvel_auth::{nouvel, MemoryKeyStore};

    async fn demo() -> (Demo<MemoryKeyStore>, AccountId) {
        let keys = KeyManager::new(MemoryKeyStore::new());
        let account = keys.create_account("Demo", nouvel::SCALE).await.unwrap();
        (Demo::new(keys), account.id)
    }

    /// The request headers that present the cookie `response` set.
    fn cookie_of(response: &Response) -> HeaderMap {
        let set = response.headers()[header::SET_COOKIE].to_str().unwrap();
        let pair = set.split(';').next().unwrap().to_owned();
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, pair.parse().unwrap());
        headers
    }

    #[tokio::test(start_paused = true)]
    async fn a_sign_in_code_works_once_and_for_ten_minutes() {
        let (demo, account) = demo().await;
        let code = demo.code_for(&account);
        assert_eq!(demo.redeem(&code), Some(account.clone()));
        assert_eq!(demo.redeem(&code), None, "used once");
        let late = demo.code_for(&account);
        tokio::time::advance(CODE_LIFETIME - Duration::from_secs(1)).await;
        let on_time = demo.code_for(&account);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(demo.redeem(&late), None, "expired");
        assert_eq!(demo.redeem(&on_time), Some(account));
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_ends_after_twelve_idle_hours_and_at_sign_out() {
        let (demo, account) = demo().await;
        let signed_in = cookie_of(&demo.signed_in(account.clone(), StatusCode::NO_CONTENT));
        // Each use keeps it alive for 12 hours more.
        for _ in 0..3 {
            tokio::time::advance(SESSION_IDLE - Duration::from_secs(1)).await;
            assert_eq!(demo.user(&signed_in).unwrap().account_id, account);
        }
        tokio::time::advance(SESSION_IDLE).await;
        assert!(demo.user(&signed_in).is_none(), "idled out");

        let again = cookie_of(&demo.signed_in(account, StatusCode::NO_CONTENT));
        assert!(demo.user(&again).is_some());
        let out = sign_out(State(demo.clone()), again.clone()).await;
        assert_eq!(out.status(), StatusCode::SEE_OTHER);
        assert_eq!(out.headers()[header::LOCATION], SETTINGS_PAGE);
        assert!(out.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0"));
        assert!(demo.user(&again).is_none(), "signed out");
    }
}
