//! The engine's side of the durable store, sans-IO: what a handled event
//! changed ([`Engine::take_changes`]), in bytes, and what the store read
//! back put in place ([`Engine::admit_record`], [`Engine::admit_entity`],
//! [`Engine::admit_hold`]). The engine never reads or writes the store:
//! the edge loads what an event needs before it is handled and writes what
//! it changed after.
//!
//! The entry points are `Engine`'s methods in `mod.rs`; the work is done
//! here by methods of `State` (records, holds, history) and of
//! `Rulesets` (laying out states written under another ruleset), so that
//! this file names neither `mod.rs` nor the state machine.
//!
//! Encodings (plain bytes; the edge seals what holds identifiers):
//!
//! ```text
//! record: matched u128 BE | shadow u128 BE | fingerprint [12] | ruleset u16 BE
//!         | outcome u8 (0 allow, 1 hold, 2 deny) | signal u8 (0 or 1)
//!         | written at i64 BE (seconds since the epoch: the record-keeping
//!           period counts from it; see `store::retention`)
//! hold:   number u64 BE | the held request in canonical form
//! ```
//!
//! [`Engine::take_changes`]: super::Engine::take_changes
//! [`Engine::admit_record`]: super::Engine::admit_record
//! [`Engine::admit_entity`]: super::Engine::admit_entity
//! [`Engine::admit_hold`]: super::Engine::admit_hold

use super::records::{FingerprintKey, IdKey, Record, id_secret};
use super::reload::Rulesets;
use super::state::{Held, State};
use crate::contract::{Event, Kind, Timestamp};
use crate::history::codec::{DecodeError, Layout, decode};
use crate::history::{EntityId, History, ListChange};
use crate::rules::{Outcome, SeriesMap};

/// Bytes of an encoded record.
pub const RECORD_BYTES: usize = 16 + 16 + 12 + 2 + 1 + 1 + 8;

/// Where in an encoded record the time it was written is.
pub const RECORD_AT: std::ops::Range<usize> = 48..56;

/// Hold numbers a stored hold may carry, exclusive: 2^62, more holds than
/// a service numbering one a nanosecond would reach in a century.
pub const HOLD_SEQ_MAX: u64 = 1 << 62;

/// When an encoded record was written, in seconds since the epoch.
pub fn record_written_at(bytes: &[u8]) -> Option<i64> {
    let at: [u8; 8] = bytes.get(RECORD_AT)?.try_into().ok()?;
    Some(i64::from_be_bytes(at))
}

/// What handled events changed, for the store. Filled by
/// [`Engine::take_changes`]; the edge writes the entities' states as they
/// are when it takes them.
///
/// [`Engine::take_changes`]: super::Engine::take_changes
#[derive(Debug, Default)]
pub struct Changes {
    /// Entities whose state changed, each once.
    pub entities: Vec<EntityId>,
    /// List values added or removed, in order.
    pub lists: Vec<ListChange>,
    /// Records written: the key of the id, and the record.
    pub records: Vec<([u8; 16], [u8; RECORD_BYTES])>,
    /// Holds put (their encoding) or gone (`None`), by the key of the id.
    pub holds: Vec<([u8; 16], Option<Vec<u8>>)>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
            && self.lists.is_empty()
            && self.records.is_empty()
            && self.holds.is_empty()
    }

    pub fn clear(&mut self) {
        self.entities.clear();
        self.lists.clear();
        self.records.clear();
        self.holds.clear();
    }
}

/// A stored record, hold or state that does not decode, or names what this
/// engine does not have. Never carries the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdmitError {
    Record(&'static str),
    Hold(&'static str),
    Entity(DecodeError),
    /// The state was written under a ruleset the store does not hold.
    UnknownRuleset(u32),
}

impl std::fmt::Display for AdmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdmitError::Record(what) => write!(f, "decision record: {what}"),
            AdmitError::Hold(what) => write!(f, "hold: {what}"),
            AdmitError::Entity(e) => e.fmt(f),
            AdmitError::UnknownRuleset(i) => {
                write!(
                    f,
                    "entity state written under ruleset {i}, which the store does not hold"
                )
            }
        }
    }
}

impl std::error::Error for AdmitError {}

/// The key a request id's record and hold are stored under, for an engine
/// made with `fingerprint_key` (see [`Engine::with_key`]): the edge reads
/// them before the event is handled.
///
/// [`Engine::with_key`]: super::Engine::with_key
pub fn record_key(fingerprint_key: &FingerprintKey, id: &str) -> [u8; 16] {
    IdKey::of(id, id_secret(fingerprint_key).as_ref())
        .0
        .to_be_bytes()
}

fn encode_record(r: &Record, at: i64) -> [u8; RECORD_BYTES] {
    let mut b = [0u8; RECORD_BYTES];
    b[..16].copy_from_slice(&r.matched.to_be_bytes());
    b[16..32].copy_from_slice(&r.shadow.to_be_bytes());
    b[32..44].copy_from_slice(&r.fingerprint);
    b[44..46].copy_from_slice(&r.ruleset.to_be_bytes());
    b[46] = match r.outcome {
        Outcome::Allow => 0,
        Outcome::Hold => 1,
        Outcome::Deny => 2,
    };
    b[47] = u8::from(r.is_signal());
    b[RECORD_AT].copy_from_slice(&at.to_be_bytes());
    b
}

fn decode_record(b: &[u8]) -> Result<Record, AdmitError> {
    if b.len() != RECORD_BYTES {
        return Err(AdmitError::Record("wrong length"));
    }
    let u128_at = |i: usize| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&b[i..i + 16]);
        u128::from_be_bytes(a)
    };
    let mut fingerprint = [0u8; 12];
    fingerprint.copy_from_slice(&b[32..44]);
    let outcome = match b[46] {
        0 => Outcome::Allow,
        1 => Outcome::Hold,
        2 => Outcome::Deny,
        _ => return Err(AdmitError::Record("unknown outcome")),
    };
    let tags = match b[47] {
        0 => 0,
        1 => 1,
        _ => return Err(AdmitError::Record("unknown signal flag")),
    };
    Ok(Record {
        matched: u128_at(0),
        shadow: u128_at(16),
        fingerprint,
        ruleset: u16::from_be_bytes([b[44], b[45]]),
        outcome,
        tags,
    })
}

impl State {
    /// Starts noting what handled events change, for `take_changes`.
    pub(super) fn track_changes(&mut self) {
        self.tracking = true;
        self.history.track_changes(true);
    }

    /// Moves what handled events changed since the last call into `out`:
    /// records and holds in bytes, the entities and list values by name.
    pub(super) fn take_changes(&mut self, out: &mut Changes) {
        self.history.take_changes(&mut out.entities, &mut out.lists);
        for (key, r, at) in self.record_changes.drain(..) {
            out.records
                .push((key.0.to_be_bytes(), encode_record(&r, at)));
        }
        for (key, seq) in self.hold_changes.drain(..) {
            // A hold put and gone within one call is written as gone.
            let value = seq.and_then(|seq| {
                let h = self.holds.get(&key).filter(|h| h.seq == seq)?;
                let mut v = Vec::with_capacity(8 + h.canonical.len());
                v.extend_from_slice(&seq.to_be_bytes());
                v.extend_from_slice(&h.canonical);
                Some(v)
            });
            out.holds.push((key.0.to_be_bytes(), value));
        }
    }

    /// Puts a record read back from the store in place, unless the id has
    /// one in memory (which is never older); `rulesets` are those kept,
    /// which the record must name one of.
    pub(super) fn admit_record(
        &mut self,
        key: [u8; 16],
        bytes: &[u8],
        rulesets: usize,
    ) -> Result<(), AdmitError> {
        let r = decode_record(bytes)?;
        if usize::from(r.ruleset) >= rulesets {
            return Err(AdmitError::Record(
                "names a ruleset the store does not hold",
            ));
        }
        let key = IdKey(u128::from_be_bytes(key));
        if self.records.get(key).is_none() {
            self.records.insert(key, r, &self.holds);
        }
        Ok(())
    }

    /// Puts a pending hold read back from the store in place (at start,
    /// before any event); `holds_admitted` after the laself.
    pub(super) fn admit_hold(&mut self, key: [u8; 16], bytes: &[u8]) -> Result<(), AdmitError> {
        if bytes.len() < 8 {
            return Err(AdmitError::Hold("too short"));
        }
        let mut n = [0u8; 8];
        n.copy_from_slice(&bytes[..8]);
        let seq = u64::from_be_bytes(n);
        // The engine numbers holds from 0, one a request at most: a number
        // it could not have reached is a damaged hold (and would overflow
        // the numbering of the holds after it).
        if seq >= HOLD_SEQ_MAX {
            return Err(AdmitError::Hold("sequence number out of range"));
        }
        let canonical: Box<[u8]> = bytes[8..].into();
        if Event::from_canonical(&canonical).is_none() {
            return Err(AdmitError::Hold("the held request does not parse"));
        }
        let key = IdKey(u128::from_be_bytes(key));
        self.holds.insert(key, Held { seq, canonical });
        self.hold_order.push_back((key, seq));
        self.hold_seq = self.hold_seq.max(seq + 1);
        Ok(())
    }

    /// Orders the holds `admit_hold` put in place, oldest first, so that
    /// the oldest expire first as before the restart.
    pub(super) fn holds_admitted(&mut self) {
        let order = self.hold_order.make_contiguous();
        order.sort_by_key(|&(_, seq)| seq);
    }

    /// The entities handling `ev` reads or changes that are not in memory:
    /// those it names and, for a verification of a pending hold, those the
    /// held request names.
    pub(super) fn missing(&self, ev: &Event) -> Vec<EntityId> {
        let mut ids = EntityId::all_of(ev);
        if ev.kind == Kind::Verification
            && let Some((_, held)) = ev.reference.as_deref().and_then(|r| self.held(r))
        {
            ids.extend(EntityId::all_of(&held));
        }
        ids.retain(|id| !self.history.is_resident(id));
        ids
    }
}

impl Rulesets {
    /// Puts an entity state read back from the store in place in `history`
    /// (laid out by the current ruleset), unless the entity is in memory.
    pub(super) fn admit_entity(
        &mut self,
        history: &mut History,
        bytes: &[u8],
    ) -> Result<(), AdmitError> {
        let mut d = decode(bytes).map_err(AdmitError::Entity)?;
        // What memory holds wins: no need to lay out what is not used.
        if history.is_resident(&d.id) {
            return Ok(());
        }
        self.relayout(&mut d)?;
        history.admit(d);
        Ok(())
    }

    /// Lays a decoded state out by the current ruleset, if another one laid
    /// it out; returns whether it did.
    fn relayout(&mut self, d: &mut crate::history::codec::Decoded) -> Result<bool, AdmitError> {
        let current = self.current_index();
        if d.ruleset == current {
            return Ok(false);
        }
        let old = self
            .all
            .get(d.ruleset as usize)
            .ok_or(AdmitError::UnknownRuleset(d.ruleset))?;
        let new = &self.all[self.current];
        let (old_to_new, caps) = self.layouts.entry(d.ruleset).or_insert_with(|| {
            let map = SeriesMap::between(&old.series, &new.series);
            (map.old_to_new, crate::history::series_caps(new))
        });
        d.relayout(&Layout { old_to_new, caps }, current);
        Ok(true)
    }

    /// A stored entity state pruned at `now` by the current rules: `None`
    /// when nothing in it has expired, else its new encoding (empty when
    /// nothing is left: delete it). Changes nothing in memory.
    pub(super) fn prune_encoded(
        &mut self,
        bytes: &[u8],
        now: Timestamp,
    ) -> Result<Option<Vec<u8>>, AdmitError> {
        let mut d = decode(bytes).map_err(AdmitError::Entity)?;
        let relaid = self.relayout(&mut d)?;
        if !d.prune(&self.all[self.current], now) && !relaid {
            return Ok(None);
        }
        let mut out = Vec::new();
        if !d.is_empty() {
            d.encode(&mut out);
        }
        Ok(Some(out))
    }
}

/// The entity a stored state belongs to.
pub(super) fn entity_of(bytes: &[u8]) -> Result<EntityId, AdmitError> {
    decode(bytes).map(|d| d.id).map_err(AdmitError::Entity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{AtRule, parse_line};
    use crate::engine::Engine;
    use crate::rules::{CompiledRules, Limits};
    use std::sync::Arc;

    #[test]
    fn a_hold_numbered_past_what_the_engine_reaches_is_refused() {
        let src = "rule swaps\n  hold verify otp_existing_contact\n  when kind is sim_swap\n";
        let rules = CompiledRules::compile("t.rules", src, &Limits::default()).unwrap();
        let mut engine = Engine::new(Arc::new(rules));
        let swap = r#"{"id":"s1","kind":"sim_swap","msisdn":"+447700900123","account":"A1","iccid":"8944110000000000008"}"#;
        let canonical = parse_line(swap, AtRule::Optional).unwrap().canonical();
        let hold = |seq: u64| [&seq.to_be_bytes()[..], &canonical].concat();
        for seq in [HOLD_SEQ_MAX, u64::MAX - 1, u64::MAX] {
            assert_eq!(
                engine.admit_hold([1; 16], &hold(seq)),
                Err(AdmitError::Hold("sequence number out of range")),
                "{seq}"
            );
        }
        assert_eq!(engine.admit_hold([2; 16], &hold(HOLD_SEQ_MAX - 1)), Ok(()));
        engine.holds_admitted();
    }
}
