//! Replay of about 1M generated events, side by side with its floor: only
//! parsing the same lines into typed events and writing one small JSON line
//! per line. The target: replay at most 2x the floor, and at least
//! 500k events/s. `PORTCULLIS_BENCH_EVENTS` changes the trace length.

mod support;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use portcullis::engine::Engine;
use portcullis::rules::CompiledRules;
use std::hint::black_box;
use std::sync::Arc;
use support::{floor, trace};

fn replay(input: &[u8], out: &mut Vec<u8>, rules: &Arc<CompiledRules>) -> u64 {
    let mut engine = Engine::new(rules.clone());
    // As `portcullis replay FILE` does.
    portcullis::replay::reserve_for_input(&mut engine, input.len() as u64);
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
