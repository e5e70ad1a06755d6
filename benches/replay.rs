//! Replay of about 1M generated events, side by side with its floor: only
//! parsing the same lines into typed events and writing one small JSON line
//! per line. The target: replay at most 2x the floor, and at least
//! 500k events/s. `PORTCULLIS_BENCH_EVENTS` changes the trace length.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use portcullis::contract::{AtRule, parse_line};
use portcullis::engine::Engine;
use portcullis::rules::CompiledRules;
use portcullis::traffic::{Config, write};
use std::hint::black_box;
use std::io::Write;
use std::sync::Arc;

fn trace() -> (Vec<u8>, u64) {
    let n = std::env::var("PORTCULLIS_BENCH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000u64);
    let cfg = Config {
        subscribers: 100_000,
        ..Config::default()
    };
    let mut out = Vec::new();
    write(&cfg, n, &mut out).expect("writing to memory");
    (out, n)
}

/// The floor: parse each line into a typed event, write one small line.
fn floor(input: &[u8], out: &mut Vec<u8>) -> u64 {
    let mut n = 0;
    // Lines are found as replay finds them (memchr).
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
        match parse_line(text, AtRule::Required) {
            Ok(ev) => {
                out.extend_from_slice(b"{\"id\":");
                portcullis::replay::json_str(out, ev.id.as_deref().unwrap_or(""));
                out.extend_from_slice(b",\"kind\":\"");
                out.extend_from_slice(ev.kind.as_str().as_bytes());
                out.extend_from_slice(b"\"}\n");
                n += 1;
            }
            Err(e) => {
                let _ = writeln!(out, "{{\"error\":\"{}\"}}", e.code.as_str());
            }
        }
    }
    n
}

fn replay(input: &[u8], out: &mut Vec<u8>, rules: &Arc<CompiledRules>) -> u64 {
    let mut engine = Engine::new(rules.clone());
    let summary = portcullis::replay::run(&mut engine, input, out).expect("in-memory replay");
    summary.events
}

fn bench(c: &mut Criterion) {
    let (input, n) = trace();
    let rules = Arc::new(CompiledRules::default_rules());
    let mut g = c.benchmark_group("replay_1m");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n));
    let mut out = Vec::with_capacity(input.len());
    g.bench_function("floor_parse_and_write", |b| {
        b.iter(|| {
            out.clear();
            black_box(floor(&input, &mut out))
        })
    });
    g.bench_function("replay_default_rules", |b| {
        b.iter(|| {
            out.clear();
            black_box(replay(&input, &mut out, &rules))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

/// The same allocator as the `portcullis` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
