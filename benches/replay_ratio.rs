//! Replay against its floor, interleaved: on a shared machine whose speed
//! drifts by tens of percent between runs, timing the floor and the replay
//! alternately and taking the median of the per-pair ratios is what makes
//! the "at most 2x the floor" comparable from run to run. Prints each
//! pair, the median ratio and the median replay rate.
//! Run: `cargo bench --bench replay_ratio` (PORTCULLIS_BENCH_EVENTS, default 1M).

use portcullis::contract::{AtRule, parse_line};
use portcullis::engine::Engine;
use portcullis::rules::CompiledRules;
use portcullis::traffic::{Config, write};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PAIRS: usize = 9;

/// The floor, as in `benches/replay.rs`: parse each line, write one small line.
fn floor(input: &[u8], out: &mut Vec<u8>) -> u64 {
    let mut n = 0;
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', input).chain(std::iter::once(input.len())) {
        let line = &input[start..end];
        start = end + 1;
        if line.is_empty() {
            continue;
        }
        let Ok(text) = std::str::from_utf8(line) else {
            continue;
        };
        if let Ok(ev) = parse_line(text, AtRule::Required) {
            out.extend_from_slice(b"{\"id\":");
            portcullis::replay::json_str(out, ev.id.as_deref().unwrap_or(""));
            out.extend_from_slice(b",\"kind\":\"");
            out.extend_from_slice(ev.kind.as_str().as_bytes());
            out.extend_from_slice(b"\"}\n");
            n += 1;
        }
    }
    n
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n: u64 = std::env::var("PORTCULLIS_BENCH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let cfg = Config {
        subscribers: 100_000,
        ..Config::default()
    };
    let mut input = Vec::new();
    write(&cfg, n, &mut input).expect("writing to memory");
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
