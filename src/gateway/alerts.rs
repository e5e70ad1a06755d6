//! Alerts the service raised, kept for the operator surface.
//!
//! Each alert goes three ways: into the answer of the signal that raised it
//! (the service writes that), to the log, and here. This list keeps the
//! latest `alerts_kept_max` in memory; the oldest go first, and the total
//! pushed is counted so a reader can tell some were dropped. With a store,
//! each alert is also kept there (sealed, with the batch of the signal that
//! raised it; the oldest past `alerts_kept_max` deleted) and the list is
//! filled from it at start.

use crate::engine::Alert;
use std::collections::VecDeque;
use std::sync::Mutex;

#[derive(Debug)]
pub struct AlertStore {
    inner: Mutex<Kept>,
    kept_max: usize,
}

#[derive(Debug, Default)]
struct Kept {
    alerts: VecDeque<Alert>,
    raised: u64,
}

impl AlertStore {
    pub fn new(kept_max: usize) -> AlertStore {
        AlertStore {
            inner: Mutex::new(Kept::default()),
            kept_max: kept_max.max(1),
        }
    }

    pub fn push(&self, alert: Alert) {
        // A poisoned lock still holds whole alerts: a push never panics midway.
        let mut k = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if k.alerts.len() == self.kept_max {
            k.alerts.pop_front();
        }
        k.alerts.push_back(alert);
        k.raised += 1;
        debug_assert!(k.alerts.len() <= self.kept_max);
    }

    /// The alerts kept, oldest first.
    pub fn list(&self) -> Vec<Alert> {
        let k = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        k.alerts.iter().cloned().collect()
    }

    /// How many alerts were pushed since the service started (those
    /// restored from the store at start included).
    pub fn raised(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).raised
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Timestamp;

    #[test]
    fn keeps_the_latest_and_counts_all() {
        let store = AlertStore::new(2);
        for s in 1..=3 {
            store.push(Alert {
                msisdn: "+447700900001".parse().expect("a valid msisdn"),
                at: Timestamp::from_unix(s, 0).expect("in range"),
            });
        }
        let kept = store.list();
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].at.unix_secs(), 2);
        assert_eq!(store.raised(), 3);
    }
}
