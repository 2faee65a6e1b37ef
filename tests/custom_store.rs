//! The store of `examples/custom_store.rs` passes the conformance kit, as the built-in
//! stores do (`tests/postgres.rs`, and the memory store below).

#[allow(dead_code, unreachable_pub)] // the example's `main` is not called from here
#[path = "../examples/custom_store.rs"]
mod custom_store;

#[tokio::test]
async fn the_example_store_conforms() {
    nouvel_auth::testing::conformance(custom_store::TableStore::default()).await;
}

#[tokio::test]
async fn the_memory_store_conforms() {
    nouvel_auth::testing::conformance(nouvel_auth::MemoryKeyStore::new()).await;
}

#[tokio::test]
async fn a_cached_memory_store_conforms() {
    nouvel_auth::testing::conformance(nouvel_auth::store::CachedKeyStore::new(
        nouvel_auth::MemoryKeyStore::new(),
    ))
    .await;
}

#[tokio::test]
async fn the_memory_store_chosen_at_run_time_conforms() {
    let store = nouvel_auth::store::AnyKeyStore::from(nouvel_auth::MemoryKeyStore::new());
    store.migrate().await.unwrap();
    nouvel_auth::testing::conformance(store).await;
}

#[tokio::test]
async fn the_memory_store_keeps_the_outbox_contract() {
    nouvel_auth::testing::outbox_conformance(nouvel_auth::MemoryKeyStore::new()).await;
}

#[tokio::test]
async fn a_cached_memory_store_keeps_the_outbox_contract() {
    nouvel_auth::testing::outbox_conformance(nouvel_auth::store::CachedKeyStore::new(
        nouvel_auth::MemoryKeyStore::new(),
    ))
    .await;
}
