//! The middleware's types besides [`NouvelAuthLayer`](crate::NouvelAuthLayer): the service
//! it makes, [`NouvelAuth`], its [`ResponseFuture`] and [`ResponseBody`], and the headers
//! it adds.
//!
//! Inside, the request's path through the checks is `Checks::begin`, continued by
//! `Checks::resume` when the store or the limiter must be waited for.

mod body;
mod future;
pub(crate) mod layer;
mod service;
mod slots;

pub(crate) use slots::Unflushed;
use slots::{Slot, Slots};

use std::{net::IpAddr, sync::Arc, task::Poll, time::Duration};

use http::{header::AUTHORIZATION, HeaderName, HeaderValue, Request};
use time::OffsetDateTime;

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use crate::extract::KeyRejection;
pub use body::ResponseBody;
pub use future::ResponseFuture;
pub use service::NouvelAuth;

use crate::{
    clock::SharedClock,
    credentials::presented_key,
    error::within,
    limit::Subject,
    network::client_address,
    quiet::{warn_quietly, Quiet},
    reject::Problems,
    routes::{client_path, Access},
    usage::Outcome,
    BackendError, Decision, KeyDigest, KeyRecord, KeyStore, RateLimiter, RateLimits, Rejection,
    RouteTable,
};

/// How close an expiration must be for the profile's
/// [expiry header](crate::Profile::expiry_header) to appear on a successful response: the
/// key's expiration as an RFC 3339 timestamp in whole seconds.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The layer's settings.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) routes: RouteTable,
    /// The profile's, kept here too: every request reads it.
    pub(crate) clock: SharedClock,
    pub(crate) lookup_timeout: Duration,
    pub(crate) limiter_timeout: Duration,
    pub(crate) keep_authorization: bool,
    pub(crate) flush_interval: Duration,
}

/// Everything a request is checked against: store, limiter, usage and settings. Made once
/// per layer and shared by every service the layer makes.
pub(crate) struct Checks<K, L: RateLimiter> {
    pub(crate) store: Arc<K>,
    pub(crate) limiter: Arc<L>,
    pub(crate) slots: Arc<Slots<L>>,
    /// Shared with the requests that pass without a key, for their extractor's 401.
    pub(crate) problems: Arc<Problems>,
    pub(crate) config: Config,
}

/// A copy for a layer whose settings change while a clone shares them: the same store,
/// limiter and usage.
impl<K, L: RateLimiter> Clone for Checks<K, L> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            limiter: self.limiter.clone(),
            slots: self.slots.clone(),
            problems: self.problems.clone(),
            config: self.config.clone(),
        }
    }
}

/// A request that passed every check: its key, and what its response's headers say.
pub(crate) struct Admission {
    pub(crate) key: Arc<KeyRecord>,
    pub(crate) headers: ResponseHeaders,
}

/// What the headers of an admitted request's response say.
pub(crate) struct ResponseHeaders {
    decision: Decision,
    /// The expiry warning's header and instant, for a key expiring soon.
    expires_soon: Option<(HeaderName, OffsetDateTime)>,
}

/// Why [`Checks::begin`] stopped before admitting a request.
pub(crate) enum Stop {
    /// A public route, or an optional one without a key: straight to the inner service.
    Pass,
    /// Refused.
    Refused(Rejection),
    /// The store or the limiter must be waited for: [`Checks::resume`] goes on from there.
    Wait(Wait),
}

impl From<Rejection> for Stop {
    fn from(rejection: Rejection) -> Self {
        Self::Refused(rejection)
    }
}

/// Where the checks wait, and what they carry there.
pub(crate) struct Wait {
    step: Step,
    access: Access,
    now: OffsetDateTime,
}

enum Step {
    /// For the store's lookup of the key, then the limiter; with the request's client
    /// address, for a key with an allow-list.
    Lookup(KeyDigest, Option<IpAddr>),
    /// For the limiter, the key having passed 401 to 403.
    Limit(Arc<KeyRecord>, RateLimits),
}

impl<K: KeyStore, L: RateLimiter> Checks<K, L> {
    /// The request's path, in the contract's order, as far as it goes without waiting:
    /// route (public paths stop here), credentials (401, no I/O), the store's record of the
    /// key (401), plan (402), permission (403), network (403), limit (429). A memory store,
    /// a warm cache and a memory limiter answer every step here, with no allocation.
    pub(crate) fn begin<B>(&self, request: &mut Request<B>) -> Result<Admission, Stop> {
        let access = self
            .config
            .routes
            .access(request.method(), client_path(request));
        if access == Access::Public
            || (access == Access::Optional && !request.headers().contains_key(AUTHORIZATION))
        {
            return Err(Stop::Pass);
        }
        let key = presented_key(request.headers(), self.problems.profile().prefix())
            .inspect_err(log_unauthenticated)?;
        let digest = self.store.digest(&key);
        if !self.config.keep_authorization {
            request.headers_mut().remove(AUTHORIZATION);
        }
        // One instant for every judgment of this request: expiry, cache freshness, limit.
        let now = self.config.clock.now();
        let wait = |step| Stop::Wait(Wait { step, access, now });
        let trusted = self.problems.profile().trusted_proxy_networks();
        let key = match self.store.lookup_now(&digest, now) {
            Poll::Ready(found) => authenticate(found, now)?,
            Poll::Pending => {
                let client = client_address(request, trusted);
                return Err(wait(Step::Lookup(digest, client)));
            }
        };
        let decided = {
            let slot = self.slots.of(&key);
            let client = || client_address(request, trusted);
            let limits = self.authorize(&key, &slot, access, client, now)?;
            let account_window = self.slots.account_window(&key, &limits);
            let subject = subject(&key, &slot, account_window.as_deref());
            match self.limiter.check_now(subject, limits, now) {
                Poll::Ready(decision) => {
                    Ok(self.admit(&key, &slot, access, limited(decision), now)?)
                }
                Poll::Pending => Err(limits),
            }
        };
        match decided {
            Ok(headers) => Ok(Admission { key, headers }),
            Err(limits) => Err(wait(Step::Limit(key, limits))),
        }
    }

    /// The rest of [`begin`](Self::begin)'s path from where it had to wait. A backend that
    /// fails or times out answers 503.
    pub(crate) async fn resume(
        &self,
        Wait { step, access, now }: Wait,
    ) -> Result<Admission, Rejection> {
        let (key, limits) = match step {
            Step::Lookup(digest, client) => {
                let found = within(self.config.lookup_timeout, self.store.lookup(&digest, now))
                    .await
                    .map_err(|error| unavailable("key store", &error))?;
                let key = authenticate(found, now)?;
                let slot = self.slots.of(&key);
                let limits = self.authorize(&key, &slot, access, || client, now)?;
                (key, limits)
            }
            Step::Limit(key, limits) => (key, limits),
        };
        let headers = {
            let slot = self.slots.of(&key);
            let account_window = self.slots.account_window(&key, &limits);
            let subject = subject(&key, &slot, account_window.as_deref());
            let decision = within(
                self.config.limiter_timeout,
                self.limiter.check(subject, limits, now),
            )
            .await
            .map_err(|error| unavailable("rate limiter", &error))
            .and_then(limited);
            self.admit(&key, &slot, access, decision, now)?
        };
        Ok(Admission { key, headers })
    }

    /// Plan (402), the route's permission (403), then the key's networks (403: `client`
    /// is asked only for a key with an allow-list); the key's limits if all pass. A
    /// refusal counts in the key's usage.
    fn authorize(
        &self,
        key: &KeyRecord,
        slot: &Slot<L::Window>,
        access: Access,
        client: impl FnOnce() -> Option<IpAddr>,
        now: OffsetDateTime,
    ) -> Result<RateLimits, Rejection> {
        let authorized = if self.problems.profile().plans().allows_api_keys(&key.plan) {
            access
                .authorize(key.permissions)
                .and_then(|()| match &key.allowed_networks {
                    Some(networks) if !client().is_some_and(|ip| networks.contains(ip)) => {
                        Err(Rejection::NetworkNotAllowed)
                    }
                    _ => Ok(()),
                })
        } else {
            Err(Rejection::PlanRequired(key.plan.clone()))
        };
        authorized
            .map(|()| {
                self.problems
                    .profile()
                    .limits_of(&key.plan, key.rate_limits)
            })
            .inspect_err(|rejection| self.refused(key, slot, rejection, now))
    }

    /// The limiter's `decision` (429 or 503 when it refused or failed), counted in the
    /// key's usage; for an admission, what its response's headers say.
    fn admit(
        &self,
        key: &KeyRecord,
        slot: &Slot<L::Window>,
        access: Access,
        decision: Result<Decision, Rejection>,
        now: OffsetDateTime,
    ) -> Result<ResponseHeaders, Rejection> {
        let decision = decision.inspect_err(|rejection| self.refused(key, slot, rejection, now))?;
        let needed = match access {
            Access::Requires(permission) => Some(permission),
            _ => None,
        };
        self.slots
            .count(&key.id, slot, Outcome::Admitted, needed, now);
        self.slots.sweep_if_due(&self.limiter, now);
        Ok(ResponseHeaders {
            decision,
            expires_soon: key
                .expires_at
                .filter(|&at| at - now <= EXPIRY_WARNING)
                .map(|at| (self.problems.profile().expiry_header_name().clone(), at)),
        })
    }

    /// Counts a refusal of an authenticated request in the key's usage, and logs it.
    fn refused(
        &self,
        key: &KeyRecord,
        slot: &Slot<L::Window>,
        rejection: &Rejection,
        now: OffsetDateTime,
    ) {
        if let Some(outcome) = rejection.outcome() {
            self.slots.count(&key.id, slot, outcome, None, now);
        }
        // DEBUG, as every refusal: a client can send thousands a second, and their counts are
        // in the key's usage and the metrics.
        tracing::debug!(key_id = %key.id, code = rejection.code(), "nouvel-auth rejected a request");
    }
}

/// 401: the store's record of the digest, whether it is disabled, and its expiry at `now`.
fn authenticate(
    found: Option<Arc<KeyRecord>>,
    now: OffsetDateTime,
) -> Result<Arc<KeyRecord>, Rejection> {
    let verdict = match found {
        None => Err(Rejection::UnknownApiKey),
        Some(key) if key.disabled => Err(Rejection::DisabledApiKey),
        Some(key) if key.is_expired(now) => Err(Rejection::ExpiredApiKey),
        Some(key) => Ok(key),
    };
    verdict.inspect_err(log_unauthenticated)
}

/// Whose request `key`'s is, for the limiter: the window of the first key of its rotation
/// chain, and its account's if a limit is counted per account.
fn subject<'a, W>(
    key: &'a KeyRecord,
    slot: &'a Slot<W>,
    account_window: Option<&'a W>,
) -> Subject<'a, W> {
    Subject {
        key: key.limit_id(),
        account: &key.account_id,
        key_window: slot.window(),
        account_window,
    }
}

/// 429 unless the limiter admitted the request.
fn limited(decision: Decision) -> Result<Decision, Rejection> {
    if decision.allowed {
        Ok(decision)
    } else {
        Err(Rejection::RateLimited(Box::new(decision)))
    }
}

impl ResponseHeaders {
    /// The rate-limit headers, and the expiry warning.
    pub(crate) fn write(&self, headers: &mut http::HeaderMap) {
        self.decision.write_headers(headers);
        if let Some((name, at)) = &self.expires_soon {
            headers.insert(name, whole_seconds(*at));
        }
    }
}

/// `at` as RFC 3339 in UTC, to the second: `2026-07-01T12:00:00Z`.
fn whole_seconds(at: OffsetDateTime) -> HeaderValue {
    let at = at.to_offset(time::UtcOffset::UTC);
    crate::limit::header_value(format_args!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    ))
}

fn log_unauthenticated(rejection: &Rejection) {
    tracing::debug!(code = rejection.code(), "nouvel-auth rejected a request");
}

fn unavailable(what: &str, error: &BackendError) -> Rejection {
    static STORE: Quiet = Quiet::new();
    static LIMITER: Quiet = Quiet::new();
    let kind = if what == "key store" {
        &STORE
    } else {
        &LIMITER
    };
    warn_quietly!(kind, %error, "nouvel-auth: the {what} is unavailable; answering 503");
    Rejection::Unavailable
}
