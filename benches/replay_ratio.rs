//! Replay against its floor, interleaved: on a shared machine whose speed
//! drifts by tens of percent between runs, timing the floor and the replay
//! alternately and taking the median of the per-pair ratios is what makes
//! the "at most 2x the floor" comparable from run to run. Prints each
//! pair, the median ratio and the median replay rate.
//! Run: `cargo bench --bench replay_ratio` (PORTCULLIS_BENCH_EVENTS, default 1M).
// A benchmark or test times what it measures: it reads the clock itself.
#![allow(clippy::disallowed_methods)]

mod support;

use portcullis::engine::Engine;
use portcullis::rules::CompiledRules;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;
use support::{floor, median, trace};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PAIRS: usize = 9;

fn main() {
    if !support::measuring() {
        return;
    }
    let (input, _) = trace();
    let rules = Arc::new(CompiledRules::default_rules());
    let mut out = Vec::with_capacity(input.len());
    let (mut ratios, mut rates) = (Vec::new(), Vec::new());
    for pair in 0..PAIRS {
        out.clear();
        let t = Instant::now();
        black_box(floor(&input, &mut out));
        let f = t.elapsed().as_secs_f64();
        out.clear();
        let t = Instant::now();
        let mut engine = Engine::new(rules.clone());
        // As `portcullis replay FILE` does.
        portcullis::replay::reserve_for_input(&mut engine, input.len() as u64);
        let s =
            portcullis::replay::run(&mut engine, &input[..], &mut out).expect("in-memory replay");
        drop(engine);
        let r = t.elapsed().as_secs_f64();
        println!(
            "pair {pair}: floor {f:.3}s replay {r:.3}s ratio {:.2} ({:.0} events/s)",
            r / f,
            s.events as f64 / r
        );
        ratios.push(r / f);
        rates.push(s.events as f64 / r);
    }
    println!(
        "median ratio {:.2} (target <= 2), median replay {:.0} events/s (target >= 500000)",
        median(&mut ratios),
        median(&mut rates)
    );
}
