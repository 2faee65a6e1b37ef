//! Keys and accounts in PostgreSQL, shared by every instance of an app.

use std::{fmt, str::FromStr, sync::Arc, time::Duration};

use sqlx::{
    postgres::{PgArguments, PgConnectOptions, PgConnection, PgListener, PgPoolOptions},
    query::Query,
    PgPool, Postgres, Transaction,
};
use time::OffsetDateTime;

use super::rows::{self, KEY_COLUMNS};
use super::Invalidation;
use crate::{
    events::{Event, PendingEvent, Settlement},
    store::EventOutbox,
    KeyRecord, KeyStorage, KeyStore, Profile, RateLimits, StoredKey,
};
use crate::{
    manage::{AuditEntry, Exposure, Granularity, UsageBucket},
    quiet::{warn_quietly, Quiet},
    Account, AccountId, ApiKey, BackendError, Environment, KeyDigest, KeyHasher, KeyId, Permission,
    PermissionSet, Plan, UsageReport,
};

/// The key store on PostgreSQL (feature `postgres`): [`KeyStore`] and [`KeyStorage`].
///
/// * Tables live in a schema of your choice, so tests (or tenants) can be isolated.
/// * The schema is made by embedded migrations that run only when you call
///   [`migrate`](Self::migrate): at deploy time, not silently at every start.
/// * Usage arrives in batches: one `UPDATE … FROM UNNEST(…)` per flush.
/// * Every change that affects a lookup (create, delete, rotate, disable, enable, plan
///   change) sends a `NOTIFY` in its transaction; [`listen`](Self::listen) hands them to
///   a cache on every instance.
///
/// ```no_run
/// # async fn run() -> Result<(), nouvel_auth::BackendError> {
/// use nouvel_auth::{store::PostgresKeyStore, NouvelAuthLayer, Profile};
///
/// let store =
///     PostgresKeyStore::connect("postgres://postgres@127.0.0.1/postgres", "nouvel", &Profile::nouvel())
///         .await?;
/// store.migrate().await?; // once, at deploy
/// let layer = NouvelAuthLayer::new(store);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresKeyStore {
    pool: PgPool,
    schema: Arc<str>,
    channel: Arc<str>,
    hasher: KeyHasher,
    permissions: &'static PermissionSet,
}

fn db(error: sqlx::Error) -> BackendError {
    BackendError::failed(error)
}

impl PostgresKeyStore {
    /// Connects to `url`, with tables in `schema` (lowercase letters, digits and `_`), for
    /// the application of `profile`: stored permission names are read as its permissions,
    /// and changes are announced on a channel named after it and the schema.
    pub async fn connect(url: &str, schema: &str, profile: &Profile) -> Result<Self, BackendError> {
        let valid = schema.len() <= 40
            && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(BackendError::failed(format!(
                "schema '{schema}' must be 1 to 40 of a-z, 0-9 and _, not starting with a digit"
            )));
        }
        let options = PgConnectOptions::from_str(url)
            .map_err(db)?
            .options([("search_path", schema)]);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(2))
            .connect_with(options)
            .await
            .map_err(db)?;
        Ok(Self {
            pool,
            schema: schema.into(),
            channel: format!("{}_keys_{schema}", profile.namespace()).into(),
            hasher: KeyHasher::default(),
            permissions: profile.permissions(),
        })
    }

    /// Digests keys with `hasher` (for example with a pepper). Every instance must agree.
    #[must_use]
    pub fn hasher(mut self, hasher: KeyHasher) -> Self {
        self.hasher = hasher;
        self
    }

    /// Creates the schema if needed and applies the embedded migrations.
    pub async fn migrate(&self) -> Result<(), BackendError> {
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {}", self.schema))
            .execute(&self.pool)
            .await
            .map_err(db)?;
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await
            .map_err(BackendError::failed)
    }

    /// Hands every change made by any instance to `on_change`, from a background task,
    /// typically `CachedKeyStore::invalidate` (feature `cache`).
    /// Changes made while the listening connection is down are lost, so once it listens
    /// again `on_change` gets [`Invalidation::All`]: anything read before may be stale.
    pub async fn listen(
        &self,
        on_change: impl Fn(Invalidation) + Send + Sync + 'static,
    ) -> Result<tokio::task::JoinHandle<()>, BackendError> {
        let mut listener = self.listener().await.map_err(db)?;
        let store = self.clone();
        Ok(tokio::spawn(async move {
            loop {
                match listener.try_recv().await {
                    Ok(Some(notification)) => {
                        if let Some(change) = Invalidation::parse(notification.payload()) {
                            on_change(change);
                        }
                    }
                    // The connection was lost, and sqlx has listened again already (its
                    // eager reconnection): only the changes made meanwhile are unknown.
                    Ok(None) => on_change(Invalidation::All),
                    // sqlx could not listen again (the database stayed away longer than the
                    // pool waits). `All` must wait until listening again, or a change made
                    // before then could be read back into a cache and never invalidated.
                    Err(error) => {
                        tracing::warn!(%error, "nouvel-auth: the key change listener lost its connection");
                        listener = store.listen_again().await;
                        on_change(Invalidation::All);
                    }
                }
            }
        }))
    }

    /// A connection listening on this store's channel.
    async fn listener(&self) -> Result<PgListener, sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(&self.channel).await?;
        Ok(listener)
    }

    /// [`listener`](Self::listener), tried each second until the database answers.
    async fn listen_again(&self) -> PgListener {
        loop {
            match self.listener().await {
                Ok(listener) => return listener,
                Err(error) => {
                    static LISTEN: Quiet = Quiet::new();
                    warn_quietly!(LISTEN, %error, "nouvel-auth: cannot listen for key changes; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Commits `tx` with a notice of `changes` to every instance's cache: all happen, or
    /// none.
    /// Runs `update` (an `UPDATE` of the key `key` `RETURNING` its columns) and writes
    /// `audit`, in one transaction that tells other instances the key changed: the key as it
    /// is now, or `None` (and no entry) if it changed none.
    async fn update_key<'q>(
        &self,
        update: Query<'q, Postgres, PgArguments>,
        key: &KeyId,
        audit: &AuditEntry,
    ) -> Result<Option<StoredKey>, BackendError> {
        let changed = async {
            let mut tx = self.pool.begin().await?;
            let Some(row) = update.fetch_optional(&mut *tx).await? else {
                return Ok(None);
            };
            let stored = rows::stored_key(&row, self.permissions)?;
            insert_audit(&mut tx, audit).await?;
            self.commit_announcing(tx, &[Invalidation::Key(key.clone())])
                .await?;
            Ok(Some(stored))
        };
        changed.await.map_err(db)
    }

    async fn commit_announcing(
        &self,
        mut tx: Transaction<'_, Postgres>,
        changes: &[Invalidation],
    ) -> Result<(), sqlx::Error> {
        for change in changes {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(&*self.channel)
                .bind(change.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }
}

/// PostgreSQL's text cannot hold NUL: an id holding one was never made here.
fn storable(id: &str) -> bool {
    !id.contains('\0')
}

impl KeyStore for PostgresKeyStore {
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
             WHERE k.digest = $1 AND k.deleted_at IS NULL",
        )
        .bind(&digest.as_bytes()[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        rows::key_record(&row, self.permissions)
            .map(|record| Some(Arc::new(record)))
            .map_err(db)
    }

    async fn record_usage(&self, reports: &[UsageReport]) -> Result<(), BackendError> {
        let column = |f: fn(&UsageReport) -> u64| -> Vec<i64> {
            reports
                .iter()
                .map(|r| i64::try_from(f(r)).unwrap_or(i64::MAX))
                .collect()
        };
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query(
            "UPDATE api_keys k SET
                admitted = k.admitted + u.admitted,
                rejected_plan_required = k.rejected_plan_required + u.plan_required,
                rejected_missing_permission = k.rejected_missing_permission + u.missing_permission,
                rejected_route_not_allowed = k.rejected_route_not_allowed + u.route_not_allowed,
                rejected_rate_limited = k.rejected_rate_limited + u.rate_limited,
                last_used_at = GREATEST(k.last_used_at, u.last_used_at),
                last_request_at = GREATEST(k.last_request_at, u.last_request_at)
             FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], $6::int8[],
                         $7::timestamptz[], $8::timestamptz[])
                  AS u(id, admitted, plan_required, missing_permission, route_not_allowed,
                       rate_limited, last_used_at, last_request_at)
             WHERE k.id = u.id",
        )
        .bind(
            reports
                .iter()
                .map(|r| r.key_id.to_string())
                .collect::<Vec<_>>(),
        )
        .bind(column(|r| r.usage.admitted))
        .bind(column(|r| r.usage.rejected.plan_required))
        .bind(column(|r| r.usage.rejected.missing_permission))
        .bind(column(|r| r.usage.rejected.route_not_allowed))
        .bind(column(|r| r.usage.rejected.rate_limited))
        .bind(reports.iter().map(|r| r.last_used_at).collect::<Vec<_>>())
        .bind(
            reports
                .iter()
                .map(|r| r.usage.last_request_at)
                .collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        // Every bucket of the batch in one statement; the layer sends one report per key,
        // so no (key, granularity, start) comes twice. Only a key the table holds gets
        // buckets, as only it gets totals.
        let buckets = rows::buckets(reports);
        let count = |f: fn(&UsageBucket) -> u64| -> Vec<i64> {
            buckets
                .iter()
                .map(|(_, _, b)| i64::try_from(f(b)).unwrap_or(i64::MAX))
                .collect()
        };
        sqlx::query(
            "INSERT INTO usage_buckets AS b (key_id, granularity, start, admitted,
                plan_required, missing_permission, route_not_allowed, rate_limited)
             SELECT u.* FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::int8[],
                                    $5::int8[], $6::int8[], $7::int8[], $8::int8[])
                  AS u(key_id, granularity, start, admitted, plan_required,
                       missing_permission, route_not_allowed, rate_limited)
             JOIN api_keys k ON k.id = u.key_id
             ON CONFLICT (key_id, granularity, start) DO UPDATE SET
                admitted = b.admitted + EXCLUDED.admitted,
                plan_required = b.plan_required + EXCLUDED.plan_required,
                missing_permission = b.missing_permission + EXCLUDED.missing_permission,
                route_not_allowed = b.route_not_allowed + EXCLUDED.route_not_allowed,
                rate_limited = b.rate_limited + EXCLUDED.rate_limited",
        )
        .bind(
            buckets
                .iter()
                .map(|(key, _, _)| key.to_string())
                .collect::<Vec<_>>(),
        )
        .bind(
            buckets
                .iter()
                .map(|(_, granularity, _)| granularity.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(buckets.iter().map(|(_, _, b)| b.start).collect::<Vec<_>>())
        .bind(count(|b| b.admitted))
        .bind(count(|b| b.rejected.plan_required))
        .bind(count(|b| b.rejected.missing_permission))
        .bind(count(|b| b.rejected.route_not_allowed))
        .bind(count(|b| b.rejected.rate_limited))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let used = rows::permissions_used(reports);
        sqlx::query(
            "INSERT INTO permission_use AS p (key_id, permission, last_used_at)
             SELECT u.* FROM UNNEST($1::text[], $2::text[], $3::timestamptz[])
                  AS u(key_id, permission, last_used_at)
             JOIN api_keys k ON k.id = u.key_id
             ON CONFLICT (key_id, permission) DO UPDATE SET
                last_used_at = GREATEST(p.last_used_at, EXCLUDED.last_used_at)",
        )
        .bind(
            used.iter()
                .map(|(key, _, _)| key.to_string())
                .collect::<Vec<_>>(),
        )
        .bind(used.iter().map(|(_, p, _)| *p).collect::<Vec<_>>())
        .bind(used.iter().map(|(_, _, at)| *at).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn live_digests(&self) -> Result<Option<Vec<KeyDigest>>, BackendError> {
        self.all_live_digests().await.map(Some).map_err(db)
    }
}

impl PostgresKeyStore {
    /// One query over the digest index, for a cache's filter of made-up keys.
    async fn all_live_digests(&self) -> Result<Vec<KeyDigest>, sqlx::Error> {
        let rows = sqlx::query("SELECT digest FROM api_keys WHERE deleted_at IS NULL")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(rows::digest).collect()
    }
}

impl KeyStorage for PostgresKeyStore {
    async fn insert_account(
        &self,
        account: &Account,
        audit: &AuditEntry,
    ) -> Result<(), BackendError> {
        let inserted = async {
            let mut tx = self.pool.begin().await?;
            sqlx::query(
                "INSERT INTO accounts (id, name, plan, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(account.id.as_str())
            .bind(&account.name)
            .bind(account.plan.as_str())
            .bind(account.created_at)
            .execute(&mut *tx)
            .await?;
            insert_audit(&mut tx, audit).await?;
            tx.commit().await
        };
        inserted.await.map_err(db)
    }

    async fn account(&self, id: &AccountId) -> Result<Option<Account>, BackendError> {
        if !storable(id.as_str()) {
            return Ok(None);
        }
        let row = sqlx::query("SELECT * FROM accounts WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(rows::account).transpose().map_err(db)
    }

    async fn accounts_named(&self, name: &str) -> Result<Vec<Account>, BackendError> {
        if !storable(name) {
            return Ok(Vec::new());
        }
        let rows = sqlx::query("SELECT * FROM accounts WHERE name = $1 ORDER BY created_at, id")
            .bind(name)
            .fetch_all(&self.pool)
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
        if !storable(id.as_str()) {
            return Ok(None);
        }
        let changed = async {
            let mut tx = self.pool.begin().await?;
            let row = sqlx::query("UPDATE accounts SET plan = $2 WHERE id = $1 RETURNING *")
                .bind(id.as_str())
                .bind(plan.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row else { return Ok(None) };
            insert_audit(&mut tx, audit).await?;
            self.commit_announcing(tx, &[Invalidation::Account(id.clone())])
                .await?;
            rows::account(&row).map(Some)
        };
        changed.await.map_err(db)
    }

    async fn insert_key(&self, key: &StoredKey, audit: &AuditEntry) -> Result<(), BackendError> {
        let inserted = async {
            let mut tx = self.pool.begin().await?;
            insert_key(&mut *tx, key).await?;
            insert_audit(&mut tx, audit).await?;
            self.commit_announcing(tx, &[Invalidation::Created(key.digest)])
                .await
        };
        inserted.await.map_err(db)
    }

    async fn keys(&self, account: &AccountId) -> Result<Vec<StoredKey>, BackendError> {
        if !storable(account.as_str()) {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE account_id = $1 AND deleted_at IS NULL"
        ))
        .bind(account.as_str())
        .fetch_all(&self.pool)
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
        if !storable(account.as_str()) || !storable(key.as_str()) {
            return Ok(None);
        }
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys
             WHERE account_id = $1 AND id = $2 AND deleted_at IS NULL"
        ))
        .bind(account.as_str())
        .bind(key.as_str())
        .fetch_optional(&self.pool)
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
        if !storable(account.as_str()) || !storable(key.as_str()) {
            return Ok(false);
        }
        let deleted = async {
            let mut tx = self.pool.begin().await?;
            let deleted = sqlx::query(
                "UPDATE api_keys SET deleted_at = now()
                 WHERE account_id = $1 AND id = $2 AND deleted_at IS NULL",
            )
            .bind(account.as_str())
            .bind(key.as_str())
            .execute(&mut *tx)
            .await?;
            if deleted.rows_affected() != 1 {
                return Ok(false);
            }
            insert_audit(&mut tx, audit).await?;
            self.commit_announcing(tx, &[Invalidation::Key(key.clone())])
                .await?;
            Ok(true)
        };
        deleted.await.map_err(db)
    }

    async fn set_disabled(
        &self,
        account: &AccountId,
        key: &KeyId,
        disabled: bool,
        audit: &AuditEntry,
    ) -> Result<Option<StoredKey>, BackendError> {
        if !storable(account.as_str()) || !storable(key.as_str()) {
            return Ok(None);
        }
        let update = format!(
            "UPDATE api_keys SET disabled = $3
             WHERE account_id = $1 AND id = $2 AND deleted_at IS NULL
             RETURNING {KEY_COLUMNS}"
        );
        let update = sqlx::query(&update)
            .bind(account.as_str())
            .bind(key.as_str())
            .bind(disabled);
        self.update_key(update, key, audit).await
    }

    async fn expose_key(
        &self,
        account: &AccountId,
        key: &KeyId,
        exposure: &Exposure,
        disable: bool,
        audit: &AuditEntry,
    ) -> Result<Option<StoredKey>, BackendError> {
        if !storable(account.as_str()) || !storable(key.as_str()) {
            return Ok(None);
        }
        let update = format!(
            "UPDATE api_keys
             SET exposed_at = $3, exposed_url = $4, exposed_source = $5,
                 disabled = disabled OR $6
             WHERE account_id = $1 AND id = $2 AND deleted_at IS NULL AND exposed_at IS NULL
             RETURNING {KEY_COLUMNS}"
        );
        let update = sqlx::query(&update)
            .bind(account.as_str())
            .bind(key.as_str())
            .bind(exposure.at)
            .bind(&exposure.url)
            .bind(&exposure.source)
            .bind(disable);
        self.update_key(update, key, audit).await
    }

    async fn replace_key(
        &self,
        old: &KeyId,
        old_expires_at: OffsetDateTime,
        replacement: &StoredKey,
        audit: &AuditEntry,
    ) -> Result<bool, BackendError> {
        if !storable(old.as_str()) {
            return Ok(false);
        }
        let replaced = async {
            let mut tx = self.pool.begin().await?;
            // The row lock this takes makes a concurrent replacement wait, then find it
            // replaced.
            let shortened = sqlx::query(
                "UPDATE api_keys SET expires_at = LEAST(COALESCE(expires_at, $3), $3),
                     replaced_by = $4
                 WHERE account_id = $1 AND id = $2 AND deleted_at IS NULL
                   AND replaced_by IS NULL",
            )
            .bind(replacement.account_id.as_str())
            .bind(old.as_str())
            .bind(old_expires_at)
            .bind(replacement.id.as_str())
            .execute(&mut *tx)
            .await?;
            if shortened.rows_affected() != 1 {
                return Ok(false);
            }
            insert_key(&mut *tx, replacement).await?;
            insert_audit(&mut tx, audit).await?;
            let changes = [
                Invalidation::Key(old.clone()),
                Invalidation::Created(replacement.digest),
            ];
            self.commit_announcing(tx, &changes).await?;
            Ok(true)
        };
        replaced.await.map_err(db)
    }

    async fn audit(
        &self,
        account: &AccountId,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, BackendError> {
        if !storable(account.as_str()) || !before.is_none_or(storable) {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT * FROM audit_log WHERE account_id = $1 AND ($2::text IS NULL OR id < $2)
             ORDER BY id DESC LIMIT $3",
        )
        .bind(account.as_str())
        .bind(before)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(rows::audit_entry)
            .collect::<Result<_, _>>()
            .map_err(db)
    }

    async fn prune_audit(&self, before: OffsetDateTime) -> Result<u64, BackendError> {
        sqlx::query("DELETE FROM audit_log WHERE at < $1")
            .bind(before)
            .execute(&self.pool)
            .await
            .map(|done| done.rows_affected())
            .map_err(db)
    }

    async fn usage(
        &self,
        key: &KeyId,
        granularity: Granularity,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<UsageBucket>, BackendError> {
        if !storable(key.as_str()) {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT * FROM usage_buckets
             WHERE key_id = $1 AND granularity = $2 AND start >= $3 AND start < $4
             ORDER BY start",
        )
        .bind(key.as_str())
        .bind(granularity.as_str())
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
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
        if !storable(account.as_str()) {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT p.key_id, p.permission, p.last_used_at FROM permission_use p
             JOIN api_keys k ON k.id = p.key_id WHERE k.account_id = $1",
        )
        .bind(account.as_str())
        .fetch_all(&self.pool)
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
        if !storable(account.as_str()) {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT b.* FROM usage_buckets b JOIN api_keys k ON k.id = b.key_id
             WHERE k.account_id = $1 AND b.granularity = $2 AND b.start >= $3 AND b.start < $4",
        )
        .bind(account.as_str())
        .bind(granularity.as_str())
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
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
    connection: &mut PgConnection,
    entry: &AuditEntry,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_log (id, at, action, account_id, key_id, actor_kind, actor_id, details)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&entry.id)
    .bind(entry.at)
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
async fn insert_event<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    event: &Event,
    once: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let written = sqlx::query(
        "INSERT INTO events (id, subject, body, once, due_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (once) DO NOTHING",
    )
    .bind(&event.id)
    .bind(event.subject())
    .bind(event.to_json())
    .bind(once)
    .bind(event.at)
    .execute(executor)
    .await?;
    Ok(written.rows_affected() == 1)
}

impl EventOutbox for PostgresKeyStore {
    async fn add_event(&self, event: &Event, once: &str) -> Result<bool, BackendError> {
        insert_event(&self.pool, event, Some(once))
            .await
            .map_err(db)
    }

    async fn claim_events(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<PendingEvent>, BackendError> {
        // Rows another instance is claiming are skipped, and so (by the NOT EXISTS) are the
        // later events of their keys.
        let rows = sqlx::query(
            "UPDATE events SET leased_until = $2
             WHERE seq IN (
                 SELECT seq FROM events e
                 WHERE finished_at IS NULL AND due_at <= $1
                   AND (leased_until IS NULL OR leased_until <= $1)
                   AND NOT EXISTS (SELECT 1 FROM events p WHERE p.subject = e.subject
                                   AND p.seq < e.seq AND p.finished_at IS NULL)
                 ORDER BY seq LIMIT $3
                 FOR UPDATE SKIP LOCKED)
             RETURNING seq, body, attempts, delivered_to",
        )
        .bind(now)
        .bind(lease_until)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut claimed: Vec<PendingEvent> = rows
            .iter()
            .map(rows::pending_event)
            .collect::<Result<_, _>>()
            .map_err(db)?;
        claimed.sort_by_key(|pending| pending.seq);
        Ok(claimed)
    }

    async fn settle_event(
        &self,
        seq: i64,
        settlement: Settlement,
        now: OffsetDateTime,
    ) -> Result<(), BackendError> {
        let settle = match settlement {
            Settlement::Delivered | Settlement::Abandoned => sqlx::query(
                "UPDATE events SET leased_until = NULL, finished_at = $2 WHERE seq = $1",
            )
            .bind(seq)
            .bind(now),
            Settlement::Retry {
                at,
                attempts,
                delivered_to,
            } => sqlx::query(
                "UPDATE events SET leased_until = NULL, due_at = $2, attempts = $3,
                     delivered_to = $4
                 WHERE seq = $1",
            )
            .bind(seq)
            .bind(at)
            .bind(i64::from(attempts))
            .bind(i64::from(delivered_to)),
        };
        settle.execute(&self.pool).await.map(drop).map_err(db)
    }

    async fn prune_events(&self, before: OffsetDateTime) -> Result<u64, BackendError> {
        let pruned = sqlx::query("DELETE FROM events WHERE finished_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(pruned.rows_affected())
    }

    async fn accounts_used_since(
        &self,
        since: OffsetDateTime,
    ) -> Result<Vec<AccountId>, BackendError> {
        let rows = sqlx::query(
            "SELECT DISTINCT account_id FROM api_keys
             WHERE deleted_at IS NULL AND last_used_at >= $1",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|row| sqlx::Row::try_get::<String, _>(row, "account_id").map(AccountId::from))
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
             WHERE deleted_at IS NULL AND expires_at >= $1 AND expires_at <= $2"
        ))
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|row| rows::stored_key(row, self.permissions))
            .collect::<Result<_, _>>()
            .map_err(db)
    }
}

async fn insert_key<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    key: &StoredKey,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO api_keys (id, account_id, name, prefix, digest, permissions, expiration,
            rate_limits, created_at, expires_at, disabled, environment, shares_limit_with,
            allowed_networks)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(key.id.as_str())
    .bind(key.account_id.as_str())
    .bind(&key.name)
    .bind(&key.prefix)
    .bind(&key.digest.as_bytes()[..])
    .bind(
        key.permissions
            .iter()
            .map(Permission::as_str)
            .collect::<Vec<_>>(),
    )
    .bind(key.expiration.to_string())
    .bind(key.rate_limits.map(RateLimits::to_json))
    .bind(key.created_at)
    .bind(key.expires_at)
    .bind(key.disabled)
    .bind(key.environment.as_ref().map(Environment::as_str))
    .bind(key.shares_limit_with.as_ref().map(KeyId::as_str))
    .bind(rows::networks_json(key.allowed_networks.as_ref()))
    .execute(executor)
    .await
    .map(drop)
}

impl fmt::Debug for PostgresKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresKeyStore")
            .field("schema", &self.schema)
            .field("hasher", &self.hasher)
            .finish_non_exhaustive()
    }
}
