//! The engine's entity states as a cache in front of the store, bounded by
//! `cache_bytes_max` (accounted per entry in bytes, not entries): an lru
//! order over the entities requests name, evicting the least recently
//! named when the bound is passed. A working set larger than memory is
//! served from disk: an evicted state is read back when a request names
//! it again.
//!
//! An entity whose latest change is not yet durable is never evicted: the
//! store would give back an older state. Each change is stamped with the
//! number of the batch that carries it (batches are numbered in the order
//! they are queued, and the writer commits them in that order), and an
//! entity may go once the writer has committed past its stamp.
//!
//! Sans-IO: the caller says what was named and changed, and how far the
//! writer has committed.

use crate::engine::Engine;
use crate::history::EntityId;
use lru::LruCache;
use std::collections::HashMap;

/// Evictions tried per request at most: bounds the work one request does
/// when many pinned entities sit at the cold end.
const EVICTIONS_PER_REQUEST_MAX: usize = 64;

/// The cache's order and accounting.
pub struct EntityCache {
    order: LruCache<EntityId, usize>,
    /// Bytes of the states in `order`.
    bytes: usize,
    bytes_max: usize,
    /// The batch number of each entity's latest change not yet known to be
    /// committed.
    pinned: HashMap<EntityId, u64>,
    evicted: u64,
}

impl EntityCache {
    pub fn new(bytes_max: usize) -> EntityCache {
        EntityCache {
            order: LruCache::unbounded(),
            bytes: 0,
            bytes_max,
            pinned: HashMap::new(),
            evicted: 0,
        }
    }

    /// Bytes accounted now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Entities evicted so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// After a request: `named` are the entities it read or changed,
    /// `changed` those it changed, carried by batch number `batch`;
    /// `committed` batches are durable (numbers below it). Updates the
    /// order and evicts from the cold end while over the bound.
    pub fn after_request(
        &mut self,
        engine: &mut Engine,
        named: &[EntityId],
        changed: &[EntityId],
        batch: u64,
        committed: u64,
    ) {
        for id in changed {
            self.pinned.insert(id.clone(), batch);
        }
        for id in named.iter().chain(changed) {
            self.account(engine, id);
        }
        self.evict(engine, committed);
        // Stamps already committed say nothing: drop them now and then, so
        // the map stays as small as the writer's queue.
        if self.pinned.len() > 1024 + self.order.len() / 8 {
            self.pinned.retain(|_, b| *b >= committed);
        }
    }

    /// Puts `id` at the hot end with its current size (or forgets it if it
    /// holds nothing in memory).
    fn account(&mut self, engine: &Engine, id: &EntityId) {
        let now = engine.entity_bytes(id);
        let before = match now {
            Some(b) => self.order.put(id.clone(), b),
            None => self.order.pop(id),
        };
        self.bytes = self.bytes + now.unwrap_or(0) - before.unwrap_or(0);
    }

    fn evict(&mut self, engine: &mut Engine, committed: u64) {
        let mut kept = Vec::new();
        let mut tries = 0;
        while self.bytes > self.bytes_max && tries < EVICTIONS_PER_REQUEST_MAX {
            tries += 1;
            let Some((id, bytes)) = self.order.pop_lru() else {
                break;
            };
            self.bytes -= bytes;
            if self.pinned.get(&id).is_some_and(|b| *b >= committed) {
                kept.push((id, bytes));
                continue;
            }
            self.pinned.remove(&id);
            engine.evict_entity(&id);
            self.evicted += 1;
        }
        // Pinned ones go back, at the hot end: they were just changed.
        for (id, bytes) in kept {
            self.bytes += bytes;
            self.order.put(id, bytes);
        }
    }
}
