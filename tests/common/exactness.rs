//! The exactness rule of the sliding window, checked against any limiter.

use nouvel_auth::{limit::Decision, RateLimit};
use proptest::prelude::*;

/// Feeds `arrivals` (milliseconds from some start, sorted) to `decide` and checks the rule:
/// (1) no interval of length W holds more than N admitted requests;
/// (2) every refused request had N admitted in the W before it;
/// and that `remaining` counts what the window holds.
pub fn check(
    limit: RateLimit,
    arrivals: &[u64],
    mut decide: impl FnMut(u64) -> Decision,
) -> Result<(), TestCaseError> {
    let w = limit.window().expect("a sliding window").as_millis() as u64;
    let n = limit.requests() as usize;
    let mut admitted: Vec<u64> = Vec::new();
    for &t in arrivals {
        let decision = decide(t);
        let in_window = admitted.iter().filter(|&&a| a + w > t).count();
        if decision.allowed {
            prop_assert!(
                in_window < n,
                "admitted at {t} with {in_window} in the window"
            );
            admitted.push(t);
        } else {
            prop_assert_eq!(
                in_window,
                n,
                "refused at {} with only {} in the window",
                t,
                in_window
            );
        }
        let now_in_window = admitted.iter().filter(|&&a| a + w > t).count();
        prop_assert_eq!(decision.remaining as usize, n - now_in_window);
    }
    for (i, &start) in admitted.iter().enumerate() {
        let inside = admitted[i..].iter().take_while(|&&a| a < start + w).count();
        prop_assert!(inside <= n, "{inside} admitted in [{start}, {start}+W)");
    }
    Ok(())
}

/// Sorted arrival times with gaps below `max_gap` ms.
pub fn arrivals(max_gap: u64, max_len: usize) -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(0..max_gap, 1..max_len).prop_map(|gaps| {
        gaps.iter()
            .scan(0u64, |t, gap| {
                *t += gap;
                Some(*t)
            })
            .collect()
    })
}
