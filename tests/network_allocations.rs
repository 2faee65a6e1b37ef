//! The network check allocates nothing. Alone in its binary: the allocator's counts are
//! global, and no other test may run beside this one.

use std::{alloc::System, convert::Infallible};

use axum::body::Body;
use http::{Request, Response};
use nouvel_auth::{MemoryKeyStore, Profile};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tower::{service_fn, Layer};

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The network check costs no allocation: a request with a key that has an allow-list
/// allocates as much as one with a key that has none (the layer reads the connection's
/// address from the request's extensions and compares it in place).
#[test]
fn a_keys_network_check_allocates_nothing() {
    use nouvel_auth::{network::Networks, nouvel, KeySpec};
    use std::net::SocketAddr;
    use tower::ServiceExt;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = MemoryKeyStore::new();
    let keys = Profile::nouvel().key_manager(store.clone());
    let (open, listed) = runtime.block_on(async {
        let account = keys.create_account("Acme", nouvel::SCALE).await.unwrap();
        let spec = || KeySpec::new("k", [nouvel::GENERATE]);
        let open = keys.create_key(&account.id, spec()).await.unwrap();
        let networks = Networks::parse(["203.0.113.0/24"]).unwrap();
        let listed = keys
            .create_key(&account.id, spec().allowed_networks(networks))
            .await
            .unwrap();
        (open, listed)
    });
    let service = Profile::nouvel()
        .layer(store)
        .layer(service_fn(|_: Request<Body>| async {
            Ok::<_, Infallible>(Response::new(Body::empty()))
        }));
    let allocations = |key: &nouvel_auth::manage::NewKey| {
        let authorization = format!("Bearer {}", key.key.expose_secret());
        let send = || {
            let mut request = Request::post("/api/v1/generate")
                .header("authorization", authorization.as_str())
                .body(Body::empty())
                .unwrap();
            request
                .extensions_mut()
                .insert(SocketAddr::from(([203, 0, 113, 9], 40_000)));
            let response = runtime.block_on(service.clone().oneshot(request)).unwrap();
            assert_eq!(response.status(), 200);
        };
        send(); // the key's first request makes its slot
        let region = Region::new(ALLOCATOR);
        for _ in 0..10 {
            send();
        }
        region.change().allocations
    };
    assert_eq!(allocations(&listed), allocations(&open));
}
