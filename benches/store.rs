//! Durable against in-memory commits through `GroupCommit`, side by side:
//! 64 submitter threads each submit a decision-sized batch (a 48-byte
//! record and three 256-byte entity states under 32-byte keys) and wait for
//! its ticket before the next, so 64 batches are in flight, as 64
//! concurrent requests keep them. The target: durable at least 0.5x
//! memory.
//!
//! Criterion times both (`store/memory`, `store/redb`); then the two are
//! run alternately for a few pairs and the median ratio of their rates is
//! printed (alternating, so that drift of a shared machine falls on both).
//! Run: `cargo bench --bench store`.
// A benchmark or test times what it measures: it reads the clock itself.
#![allow(clippy::disallowed_methods)]

use criterion::{Criterion, Throughput, criterion_group};
use portcullis::store::{Batch, GroupCommit, MemoryStore, RedbStore, Store, Table, WriterLimits};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const IN_FLIGHT: u64 = 64;
const PAIRS: usize = 5;
/// Batches per side of one pair.
const PAIR_BATCHES: u64 = 64 * 200;

fn batch(n: u64) -> Batch {
    let mut b = Batch::new();
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&n.to_be_bytes());
    b.put(Table::Records, key, vec![1u8; 48]);
    for e in 0..3u8 {
        key[31] = e + 1;
        b.put(Table::Entities, key, vec![e; 256]);
    }
    b
}

/// Commits at least `total` batches (a multiple of 64) from 64 threads;
/// the time taken per batch and the transactions it took.
fn run(w: &Arc<GroupCommit>, total: u64) -> (Duration, u64) {
    let before = w.transactions();
    let each = total.div_ceil(IN_FLIGHT);
    let start = Instant::now();
    let threads: Vec<_> = (0..IN_FLIGHT)
        .map(|t| {
            let w = w.clone();
            std::thread::spawn(move || {
                for i in 0..each {
                    let ticket = w.submit(batch(t * each + i)).expect("queued");
                    ticket.wait().expect("committed");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a submitter");
    }
    let per_batch = start.elapsed().div_f64((each * IN_FLIGHT) as f64);
    (per_batch, w.transactions() - before)
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("portcullis-bench-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

fn writers(dir: &std::path::Path) -> (Arc<GroupCommit>, Arc<GroupCommit>) {
    let memory: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let redb: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.join("store.redb")).expect("open"));
    (
        Arc::new(GroupCommit::start(memory, WriterLimits::default())),
        Arc::new(GroupCommit::start(redb, WriterLimits::default())),
    )
}

fn bench(c: &mut Criterion) {
    let dir = scratch();
    let (memory, redb) = writers(&dir);
    let mut g = c.benchmark_group("store");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    // Each iteration is one batch; 64 threads share the iterations.
    for (name, w) in [("memory", &memory), ("redb", &redb)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| run(w, iters).0.mul_f64(iters as f64))
        });
    }
    g.finish();
    drop((memory, redb));
    let _ = std::fs::remove_dir_all(&dir);
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The side-by-side figure: alternate pairs, median of the ratios.
fn ratio() {
    let dir = scratch();
    let (memory, redb) = writers(&dir);
    let (mut ratios, mut durable, mut mem) = (Vec::new(), Vec::new(), Vec::new());
    for pair in 0..PAIRS {
        let (tm, txm) = run(&memory, PAIR_BATCHES);
        let (tr, txr) = run(&redb, PAIR_BATCHES);
        let (rm, rr) = (1.0 / tm.as_secs_f64(), 1.0 / tr.as_secs_f64());
        println!(
            "pair {pair}: memory {rm:.0} batches/s ({} per transaction), redb {rr:.0} batches/s \
             ({} per transaction), ratio {:.2}",
            PAIR_BATCHES / txm.max(1),
            PAIR_BATCHES / txr.max(1),
            rr / rm
        );
        ratios.push(rr / rm);
        durable.push(rr);
        mem.push(rm);
    }
    println!(
        "median: memory {:.0} batches/s, redb {:.0} batches/s, ratio durable/memory {:.2} \
         (target >= 0.5)",
        median(&mut mem),
        median(&mut durable),
        median(&mut ratios)
    );
    drop((memory, redb));
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);

fn main() {
    // `cargo test --benches` runs this without --bench: check it runs, no
    // measuring.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
    ratio();
}
