//! The PostgreSQL store against a real PostgreSQL, each test in a schema of its own.

mod common;

use std::time::Duration;

use common::{servers, T0};
use nouvel_auth::{
    store::{Invalidation, PostgresKeyStore},
    BackendError, KeyManager, KeySpec, ManageError, ManualClock, NouvelAuthLayer, Permission, Plan,
};

#[tokio::test]
async fn migrations_are_explicit_and_repeatable() {
    let clock = ManualClock::new(T0);
    let schema = servers::unique("nouvel_migrate");
    let store = PostgresKeyStore::connect(&servers::database_url(), &schema)
        .await
        .unwrap();
    // Before `migrate`, nothing exists: the store never makes tables on its own.
    let keys = KeyManager::new(store.clone()).clock(clock);
    let error = keys.create_account("Acme", Plan::Scale).await.unwrap_err();
    assert!(matches!(error, ManageError::Backend(_)), "{error:?}");
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(
        keys.create_account("Acme", Plan::Scale)
            .await
            .unwrap()
            .created_at,
        T0
    );
}

#[tokio::test]
async fn bad_schema_names_are_refused() {
    for schema in ["", "Nouvel", "a-b", "1abc", "x; DROP TABLE y"] {
        let error = PostgresKeyStore::connect(&servers::database_url(), schema)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("schema"), "{schema}: {error}");
    }
}

#[tokio::test]
async fn an_unreachable_database_is_a_backend_error() {
    let error = PostgresKeyStore::connect("postgres://postgres@127.0.0.1:1/postgres", "x")
        .await
        .unwrap_err();
    assert!(matches!(error, BackendError::Failed(_)));
}

#[tokio::test]
async fn the_postgres_store_conforms() {
    nouvel_auth::testing::conformance(servers::postgres_store().await).await;
}

#[tokio::test]
async fn a_cached_postgres_store_conforms() {
    let postgres = servers::postgres_store().await;
    let cached = nouvel_auth::store::CachedKeyStore::new(postgres.clone());
    let cache = cached.clone();
    postgres
        .listen(move |change| cache.invalidate(&change))
        .await
        .unwrap();
    nouvel_auth::testing::conformance(cached).await;
}

#[tokio::test]
async fn usage_arrives_in_batches() {
    let clock = ManualClock::new(T0);
    let store = servers::postgres_store().await;
    let keys = KeyManager::new(store.clone()).clock(clock.clone());
    let account = keys.create_account("Acme", Plan::Scale).await.unwrap();
    let key = keys
        .create_key(&account.id, KeySpec::new("k", [Permission::Generate]))
        .await
        .unwrap();
    let layer = NouvelAuthLayer::new(store.clone())
        .clock(clock.clone())
        .usage_flush_interval(Duration::from_secs(3600));
    let app = common::routes().layer(layer.clone());
    let auth = common::bearer(&key.key);
    for _ in 0..3 {
        assert_eq!(
            common::send(&app, "POST", "/api/v1/generate", Some(&auth))
                .await
                .status,
            200
        );
    }
    clock.advance(Duration::from_secs(5));
    assert_eq!(
        common::send(&app, "GET", "/api/v1/analytics", Some(&auth))
            .await
            .status,
        403
    );
    // Nothing written per request.
    assert_eq!(
        keys.key(&account.id, &key.info.id)
            .await
            .unwrap()
            .usage
            .admitted,
        0
    );
    layer.flush_usage().await.unwrap();
    let info = keys.key(&account.id, &key.info.id).await.unwrap();
    assert_eq!(info.usage.admitted, 3);
    assert_eq!(info.usage.rejected.missing_permission, 1);
    assert_eq!(info.last_used_at, Some(T0));
    assert_eq!(
        info.usage.last_request_at,
        Some(T0 + Duration::from_secs(5))
    );
    // A second batch adds to the first.
    common::send(&app, "POST", "/api/v1/generate", Some(&auth)).await;
    layer.flush_usage().await.unwrap();
    assert_eq!(
        keys.key(&account.id, &key.info.id)
            .await
            .unwrap()
            .usage
            .admitted,
        4
    );
}

#[tokio::test]
async fn a_listener_that_lost_its_connection_says_all_once_listening_again() {
    use sqlx::Connection;
    let schema = servers::unique("nouvel_test");
    let store = servers::postgres_store_at(&servers::database_url(), &schema).await;
    let keys = KeyManager::new(store.clone());
    let account = keys.create_account("Acme", Plan::Scale).await.unwrap();
    let key = keys
        .create_key(&account.id, KeySpec::new("k", [Permission::Generate]))
        .await
        .unwrap();
    let (heard, mut changes) = tokio::sync::mpsc::unbounded_channel();
    store
        .listen(move |change| {
            let _ = heard.send(change);
        })
        .await
        .unwrap();
    let mut next_change = async || {
        tokio::time::timeout(Duration::from_secs(10), changes.recv())
            .await
            .expect("a change within 10 s")
            .unwrap()
    };
    // End the listening session from another one, as a failover or a network cut would.
    let mut admin = sqlx::PgConnection::connect(&servers::database_url())
        .await
        .unwrap();
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE $1",
    )
    .bind(format!("LISTEN %nouvel_keys_{schema}%"))
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(ended, [true]);
    // Whatever changed meanwhile is unknown: a cache must forget everything.
    assert_eq!(next_change().await, Invalidation::All);
    // By then it listens again, so a change made now arrives as itself.
    keys.delete_key(&account.id, &key.info.id).await.unwrap();
    assert_eq!(next_change().await, Invalidation::Key(key.info.id.clone()));
}
