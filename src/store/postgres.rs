//! Keys and accounts in PostgreSQL, shared by every instance of an app.

use std::{fmt, str::FromStr, sync::Arc, time::Duration};

use sqlx::{
    postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgRow},
    PgPool, Postgres, Row, Transaction,
};
use time::OffsetDateTime;

use super::{Invalidation, KeyRecord, KeyStore};
use crate::{
    clock::SharedClock,
    key::random_id,
    manage::{validate_grace, validate_name},
    Account, AccountId, ApiKey, BackendError, Clock, Expiration, KeyDigest, KeyHasher, KeyId,
    KeyInfo, KeyManager, KeySpec, ManageError, NewKey, Permissions, Plan, RateLimit,
    RejectionCounts, SystemClock, Usage, UsageReport,
};

/// The key store on PostgreSQL (feature `postgres`): [`KeyStore`] and [`KeyManager`].
///
/// * Tables live in a schema of your choice, so tests (or tenants) can be isolated.
/// * The schema is made by embedded migrations that run only when you call
///   [`migrate`](Self::migrate): at deploy time, not silently at every start.
/// * Usage arrives in batches: one `UPDATE … FROM UNNEST(…)` per flush.
/// * Every change that affects a lookup (delete, rotate, plan change) sends a `NOTIFY`; [`listen`](Self::listen) hands them to a cache on every instance.
///
/// ```no_run
/// # async fn run() -> Result<(), nouvel_auth::BackendError> {
/// use nouvel_auth::{store::PostgresKeyStore, NouvelAuthLayer};
///
/// let store = PostgresKeyStore::connect("postgres://postgres@127.0.0.1/postgres", "nouvel").await?;
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
    clock: SharedClock,
}

fn db(error: sqlx::Error) -> BackendError {
    BackendError::failed(error)
}

impl From<sqlx::Error> for ManageError {
    fn from(error: sqlx::Error) -> Self {
        Self::Backend(db(error))
    }
}

impl PostgresKeyStore {
    /// Connects to `url`, with tables in `schema` (lowercase letters, digits and `_`).
    pub async fn connect(url: &str, schema: &str) -> Result<Self, BackendError> {
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
            channel: format!("nouvel_keys_{schema}").into(),
            hasher: KeyHasher::default(),
            clock: Arc::new(SystemClock),
        })
    }

    /// Digests keys with `hasher` (for example with a pepper). Every instance must agree.
    #[must_use]
    pub fn hasher(mut self, hasher: KeyHasher) -> Self {
        self.hasher = hasher;
        self
    }

    /// Reads creation and expiry times from `clock`.
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Creates the schema if needed and applies the embedded migrations.
    pub async fn migrate(&self) -> Result<(), BackendError> {
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {}", self.schema))
            .execute(&self.pool)
            .await
            .map_err(db)?;
        sqlx::migrate!("./migrations")
            .run(&self.pool)
            .await
            .map_err(BackendError::failed)
    }

    /// Hands every change made by any instance to `on_change`, from a background task,
    /// typically [`CachedKeyStore::invalidate`](crate::store::CachedKeyStore::invalidate).
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
                    tracing::warn!(%error, "nouvel-auth: cannot listen for key changes; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn notify(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        change: &Invalidation,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&*self.channel)
            .bind(change.to_string())
            .execute(&mut **tx)
            .await
            .map(drop)
    }

    /// The account's plan, locked against a concurrent change until the transaction ends.
    async fn account_plan(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        account: &AccountId,
    ) -> Result<Plan, ManageError> {
        let row = sqlx::query("SELECT plan FROM accounts WHERE id = $1 FOR SHARE")
            .bind(account.as_str())
            .fetch_optional(&mut **tx)
            .await?
            .ok_or(ManageError::NotFound)?;
        plan(&row)
    }

    /// Validates `spec`, checks the plan, and inserts a key: the shared core of create
    /// and rotate, inside the caller's transaction.
    async fn insert_key(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        account: &AccountId,
        plan: Plan,
        spec: &KeySpec,
        now: OffsetDateTime,
    ) -> Result<NewKey, ManageError> {
        let valid = spec.validate(now)?;
        if !plan.allows_api_keys() {
            return Err(ManageError::PlanRequired(plan));
        }
        let key = ApiKey::generate();
        let digest = self.hasher.digest(&key);
        let id = KeyId::from(random_id("key_"));
        let info = KeyInfo {
            id: id.clone(),
            name: valid.name,
            prefix: key.display_prefix().to_owned(),
            permissions: spec.permissions,
            created_at: now,
            last_used_at: None,
            expires_at: valid.expires_at,
            status: KeyInfo::status_at(valid.expires_at, now),
            usage: Usage::default(),
        };
        sqlx::query(
            "INSERT INTO api_keys (id, account_id, name, prefix, digest, permissions, expiration,
                rate_limit_requests, rate_limit_window_ms, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(id.as_str())
        .bind(account.as_str())
        .bind(&info.name)
        .bind(&info.prefix)
        .bind(&digest.as_bytes()[..])
        .bind(i16::from(spec.permissions.bits()))
        .bind(spec.expiration.to_string())
        .bind(spec.rate_limit.map(|l| i64::from(l.requests())))
        .bind(spec.rate_limit.map(|l| i64::from(l.window_millis())))
        .bind(now)
        .bind(valid.expires_at)
        .execute(&mut **tx)
        .await?;
        Ok(NewKey { info, key })
    }
}

fn plan(row: &PgRow) -> Result<Plan, ManageError> {
    let text: String = row.try_get("plan")?;
    text.parse()
        .map_err(|e| ManageError::Backend(BackendError::failed(e)))
}

fn account(row: &PgRow) -> Result<Account, ManageError> {
    Ok(Account {
        id: AccountId::from(row.try_get::<String, _>("id")?),
        name: row.try_get("name")?,
        plan: plan(row)?,
        created_at: row.try_get("created_at")?,
    })
}

const KEY_COLUMNS: &str = "id, name, prefix, permissions, created_at, last_used_at, expires_at,
    admitted, rejected_plan_required, rejected_missing_permission, rejected_route_not_allowed,
    rejected_rate_limited, last_request_at";

fn count(row: &PgRow, column: &str) -> Result<u64, sqlx::Error> {
    Ok(u64::try_from(row.try_get::<i64, _>(column)?).unwrap_or(0))
}

fn key_info(row: &PgRow, now: OffsetDateTime) -> Result<KeyInfo, sqlx::Error> {
    let expires_at = row.try_get("expires_at")?;
    Ok(KeyInfo {
        id: KeyId::from(row.try_get::<String, _>("id")?),
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        permissions: permissions(row)?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        expires_at,
        status: KeyInfo::status_at(expires_at, now),
        usage: Usage {
            admitted: count(row, "admitted")?,
            rejected: RejectionCounts {
                plan_required: count(row, "rejected_plan_required")?,
                missing_permission: count(row, "rejected_missing_permission")?,
                route_not_allowed: count(row, "rejected_route_not_allowed")?,
                rate_limited: count(row, "rejected_rate_limited")?,
            },
            last_request_at: row.try_get("last_request_at")?,
        },
    })
}

fn permissions(row: &PgRow) -> Result<Permissions, sqlx::Error> {
    Ok(Permissions::from_bits(
        row.try_get::<i16, _>("permissions")? as u8,
    ))
}

fn rate_limit(row: &PgRow) -> Result<Option<RateLimit>, sqlx::Error> {
    let requests: Option<i64> = row.try_get("rate_limit_requests")?;
    let window: Option<i64> = row.try_get("rate_limit_window_ms")?;
    Ok(requests.zip(window).map(|(n, w)| {
        RateLimit::new(
            n.try_into().unwrap_or(0),
            Duration::from_millis(w.try_into().unwrap_or(0)),
        )
    }))
}

impl KeyStore for PostgresKeyStore {
    fn digest(&self, key: &ApiKey) -> KeyDigest {
        self.hasher.digest(key)
    }

    async fn lookup(
        &self,
        digest: &KeyDigest,
        _now: OffsetDateTime,
    ) -> Result<Option<KeyRecord>, BackendError> {
        let row = sqlx::query(
            "SELECT k.id, k.account_id, k.name, a.plan, k.permissions, k.expires_at,
                    k.rate_limit_requests, k.rate_limit_window_ms
             FROM api_keys k JOIN accounts a ON a.id = k.account_id
             WHERE k.digest = $1 AND k.deleted_at IS NULL",
        )
        .bind(&digest.as_bytes()[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let record = (|| -> Result<KeyRecord, ManageError> {
            Ok(KeyRecord::new(
                row.try_get::<String, _>("id")?,
                row.try_get::<String, _>("account_id")?,
                row.try_get::<String, _>("name")?,
                plan(&row)?,
                permissions(&row)?,
            )
            .expires_at(row.try_get("expires_at")?)
            .rate_limit(rate_limit(&row)?))
        })();
        record
            .map(Some)
            .map_err(|e| BackendError::failed(e.to_string()))
    }

    async fn record_usage(&self, reports: &[UsageReport]) -> Result<(), BackendError> {
        let column = |f: fn(&UsageReport) -> u64| -> Vec<i64> {
            reports
                .iter()
                .map(|r| i64::try_from(f(r)).unwrap_or(i64::MAX))
                .collect()
        };
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
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(db)
    }
}

impl KeyManager for PostgresKeyStore {
    async fn create_account(&self, name: &str, plan: Plan) -> Result<Account, ManageError> {
        let name = validate_name(name).map_err(|e| ManageError::Invalid(vec![e]))?;
        let row = sqlx::query(
            "INSERT INTO accounts (id, name, plan, created_at) VALUES ($1, $2, $3, $4) RETURNING *",
        )
        .bind(&*random_id("acc_"))
        .bind(name)
        .bind(plan.as_str())
        .bind(self.clock.now())
        .fetch_one(&self.pool)
        .await?;
        account(&row)
    }

    async fn account(&self, id: &AccountId) -> Result<Account, ManageError> {
        let row = sqlx::query("SELECT * FROM accounts WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(ManageError::NotFound)?;
        account(&row)
    }

    async fn set_plan(&self, id: &AccountId, plan: Plan) -> Result<Account, ManageError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("UPDATE accounts SET plan = $2 WHERE id = $1 RETURNING *")
            .bind(id.as_str())
            .bind(plan.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(ManageError::NotFound)?;
        self.notify(&mut tx, &Invalidation::Account(id.clone()))
            .await?;
        tx.commit().await?;
        account(&row)
    }

    async fn create_key(&self, account: &AccountId, spec: KeySpec) -> Result<NewKey, ManageError> {
        let mut tx = self.pool.begin().await?;
        let plan = self.account_plan(&mut tx, account).await?;
        let created = self
            .insert_key(&mut tx, account, plan, &spec, self.clock.now())
            .await?;
        tx.commit().await?;
        Ok(created)
    }

    async fn keys(&self, account: &AccountId) -> Result<Vec<KeyInfo>, ManageError> {
        self.account(account).await?;
        let now = self.clock.now();
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE account_id = $1 AND deleted_at IS NULL
             ORDER BY created_at DESC, id DESC"
        ))
        .bind(account.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|row| key_info(row, now))
            .collect::<Result<_, _>>()?)
    }

    async fn key(&self, account: &AccountId, key: &KeyId) -> Result<KeyInfo, ManageError> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE account_id = $1 AND id = $2 AND deleted_at IS NULL"
        ))
        .bind(account.as_str())
        .bind(key.as_str())
        .fetch_optional(&self.pool)
        .await?
        .ok_or(ManageError::NotFound)?;
        Ok(key_info(&row, self.clock.now())?)
    }

    async fn delete_key(&self, account: &AccountId, key: &KeyId) -> Result<(), ManageError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE api_keys SET deleted_at = $3 WHERE account_id = $1 AND id = $2 AND deleted_at IS NULL",
        )
        .bind(account.as_str())
        .bind(key.as_str())
        .bind(self.clock.now())
        .execute(&mut *tx)
        .await?
        .rows_affected()
        .eq(&1)
        .then_some(())
        .ok_or(ManageError::NotFound)?;
        self.notify(&mut tx, &Invalidation::Key(key.clone()))
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn rotate_key(
        &self,
        account: &AccountId,
        key: &KeyId,
        grace: Duration,
    ) -> Result<NewKey, ManageError> {
        let now = self.clock.now();
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "SELECT k.name, k.permissions, k.expiration, k.rate_limit_requests, k.rate_limit_window_ms, a.plan
             FROM api_keys k JOIN accounts a ON a.id = k.account_id
             WHERE k.account_id = $1 AND k.id = $2 AND k.deleted_at IS NULL
             FOR UPDATE OF k",
        )
        .bind(account.as_str())
        .bind(key.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(ManageError::NotFound)?;
        validate_grace(grace)?;
        let expiration: String = row.try_get("expiration")?;
        let mut spec = KeySpec::new(row.try_get::<String, _>("name")?, permissions(&row)?.iter())
            .expiration(expiration.parse().unwrap_or(Expiration::default()));
        spec.rate_limit = rate_limit(&row)?;
        let created = self
            .insert_key(&mut tx, account, plan(&row)?, &spec, now)
            .await?;
        sqlx::query(
            "UPDATE api_keys SET expires_at = LEAST(COALESCE(expires_at, $3), $3)
             WHERE account_id = $1 AND id = $2",
        )
        .bind(account.as_str())
        .bind(key.as_str())
        .bind(now + grace)
        .execute(&mut *tx)
        .await?;
        self.notify(&mut tx, &Invalidation::Key(key.clone()))
            .await?;
        tx.commit().await?;
        Ok(created)
    }
}

impl fmt::Debug for PostgresKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresKeyStore")
            .field("schema", &self.schema)
            .field("hasher", &self.hasher)
            .finish_non_exhaustive()
    }
}
