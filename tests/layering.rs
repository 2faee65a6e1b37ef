//! Applying the layer costs nothing per service. axum applies a layer to every route, and
//! again for every connection (`Router::with_state`), so `layer` must neither render nor
//! copy anything: it once rendered every problem body and copied the route table there,
//! which cut the requests/s of clients that open a connection per request to a third.
//!
//! Alone in its binary: the allocator's counts are global, and no other test may run
//! beside this one.

use std::{alloc::System, convert::Infallible};

use axum::body::Body;
use http::{Request, Response};
use nouvel_auth::{MemoryKeyStore, Profile};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tower::{service_fn, Layer};

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[test]
fn applying_the_layer_and_cloning_its_service_allocate_nothing() {
    let layer = Profile::nouvel()
        .realm("acme")
        .problem_type_base("https://docs.example.com/errors/")
        .layer(MemoryKeyStore::new());
    let inner =
        service_fn(|_: Request<Body>| async { Ok::<_, Infallible>(Response::new(Body::empty())) });

    let region = Region::new(ALLOCATOR);
    let service = layer.layer(inner);
    let clone = service.clone();
    assert_eq!(region.change().allocations, 0);
    drop((service, clone));
}
