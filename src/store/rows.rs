//! The rows both SQL stores keep, decoded once: PostgreSQL and SQLite have the same tables
//! and columns, and differ only in how a time and the permission names are kept.

use sqlx::Row;
use time::OffsetDateTime;

use crate::{
    events::PendingEvent,
    manage::{Actor, AuditEntry, Exposure},
    network::Networks,
    quiet::{warn_quietly, Quiet},
    usage::{Granularity, RejectionCounts, UsageBucket},
    Account, AccountId, Environment, Expiration, KeyDigest, KeyId, KeyRecord, Permission,
    PermissionSet, Permissions, Plan, RateLimits, StoredKey, Usage, UsageReport,
};

/// The columns of a [`StoredKey`], for `SELECT`s that decode one with [`stored_key`].
pub(super) const KEY_COLUMNS: &str = "id, account_id, name, prefix, digest, permissions,
    expiration, rate_limits, created_at, last_used_at,
    expires_at, replaced_by, disabled, environment, shares_limit_with, admitted,
    rejected_plan_required, rejected_missing_permission, rejected_route_not_allowed,
    rejected_rate_limited, last_request_at, exposed_at, exposed_url, exposed_source,
    allowed_networks";

/// A row of either database, read by column name.
pub(super) trait Columns {
    fn text(&self, column: &str) -> Result<String, sqlx::Error>;
    fn maybe_text(&self, column: &str) -> Result<Option<String>, sqlx::Error>;
    fn integer(&self, column: &str) -> Result<i64, sqlx::Error>;
    fn flag(&self, column: &str) -> Result<bool, sqlx::Error>;
    fn bytes(&self, column: &str) -> Result<Vec<u8>, sqlx::Error>;
    fn maybe_time(&self, column: &str) -> Result<Option<OffsetDateTime>, sqlx::Error>;
    /// The `permissions` column's names.
    fn permission_names(&self) -> Result<Vec<String>, sqlx::Error>;

    fn time(&self, column: &str) -> Result<OffsetDateTime, sqlx::Error> {
        self.maybe_time(column)?
            .ok_or_else(|| sqlx::Error::Decode(format!("{column} is null").into()))
    }
}

/// The accessors whose types both databases decode alike, for a `Columns` impl.
macro_rules! plain_columns {
    () => {
        fn text(&self, column: &str) -> Result<String, sqlx::Error> {
            sqlx::Row::try_get(self, column)
        }
        fn maybe_text(&self, column: &str) -> Result<Option<String>, sqlx::Error> {
            sqlx::Row::try_get(self, column)
        }
        fn integer(&self, column: &str) -> Result<i64, sqlx::Error> {
            sqlx::Row::try_get(self, column)
        }
        fn flag(&self, column: &str) -> Result<bool, sqlx::Error> {
            sqlx::Row::try_get(self, column)
        }
        fn bytes(&self, column: &str) -> Result<Vec<u8>, sqlx::Error> {
            sqlx::Row::try_get(self, column)
        }
    };
}

#[cfg(feature = "postgres")]
impl Columns for sqlx::postgres::PgRow {
    plain_columns!();

    fn maybe_time(&self, column: &str) -> Result<Option<OffsetDateTime>, sqlx::Error> {
        self.try_get(column)
    }

    /// A `text[]`.
    fn permission_names(&self) -> Result<Vec<String>, sqlx::Error> {
        self.try_get("permissions")
    }
}

#[cfg(feature = "sqlite")]
impl Columns for sqlx::sqlite::SqliteRow {
    plain_columns!();

    /// Unix microseconds (see [`micros`]).
    fn maybe_time(&self, column: &str) -> Result<Option<OffsetDateTime>, sqlx::Error> {
        self.try_get::<Option<i64>, _>(column)?
            .map(|micros| {
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
                    .map_err(decode)
            })
            .transpose()
    }

    /// A JSON array.
    fn permission_names(&self) -> Result<Vec<String>, sqlx::Error> {
        serde_json::from_str(&self.text("permissions")?).map_err(decode)
    }
}

/// Unix microseconds, as the SQLite file keeps times.
#[cfg(feature = "sqlite")]
pub(super) use crate::clock::micros;

fn decode<E: std::error::Error + Send + Sync + 'static>(error: E) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(error))
}

/// A row of `usage_buckets`.
pub(super) fn usage_bucket(row: &impl Columns) -> Result<UsageBucket, sqlx::Error> {
    let count = |column| Ok::<_, sqlx::Error>(u64::try_from(row.integer(column)?).unwrap_or(0));
    Ok(UsageBucket {
        start: row.time("start")?,
        admitted: count("admitted")?,
        rejected: RejectionCounts {
            plan_required: count("plan_required")?,
            missing_permission: count("missing_permission")?,
            route_not_allowed: count("route_not_allowed")?,
            rate_limited: count("rate_limited")?,
        },
    })
}

/// A row of `usage_buckets` with its key.
pub(super) fn keyed_usage_bucket(row: &impl Columns) -> Result<(KeyId, UsageBucket), sqlx::Error> {
    Ok((KeyId::from(row.text("key_id")?), usage_bucket(row)?))
}

/// A row of `permission_use`, if the permission is still `set`'s.
pub(super) fn permission_use(
    row: &impl Columns,
    set: &'static PermissionSet,
) -> Result<Option<(KeyId, Permission, OffsetDateTime)>, sqlx::Error> {
    let permission = set.parse(&row.text("permission")?).ok();
    let key = KeyId::from(row.text("key_id")?);
    let at = row.time("last_used_at")?;
    Ok(permission.map(|permission| (key, permission, at)))
}

/// Every (key, permission, time) of a batch of reports: each permission an admitted
/// request of the batch needed, at the batch's last use.
pub(super) fn permissions_used(
    reports: &[UsageReport],
) -> Vec<(&KeyId, &'static str, OffsetDateTime)> {
    reports
        .iter()
        .filter_map(|report| Some((report, report.last_used_at?)))
        .flat_map(|(report, at)| {
            report
                .permissions_used
                .iter()
                .map(move |permission| (&report.key_id, permission.as_str(), at))
        })
        .collect()
}

/// Every bucket of a batch of reports: each report's hours, then its days.
pub(super) fn buckets(reports: &[UsageReport]) -> Vec<(&KeyId, Granularity, UsageBucket)> {
    reports
        .iter()
        .flat_map(|report| {
            let hours = report.hours.iter().map(|h| (Granularity::Hour, *h));
            let days = report.days().into_iter().map(|d| (Granularity::Day, d));
            hours
                .chain(days)
                .map(move |(granularity, bucket)| (&report.key_id, granularity, bucket))
                .collect::<Vec<_>>()
        })
        .collect()
}

pub(super) fn account(row: &impl Columns) -> Result<Account, sqlx::Error> {
    Ok(Account {
        id: AccountId::from(row.text("id")?),
        name: row.text("name")?,
        plan: Plan::new(row.text("plan")?),
        created_at: row.time("created_at")?,
    })
}

/// A row of [`KEY_COLUMNS`].
pub(super) fn stored_key(
    row: &impl Columns,
    set: &'static PermissionSet,
) -> Result<StoredKey, sqlx::Error> {
    let count = |column| Ok::<_, sqlx::Error>(u64::try_from(row.integer(column)?).unwrap_or(0));
    Ok(StoredKey {
        id: KeyId::from(row.text("id")?),
        account_id: AccountId::from(row.text("account_id")?),
        name: row.text("name")?,
        prefix: row.text("prefix")?,
        digest: digest(row)?,
        permissions: permissions(row, set)?,
        expiration: row
            .text("expiration")?
            .parse::<Expiration>()
            .map_err(decode)?,
        rate_limits: rate_limits(row)?,
        created_at: row.time("created_at")?,
        expires_at: row.maybe_time("expires_at")?,
        last_used_at: row.maybe_time("last_used_at")?,
        replaced_by: key_id(row, "replaced_by")?,
        disabled: row.flag("disabled")?,
        environment: environment(row)?,
        shares_limit_with: key_id(row, "shares_limit_with")?,
        allowed_networks: allowed_networks(row)?,
        exposure: match row.maybe_time("exposed_at")? {
            Some(at) => Some(Exposure {
                url: row.text("exposed_url")?,
                source: row.text("exposed_source")?,
                at,
            }),
            None => None,
        },
        usage: Usage {
            admitted: count("admitted")?,
            rejected: RejectionCounts {
                plan_required: count("rejected_plan_required")?,
                missing_permission: count("rejected_missing_permission")?,
                route_not_allowed: count("rejected_route_not_allowed")?,
                rate_limited: count("rejected_rate_limited")?,
            },
            last_request_at: row.maybe_time("last_request_at")?,
        },
    })
}

/// A row of the `events` table: `seq, body, attempts, delivered_to`.
pub(super) fn pending_event(row: &impl Columns) -> Result<PendingEvent, sqlx::Error> {
    Ok(PendingEvent {
        seq: row.integer("seq")?,
        event: serde_json::from_str(&row.text("body")?).map_err(decode)?,
        attempts: u32::try_from(row.integer("attempts")?).unwrap_or(u32::MAX),
        delivered_to: u32::try_from(row.integer("delivered_to")?).unwrap_or(0),
    })
}

/// The `digest` column.
pub(super) fn digest(row: &impl Columns) -> Result<KeyDigest, sqlx::Error> {
    let digest: [u8; 32] = row
        .bytes("digest")?
        .try_into()
        .map_err(|_| sqlx::Error::Decode("a digest is 32 bytes".into()))?;
    Ok(KeyDigest::from_bytes(digest))
}

/// What a lookup answers, from a row of the key (`id`, `account_id`, `name`,
/// `permissions`, `expires_at`, `rate_limits`, `disabled`, `environment`, `allowed_networks`,
/// `shares_limit_with`) and its account's `plan`.
pub(super) fn key_record(
    row: &impl Columns,
    set: &'static PermissionSet,
) -> Result<KeyRecord, sqlx::Error> {
    Ok(KeyRecord::new(
        row.text("id")?,
        row.text("account_id")?,
        row.text("name")?,
        Plan::new(row.text("plan")?),
        permissions(row, set)?,
    )
    .expires_at(row.maybe_time("expires_at")?)
    .rate_limits(rate_limits(row)?)
    .disabled(row.flag("disabled")?)
    .environment(environment(row)?)
    .shares_limit_with(key_id(row, "shares_limit_with")?)
    .allowed_networks(allowed_networks(row)?))
}

pub(super) fn audit_entry(row: &impl Columns) -> Result<AuditEntry, sqlx::Error> {
    Ok(AuditEntry {
        id: row.text("id")?,
        at: row.time("at")?,
        action: row.text("action")?.parse().map_err(decode)?,
        account_id: AccountId::from(row.text("account_id")?),
        key_id: key_id(row, "key_id")?,
        actor: Actor {
            kind: row.text("actor_kind")?.parse().map_err(decode)?,
            id: row.maybe_text("actor_id")?,
        },
        details: serde_json::from_str(&row.text("details")?).map_err(decode)?,
    })
}

/// The row's permission names, as permissions of `set`. A name the set no longer has
/// grants nothing (and is logged, once per 10 s at most: every lookup of such a key would
/// log it): a profile that dropped a permission takes it from every key.
fn permissions(
    row: &impl Columns,
    set: &'static PermissionSet,
) -> Result<Permissions, sqlx::Error> {
    static UNKNOWN: Quiet = Quiet::new();
    Ok(row
        .permission_names()?
        .iter()
        .filter_map(|name| {
            set.parse(name)
                .inspect_err(|_| warn_quietly!(UNKNOWN, permission = %name, "nouvel-auth: a stored permission is not in the profile; ignoring it"))
                .ok()
        })
        .collect())
}

/// The `rate_limits` column: the list's JSON text, as [`RateLimits::to_json`] wrote it.
fn rate_limits(row: &impl Columns) -> Result<Option<RateLimits>, sqlx::Error> {
    row.maybe_text("rate_limits")?
        .map(|text| {
            let value = serde_json::from_str(&text).map_err(decode)?;
            RateLimits::from_json(&value).map_err(|reason| decode(std::io::Error::other(reason)))
        })
        .transpose()
}

/// The `allowed_networks` column: a JSON array of CIDRs, or null.
fn allowed_networks(row: &impl Columns) -> Result<Option<Networks>, sqlx::Error> {
    row.maybe_text("allowed_networks")?
        .map(|json| {
            let texts: Vec<String> = serde_json::from_str(&json).map_err(decode)?;
            Networks::parse(texts).map_err(decode)
        })
        .transpose()
}

/// `networks` as the `allowed_networks` column keeps them.
pub(super) fn networks_json(networks: Option<&Networks>) -> Option<String> {
    networks.map(|networks| serde_json::to_string(networks).unwrap_or_default())
}

fn environment(row: &impl Columns) -> Result<Option<Environment>, sqlx::Error> {
    row.maybe_text("environment")?
        .map(|label| label.parse().map_err(decode))
        .transpose()
}

fn key_id(row: &impl Columns, column: &str) -> Result<Option<KeyId>, sqlx::Error> {
    Ok(row.maybe_text(column)?.map(KeyId::from))
}
