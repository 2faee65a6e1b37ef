//! Hints: what a key's owner should do about a key, read from what the store holds when
//! the key is read, with the thresholds of the profile. The seed asks owners to delete
//! unused keys, rotate every 90 days and watch expirations; the hints do the watching.

use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use crate::{
    middleware::EXPIRY_WARNING,
    usage::{Granularity, UsageBucket},
    Permission, Profile, StoredKey,
};

/// One thing a key's owner should look at: a code to act on, and a sentence to show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Hint {
    /// What it is about.
    pub code: HintCode,
    /// A sentence for the owner, with the action it suggests.
    pub message: String,
    /// The permissions it is about (`unused_permissions`); empty otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<Permission>,
}

/// What a [`Hint`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HintCode {
    /// No admitted request for the profile's `unused_after`, and the key is older than
    /// that: delete it if nothing uses it.
    Unused,
    /// These granted permissions had no admitted request for the profile's
    /// `unused_after`, though the key had: rotate it with only the permissions it uses.
    UnusedPermissions,
    /// In the last 60 minutes at least 20 of its requests were refused with 402 or 403,
    /// and they were more than half of its requests.
    ManyRejections,
    /// Older than the profile's `rotate_after`: rotate it.
    RotationDue,
    /// It never expires.
    NeverExpires,
    /// It expires within 7 days.
    ExpiresSoon,
}

/// The hints for `key` at `now`, by `profile`'s thresholds; a key already replaced by a
/// rotation has none (its replacement is the one to watch).
pub(crate) fn of(
    key: &StoredKey,
    profile: &Profile,
    now: OffsetDateTime,
    permissions_last_used: &[(Permission, Option<OffsetDateTime>)],
    recent: &[UsageBucket],
) -> Vec<Hint> {
    let mut hints = Vec::new();
    if key.replaced_by.is_some() {
        return hints;
    }
    let age = now - key.created_at;
    let unused_after = profile.unused_after_threshold();
    let idle_since = key.last_used_at.unwrap_or(key.created_at);
    if age > unused_after && now - idle_since > unused_after {
        hints.push(Hint {
            code: HintCode::Unused,
            message: format!(
                "No request in the last {}: delete the key if nothing uses it.",
                spoken(unused_after)
            ),
            permissions: Vec::new(),
        });
    } else if age > unused_after && key.last_used_at.is_some() {
        let unused: Vec<Permission> = permissions_last_used
            .iter()
            .filter(|(_, at)| at.is_none_or(|at| now - at > unused_after))
            .map(|(permission, _)| *permission)
            .collect();
        if !unused.is_empty() {
            let names: Vec<&str> = unused.iter().map(|p| p.as_str()).collect();
            hints.push(Hint {
                code: HintCode::UnusedPermissions,
                message: format!(
                    "Not used in the last {}: {}. Rotate the key with only the permissions it uses.",
                    spoken(unused_after),
                    names.join(", ")
                ),
                permissions: unused,
            });
        }
    }
    if let Some((refused, total)) = last_hour_refusals(recent, now) {
        hints.push(Hint {
            code: HintCode::ManyRejections,
            message: format!(
                "About {refused} of its {total} requests in the last hour were refused for its plan or permissions (402, 403): check what calls with it."
            ),
            permissions: Vec::new(),
        });
    }
    let rotate_after = profile.rotate_after_threshold();
    if age > rotate_after {
        hints.push(Hint {
            code: HintCode::RotationDue,
            message: format!("Created more than {} ago: rotate it.", spoken(rotate_after)),
            permissions: Vec::new(),
        });
    }
    match key.expires_at {
        None => hints.push(Hint {
            code: HintCode::NeverExpires,
            message:
                "It never expires: rotate it regularly, or replace it with a key that expires."
                    .to_owned(),
            permissions: Vec::new(),
        }),
        Some(at) if at > now && at - now <= EXPIRY_WARNING => hints.push(Hint {
            code: HintCode::ExpiresSoon,
            message: "It expires within 7 days: rotate it to keep access.".to_owned(),
            permissions: Vec::new(),
        }),
        Some(_) => {}
    }
    hints
}

/// The requests refused with 402 or 403 and all requests in the 60 minutes before `now`,
/// if at least 20 were refused and they were more than half: the current hour's, and the
/// hour before's in the share of it still within the 60 minutes (buckets are by hour).
fn last_hour_refusals(recent: &[UsageBucket], now: OffsetDateTime) -> Option<(u64, u64)> {
    let hour = Granularity::Hour;
    let current = hour.start_of(now);
    let elapsed = (now - current).as_seconds_f64() / 3_600.0;
    let mut refused = 0.0;
    let mut total = 0.0;
    for bucket in recent {
        let share = if bucket.start == current {
            1.0
        } else if bucket.start == current - hour.length() {
            1.0 - elapsed
        } else {
            continue;
        };
        let r = &bucket.rejected;
        #[allow(clippy::cast_precision_loss)] // counts of one hour
        let (no, all) = (
            (r.plan_required + r.missing_permission + r.route_not_allowed) as f64,
            (bucket.admitted
                + r.plan_required
                + r.missing_permission
                + r.route_not_allowed
                + r.rate_limited) as f64,
        );
        refused += no * share;
        total += all * share;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // rounded counts
    let (refused, total) = (refused.round() as u64, total.round() as u64);
    (refused >= 20 && refused * 2 > total).then_some((refused, total))
}

/// `duration` as a person says it: "30 days", "12 hours", "90 seconds".
fn spoken(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let (count, unit) = match seconds {
        s if s % 86_400 == 0 && s > 0 => (s / 86_400, "day"),
        s if s % 3_600 == 0 && s > 0 => (s / 3_600, "hour"),
        s if s % 60 == 0 && s > 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    let plural = if count == 1 { "" } else { "s" };
    format!("{count} {unit}{plural}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_spoken_in_their_largest_whole_unit() {
        assert_eq!(spoken(Duration::from_secs(30 * 86_400)), "30 days");
        assert_eq!(spoken(Duration::from_secs(86_400)), "1 day");
        assert_eq!(spoken(Duration::from_secs(12 * 3_600)), "12 hours");
        assert_eq!(spoken(Duration::from_secs(90)), "90 seconds");
        assert_eq!(spoken(Duration::from_secs(120)), "2 minutes");
    }
}
