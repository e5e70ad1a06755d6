//! What the engine keeps and changes apart from its rulesets: history, the
//! idempotency records, the requests on hold and the changes noted for the
//! store. Only the struct, its construction and what reads or sizes all of
//! it live here; the per-request state machine (`decide.rs`), holds and
//! their verification (`holds.rs`) and the store's side (`stored.rs`) add
//! their methods to [`State`] in their own files. This file names none of
//! them, so each can name [`State`] without an import loop; for the same
//! reason [`Held`], the type of the `holds` field, is declared here.

use super::limits::EngineLimits;
use super::records::{FingerprintKey, IdKey, Record, Records, id_secret};
use crate::contract::Event;
use crate::history::{History, Map};
use std::collections::VecDeque;

/// The most lines (and accounts)
/// [`Engine::reserve`](crate::engine::Engine::reserve) makes room for.
const RESERVED_SUBSCRIBERS_MAX: usize = 16_000_000;

/// A request on hold: its number among holds, and the request in canonical
/// form ([`Event::from_canonical`]), one allocation.
pub(super) struct Held {
    pub(super) seq: u64,
    pub(super) canonical: Box<[u8]>,
}

/// What the engine keeps and changes.
pub(super) struct State {
    pub(super) history: History,
    pub(super) records: Records,
    /// Held requests waiting for a verification, by id, in canonical form
    /// ([`Event::from_canonical`]): one allocation each.
    pub(super) holds: Map<IdKey, Held>,
    /// Hold ids in the order they were held (some already resolved): the
    /// oldest pending holds expire first when `holds_pending_max` is reached.
    pub(super) hold_order: VecDeque<(IdKey, u64)>,
    /// The number of the next hold: an entry of `hold_order` stands for the
    /// hold with its key and number, not for a later hold of the same id.
    pub(super) hold_seq: u64,
    pub(super) holds_pending_max: usize,
    /// Scratch space for fingerprints: after `handle` computes one it holds
    /// the event's canonical form.
    pub(super) scratch: Vec<u8>,
    pub(super) fingerprint_key: FingerprintKey,
    /// The secret of record keys ([`IdKey::of`]).
    pub(super) id_secret: Option<[u8; 16]>,
    /// Whether records and holds changed are noted for the store.
    pub(super) tracking: bool,
    /// Records written since the last `take_changes`, with the time of
    /// the event that wrote them (whole seconds since the epoch: the
    /// record-keeping period counts from it).
    pub(super) record_changes: Vec<(IdKey, Record, i64)>,
    /// Holds put (with their number and canonical form) or gone since the
    /// last `take_changes`.
    pub(super) hold_changes: Vec<(IdKey, Option<u64>)>,
}

impl State {
    /// An empty state within `limits`, its records fingerprinted under
    /// `fingerprint_key`.
    pub(super) fn new(limits: &EngineLimits, fingerprint_key: FingerprintKey) -> State {
        State {
            history: History::new(),
            records: Records::new(limits.decision_records_max),
            holds: Map::default(),
            hold_order: VecDeque::new(),
            hold_seq: 0,
            holds_pending_max: limits.holds_pending_max.max(1),
            scratch: Vec::with_capacity(512),
            id_secret: id_secret(&fingerprint_key),
            fingerprint_key,
            tracking: false,
            record_changes: Vec::new(),
            hold_changes: Vec::new(),
        }
    }

    /// Reads, changing nothing, the memory that handling `ev` will read
    /// first: its id's record and the states of the entities it names (see
    /// [`Engine::prefetch`](crate::engine::Engine::prefetch)).
    pub(super) fn prefetch(&self, ev: &Event) {
        let mut seen = 0u64;
        if let Some(id) = ev.id.as_deref() {
            seen ^= self
                .records
                .get(IdKey::of(id, self.id_secret.as_ref()))
                .map_or(0, |r| u64::from(r.tags));
        }
        seen ^= self.history.touch(ev);
        std::hint::black_box(seen);
    }

    /// Sizes the tables for about `events` more events (see
    /// [`Engine::reserve`](crate::engine::Engine::reserve)).
    pub(super) fn reserve(&mut self, events: usize) {
        self.records.reserve(events);
        // A bound, so that a size read off a huge input cannot ask for more
        // memory than a sized history would hold anyway.
        let subscribers = (events / 10).min(RESERVED_SUBSCRIBERS_MAX);
        self.history.reserve(subscribers, subscribers);
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::tests::{engine, run, swap};

    /// Sizing is only a matter of speed: a huge size is bounded, not a
    /// panic, and a sized engine answers as an unsized one.
    #[test]
    fn reserving_changes_no_answer() {
        let mut sized = engine(64);
        sized.reserve(usize::MAX);
        let mut plain = engine(64);
        for i in 0..100u32 {
            let ev = swap(
                &format!("r{i}"),
                &format!("+4477009{:05}", i % 7),
                "2026-03-01T10:00:00Z",
            );
            assert_eq!(run(&mut sized, &ev), run(&mut plain, &ev));
        }
    }
}
