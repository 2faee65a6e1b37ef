//! The rate-limiting peer of the benches and of `examples/bench_server.rs`.

use std::{convert::Infallible, sync::Arc};

use axum::{body::Body, Router};
use bytes::Bytes;
use http::{Request, Response};
use tower::{Layer, Service};

/// The rate-limiting peer: `tower_governor` keyed by the bearer header, headers on, a quota
/// never reached.
pub fn governor(
    inner: Router,
) -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send + 'static>
       + Clone
       + Send
       + Sync
       + 'static {
    let config = tower_governor::governor::GovernorConfigBuilder::default()
        .key_extractor(Bearer)
        .per_nanosecond(1)
        .burst_size(u32::MAX)
        .use_headers()
        .finish()
        .unwrap();
    tower_governor::GovernorLayer::new(Arc::new(config)).layer(inner)
}

#[derive(Clone)]
struct Bearer;

impl tower_governor::key_extractor::KeyExtractor for Bearer {
    type Key = Bytes;

    fn extract<T>(&self, request: &Request<T>) -> Result<Bytes, tower_governor::GovernorError> {
        request
            .headers()
            .get("authorization")
            .map(|v| Bytes::copy_from_slice(v.as_bytes()))
            .ok_or(tower_governor::GovernorError::UnableToExtractKey)
    }
}
