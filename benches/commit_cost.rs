//! What one commit of the durable store costs on this machine, and the
//! throughput that cost allows with 64 requests in flight, whatever the
//! rest of the service does.
//!
//! A `RedbStore` (its real settings: immediate durability, two-phase
//! commit, quick repair) is filled with 200k entity states of 133 bytes
//! under random 32-byte keys (the size `durable`'s traffic writes), then
//! commits of 1, 8, 22 and 64 random-key puts are timed, 300 each, twice.
//! A line through the medians gives the fixed cost of a commit, `a`, and
//! the cost of each random-key put, `b`.
//!
//! The bound: with `N` requests in flight and the writer never idle (it
//! is not, from about 1,400 requests a second on), a request waits on
//! average half a commit for the one under way, then its own commit. A
//! commit carrying `n` batches takes `a + n k b` (`k` random-key puts a
//! request), and with throughput `X` it carries `X C`: `C = a / (1 - X k
//! b)`. With nothing else taking any time, `X = N / (1.5 C)`, so
//! `X <= N / (1.5 a + N k b)`.
//! Run: `cargo bench --bench commit_cost`.
// A benchmark or test times what it measures: it reads the clock itself.
#![allow(clippy::disallowed_methods)]

use portcullis::store::{Batch, RedbStore, Store, Table};
use std::time::Instant;

/// Entity states the store holds before timing.
const PREFILL: u64 = 200_000;
/// The size of an entity state in `durable`'s traffic, in bytes.
const VALUE_BYTES: usize = 133;
/// Random-key puts a request makes in `durable`'s traffic (measured: about
/// one entity state a request, and a decision record for one in four).
const PUTS_PER_REQUEST: f64 = 1.2;
const IN_FLIGHT: f64 = 64.0;
const SIZES: [usize; 4] = [1, 8, 22, 64];
const COMMITS: usize = 300;

fn key(n: u64) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, &n.to_be_bytes())
        .as_ref()
        .to_vec()
}

/// A xorshift step: the keys need only be spread, not secret.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn main() {
    let dir = std::env::temp_dir().join(format!("portcullis-commit-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let store = RedbStore::open(&dir.join("store.redb")).expect("a store");
    let value = vec![7u8; VALUE_BYTES];
    for chunk in 0..PREFILL / 10_000 {
        let mut b = Batch::new();
        for n in chunk * 10_000..(chunk + 1) * 10_000 {
            b.put(Table::Entities, key(n), value.clone());
        }
        store.commit(&[b]).expect("prefill");
    }
    let mut state = 0x9e37_79b9_7f4a_7c15;
    let mut medians: Vec<(f64, f64)> = Vec::new();
    for round in 0..2 {
        for puts in SIZES {
            let mut ms = Vec::with_capacity(COMMITS);
            for _ in 0..COMMITS {
                let mut b = Batch::new();
                for _ in 0..puts {
                    // Half overwrite a state, half add one.
                    b.put(
                        Table::Entities,
                        key(next(&mut state) % (2 * PREFILL)),
                        value.clone(),
                    );
                }
                let start = Instant::now();
                store.commit(&[b]).expect("a commit");
                ms.push(start.elapsed().as_secs_f64() * 1e3);
            }
            ms.sort_by(f64::total_cmp);
            let (p50, p99) = (ms[COMMITS / 2], ms[COMMITS * 99 / 100]);
            println!(
                "round {round}: {puts:>2} random-key puts: median {p50:.3} ms, p99 {p99:.3} ms"
            );
            medians.push((puts as f64, p50));
        }
    }
    let (a, b) = fit(&medians);
    let bound = IN_FLIGHT / (1.5 * a + IN_FLIGHT * PUTS_PER_REQUEST * b);
    println!(
        "fixed cost a {:.3} ms a commit, b {:.1} us a random-key put",
        a,
        b * 1e3
    );
    println!(
        "bound with {IN_FLIGHT} in flight, {PUTS_PER_REQUEST} puts a request: {:.0} requests/s",
        bound * 1e3
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The least-squares line `y = a + b x` through `points`.
fn fit(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + y));
    let (mx, my) = (sx / n, sy / n);
    let (sxy, sxx) = points.iter().fold((0.0, 0.0), |(sxy, sxx), (x, y)| {
        (sxy + (x - mx) * (y - my), sxx + (x - mx) * (x - mx))
    });
    let b = sxy / sxx;
    (my - b * mx, b)
}
