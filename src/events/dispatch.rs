//! The dispatcher: claims due events from the outbox, hands them to the sinks, settles
//! each attempt, and runs the sweep.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use tokio::task::JoinSet;

use super::{sweep::Sweep, Event, PendingEvent, Settlement};
use crate::{store::EventOutbox, BackendError, Clock, KeyManager};

/// How long an event is retried before it is abandoned: 24 hours from when it happened.
pub const RETRY_FOR: Duration = Duration::from_secs(24 * 3600);

/// Where events go: the application's own code (an e-mail to the key's owner, a message
/// to a queue), or the Standard Webhooks sender `WebhookSender` (feature `webhooks`).
///
/// An event may arrive more than once (after a crash, or when another sink failed and the
/// event is retried); its [`id`](Event::id) stays the same, so a sink can drop repeats.
/// Return `Err` to have it retried later.
pub trait EventSink: Send + Sync + 'static {
    /// Takes one event.
    fn deliver(&self, event: &Event) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// Why a sink did not take an event; the event is retried.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(Box<dyn std::error::Error + Send + Sync>);

impl SinkError {
    /// A failure with `error` as its cause.
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(error.into())
    }
}

/// An [`EventSink`] behind a pointer, so that a dispatcher holds sinks of several types.
trait AnySink: Send + Sync + 'static {
    fn deliver_boxed<'a>(
        &'a self,
        event: &'a Event,
    ) -> Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send + 'a>>;
}

impl<T: EventSink> AnySink for T {
    fn deliver_boxed<'a>(
        &'a self,
        event: &'a Event,
    ) -> Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send + 'a>> {
        Box::pin(self.deliver(event))
    }
}

/// Delivers the events of an [outbox](EventOutbox) to its sinks, in the background.
///
/// Each pass ([`run_once`](Self::run_once); [`spawn`](Self::spawn) makes one every
/// second) claims the events that are due, gives each to every sink that has not taken it
/// yet, and settles it: delivered, or retried with exponential backoff (10 s after the
/// first failure, doubling up to an hour between attempts) until [`RETRY_FOR`] has passed
/// since it happened. A pass also runs the sweep when it is due (every 60 s by default):
/// `key.expiring`, `key.expired`, `quota.threshold`, and the pruning of events finished 30
/// days ago. It reads time from the manager's profile (its clock), and quotas as the
/// manager shows them.
///
/// Several dispatchers may share one outbox (instances on one PostgreSQL database): an
/// event is claimed by one at a time for a lease of a minute, so each is delivered once
/// between them unless a dispatcher stops mid-delivery (then another delivers it again
/// when the lease ends).
///
/// See [the module](super) for an example.
pub struct EventDispatcher<S> {
    keys: KeyManager<S>,
    sinks: Vec<Arc<dyn AnySink>>,
    poll_every: Duration,
    sweep: Sweep,
}

/// How long a claim holds an event: longer than a delivery may take.
const LEASE: Duration = Duration::from_secs(60);
/// How long one sink gets for one event before the attempt counts as failed.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Events claimed in one pass.
const BATCH: usize = 64;

impl<S: EventOutbox> EventDispatcher<S> {
    /// A dispatcher of the events of `keys`' storage, with no sink yet.
    #[must_use]
    pub fn new(keys: KeyManager<S>) -> Self {
        Self {
            keys,
            sinks: Vec::new(),
            poll_every: Duration::from_secs(1),
            sweep: Sweep::new(Duration::from_secs(60)),
        }
    }

    /// Adds a sink: every event goes to each sink (at most 32) once it is delivered.
    ///
    /// # Panics
    ///
    /// With a 33rd sink.
    #[must_use]
    pub fn sink(mut self, sink: impl EventSink) -> Self {
        assert!(self.sinks.len() < 32, "a dispatcher takes at most 32 sinks");
        self.sinks.push(Arc::new(sink));
        self
    }

    /// How often the spawned task looks for due events (default 1 s).
    #[must_use]
    pub fn poll_every(mut self, every: Duration) -> Self {
        self.poll_every = every;
        self
    }

    /// How often the sweep looks for expiring and expired keys (default 60 s).
    #[must_use]
    pub fn sweep_every(mut self, every: Duration) -> Self {
        self.sweep = Sweep::new(every);
        self
    }

    /// One pass: the sweep if due, then one batch of due events delivered and settled. How
    /// many events every sink took.
    ///
    /// # Errors
    ///
    /// The outbox failed; what was delivered before stays settled, the rest is retried.
    pub async fn run_once(&self) -> Result<usize, BackendError> {
        let clock = self.keys.profile.clock_handle();
        let outbox = self.keys.storage();
        let now = clock.now();
        self.sweep.run_if_due(&self.keys, now).await?;
        let claimed = outbox.claim_events(now, now + LEASE, BATCH).await?;
        let mut attempts = JoinSet::new();
        for pending in claimed {
            let sinks = self.sinks.clone();
            let clock = clock.clone();
            attempts.spawn(async move {
                let seq = pending.seq;
                (seq, attempt(&sinks, pending, &*clock).await)
            });
        }
        let mut delivered = 0;
        while let Some(done) = attempts.join_next().await {
            let (seq, settlement) = done.map_err(BackendError::failed)?;
            delivered += usize::from(settlement == Settlement::Delivered);
            outbox.settle_event(seq, settlement, clock.now()).await?;
        }
        Ok(delivered)
    }

    /// Runs [passes](Self::run_once) until the task is aborted or the runtime stops; a
    /// failing outbox is logged and tried again at the next pass. Nothing is lost by
    /// stopping it at any point: what was not settled is delivered later.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                match self.run_once().await {
                    // More may be due at once: a burst is not held to a batch a second.
                    Ok(delivered) if delivered > 0 => continue,
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "events: the outbox failed"),
                }
                tokio::time::sleep(self.poll_every).await;
            }
        })
    }
}

/// Gives `pending` to every sink that has not taken it; what became of it.
async fn attempt(
    sinks: &[Arc<dyn AnySink>],
    pending: PendingEvent,
    clock: &dyn Clock,
) -> Settlement {
    let event = &pending.event;
    let mut delivered_to = pending.delivered_to;
    for (index, sink) in sinks.iter().enumerate() {
        let bit = 1u32 << index;
        if delivered_to & bit != 0 {
            continue;
        }
        match tokio::time::timeout(DELIVERY_TIMEOUT, sink.deliver_boxed(event)).await {
            Ok(Ok(())) => delivered_to |= bit,
            Ok(Err(error)) => {
                tracing::warn!(event = %event.id, kind = %event.kind, sink = index, %error, "events: a sink failed");
            }
            Err(_) => {
                tracing::warn!(event = %event.id, kind = %event.kind, sink = index, "events: a sink timed out");
            }
        }
    }
    let all = u32::MAX >> (32 - sinks.len().max(1));
    let now = clock.now();
    if sinks.is_empty() || delivered_to & all == all {
        Settlement::Delivered
    } else if now - event.at >= RETRY_FOR {
        tracing::warn!(event = %event.id, kind = %event.kind, "events: abandoned after 24 hours of retries");
        Settlement::Abandoned
    } else {
        let attempts = pending.attempts + 1;
        Settlement::Retry {
            at: now + retry_delay(attempts),
            attempts,
            delivered_to,
        }
    }
}

/// 10 s after the first failed attempt, then twice as long after each, at most an hour.
fn retry_delay(failed: u32) -> Duration {
    let doubled = Duration::from_secs(10).saturating_mul(1 << failed.saturating_sub(1).min(16));
    doubled.min(Duration::from_secs(3600))
}

impl<S: std::fmt::Debug> std::fmt::Debug for EventDispatcher<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventDispatcher")
            .field("keys", &self.keys)
            .field("sinks", &self.sinks.len())
            .field("poll_every", &self.poll_every)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::retry_delay;
    use std::time::Duration;

    #[test]
    fn retries_start_within_30_seconds_and_back_off_to_an_hour() {
        assert_eq!(retry_delay(1), Duration::from_secs(10));
        assert_eq!(retry_delay(2), Duration::from_secs(20));
        assert_eq!(retry_delay(5), Duration::from_secs(160));
        assert_eq!(retry_delay(12), Duration::from_secs(3600));
        assert_eq!(retry_delay(u32::MAX), Duration::from_secs(3600));
    }
}
