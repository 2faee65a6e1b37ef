//! The live keys a cache knows of, so that a made-up key costs the store (almost) nothing.
//!
//! A set of the first 8 bytes of every live key's digest: loaded once from the store, and
//! kept current by the cache's own writes and by the creations other instances announce.
//! A digest the set lacks is a made-up key, unless it was made elsewhere a moment ago and
//! its announcement is still on its way: so one such lookup in 100, or one a second when
//! fewer come, still asks the store. Deleted keys stay in the set (a lookup of one asks the
//! store, which says "unknown", as before); the set only grows with keys made.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use time::OffsetDateTime;

use crate::{clock::micros, KeyDigest};

/// How many made-up keys are refused for each one the store is asked about.
const REFUSED_PER_CHECK: u64 = 99;
/// And at least this often the store is asked, when fewer come: a key made on another
/// instance a moment ago is found even before its announcement arrives.
const CHECK_AT_LEAST_EVERY_MICROS: i64 = 1_000_000;

#[derive(Default)]
pub(super) struct LiveKeys {
    /// The first 8 bytes of every live key's digest (uniform: two keys share them with
    /// odds of about n / 2⁶⁴).
    fingerprints: dashmap::DashSet<u64, foldhash::fast::RandomState>,
    /// Whether the set holds every live key: loaded, with no announcement missed since.
    complete: AtomicBool,
    /// Lookups refused since the store was last asked about a digest the set lacks,
    refused_since_check: AtomicU64,
    /// and when that was (the layer's clock, unix microseconds).
    last_check: AtomicI64,
}

/// What the set says of a digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Ask the store: a live key may have it.
    Ask,
    /// No live key has it: answer "unknown" without asking.
    MadeUp,
}

/// The part of a digest the set keeps.
pub(crate) fn fingerprint(digest: &KeyDigest) -> u64 {
    let bytes = digest.as_bytes();
    u64::from_be_bytes([
        bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
    ])
}

impl LiveKeys {
    pub(super) fn add(&self, fingerprint: u64) {
        self.fingerprints.insert(fingerprint);
    }

    /// Adds every live key the store listed: the set is complete from now on.
    pub(super) fn load(&self, fingerprints: impl IntoIterator<Item = u64>) {
        for fingerprint in fingerprints {
            self.fingerprints.insert(fingerprint);
        }
        self.complete.store(true, Ordering::SeqCst);
    }

    /// Announcements were missed: every digest is asked about until loaded again.
    pub(super) fn incomplete(&self) {
        self.complete.store(false, Ordering::SeqCst);
    }

    pub(super) fn is_complete(&self) -> bool {
        self.complete.load(Ordering::SeqCst)
    }

    pub(super) fn len(&self) -> usize {
        self.fingerprints.len()
    }

    /// Whether a lookup of `digest` at `now` asks the store.
    pub(super) fn verdict(&self, digest: &KeyDigest, now: OffsetDateTime) -> Verdict {
        if !self.is_complete() || self.fingerprints.contains(&fingerprint(digest)) {
            return Verdict::Ask;
        }
        let now = micros(now);
        let last = self.last_check.load(Ordering::Relaxed);
        let due = self.refused_since_check.load(Ordering::Relaxed) >= REFUSED_PER_CHECK
            || now.saturating_sub(last) >= CHECK_AT_LEAST_EVERY_MICROS;
        // Of the lookups that find it due at once, one asks.
        if due
            && self
                .last_check
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.refused_since_check.store(0, Ordering::Relaxed);
            return Verdict::Ask;
        }
        self.refused_since_check.fetch_add(1, Ordering::Relaxed);
        Verdict::MadeUp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ApiKey;
    use std::time::Duration;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

    #[test]
    fn made_up_keys_ask_the_store_once_per_hundred_or_once_a_second() {
        let live = LiveKeys::default();
        let real = ApiKey::generate().digest();
        assert_eq!(live.verdict(&real, T0), Verdict::Ask, "not loaded: ask");
        live.load([fingerprint(&real)]);
        assert_eq!(live.verdict(&real, T0), Verdict::Ask);
        // A flood within one second: one ask per 100.
        let asked = (0..10_000)
            .filter(|_| live.verdict(&ApiKey::generate().digest(), T0) == Verdict::Ask)
            .count();
        assert_eq!(asked, 100);
        // A trickle: one a second.
        let t = T0 + Duration::from_secs(5);
        assert_eq!(live.verdict(&ApiKey::generate().digest(), t), Verdict::Ask);
        assert_eq!(
            live.verdict(&ApiKey::generate().digest(), t),
            Verdict::MadeUp
        );
        let later = t + Duration::from_secs(1);
        assert_eq!(
            live.verdict(&ApiKey::generate().digest(), later),
            Verdict::Ask
        );
        live.incomplete();
        assert_eq!(
            live.verdict(&ApiKey::generate().digest(), later),
            Verdict::Ask
        );
    }
}
