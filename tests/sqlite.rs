//! The SQLite store: the conformance kit, migrations, and many tasks on one file.

mod common;

use std::{path::PathBuf, sync::Arc};

use nouvel_auth::{nouvel, store::SqliteKeyStore, KeyManager, KeySpec, KeyStore, NouvelAuthLayer};

/// A fresh file in the temporary directory, removed (with its WAL) when dropped.
struct TempDb(PathBuf);

impl TempDb {
    fn new() -> Self {
        Self(std::env::temp_dir().join(format!("{}.db", common::servers::unique("nouvel_test"))))
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

async fn store(db: &TempDb) -> SqliteKeyStore {
    let store = SqliteKeyStore::open(&db.0).await.unwrap();
    store.migrate().await.unwrap();
    store
}

#[tokio::test]
async fn the_sqlite_store_passes_the_conformance_kit() {
    let db = TempDb::new();
    nouvel_auth::testing::conformance(store(&db).await).await;
}

#[tokio::test]
async fn migrations_are_explicit_and_repeatable() {
    let db = TempDb::new();
    let unmigrated = SqliteKeyStore::open(&db.0).await.unwrap();
    let keys = KeyManager::new(unmigrated.clone());
    assert!(
        keys.create_account("Acme", nouvel::SCALE).await.is_err(),
        "no tables yet"
    );
    unmigrated.migrate().await.unwrap();
    unmigrated.migrate().await.unwrap();
    assert!(keys.create_account("Acme", nouvel::SCALE).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_write_and_read_one_file_and_it_all_survives_reopening() {
    let db = TempDb::new();
    let keys = Arc::new(KeyManager::new(store(&db).await));
    let account = keys.create_account("Acme", nouvel::SCALE).await.unwrap();
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let (keys, account) = (keys.clone(), account.id.clone());
            tokio::spawn(async move {
                let made = keys
                    .create_key(&account, KeySpec::new(format!("k{i}"), [nouvel::GENERATE]))
                    .await
                    .unwrap();
                let storage = keys.storage();
                let found = storage
                    .lookup(&storage.digest(&made.key), time::OffsetDateTime::now_utc())
                    .await
                    .unwrap();
                assert!(found.is_some());
                made
            })
        })
        .collect();
    let mut made = Vec::new();
    for task in tasks {
        made.push(task.await.unwrap());
    }
    // Usage in one batch.
    let layer = NouvelAuthLayer::new(keys.storage().clone());
    let app = common::routes().layer(layer.clone());
    for key in &made[..3] {
        assert_eq!(
            common::send(
                &app,
                "POST",
                "/api/v1/generate",
                Some(&common::bearer(&key.key))
            )
            .await
            .status,
            200
        );
    }
    layer.flush_usage().await.unwrap();
    keys.disable_key(&account.id, &made[0].info.id)
        .await
        .unwrap();
    drop((keys, app, layer));

    // Reopened: every key, its state and its usage are there.
    let reopened = KeyManager::new(store(&db).await);
    let listed = reopened.keys(&account.id).await.unwrap();
    assert_eq!(listed.len(), 32);
    let first = listed.iter().find(|k| k.id == made[0].info.id).unwrap();
    assert_eq!(first.status, nouvel_auth::manage::KeyStatus::Disabled);
    assert_eq!(first.usage.admitted, 1);
    assert!(first.last_used_at.is_some());
    let accounts = reopened.storage().accounts_named("Acme").await.unwrap();
    assert_eq!(
        accounts.iter().map(|a| &a.id).collect::<Vec<_>>(),
        [&account.id]
    );
}
