//! `portcullis gen`'s speed: the target is at least 1,000,000 events
//! per second. Writes 1M events of the default configuration (10k
//! subscribers, the default attack rate) into memory, several times, and
//! prints each run and the median rate; then the same with labels, as
//! `gen --labels` writes them. In memory, so that what is measured is the
//! generator and its JSON, not a disk. The machine is shared and its speed
//! drifts between runs, hence the median.
//! Run: `cargo bench --bench gen` (PORTCULLIS_BENCH_EVENTS, default 1M).
// A benchmark or test times what it measures: it reads the clock itself.
#![allow(clippy::disallowed_methods)]

mod support;

use portcullis::traffic::{Config, write, write_labeled};
use std::hint::black_box;
use std::time::Instant;
use support::median;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RUNS: usize = 7;
const TARGET: f64 = 1_000_000.0;

fn main() {
    if !support::measuring() {
        return;
    }
    let n = support::bench_events();
    let cfg = Config::default();
    // Room for every run's output, so that no run pays for growing it.
    let mut out = Vec::with_capacity(n as usize * 160);
    let mut labels = Vec::with_capacity(n as usize * 30);
    let (mut plain, mut labeled) = (Vec::new(), Vec::new());
    for run in 0..RUNS {
        out.clear();
        let t = Instant::now();
        write(&cfg, n, &mut out).expect("writing to memory");
        let secs = t.elapsed().as_secs_f64();
        black_box(&out);
        plain.push(n as f64 / secs);

        out.clear();
        labels.clear();
        let t = Instant::now();
        write_labeled(&cfg, n, &mut out, &mut labels).expect("writing to memory");
        let lsecs = t.elapsed().as_secs_f64();
        black_box((&out, &labels));
        labeled.push(n as f64 / lsecs);
        println!(
            "run {run}: {n} events in {secs:.3}s ({:.0} events/s, {:.1} MB); with labels {lsecs:.3}s ({:.0} events/s)",
            n as f64 / secs,
            out.len() as f64 / 1e6,
            n as f64 / lsecs,
        );
    }
    let (m, ml) = (median(&mut plain), median(&mut labeled));
    println!(
        "median gen {m:.0} events/s, with labels {ml:.0} events/s (target >= {TARGET:.0} events/s: {})",
        if m >= TARGET && ml >= TARGET {
            "met"
        } else {
            "NOT met"
        }
    );
}
