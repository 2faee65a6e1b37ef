//! Keys and accounts in a SQLite file: the embedded store, for one machine.

use std::{fmt, fs::File, path::Path, sync::Arc, time::Duration};

use sqlx::{
    query::Query,
    sqlite::{
        SqliteArguments, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool,
        SqlitePoolOptions, SqliteSynchronous,
    },
    Connection, Row, Sqlite,
};
use time::OffsetDateTime;

use super::rows::{self, KEY_COLUMNS};
use crate::{
    events::{Event, PendingEvent, Settlement},
    store::EventOutbox,
    KeyRecord, KeyStorage, KeyStore, Profile, RateLimits, StoredKey,
};
use crate::{
    manage::{AuditEntry, Exposure, Granularity, UsageBucket},
    Account, AccountId, ApiKey, BackendError, Environment, KeyDigest, KeyHasher, KeyId, Permission,
    PermissionSet, Plan, UsageReport,
};

/// The key store in a SQLite file (feature `sqlite`): [`KeyStore`] and [`KeyStorage`],
/// with no server to run. Keys, accounts, states and usage survive a restart.
///
/// * WAL mode: reads go on while a write commits. Writes go through one connection, so
///   they are serialised in this process and never meet `SQLITE_BUSY`; reads have a pool.
///   Every call is one transaction, so a process killed at any point leaves each key
///   wholly there or wholly absent. A write is answered as done only once it is
///   committed: one that fails (a full disk, say) is an error, and the next write starts
///   on a fresh connection, so the store writes again as soon as there is room.
/// * The schema is made by embedded migrations that run only when you call
///   [`migrate`](Self::migrate).
/// * Usage arrives in batches: one transaction per flush.
/// * One process: opening takes an exclusive lock on `PATH.lock` beside the file, held
///   until the last clone of the store is dropped, and a second process's
///   [`open`](Self::open) fails naming the file: two processes would each count the limit
///   alone and never hear of the other's changes. For several instances, use
///   `PostgresKeyStore`.
///
/// ```no_run
/// # async fn run() -> Result<(), nouvel_auth::BackendError> {
/// use nouvel_auth::{store::SqliteKeyStore, NouvelAuthLayer, Profile};
///
/// let store = SqliteKeyStore::open("nouvel.db", &Profile::nouvel()).await?;
/// store.migrate().await?;
/// let layer = NouvelAuthLayer::new(store);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteKeyStore {
    reads: SqlitePool,
    writes: SqlitePool,
    path: Arc<str>,
    /// The lock that keeps the file to this process; released when the last clone goes.
    _lock: Arc<File>,
    hasher: KeyHasher,
    permissions: &'static PermissionSet,
}

fn db(error: sqlx::Error) -> BackendError {
    BackendError::failed(error)
}

impl SqliteKeyStore {
    /// Opens (and creates if need be) the SQLite file at `path`, for this process alone,
    /// for the application of `profile`: stored permission names are read as its
    /// permissions.
    ///
    /// # Errors
    ///
    /// When another process has the file open through this store, or SQLite cannot open it.
    pub async fn open(path: impl AsRef<Path>, profile: &Profile) -> Result<Self, BackendError> {
        let path = path.as_ref();
        let lock = lock(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // In WAL mode, NORMAL loses nothing when the process dies, only (at worst the
            // last transactions) when the machine does.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let writes = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(db)?;
        let reads = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await
            .map_err(db)?;
        Ok(Self {
            reads,
            writes,
            path: path.to_string_lossy().into(),
            _lock: Arc::new(lock),
            hasher: KeyHasher::default(),
            permissions: profile.permissions(),
        })
    }

    /// Digests keys with `hasher` (for example with a pepper).
    #[must_use]
    pub fn hasher(mut self, hasher: KeyHasher) -> Self {
        self.hasher = hasher;
        self
    }

    /// Applies the embedded migrations.
    pub async fn migrate(&self) -> Result<(), BackendError> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.writes)
            .await
            .map_err(BackendError::failed)
    }

    /// Runs `update` (an `UPDATE` of one key `RETURNING` its columns) and writes `audit`,
    /// in one transaction: the key as it is now, or `None` (and no entry) if it changed none.
    async fn update_key<'q>(
        &self,
        update: Query<'q, Sqlite, SqliteArguments<'q>>,
        audit: &AuditEntry,
    ) -> Result<Option<StoredKey>, BackendError> {
        self.write(async |tx| {
            let Some(row) = update.fetch_optional(&mut *tx).await? else {
                return Ok(None);
            };
            let stored = rows::stored_key(&row, self.permissions)?;
            insert_audit(&mut *tx, audit).await?;
            Ok(Some(stored))
        })
        .await
    }

    /// Runs `work` in one transaction on the writing connection, and commits it.
    ///
    /// After any failure the connection is closed rather than reused: SQLite may keep a
    /// transaction open after a failed `COMMIT` (a full disk, a deferred constraint), and
    /// sqlx would run every later write inside it, as a savepoint never committed.
    async fn write<T>(
        &self,
        work: impl AsyncFnOnce(&mut SqliteConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, BackendError> {
        let mut connection = self.writes.acquire().await.map_err(db)?;
        let done = async {
            let mut tx = connection.begin().await?;
            let value = work(&mut tx).await?;
            tx.commit().await?;
            Ok(value)
        }
        .await;
        if done.is_err() {
            connection.close_on_drop();
        }
        done.map_err(db)
    }
}

impl KeyStore for SqliteKeyStore {
    fn digest(&self, key: &ApiKey) -> KeyDigest {
        self.hasher.digest(key)
    }

    async fn lookup(
        &self,
        digest: &KeyDigest,
        _now: OffsetDateTime,
    ) -> Result<Option<Arc<KeyRecord>>, BackendError> {
        let row = sqlx::query(
            "SELECT k.id, k.account_id, k.name, a.plan, k.permissions, k.expires_at,
                    k.rate_limits, k.disabled, k.environment,
                    k.shares_limit_with, k.allowed_networks
             FROM api_keys k JOIN accounts a ON a.id = k.account_id
             WHERE k.digest = ? AND k.deleted_at IS NULL",
        )
        .bind(&digest.as_bytes()[..])
        .fetch_optional(&self.reads)
        .await
        .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        rows::key_record(&row, self.permissions)
            .map(|record| Some(Arc::new(record)))
            .map_err(db)
    }

    async fn record_usage(&self, reports: &[UsageReport]) -> Result<(), BackendError> {
        self.write(async |tx| {
            for report in reports {
                let n = |count: u64| i64::try_from(count).unwrap_or(i64::MAX);
                let usage = &report.usage;
                sqlx::query(
                    "UPDATE api_keys SET
                        admitted = admitted + ?2,
                        rejected_plan_required = rejected_plan_required + ?3,
                        rejected_missing_permission = rejected_missing_permission + ?4,
                        rejected_route_not_allowed = rejected_route_not_allowed + ?5,
                        rejected_rate_limited = rejected_rate_limited + ?6,
                        last_used_at = MAX(COALESCE(last_used_at, ?7), COALESCE(?7, last_used_at)),
                        last_request_at = MAX(COALESCE(last_request_at, ?8), COALESCE(?8, last_request_at))
                     WHERE id = ?1",
                )
                .bind(report.key_id.as_str())
                .bind(n(usage.admitted))
                .bind(n(usage.rejected.plan_required))
                .bind(n(usage.rejected.missing_permission))
                .bind(n(usage.rejected.route_not_allowed))
                .bind(n(usage.rejected.rate_limited))
                .bind(report.last_used_at.map(rows::micros))
                .bind(usage.last_request_at.map(rows::micros))
                .execute(&mut *tx)
                .await?;
            }
            for (key_id, granularity, bucket) in rows::buckets(reports) {
                let n = |count: u64| i64::try_from(count).unwrap_or(i64::MAX);
                // Only a key the file holds gets buckets, as only it gets totals.
                sqlx::query(
                    "INSERT INTO usage_buckets (key_id, granularity, start, admitted,
                        plan_required, missing_permission, route_not_allowed, rate_limited)
                     SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8
                     WHERE EXISTS (SELECT 1 FROM api_keys WHERE id = ?1)
                     ON CONFLICT (key_id, granularity, start) DO UPDATE SET
                        admitted = admitted + excluded.admitted,
                        plan_required = plan_required + excluded.plan_required,
                        missing_permission = missing_permission + excluded.missing_permission,
                        route_not_allowed = route_not_allowed + excluded.route_not_allowed,
                        rate_limited = rate_limited + excluded.rate_limited",
                )
                .bind(key_id.as_str())
                .bind(granularity.as_str())
                .bind(rows::micros(bucket.start))
                .bind(n(bucket.admitted))
                .bind(n(bucket.rejected.plan_required))
                .bind(n(bucket.rejected.missing_permission))
                .bind(n(bucket.rejected.route_not_allowed))
                .bind(n(bucket.rejected.rate_limited))
                .execute(&mut *tx)
                .await?;
            }
            for (key_id, permission, at) in rows::permissions_used(reports) {
                sqlx::query(
                    "INSERT INTO permission_use (key_id, permission, last_used_at)
                     SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM api_keys WHERE id = ?1)
                     ON CONFLICT (key_id, permission) DO UPDATE SET
                        last_used_at = MAX(last_used_at, excluded.last_used_at)",
                )
                .bind(key_id.as_str())
                .bind(permission)
                .bind(rows::micros(at))
                .execute(&mut *tx)
                .await?;
            }
            Ok(())
        })
        .await
    }

    async fn live_digests(&self) -> Result<Option<Vec<KeyDigest>>, BackendError> {
        let rows = sqlx::query("SELECT digest FROM api_keys WHERE deleted_at IS NULL")
            .fetch_all(&self.reads)
            .await
            .map_err(db)?;
        rows.iter()
            .map(rows::digest)
            .collect::<Result<_, _>>()
            .map(Some)
            .map_err(db)
    }
}

impl KeyStorage for SqliteKeyStore {
    async fn insert_account(
        &self,
        account: &Account,
        audit: &AuditEntry,
    ) -> Result<(), BackendError> {
        self.write(async |tx| {
            sqlx::query("INSERT INTO accounts (id, name, plan, created_at) VALUES (?, ?, ?, ?)")
                .bind(account.id.as_str())
                .bind(&account.name)
                .bind(account.plan.as_str())
                .bind(rows::micros(account.created_at))
                .execute(&mut *tx)
                .await?;
            insert_audit(&mut *tx, audit).await
        })
        .await
    }

    async fn account(&self, id: &AccountId) -> Result<Option<Account>, BackendError> {
        let row = sqlx::query("SELECT * FROM accounts WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.reads)
            .await
            .map_err(db)?;
        row.as_ref().map(rows::account).transpose().map_err(db)
    }

    async fn accounts_named(&self, name: &str) -> Result<Vec<Account>, BackendError> {
        let rows = sqlx::query("SELECT * FROM accounts WHERE name = ? ORDER BY created_at, id")
            .bind(name)
            .fetch_all(&self.reads)
            .await
            .map_err(db)?;
        rows.iter()
            .map(rows::account)
            .collect::<Result<_, _>>()
            .map_err(db)
    }

    async fn set_plan(
        &self,
        id: &AccountId,
        plan: Plan,
        audit: &AuditEntry,
    ) -> Result<Option<Account>, BackendError> {
        self.write(async |tx| {
            let row = sqlx::query("UPDATE accounts SET plan = ? WHERE id = ? RETURNING *")
                .bind(plan.as_str())
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row else { return Ok(None) };
            insert_audit(&mut *tx, audit).await?;
            rows::account(&row).map(Some)
        })
        .await
    }

    async fn insert_key(&self, key: &StoredKey, audit: &AuditEntry) -> Result<(), BackendError> {
        self.write(async |tx| {
            insert_key(&mut *tx, key).await?;
            insert_audit(&mut *tx, audit).await
        })
        .await
    }

    async fn keys(&self, account: &AccountId) -> Result<Vec<StoredKey>, BackendError> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE account_id = ? AND deleted_at IS NULL"
        ))
        .bind(account.as_str())
        .fetch_all(&self.reads)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|row| rows::stored_key(row, self.permissions))
            .collect::<Result<_, _>>()
            .map_err(db)
    }

    async fn key(
        &self,
        account: &AccountId,
        key: &KeyId,
    ) -> Result<Option<StoredKey>, BackendError> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys
             WHERE account_id = ? AND id = ? AND deleted_at IS NULL"
        ))
        .bind(account.as_str())
        .bind(key.as_str())
        .fetch_optional(&self.reads)
        .await
        .map_err(db)?;
        row.as_ref()
            .map(|row| rows::stored_key(row, self.permissions))
            .transpose()
            .map_err(db)
    }

    async fn delete_key(
        &self,
        account: &AccountId,
        key: &KeyId,
        audit: &AuditEntry,
    ) -> Result<bool, BackendError> {
        self.write(async |tx| {
            let deleted = sqlx::query(
                "UPDATE api_keys SET deleted_at = ?
                 WHERE account_id = ? AND id = ? AND deleted_at IS NULL",
            )
            .bind(rows::micros(audit.at))
            .bind(account.as_str())
            .bind(key.as_str())
            .execute(&mut *tx)
            .await?;
            if deleted.rows_affected() != 1 {
                return Ok(false);
            }
            insert_audit(&mut *tx, audit).await?;
            Ok(true)
        })
        .await
    }

    async fn set_disabled(
        &self,
        account: &AccountId,
        key: &KeyId,
        disabled: bool,
        audit: &AuditEntry,
    ) -> Result<Option<StoredKey>, BackendError> {
        let update = format!(
            "UPDATE api_keys SET disabled = ?
             WHERE account_id = ? AND id = ? AND deleted_at IS NULL
             RETURNING {KEY_COLUMNS}"
        );
        let update = sqlx::query(&update)
            .bind(disabled)
            .bind(account.as_str())
            .bind(key.as_str());
        self.update_key(update, audit).await
    }

    async fn expose_key(
        &self,
        account: &AccountId,
        key: &KeyId,
        exposure: &Exposure,
        disable: bool,
        audit: &AuditEntry,
    ) -> Result<Option<StoredKey>, BackendError> {
        let update = format!(
            "UPDATE api_keys
             SET exposed_at = ?, exposed_url = ?, exposed_source = ?, disabled = disabled OR ?
             WHERE account_id = ? AND id = ? AND deleted_at IS NULL AND exposed_at IS NULL
             RETURNING {KEY_COLUMNS}"
        );
        let update = sqlx::query(&update)
            .bind(rows::micros(exposure.at))
            .bind(&exposure.url)
            .bind(&exposure.source)
            .bind(disable)
            .bind(account.as_str())
            .bind(key.as_str());
        self.update_key(update, audit).await
    }

    async fn replace_key(
        &self,
        old: &KeyId,
        old_expires_at: OffsetDateTime,
        replacement: &StoredKey,
        audit: &AuditEntry,
    ) -> Result<bool, BackendError> {
        self.write(async |tx| {
            let shortened = sqlx::query(
                "UPDATE api_keys SET expires_at = MIN(COALESCE(expires_at, ?3), ?3),
                     replaced_by = ?4
                 WHERE account_id = ?1 AND id = ?2 AND deleted_at IS NULL
                   AND replaced_by IS NULL",
            )
            .bind(replacement.account_id.as_str())
            .bind(old.as_str())
            .bind(rows::micros(old_expires_at))
            .bind(replacement.id.as_str())
            .execute(&mut *tx)
            .await?;
            if shortened.rows_affected() != 1 {
                return Ok(false);
            }
            insert_key(&mut *tx, replacement).await?;
            insert_audit(&mut *tx, audit).await?;
            Ok(true)
        })
        .await
    }

    async fn audit(
        &self,
        account: &AccountId,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, BackendError> {
        let rows = sqlx::query(
            "SELECT * FROM audit_log WHERE account_id = ?1 AND (?2 IS NULL OR id < ?2)
             ORDER BY id DESC LIMIT ?3",
        )
        .bind(account.as_str())
        .bind(before)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.reads)
        .await
        .map_err(db)?;
        rows.iter()
            .map(rows::audit_entry)
            .collect::<Result<_, _>>()
            .map_err(db)
    }

    async fn prune_audit(&self, before: OffsetDateTime) -> Result<u64, BackendError> {
        self.write(async |tx| {
            let pruned = sqlx::query("DELETE FROM audit_log WHERE at < ?")
                .bind(rows::micros(before))
                .execute(&mut *tx)
                .await?;
            Ok(pruned.rows_affected())
        })
        .await
    }

    async fn usage(
        &self,
        key: &KeyId,
        granularity: Granularity,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<UsageBucket>, BackendError> {
        let rows = sqlx::query(
            "SELECT * FROM usage_buckets
             WHERE key_id = ? AND granularity = ? AND start >= ? AND start < ?
             ORDER BY start",
        )
        .bind(key.as_str())
        .bind(granularity.as_str())
        .bind(rows::micros(from))
        .bind(rows::micros(to))
        .fetch_all(&self.reads)
        .await
        .map_err(db)?;
        rows.iter()
            .map(rows::usage_bucket)
            .collect::<Result<_, _>>()
            .map_err(db)
    }

    async fn permissions_last_used(
        &self,
        account: &AccountId,
    ) -> Result<Vec<(KeyId, Permission, OffsetDateTime)>, BackendError> {
        let rows = sqlx::query(
            "SELECT p.key_id, p.permission, p.last_used_at FROM permission_use p
             JOIN api_keys k ON k.id = p.key_id WHERE k.account_id = ?",
        )
        .bind(account.as_str())
        .fetch_all(&self.reads)
        .await
        .map_err(db)?;
        let used: Vec<_> = rows
            .iter()
            .map(|row| rows::permission_use(row, self.permissions))
            .collect::<Result<_, _>>()
            .map_err(db)?;
        Ok(used.into_iter().flatten().collect())
    }

    async fn account_usage(
        &self,
        account: &AccountId,
        granularity: Granularity,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<(KeyId, UsageBucket)>, BackendError> {
        let rows = sqlx::query(
            "SELECT b.* FROM usage_buckets b JOIN api_keys k ON k.id = b.key_id
             WHERE k.account_id = ? AND b.granularity = ? AND b.start >= ? AND b.start < ?",
        )
        .bind(account.as_str())
        .bind(granularity.as_str())
        .bind(rows::micros(from))
        .bind(rows::micros(to))
        .fetch_all(&self.reads)
        .await
        .map_err(db)?;
        rows.iter()
            .map(rows::keyed_usage_bucket)
            .collect::<Result<_, _>>()
            .map_err(db)
    }
}

/// Writes `entry`, and its event if it has one.
async fn insert_audit(
    connection: &mut SqliteConnection,
    entry: &AuditEntry,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_log (id, at, action, account_id, key_id, actor_kind, actor_id, details)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&entry.id)
    .bind(rows::micros(entry.at))
    .bind(entry.action.as_str())
    .bind(entry.account_id.as_str())
    .bind(entry.key_id.as_ref().map(KeyId::as_str))
    .bind(entry.actor.kind.as_str())
    .bind(entry.actor.id.as_deref())
    .bind(serde_json::Value::Object(entry.details.clone()).to_string())
    .execute(&mut *connection)
    .await?;
    match Event::of(entry) {
        Some(event) => insert_event(connection, &event, None).await.map(drop),
        None => Ok(()),
    }
}

/// Writes `event`, due at once; `false` if its `once` mark was written before.
async fn insert_event(
    connection: &mut SqliteConnection,
    event: &Event,
    once: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let written = sqlx::query(
        "INSERT INTO events (id, subject, body, once, due_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (once) DO NOTHING",
    )
    .bind(&event.id)
    .bind(event.subject())
    .bind(event.to_json())
    .bind(once)
    .bind(rows::micros(event.at))
    .execute(connection)
    .await?;
    Ok(written.rows_affected() == 1)
}

async fn insert_key<'e>(
    executor: impl sqlx::SqliteExecutor<'e>,
    key: &StoredKey,
) -> Result<(), sqlx::Error> {
    let names: Vec<&str> = key.permissions.iter().map(Permission::as_str).collect();
    sqlx::query(
        "INSERT INTO api_keys (id, account_id, name, prefix, digest, permissions, expiration,
            rate_limits, created_at, expires_at, disabled, environment, shares_limit_with,
            allowed_networks)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(key.id.as_str())
    .bind(key.account_id.as_str())
    .bind(&key.name)
    .bind(&key.prefix)
    .bind(&key.digest.as_bytes()[..])
    .bind(serde_json::to_string(&names).map_err(|e| sqlx::Error::Encode(Box::new(e)))?)
    .bind(key.expiration.to_string())
    .bind(key.rate_limits.map(RateLimits::to_json))
    .bind(rows::micros(key.created_at))
    .bind(key.expires_at.map(rows::micros))
    .bind(key.disabled)
    .bind(key.environment.as_ref().map(Environment::as_str))
    .bind(key.shares_limit_with.as_ref().map(KeyId::as_str))
    .bind(rows::networks_json(key.allowed_networks.as_ref()))
    .execute(executor)
    .await
    .map(drop)
}

impl EventOutbox for SqliteKeyStore {
    async fn add_event(&self, event: &Event, once: &str) -> Result<bool, BackendError> {
        self.write(async |tx| insert_event(tx, event, Some(once)).await)
            .await
    }

    async fn claim_events(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<PendingEvent>, BackendError> {
        // One writer: the select and the lease are one transaction, so no other claim
        // comes between them.
        let rows = self
            .write(async |tx| {
                let rows = sqlx::query(
                    "SELECT seq, body, attempts, delivered_to FROM events e
                     WHERE finished_at IS NULL AND due_at <= ?1
                       AND (leased_until IS NULL OR leased_until <= ?1)
                       AND NOT EXISTS (SELECT 1 FROM events p WHERE p.subject = e.subject
                                       AND p.seq < e.seq AND p.finished_at IS NULL)
                     ORDER BY seq LIMIT ?2",
                )
                .bind(rows::micros(now))
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&mut *tx)
                .await?;
                for row in &rows {
                    sqlx::query("UPDATE events SET leased_until = ? WHERE seq = ?")
                        .bind(rows::micros(lease_until))
                        .bind(row.try_get::<i64, _>("seq")?)
                        .execute(&mut *tx)
                        .await?;
                }
                Ok(rows)
            })
            .await?;
        rows.iter()
            .map(rows::pending_event)
            .collect::<Result<_, _>>()
            .map_err(db)
    }

    async fn settle_event(
        &self,
        seq: i64,
        settlement: Settlement,
        now: OffsetDateTime,
    ) -> Result<(), BackendError> {
        let settle = match settlement {
            Settlement::Delivered | Settlement::Abandoned => {
                sqlx::query("UPDATE events SET leased_until = NULL, finished_at = ? WHERE seq = ?")
                    .bind(rows::micros(now))
            }
            Settlement::Retry {
                at,
                attempts,
                delivered_to,
            } => sqlx::query(
                "UPDATE events SET leased_until = NULL, due_at = ?, attempts = ?, delivered_to = ?
                 WHERE seq = ?",
            )
            .bind(rows::micros(at))
            .bind(i64::from(attempts))
            .bind(i64::from(delivered_to)),
        };
        self.write(async |tx| settle.bind(seq).execute(tx).await.map(drop))
            .await
    }

    async fn prune_events(&self, before: OffsetDateTime) -> Result<u64, BackendError> {
        self.write(async |tx| {
            let pruned = sqlx::query("DELETE FROM events WHERE finished_at < ?")
                .bind(rows::micros(before))
                .execute(tx)
                .await?;
            Ok(pruned.rows_affected())
        })
        .await
    }

    async fn accounts_used_since(
        &self,
        since: OffsetDateTime,
    ) -> Result<Vec<AccountId>, BackendError> {
        let rows = sqlx::query(
            "SELECT DISTINCT account_id FROM api_keys
             WHERE deleted_at IS NULL AND last_used_at >= ?",
        )
        .bind(rows::micros(since))
        .fetch_all(&self.reads)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|row| row.try_get::<String, _>("account_id").map(AccountId::from))
            .collect::<Result<_, _>>()
            .map_err(db)
    }

    async fn keys_expiring(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<StoredKey>, BackendError> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys
             WHERE deleted_at IS NULL AND expires_at >= ? AND expires_at <= ?"
        ))
        .bind(rows::micros(from))
        .bind(rows::micros(to))
        .fetch_all(&self.reads)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|row| rows::stored_key(row, self.permissions))
            .collect::<Result<_, _>>()
            .map_err(db)
    }
}

/// An exclusive lock on `PATH.lock`, or an error naming the file when another process
/// holds it.
fn lock(path: &Path) -> Result<File, BackendError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&name)
        .map_err(BackendError::failed)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(BackendError::failed(format!(
            "the SQLite file {} is in use by another process (or another store in this one): \
             one file serves one process; for several instances, use PostgreSQL",
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(error)) => Err(BackendError::failed(error)),
    }
}

impl fmt::Debug for SqliteKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteKeyStore")
            .field("path", &self.path)
            .field("hasher", &self.hasher)
            .finish_non_exhaustive()
    }
}
