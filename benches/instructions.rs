//! Instructions and allocations per request: figures that do not drift with the machine's
//! load, to judge a change of the request path by.
//!
//! ```sh
//! scripts/instructions            # callgrind's instruction counts, and the allocations
//! ```
//!
//! Each case sends requests through one contestant, as the targets bench does (bare axum,
//! this layer with one key, with 10 000 distinct keys in round robin, a malformed key's
//! 401, `tower_governor` with one key and with 10 000): `<case> <requests>` runs a warm-up
//! and then `requests` requests inside `measured`, the one function callgrind collects
//! (`--toggle-collect`); `allocations` prints each case's allocations per request, counted
//! by the allocator here.
#![allow(clippy::print_stdout)] // a report

mod common;

use std::{alloc::System, hint::black_box};

use axum::body::Body;
use http::Request;
use nouvel_auth::NouvelAuthLayer;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tower::{Layer, Service, ServiceExt};

use common::{fixture, governor, inner, request, runtime, MALFORMED};

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const CASES: [&str; 6] = [
    "bare",
    "one-key",
    "many-keys",
    "malformed",
    "governor",
    "governor-many",
];
/// Requests before the measured ones: every key of the round robin seen once (its slot
/// made, its state warm), as in a server that has run a while.
const WARM_UP: usize = common::MANY;

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let case = args.next().unwrap_or_else(|| "allocations".to_owned());
    let requests: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1_000);
    if case == "allocations" {
        println!("| case | allocations per request |\n|---|---|");
        for case in CASES {
            let allocations = run(case, requests, |send| {
                let region = Region::new(ALLOCATOR);
                send();
                region.change().allocations
            });
            println!("| {case} | {:.2} |", allocations as f64 / requests as f64);
        }
    } else {
        assert!(CASES.contains(&case.as_str()), "cases: {CASES:?}");
        run(&case, requests, |send| measured(send));
    }
}

/// What callgrind counts: everything `send` does.
#[inline(never)]
fn measured(send: &mut dyn FnMut()) {
    send();
}

/// Sets `case` up, warms it, and hands `around` a function that sends `requests` requests.
fn run<T>(case: &str, requests: usize, around: impl FnOnce(&mut dyn FnMut()) -> T) -> T {
    let rt = runtime();
    let fixture = fixture(&rt);
    let layer = NouvelAuthLayer::new(fixture.store.clone());
    let bearers: Vec<String> = match case {
        "one-key" | "governor" => vec![fixture.bearer],
        "malformed" => vec![MALFORMED.to_owned()],
        _ => fixture.many,
    };
    let mut next = 0;
    let mut send_one = |service: &mut dyn FnMut(Request<Body>)| {
        service(request(&bearers[next % bearers.len()]));
        next += 1;
    };
    let mut bare = inner();
    let mut ours = layer.layer(inner());
    let mut peer = governor(inner());
    let mut call = |request: Request<Body>| {
        rt.block_on(async {
            match case {
                "bare" => drop(black_box(
                    ServiceExt::<Request<Body>>::ready(&mut bare)
                        .await
                        .unwrap()
                        .call(request)
                        .await,
                )),
                "governor" | "governor-many" => {
                    drop(black_box(peer.ready().await.unwrap().call(request).await));
                }
                _ => drop(black_box(
                    ServiceExt::<Request<Body>>::ready(&mut ours)
                        .await
                        .unwrap()
                        .call(request)
                        .await,
                )),
            }
        });
    };
    for _ in 0..WARM_UP {
        send_one(&mut call);
    }
    around(&mut || {
        for _ in 0..requests {
            send_one(&mut call);
        }
    })
}
