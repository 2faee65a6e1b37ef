use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use http::{header::AUTHORIZATION, Request, Response};
use tower_service::Service;

use super::{Admission, Checks, ResponseBody, ResponseFuture};
use crate::{KeyStore, RateLimiter};

/// The middleware made by [`NouvelAuthLayer`](crate::NouvelAuthLayer).
///
/// Rejections are responses (`Ok`), never errors: `Error` stays `S::Error`.
pub struct NouvelAuth<S, K, L> {
    inner: S,
    checks: Arc<Checks<K, L>>,
}

impl<S, K, L> NouvelAuth<S, K, L> {
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
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The clone may not be ready: keep the one that is, as tower-http does.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let checks = self.checks.clone();
        ResponseFuture::new(async move {
            checks.usage.start_flushing(&checks.store);
            let (mut parts, body) = request.into_parts();
            let admission = match checks.admit(&parts).await {
                Ok(admission) => admission,
                Err(rejection) => {
                    let response = rejection.to_response(&checks.problems);
                    return Ok(response.map(ResponseBody::rejection));
                }
            };
            let Some(Admission { record, headers }) = admission else {
                let request = Request::from_parts(parts, body);
                return Ok(inner.call(request).await?.map(ResponseBody::inner));
            };
            if !checks.config.keep_authorization {
                parts.headers.remove(AUTHORIZATION);
            }
            parts.extensions.insert(record);
            let mut response = inner.call(Request::from_parts(parts, body)).await?;
            headers.write(response.headers_mut());
            Ok(response.map(ResponseBody::inner))
        })
    }
}

impl<S: Clone, K, L> Clone for NouvelAuth<S, K, L> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            checks: self.checks.clone(),
        }
    }
}

impl<S: fmt::Debug, K, L> fmt::Debug for NouvelAuth<S, K, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NouvelAuth")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}
