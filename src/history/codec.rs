//! History as the durable store keeps it, sans-IO: which entity states a
//! handled event changed, one state in bytes and back, and a state read
//! back from the store put in its place.
//!
//! The engine tracks changes only when asked ([`History::track_changes`]:
//! the service with a store); replay pays one branch per recording.
//!
//! The encoding (plain bytes; the edge seals them before they reach a
//! disk, since they hold identifiers and the values of series):
//!
//! ```text
//! version u8 (1) | ruleset u32 BE | kind u8 | id length u8 | id (UTF-8)
//! | sim u64 BE | entries u32 BE | entries × (series u16 BE, value u128 BE,
//!   secs i64 BE, nanos u32 BE)
//! ```
//!
//! `ruleset` is the index (stable across restarts, the store keeps every
//! ruleset) of the ruleset whose series numbers the entries carry: a state
//! written before a reload is laid out by the current ruleset when it is
//! read back, as a reload lays out the states in memory.

use super::{EntityState, Entry, History, LineState, TokKey};
use crate::contract::Event;
use crate::contract::ident::{Imei, Msisdn};
use crate::rules::presence_bit;
use std::fmt;

/// The encoding's version.
const VERSION: u8 = 1;
/// Bytes of one encoded entry.
const ENTRY_BYTES: usize = 2 + 16 + 8 + 4;

/// An entity, named by its identifier: what the store keys its state by
/// (as a keyed pseudonym of [`EntityId::text`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EntityId {
    Line(Msisdn),
    Device(Imei),
    Account(Box<str>),
    Agent(Box<str>),
    Store(Box<str>),
}

impl EntityId {
    /// The entity's slot (line 0, device 1, account 2, agent 3, store 4),
    /// as in [`super::slot`].
    pub fn slot(&self) -> usize {
        match self {
            EntityId::Line(_) => 0,
            EntityId::Device(_) => 1,
            EntityId::Account(_) => 2,
            EntityId::Agent(_) => 3,
            EntityId::Store(_) => 4,
        }
    }

    /// The identifier in its canonical text form.
    pub fn text(&self) -> String {
        match self {
            EntityId::Line(m) => m.to_string(),
            EntityId::Device(i) => i.to_string(),
            EntityId::Account(t) | EntityId::Agent(t) | EntityId::Store(t) => t.to_string(),
        }
    }

    /// The entity of `slot` that `ev` names, if it names one.
    pub fn of(ev: &Event, slot: usize) -> Option<EntityId> {
        Some(match slot {
            0 => EntityId::Line(ev.msisdn?),
            1 => EntityId::Device(ev.imei?),
            2 => EntityId::Account(ev.account.as_ref()?.as_str().into()),
            3 => EntityId::Agent(ev.agent.as_ref()?.as_str().into()),
            4 => EntityId::Store(ev.store.as_ref()?.as_str().into()),
            _ => return None,
        })
    }

    /// Every entity `ev` names: what handling it may read or change.
    pub fn all_of(ev: &Event) -> Vec<EntityId> {
        (0..5).filter_map(|slot| EntityId::of(ev, slot)).collect()
    }

    fn parse(kind: u8, text: &str) -> Option<EntityId> {
        Some(match kind {
            0 => EntityId::Line(Msisdn::parse(text).ok()?),
            1 => EntityId::Device(Imei::parse(text).ok()?),
            2 => EntityId::Account(text.into()),
            3 => EntityId::Agent(text.into()),
            4 => EntityId::Store(text.into()),
            _ => return None,
        })
    }
}

/// A value changed in a list by a `list_add` or `list_remove`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListChange {
    pub list: Box<str>,
    /// The value's key in the list's set.
    pub value: u128,
    /// Whether the value is in the list now.
    pub present: bool,
}

/// An encoded state that does not decode. Never carries the bytes (they
/// hold identifiers), only where they went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub at: usize,
    pub what: &'static str,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "entity state, byte {}: {}", self.at, self.what)
    }
}

impl std::error::Error for DecodeError {}

/// A decoded state, not yet in place.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub id: EntityId,
    /// The ruleset whose series numbers the entries carry.
    pub ruleset: u32,
    state: EntityState,
    sim: u64,
}

impl Decoded {
    /// Entries the state holds.
    pub fn entries(&self) -> usize {
        self.state.entries.len()
    }
}

/// How a state laid out by an older ruleset is laid out by the current
/// one: for each old series its new number, if it has one, and the new
/// series' caps (see [`History::renumber`]).
pub struct Layout<'a> {
    pub old_to_new: &'a [Option<u16>],
    pub caps: &'a [usize],
}

impl History {
    /// Starts (or stops) noting which states and lists change, for
    /// [`History::take_changes`].
    pub fn track_changes(&mut self, on: bool) {
        self.tracking = on;
        if !on {
            self.dirty.clear();
            self.list_changes.clear();
        }
    }

    /// Notes that the state of `slot` that `ev` names changed.
    pub(super) fn note(&mut self, ev: &Event, slot: usize) {
        if self.tracking
            && let Some(id) = EntityId::of(ev, slot)
            && !self.dirty.contains(&id)
        {
            self.dirty.push(id);
        }
    }

    pub(super) fn note_line(&mut self, m: Msisdn) {
        let id = EntityId::Line(m);
        if self.tracking && !self.dirty.contains(&id) {
            self.dirty.push(id);
        }
    }

    pub(super) fn note_list(&mut self, list: &str, value: u128, present: bool) {
        if self.tracking {
            self.list_changes.push(ListChange {
                list: list.into(),
                value,
                present,
            });
        }
    }

    /// The entities whose state changed, each once, and the list values
    /// changed, in order, since the last call.
    pub fn take_changes(&mut self, entities: &mut Vec<EntityId>, lists: &mut Vec<ListChange>) {
        entities.append(&mut self.dirty);
        lists.append(&mut self.list_changes);
    }

    /// Whether the state of `id` is in memory.
    pub fn is_resident(&self, id: &EntityId) -> bool {
        match id {
            EntityId::Line(m) => self.lines.contains_key(&m.as_u128()),
            EntityId::Device(i) => self.devices.contains_key(&i.as_u128()),
            EntityId::Account(t) => self.by_token[0].contains_key(&**t),
            EntityId::Agent(t) => self.by_token[1].contains_key(&**t),
            EntityId::Store(t) => self.by_token[2].contains_key(&**t),
        }
    }

    /// Bytes the state of `id` holds in memory (its table slot, its spilled
    /// entries, a long token's text), if it is in memory: what a cache
    /// bounded in bytes accounts for it.
    pub fn entity_bytes(&self, id: &EntityId) -> Option<usize> {
        use std::mem::size_of;
        // A table slot and its control byte.
        let slot = |n: usize| n + 1;
        match id {
            EntityId::Line(m) => self
                .lines
                .get(&m.as_u128())
                .map(|l| slot(size_of::<(u128, LineState)>()) + l.state.heap_bytes()),
            EntityId::Device(i) => self
                .devices
                .get(&i.as_u128())
                .map(|s| slot(size_of::<(u128, EntityState)>()) + s.heap_bytes()),
            EntityId::Account(t) | EntityId::Agent(t) | EntityId::Store(t) => {
                let map = &self.by_token[id.slot() - 2];
                map.get(&**t).map(|s| {
                    let text = if t.len() > super::TOKKEY_INLINE {
                        t.len()
                    } else {
                        0
                    };
                    slot(size_of::<(TokKey, EntityState)>()) + s.heap_bytes() + text
                })
            }
        }
    }

    /// Drops the state of `id` from memory (the store holds it): the next
    /// request that names it reads it back. Returns whether it was there.
    pub fn evict(&mut self, id: &EntityId) -> bool {
        match id {
            EntityId::Line(m) => self.lines.remove(&m.as_u128()).is_some(),
            EntityId::Device(i) => self.devices.remove(&i.as_u128()).is_some(),
            EntityId::Account(t) | EntityId::Agent(t) | EntityId::Store(t) => {
                self.by_token[id.slot() - 2].remove(&**t).is_some()
            }
        }
    }

    /// Appends the state of `id`, laid out by the ruleset numbered
    /// `ruleset`, to `out`. `false` (and nothing appended) when it holds
    /// nothing.
    pub fn encode(&self, id: &EntityId, ruleset: u32, out: &mut Vec<u8>) -> bool {
        let (state, sim) = match id {
            EntityId::Line(m) => match self.lines.get(&m.as_u128()) {
                Some(l) => (&l.state, l.sim),
                None => return false,
            },
            EntityId::Device(i) => match self.devices.get(&i.as_u128()) {
                Some(s) => (s, 0),
                None => return false,
            },
            EntityId::Account(t) => match self.by_token[0].get(&**t) {
                Some(s) => (s, 0),
                None => return false,
            },
            EntityId::Agent(t) => match self.by_token[1].get(&**t) {
                Some(s) => (s, 0),
                None => return false,
            },
            EntityId::Store(t) => match self.by_token[2].get(&**t) {
                Some(s) => (s, 0),
                None => return false,
            },
        };
        encode_state(id, ruleset, state, sim, out);
        true
    }

    /// Puts a state read back from the store (laid out by the current
    /// ruleset: see [`Decoded::relayout`]) in place, unless
    /// the entity is already in memory: what memory holds is never older
    /// than what the store holds, since every change is made in memory
    /// first. Returns whether it was put in place.
    pub fn admit(&mut self, d: Decoded) -> bool {
        if self.is_resident(&d.id) {
            return false;
        }
        let Decoded { id, state, sim, .. } = d;
        match id {
            EntityId::Line(m) => {
                let line = LineState { state, sim };
                if !line.is_empty() {
                    self.lines.insert(m.as_u128(), line);
                }
            }
            EntityId::Device(i) => {
                if !state.entries.is_empty() {
                    self.devices.insert(i.as_u128(), state);
                }
            }
            EntityId::Account(t) => self.admit_token(0, &t, state),
            EntityId::Agent(t) => self.admit_token(1, &t, state),
            EntityId::Store(t) => self.admit_token(2, &t, state),
        }
        true
    }

    fn admit_token(&mut self, i: usize, token: &str, state: EntityState) {
        if !state.entries.is_empty() {
            self.by_token[i].insert(TokKey::from(token), state);
        }
    }

    /// Puts a list value read back from the store in place.
    pub fn admit_list_value(&mut self, list: &str, value: u128) {
        self.lists.entry(list.into()).or_default().insert(value);
    }
}

impl Decoded {
    /// Lays the state out by another ruleset's series (see
    /// [`History::admit`]), now numbered `ruleset`.
    pub fn relayout(&mut self, layout: &Layout<'_>, ruleset: u32) {
        self.state.renumber(layout.old_to_new, layout.caps);
        self.ruleset = ruleset;
    }

    /// Drops the entries past their window at `now` under `rules` (which
    /// lay the state out); returns whether any went.
    pub fn prune(
        &mut self,
        rules: &crate::rules::CompiledRules,
        now: crate::contract::Timestamp,
    ) -> bool {
        super::prune_state(&mut self.state, rules, now.as_nanos())
    }

    /// Whether the state holds nothing (a line: no entries and no SIM
    /// state).
    pub fn is_empty(&self) -> bool {
        self.state.entries.is_empty() && self.sim == 0
    }

    /// The state in the encoding [`decode`] reads.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_state(&self.id, self.ruleset, &self.state, self.sim, out);
    }
}

/// Decodes a state [`History::encode`] wrote.
pub fn decode(b: &[u8]) -> Result<Decoded, DecodeError> {
    let mut r = Reader { b, at: 0 };
    if r.u8()? != VERSION {
        return Err(r.err("unknown version"));
    }
    let ruleset = r.u32()?;
    let kind = r.u8()?;
    let len = usize::from(r.u8()?);
    let at = r.at;
    let text = std::str::from_utf8(r.take(len)?).map_err(|_| DecodeError {
        at,
        what: "identifier is not UTF-8",
    })?;
    let id = EntityId::parse(kind, text).ok_or_else(|| r.err("bad entity kind or identifier"))?;
    let sim = r.u64()?;
    let n = r.u32()? as usize;
    if r.rest() != n.saturating_mul(ENTRY_BYTES) {
        return Err(r.err("entry count does not match the length"));
    }
    let mut state = EntityState::default();
    for _ in 0..n {
        let series = r.u16()?;
        let value = u128::from_be_bytes(r.array()?);
        let secs = i64::from_be_bytes(r.array()?);
        let nanos = r.u32()?;
        if nanos >= 1_000_000_000 {
            return Err(r.err("nanoseconds out of range"));
        }
        state.present |= presence_bit(series);
        state.entries.push(Entry {
            value,
            secs,
            nanos,
            series,
        });
    }
    if !state.entries.is_sorted_by_key(|e| (e.series, e.at())) {
        return Err(r.err("entries out of order"));
    }
    if kind != 0 && sim != 0 {
        return Err(r.err("SIM state on an entity that is not a line"));
    }
    Ok(Decoded {
        id,
        ruleset,
        state,
        sim,
    })
}

fn encode_state(id: &EntityId, ruleset: u32, state: &EntityState, sim: u64, out: &mut Vec<u8>) {
    let text = id.text();
    // Invariant: identifiers are at most 64 characters (tokens) or digits
    // (numbers), so their length fits a byte.
    let len = u8::try_from(text.len()).unwrap_or(u8::MAX);
    out.push(VERSION);
    out.extend_from_slice(&ruleset.to_be_bytes());
    out.push(id.slot() as u8);
    out.push(len);
    out.extend_from_slice(&text.as_bytes()[..usize::from(len)]);
    out.extend_from_slice(&sim.to_be_bytes());
    let n = u32::try_from(state.entries.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&n.to_be_bytes());
    for e in state.entries.iter().take(n as usize) {
        out.extend_from_slice(&e.series.to_be_bytes());
        out.extend_from_slice(&e.value.to_be_bytes());
        out.extend_from_slice(&e.secs.to_be_bytes());
        out.extend_from_slice(&e.nanos.to_be_bytes());
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn err(&self, what: &'static str) -> DecodeError {
        DecodeError { at: self.at, what }
    }
    fn rest(&self) -> usize {
        self.b.len() - self.at
    }
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        if self.rest() < n {
            return Err(self.err("ends early"));
        }
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
}
