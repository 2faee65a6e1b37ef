//! Counts per client address, a minute at a time: the admin token's failures, the reports
//! a scanner sends.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use axum::extract::ConnectInfo;
use quick_cache::sync::{Cache, EntryAction, EntryResult};
use tokio::time::Instant;

/// How long a count lasts.
const WINDOW: Duration = Duration::from_secs(60);
/// How many addresses' counts are kept: those seen least lately go first.
const ADDRESSES_KEPT: usize = 10_000;

/// Each address's count in its current minute, for the 10 000 addresses seen last (bounded
/// memory, constant time per count); an address that reaches `max` waits for the end of
/// its minute.
pub(crate) struct PerAddress {
    counts: Cache<IpAddr, Count>,
    max: u32,
}

/// One address's count in its current minute.
#[derive(Clone, Copy)]
struct Count {
    since: Instant,
    count: u32,
}

impl PerAddress {
    pub(crate) fn new(max: u32) -> Self {
        Self {
            counts: Cache::new(ADDRESSES_KEPT),
            max,
        }
    }

    /// How long `client` must still wait, if it reached the most in its minute.
    pub(crate) fn blocked(&self, client: IpAddr, now: Instant) -> Option<Duration> {
        let count = self.counts.get(&client)?;
        let ends = count.since + WINDOW;
        (count.count >= self.max && now < ends).then(|| ends - now)
    }

    /// Counts one for `client`; its count in its minute.
    pub(crate) fn count(&self, client: IpAddr, now: Instant) -> u32 {
        let fresh = Count {
            since: now,
            count: 1,
        };
        let counted = self.counts.entry(&client, None, |_, count| {
            if now >= count.since + WINDOW {
                *count = fresh;
            } else {
                count.count += 1;
            }
            EntryAction::Retain(count.count)
        });
        match counted {
            EntryResult::Retained(count) => count,
            EntryResult::Vacant(slot) => {
                let _ = slot.insert(fresh);
                1
            }
            _ => 1,
        }
    }
}

/// The address a request is counted under, as axum's `ConnectInfo<SocketAddr>` gives it
/// (none without it): an IPv6 address by its /64, which one client usually holds whole.
pub(crate) fn client_of<B>(request: &axum::http::Request<B>) -> Option<IpAddr> {
    let ConnectInfo(address) = request.extensions().get::<ConnectInfo<SocketAddr>>()?;
    Some(match address.ip() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    })
}
