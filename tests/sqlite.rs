//! The SQLite store: the conformance kit, failed commits and a full disk, one process per
//! file, migrations, and many tasks on one file.

mod common;

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
};

use nouvel_auth::{
    key::ApiKey, manage::NewKey, nouvel, store::SqliteKeyStore, KeyManager, KeySpec, KeyStorage,
    KeyStore, ManageError, NouvelAuthLayer, Profile,
};
use sqlx::{sqlite::SqliteConnectOptions, ConnectOptions, SqliteConnection};

/// A fresh file in the temporary directory, removed (with its WAL) when dropped.
struct TempDb(PathBuf);

impl TempDb {
    fn new() -> Self {
        Self(std::env::temp_dir().join(format!("{}.db", common::servers::unique("nouvel_test"))))
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", ".lock"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

async fn store(db: &TempDb) -> SqliteKeyStore {
    let store = SqliteKeyStore::open(&db.0, &Profile::nouvel())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store
}

#[tokio::test]
async fn the_sqlite_store_passes_the_conformance_kit() {
    let db = TempDb::new();
    nouvel_auth::testing::conformance(store(&db).await).await;
}

#[tokio::test]
async fn the_sqlite_store_keeps_the_outbox_contract_behind_a_cache() {
    let db = TempDb::new();
    let store = nouvel_auth::store::AnyKeyStore::from(store(&db).await);
    nouvel_auth::testing::outbox_conformance(nouvel_auth::store::CachedKeyStore::new(store)).await;
}

#[tokio::test]
async fn the_sqlite_store_chosen_at_run_time_conforms_behind_a_cache() {
    let db = TempDb::new();
    let store = nouvel_auth::store::AnyKeyStore::from(store(&db).await);
    // A file has one writer, this process, whose cache sees every change: nothing to hear.
    let listening = store.listen(|_| {}).await.unwrap();
    assert!(listening.is_none());
    nouvel_auth::testing::conformance(nouvel_auth::store::CachedKeyStore::new(store)).await;
}

/// A connection of the test's own to `db`, beside the store's.
async fn side_connection(db: &Path) -> SqliteConnection {
    SqliteConnectOptions::new()
        .filename(db)
        .foreign_keys(true)
        .connect()
        .await
        .unwrap()
}

/// Runs the kit's failed-commit behaviours with `trap` armed by a row in `fault`: every
/// audit entry (so every management write) trips it while the row is there.
async fn failed_commits(trap: &str) {
    let db = TempDb::new();
    let store = store(&db).await;
    let mut side = side_connection(&db.0).await;
    for statement in [
        "CREATE TABLE fault (armed INTEGER)",
        "CREATE TABLE fault_parent (id INTEGER PRIMARY KEY)",
        "CREATE TABLE fault_trap (parent INTEGER
             REFERENCES fault_parent (id) DEFERRABLE INITIALLY DEFERRED)",
        trap,
    ] {
        sqlx::query(statement).execute(&mut side).await.unwrap();
    }
    let side = tokio::sync::Mutex::new(side);
    nouvel_auth::testing::recovers_from_failed_commits(store, async |fail: bool| {
        let statement = if fail {
            "INSERT INTO fault VALUES (1)"
        } else {
            "DELETE FROM fault"
        };
        let mut side = side.lock().await;
        sqlx::query(statement).execute(&mut *side).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_commit_that_fails_with_the_transaction_open_leaves_the_store_writing() {
    // A deferred foreign key fails the COMMIT, and SQLite keeps the transaction open.
    failed_commits(
        "CREATE TRIGGER fault_at_commit AFTER INSERT ON audit_log
         WHEN EXISTS (SELECT 1 FROM fault)
         BEGIN INSERT INTO fault_trap VALUES (1); END",
    )
    .await;
}

#[tokio::test]
async fn a_transaction_that_sqlite_rolls_back_itself_leaves_the_store_writing() {
    // As SQLite does on a full disk: the transaction is gone when the error comes.
    failed_commits(
        "CREATE TRIGGER fault_rolls_back AFTER INSERT ON audit_log
         WHEN EXISTS (SELECT 1 FROM fault)
         BEGIN SELECT RAISE(ROLLBACK, 'database or disk is full'); END",
    )
    .await;
}

/// A tmpfs of a few MiB, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    /// Mounts one; `None` where the test may not (mounting needs root).
    fn mount() -> Option<Self> {
        let dir = std::env::temp_dir().join(common::servers::unique("nouvel_full_disk"));
        std::fs::create_dir_all(&dir).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|status| status.success());
        if mounted {
            Some(Self(dir))
        } else {
            let _ = std::fs::remove_dir(&dir);
            None
        }
    }

    /// Writes a filler file until the disk is full.
    fn fill(&self) {
        let mut filler = std::fs::File::create(self.0.join("filler")).unwrap();
        let chunk = [0u8; 4096];
        while filler.write_all(&chunk).is_ok() {}
    }

    fn free(&self) {
        std::fs::remove_file(self.0.join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// What a client of the layer gets with `key`: 200, or 401 with its code.
async fn answer(layer: &NouvelAuthLayer<SqliteKeyStore>, key: &ApiKey) -> (u16, String) {
    let app = common::routes().layer(layer.clone());
    let reply = common::send(&app, "GET", "/api/v1/projects", Some(&common::bearer(key))).await;
    let code = reply.code().to_owned();
    (reply.status.as_u16(), code)
}

/// Every key in `made` works, and `victim` answers 401 if its deletion was answered as done.
async fn holds(
    layer: &NouvelAuthLayer<SqliteKeyStore>,
    made: &[NewKey],
    victim: &NewKey,
    deleted: bool,
) {
    for key in made {
        assert_eq!(
            answer(layer, &key.key).await.0,
            200,
            "a creation answered as done"
        );
    }
    if deleted {
        assert_eq!(
            answer(layer, &victim.key).await,
            (401, "invalid_api_key".to_owned()),
            "a deletion answered as done"
        );
    }
}

#[tokio::test]
async fn on_a_full_disk_every_write_is_committed_or_refused_and_space_freed_is_used_again() {
    // Needs a real full disk: a 4 MiB tmpfs, which only root can mount. CI runs as root
    // and must run it; elsewhere it says so and passes.
    let Some(disk) = SmallDisk::mount() else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must run the full-disk test: mounting a tmpfs failed"
        );
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let path = disk.0.join("keys.db");
    let store = SqliteKeyStore::open(&path, &Profile::nouvel())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let keys = KeyManager::new(store.clone());
    let account = keys.create_account("Acme", nouvel::SCALE).await.unwrap();
    let spec = |name: &str| KeySpec::new(name, [nouvel::PROJECTS_READ]);
    let victim = keys.create_key(&account.id, spec("Deleted")).await.unwrap();

    disk.fill();
    // Creations until the disk refuses one (the WAL may hold a few more first).
    let mut made: Vec<NewKey> = Vec::new();
    let attempt = async |name: String| match keys.create_key(&account.id, spec(&name)).await {
        Ok(key) => Some(key),
        Err(ManageError::Backend(_)) => None,
        Err(other) => panic!("a creation on a full disk: {other:?}"),
    };
    for i in 0..2_000 {
        match attempt(format!("Key {i}")).await {
            Some(key) => made.push(key),
            None => break,
        }
        assert!(i < 1_999, "the disk never refused a write");
    }
    // After a failure, whatever is answered as done must hold.
    let deleted = keys.delete_key(&account.id, &victim.info.id).await;
    for i in 0..5 {
        made.extend(attempt(format!("After {i}")).await);
    }
    let layer = NouvelAuthLayer::new(store.clone());
    holds(&layer, &made, &victim, deleted.is_ok()).await;

    // Space returns: the store writes again, with no restart.
    disk.free();
    if deleted.is_err() {
        keys.delete_key(&account.id, &victim.info.id).await.unwrap();
    }
    made.push(keys.create_key(&account.id, spec("Freed")).await.unwrap());
    holds(&layer, &made, &victim, true).await;
    let listed = keys.keys(&account.id).await.unwrap();
    assert_eq!(
        listed.len(),
        made.len(),
        "every key answered as made, and no other"
    );

    // And all of it is in the file: reopened, the same.
    drop((keys, layer, store));
    let reopened = SqliteKeyStore::open(&path, &Profile::nouvel())
        .await
        .unwrap();
    holds(
        &NouvelAuthLayer::new(reopened.clone()),
        &made,
        &victim,
        true,
    )
    .await;
    let audit = KeyManager::new(reopened)
        .audit(&account.id, None, 500)
        .await
        .unwrap();
    // The account, every key made, and the deletion.
    assert_eq!(audit.entries.len(), made.len() + 3);
}

#[tokio::test]
async fn one_file_serves_one_process_and_a_second_store_is_told_which() {
    let db = TempDb::new();
    let first = store(&db).await;
    let second = SqliteKeyStore::open(&db.0, &Profile::nouvel())
        .await
        .unwrap_err()
        .to_string();
    assert!(second.contains(&db.0.display().to_string()), "{second}");
    assert!(second.contains("PostgreSQL"), "{second}");
    // The lock goes with the last clone.
    let clone = first.clone();
    drop(first);
    assert!(SqliteKeyStore::open(&db.0, &Profile::nouvel())
        .await
        .is_err());
    drop(clone);
    // Released with the last clone; a process another test forks at that instant holds the
    // lock's descriptor until its `exec` closes it, so give it a moment.
    let started = std::time::Instant::now();
    while let Err(error) = SqliteKeyStore::open(&db.0, &Profile::nouvel()).await {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "still locked: {error}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn migrations_are_explicit_and_repeatable() {
    let db = TempDb::new();
    let unmigrated = SqliteKeyStore::open(&db.0, &Profile::nouvel())
        .await
        .unwrap();
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

#[tokio::test]
async fn a_store_reads_permissions_in_the_profile_it_was_opened_with() {
    use nouvel_auth::{KeyPrefix, PermissionSet, Plan, Plans};
    const SCOPES: &PermissionSet = &PermissionSet::new(&["forecast:read", "alerts:write"]);
    const PRO: Plan = Plan::from_static("pro");
    let profile = Profile::new(
        SCOPES,
        Plans::new([PRO]).api_keys_on([PRO]),
        KeyPrefix::new("wx_").unwrap(),
    );
    let db = TempDb::new();
    let store = SqliteKeyStore::open(&db.0, &profile).await.unwrap();
    store.migrate().await.unwrap();
    let keys = profile.key_manager(store.clone());
    let account = keys.create_account("Acme", PRO).await.unwrap();
    let forecast = SCOPES.permission("forecast:read");
    let made = keys
        .create_key(&account.id, KeySpec::new("Reader", [forecast]))
        .await
        .unwrap();
    // Read back from the file: the permission is the application's, not dropped.
    let listed = keys.keys(&account.id).await.unwrap();
    assert_eq!(listed[0].permissions.iter().collect::<Vec<_>>(), [forecast]);
    let found = store
        .lookup(&store.digest(&made.key), time::OffsetDateTime::now_utc())
        .await
        .unwrap()
        .unwrap();
    assert!(found.permissions.contains(forecast));
}
