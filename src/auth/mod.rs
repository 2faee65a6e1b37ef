//! The middleware: [`NouvelAuthLayer`], [`NouvelAuth`], [`ResponseFuture`], [`ResponseBody`],
//! and the request's path through the checks ([`Checks::screen`], then
//! [`Checks::verify_now`] or, when the store or the limiter must wait, [`Checks::verify`]).

mod body;
mod future;
mod layer;
mod service;

use std::{sync::Arc, time::Duration};

use http::{HeaderName, HeaderValue, Request};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

pub use body::ResponseBody;
pub use future::ResponseFuture;
pub use layer::NouvelAuthLayer;
pub use service::NouvelAuth;

use crate::{
    clock::SharedClock,
    credentials::presented_key,
    error::within,
    limit::Decision,
    reject::{ProblemStyle, Problems},
    routes::Access,
    usage::{Outcome, UsageRecorder},
    BackendError, KeyDigest, KeyRecord, KeyStore, RateLimit, RateLimiter, Rejection, RouteTable,
};

/// The header on successful responses whose key expires within [`EXPIRY_WARNING`]:
/// the key's expiration as an RFC 3339 timestamp.
pub const KEY_EXPIRES_HEADER: HeaderName = HeaderName::from_static("nouvel-key-expires-at");

/// How close an expiration must be for [`KEY_EXPIRES_HEADER`] to appear.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The layer's settings, copied into each service.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) routes: RouteTable,
    pub(crate) clock: SharedClock,
    pub(crate) default_limit: RateLimit,
    pub(crate) lookup_timeout: Duration,
    pub(crate) limiter_timeout: Duration,
    pub(crate) style: ProblemStyle,
    pub(crate) keep_authorization: bool,
}

/// Everything a request is checked against: store, limiter, usage and settings.
pub(crate) struct Checks<K, L> {
    pub(crate) store: Arc<K>,
    pub(crate) limiter: Arc<L>,
    pub(crate) usage: Arc<UsageRecorder>,
    pub(crate) problems: Problems,
    pub(crate) config: Config,
}

/// A request that passed every check.
pub(crate) struct Admission {
    pub(crate) record: KeyRecord,
    pub(crate) headers: SuccessHeaders,
}

/// What the headers of a successful response say.
pub(crate) struct SuccessHeaders {
    decision: Decision,
    expires_soon: Option<OffsetDateTime>,
}

/// What the checks that need no I/O decided about a request that may go on.
pub(crate) enum Screening {
    /// A public route: straight to the inner service.
    Public,
    /// A well-formed key, to be verified for a route that needs `access`.
    Verify { digest: KeyDigest, access: Access },
}

impl<K: KeyStore, L: RateLimiter> Checks<K, L> {
    /// The checks that need no I/O, run in `call`: the route's access, then the presented
    /// key's format (401), hashed at once so that from here on there is just its digest.
    /// A public path or a malformed key thus costs no allocation and no store lookup.
    pub(crate) fn screen<B>(&self, request: &Request<B>) -> Result<Screening, Rejection> {
        let access = self
            .config
            .routes
            .access(request.method(), request.uri().path());
        if access == Access::Public {
            return Ok(Screening::Public);
        }
        let key = presented_key(request.headers()).inspect_err(log_unauthenticated)?;
        Ok(Screening::Verify {
            digest: self.store.digest(&key),
            access,
        })
    }

    /// The rest of the request's path, done at once when the store and the limiter can
    /// answer without waiting ([`KeyStore::lookup_now`], [`RateLimiter::check_now`]), as in
    /// memory or from a warm cache. `None` when one of them cannot: then [`verify`](Self::verify)
    /// does it all, and nothing was recorded here.
    pub(crate) fn verify_now(
        &self,
        digest: &KeyDigest,
        access: Access,
        now: OffsetDateTime,
    ) -> Option<Result<Admission, Rejection>> {
        let found = self.store.lookup_now(digest, now)?;
        let record = match authenticate(found, now) {
            Ok(record) => record,
            Err(rejection) => return Some(Err(rejection)),
        };
        let decision = match self.authorize(&record, access) {
            Ok(limit) => limited(self.limiter.check_now(&record.id, limit, now)?),
            Err(rejection) => Err(rejection),
        };
        Some(self.conclude(record, decision, now))
    }

    /// The rest of the request's path, in the contract's order: the store's record and
    /// its expiry (401), plan (402), route permission (403), rate limit (429), all judged
    /// at `now`.
    pub(crate) async fn verify(
        &self,
        digest: &KeyDigest,
        access: Access,
        now: OffsetDateTime,
    ) -> Result<Admission, Rejection> {
        let found = within(self.config.lookup_timeout, self.store.lookup(digest, now))
            .await
            .map_err(|error| unavailable("key store", &error))?;
        let record = authenticate(found, now)?;
        let decision = match self.authorize(&record, access) {
            Ok(limit) => within(
                self.config.limiter_timeout,
                self.limiter.check(&record.id, limit, now),
            )
            .await
            .map_err(|error| unavailable("rate limiter", &error))
            .and_then(limited),
            Err(rejection) => Err(rejection),
        };
        self.conclude(record, decision, now)
    }

    /// 402 and 403: plan and route permission. The limit that applies if both pass.
    fn authorize(&self, record: &KeyRecord, access: Access) -> Result<RateLimit, Rejection> {
        if !record.plan.allows_api_keys() {
            return Err(Rejection::PlanRequired(record.plan));
        }
        access.authorize(record.permissions)?;
        Ok(record.rate_limit.unwrap_or(self.config.default_limit))
    }

    /// Counts the request against the key and, if it is admitted, what its response's
    /// headers say.
    fn conclude(
        &self,
        record: KeyRecord,
        decision: Result<Decision, Rejection>,
        now: OffsetDateTime,
    ) -> Result<Admission, Rejection> {
        let outcome = match &decision {
            Ok(_) => Some(Outcome::Admitted),
            Err(rejection) => rejection.outcome(),
        };
        if let Some(outcome) = outcome {
            self.usage.record(&record.id, outcome, now);
        }
        let decision = decision.inspect_err(|rejection| {
            tracing::info!(key_id = %record.id, code = rejection.code(), "nouvel-auth rejected a request");
        })?;
        let expires_soon = record.expires_at.filter(|&at| at - now <= EXPIRY_WARNING);
        Ok(Admission {
            record,
            headers: SuccessHeaders {
                decision,
                expires_soon,
            },
        })
    }
}

/// 401: the store's record of the digest, and its expiry at `now`.
fn authenticate(found: Option<KeyRecord>, now: OffsetDateTime) -> Result<KeyRecord, Rejection> {
    let verdict = match found {
        None => Err(Rejection::UnknownApiKey),
        Some(record) if record.is_expired(now) => Err(Rejection::ExpiredApiKey),
        Some(record) => Ok(record),
    };
    verdict.inspect_err(log_unauthenticated)
}

/// 429 unless the limiter admitted the request.
fn limited(decision: Decision) -> Result<Decision, Rejection> {
    if decision.allowed {
        Ok(decision)
    } else {
        Err(Rejection::RateLimited(decision))
    }
}

impl SuccessHeaders {
    /// The rate-limit headers, and the expiry warning.
    pub(crate) fn write(&self, headers: &mut http::HeaderMap) {
        self.decision.write_headers(headers);
        if let Some(at) = self.expires_soon.and_then(|at| at.format(&Rfc3339).ok()) {
            if let Ok(value) = HeaderValue::try_from(at) {
                headers.insert(KEY_EXPIRES_HEADER, value);
            }
        }
    }
}

fn log_unauthenticated(rejection: &Rejection) {
    tracing::debug!(code = rejection.code(), "nouvel-auth rejected a request");
}

fn unavailable(what: &str, error: &BackendError) -> Rejection {
    tracing::warn!(%error, "nouvel-auth: the {what} is unavailable; answering 503");
    Rejection::Unavailable
}
