use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::Response;

use super::ResponseBody;

/// The future of [`NouvelAuth`](crate::NouvelAuth): the checks (which may wait on the key
/// store and the limiter), then the inner service.
pub struct ResponseFuture<B, E> {
    inner: Pin<Box<dyn Future<Output = Output<B, E>> + Send>>,
}

type Output<B, E> = Result<Response<ResponseBody<B>>, E>;

impl<B, E> ResponseFuture<B, E> {
    pub(crate) fn new(future: impl Future<Output = Output<B, E>> + Send + 'static) -> Self {
        Self {
            inner: Box::pin(future),
        }
    }
}

impl<B, E> Future for ResponseFuture<B, E> {
    type Output = Output<B, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<B, E> fmt::Debug for ResponseFuture<B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
