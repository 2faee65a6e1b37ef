//! A key store of your own: here three tables behind a mutex, as a database would hold them.
//!
//! ```sh
//! cargo run --example custom_store
//! ```
//!
//! A store is storage and nothing more: it keeps the accounts and keys the
//! [`KeyManager`] hands it, finds a key by its SHA-256 digest (it never sees a key), and
//! adds up usage. The manager checks every rule before it writes, so the store checks
//! none. `tests/custom_store.rs` runs this store through `nouvel_auth::testing::conformance`,
//! the same kit the built-in stores pass.
#![allow(clippy::print_stdout)] // the example reports what it did

use nouvel_auth::nouvel;
use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use axum::{body::Body, http::Request, routing::get, Router};
use nouvel_auth::{
    key::AccountId,
    key::KeyDigest,
    key::KeyId,
    manage::{Account, AuditEntry, Exposure, Granularity, UsageBucket},
    store::UsageReport,
    BackendError, KeyManager, KeyRecord, KeySpec, KeyStorage, KeyStore, NouvelAuthLayer,
    Permission, Plan, StoredKey,
};
use time::OffsetDateTime;
use tower::ServiceExt;

/// The tables. Deleted keys keep their row, marked, as a database would. Each write takes
/// the lock once and adds its audit entry under it: the transaction of a real store.
#[derive(Default)]
struct Tables {
    accounts: Vec<Account>,
    keys: Vec<(StoredKey, bool)>,
    audit: Vec<AuditEntry>,
    /// Usage by hour and by day: `(key, granularity, bucket)`.
    usage: Vec<(KeyId, Granularity, UsageBucket)>,
    /// When each key last used each permission.
    permission_use: Vec<(KeyId, Permission, OffsetDateTime)>,
}

/// Clones share the tables.
#[derive(Clone, Default)]
pub struct TableStore(Arc<Mutex<Tables>>);

impl std::fmt::Debug for TableStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TableStore")
    }
}

impl TableStore {
    fn tables(&self) -> Result<MutexGuard<'_, Tables>, BackendError> {
        // A real store would map a connection error to `BackendError::failed(error)`,
        // which the layer answers with 503, never 401.
        self.0
            .lock()
            .map_err(|e| BackendError::failed(e.to_string()))
    }
}

/// The live key `key` of `account`, as `SELECT … WHERE account_id = $1 AND id = $2 AND NOT deleted`.
fn live<'t>(tables: &'t mut Tables, account: &AccountId, key: &KeyId) -> Option<&'t mut StoredKey> {
    tables
        .keys
        .iter_mut()
        .find(|(row, deleted)| !deleted && row.id == *key && row.account_id == *account)
        .map(|(row, _)| row)
}

impl KeyStore for TableStore {
    async fn lookup(
        &self,
        digest: &KeyDigest,
        _now: OffsetDateTime,
    ) -> Result<Option<Arc<KeyRecord>>, BackendError> {
        let tables = self.tables()?;
        let Some((key, _)) = tables
            .keys
            .iter()
            .find(|(row, deleted)| !deleted && row.digest == *digest)
        else {
            return Ok(None);
        };
        // As `JOIN accounts`: the record carries the account's plan as it is now.
        let account = tables.accounts.iter().find(|a| a.id == key.account_id);
        Ok(account.map(|account| Arc::new(key.record(account.plan.clone()))))
    }

    async fn record_usage(&self, reports: &[UsageReport]) -> Result<(), BackendError> {
        // One batch per flush interval: one `UPDATE … FROM (VALUES …)` in a real store.
        let mut tables = self.tables()?;
        for report in reports {
            let Some((key, _)) = tables.keys.iter_mut().find(|(k, _)| k.id == report.key_id) else {
                continue;
            };
            key.usage.merge(&report.usage);
            key.last_used_at = key.last_used_at.max(report.last_used_at);
            if let Some(at) = report.last_used_at {
                for permission in report.permissions_used {
                    let row = tables
                        .permission_use
                        .iter_mut()
                        .find(|(k, p, _)| *k == report.key_id && *p == permission);
                    match row {
                        Some((_, _, last)) => *last = (*last).max(at),
                        None => tables
                            .permission_use
                            .push((report.key_id.clone(), permission, at)),
                    }
                }
            }
            // An `INSERT … ON CONFLICT DO UPDATE` per bucket in a real store.
            let hours = report.hours.iter().map(|h| (Granularity::Hour, *h));
            let days = report.days().into_iter().map(|d| (Granularity::Day, d));
            for (granularity, bucket) in hours.chain(days) {
                let row = tables.usage.iter_mut().find(|(k, g, b)| {
                    *k == report.key_id && *g == granularity && b.start == bucket.start
                });
                match row {
                    Some((_, _, kept)) => kept.add(&bucket),
                    None => tables
                        .usage
                        .push((report.key_id.clone(), granularity, bucket)),
                }
            }
        }
        Ok(())
    }
}

impl KeyStorage for TableStore {
    async fn insert_account(
        &self,
        account: &Account,
        audit: &AuditEntry,
    ) -> Result<(), BackendError> {
        let mut tables = self.tables()?;
        tables.accounts.push(account.clone());
        tables.audit.push(audit.clone());
        Ok(())
    }

    async fn account(&self, id: &AccountId) -> Result<Option<Account>, BackendError> {
        Ok(self
            .tables()?
            .accounts
            .iter()
            .find(|a| a.id == *id)
            .cloned())
    }

    async fn accounts_named(&self, name: &str) -> Result<Vec<Account>, BackendError> {
        // Accounts are pushed as they are made: oldest first already.
        Ok(self
            .tables()?
            .accounts
            .iter()
            .filter(|a| a.name == name)
            .cloned()
            .collect())
    }

    async fn set_plan(
        &self,
        id: &AccountId,
        plan: Plan,
        audit: &AuditEntry,
    ) -> Result<Option<Account>, BackendError> {
        let mut tables = self.tables()?;
        let Some(account) = tables.accounts.iter_mut().find(|a| a.id == *id) else {
            return Ok(None);
        };
        account.plan = plan;
        let account = account.clone();
        tables.audit.push(audit.clone());
        Ok(Some(account))
    }

    async fn insert_key(&self, key: &StoredKey, audit: &AuditEntry) -> Result<(), BackendError> {
        let mut tables = self.tables()?;
        tables.keys.push((key.clone(), false));
        tables.audit.push(audit.clone());
        Ok(())
    }

    async fn keys(&self, account: &AccountId) -> Result<Vec<StoredKey>, BackendError> {
        let tables = self.tables()?;
        let live = tables
            .keys
            .iter()
            .filter(|(row, deleted)| !deleted && row.account_id == *account);
        Ok(live.map(|(row, _)| row.clone()).collect())
    }

    async fn key(
        &self,
        account: &AccountId,
        key: &KeyId,
    ) -> Result<Option<StoredKey>, BackendError> {
        Ok(live(&mut *self.tables()?, account, key).cloned())
    }

    async fn delete_key(
        &self,
        account: &AccountId,
        key: &KeyId,
        audit: &AuditEntry,
    ) -> Result<bool, BackendError> {
        let mut tables = self.tables()?;
        let row = tables
            .keys
            .iter_mut()
            .find(|(row, deleted)| !deleted && row.id == *key && row.account_id == *account);
        let deleted = row.map(|(_, deleted)| *deleted = true).is_some();
        if deleted {
            tables.audit.push(audit.clone());
        }
        Ok(deleted)
    }

    async fn set_disabled(
        &self,
        account: &AccountId,
        key: &KeyId,
        disabled: bool,
        audit: &AuditEntry,
    ) -> Result<Option<StoredKey>, BackendError> {
        let mut tables = self.tables()?;
        let Some(row) = live(&mut tables, account, key) else {
            return Ok(None);
        };
        row.disabled = disabled;
        let row = row.clone();
        tables.audit.push(audit.clone());
        Ok(Some(row))
    }

    async fn expose_key(
        &self,
        account: &AccountId,
        key: &KeyId,
        exposure: &Exposure,
        disable: bool,
        audit: &AuditEntry,
    ) -> Result<Option<StoredKey>, BackendError> {
        let mut tables = self.tables()?;
        let Some(row) = live(&mut tables, account, key).filter(|row| row.exposure.is_none()) else {
            return Ok(None);
        };
        row.exposure = Some(exposure.clone());
        row.disabled |= disable;
        let row = row.clone();
        tables.audit.push(audit.clone());
        Ok(Some(row))
    }

    async fn replace_key(
        &self,
        old: &KeyId,
        old_expires_at: OffsetDateTime,
        replacement: &StoredKey,
        audit: &AuditEntry,
    ) -> Result<bool, BackendError> {
        // One lock for every write: the transaction of a real store.
        let mut tables = self.tables()?;
        let Some(old) =
            live(&mut tables, &replacement.account_id, old).filter(|old| old.replaced_by.is_none())
        else {
            return Ok(false);
        };
        old.replace_with(&replacement.id, old_expires_at);
        tables.keys.push((replacement.clone(), false));
        tables.audit.push(audit.clone());
        Ok(true)
    }

    async fn audit(
        &self,
        account: &AccountId,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, BackendError> {
        // `SELECT … WHERE account_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3`
        let tables = self.tables()?;
        let mut entries: Vec<AuditEntry> = tables
            .audit
            .iter()
            .filter(|e| e.account_id == *account && before.is_none_or(|b| e.id.as_str() < b))
            .cloned()
            .collect();
        entries.sort_by(|a, b| b.id.cmp(&a.id));
        entries.truncate(limit);
        Ok(entries)
    }

    async fn prune_audit(&self, before: OffsetDateTime) -> Result<u64, BackendError> {
        let mut tables = self.tables()?;
        let kept = tables.audit.len();
        tables.audit.retain(|e| e.at >= before);
        Ok((kept - tables.audit.len()) as u64)
    }

    async fn usage(
        &self,
        key: &KeyId,
        granularity: Granularity,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<UsageBucket>, BackendError> {
        let mut buckets: Vec<UsageBucket> = self
            .tables()?
            .usage
            .iter()
            .filter(|(k, g, b)| k == key && *g == granularity && (from..to).contains(&b.start))
            .map(|(_, _, b)| *b)
            .collect();
        buckets.sort_by_key(|b| b.start);
        Ok(buckets)
    }

    async fn permissions_last_used(
        &self,
        account: &AccountId,
    ) -> Result<Vec<(KeyId, Permission, OffsetDateTime)>, BackendError> {
        let tables = self.tables()?;
        let of_account = |id: &KeyId| {
            tables
                .keys
                .iter()
                .any(|(k, _)| k.id == *id && k.account_id == *account)
        };
        Ok(tables
            .permission_use
            .iter()
            .filter(|(id, _, _)| of_account(id))
            .cloned()
            .collect())
    }

    async fn account_usage(
        &self,
        account: &AccountId,
        granularity: Granularity,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<(KeyId, UsageBucket)>, BackendError> {
        let tables = self.tables()?;
        let of_account = |id: &KeyId| {
            tables
                .keys
                .iter()
                .any(|(k, _)| k.id == *id && k.account_id == *account)
        };
        Ok(tables
            .usage
            .iter()
            .filter(|(k, g, b)| *g == granularity && (from..to).contains(&b.start) && of_account(k))
            .map(|(k, _, b)| (k.clone(), *b))
            .collect())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = TableStore::default();
    let keys = KeyManager::new(store.clone());
    let account = keys.create_account("Acme", nouvel::BUSINESS).await?;
    let created = keys
        .create_key(
            &account.id,
            KeySpec::new("Reports", [nouvel::ANALYTICS_READ]),
        )
        .await?;

    let auth = NouvelAuthLayer::new(store).usage_flush_interval(Duration::from_secs(3600));
    let app = Router::new()
        .route("/api/v1/analytics", get(|| async { "{\"visits\": 42}" }))
        .layer(auth.clone());

    let request = Request::get("/api/v1/analytics")
        .header(
            "authorization",
            format!("Bearer {}", created.key.expose_secret()),
        )
        .body(Body::empty())?;
    let response = app.oneshot(request).await?;
    println!(
        "GET /api/v1/analytics with the table's key: {}",
        response.status()
    );
    assert!(response.status().is_success());

    auth.flush_usage().await?;
    let admitted = keys
        .key(&account.id, &created.info.id)
        .await?
        .usage
        .admitted;
    println!("usage flushed to the table: {admitted} request(s) admitted");
    assert_eq!(admitted, 1);
    Ok(())
}
