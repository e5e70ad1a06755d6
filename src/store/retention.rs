//! The record-keeping period: decision records older than it are deleted
//! from the store, page by page, in the background.
//!
//! A record is kept for `records_kept_days` after it was last written (its
//! decision, or the verification that resolved its hold): regulators ask
//! carriers to keep SIM change and port-out records for years, so the
//! default is three years. Each expired record is deleted only if it still
//! holds the value the sweep read ([`Batch::delete_if`]), so a record
//! rewritten meanwhile stays. Deciding which records expire reads no clock:
//! the caller passes the cutoff.

use super::{Batch, Store, StoreError, Table};
use crate::engine::stored::record_written_at;

/// Records read per page of a sweep.
pub const SWEEP_PAGE_RECORDS: usize = 10_000;

/// Seconds in a day.
const DAY_SECS: i64 = 86_400;

/// The cutoff for records kept `days` at `now_secs`: records written
/// before it expire.
pub fn cutoff(now_secs: i64, days: u32) -> i64 {
    now_secs.saturating_sub(i64::from(days).saturating_mul(DAY_SECS))
}

/// One page of a sweep: the deletions of the expired records among up to
/// `limit` records after `after`, and where the next page starts (`None`
/// when the table is done).
pub fn sweep_page(
    store: &dyn Store,
    after: Option<&[u8]>,
    limit: usize,
    cutoff_secs: i64,
) -> Result<(Batch, Option<Vec<u8>>), StoreError> {
    let page = store.scan_from(Table::Records, after, limit)?;
    let next = super::next_page(&page, limit);
    let mut batch = Batch::new();
    for (key, value) in page {
        // A record that does not say when it was written is kept: the
        // sweep deletes only what it knows has expired.
        if record_written_at(&value).is_some_and(|at| at < cutoff_secs) {
            batch.delete_if(Table::Records, key, value);
        }
    }
    Ok((batch, next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::stored::RECORD_AT;
    use crate::store::MemoryStore;

    fn record(at: i64) -> Vec<u8> {
        let mut v = vec![0u8; 56];
        v[RECORD_AT].copy_from_slice(&at.to_be_bytes());
        v
    }

    #[test]
    fn expired_records_go_and_rewritten_ones_stay() {
        let store = MemoryStore::new();
        let now = 1_900_000_000;
        let cut = cutoff(now, 1095);
        let mut b = Batch::new();
        for i in 0..25u32 {
            // Even keys expired a day ago; odd ones are a day from expiring.
            let at = if i % 2 == 0 {
                cut - DAY_SECS
            } else {
                cut + DAY_SECS
            };
            b.put(Table::Records, i.to_be_bytes(), record(at));
        }
        store.commit(&[b]).expect("commit");
        let mut after: Option<Vec<u8>> = None;
        let mut pages = 0;
        loop {
            let (deletes, next) = sweep_page(&store, after.as_deref(), 10, cut).expect("a page");
            pages += 1;
            if pages == 1 {
                // Key 0 is written again between the read and the commit.
                let mut b = Batch::new();
                b.put(Table::Records, 0u32.to_be_bytes(), record(now));
                store.commit(&[b]).expect("commit");
            }
            store.commit(&[deletes]).expect("commit");
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        let left: Vec<u32> = store
            .scan(Table::Records)
            .expect("scan")
            .iter()
            .map(|(k, _)| u32::from_be_bytes(k[..4].try_into().expect("4 bytes")))
            .collect();
        let mut want: Vec<u32> = (0..25).filter(|i| i % 2 == 1).collect();
        want.insert(0, 0);
        assert_eq!(left, want);
    }
}
