use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Extensions, HeaderMap, Request, Response};
use tower_service::Service;

use super::{Checks, ResponseBody, ResponseFuture, Stop};
#[cfg(feature = "metrics")]
use crate::metrics::CheckTimer;
use crate::{extract::Unauthenticated, KeyStore, RateLimiter, Rejection};

/// The middleware made by [`NouvelAuthLayer`](crate::NouvelAuthLayer).
///
/// Rejections are responses (`Ok`), never errors: `Error` stays `S::Error`.
pub struct NouvelAuth<S, K, L: RateLimiter> {
    inner: S,
    checks: Arc<Checks<K, L>>,
}

impl<S, K, L: RateLimiter> NouvelAuth<S, K, L> {
    pub(crate) fn new(inner: S, checks: Arc<Checks<K, L>>) -> Self {
        Self { inner, checks }
    }
}

impl<S, K, L, ReqBody, ResBody> Service<Request<ReqBody>> for NouvelAuth<S, K, L>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
    K: KeyStore,
    L: RateLimiter,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        #[cfg(feature = "metrics")]
        let timer = CheckTimer::start();
        let checks = &self.checks;
        checks
            .slots
            .start_flushing(&checks.store, checks.problems.profile());
        let wait = match checks.begin(&mut request) {
            Ok(admission) => {
                #[cfg(feature = "metrics")]
                timer.finish(ADMITTED);
                return ResponseFuture::admitted(&mut self.inner, request, admission);
            }
            Err(Stop::Pass) => {
                #[cfg(feature = "metrics")]
                timer.finish(PASSED);
                request
                    .extensions_mut()
                    .insert(Unauthenticated(checks.problems.clone()));
                return ResponseFuture::passed(self.inner.call(request));
            }
            Err(Stop::Refused(rejection)) => {
                #[cfg(feature = "metrics")]
                timer.finish(rejection.code());
                return ResponseFuture::rejected(refuse(&rejection, checks, request));
            }
            Err(Stop::Wait(wait)) => wait,
        };
        let checks = checks.clone();
        // Only this part waits (on the store or the limiter), so only it is boxed.
        let verification = Box::pin(async move {
            let verdict = checks.resume(wait).await;
            #[cfg(feature = "metrics")]
            timer.finish(verdict.as_ref().map_or_else(Rejection::code, |_| ADMITTED));
            verdict.map_err(|rejection| {
                checks
                    .problems
                    .respond(&rejection, HeaderMap::new(), Extensions::new())
            })
        });
        // The clone may not be ready: keep the one that is, as tower-http does.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::verify(verification, inner, request)
    }
}

/// The `outcome` of requests that reached the inner service with a key, and without one.
#[cfg(feature = "metrics")]
const ADMITTED: &str = "admitted";
#[cfg(feature = "metrics")]
const PASSED: &str = "passed";

/// The response refusing `request`, made in its header map and extensions (emptied): the
/// response reuses their allocations (behind `Router::layer`, axum has already put its own
/// extensions there).
fn refuse<K, L: RateLimiter, B>(
    rejection: &Rejection,
    checks: &Checks<K, L>,
    request: Request<B>,
) -> Response<Bytes> {
    let (parts, _) = request.into_parts();
    checks
        .problems
        .respond(rejection, parts.headers, parts.extensions)
}

impl<S: Clone, K, L: RateLimiter> Clone for NouvelAuth<S, K, L> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            checks: self.checks.clone(),
        }
    }
}

impl<S: fmt::Debug, K, L: RateLimiter> fmt::Debug for NouvelAuth<S, K, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NouvelAuth")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}
