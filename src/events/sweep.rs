//! The sweep: events that time brings, not a change.

use std::time::Duration;

use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use super::{Event, EventKind};
use crate::{store::EventOutbox, BackendError};

/// A key is told `key.expiring` once it expires within this: 7 days.
pub const EXPIRING_WITHIN: Duration = Duration::from_secs(7 * 86_400);

/// Writes `key.expiring` for each live key that expires within [`EXPIRING_WITHIN`] of
/// `now`, and `key.expired` for each that expired in the last [`EXPIRING_WITHIN`], once
/// per key each (a mark of the event's kind and key). A key replaced by a rotation is left
/// out: `key.rotated` told its end.
pub(super) async fn sweep<S: EventOutbox>(
    outbox: &S,
    now: OffsetDateTime,
) -> Result<(), BackendError> {
    let keys = outbox
        .keys_expiring(now - EXPIRING_WITHIN, now + EXPIRING_WITHIN)
        .await?;
    for key in keys.iter().filter(|key| key.replaced_by.is_none()) {
        let Some(expires_at) = key.expires_at else {
            continue;
        };
        let kind = if expires_at > now {
            EventKind::KeyExpiring
        } else {
            EventKind::KeyExpired
        };
        let event = Event::new(kind, &key.account_id, Some(&key.id), now).data(
            "expires_at",
            expires_at.format(&Rfc3339).unwrap_or_default(),
        );
        outbox
            .add_event(&event, &format!("{kind}:{}", key.id))
            .await?;
    }
    Ok(())
}
