//! The request path's targets, as ratios measured interleaved: the layer's overhead over
//! bare axum against `tower_governor`'s, with one key and with 10 000 distinct keys in
//! round robin; the malformed-key 401 against the hot path; the floor, for scale.
//!
//! ```sh
//! cargo bench -p nouvel-auth --bench targets
//! ```
//!
//! criterion (`hot_path`) measures each benchmark alone, minutes apart; on a shared machine
//! the speed moves in between, and ratios of its figures moved from 0.8 to 4 between runs.
//! Here every round times a batch of each contestant in turn (every other round in reverse
//! order), so drift hits all of them alike; each ratio is taken within a round, and the
//! result is its median over the rounds, with a 95 % interval of that median and the middle
//! half of the rounds beside it. A verdict ("met", "out of reach") is given only where the
//! whole interval lies on one side of the goal.
#![allow(clippy::print_stdout)] // a report

mod common;

use std::{
    fmt::Debug,
    hint::black_box,
    time::{Duration, Instant},
};

use axum::body::Body;
use http::Request;
use nouvel_auth::{key::ApiKey, NouvelAuthLayer, RouteTable};
use tower::{Layer, Service, ServiceExt};

use common::{
    axum_response_headers, five_static_headers, fixture, governor, inner, match_route, request,
    runtime, Floor, MALFORMED,
};

const WARM_UP_ROUNDS: usize = 10;
const ROUNDS: usize = 200;
/// Requests (or calls) per contestant and round.
const BATCH: usize = 2_000;
/// Inputs made at a time: few enough to stay in the cache, as a request just read off a
/// socket does. With a whole batch made at once, the figures read the inputs cold and
/// moved by 60 % between runs here (bare axum 489 to 816 ns).
const CHUNK: usize = 40;

/// One round's times, in ns per request or call.
struct Round {
    bare: f64,
    ours: f64,
    governor: f64,
    ours_many: f64,
    governor_many: f64,
    malformed: f64,
    floor: f64,
    parse: f64,
    route: f64,
    headers: f64,
}

impl Round {
    fn overhead(&self) -> f64 {
        self.ours - self.bare
    }

    fn governor_overhead(&self) -> f64 {
        self.governor - self.bare
    }

    fn overhead_many(&self) -> f64 {
        self.ours_many - self.bare
    }

    fn governor_overhead_many(&self) -> f64 {
        self.governor_many - self.bare
    }

    /// What any implementation of the contract does at least: the floor, parsing the key,
    /// matching the route, and inserting five header values made in advance.
    fn lower_bound(&self) -> f64 {
        self.floor + self.parse + self.route + self.headers
    }
}

fn main() {
    let rt = runtime();
    let fixture = fixture(&rt);
    let _guard = rt.enter();
    let (bare, governed) = (inner(), governor(inner()));
    let ours = NouvelAuthLayer::new(fixture.store.clone()).layer(inner());
    let floor = Floor::new(&fixture);
    let secret = fixture.key.expose_secret();
    let routes = RouteTable::nouvel();
    let bearer = std::slice::from_ref(&fixture.bearer);
    let malformed = [MALFORMED.to_owned()];
    let many = fixture.many.as_slice();

    let mut contestants: [Box<dyn FnMut() -> f64 + '_>; 10] = [
        Box::new(|| per_request(&rt, &bare, bearer)),
        Box::new(|| per_request(&rt, &ours, bearer)),
        Box::new(|| per_request(&rt, &governed, bearer)),
        Box::new(|| per_request(&rt, &ours, many)),
        Box::new(|| per_request(&rt, &governed, many)),
        Box::new(|| per_request(&rt, &ours, &malformed)),
        Box::new(|| per_input(|| (), |()| floor.check(black_box(secret)))),
        Box::new(|| per_input(|| (), |()| ApiKey::parse(black_box(secret)))),
        Box::new(|| per_input(|| (), |()| match_route(&routes))),
        Box::new(|| per_input(axum_response_headers, five_static_headers)),
    ];
    let mut rounds = Vec::with_capacity(ROUNDS);
    for round in 0..WARM_UP_ROUNDS + ROUNDS {
        let mut times = [0.0; 10];
        let mut order: Vec<usize> = (0..times.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            times[i] = contestants[i]();
        }
        let [bare, ours, governor, ours_many, governor_many, malformed, floor, parse, route, headers] =
            times;
        if round >= WARM_UP_ROUNDS {
            rounds.push(Round {
                bare,
                ours,
                governor,
                ours_many,
                governor_many,
                malformed,
                floor,
                parse,
                route,
                headers,
            });
        }
    }
    report(&rounds);
}

/// ns per request of `service`, over one batch of `oneshot`s presenting `bearers` in
/// round robin (carried on from the last batch); requests are built and responses dropped
/// outside the timing.
fn per_request<S>(rt: &tokio::runtime::Runtime, service: &S, bearers: &[String]) -> f64
where
    S: Service<Request<Body>> + Clone,
    S::Error: Debug,
{
    thread_local!(static NEXT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) });
    let bearer = || {
        let next = NEXT.with(|next| next.replace(next.get().wrapping_add(1)));
        &bearers[next % bearers.len()]
    };
    timed_chunks(
        || (service.clone(), request(bearer())),
        |inputs, outputs| {
            rt.block_on(async {
                let started = Instant::now();
                for (service, request) in inputs {
                    outputs.push(service.oneshot(request).await.unwrap());
                }
                started.elapsed()
            })
        },
    )
}

/// ns per call of `run` on inputs made by `setup`, made and dropped outside the timing.
fn per_input<I, T>(mut setup: impl FnMut() -> I, mut run: impl FnMut(I) -> T) -> f64 {
    timed_chunks(&mut setup, |inputs, outputs| {
        let started = Instant::now();
        for input in inputs {
            outputs.push(black_box(run(input)));
        }
        started.elapsed()
    })
}

/// ns per item over one batch, run a chunk at a time by `run`, which times itself: the
/// chunk's inputs are made before and its outputs dropped after.
fn timed_chunks<I, O>(
    mut setup: impl FnMut() -> I,
    mut run: impl FnMut(Vec<I>, &mut Vec<O>) -> Duration,
) -> f64 {
    let mut total = Duration::ZERO;
    for _ in 0..BATCH / CHUNK {
        let inputs = std::iter::repeat_with(&mut setup).take(CHUNK).collect();
        let mut outputs = Vec::with_capacity(CHUNK);
        total += run(inputs, &mut outputs);
    }
    total.as_nanos() as f64 / (BATCH / CHUNK * CHUNK) as f64
}

fn report(rounds: &[Round]) {
    println!(
        "{} rounds of {BATCH} requests or calls per contestant, interleaved\n",
        rounds.len()
    );
    println!("| contestant | ns, median of rounds |\n|---|---|");
    for (name, time) in [
        ("bare axum", (|r: &Round| r.bare) as fn(&Round) -> f64),
        ("nouvel-auth", |r| r.ours),
        ("tower_governor", |r| r.governor),
        ("nouvel-auth, 10 000 keys", |r| r.ours_many),
        ("tower_governor, 10 000 keys", |r| r.governor_many),
        ("malformed-key 401", |r| r.malformed),
        ("floor: SHA-256 + lookup + window", |r| r.floor),
        ("key parse with checksum", |r| r.parse),
        ("route match", |r| r.route),
        ("five static headers", |r| r.headers),
        (
            "lower bound: floor + parse + route + headers",
            Round::lower_bound,
        ),
        ("nouvel-auth's overhead", Round::overhead),
        ("tower_governor's overhead", Round::governor_overhead),
        ("nouvel-auth's overhead, 10 000 keys", Round::overhead_many),
        (
            "tower_governor's overhead, 10 000 keys",
            Round::governor_overhead_many,
        ),
    ] {
        println!("| {name} | {:.0} |", quartiles(rounds, time)[1]);
    }
    println!(
        "\n| target | median ratio (95 % interval) | middle half of rounds | goal | met \
         | lower bound's ratio (95 % interval) |"
    );
    println!("|---|---|---|---|---|---|");
    type Ratio = fn(&Round) -> f64;
    for (label, ratio, goal, bound) in [
        (
            "10 000 keys: overhead / tower_governor's",
            (|r: &Round| r.overhead_many() / r.governor_overhead_many()) as Ratio,
            1.5,
            None,
        ),
        (
            "one key: overhead / tower_governor's",
            |r| r.overhead() / r.governor_overhead(),
            2.0,
            Some((|r: &Round| r.lower_bound() / r.governor_overhead()) as Ratio),
        ),
        (
            "hot path overhead / floor",
            |r| r.overhead() / r.floor,
            2.0,
            Some(|r| r.lower_bound() / r.floor),
        ),
        (
            "malformed-key 401 / hot path",
            |r| r.malformed / r.ours,
            0.25,
            None,
        ),
    ] {
        let [low, median, high] = quartiles(rounds, ratio);
        let [median_low, median_high] = median_interval(rounds, ratio);
        // A verdict only where the whole interval is on one side of the goal.
        let met = if median_high <= goal {
            "yes"
        } else if median_low > goal {
            "no"
        } else {
            "not shown"
        };
        let bound = bound.map_or(String::new(), |bound| {
            let [bound_low, bound_high] = median_interval(rounds, bound);
            let reach = if bound_low > goal {
                ": out of reach"
            } else {
                ""
            };
            let bound = quartiles(rounds, bound)[1];
            format!("{bound:.2} ({bound_low:.2} to {bound_high:.2}){reach}")
        });
        println!(
            "| {label} | {median:.3} ({median_low:.3} to {median_high:.3}) | {low:.3} to {high:.3} \
             | ≤ {goal} | {met} | {bound} |"
        );
    }
}

/// The first quartile, median and third quartile of `value` over the rounds.
fn quartiles(rounds: &[Round], value: impl Fn(&Round) -> f64) -> [f64; 3] {
    let values = sorted(rounds, value);
    [1, 2, 3].map(|quarter| values[(values.len() - 1) * quarter / 4])
}

/// An interval holding the median of `value` with at least 95 % confidence, whatever its
/// distribution: the k-th smallest and k-th largest round, for the largest k with
/// P(Binomial(rounds, ½) < k) ≤ 2.5 %.
fn median_interval(rounds: &[Round], value: impl Fn(&Round) -> f64) -> [f64; 2] {
    let values = sorted(rounds, value);
    let n = values.len();
    let (mut k, mut tail, mut p_k) = (0, 0.0, 0.5_f64.powi(n as i32));
    while tail + p_k <= 0.025 {
        tail += p_k;
        k += 1;
        p_k *= (n - k + 1) as f64 / k as f64;
    }
    let k = k.max(1);
    [values[k - 1], values[n - k]]
}

fn sorted(rounds: &[Round], value: impl Fn(&Round) -> f64) -> Vec<f64> {
    let mut values: Vec<f64> = rounds.iter().map(value).collect();
    values.sort_by(f64::total_cmp);
    values
}
