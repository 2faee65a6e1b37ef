//! The PostgreSQL store against a real PostgreSQL, each test in a schema of its own.

mod common;

use std::time::Duration;

use common::{servers, T0};
use nouvel_auth::{
    store::{Invalidation, PostgresKeyStore},
    BackendError, Expiration, KeyManager, KeySpec, KeyStatus, KeyStore, ManageError, ManualClock,
    NouvelAuthLayer, Permission, Plan, RateLimit,
};

#[tokio::test]
async fn migrations_are_explicit_and_repeatable() {
    let clock = ManualClock::new(T0);
    let schema = servers::unique("nouvel_migrate");
    let store = PostgresKeyStore::connect(&servers::database_url(), &schema)
        .await
        .unwrap();
    // Before `migrate`, nothing exists: the store never makes tables on its own.
    let error = store.create_account("Acme", Plan::Scale).await.unwrap_err();
    assert!(matches!(error, ManageError::Backend(_)), "{error:?}");
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    let store = store.clock(clock);
    assert_eq!(
        store
            .create_account("Acme", Plan::Scale)
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
async fn accounts_and_keys_follow_the_management_contract() {
    let clock = ManualClock::new(T0);
    let store = servers::postgres_store(&clock).await;
    let account = store.create_account("  Acme  ", Plan::Scale).await.unwrap();
    assert_eq!(account.name, "Acme");
    assert_eq!(store.account(&account.id).await.unwrap(), account);
    assert!(matches!(
        store.account(&"acc_nope".into()).await,
        Err(ManageError::NotFound)
    ));

    let spec = KeySpec::new(
        "Production Server",
        [Permission::Generate, Permission::ProjectsRead],
    )
    .expiration(Expiration::Days30)
    .rate_limit(RateLimit::new(5, Duration::from_secs(10)));
    let first = store.create_key(&account.id, spec).await.unwrap();
    assert_eq!(
        first.info.expires_at,
        Some(T0 + Duration::from_secs(30 * 86_400))
    );
    clock.advance(Duration::from_secs(1));
    let second = store
        .create_key(&account.id, KeySpec::new("Second", [Permission::Publish]))
        .await
        .unwrap();

    // Lookup by digest gives the record the layer needs.
    let record = store
        .lookup(&store.digest(&first.key), T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.id, first.info.id);
    assert_eq!(record.account_id, account.id);
    assert_eq!(record.plan, Plan::Scale);
    assert_eq!(
        record.rate_limit,
        Some(RateLimit::new(5, Duration::from_secs(10)))
    );
    assert!(store
        .lookup(&nouvel_auth::ApiKey::generate().digest(), T0)
        .await
        .unwrap()
        .is_none());

    // Listed newest first, as created.
    let listed = store.keys(&account.id).await.unwrap();
    assert_eq!(listed, [second.info.clone(), first.info.clone()]);
    assert_eq!(
        store.key(&account.id, &first.info.id).await.unwrap(),
        first.info
    );

    // Bad input: every field at once, and nothing made.
    let bad = KeySpec::new(" ", []).expiration(Expiration::At(T0 - time::Duration::days(1)));
    let ManageError::Invalid(errors) = store.create_key(&account.id, bad).await.unwrap_err() else {
        panic!("expected 422");
    };
    let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["name", "permissions", "expiration"]);
    assert_eq!(store.keys(&account.id).await.unwrap().len(), 2);

    // Plan: keys need scale or business, and plan changes reach lookups.
    store.set_plan(&account.id, Plan::Growth).await.unwrap();
    let refused = store
        .create_key(&account.id, KeySpec::new("k", [Permission::Publish]))
        .await;
    assert!(matches!(
        refused,
        Err(ManageError::PlanRequired(Plan::Growth))
    ));
    assert_eq!(
        store
            .lookup(&store.digest(&first.key), T0)
            .await
            .unwrap()
            .unwrap()
            .plan,
        Plan::Growth
    );
    assert!(matches!(
        store
            .rotate_key(&account.id, &first.info.id, Duration::ZERO)
            .await,
        Err(ManageError::PlanRequired(Plan::Growth))
    ));
    store.set_plan(&account.id, Plan::Business).await.unwrap();

    // Rotate: same name, permissions and option; the old key's grace ends its life.
    clock.advance(Duration::from_secs(60));
    let rotated = store
        .rotate_key(&account.id, &first.info.id, Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(rotated.info.name, "Production Server");
    assert_eq!(rotated.info.permissions, first.info.permissions);
    assert_eq!(
        rotated.info.expires_at,
        Some(clock.now_plus(Duration::from_secs(30 * 86_400)))
    );
    let new_record = store
        .lookup(&store.digest(&rotated.key), T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        new_record.rate_limit,
        Some(RateLimit::new(5, Duration::from_secs(10)))
    );
    let old = store.key(&account.id, &first.info.id).await.unwrap();
    assert_eq!(
        old.expires_at,
        Some(clock.now_plus(Duration::from_secs(600)))
    );
    assert_eq!(old.status, KeyStatus::Active);
    clock.advance(Duration::from_secs(600));
    assert_eq!(
        store.key(&account.id, &first.info.id).await.unwrap().status,
        KeyStatus::Expired
    );
    let too_long = store
        .rotate_key(
            &account.id,
            &second.info.id,
            Duration::from_secs(400 * 86_400),
        )
        .await;
    assert!(matches!(too_long, Err(ManageError::Invalid(_))));

    // Delete: gone from lookups and lists; a second delete is 404.
    store
        .delete_key(&account.id, &second.info.id)
        .await
        .unwrap();
    assert!(store
        .lookup(&store.digest(&second.key), T0)
        .await
        .unwrap()
        .is_none());
    assert!(matches!(
        store.delete_key(&account.id, &second.info.id).await,
        Err(ManageError::NotFound)
    ));
    assert!(matches!(
        store.key(&account.id, &second.info.id).await,
        Err(ManageError::NotFound)
    ));
    let other = store.create_account("Other", Plan::Scale).await.unwrap();
    assert!(matches!(
        store.delete_key(&other.id, &first.info.id).await,
        Err(ManageError::NotFound)
    ));
}

#[tokio::test]
async fn usage_arrives_in_batches() {
    let clock = ManualClock::new(T0);
    let store = servers::postgres_store(&clock).await;
    let account = store.create_account("Acme", Plan::Scale).await.unwrap();
    let key = store
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
        store
            .key(&account.id, &key.info.id)
            .await
            .unwrap()
            .usage
            .admitted,
        0
    );
    layer.flush_usage().await.unwrap();
    let info = store.key(&account.id, &key.info.id).await.unwrap();
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
        store
            .key(&account.id, &key.info.id)
            .await
            .unwrap()
            .usage
            .admitted,
        4
    );
}

trait NowPlus {
    fn now_plus(&self, by: Duration) -> time::OffsetDateTime;
}

impl NowPlus for ManualClock {
    fn now_plus(&self, by: Duration) -> time::OffsetDateTime {
        nouvel_auth::Clock::now(self) + by
    }
}

#[tokio::test]
async fn a_listener_that_lost_its_connection_says_all_once_listening_again() {
    use sqlx::Connection;
    let clock = ManualClock::new(T0);
    let schema = servers::unique("nouvel_test");
    let store = servers::postgres_store_at(&servers::database_url(), &schema, &clock).await;
    let account = store.create_account("Acme", Plan::Scale).await.unwrap();
    let key = store
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
    store.delete_key(&account.id, &key.info.id).await.unwrap();
    assert_eq!(next_change().await, Invalidation::Key(key.info.id.clone()));
}
