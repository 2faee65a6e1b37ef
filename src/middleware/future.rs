use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::{Admission, ResponseBody, ResponseHeaders};
use crate::AuthenticatedKey;

/// The verification of a key by the store and the limiter: an admission, or the rejection's
/// response.
pub(crate) type Verification =
    Pin<Box<dyn Future<Output = Result<Admission, Response<Bytes>>> + Send>>;

pin_project! {
    /// The future of [`NouvelAuth`](crate::middleware::NouvelAuth): the verification of the key (which
    /// may wait on the key store and the limiter), then the inner service.
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S::Future, S, ReqBody>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, S, ReqBody> {
        Verifying { verification: Verification, pending: Option<(S, Request<ReqBody>)> },
        Calling { #[pin] future: F, headers: Option<ResponseHeaders> },
        Rejected { response: Option<Response<Bytes>> },
    }
}

impl<S: Service<Request<ReqBody>>, ReqBody> ResponseFuture<S, ReqBody> {
    /// Verifies the key, then calls `inner` with `request` if it is admitted.
    pub(crate) fn verify(verification: Verification, inner: S, request: Request<ReqBody>) -> Self {
        Self::new(State::Verifying {
            verification,
            pending: Some((inner, request)),
        })
    }

    /// Calls `inner` (which is ready) with an admitted `request`.
    pub(crate) fn admitted(inner: &mut S, request: Request<ReqBody>, admission: Admission) -> Self {
        Self::new(admitted(inner, request, admission))
    }

    /// Awaits the inner service's `future`, for a request that needed no key.
    pub(crate) fn passed(future: S::Future) -> Self {
        Self::new(State::Calling {
            future,
            headers: None,
        })
    }

    /// Answers `response` at once.
    pub(crate) fn rejected(response: Response<Bytes>) -> Self {
        Self::new(State::Rejected {
            response: Some(response),
        })
    }

    fn new(state: State<S::Future, S, ReqBody>) -> Self {
        Self { state }
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Verifying {
                    verification,
                    pending,
                } => {
                    let admission = match ready!(verification.as_mut().poll(cx)) {
                        Ok(admission) => admission,
                        Err(response) => return Poll::Ready(Ok(rejection(response))),
                    };
                    let (mut inner, request) = pending.take().expect(POLLED_AFTER_READY);
                    state.set(admitted(&mut inner, request, admission));
                }
                StateProj::Calling { future, headers } => {
                    let mut response = ready!(future.poll(cx))?;
                    if let Some(headers) = headers.take() {
                        headers.write(response.headers_mut());
                    }
                    return Poll::Ready(Ok(response.map(ResponseBody::inner)));
                }
                StateProj::Rejected { response } => {
                    let response = response.take().expect(POLLED_AFTER_READY);
                    return Poll::Ready(Ok(rejection(response)));
                }
            }
        }
    }
}

/// Hands the key to the handler (as an [`AuthenticatedKey`] extension) and calls the
/// inner service; the admission's headers wait for its response.
fn admitted<S: Service<Request<ReqBody>>, ReqBody>(
    inner: &mut S,
    mut request: Request<ReqBody>,
    Admission { key, headers }: Admission,
) -> State<S::Future, S, ReqBody> {
    request.extensions_mut().insert(AuthenticatedKey::new(key));
    State::Calling {
        future: inner.call(request),
        headers: Some(headers),
    }
}

const POLLED_AFTER_READY: &str = "ResponseFuture polled after it was ready";

fn rejection<B>(response: Response<Bytes>) -> Response<ResponseBody<B>> {
    response.map(ResponseBody::rejection)
}

impl<S: Service<Request<ReqBody>>, ReqBody> fmt::Debug for ResponseFuture<S, ReqBody> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
