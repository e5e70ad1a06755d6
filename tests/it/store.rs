//! The durable store (issue 5): backends' round trips, reopening, group
//! commit under 64 concurrent submitters, the failure latch, and a crash
//! test that SIGKILLs a real writer process and checks what it acknowledged.

use crate::support::scratch_dir;
use portcullis::store::fault::FailingCommits;
use portcullis::store::{
    Batch, GroupCommit, MemoryStore, RedbStore, Refused, Store, StoreError, Table, Unavailable,
    WriterLimits,
};
use portcullis::traffic::Rng;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn round_trip(store: &dyn Store) {
    let mut b = Batch::new();
    for table in Table::ALL {
        b.put(table, [1u8; 32], table.name());
        b.put(table, [2u8; 32], b"gone".to_vec());
    }
    store.commit(&[b]).expect("commit");
    let mut b = Batch::new();
    for table in Table::ALL {
        b.put(table, [1u8; 32], format!("{table} again"));
        b.delete(table, [2u8; 32]);
    }
    store.commit(&[b]).expect("commit");
    for table in Table::ALL {
        let got = store
            .get_many(&[
                (table, &[1u8; 32]),
                (table, &[2u8; 32]),
                (table, &[3u8; 32]),
            ])
            .expect("get_many");
        assert_eq!(
            got,
            vec![Some(format!("{table} again").into_bytes()), None, None]
        );
        assert_eq!(
            store.get(table, &[1u8; 32]).expect("get"),
            Some(format!("{table} again").into_bytes())
        );
    }
}

#[test]
fn memory_round_trip() {
    round_trip(&MemoryStore::new());
}

#[test]
fn redb_round_trip_and_reopen() {
    let path = scratch_dir("store", "reopen").join("store.redb");
    round_trip(&RedbStore::open(&path).expect("open"));
    // Reopened (the first handle dropped), everything is still there.
    let store = RedbStore::open(&path).expect("reopen");
    for table in Table::ALL {
        assert_eq!(
            store.get(table, &[1u8; 32]).expect("get"),
            Some(format!("{table} again").into_bytes())
        );
        assert_eq!(store.get(table, &[2u8; 32]).expect("get"), None);
    }
}

#[test]
fn a_second_open_of_one_file_is_refused() {
    let path = scratch_dir("store", "twice").join("store.redb");
    let _first = RedbStore::open(&path).expect("open");
    let e = RedbStore::open(&path).expect_err("the file is locked");
    assert!(matches!(e, StoreError::Open { .. }), "{e:?}");
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
}

fn batch(n: u64) -> Batch {
    let mut b = Batch::new();
    b.put(Table::Records, n.to_be_bytes(), vec![7u8; 48]);
    b.put(Table::Entities, [n as u8; 32], vec![9u8; 200]);
    b
}

const SUBMITTERS: u64 = 64;
const EACH: u64 = 10;

/// 64 threads submit under one lock (as the decider does), each waiting on
/// its tickets. Returns each ticket's outcome, by submission number, and
/// the writer.
fn hammer(store: Arc<dyn Store>) -> (Vec<Result<(), Unavailable>>, GroupCommit) {
    let w = Arc::new(GroupCommit::start(store, WriterLimits::default()));
    let order = Arc::new(Mutex::new(0u64));
    let results = Arc::new(Mutex::new(vec![
        Err(Unavailable);
        (SUBMITTERS * EACH) as usize
    ]));
    let threads: Vec<_> = (0..SUBMITTERS)
        .map(|_| {
            let (w, order, results) = (w.clone(), order.clone(), results.clone());
            std::thread::spawn(move || {
                for _ in 0..EACH {
                    let (n, ticket) = {
                        let mut next = order.lock().expect("order");
                        let n = *next;
                        *next += 1;
                        (n, w.submit(batch(n)))
                    };
                    let outcome = match ticket {
                        Ok(t) => {
                            let r = t.wait();
                            if r.is_ok() {
                                // Every batch submitted before this one is
                                // committed too.
                                assert!(w.batches() > n, "ticket {n} before its predecessors");
                            }
                            r
                        }
                        Err(Refused::Unavailable) => Err(Unavailable),
                        Err(Refused::Overloaded) => panic!("the queue holds 64 batches at most"),
                    };
                    results.lock().expect("results")[n as usize] = outcome;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a submitter");
    }
    let results = std::mem::take(&mut *results.lock().expect("results"));
    let w = Arc::into_inner(w).expect("the submitters are done");
    (results, w)
}

#[test]
fn group_commit_shares_transactions() {
    let store = Arc::new(FailingCommits::new(Duration::from_millis(2), usize::MAX));
    let (results, w) = hammer(store.clone());
    assert!(results.iter().all(Result::is_ok));
    let batches = SUBMITTERS * EACH;
    assert_eq!(w.batches(), batches);
    assert!(
        w.transactions() * 4 <= batches,
        "{} transactions for {batches} batches",
        w.transactions()
    );
    for n in 0..batches {
        assert!(
            store
                .get(Table::Records, &n.to_be_bytes())
                .expect("get")
                .is_some()
        );
    }
}

#[test]
fn group_commit_on_redb() {
    let path = scratch_dir("store", "group-redb").join("store.redb");
    let (results, w) = hammer(Arc::new(RedbStore::open(&path).expect("open")));
    assert!(results.iter().all(Result::is_ok));
    let batches = SUBMITTERS * EACH;
    assert!(
        w.transactions() * 2 <= batches,
        "{} transactions for {batches} batches",
        w.transactions()
    );
    drop(w);
    let store = RedbStore::open(&path).expect("reopen");
    for n in 0..batches {
        assert!(
            store
                .get(Table::Records, &n.to_be_bytes())
                .expect("get")
                .is_some()
        );
    }
}

#[test]
fn a_failed_commit_latches_for_good() {
    let store = Arc::new(FailingCommits::new(Duration::from_millis(1), 3));
    let (results, w) = hammer(store);
    let first_err = results
        .iter()
        .position(Result::is_err)
        .expect("the third commit fails");
    assert!(first_err > 0, "two commits succeed first");
    assert!(
        results[first_err..].iter().all(Result::is_err),
        "an Ok after the failure"
    );
    assert!(w.is_failed());
    assert_eq!(w.submit(batch(0)).err(), Some(Refused::Unavailable));
    assert_eq!(w.transactions(), 2);
}

#[tokio::test]
async fn tickets_are_awaited() {
    let w = GroupCommit::start(Arc::new(MemoryStore::new()), WriterLimits::default());
    let a = w.submit(batch(1)).expect("queued");
    let b = w.submit(batch(2)).expect("queued");
    assert_eq!(b.await, Ok(()));
    assert_eq!(a.await, Ok(()));
}

/// The crash test's child: set by the parent to the store's path.
const CHILD_PATH: &str = "PORTCULLIS_STORE_CRASH_PATH";
/// The crash test's child: which run this is (keys carry it).
const CHILD_RUN: &str = "PORTCULLIS_STORE_CRASH_RUN";
const CHILD_THREADS: u32 = 16;

/// One batch of the crash test: two keys, both or neither.
fn crash_keys(run: u32, thread: u32, seq: u32) -> [Vec<u8>; 2] {
    [b'a', b'b'].map(|half| {
        let mut k = Vec::with_capacity(13);
        k.extend_from_slice(&run.to_be_bytes());
        k.extend_from_slice(&thread.to_be_bytes());
        k.extend_from_slice(&seq.to_be_bytes());
        k.push(half);
        k
    })
}

/// Not a test on its own: the writer process `crash_kill_and_reopen` runs
/// and kills. Threads submit batches with increasing keys and print each
/// one once its ticket resolves.
#[test]
fn crash_child() {
    let (Ok(path), Ok(run)) = (std::env::var(CHILD_PATH), std::env::var(CHILD_RUN)) else {
        return;
    };
    let run: u32 = run.parse().expect("a run number");
    let store = Arc::new(RedbStore::open(Path::new(&path)).expect("open"));
    let w = Arc::new(GroupCommit::start(store, WriterLimits::default()));
    let threads: Vec<_> = (0..CHILD_THREADS)
        .map(|thread| {
            let w = w.clone();
            std::thread::spawn(move || {
                for seq in 0.. {
                    let mut b = Batch::new();
                    for key in crash_keys(run, thread, seq) {
                        b.put(Table::Records, key, vec![thread as u8; 512]);
                    }
                    w.submit(b).expect("queued").wait().expect("durable");
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {run} {thread} {seq}").expect("stdout");
                    out.flush().expect("stdout");
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

#[test]
fn crash_kill_and_reopen() {
    const RUNS: u32 = 5;
    let path = scratch_dir("store", "crash").join("store.redb");
    let mut rng = Rng::new(0x5eed_0005);
    // Per run and thread, the highest acknowledged sequence number.
    let mut acked: Vec<Vec<Option<u32>>> = Vec::new();
    for run in 0..RUNS {
        let want = 1 + rng.below(100);
        let mut child = Command::new(std::env::current_exe().expect("the test binary"))
            .args(["store::crash_child", "--exact", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(CHILD_PATH, &path)
            .env(CHILD_RUN, run.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning the child");
        let stdout = child.stdout.take().expect("piped");
        let mut highest = vec![None; CHILD_THREADS as usize];
        let mut seen = 0;
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("the child's stdout");
            let Some(rest) = line.strip_prefix("ack ") else {
                continue;
            };
            let nums: Vec<u32> = rest
                .split(' ')
                .map(|n| n.parse().expect("a number"))
                .collect();
            assert_eq!(nums[0], run);
            let h: &mut Option<u32> = &mut highest[nums[1] as usize];
            *h = Some(h.map_or(nums[2], |h| h.max(nums[2])));
            seen += 1;
            if seen == want {
                break;
            }
        }
        assert_eq!(seen, want, "the child stopped early");
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        acked.push(highest);
        check_after_crash(&path, &acked);
    }
}

/// Every acknowledged batch of every run so far is there; each batch is
/// whole; a thread's batches are a prefix of what it submitted (it waits for
/// each before the next, so nothing past its first missing batch exists).
fn check_after_crash(path: &Path, acked: &[Vec<Option<u32>>]) {
    let store = RedbStore::open(path).expect("reopen after SIGKILL");
    for (run, highest) in acked.iter().enumerate() {
        for (thread, acked_max) in highest.iter().enumerate() {
            let present = |seq: u32| {
                let [a, b] = crash_keys(run as u32, thread as u32, seq);
                let got = store
                    .get_many(&[(Table::Records, &a), (Table::Records, &b)])
                    .expect("get_many");
                assert_eq!(
                    got[0].is_some(),
                    got[1].is_some(),
                    "run {run} thread {thread} batch {seq} is half written"
                );
                got[0].is_some()
            };
            let first_missing = (0..).find(|s| !present(*s)).expect("finite");
            if let Some(max) = acked_max {
                assert!(
                    first_missing > *max,
                    "run {run} thread {thread}: acknowledged {max} but {first_missing} is missing"
                );
            }
            for seq in first_missing..first_missing + 4 {
                assert!(
                    !present(seq),
                    "run {run} thread {thread}: a gap at {first_missing}"
                );
            }
        }
    }
}
