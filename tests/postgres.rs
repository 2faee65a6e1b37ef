//! The PostgreSQL store against a real PostgreSQL, each test in a schema of its own.

mod common;

use nouvel_auth::nouvel;
use nouvel_auth::{KeyStorage, Profile};
use std::time::Duration;

use common::{servers, T0};
use nouvel_auth::{
    clock::ManualClock,
    store::{Invalidation, PostgresKeyStore},
    BackendError, KeyManager, KeySpec, ManageError,
};

#[tokio::test]
async fn migrations_are_explicit_and_repeatable() {
    let clock = ManualClock::new(T0);
    let schema = servers::unique("nouvel_migrate");
    let store = PostgresKeyStore::connect(
        &servers::database_url(),
        &schema,
        &nouvel_auth::Profile::nouvel(),
    )
    .await
    .unwrap();
    // Before `migrate`, nothing exists: the store never makes tables on its own.
    let keys = Profile::nouvel().clock(clock).key_manager(store.clone());
    let error = keys
        .create_account("Acme", nouvel::SCALE)
        .await
        .unwrap_err();
    assert!(matches!(error, ManageError::Backend(_)), "{error:?}");
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(
        keys.create_account("Acme", nouvel::SCALE)
            .await
            .unwrap()
            .created_at,
        T0
    );
}

#[tokio::test]
async fn bad_schema_names_are_refused() {
    for schema in ["", "Nouvel", "a-b", "1abc", "x; DROP TABLE y"] {
        let error = PostgresKeyStore::connect(
            &servers::database_url(),
            schema,
            &nouvel_auth::Profile::nouvel(),
        )
        .await
        .unwrap_err();
        assert!(error.to_string().contains("schema"), "{schema}: {error}");
    }
}

#[tokio::test]
async fn an_unreachable_database_is_a_backend_error() {
    let error = PostgresKeyStore::connect(
        "postgres://postgres@127.0.0.1:1/postgres",
        "x",
        &nouvel_auth::Profile::nouvel(),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, BackendError::Failed(_)));
}

#[tokio::test]
async fn the_postgres_store_conforms() {
    nouvel_auth::testing::conformance(servers::postgres_store().await).await;
}

#[tokio::test]
async fn the_postgres_store_keeps_the_outbox_contract() {
    let store = nouvel_auth::store::AnyKeyStore::from(servers::postgres_store().await);
    nouvel_auth::testing::outbox_conformance(store).await;
}

#[tokio::test]
async fn the_postgres_store_chosen_at_run_time_conforms_and_listens() {
    let store = nouvel_auth::store::AnyKeyStore::from(servers::postgres_store().await);
    store.migrate().await.unwrap();
    let listening = store.listen(|_| {}).await.unwrap();
    assert!(
        listening.is_some(),
        "PostgreSQL's other instances are heard"
    );
    nouvel_auth::testing::conformance(store).await;
}

#[tokio::test]
async fn a_commit_that_fails_leaves_the_store_writing() {
    let schema = servers::unique("nouvel_test");
    let store = servers::postgres_store_at(&servers::database_url(), &schema).await;
    let side = sqlx::PgPool::connect(&servers::database_url())
        .await
        .unwrap();
    // A deferred constraint trigger: every audit entry (so every management write) fails
    // at COMMIT while `fault` holds a row.
    for statement in [
        format!("CREATE TABLE {schema}.fault (armed int)"),
        format!(
            "CREATE FUNCTION {schema}.fail_if_armed() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF EXISTS (SELECT 1 FROM {schema}.fault) THEN
                 RAISE EXCEPTION 'could not extend file: No space left on device';
               END IF;
               RETURN NULL;
             END $$"
        ),
        format!(
            "CREATE CONSTRAINT TRIGGER fault_at_commit AFTER INSERT ON {schema}.audit_log
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {schema}.fail_if_armed()"
        ),
    ] {
        sqlx::query(&statement).execute(&side).await.unwrap();
    }
    nouvel_auth::testing::recovers_from_failed_commits(store, async |fail: bool| {
        let statement = if fail {
            format!("INSERT INTO {schema}.fault VALUES (1)")
        } else {
            format!("DELETE FROM {schema}.fault")
        };
        sqlx::query(&statement).execute(&side).await.unwrap();
    })
    .await;
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
    let keys = Profile::nouvel()
        .clock(clock.clone())
        .key_manager(store.clone());
    let account = keys.create_account("Acme", nouvel::SCALE).await.unwrap();
    let key = keys
        .create_key(&account.id, KeySpec::new("k", [nouvel::GENERATE]))
        .await
        .unwrap();
    let layer = Profile::nouvel()
        .clock(clock.clone())
        .layer(store.clone())
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
    let account = keys.create_account("Acme", nouvel::SCALE).await.unwrap();
    let key = keys
        .create_key(&account.id, KeySpec::new("k", [nouvel::GENERATE]))
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
    .bind(format!("LISTEN %nvl_keys_{schema}%"))
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

#[tokio::test]
async fn rows_of_the_first_schema_read_back_the_same_after_migrating() {
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    use std::str::FromStr;

    let schema = servers::unique("nouvel_migrate");
    let options = PgConnectOptions::from_str(&servers::database_url())
        .unwrap()
        .options([("search_path", schema.as_str())]);
    let pool = PgPoolOptions::new().connect_with(options).await.unwrap();
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&pool)
        .await
        .unwrap();
    // The schema as the first release made it: its one migration, and a key written by it,
    // with `generate`, `projects:read` and `copilot:chat` as the bits 1, 2 and 16.
    let mut first = sqlx::migrate!("./migrations/postgres");
    first.migrations = first.migrations[..1].to_vec().into();
    first.run(&pool).await.unwrap();
    let key = nouvel_auth::key::ApiKey::generate();
    sqlx::query("INSERT INTO accounts VALUES ('acc_old', 'Old', 'business', $1)")
        .bind(T0)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO api_keys (id, account_id, name, prefix, digest, permissions, expiration,
            rate_limit_requests, rate_limit_window_ms, created_at, expires_at)
         VALUES ('key_old', 'acc_old', 'Old key', $1, $2, 19, '30d', 5, 10000, $3, $4)",
    )
    .bind(key.display_prefix())
    .bind(&key.digest().as_bytes()[..])
    .bind(T0)
    .bind(T0 + Duration::from_secs(30 * 86_400))
    .execute(&pool)
    .await
    .unwrap();

    let store = PostgresKeyStore::connect(
        &servers::database_url(),
        &schema,
        &nouvel_auth::Profile::nouvel(),
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let expected = [
        nouvel::GENERATE,
        nouvel::PROJECTS_READ,
        nouvel::COPILOT_CHAT,
    ];
    let record = nouvel_auth::KeyStore::lookup(&store, &key.digest(), T0)
        .await
        .unwrap()
        .expect("the old key is found");
    assert_eq!(record.permissions.iter().collect::<Vec<_>>(), expected);
    assert_eq!(record.plan, nouvel::BUSINESS);
    assert_eq!(
        record.rate_limits,
        Some(nouvel_auth::RateLimit::new(5, Duration::from_secs(10)).into()),
        "a single limit of before is a list of one"
    );
    let keys = Profile::nouvel()
        .clock(ManualClock::new(T0))
        .key_manager(store);
    let info = keys
        .key(&"acc_old".into(), &"key_old".into())
        .await
        .unwrap();
    assert_eq!(info.name, "Old key");
    assert_eq!(info.permissions.iter().collect::<Vec<_>>(), expected);
    assert_eq!(info.created_at, T0);
    assert_eq!(info.expires_at, Some(T0 + Duration::from_secs(30 * 86_400)));
    // It rotates as any key: the option was kept.
    let rotated = keys
        .rotate_key(&"acc_old".into(), &"key_old".into(), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(rotated.info.permissions, info.permissions);
}

#[tokio::test]
async fn accounts_are_found_by_name_oldest_first() {
    let clock = ManualClock::new(T0);
    let store = servers::postgres_store().await;
    let keys = nouvel_auth::Profile::nouvel()
        .clock(clock.clone())
        .key_manager(store.clone());
    let first = keys.create_account("Demo", nouvel::SCALE).await.unwrap();
    clock.advance(Duration::from_secs(1));
    keys.create_account("Other", nouvel::SCALE).await.unwrap();
    let second = keys.create_account("Demo", nouvel::GROWTH).await.unwrap();
    let named = store.accounts_named("Demo").await.unwrap();
    assert_eq!(named, [first, second]);
    assert!(store.accounts_named("Nobody").await.unwrap().is_empty());
    assert!(store.accounts_named("a\0b").await.unwrap().is_empty());
}
