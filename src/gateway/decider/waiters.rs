//! The `await`s waiting on holds (at most `awaits_max`): found by the
//! hold's scoped id when a verification resolves it, and by deadline when
//! their timeouts pass. Bounded: an await answered by a verification leaves
//! its deadline in the heap, and the heap is swept before such entries
//! outnumber the live ones.

use crate::gateway::reply::Reply;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;
use tokio::sync::oneshot;

/// Where an await's answer goes.
pub type Waiter = oneshot::Sender<Reply>;

/// The `await`s waiting on holds, by the hold's scoped id, with a heap of
/// their deadlines. An entry of the heap whose await was already answered
/// is skipped when it comes up.
#[derive(Default)]
pub struct Waiters {
    by_ref: HashMap<Box<str>, Vec<(u64, Waiter)>>,
    deadlines: BinaryHeap<Reverse<(Instant, u64, Box<str>)>>,
    waiting: usize,
    next_seq: u64,
}

impl Waiters {
    pub fn len(&self) -> usize {
        self.waiting
    }

    pub fn add(&mut self, scoped: Box<str>, deadline: Instant, reply: Waiter) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_ref
            .entry(scoped.clone())
            .or_default()
            .push((seq, reply));
        self.deadlines.push(Reverse((deadline, seq, scoped)));
        self.waiting += 1;
        // Awaits a verification answered leave their deadlines behind; drop
        // them before they outnumber the live ones, so the heap stays
        // bounded by `awaits_max` too.
        if self.deadlines.len() > 2 * self.waiting + 1024 {
            let by_ref = &self.by_ref;
            self.deadlines.retain(|Reverse((_, seq, s))| {
                by_ref
                    .get(s)
                    .is_some_and(|l| l.iter().any(|(q, _)| q == seq))
            });
        }
    }

    pub fn take(&mut self, scoped: &str) -> Vec<Waiter> {
        let taken: Vec<_> = self
            .by_ref
            .remove(scoped)
            .unwrap_or_default()
            .into_iter()
            .map(|(_, reply)| reply)
            .collect();
        self.waiting -= taken.len();
        taken
    }

    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((at, _, _))| *at)
    }

    pub fn pop_expired(&mut self, now: Instant) -> Option<(Box<str>, Waiter)> {
        while let Some(Reverse((at, _, _))) = self.deadlines.peek() {
            if *at > now {
                return None;
            }
            // Invariant: peek just returned an entry.
            let Reverse((_, seq, scoped)) = self.deadlines.pop().expect("peeked");
            let Some(list) = self.by_ref.get_mut(&scoped) else {
                continue; // answered by a verification
            };
            let Some(pos) = list.iter().position(|(s, _)| *s == seq) else {
                continue;
            };
            let (_, reply) = list.swap_remove(pos);
            if list.is_empty() {
                self.by_ref.remove(&scoped);
            }
            self.waiting -= 1;
            return Some((scoped, reply));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn waiter() -> (Waiter, oneshot::Receiver<Reply>) {
        oneshot::channel()
    }

    /// Taken by their hold, in any number; expired by deadline, earliest
    /// first; each answered once.
    #[test]
    fn awaits_are_taken_by_hold_or_expire_by_deadline() {
        let t0 = crate::gateway::clock::monotonic();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut w = Waiters::default();
        let (a1, _r1) = waiter();
        let (a2, _r2) = waiter();
        let (b1, _r3) = waiter();
        w.add("c:a".into(), at(300), a1);
        w.add("c:a".into(), at(100), a2);
        w.add("c:b".into(), at(200), b1);
        assert_eq!(w.len(), 3);
        assert_eq!(w.next_deadline(), Some(at(100)));
        assert!(w.pop_expired(at(50)).is_none());
        let (first, _) = w.pop_expired(at(150)).expect("the earliest");
        assert_eq!(&*first, "c:a");
        assert_eq!(w.take("c:a").len(), 1, "the other await on c:a");
        assert_eq!(w.len(), 1);
        // c:a's later deadline is stale now: skipped, not answered twice.
        let (second, _) = w.pop_expired(at(1000)).expect("c:b");
        assert_eq!(&*second, "c:b");
        assert!(w.pop_expired(at(1000)).is_none());
        assert_eq!(w.len(), 0);
        assert!(w.take("c:b").is_empty());
    }

    /// Awaits answered by their hold leave deadlines behind, but the heap
    /// stays within a bound of the live awaits.
    #[test]
    fn the_deadline_heap_stays_bounded() {
        let t0 = crate::gateway::clock::monotonic();
        let mut w = Waiters::default();
        let mut receivers = Vec::new();
        for i in 0..20_000u64 {
            let (tx, rx) = waiter();
            receivers.push(rx);
            w.add(format!("c:{i}").into(), t0 + Duration::from_secs(60), tx);
            // Right after an add, at most twice the live awaits and 1024.
            assert!(
                w.deadlines.len() <= 2 * w.len() + 1024,
                "{}",
                w.deadlines.len()
            );
            assert_eq!(w.take(&format!("c:{i}")).len(), 1);
        }
        assert_eq!(w.len(), 0);
    }
}
