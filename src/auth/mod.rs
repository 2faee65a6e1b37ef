//! The middleware: [`NouvelAuthLayer`], [`NouvelAuth`], [`ResponseFuture`], [`ResponseBody`],
//! and the request's path through the checks ([`Checks::screen`], then
//! [`Checks::verify_now`] and, when the store or the limiter must wait, [`Checks::finish`]).

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
    reject::Problems,
    routes::Access,
    usage::{Outcome, UsageRecorder},
    BackendError, KeyDigest, KeyRecord, KeyStore, RateLimit, RateLimiter, Rejection, RouteTable,
};

/// The header on successful responses whose key expires within [`EXPIRY_WARNING`]:
/// the key's expiration as an RFC 3339 timestamp.
pub const KEY_EXPIRES_HEADER: HeaderName = HeaderName::from_static("nouvel-key-expires-at");

/// How close an expiration must be for [`KEY_EXPIRES_HEADER`] to appear.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The layer's settings.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) routes: RouteTable,
    pub(crate) clock: SharedClock,
    pub(crate) default_limit: RateLimit,
    pub(crate) lookup_timeout: Duration,
    pub(crate) limiter_timeout: Duration,
    pub(crate) keep_authorization: bool,
}

/// Everything a request is checked against: store, limiter, usage and settings. Made once
/// per layer and shared by every service the layer makes.
pub(crate) struct Checks<K, L> {
    pub(crate) store: Arc<K>,
    pub(crate) limiter: Arc<L>,
    pub(crate) usage: Arc<UsageRecorder>,
    pub(crate) problems: Problems,
    pub(crate) config: Config,
}

/// A copy for a layer whose settings change while a clone shares them: the same store,
/// limiter and usage.
impl<K, L> Clone for Checks<K, L> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            limiter: self.limiter.clone(),
            usage: self.usage.clone(),
            problems: self.problems.clone(),
            config: self.config.clone(),
        }
    }
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

/// How a request checked by the store and the limiter ends: admitted or refused.
pub(crate) type Verdict = Result<Admission, Rejection>;

/// How far a request's checks have got: where [`Checks::verify_now`] stopped, and each
/// step of [`Checks::finish`].
pub(crate) enum Progress {
    /// Every check answered.
    Done(Verdict),
    /// The store must be asked, and then the limiter.
    Lookup { digest: KeyDigest, access: Access },
    /// The key passed 401 to 403 and has `limit`; the limiter must be asked.
    Check { record: KeyRecord, limit: RateLimit },
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

    /// The rest of the request's path, as far as it goes without waiting: the store and the
    /// limiter answer at once ([`KeyStore::lookup_now`], [`RateLimiter::check_now`]) in
    /// memory or from a warm cache. Otherwise what is left, for [`finish`](Self::finish);
    /// nothing is recorded until a step has its answer, so each request counts once.
    pub(crate) fn verify_now(
        &self,
        digest: KeyDigest,
        access: Access,
        now: OffsetDateTime,
    ) -> Progress {
        let Some(found) = self.store.lookup_now(&digest, now) else {
            return Progress::Lookup { digest, access };
        };
        match self.authorize(found, access, now) {
            Progress::Check { record, limit } => {
                match self.limiter.check_now(&record.id, limit, now) {
                    Some(decision) => Progress::Done(self.conclude(record, limited(decision), now)),
                    None => Progress::Check { record, limit },
                }
            }
            progress => progress,
        }
    }

    /// What [`verify_now`](Self::verify_now) left, one step at a time: the store's lookup
    /// and the checks on its answer, then the limiter's. A backend that fails or times out
    /// answers 503.
    pub(crate) async fn finish(&self, mut progress: Progress, now: OffsetDateTime) -> Verdict {
        loop {
            progress = match progress {
                Progress::Done(verdict) => return verdict,
                Progress::Lookup { digest, access } => {
                    let found = within(self.config.lookup_timeout, self.store.lookup(&digest, now))
                        .await
                        .map_err(|error| unavailable("key store", &error))?;
                    self.authorize(found, access, now)
                }
                Progress::Check { record, limit } => {
                    let decision = within(
                        self.config.limiter_timeout,
                        self.limiter.check(&record.id, limit, now),
                    )
                    .await
                    .map_err(|error| unavailable("rate limiter", &error))
                    .and_then(limited);
                    Progress::Done(self.conclude(record, decision, now))
                }
            }
        }
    }

    /// The store's answer judged in the contract's order: the record and its expiry (401),
    /// plan (402), route permission (403). If all pass, the limiter is next, with the
    /// key's limit.
    fn authorize(&self, found: Option<KeyRecord>, access: Access, now: OffsetDateTime) -> Progress {
        let record = match authenticate(found, now) {
            Ok(record) => record,
            Err(rejection) => return Progress::Done(Err(rejection)),
        };
        let permitted = if record.plan.allows_api_keys() {
            access.authorize(record.permissions)
        } else {
            Err(Rejection::PlanRequired(record.plan))
        };
        match permitted {
            Ok(()) => Progress::Check {
                limit: record.rate_limit.unwrap_or(self.config.default_limit),
                record,
            },
            Err(rejection) => Progress::Done(self.conclude(record, Err(rejection), now)),
        }
    }

    /// Counts the request against the key and, if it is admitted, what its response's
    /// headers say.
    fn conclude(
        &self,
        record: KeyRecord,
        decision: Result<Decision, Rejection>,
        now: OffsetDateTime,
    ) -> Verdict {
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
