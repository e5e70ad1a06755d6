//! Admission: streams accepted and not yet done are the service's queue
//! (a stream is spawned as a task the moment QUIC hands it over, so under
//! load this counts the work the runtime has not reached yet). Past
//! `queue_requests_max` of them a new stream is answered `overloaded` at
//! once, unread: nothing was applied, and the client retries.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A stream counted toward `queue_requests_max` until dropped.
pub struct Admitted(Arc<AtomicUsize>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The count of streams in progress and its bound.
pub struct Admission {
    in_progress: Arc<AtomicUsize>,
    queue_requests_max: usize,
}

impl Admission {
    pub fn new(queue_requests_max: usize) -> Admission {
        Admission {
            in_progress: Arc::new(AtomicUsize::new(0)),
            queue_requests_max,
        }
    }

    /// Admits a new stream, or `None` when `queue_requests_max` are in
    /// progress.
    pub fn admit(&self) -> Option<Admitted> {
        let max = self.queue_requests_max;
        self.in_progress
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Admitted(self.in_progress.clone()))
    }

    /// Streams admitted and not yet done.
    pub fn in_progress(&self) -> usize {
        self.in_progress.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Up to the bound and no further; a stream that is done frees its
    /// place, and only its own.
    #[test]
    fn admits_up_to_the_bound_and_frees_on_drop() {
        let a = Admission::new(2);
        let first = a.admit().expect("room");
        let second = a.admit().expect("room");
        assert!(a.admit().is_none());
        assert_eq!(a.in_progress(), 2);
        drop(first);
        assert_eq!(a.in_progress(), 1);
        let third = a.admit().expect("room again");
        assert!(a.admit().is_none());
        drop((second, third));
        assert_eq!(a.in_progress(), 0);
    }

    /// Many threads admitting at once never pass the bound.
    #[test]
    fn concurrent_admissions_never_pass_the_bound() {
        let a = Arc::new(Admission::new(8));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let a = a.clone();
                std::thread::spawn(move || {
                    let mut most = 0;
                    for _ in 0..10_000 {
                        let held: Vec<_> = (0..3).filter_map(|_| a.admit()).collect();
                        most = most.max(a.in_progress());
                        drop(held);
                    }
                    most
                })
            })
            .collect();
        for h in handles {
            assert!(h.join().expect("no panic") <= 8);
        }
        assert_eq!(a.in_progress(), 0);
    }
}
