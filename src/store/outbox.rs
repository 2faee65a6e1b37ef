//! The memory store's outbox: its events in order, with their delivery state.

use std::collections::{BTreeMap, HashSet};

use time::OffsetDateTime;

use crate::events::{Event, PendingEvent, Settlement};

/// Events by `seq`, and the `once` marks of those still kept.
#[derive(Default)]
pub(super) struct MemoryOutbox {
    next_seq: i64,
    events: BTreeMap<i64, Row>,
    marks: HashSet<String>,
}

struct Row {
    event: Event,
    once: Option<String>,
    attempts: u32,
    delivered_to: u32,
    due_at: OffsetDateTime,
    leased_until: Option<OffsetDateTime>,
    finished_at: Option<OffsetDateTime>,
}

impl MemoryOutbox {
    /// Adds `event`, due at once; `false` (and nothing added) if `once` is a kept mark.
    pub(super) fn push(&mut self, event: Event, once: Option<&str>) -> bool {
        if let Some(once) = once {
            if !self.marks.insert(once.to_owned()) {
                return false;
            }
        }
        self.next_seq += 1;
        let row = Row {
            due_at: event.at,
            event,
            once: once.map(str::to_owned),
            attempts: 0,
            delivered_to: 0,
            leased_until: None,
            finished_at: None,
        };
        self.events.insert(self.next_seq, row);
        true
    }

    pub(super) fn claim(
        &mut self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: usize,
    ) -> Vec<PendingEvent> {
        let mut seen = HashSet::new();
        let mut claimed = Vec::new();
        for (&seq, row) in self
            .events
            .iter_mut()
            .filter(|(_, row)| row.finished_at.is_none())
        {
            // Only the oldest unfinished event of each subject may go.
            if !seen.insert(row.event.subject().to_owned()) {
                continue;
            }
            let leased = row.leased_until.is_some_and(|until| until > now);
            if row.due_at > now || leased {
                continue;
            }
            row.leased_until = Some(lease_until);
            claimed.push(PendingEvent {
                seq,
                event: row.event.clone(),
                attempts: row.attempts,
                delivered_to: row.delivered_to,
            });
            if claimed.len() == limit {
                break;
            }
        }
        claimed
    }

    pub(super) fn settle(&mut self, seq: i64, settlement: Settlement, now: OffsetDateTime) {
        let Some(row) = self.events.get_mut(&seq) else {
            return;
        };
        row.leased_until = None;
        match settlement {
            Settlement::Delivered | Settlement::Abandoned => row.finished_at = Some(now),
            Settlement::Retry {
                at,
                attempts,
                delivered_to,
            } => {
                row.due_at = at;
                row.attempts = attempts;
                row.delivered_to = delivered_to;
            }
        }
    }

    pub(super) fn prune(&mut self, before: OffsetDateTime) -> u64 {
        let kept = self.events.len();
        let marks = &mut self.marks;
        self.events.retain(|_, row| {
            let pruned = row.finished_at.is_some_and(|at| at < before);
            if pruned {
                if let Some(once) = &row.once {
                    marks.remove(once);
                }
            }
            !pruned
        });
        u64::try_from(kept - self.events.len()).unwrap_or(u64::MAX)
    }
}
