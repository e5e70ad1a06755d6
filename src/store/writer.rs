//! [`GroupCommit`]: the one writer in front of a [`Store`].
//!
//! Submitters (the decider, under its lock, so in decision order) queue
//! batches; one writer thread takes everything queued, up to
//! [`WriterLimits`], commits it as one transaction (one fsync for the
//! whole group), then resolves those batches' tickets in submission order.
//! Under load many decisions share one fsync, so durability costs little
//! per request; alone, a batch waits for one commit.
//!
//! A ticket resolves `Ok` only once its batch *and every batch submitted
//! before it* are durable: batches are committed in queue order, and a
//! group is acknowledged only after its commit returned.
//!
//! A failed commit is fatal. After a failed fsync the kernel may have
//! dropped the dirty pages and report the next fsync clean, so nothing
//! written since can be trusted: the failed group's tickets, every queued
//! one and every later submission get [`Unavailable`], never `Ok`, and
//! [`GroupCommit::is_failed`] tells the server to stop answering and exit
//! non-zero. Recovery is a restart, which reopens the store.

use super::{Batch, Store};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use tokio::sync::oneshot;

/// The writer's named limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterLimits {
    /// Bytes of keys and values (`Batch::bytes`) one transaction takes, in
    /// bytes; a single larger batch still goes alone. Default 4 MiB: enough
    /// for thousands of decisions, small enough that one commit's write
    /// stays a few milliseconds.
    pub batch_bytes_max: usize,
    /// Batches one transaction takes. Default 4,096: far above what queues
    /// in one commit's time at the load, so under it the byte limit
    /// or the queue decides.
    pub batches_max: usize,
    /// Batches waiting for the writer, in batches; a submission beyond it is
    /// refused `Overloaded` (nothing queued). Default 65,536: seconds of
    /// full load, so the bound is hit only when the disk has stalled.
    pub queue_batches_max: usize,
}

impl Default for WriterLimits {
    fn default() -> WriterLimits {
        WriterLimits {
            batch_bytes_max: 4 << 20,
            batches_max: 4_096,
            queue_batches_max: 65_536,
        }
    }
}

/// The store failed a commit (or the writer stopped): the batch is not
/// known to be durable, and never will be acknowledged. Retryable against a
/// restarted gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the store is unavailable: a commit failed or the writer stopped")
    }
}

impl std::error::Error for Unavailable {}

/// Why [`GroupCommit::submit`] queued nothing. Either way the batch was not
/// applied, and the request is answered with a retryable refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue holds `queue_batches_max` batches.
    Overloaded,
    /// A commit failed (fatal), or the writer was shut down.
    Unavailable,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Overloaded => f.write_str("the store's write queue is full"),
            Refused::Unavailable => Unavailable.fmt(f),
        }
    }
}

impl std::error::Error for Refused {}

/// Resolves once a submitted batch and every earlier one are durable
/// (`Ok`), or once that can no longer happen (`Err(Unavailable)`). Await it
/// from async code, or [`Ticket::wait`] from a plain thread.
#[derive(Debug)]
pub struct Ticket {
    rx: oneshot::Receiver<Result<(), Unavailable>>,
    seq: u64,
}

impl Ticket {
    /// The batch's number: batches are numbered from 0 in the order they
    /// are queued, and the batch numbered `n` is durable once
    /// [`GroupCommit::batches`] exceeds `n`.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Blocks the thread until the ticket resolves. Not from within an
    /// async runtime (tokio panics there): await the ticket instead.
    pub fn wait(self) -> Result<(), Unavailable> {
        self.rx.blocking_recv().unwrap_or(Err(Unavailable))
    }
}

impl Future for Ticket {
    type Output = Result<(), Unavailable>;

    /// A writer gone without resolving (it panicked) is `Unavailable`.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(Unavailable)))
    }
}

type Pending = (Batch, oneshot::Sender<Result<(), Unavailable>>);

/// What submitters and the writer share, under one lock.
#[derive(Default)]
struct Queue {
    pending: VecDeque<Pending>,
    /// A commit failed: nothing more is queued or committed.
    failed: bool,
    /// `shutdown` was called: nothing more is queued; the writer commits
    /// what is and stops.
    stopping: bool,
    /// The number the next queued batch gets.
    next_seq: u64,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when a batch is queued or the writer is asked to stop.
    wake: Condvar,
    failed: AtomicBool,
    transactions: AtomicU64,
    batches: AtomicU64,
    limits: WriterLimits,
}

impl Shared {
    fn new(limits: WriterLimits) -> Shared {
        Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            failed: AtomicBool::new(false),
            transactions: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            limits,
        }
    }

    /// The queue, even if a panic poisoned its lock: every update to it is
    /// a single push, pop or flag, so it is consistent whenever unlocked.
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Latches the failure and takes every queued ticket, under the lock,
    /// so that no submission slips in after. `is_failed` is true before
    /// any ticket of the failure resolves.
    fn latch(&self) -> Vec<oneshot::Sender<Result<(), Unavailable>>> {
        let mut q = self.lock();
        q.failed = true;
        self.failed.store(true, Ordering::SeqCst);
        q.pending.drain(..).map(|(_, tx)| tx).collect()
    }

    /// Latches the failure and resolves every queued ticket `Unavailable`.
    fn fail(&self) {
        refuse(self.latch());
    }
}

/// Resolves `tickets` `Unavailable`, in order.
fn refuse(tickets: Vec<oneshot::Sender<Result<(), Unavailable>>>) {
    for tx in tickets {
        let _ = tx.send(Err(Unavailable));
    }
}

/// The group-commit writer: one thread committing queued batches in order.
/// Dropping it shuts it down gracefully.
pub struct GroupCommit {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl GroupCommit {
    /// Starts the writer thread over `store`.
    pub fn start(store: Arc<dyn Store>, limits: WriterLimits) -> GroupCommit {
        let shared = Arc::new(Shared::new(limits));
        let writer = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(&writer, store.as_ref()))
            // Invariant: spawning fails only when the OS is out of threads
            // or memory at start, before anything is served.
            .expect("spawning the store writer thread");
        GroupCommit {
            shared,
            thread: Mutex::new(Some(thread)),
        }
    }

    /// Queues `batch` behind every batch submitted before it. The returned
    /// ticket resolves once it is durable. Refused at once, with nothing
    /// queued, when the queue is full (`Overloaded`) or the writer has
    /// failed or stopped (`Unavailable`): a caller that applied the batch's
    /// changes in memory must treat a refusal as it treats a failed commit.
    pub fn submit(&self, batch: Batch) -> Result<Ticket, Refused> {
        self.offer(batch, self.shared.limits.queue_batches_max)
            .map_err(|(refused, _)| refused)
    }

    /// Whether a batch submitted now would be queued: the writer is up and
    /// fewer than `queue_batches_max` batches wait. A caller that checks
    /// this before it changes anything in memory, and is the only one to
    /// submit past [`GroupCommit::upkeep_batches_max`], can then submit
    /// without a refusal for a full queue.
    pub fn has_room(&self) -> bool {
        let q = self.shared.lock();
        !q.failed && !q.stopping && q.pending.len() < self.shared.limits.queue_batches_max
    }

    /// An empty batch, queued past `queue_batches_max`: its ticket resolves
    /// once everything submitted before it is durable. The answer to an
    /// `await` waits on one; those are bounded by `awaits_max`, and a full
    /// queue must never turn an answer already decided into a failure.
    pub fn barrier(&self) -> Result<Ticket, Refused> {
        self.offer(Batch::new(), usize::MAX)
            .map_err(|(refused, _)| refused)
    }

    /// The queue depth past which background upkeep waits: half the queue,
    /// so that upkeep never takes the room a request was promised.
    pub fn upkeep_batches_max(&self) -> usize {
        self.shared.limits.queue_batches_max / 2
    }

    /// [`GroupCommit::submit`], refused `Overloaded` once `queued_max`
    /// batches wait (upkeep passes [`GroupCommit::upkeep_batches_max`]);
    /// a refused batch is given back, to offer again.
    pub fn offer(&self, batch: Batch, queued_max: usize) -> Result<Ticket, (Refused, Batch)> {
        let mut q = self.shared.lock();
        if q.failed || q.stopping {
            return Err((Refused::Unavailable, batch));
        }
        let bound = if batch.is_empty() && queued_max == usize::MAX {
            usize::MAX
        } else {
            queued_max.min(self.shared.limits.queue_batches_max)
        };
        if q.pending.len() >= bound {
            return Err((Refused::Overloaded, batch));
        }
        let (tx, rx) = oneshot::channel();
        q.pending.push_back((batch, tx));
        let seq = q.next_seq;
        q.next_seq += 1;
        drop(q);
        self.shared.wake.notify_one();
        Ok(Ticket { rx, seq })
    }

    /// Latches the writer failed, from outside: a change applied in memory
    /// could not be queued, so nothing after it may be acknowledged.
    pub fn fail(&self) {
        self.shared.fail();
    }

    /// Whether a commit failed: the server stops answering and exits
    /// non-zero.
    pub fn is_failed(&self) -> bool {
        self.shared.failed.load(Ordering::SeqCst)
    }

    /// Transactions committed so far (each one fsync).
    pub fn transactions(&self) -> u64 {
        self.shared.transactions.load(Ordering::SeqCst)
    }

    /// Batches committed so far.
    pub fn batches(&self) -> u64 {
        self.shared.batches.load(Ordering::SeqCst)
    }

    /// Refuses new batches, commits what is queued, and stops the writer
    /// thread. Idempotent; returns once the thread has stopped.
    pub fn shutdown(&self) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_one();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            // The writer panicked: its tickets were dropped (Unavailable);
            // latch so that the server sees it.
            self.shared.fail();
        }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The writer thread: wait for work, take a group, commit, acknowledge;
/// until stopped with nothing queued, or a commit fails.
fn run(shared: &Shared, store: &dyn Store) {
    // A panic in the store (a bug) unwinds through here: latch the failure
    // so that queued and later submissions are refused, not left waiting.
    let _latch = FailOnUnwind(shared);
    while let Some(group) = next_group(shared) {
        let (batches, tickets): (Vec<Batch>, Vec<_>) = group.into_iter().unzip();
        // A group of empty batches (answers that changed nothing, waiting
        // only for what was submitted before them, which earlier groups
        // committed) needs no transaction.
        let needs_transaction = !batches.iter().all(Batch::is_empty);
        let committed = if needs_transaction {
            store.commit(&batches)
        } else {
            Ok(())
        };
        match committed {
            Ok(()) => {
                if needs_transaction {
                    shared.transactions.fetch_add(1, Ordering::SeqCst);
                }
                shared
                    .batches
                    .fetch_add(batches.len() as u64, Ordering::SeqCst);
                for tx in tickets {
                    let _ = tx.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store commit failed: no further answers");
                let later = shared.latch();
                refuse(tickets);
                refuse(later);
                break;
            }
        }
    }
}

/// Fails the writer if dropped while unwinding.
struct FailOnUnwind<'a>(&'a Shared);

impl Drop for FailOnUnwind<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.fail();
        }
    }
}

/// Waits for queued batches and takes a prefix of them within the limits
/// (at least one); `None` once stopping with nothing queued, or failed.
fn next_group(shared: &Shared) -> Option<Vec<Pending>> {
    let mut q = shared.lock();
    while q.pending.is_empty() && !q.stopping && !q.failed {
        q = shared.wake.wait(q).unwrap_or_else(|p| p.into_inner());
    }
    if q.failed || q.pending.is_empty() {
        return None;
    }
    let limits = shared.limits;
    let mut bytes = 0;
    let mut take = 0;
    for (batch, _) in &q.pending {
        if take > 0
            && (take >= limits.batches_max || bytes + batch.bytes() > limits.batch_bytes_max)
        {
            break;
        }
        bytes += batch.bytes();
        take += 1;
    }
    Some(q.pending.drain(..take).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Entries;
    use crate::store::{MemoryStore, StoreError, Table};

    fn batch(n: u64) -> Batch {
        let mut b = Batch::new();
        b.put(Table::Records, n.to_be_bytes(), b"v".to_vec());
        b
    }

    #[test]
    fn commits_and_counts() {
        let store = Arc::new(MemoryStore::new());
        let w = GroupCommit::start(store.clone(), WriterLimits::default());
        let tickets: Vec<_> = (0..100)
            .map(|n| w.submit(batch(n)).expect("queued"))
            .collect();
        for t in tickets {
            assert_eq!(t.wait(), Ok(()));
        }
        assert_eq!(w.batches(), 100);
        assert!(w.transactions() >= 1 && w.transactions() <= 100);
        assert!(
            store
                .get(Table::Records, &99u64.to_be_bytes())
                .expect("get")
                .is_some()
        );
        w.shutdown();
        assert_eq!(w.submit(batch(0)).err(), Some(Refused::Unavailable));
        assert!(!w.is_failed());
    }

    #[test]
    fn a_group_respects_its_limits() {
        let limits = WriterLimits {
            batch_bytes_max: 3 * 9,
            batches_max: 2,
            queue_batches_max: 100,
        };
        let shared = Shared::new(limits);
        let mut rxs = Vec::new();
        for n in 0..5 {
            let (tx, rx) = oneshot::channel();
            rxs.push(rx);
            shared.lock().pending.push_back((batch(n), tx));
        }
        assert_eq!(next_group(&shared).map(|g| g.len()), Some(2));
        shared.lock().pending.front_mut().expect("queued").0 = {
            let mut big = Batch::new();
            big.put(Table::Meta, vec![0u8; 100], Vec::new());
            big
        };
        // A batch over the byte limit goes alone.
        assert_eq!(next_group(&shared).map(|g| g.len()), Some(1));
        assert_eq!(next_group(&shared).map(|g| g.len()), Some(2));
        shared.lock().stopping = true;
        assert!(next_group(&shared).is_none());
    }

    #[test]
    fn a_full_queue_refuses() {
        // A store whose commit blocks until released holds the writer, so
        // the queue fills.
        struct Gate(Mutex<()>);
        impl Store for Gate {
            fn get(&self, _: Table, _: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
                Ok(None)
            }
            fn get_many(&self, k: &[(Table, &[u8])]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
                Ok(vec![None; k.len()])
            }
            fn scan_from(
                &self,
                _: Table,
                _: Option<&[u8]>,
                _: usize,
            ) -> Result<Entries, StoreError> {
                Ok(Vec::new())
            }
            fn commit(&self, _: &[Batch]) -> Result<(), StoreError> {
                drop(self.0.lock());
                Ok(())
            }
        }
        let gate = Arc::new(Gate(Mutex::new(())));
        let held = gate.0.lock().expect("gate");
        let limits = WriterLimits {
            queue_batches_max: 4,
            ..WriterLimits::default()
        };
        let w = GroupCommit::start(gate.clone(), limits);
        let first = w.submit(batch(0)).expect("queued");
        // Wait until the writer has taken the first batch and blocks.
        while w.shared.lock().pending.len() == 1 {
            std::thread::yield_now();
        }
        let queued: Vec<_> = (1..5).map(|n| w.submit(batch(n)).expect("room")).collect();
        assert_eq!(w.submit(batch(5)).err(), Some(Refused::Overloaded));
        drop(held);
        assert_eq!(first.wait(), Ok(()));
        for t in queued {
            assert_eq!(t.wait(), Ok(()));
        }
    }

    #[test]
    fn a_failed_commit_latches() {
        let store = Arc::new(crate::store::fault::FailingCommits::new(
            std::time::Duration::ZERO,
            1,
        ));
        let w = GroupCommit::start(store, WriterLimits::default());
        let t = w.submit(batch(0)).expect("queued");
        assert_eq!(t.wait(), Err(Unavailable));
        assert!(w.is_failed());
        assert_eq!(w.submit(batch(1)).err(), Some(Refused::Unavailable));
    }
}
