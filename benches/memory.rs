//! History for 1M subscribers with typical traffic: the target is at
//! most 512 MiB resident. Generates `PORTCULLIS_MEM_EVENTS` events (default
//! 10M, about ten per subscriber: sightings, swaps, ports, account changes,
//! failed PINs, locks) over 1M subscribers, feeds the engine, and prints the
//! history's own accounting of its bytes and the process's resident set
//! before and after. Idempotency records and pending holds are not history:
//! the engine here keeps only the last 10,000 of each, so that the resident
//! set measures history. Run: `cargo bench --bench memory`.

use portcullis::contract::Timestamp;
use portcullis::engine::{Engine, EngineLimits};
use portcullis::rules::CompiledRules;
use portcullis::traffic::{Config, Generator};
use std::sync::Arc;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing to
    // run: only measure when asked to bench.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let events: usize = std::env::var("PORTCULLIS_MEM_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000_000);
    let cfg = Config {
        subscribers: 1_000_000,
        ..Config::default()
    };
    let before = rss_bytes();
    let limits = EngineLimits {
        decision_records_max: 10_000,
        holds_pending_max: 10_000,
    };
    let mut engine = Engine::with_limits(Arc::new(CompiledRules::default_rules()), limits);
    let mut last = Timestamp::MIN;
    for ev in Generator::new(cfg).take(events) {
        last = ev.at.unwrap_or(last);
        engine.handle(&ev, last);
    }
    engine.prune(last);
    let after = rss_bytes();
    let h = engine.history();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!("events: {events} over 1000000 subscribers");
    println!(
        "entities (line, device, account, agent, store): {:?}",
        h.entity_counts()
    );
    println!("history accounted: {:.1} MiB", mib(h.approx_bytes() as u64));
    println!("holds pending: {}", engine.holds_pending());
    println!(
        "process RSS: {:.1} MiB before, {:.1} MiB after (history, plus at most 10,000 records and holds)",
        mib(before),
        mib(after)
    );
}
