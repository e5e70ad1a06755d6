//! Background upkeep, between requests: deleting decision records past
//! `records_kept_days`, moving state to a new pseudonym key, and pruning
//! history past its windows, in memory and in the store. Each walks a
//! table page by page through the writer, so every page is one more batch
//! in decision order, and each change is conditional (put if unchanged,
//! delete if unchanged), so a request that rewrote a state meanwhile wins.

use super::decide::Decider;
use crate::engine::Engine;
use crate::gateway::durable::Durable;
use crate::gateway::error::GatewayError;
use crate::store::GroupCommit;

/// Entity states read per page of the store's pruning.
const PRUNE_PAGE: usize = 1000;

/// Entries read per page of a pseudonym re-key: small, so that each page's
/// batch is one short transaction among the decisions'.
const REKEY_PAGE: usize = 1000;

impl Decider {
    /// Deletes, page by page, the decision records written before
    /// `records_kept_days` before `now`, through the writer (so each page
    /// is one more batch in order). Blocks: run it off the runtime.
    pub fn sweep_records(
        &self,
        now: crate::contract::Timestamp,
        records_kept_days: u32,
    ) -> Result<u64, GatewayError> {
        use crate::store::retention::{SWEEP_PAGE_RECORDS, cutoff, sweep_page};
        let Some(Durable { store, writer, .. }) = self.durable.as_deref() else {
            return Ok(0);
        };
        let cut = cutoff(now.unix_secs(), records_kept_days);
        let deleted = walk_pages(writer, |after| {
            let (batch, next) = sweep_page(store.as_ref(), after, SWEEP_PAGE_RECORDS, cut)?;
            let n = batch.len();
            Ok((batch, next, n))
        })?;
        Ok(deleted as u64)
    }

    /// Moves every entity state and list value still under a key of the
    /// previous pseudonym master to the new one, page by page, through the
    /// writer. Blocks: run it off the runtime. Returns how many moved.
    pub fn rekey(&self) -> Result<usize, GatewayError> {
        use crate::store::Table;
        let Some(Durable {
            store,
            writer,
            persist: reader,
        }) = self.durable.as_deref()
        else {
            return Ok(0);
        };
        let mut moved = 0;
        for table in [Table::Entities, Table::Lists] {
            moved += walk_pages(writer, |after| {
                Ok(reader.rekey_page(store.as_ref(), table, after, REKEY_PAGE)?)
            })?;
        }
        Ok(moved)
    }

    /// Prunes one part of the history in memory (between two requests).
    pub fn prune_memory_part(&self, part: usize, parts: usize) {
        if let Ok(mut core) = self.core.lock() {
            let now = core.clock.now();
            core.service.engine_mut().prune_part(now, part, parts);
        }
    }

    /// Prunes the entity states in the store that are not in memory (those
    /// are pruned there, and written when they change): page by page, each
    /// state opened outside the lock, pruned by the current rules under it,
    /// written back through the writer only if nothing rewrote it since.
    /// Blocks: run it off the runtime. Returns how many states changed.
    pub fn prune_store(&self) -> Result<usize, GatewayError> {
        use crate::store::Table;
        let Some(Durable {
            store,
            writer,
            persist: reader,
        }) = self.durable.as_deref()
        else {
            return Ok(0);
        };
        walk_pages(writer, |after| {
            let page = store.scan_from(Table::Entities, after, PRUNE_PAGE)?;
            let next = crate::store::next_page(&page, PRUNE_PAGE);
            let mut opened = Vec::with_capacity(page.len());
            for (key, sealed) in page {
                let plain = reader.open_entity(&key, &sealed)?;
                opened.push((key, sealed, plain));
            }
            let pruned = self.prune_opened(opened)?;
            let mut batch = crate::store::Batch::new();
            for (key, sealed, new) in &pruned {
                if new.is_empty() {
                    batch.delete_if(Table::Entities, key.clone(), sealed.clone());
                } else {
                    let resealed = reader.seal_entity(key, new)?;
                    batch.put_if(Table::Entities, key.clone(), resealed, sealed.clone());
                }
            }
            Ok((batch, next, pruned.len()))
        })
    }

    /// Under the lock: the opened states (key, sealed value, plain) not in
    /// memory, pruned by the current rules, those that changed with their
    /// new encoding (empty: delete).
    fn prune_opened(&self, opened: Vec<StoredState>) -> Result<Vec<StoredState>, GatewayError> {
        let Ok(mut core) = self.core.lock() else {
            return Err(GatewayError::EngineFailed);
        };
        let now = core.clock.now();
        let engine = core.service.engine_mut();
        let mut pruned = Vec::new();
        for (key, sealed, plain) in opened {
            let id = Engine::entity_of(&plain)?;
            if engine.is_resident(&id) {
                continue;
            }
            if let Some(new) = engine.prune_encoded(&plain, now)? {
                pruned.push((key, sealed, new));
            }
        }
        Ok(pruned)
    }
}

/// A stored entity state: its key, its sealed value, and a plain encoding
/// (as read, or as it is to become).
type StoredState = (Vec<u8>, Vec<u8>, Vec<u8>);

/// Walks a table page by page: `page(after)` reads the page after `after`
/// and makes its batch, giving where the next page starts and a count;
/// each non-empty batch goes through the writer (one more batch in order)
/// and is waited for before the next page. Returns the counts' sum.
fn walk_pages(
    writer: &GroupCommit,
    mut page: impl FnMut(
        Option<&[u8]>,
    ) -> Result<(crate::store::Batch, Option<Vec<u8>>, usize), GatewayError>,
) -> Result<usize, GatewayError> {
    let mut after: Option<Vec<u8>> = None;
    let mut total = 0;
    loop {
        let (batch, next, n) = page(after.as_deref())?;
        total += n;
        if !batch.is_empty() {
            submit_when_room(writer, batch)?.wait()?;
        }
        match next {
            Some(k) => after = Some(k),
            None => return Ok(total),
        }
    }
}

/// Queues an upkeep batch once the writer's queue is below half full,
/// waiting (briefly, a few times a second) while it is not: upkeep yields
/// to requests, and never takes the room the decider promised one.
fn submit_when_room(
    writer: &GroupCommit,
    batch: crate::store::Batch,
) -> Result<crate::store::Ticket, GatewayError> {
    let mut batch = batch;
    loop {
        match writer.offer(batch, writer.upkeep_batches_max()) {
            Ok(ticket) => return Ok(ticket),
            Err((crate::store::Refused::Overloaded, back)) => {
                batch = back;
                std::thread::sleep(std::time::Duration::from_millis(UPKEEP_BACKOFF_MS));
            }
            Err((refused, _)) => return Err(refused.into()),
        }
    }
}

/// How long upkeep waits for room in the writer's queue before it tries
/// again, in milliseconds.
const UPKEEP_BACKOFF_MS: u64 = 50;
