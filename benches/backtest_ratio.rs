//! A backtest of two rulesets beside a replay of the same events,
//! interleaved: the target is a backtest at most 1.3x one replay (history
//! is shared, only the rules run twice). The new ruleset is the default one
//! with every threshold and window of a rule changed, so that it decides
//! differently and its changed requests are written out. Prints each pair,
//! the median ratio and the backtest's rate.
//! Run: `cargo bench --bench backtest_ratio` (PORTCULLIS_BENCH_EVENTS, default 1M).
// A benchmark or test times what it measures: it reads the clock itself.
#![allow(clippy::disallowed_methods)]

mod support;

use portcullis::backtest::{self, Labels};
use portcullis::engine::Engine;
use portcullis::rules::{CompiledRules, DEFAULT_RULES, Limits, Paired};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;
use support::{median, trace};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PAIRS: usize = 9;

fn main() {
    if !support::measuring() {
        return;
    }
    let (input, _) = trace();
    let new_rules = DEFAULT_RULES
        .replace(">= 3", ">= 2")
        .replace("within 7d", "within 14d");
    assert_ne!(new_rules, DEFAULT_RULES);
    let rules = Arc::new(CompiledRules::default_rules());
    let paired = Paired::compile(
        ("default.rules", DEFAULT_RULES),
        ("new.rules", &new_rules),
        &Limits::default(),
    )
    .expect("the rulesets compile");
    let labels = Labels::new();
    let mut out = Vec::with_capacity(input.len());
    let (mut ratios, mut rates) = (Vec::new(), Vec::new());
    for pair in 0..PAIRS {
        out.clear();
        let t = Instant::now();
        let mut engine = Engine::new(rules.clone());
        portcullis::replay::reserve_for_input(&mut engine, input.len() as u64);
        let s = portcullis::replay::run(&mut engine, &input[..], &mut out).expect("replay");
        drop(engine);
        let r = t.elapsed().as_secs_f64();
        out.clear();
        let t = Instant::now();
        let mut engine = Engine::new(Arc::new(paired.joint.clone()));
        portcullis::replay::reserve_for_input(&mut engine, input.len() as u64);
        let bt = backtest::run(paired.clone(), &mut engine, &input[..], &labels, &mut out)
            .expect("backtest");
        black_box(backtest::report(&bt, 0.05, None));
        black_box(backtest::html::render(&bt, 0.05));
        drop(engine);
        let b = t.elapsed().as_secs_f64();
        println!(
            "pair {pair}: replay {r:.3}s backtest {b:.3}s ratio {:.2} ({} changed, {:.0} events/s)",
            b / r,
            bt.changed,
            bt.events as f64 / b
        );
        assert_eq!(bt.events, s.events);
        ratios.push(b / r);
        rates.push(bt.events as f64 / b);
    }
    println!(
        "median ratio {:.2} (target <= 1.3), median backtest {:.0} events/s",
        median(&mut ratios),
        median(&mut rates)
    );
}
