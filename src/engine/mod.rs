//! The decision engine: one valid event in, exactly one answer out.
//!
//! Sans-IO, like quinn-proto: the caller passes the event and the time; the
//! engine reads no clock, opens no file or socket, draws no randomness and
//! spawns nothing. It cannot fail on a valid event: contract errors are
//! stopped at the edge, and the only errors it gives are those that depend
//! on state (`id_conflict`, `unknown_ref`, and a list value it cannot keep).

use crate::contract::{ContractError, ErrorCode, Event, Kind, Timestamp, VerifyResult};
use crate::history::{Facts, History, ListError, Phase, Renumbered, SimSeen, StagedList};
use crate::rules::{Action, CompiledRules, HKind, Outcome, SeriesMap, Subject, truth};
use std::collections::VecDeque;
use std::sync::Arc;

use crate::history::Map;

pub mod persist;
pub use persist::{AdmitError, Changes, RECORD_BYTES, record_key};

/// The most lines (and accounts) [`Engine::reserve`] makes room for.
const RESERVED_SUBSCRIBERS_MAX: usize = 16_000_000;

/// Limits on what the engine keeps for idempotency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineLimits {
    /// Decision and signal records kept for idempotent retries (records).
    /// Past it the oldest resolved record is forgotten: a retry of it is
    /// decided afresh. Held requests are never forgotten while pending.
    pub decision_records_max: usize,
    /// Requests on hold at once (requests). When a new hold finds it
    /// reached, the oldest pending holds (a sixteenth of the limit, at least
    /// one) expire as a failed verification would: each becomes a final deny
    /// (fail closed), and its retries answer `deny`. Expiring in batches
    /// lets the cache misses of the removals overlap.
    pub holds_pending_max: usize,
}

impl Default for EngineLimits {
    fn default() -> Self {
        EngineLimits {
            decision_records_max: 16_000_000,
            holds_pending_max: 1_000_000,
        }
    }
}

/// The answer to a decision kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decided {
    /// The outcome now: a released hold reads `Allow`, a failed one `Deny`.
    pub outcome: Outcome,
    /// Rules that matched when the request was decided (bit i = rule i).
    pub matched: u128,
    /// Shadow rules that matched (bit i = rule i).
    pub shadow: u128,
    /// The ruleset that decided it: see [`Engine::ruleset`].
    pub ruleset: u32,
    /// True when this answers a retry of an earlier request.
    pub retry: bool,
}

/// An alert raised while handling a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alert {
    pub msisdn: crate::contract::ident::Msisdn,
    pub at: Timestamp,
}

impl Alert {
    pub const KIND: &'static str = "unapproved_sim_change";
}

/// What the engine answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Decision(Decided),
    /// A signal was applied (or was a retry and changed nothing).
    Signal {
        alert: Option<Alert>,
        retry: bool,
    },
    Error(ContractError),
}

/// What a retry needs, in 48 bytes: with its 16-byte key, one record is
/// one cache line of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    matched: u128,
    shadow: u128,
    /// The content's keyed fingerprint ([`FingerprintKey`]).
    fingerprint: [u8; 12],
    ruleset: u16,
    outcome: Outcome,
    /// Bit 0: a signal (no decision). Bits 1-7: the generation that wrote it.
    tags: u8,
}

impl Record {
    fn signal(fingerprint: [u8; 12]) -> Record {
        Record {
            matched: 0,
            shadow: 0,
            fingerprint,
            ruleset: 0,
            outcome: Outcome::Allow,
            tags: 1,
        }
    }
    fn decision(fingerprint: [u8; 12], d: &Decided) -> Record {
        Record {
            matched: d.matched,
            shadow: d.shadow,
            fingerprint,
            // Invariant: an engine keeps at most RULESETS_MAX (2^16)
            // rulesets, so their indexes fit u16.
            ruleset: u16::try_from(d.ruleset).unwrap_or(u16::MAX),
            outcome: d.outcome,
            tags: 0,
        }
    }
    fn is_signal(&self) -> bool {
        self.tags & 1 == 1
    }
    fn generation(&self) -> u8 {
        self.tags >> 1
    }
    fn set_generation(&mut self, g: u8) {
        self.tags = (self.tags & 1) | (g << 1);
    }
    fn decided(&self) -> Decided {
        Decided {
            outcome: self.outcome,
            matched: self.matched,
            shadow: self.shadow,
            ruleset: u32::from(self.ruleset),
            retry: true,
        }
    }
}

const _: () = assert!(std::mem::size_of::<Record>() == 48);
const _: () = assert!(std::mem::size_of::<(IdKey, Record)>() == 64);

/// The secret key of content fingerprints.
///
/// A fingerprint is 96 bits of SipHash-2-4-128 of the event's canonical form
/// under this key: a keyed pseudorandom function, so a caller who does not
/// hold the key cannot make other content match a record and be answered
/// with its earlier `allow`; and, at a quarter of a SHA-256's cost on the
/// decision path, cheap. A service passes a secret key from its edge (drawn
/// at start while records live in memory, from its secrets once they are
/// stored); offline replay, where no caller is an adversary, uses
/// [`FingerprintKey::REPLAY`], and its answers do not depend on the key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FingerprintKey(pub [u8; 16]);

impl FingerprintKey {
    /// The fixed key of offline replay, tests and benchmarks.
    pub const REPLAY: FingerprintKey = FingerprintKey(*b"replay-fp-key-v1");
}

impl std::fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys are never logged.
        f.write_str("FingerprintKey(..)")
    }
}

/// The fingerprint a record keeps of a canonical form.
fn fingerprint(key: &FingerprintKey, canonical: &[u8]) -> [u8; 12] {
    use siphasher::sip128::Hasher128;
    use std::hash::Hasher;
    let mut h = siphasher::sip128::SipHasher24::new_with_key(&key.0);
    h.write(canonical);
    let mut out = [0u8; 12];
    out.copy_from_slice(&h.finish128().as_bytes()[..12]);
    out
}

/// A request on hold: its number among holds, and the request in canonical
/// form ([`Event::from_canonical`]), one allocation.
struct Held {
    seq: u64,
    canonical: Box<[u8]>,
}

/// A request id as a key: 128 bits of two seeded fast hashes. Fixed-size
/// keys keep the record tables free of per-id allocations and cheap to grow.
/// The key need not resist forgery: a record is matched only when its
/// keyed fingerprint (which covers the id) matches too, and a verification
/// releases a hold only when the held request's own id equals its `ref`. A
/// collision can only refuse a request (`id_conflict`), never answer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct IdKey(u128);

impl IdKey {
    /// The key of `id`: under `secret`, 128 bits of SipHash-2-4, which no
    /// one without the secret can make collide (the service, where ids come
    /// from many clients); without it, two seeded fast hashes (replay,
    /// where no caller is an adversary).
    fn of(id: &str, secret: Option<&[u8; 16]>) -> IdKey {
        if let Some(k) = secret {
            use siphasher::sip128::Hasher128;
            use std::hash::Hasher;
            let mut h = siphasher::sip128::SipHasher24::new_with_key(k);
            h.write(id.as_bytes());
            return IdKey(h.finish128().as_u128());
        }
        use std::hash::BuildHasher;
        let lo = foldhash::fast::FixedState::with_seed(0x5eed_1d00_0000_0001).hash_one(id);
        let hi = foldhash::fast::FixedState::with_seed(0x5eed_1d00_0000_0002).hash_one(id);
        IdKey(u128::from(hi) << 64 | u128::from(lo))
    }
}

/// The key of record keys, derived from a service's fingerprint key (one
/// secret, two uses); none for [`FingerprintKey::REPLAY`].
fn id_secret(key: &FingerprintKey) -> Option<[u8; 16]> {
    if *key == FingerprintKey::REPLAY {
        return None;
    }
    use siphasher::sip128::Hasher128;
    use std::hash::Hasher;
    let mut h = siphasher::sip128::SipHasher24::new_with_key(&key.0);
    h.write(b"portcullis record keys v1");
    Some(h.finish128().as_bytes())
}

/// Records for idempotent retries, bounded without per-entry order: one
/// table whose entries carry the generation they were written in. After
/// each half of the limit is written, a sweep keeps only the latest
/// generation (and requests still on hold), so a record lives for at least
/// half the limit, and a lookup is one probe. Generations compare only for
/// equality and a sweep leaves only the current one, so wrapping is safe.
struct Records {
    map: Map<IdKey, Record>,
    generation: u8,
    written: usize,
    generation_max: usize,
}

impl Records {
    fn new(max: usize) -> Records {
        Records {
            map: Map::default(),
            generation: 0,
            written: 0,
            generation_max: (max / 2).max(1),
        }
    }

    fn get(&self, id: IdKey) -> Option<&Record> {
        self.map.get(&id)
    }

    fn get_mut(&mut self, id: IdKey) -> Option<&mut Record> {
        self.map.get_mut(&id)
    }

    fn insert(&mut self, id: IdKey, mut record: Record, holds: &Map<IdKey, Held>) {
        if self.written >= self.generation_max {
            let current = self.generation;
            // Only a record that says hold can be pending: the others go
            // without a lookup.
            self.map.retain(|k, r| {
                r.generation() == current || (r.outcome == Outcome::Hold && holds.contains_key(k))
            });
            // Seven bits of generation.
            self.generation = current.wrapping_add(1) & 0x7f;
            self.written = 0;
        }
        self.written += 1;
        record.set_generation(self.generation);
        self.map.insert(id, record);
    }
}

/// The most distinct rulesets one engine loads (rulesets): records name the
/// ruleset that decided them in 16 bits. Past it a reload is refused
/// ([`ReloadError::Rulesets`]) and the service must restart; at one reload
/// a minute that is 45 days of edits, each a different ruleset.
pub const RULESETS_MAX: usize = 1 << 16;

pub struct Engine {
    /// Every distinct ruleset loaded, in the order first loaded; `current`
    /// decides now. Records name the one that decided them by index, so a
    /// retry answers as before, with that ruleset's names and hash.
    ///
    /// All are kept for the engine's life, bounded by [`RULESETS_MAX`]:
    /// the simplest option that keeps every retry's answer exact. A record
    /// of any age may name any ruleset (a pending hold is kept however
    /// old), so dropping one would need a walk of up to
    /// `decision_records_max` records, or a count kept on the decision
    /// path, to know it is unnamed; else a retry would answer differently.
    /// Keeping them costs little: a compiled ruleset is tens of kilobytes
    /// (measured: the default set about 15 KB, the fifty-rule benchmark set
    /// about 35 KB, so a thousand edits of it about 35 MB), a new one comes
    /// only when people edit rules, and loading one equal to a ruleset kept
    /// reuses its index, so a revert costs nothing.
    rulesets: Vec<Arc<CompiledRules>>,
    /// The index of the ruleset that decides now. Invariant: below
    /// `rulesets.len()`.
    current: usize,
    /// Everything else: apart from the rulesets, so that deciding borrows
    /// the current ruleset while it changes the state, without counting a
    /// reference per event.
    state: State,
    /// How states written under an older ruleset are laid out by the
    /// current one, by the older ruleset's index: computed on the first
    /// state read back from it, dropped when the current ruleset changes.
    layouts: Map<u32, (Vec<Option<u16>>, Vec<usize>)>,
}

/// What the engine keeps and changes.
struct State {
    history: History,
    records: Records,
    /// Held requests waiting for a verification, by id, in canonical form
    /// ([`Event::from_canonical`]): one allocation each.
    holds: Map<IdKey, Held>,
    /// Hold ids in the order they were held (some already resolved): the
    /// oldest pending holds expire first when `holds_pending_max` is reached.
    hold_order: VecDeque<(IdKey, u64)>,
    /// The number of the next hold: an entry of `hold_order` stands for the
    /// hold with its key and number, not for a later hold of the same id.
    hold_seq: u64,
    holds_pending_max: usize,
    /// Scratch space for fingerprints: after `handle` computes one it holds
    /// the event's canonical form.
    scratch: Vec<u8>,
    fingerprint_key: FingerprintKey,
    /// The secret of record keys ([`IdKey::of`]).
    id_secret: Option<[u8; 16]>,
    /// Whether records and holds changed are noted for the store.
    tracking: bool,
    /// Records written since the last `take_changes`.
    /// Records written since the last `take_changes`, with the time of
    /// the event that wrote them (whole seconds since the epoch: the
    /// record-keeping period counts from it).
    record_changes: Vec<(IdKey, Record, i64)>,
    /// Holds put (with their number and canonical form) or gone since the
    /// last `take_changes`.
    hold_changes: Vec<(IdKey, Option<u64>)>,
}

impl Engine {
    pub fn new(rules: Arc<CompiledRules>) -> Engine {
        Engine::with_limits(rules, EngineLimits::default())
    }

    /// An engine with the fixed fingerprint key of offline replay.
    pub fn with_limits(rules: Arc<CompiledRules>, limits: EngineLimits) -> Engine {
        Engine::with_key(rules, limits, FingerprintKey::REPLAY)
    }

    /// An engine whose records are fingerprinted under a secret key (a
    /// network service's: see [`FingerprintKey`]).
    pub fn with_key(
        rules: Arc<CompiledRules>,
        limits: EngineLimits,
        fingerprint_key: FingerprintKey,
    ) -> Engine {
        Engine {
            rulesets: vec![rules],
            current: 0,
            state: State {
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
            },
            layouts: Map::default(),
        }
    }

    /// The ruleset that decides from now on.
    pub fn current(&self) -> &Arc<CompiledRules> {
        &self.rulesets[self.current]
    }

    /// The index of the ruleset that decides from now on: what its
    /// decisions carry in [`Decided::ruleset`].
    pub fn current_index(&self) -> u32 {
        ruleset_index(self.current)
    }

    /// A ruleset by the index a [`Decided`] carries.
    pub fn ruleset(&self, i: u32) -> &CompiledRules {
        self.rulesets
            .get(i as usize)
            .unwrap_or_else(|| self.current())
    }

    pub fn history(&self) -> &History {
        &self.state.history
    }

    /// Requests on hold now.
    pub fn holds_pending(&self) -> usize {
        self.state.holds.len()
    }

    /// The current decision on the request with `id`, if one is
    /// remembered: what a retry would answer (a hold released reads allow,
    /// a failed or expired one deny), read without changing anything. An
    /// `await` reads it. `None` for an unknown id or a signal's.
    pub fn decision_of(&self, id: &str) -> Option<Decided> {
        let key = IdKey::of(id, self.state.id_secret.as_ref());
        let rec = self.state.records.get(key).filter(|r| !r.is_signal())?;
        let mut decided = rec.decided();
        if decided.outcome == Outcome::Hold && !self.state.holds.contains_key(&key) {
            decided.outcome = Outcome::Deny;
        }
        Some(decided)
    }

    /// Adds a list value from a file at load time (not an event).
    pub fn list_add(&mut self, list: &str, value: &str) -> Result<(), ListError> {
        let rules = &self.rulesets[self.current];
        self.state.history.list_add(rules, list, value)
    }

    /// Replaces the whole contents of list `name` with `values`, each
    /// parsed as the type the current ruleset declares for it. Every value
    /// is checked first: on an error nothing changes.
    pub fn replace_list<'v>(
        &mut self,
        name: &str,
        values: impl IntoIterator<Item = &'v str>,
    ) -> Result<(), ListError> {
        let rules = &self.rulesets[self.current];
        let mut staged = StagedList::new(rules, name)?;
        for v in values {
            staged.push(rules, v)?;
        }
        self.state.history.replace_list(staged);
        Ok(())
    }

    /// Makes `new` decide from now on, keeping history: [`Engine::reload`]
    /// without list files.
    pub fn load_rules(&mut self, new: Arc<CompiledRules>) -> Result<Reloaded, ReloadError> {
        self.reload(new, &[])
    }

    /// Makes `new` decide from now on and replaces the lists read from
    /// files, all or nothing: everything is checked before anything
    /// changes, so on an error the engine is as it was.
    ///
    /// `lists` holds, per `--list NAME=FILE`, the list's name and the
    /// file's values with their line numbers ([`ListFileValue`]; blank
    /// lines and `#` comments hold none, see [`list_file_value`]). A name
    /// given twice
    /// gets the values of both files. Each listed name must be declared by
    /// `new`, and each value must parse as its declared type, within
    /// `list_items_max`. Lists `new` declares but no file gives keep their
    /// values (changed by `list_add` and `list_remove` events), unless
    /// their type changed and they hold values, which is refused: a value
    /// kept as one type means nothing as another. Lists `new` does not
    /// declare are dropped.
    ///
    /// History carries over (see [`SeriesMap`]): each series of `new`
    /// takes the history of the current ruleset's series that records the
    /// same (the window may differ), renumbered; series `new` lacks are
    /// dropped; new ones start empty. The expected-IMSI state of lines is
    /// kept. Holds pending stay pending and resolve as before, and a retry
    /// of a request decided before answers as before, naming the ruleset
    /// that decided it.
    ///
    /// Cost: when every current series keeps its number in `new` (only
    /// thresholds, actions, verification methods or windows changed, or
    /// rules reading new series were added after the others) and no cap
    /// shrinks, no history is walked: comparing the series is all (about
    /// 10 µs for the default rules). Else every entity's entries are
    /// renumbered, re-sorted if their order changed, trimmed to `new`'s
    /// caps and recounted: one pass over history, during which the engine
    /// decides nothing (measured in a release build: 1.25 million entities
    /// holding 190 MB in 82 ms, about 65 ns an entity, so about a second
    /// per 16 million entities). A ruleset equal to the current one (same
    /// hash, label and limits) changes no rules and walks nothing; one
    /// equal to an earlier ruleset decides again under that ruleset's
    /// index.
    pub fn reload(
        &mut self,
        new: Arc<CompiledRules>,
        lists: &[(String, Vec<ListFileValue>)],
    ) -> Result<Reloaded, ReloadError> {
        let index = self.index_for(&new)?;
        let staged = stage_lists(&new, lists)?;
        check_carried_lists(&self.state.history, self.current(), &new, &staged)?;
        // Everything is checked: from here on nothing fails, so all of the
        // reload applies.
        let mut done = self.switch_rules(new, index);
        let history = &mut self.state.history;
        done.lists_replaced = staged.len();
        for l in staged {
            history.replace_list(l);
        }
        done.lists_dropped = history.drop_undeclared_lists(&self.rulesets[self.current]);
        Ok(done)
    }

    /// The index `new` will decide under: that of an equal ruleset kept
    /// (the current one's, most often), else the next one.
    fn index_for(&self, new: &CompiledRules) -> Result<usize, ReloadError> {
        if same_ruleset(self.current(), new) {
            return Ok(self.current);
        }
        if let Some(i) = self.rulesets.iter().position(|r| same_ruleset(r, new)) {
            return Ok(i);
        }
        if self.rulesets.len() >= RULESETS_MAX {
            return Err(ReloadError::Rulesets { max: RULESETS_MAX });
        }
        Ok(self.rulesets.len())
    }

    /// Makes the ruleset `new`, to be kept at `index`, the current one,
    /// laying history out by its series.
    fn switch_rules(&mut self, new: Arc<CompiledRules>, index: usize) -> Reloaded {
        let old = Arc::clone(self.current());
        if index == self.current {
            return Reloaded {
                ruleset: ruleset_index(index),
                rules_changed: false,
                series_kept: old.series.len(),
                ..Reloaded::default()
            };
        }
        assert!(index <= self.rulesets.len() && index < RULESETS_MAX);
        if index == self.rulesets.len() {
            self.rulesets.push(new);
        }
        // Else the ruleset kept at `index` equals `new`: it stays, `new` goes.
        let new = Arc::clone(&self.rulesets[index]);
        self.layouts.clear();
        let map = SeriesMap::between(&old.series, &new.series);
        let caps_shrink = new.limits.series_items_max < old.limits.series_items_max
            || new.limits.ever_items_max < old.limits.ever_items_max;
        let walked = if map.keeps_numbers() && !caps_shrink {
            Renumbered::default()
        } else {
            self.state.history.renumber(&map.old_to_new, &new)
        };
        self.current = index;
        Reloaded {
            ruleset: ruleset_index(index),
            rules_changed: true,
            series_kept: map.kept(),
            series_started_empty: map.started_empty(),
            series_dropped: map.dropped(),
            entities_walked: walked.entities,
            entries_dropped: walked.entries_dropped,
            ..Reloaded::default()
        }
    }

    /// Makes `stored` the rulesets kept, in their order (index `i` is
    /// `stored[i]`), the last one deciding: an engine over a store starts
    /// with the rulesets its records name, before any event, then loads
    /// the configured rules with [`Engine::reload`].
    pub fn restore_rulesets(&mut self, stored: Vec<Arc<CompiledRules>>) {
        assert!(!stored.is_empty() && stored.len() <= RULESETS_MAX);
        self.current = stored.len() - 1;
        self.rulesets = stored;
        self.layouts.clear();
    }

    /// Drops windowed history that no loaded rule can read any more.
    pub fn prune(&mut self, now: Timestamp) {
        let rules = &self.rulesets[self.current];
        self.state.history.prune(rules, now);
    }

    /// Reads, changing nothing, the memory that handling `ev` will read
    /// first: its id's record and the states of the entities it names. A
    /// caller holding several events calls this for each before handling
    /// them in order: the cache misses of their lookups, each a wait of a
    /// few hundred cycles, overlap instead of coming one after another
    /// (replay does this for batches of lines). Answers never depend on it.
    pub fn prefetch(&self, ev: &Event) {
        let mut seen = 0u64;
        if let Some(id) = ev.id.as_deref() {
            seen ^= self
                .state
                .records
                .get(IdKey::of(id, self.state.id_secret.as_ref()))
                .map_or(0, |r| u64::from(r.tags));
        }
        seen ^= self.state.history.touch(ev);
        std::hint::black_box(seen);
    }

    /// Sizes the tables for about `events` more events, so that they do
    /// not grow while a known input is decided: each growth moves every
    /// entry, a cache miss apiece. Room for a record per event (up to
    /// `decision_records_max`), and for a line and an account per ten
    /// events, a trace's usual share of subscribers. Answers never depend
    /// on it.
    pub fn reserve(&mut self, events: usize) {
        let records = &mut self.state.records;
        let room = events.min(2 * records.generation_max);
        records.map.reserve(room.saturating_sub(records.map.len()));
        // A bound, so that a size read off a huge input cannot ask for more
        // memory than a sized history would hold anyway.
        let subscribers = (events / 10).min(RESERVED_SUBSCRIBERS_MAX);
        self.state.history.reserve(subscribers, subscribers);
    }

    /// Handles one valid event at time `now`.
    pub fn handle(&mut self, ev: &Event, now: Timestamp) -> Answer {
        let index = self.current;
        self.state
            .handle(&self.rulesets[index], index as u32, ev, now)
    }

    /// What the current rules decide for `ev` at `now`, reading history and
    /// changing nothing: the rules' half of a decision. (History is laid out
    /// by the current ruleset's series: a reload renumbers it.)
    pub fn evaluate(&self, ev: &Event, now: Timestamp) -> (Outcome, u128, u128) {
        let rules = self.current();
        let subject = Subject::request(ev);
        let Some(plan) = rules.plans.get(usize::from(subject.kind.0)) else {
            return (Outcome::Allow, 0, 0);
        };
        let facts = self.state.history.facts(rules, &plan.series, &subject, now);
        evaluate_with(rules, &subject, &facts)
    }

    /// The history a decision of `subject` at `now` reads under the current
    /// ruleset, for every entity the event names: not only those its kind's
    /// plan reads, so that every rule's whole condition (not its
    /// specialized form) can be evaluated against it, as `explain` does to
    /// show what each rule read. Changes nothing.
    pub fn facts_all<'e>(&'e self, subject: &Subject<'_>, now: Timestamp) -> Facts<'e> {
        let rules: &'e CompiledRules = self.current();
        self.state
            .history
            .facts(rules, &[u32::MAX; 5], subject, now)
    }
}

/// A ruleset's index as decisions carry it.
fn ruleset_index(i: usize) -> u32 {
    // Invariant: at most RULESETS_MAX (2^16) rulesets are kept.
    u32::try_from(i).expect("ruleset indexes fit u32")
}

/// Whether two rulesets decide alike and answer alike: the same source
/// (hash), label and limits. A ruleset without a hash (built, not
/// compiled from a source) equals none.
fn same_ruleset(a: &CompiledRules, b: &CompiledRules) -> bool {
    !a.hash.is_empty() && a.hash == b.hash && a.label == b.label && a.limits == b.limits
}

/// What a reload did, for the service's log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// The index of the ruleset that decides now ([`Decided::ruleset`]).
    pub ruleset: u32,
    /// False when the ruleset loaded equals the current one: rules and
    /// history were left as they were (lists may still have changed).
    pub rules_changed: bool,
    /// Series of the new ruleset that kept the current one's history.
    pub series_kept: usize,
    /// Series of the new ruleset with no such history: they start empty.
    pub series_started_empty: usize,
    /// Series of the old ruleset the new one lacks: their history went.
    pub series_dropped: usize,
    /// Entity states walked to renumber history (0: the series kept their
    /// numbers, nothing was walked).
    pub entities_walked: usize,
    /// History entries dropped: of dropped series, or past a smaller cap.
    pub entries_dropped: usize,
    /// Lists replaced from files.
    pub lists_replaced: usize,
    /// Lists dropped because the new ruleset does not declare them.
    pub lists_dropped: usize,
}

/// Why a reload was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadError {
    /// A list file's value that the list cannot keep.
    ListValue {
        list: String,
        /// The file's line, from 1.
        line: usize,
        /// The value as read (at most `LIST_VALUE_CHARS_MAX` characters of
        /// it, for the log).
        value: String,
        error: ListError,
    },
    /// A list file names a list the new ruleset does not declare.
    UndeclaredList { list: String, declared: Vec<String> },
    /// A list the new ruleset declares with another type holds values and
    /// is given by no file: they would mean nothing as the new type.
    ListTypeChanged {
        list: String,
        was: &'static str,
        now: &'static str,
        values: usize,
    },
    /// The engine has loaded [`RULESETS_MAX`] distinct rulesets.
    Rulesets { max: usize },
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadError::ListValue {
                list,
                line,
                value,
                error,
            } => write!(f, "list {list}, line {line}: {value:?}: {error}"),
            ReloadError::UndeclaredList { list, declared } => write!(
                f,
                "the new ruleset declares no list {list} (it declares: {}; declare one with `list {list}: TYPE`)",
                if declared.is_empty() {
                    "none".to_string()
                } else {
                    declared.join(", ")
                }
            ),
            ReloadError::ListTypeChanged {
                list,
                was,
                now,
                values,
            } => write!(
                f,
                "list {list} holds {values} values as {was}, but the new ruleset declares it as {now}: load it from a file (--list {list}=FILE)"
            ),
            ReloadError::Rulesets { max } => write!(
                f,
                "this engine has loaded {max} distinct rulesets, the most its records can name: restart to load another"
            ),
        }
    }
}

impl std::error::Error for ReloadError {}

/// The value a line of a list file holds, if any: the text before any `#`,
/// trimmed. Blank lines and comments hold none.
pub fn list_file_value(line: &str) -> Option<&str> {
    let value = line.split('#').next().unwrap_or("").trim();
    (!value.is_empty()).then_some(value)
}

/// A value of a list file, with the line it is on (from 1), so that an
/// error names the line; blank lines and comments are not kept, so what a
/// list file costs in memory is its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListFileValue {
    pub line: usize,
    pub value: String,
}

/// The values of a list file's `lines` (the i-th is line i + 1).
pub fn list_file_values<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<ListFileValue> {
    lines
        .into_iter()
        .enumerate()
        .filter_map(|(i, line)| {
            list_file_value(line).map(|value| ListFileValue {
                line: i + 1,
                value: value.to_string(),
            })
        })
        .collect()
}

/// Every list file of a reload, parsed and checked against `rules` (the
/// new ruleset), changing nothing: one staged list per name.
fn stage_lists(
    rules: &CompiledRules,
    lists: &[(String, Vec<ListFileValue>)],
) -> Result<Vec<StagedList>, ReloadError> {
    let mut staged: Vec<StagedList> = Vec::new();
    for (name, values) in lists {
        let i = match staged.iter().position(|l| l.name() == name) {
            Some(i) => i,
            None => {
                let list = StagedList::new(rules, name).map_err(|_| undeclared(rules, name))?;
                staged.push(list);
                staged.len() - 1
            }
        };
        for ListFileValue { line, value } in values {
            staged[i]
                .push(rules, value)
                .map_err(|error| ReloadError::ListValue {
                    list: name.clone(),
                    line: *line,
                    value: value
                        .chars()
                        .take(crate::contract::LIST_VALUE_CHARS_MAX)
                        .collect(),
                    error,
                })?;
        }
    }
    Ok(staged)
}

fn undeclared(rules: &CompiledRules, name: &str) -> ReloadError {
    ReloadError::UndeclaredList {
        list: name.to_string(),
        declared: rules.lists.iter().map(|d| d.name.clone()).collect(),
    }
}

/// Refuses a reload that would carry a list's values over to a ruleset
/// declaring it with another type: kept as keys of the old type, they
/// would match nothing, or the wrong values, as the new one.
fn check_carried_lists(
    history: &History,
    old: &CompiledRules,
    new: &CompiledRules,
    staged: &[StagedList],
) -> Result<(), ReloadError> {
    use crate::history::list_ty;
    for name in history.list_names() {
        let replaced = staged.iter().any(|l| l.name() == name);
        let declared = new.lists.iter().any(|d| d.name == name);
        if replaced || !declared {
            continue;
        }
        let (was, now) = (list_ty(old, name), list_ty(new, name));
        let values = history.list_len(name);
        if was != now && values > 0 {
            return Err(ReloadError::ListTypeChanged {
                list: name.to_string(),
                was: was.name(),
                now: now.name(),
                values,
            });
        }
    }
    Ok(())
}

impl State {
    /// Handles one valid event at time `now` under `rules`, the ruleset
    /// numbered `ruleset`.
    fn handle(
        &mut self,
        rules: &CompiledRules,
        ruleset: u32,
        ev: &Event,
        now: Timestamp,
    ) -> Answer {
        // Everything this event will read from memory is asked for first,
        // before any work that does not depend on it: the record of its id
        // and, for a request, the states of the entities its rules read.
        // Each is likely a cache miss; asked for together they overlap with
        // each other and with the fingerprint's hashing instead of stalling
        // one after another.
        let secret = self.id_secret;
        let key = ev.id.as_deref().map(|id| IdKey::of(id, secret.as_ref()));
        let prior = key.and_then(|k| self.records.get(k).copied());
        let subject = Subject::request(ev);
        let facts = ev.kind.is_decision().then(|| {
            let plan = rules.plans.get(usize::from(subject.kind.0));
            let series = plan.map_or([0; 5], |p| p.series);
            self.history.facts(rules, &series, &subject, now)
        });
        let fingerprint = ev.id.as_ref().map(|_| {
            ev.canonical_into(&mut self.scratch);
            fingerprint(&self.fingerprint_key, &self.scratch)
        });
        if let (Some(id), Some(key), Some(fp), Some(rec)) = (&ev.id, key, fingerprint, prior) {
            return self.retry(id, key, fp, rec);
        }
        let answer = match facts {
            Some(facts) => {
                let evaluated = evaluate_with(rules, &subject, &facts);
                self.decide(rules, ruleset, ev, evaluated, now)
            }
            None => self.signal(rules, ev, now),
        };
        if let (Some(key), Some(fingerprint)) = (key, fingerprint) {
            let record = match &answer {
                Answer::Decision(decided) => Some(Record::decision(fingerprint, decided)),
                Answer::Signal { .. } => Some(Record::signal(fingerprint)),
                Answer::Error(_) => None,
            };
            if let Some(r) = record {
                self.remember(key, r, &answer, now);
            }
        }
        answer
    }

    /// The answer to an event whose id has a record: the earlier answer if
    /// the content is the same, else `id_conflict`.
    fn retry(&self, id: &str, key: IdKey, fp: [u8; 12], rec: Record) -> Answer {
        if rec.fingerprint != fp {
            let mut e = ContractError::new(
                ErrorCode::IdConflict,
                Some("id"),
                "this id was already used by a different event",
            );
            e.id = Some(id.into());
            return Answer::Error(e);
        }
        if rec.is_signal() {
            return Answer::Signal {
                alert: None,
                retry: true,
            };
        }
        let mut decided = rec.decided();
        // A hold no longer pending and never verified expired: it is a
        // final deny.
        if decided.outcome == Outcome::Hold && !self.holds.contains_key(&key) {
            decided.outcome = Outcome::Deny;
        }
        Answer::Decision(decided)
    }

    /// Makes room for one more hold: at the limit, the oldest sixteenth of
    /// the pending holds become final denies. Their records still say hold;
    /// a retry reads "held but no longer pending" as expired, a deny (see
    /// `retry`).
    fn expire_holds(&mut self) {
        let max = self.holds_pending_max;
        if self.holds.len() < max {
            return;
        }
        // One batch: the removals are independent of each other, so their
        // cache misses overlap, where one at a time each would wait.
        let target = max - (max / 16).max(1);
        while self.holds.len() > target {
            let Some((old, seq)) = self.hold_order.pop_front() else {
                break;
            };
            if self.holds.get(&old).is_some_and(|h| h.seq == seq) {
                self.holds.remove(&old);
                if self.tracking {
                    self.hold_changes.push((old, None));
                }
            }
        }
        if self.hold_order.len() > 2 * self.holds.len() + 1024 {
            let holds = &self.holds;
            self.hold_order
                .retain(|(k, seq)| holds.get(k).is_some_and(|h| h.seq == *seq));
        }
        debug_assert!(self.holds.len() < max);
    }

    /// Keeps the record of an answered event; `self.scratch` holds the
    /// event's canonical form.
    fn remember(&mut self, key: IdKey, r: Record, answer: &Answer, now: Timestamp) {
        if let Answer::Decision(d) = answer
            && d.outcome == Outcome::Hold
        {
            self.expire_holds();
            let seq = self.hold_seq;
            self.hold_seq += 1;
            let held = Held {
                seq,
                canonical: self.scratch.as_slice().into(),
            };
            self.holds.insert(key, held);
            self.hold_order.push_back((key, seq));
            if self.tracking {
                self.hold_changes.push((key, Some(seq)));
            }
        }
        self.records.insert(key, r, &self.holds);
        if self.tracking {
            self.record_changes.push((key, r, now.unix_secs()));
        }
    }

    fn decide(
        &mut self,
        rules: &CompiledRules,
        ruleset: u32,
        ev: &Event,
        (outcome, matched, shadow): (Outcome, u128, u128),
        now: Timestamp,
    ) -> Answer {
        let recorded = Subject {
            decision: Some(outcome),
            ..Subject::request(ev)
        };
        let completed = outcome == Outcome::Allow;
        self.history
            .record(rules, &recorded, Phase::Decided { completed }, now);
        if completed {
            self.complete_sim_change(ev);
        }
        Answer::Decision(Decided {
            outcome,
            matched,
            shadow,
            ruleset,
            retry: false,
        })
    }

    fn complete_sim_change(&mut self, ev: &Event) {
        if ev.kind.is_sim_change()
            && let Some(m) = ev.msisdn
        {
            self.history.sim_change_completed(m, ev.imsi);
        }
    }

    fn signal(&mut self, rules: &CompiledRules, ev: &Event, now: Timestamp) -> Answer {
        let mut alert = None;
        let mut subject = Subject::request(ev);
        match ev.kind {
            Kind::DeviceSeen => {
                if let (Some(m), Some(imsi), Some(imei)) = (ev.msisdn, ev.imsi, ev.imei) {
                    let (new_device, sim) = self.history.device_seen(rules, m, imsi, imei);
                    subject.new_device = new_device;
                    if sim == SimSeen::Unapproved {
                        let derived = Subject {
                            kind: HKind::UNAPPROVED_SIM_CHANGE,
                            ..subject
                        };
                        self.history.record(
                            rules,
                            &derived,
                            Phase::Decided { completed: true },
                            now,
                        );
                        alert = Some(Alert { msisdn: m, at: now });
                    }
                }
            }
            Kind::Verification => {
                if let Err(e) = self.verify(rules, ev, now) {
                    return Answer::Error(e);
                }
            }
            Kind::ListAdd | Kind::ListRemove => {
                let (Some(list), Some(value)) = (&ev.list, &ev.value) else {
                    return Answer::Signal {
                        alert,
                        retry: false,
                    };
                };
                let r = if ev.kind == Kind::ListAdd {
                    self.history.list_add(rules, list.as_str(), value)
                } else {
                    self.history.list_remove(rules, list.as_str(), value)
                };
                if let Err(e) = r {
                    return Answer::Error(list_error(e, ev));
                }
            }
            _ => {}
        }
        self.history
            .record(rules, &subject, Phase::Decided { completed: true }, now);
        Answer::Signal {
            alert,
            retry: false,
        }
    }

    /// The request pending on hold under `id`, with its key. The key
    /// locates the hold; the held request's own id confirms it.
    fn held(&self, id: &str) -> Option<(IdKey, Event)> {
        let key = IdKey::of(id, self.id_secret.as_ref());
        let held = self
            .holds
            .get(&key)
            .and_then(|h| Event::from_canonical(&h.canonical))
            .filter(|h| h.id.as_deref() == Some(id))?;
        Some((key, held))
    }

    /// Resolves the held request a verification names.
    fn verify(
        &mut self,
        rules: &CompiledRules,
        ev: &Event,
        now: Timestamp,
    ) -> Result<(), ContractError> {
        let unknown = || {
            let mut e = ContractError::new(
                ErrorCode::UnknownRef,
                Some("ref"),
                "no request with this id is on hold",
            );
            e.id.clone_from(&ev.id);
            e
        };
        let r = ev.reference.as_deref().ok_or_else(unknown)?;
        let (key, held) = self.held(r).ok_or_else(unknown)?;
        debug_assert!(self.holds.contains_key(&key));
        self.holds.remove(&key);
        let pass = ev.result == Some(VerifyResult::Pass);
        let outcome = if pass { Outcome::Allow } else { Outcome::Deny };
        if let Some(r) = self.records.get_mut(key).filter(|r| !r.is_signal()) {
            r.outcome = outcome;
            if self.tracking {
                let r = *r;
                self.record_changes.push((key, r, now.unix_secs()));
            }
        }
        if self.tracking {
            self.hold_changes.push((key, None));
        }
        if pass {
            let subject = Subject {
                decision: Some(Outcome::Hold),
                ..Subject::request(&held)
            };
            self.history.record(rules, &subject, Phase::Released, now);
            self.complete_sim_change(&held);
        }
        Ok(())
    }
}

/// The outcome, matched rules and matched shadow rules of `subject` under
/// `rules`, given the entity states its kind's plan reads.
fn evaluate_with(
    rules: &CompiledRules,
    subject: &Subject<'_>,
    facts: &Facts<'_>,
) -> (Outcome, u128, u128) {
    let Some(plan) = rules.plans.get(usize::from(subject.kind.0)) else {
        return (Outcome::Allow, 0, 0);
    };
    let (mut matched, mut shadow) = (0u128, 0u128);
    let (mut deny, mut allow, mut hold) = (false, false, false);
    for ((i, cond), need) in plan.rules.iter().zip(&plan.needs) {
        if let Some((slot, bits)) = *need
            && facts.present(slot) & bits == 0
        {
            continue;
        }
        let (i, r) = (usize::from(*i), &rules.rules[usize::from(*i)]);
        if !truth(cond, subject, &rules.queries, facts) {
            continue;
        }
        if r.shadow {
            shadow |= 1 << i;
            continue;
        }
        matched |= 1 << i;
        match r.action {
            Action::Deny => deny = true,
            Action::Allow => allow = true,
            Action::Hold => hold = true,
        }
    }
    (crate::rules::outcome_of(deny, allow, hold), matched, shadow)
}

fn list_error(e: ListError, ev: &Event) -> ContractError {
    let field = match e {
        ListError::Full { .. } | ListError::Undeclared { .. } => "list",
        ListError::WrongType { .. } => "value",
    };
    let mut err = ContractError::new(ErrorCode::InvalidValue, Some(field), e.to_string());
    err.id.clone_from(&ev.id);
    err
}

/// Verification methods of the matched hold rules, in order, without repeats.
pub fn verify_methods(rules: &CompiledRules, matched: u128) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for (i, r) in rules.rules.iter().enumerate() {
        if matched & (1 << i) == 0 || r.action != Action::Hold {
            continue;
        }
        for m in &r.verify {
            let name = rules.methods[*m as usize].as_str();
            if !out.contains(&name) {
                out.push(name);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{AtRule, parse_line};

    fn engine(records_max: usize) -> Engine {
        Engine::with_limits(
            Arc::new(CompiledRules::default_rules()),
            EngineLimits {
                decision_records_max: records_max,
                ..EngineLimits::default()
            },
        )
    }

    fn swap(id: &str, msisdn: &str, at: &str) -> Event {
        parse_line(
            &format!(
                r#"{{"id":"{id}","kind":"sim_swap","at":"{at}","msisdn":"{msisdn}","account":"A{}","iccid":"8944110000000000008"}}"#,
                &msisdn[1..]
            ),
            AtRule::Required,
        )
        .expect("valid swap")
    }

    fn run(e: &mut Engine, ev: &Event) -> Answer {
        e.handle(ev, ev.at.expect("at"))
    }

    fn verification(reference: &str, result: &str, at: &str) -> Event {
        parse_line(
            &format!(
                r#"{{"kind":"verification","ref":"{reference}","result":"{result}","at":"{at}"}}"#
            ),
            AtRule::Required,
        )
        .expect("valid verification")
    }

    /// An engine holding at most `max` requests.
    fn holding(max: usize) -> Engine {
        Engine::with_limits(
            Arc::new(CompiledRules::default_rules()),
            EngineLimits {
                holds_pending_max: max,
                ..EngineLimits::default()
            },
        )
    }

    /// `n` held requests, each a second SIM swap on its own line (numbered
    /// from `first`) a minute after the first.
    fn hold_swaps(e: &mut Engine, first: u32, n: u32) -> Vec<Event> {
        let mut held = Vec::new();
        for i in first..first + n {
            let line = format!("+44770090{i:04}");
            run(e, &swap(&format!("f{i}"), &line, "2026-03-01T10:00:00Z"));
            let h = swap(&format!("h{i}"), &line, "2026-03-01T10:01:00Z");
            assert!(matches!(run(e, &h), Answer::Decision(d) if d.outcome == Outcome::Hold));
            held.push(h);
        }
        held
    }

    /// Record keys under a service's secret differ from replay's and from
    /// another secret's, and change no answer.
    #[test]
    fn keyed_record_keys_change_no_answer() {
        let a = FingerprintKey(*b"service-secret-a");
        let b = FingerprintKey(*b"service-secret-b");
        let (sa, sb) = (id_secret(&a), id_secret(&b));
        assert!(sa.is_some() && sa != sb);
        assert_eq!(id_secret(&FingerprintKey::REPLAY), None);
        assert_ne!(IdKey::of("r1", sa.as_ref()), IdKey::of("r1", None));
        assert_ne!(IdKey::of("r1", sa.as_ref()), IdKey::of("r1", sb.as_ref()));
        let rules = Arc::new(CompiledRules::default_rules());
        let mut plain = Engine::new(rules.clone());
        let mut keyed = Engine::with_key(rules, EngineLimits::default(), a);
        let cfg = crate::traffic::Config {
            subscribers: 300,
            ..crate::traffic::Config::default()
        };
        for ev in crate::traffic::Generator::new(cfg).take(5_000) {
            let at = ev.at.expect("generated events carry at");
            assert_eq!(plain.handle(&ev, at), keyed.handle(&ev, at));
            // A retry answers the same way under both.
            if ev.kind.is_decision() {
                assert_eq!(plain.handle(&ev, at), keyed.handle(&ev, at));
            }
        }
    }

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

    #[test]
    fn records_are_bounded_and_holds_outlive_them() {
        let mut e = engine(4);
        // A held request: a second swap on the same line within 30 days.
        let first = swap("h0", "+447700900001", "2026-03-01T10:00:00Z");
        let held = swap("h1", "+447700900001", "2026-03-01T10:01:00Z");
        run(&mut e, &first);
        assert!(matches!(run(&mut e, &held), Answer::Decision(d) if d.outcome == Outcome::Hold));
        for i in 0..20 {
            let ev = swap(
                &format!("r{i}"),
                &format!("+4477009010{i:02}"),
                "2026-03-01T11:00:00Z",
            );
            run(&mut e, &ev);
        }
        // Early records were forgotten: the same id with other content is
        // decided afresh instead of conflicting.
        let reused = swap("r0", "+447700909999", "2026-03-01T12:00:00Z");
        assert!(matches!(run(&mut e, &reused), Answer::Decision(d) if !d.retry));
        // The pending hold is still known: its retry answers as before, and
        // a verification releases it.
        assert!(
            matches!(run(&mut e, &held), Answer::Decision(d) if d.retry && d.outcome == Outcome::Hold)
        );
        let pass = verification("h1", "pass", "2026-03-01T12:00:00Z");
        assert!(matches!(run(&mut e, &pass), Answer::Signal { .. }));
        assert!(matches!(run(&mut e, &held), Answer::Decision(d) if d.outcome == Outcome::Allow));
    }

    #[test]
    fn the_oldest_pending_hold_expires_as_a_deny() {
        let mut e = holding(2);
        let held = hold_swaps(&mut e, 200, 3);
        assert_eq!(e.holds_pending(), 2);
        assert!(
            matches!(run(&mut e, &held[0]), Answer::Decision(d) if d.retry && d.outcome == Outcome::Deny)
        );
        assert!(
            matches!(run(&mut e, &held[2]), Answer::Decision(d) if d.retry && d.outcome == Outcome::Hold)
        );
    }

    /// At the limit the oldest sixteenth of pending holds expire at once,
    /// oldest first; the others stay pending.
    #[test]
    fn pending_holds_expire_in_batches_oldest_first() {
        let mut e = holding(32);
        let held = hold_swaps(&mut e, 300, 33);
        // The 33rd hold found 32 pending: the two oldest expired.
        assert_eq!(e.holds_pending(), 31);
        for (i, h) in held.iter().enumerate() {
            let want = if i < 2 { Outcome::Deny } else { Outcome::Hold };
            assert!(
                matches!(run(&mut e, h), Answer::Decision(d) if d.retry && d.outcome == want),
                "hold {i}"
            );
        }
    }

    /// A hold's place in the expiry order belongs to that hold: an id held,
    /// released, forgotten and held again waits its own turn.
    #[test]
    fn a_reused_id_held_again_waits_its_own_turn() {
        let mut e = Engine::with_limits(
            Arc::new(CompiledRules::default_rules()),
            EngineLimits {
                decision_records_max: 2,
                holds_pending_max: 2,
            },
        );
        let at = "2026-03-01T10:01:00Z";
        run(&mut e, &swap("a0", "+447700900401", "2026-03-01T10:00:00Z"));
        let first = swap("x", "+447700900401", at);
        assert!(matches!(run(&mut e, &first), Answer::Decision(d) if d.outcome == Outcome::Hold));
        let pass = verification("x", "pass", "2026-03-01T10:02:00Z");
        assert!(matches!(run(&mut e, &pass), Answer::Signal { .. }));
        // Enough other requests that the record of "x" is forgotten.
        for i in 0..6 {
            run(
                &mut e,
                &swap(&format!("o{i}"), &format!("+4477009005{i:02}"), at),
            );
        }
        // "y" is held, then "x" again (other content, decided afresh).
        run(&mut e, &swap("c0", "+447700900403", "2026-03-01T10:00:00Z"));
        let y = swap("y", "+447700900403", "2026-03-01T10:03:00Z");
        assert!(matches!(run(&mut e, &y), Answer::Decision(d) if d.outcome == Outcome::Hold));
        run(&mut e, &swap("b0", "+447700900402", "2026-03-01T10:00:00Z"));
        let again = swap("x", "+447700900402", "2026-03-01T10:03:00Z");
        assert!(
            matches!(run(&mut e, &again), Answer::Decision(d) if !d.retry && d.outcome == Outcome::Hold)
        );
        // A third hold finds the limit of two: the oldest pending one, "y",
        // expires; "x", held after it, stays pending.
        run(&mut e, &swap("d0", "+447700900404", "2026-03-01T10:00:00Z"));
        let z = swap("z", "+447700900404", "2026-03-01T10:03:00Z");
        assert!(matches!(run(&mut e, &z), Answer::Decision(d) if d.outcome == Outcome::Hold));
        assert_eq!(e.holds_pending(), 2);
        assert!(
            matches!(run(&mut e, &again), Answer::Decision(d) if d.retry && d.outcome == Outcome::Hold)
        );
        let verify_y = verification("y", "pass", "2026-03-01T10:04:00Z");
        assert!(
            matches!(run(&mut e, &verify_y), Answer::Error(err) if err.code == ErrorCode::UnknownRef),
            "y expired"
        );
    }

    /// A held SIM change carrying an IMSI with leading zeros, released by a
    /// passed verification, sets the line's expected IMSI from the held
    /// request's canonical form: the network then showing that SIM raises
    /// no alert, and another SIM does.
    #[test]
    fn a_released_hold_sets_the_expected_imsi_it_carried() {
        let mut e = engine(1000);
        run(&mut e, &swap("s0", "+447700900601", "2026-03-01T10:00:00Z"));
        let line = r#"{"id":"s1","kind":"sim_swap","at":"2026-03-01T10:01:00Z","msisdn":"+447700900601","account":"A447700900601","iccid":"8944110000000000008","imsi":"00101000000001"}"#;
        let held = parse_line(line, AtRule::Required).expect("valid swap");
        assert!(matches!(run(&mut e, &held), Answer::Decision(d) if d.outcome == Outcome::Hold));
        let pass = verification("s1", "pass", "2026-03-01T10:02:00Z");
        assert!(matches!(run(&mut e, &pass), Answer::Signal { .. }));
        let seen = |imsi: &str, at: &str| {
            parse_line(
                &format!(
                    r#"{{"kind":"device_seen","at":"{at}","msisdn":"+447700900601","imsi":"{imsi}","imei":"356938035643809"}}"#
                ),
                AtRule::Required,
            )
            .expect("valid device_seen")
        };
        let same = seen("00101000000001", "2026-03-01T10:03:00Z");
        assert!(matches!(
            run(&mut e, &same),
            Answer::Signal { alert: None, .. }
        ));
        let other = seen("001010000000002", "2026-03-01T10:04:00Z");
        assert!(matches!(
            run(&mut e, &other),
            Answer::Signal { alert: Some(_), .. }
        ));
    }

    #[test]
    fn pruning_changes_no_answer() {
        let rules = Arc::new(CompiledRules::default_rules());
        let (mut plain, mut pruned) = (Engine::new(rules.clone()), Engine::new(rules));
        let cfg = crate::traffic::Config {
            subscribers: 300,
            mean_gap_ms: 60_000,
            ..crate::traffic::Config::default()
        };
        for (i, ev) in crate::traffic::Generator::new(cfg).take(30_000).enumerate() {
            let at = ev.at.expect("generated events carry at");
            assert_eq!(plain.handle(&ev, at), pruned.handle(&ev, at), "event {i}");
            if i % 97 == 0 {
                pruned.prune(at);
            }
        }
        assert!(pruned.history().approx_bytes() < plain.history().approx_bytes());
    }

    /// The per-kind plans (conditions specialized to the kind, each rule's
    /// need, only the entities a kind reads) decide exactly as each rule's
    /// compiled condition does, on traffic with many attack stories, for the
    /// default ruleset and the fifty-rule benchmark set. (The compiled
    /// conditions already hold the fused comparisons; the replay cases, with
    /// their hand-written answers, check those.)
    #[test]
    fn plans_decide_as_the_rules_as_written() {
        let fifty = include_str!("../../benches/data/fifty.rules");
        let sets = [
            CompiledRules::default_rules(),
            CompiledRules::compile("fifty.rules", fifty, &crate::rules::Limits::default())
                .expect("the fifty-rule set compiles"),
        ];
        for rules in sets {
            let rules = Arc::new(rules);
            let mut e = Engine::new(rules.clone());
            let cfg = crate::traffic::Config {
                subscribers: 200,
                attacks_per_10k: 800,
                ..crate::traffic::Config::default()
            };
            let mut fired = 0u128;
            for ev in crate::traffic::Generator::new(cfg).take(20_000) {
                let at = ev.at.expect("generated events carry at");
                if ev.kind.is_decision() {
                    let subject = Subject::request(&ev);
                    let facts = e.state.history.facts(&rules, &[u32::MAX; 5], &subject, at);
                    let mut matched = 0u128;
                    for (i, r) in rules.rules.iter().enumerate() {
                        if truth(&r.cond, &subject, &rules.queries, &facts) {
                            matched |= 1 << i;
                        }
                    }
                    let (_, m, s) = e.evaluate(&ev, at);
                    assert_eq!(m | s, matched, "{ev:?}");
                    fired |= matched;
                }
                e.handle(&ev, at);
            }
            assert!(fired.count_ones() >= 10, "most rules fire: {fired:b}");
        }
    }

    #[test]
    fn a_decision_retry_changes_no_history() {
        let mut e = engine(1000);
        let a = swap("a", "+447700900002", "2026-03-01T10:00:00Z");
        run(&mut e, &a);
        let before = e.history().approx_bytes();
        let again = swap("a", "+447700900002", "2026-03-02T10:00:00Z");
        assert!(
            matches!(run(&mut e, &again), Answer::Decision(d) if d.retry && d.outcome == Outcome::Allow)
        );
        assert_eq!(e.history().approx_bytes(), before);
        // A different swap on the line within 30 days is held: the first
        // swap's history is there exactly once.
        let b = swap("b", "+447700900002", "2026-03-02T10:00:00Z");
        assert!(matches!(run(&mut e, &b), Answer::Decision(d) if d.outcome == Outcome::Hold));
    }

    fn compiled(file: &str, src: &str) -> Arc<CompiledRules> {
        let rules = CompiledRules::compile(file, src, &crate::rules::Limits::default());
        Arc::new(rules.unwrap_or_else(|e| panic!("{file}: {e:?}\n{src}")))
    }

    fn event(line: &str) -> Event {
        parse_line(line, AtRule::Required).unwrap_or_else(|e| panic!("{line}: {e:?}"))
    }

    fn decided(a: &Answer) -> Decided {
        match a {
            Answer::Decision(d) => *d,
            other => panic!("not a decision: {other:?}"),
        }
    }

    /// The names of the rules in `bits` that `keep` admits, sorted: how two
    /// rulesets with the same rules in another order compare.
    fn names(rules: &CompiledRules, bits: u128, keep: &dyn Fn(&str) -> bool) -> Vec<String> {
        let mut out: Vec<String> = (0..rules.rules.len())
            .filter(|i| bits & (1 << i) != 0)
            .map(|i| rules.rules[i].name.clone())
            .filter(|n| keep(n))
            .collect();
        out.sort_unstable();
        out
    }

    /// A rules source split into what comes before the first rule (label,
    /// lists, comments) and one block of text per rule, in order.
    fn rule_blocks(src: &str) -> (String, Vec<String>) {
        let mut head = String::new();
        let mut blocks: Vec<String> = Vec::new();
        for line in src.lines() {
            if line.starts_with("rule ") {
                blocks.push(String::new());
            }
            let into = blocks.last_mut().unwrap_or(&mut head);
            into.push_str(line);
            into.push('\n');
        }
        (head, blocks)
    }

    /// A new threshold on series the current ruleset already keeps: nothing
    /// is walked, and the next decision reads the history kept before the
    /// reload with the new threshold, as an engine that ran the new rules
    /// from the start does.
    #[test]
    fn a_changed_threshold_reads_the_history_kept_before() {
        let old = compiled("default.rules", crate::rules::DEFAULT_RULES);
        let src = crate::rules::DEFAULT_RULES.replace(
            "+ count(port_out on account within 1h where pin_ok is false) >= 3",
            "+ count(port_out on account within 1h where pin_ok is false) >= 2",
        );
        assert_ne!(src, crate::rules::DEFAULT_RULES);
        let new = compiled("default.rules", &src);
        let mut e = Engine::new(old.clone());
        let mut fresh = Engine::new(new.clone());
        for t in ["10:00", "10:05"] {
            let failure = event(&format!(
                r#"{{"kind":"auth_failure","at":"2026-03-01T{t}:00Z","account":"A1"}}"#
            ));
            run(&mut e, &failure);
            run(&mut fresh, &failure);
        }
        let port = event(
            r#"{"id":"p1","kind":"port_out","at":"2026-03-01T10:10:00Z","msisdn":"+447700900001","account":"A1","pin_ok":true}"#,
        );
        let at = port.at.expect("at");
        assert_eq!(
            e.evaluate(&port, at).0,
            Outcome::Allow,
            "two failures of three"
        );
        let done = e.load_rules(new.clone()).expect("reload");
        assert_eq!(
            done,
            Reloaded {
                ruleset: 1,
                rules_changed: true,
                series_kept: old.series.len(),
                ..Reloaded::default()
            },
            "same series, same numbers: nothing walked"
        );
        assert_eq!(e.current().hash, new.hash);
        let d = decided(&run(&mut e, &port));
        assert_eq!((d.outcome, d.ruleset), (Outcome::Hold, 1));
        assert_eq!(names(&new, d.matched, &|_| true), ["auth_failures_hold"]);
        assert_eq!(
            run(&mut fresh, &port),
            Answer::Decision(Decided { ruleset: 0, ..d })
        );
    }

    /// The property a reload keeps: after deciding half a trace under
    /// ruleset A and reloading to B, the engine decides the rest exactly as
    /// an engine that ran B from the start, when B's series all exist in
    /// A (and A's decisions, so A's history, are B's). Here A is the
    /// default or the fifty-rule set plus a shadow rule with a series of
    /// its own, and B is A's rules in another order (so its series are
    /// numbered otherwise) without that rule (its series' history goes)
    /// and without some other shadow rules; for some seeds B also has a
    /// shadow rule reading a series A lacks put first: it starts empty,
    /// and only the rules reading shared series are compared. Rules are
    /// compared by name, since their numbers differ.
    #[test]
    fn a_reload_decides_as_an_engine_that_ran_the_new_rules_throughout() {
        let fifty = include_str!("../../benches/data/fifty.rules");
        let mut renumbered = 0;
        for seed in 1..=6u64 {
            let src = format!(
                "{}\n{}",
                if seed % 2 == 0 {
                    crate::rules::DEFAULT_RULES
                } else {
                    fifty
                },
                // A series of A's own: B drops it and its history.
                "rule a_only shadow hold verify analyst_review\n  when distinct(imei of device_seen on line within 6h) >= 3\n",
            );
            let a = compiled("a.rules", &src);
            let (head, mut blocks) = rule_blocks(&src);
            assert_eq!(blocks.len(), a.rules.len());
            let mut rng = crate::traffic::Rng::new(seed);
            let mut i = 0;
            blocks.retain(|_| {
                i += 1;
                let r = &a.rules[i - 1];
                !(r.name == "a_only" || r.shadow && rng.chance(500))
            });
            for i in (1..blocks.len()).rev() {
                // Invariant: below(i + 1) is at most i.
                blocks.swap(i, usize::try_from(rng.below(i as u64 + 1)).expect("fits"));
            }
            let probe = seed % 3 == 0;
            if probe {
                blocks.insert(
                    0,
                    "rule probe shadow hold verify analyst_review\n  when count(lock on account within 2h) >= 1\n".into(),
                );
            }
            let b = compiled("b.rules", &(head + &blocks.concat()));
            let map = SeriesMap::between(&a.series, &b.series);
            assert_eq!(map.started_empty(), usize::from(probe), "seed {seed}");
            assert!(map.dropped() >= 1, "seed {seed}");
            renumbered += usize::from(
                map.old_to_new
                    .iter()
                    .flatten()
                    .enumerate()
                    .any(|(i, n)| usize::from(*n) != i),
            );
            // Rules of B that read only series A kept: all but the probe.
            let shared = |name: &str| name != "probe";

            let (mut mixed, mut fresh) = (Engine::new(a.clone()), Engine::new(b.clone()));
            let cfg = crate::traffic::Config {
                seed,
                subscribers: 200,
                attacks_per_10k: 800,
                mean_gap_ms: [2_000, 60_000, 600_000][(seed % 3) as usize],
                ..crate::traffic::Config::default()
            };
            let events: Vec<Event> = crate::traffic::Generator::new(cfg).take(6_000).collect();
            let (mut decisions, mut holds) = (0, 0);
            for (i, ev) in events.iter().enumerate() {
                if i == events.len() / 2 {
                    let done = mixed.load_rules(b.clone()).expect("reload");
                    assert_eq!(done.ruleset, 1);
                    assert_eq!(done.series_started_empty, usize::from(probe));
                    assert!(done.entities_walked > 0 && done.entries_dropped > 0);
                }
                let at = ev.at.expect("generated events carry at");
                let (m, f) = (mixed.handle(ev, at), fresh.handle(ev, at));
                let (Answer::Decision(dm), Answer::Decision(df)) = (&m, &f) else {
                    assert_eq!(m, f, "seed {seed}, event {i}: {ev:?}");
                    continue;
                };
                let rm = mixed.ruleset(dm.ruleset);
                let rf = fresh.ruleset(df.ruleset);
                let seen = |d: &Decided, r: &CompiledRules| {
                    (
                        d.outcome,
                        d.retry,
                        names(r, d.matched, &shared),
                        names(r, d.shadow, &|n| {
                            shared(n) && b.rules.iter().any(|x| x.name == n)
                        }),
                    )
                };
                assert_eq!(seen(dm, rm), seen(df, rf), "seed {seed}, event {i}: {ev:?}");
                decisions += 1;
                holds += usize::from(dm.outcome == Outcome::Hold);
            }
            assert!(
                decisions > 500 && holds > 5,
                "seed {seed}: {decisions} decisions, {holds} holds"
            );
        }
        assert!(renumbered >= 4, "most seeds renumber series: {renumbered}");
    }

    /// A list file with a bad value, or naming an undeclared list, or a
    /// list whose type changed and that no file gives: the reload is
    /// refused and nothing changes, not the rules, not history, not lists.
    #[test]
    fn a_failed_list_validation_changes_nothing() {
        let old = compiled("default.rules", crate::rules::DEFAULT_RULES);
        let new = compiled(
            "reordered.rules",
            &crate::rules::DEFAULT_RULES.replace(
                "\nrule account_lock",
                "\nrule first_probe deny when count(lock on account within 2h) >= 9\nrule account_lock",
            ),
        );
        let mut e = Engine::new(old.clone());
        let (blocked, other) = ("356938035643809", "490154203237518");
        e.replace_list("blocked_imei", [blocked]).expect("an imei");
        e.list_add("adhoc", "x").expect("a token list");
        run(&mut e, &swap("s0", "+447700900701", "2026-03-01T10:00:00Z"));
        let with_imei = |id: &str, imei: &str| {
            event(&format!(
                r#"{{"id":"{id}","kind":"sim_swap","at":"2026-03-01T11:00:00Z","msisdn":"+447700900702","account":"A2","iccid":"8944110000000000008","imei":"{imei}"}}"#
            ))
        };
        let at = |ev: &Event| ev.at.expect("at");
        let (b, o) = (with_imei("b", blocked), with_imei("o", other));
        assert_eq!(e.evaluate(&b, at(&b)).0, Outcome::Deny);
        assert_eq!(e.evaluate(&o, at(&o)).0, Outcome::Allow);
        let bytes = e.history().approx_bytes();
        let lines = |ls: &[&str]| list_file_values(ls.iter().copied());
        let file = lines(&["# blocked devices", other, "", "35693803564380x  # typo"]);
        let refused = e.reload(new.clone(), &[("blocked_imei".into(), file)]);
        assert!(
            matches!(&refused, Err(ReloadError::ListValue { list, line: 4, value, error: ListError::WrongType { .. } })
                if list == "blocked_imei" && value == "35693803564380x"),
            "{refused:?}"
        );
        assert!(refused.unwrap_err().to_string().contains("line 4"));
        let undeclared = e.reload(new.clone(), &[("nope".into(), lines(&["x"]))]);
        assert!(
            matches!(&undeclared, Err(ReloadError::UndeclaredList { list, declared }) if list == "nope" && declared == &["blocked_imei"]),
            "{undeclared:?}"
        );
        let retyped = compiled(
            "retyped.rules",
            &crate::rules::DEFAULT_RULES
                .replace("list blocked_imei: imei", "list blocked_imei: token")
                .replace("when imei in list", "when agent in list"),
        );
        let changed = e.load_rules(retyped.clone());
        assert!(
            matches!(&changed, Err(ReloadError::ListTypeChanged { list, values: 1, .. }) if list == "blocked_imei"),
            "{changed:?}"
        );
        assert!(e.replace_list("blocked_imei", [other, "bad"]).is_err());
        assert!(matches!(
            e.replace_list("nope", [other]),
            Err(ListError::Undeclared { .. })
        ));
        // Nothing changed.
        assert_eq!(
            (e.current_index(), e.current().hash.as_str()),
            (0, old.hash.as_str())
        );
        assert_eq!(e.history().approx_bytes(), bytes);
        assert_eq!(e.evaluate(&b, at(&b)).0, Outcome::Deny);
        assert_eq!(e.evaluate(&o, at(&o)).0, Outcome::Allow);
        // The same reload with a good file applies all of it: the list's
        // whole contents are the file's, the undeclared list goes.
        let file = lines(&["# blocked devices", other, ""]);
        let done = e
            .reload(new.clone(), &[("blocked_imei".into(), file)])
            .expect("reload");
        assert_eq!(
            (done.ruleset, done.lists_replaced, done.lists_dropped),
            (1, 1, 1)
        );
        assert_eq!(e.evaluate(&b, at(&b)).0, Outcome::Allow);
        assert_eq!(e.evaluate(&o, at(&o)).0, Outcome::Deny);
        // A type change with the list given by a file is fine.
        let file = lines(&["any-token"]);
        let done = e
            .reload(retyped, &[("blocked_imei".into(), file)])
            .expect("retyped");
        assert_eq!(done.ruleset, 2);
        assert_eq!(e.evaluate(&o, at(&o)).0, Outcome::Allow);
    }

    /// Retries of requests decided before a reload answer exactly as
    /// before, naming the ruleset that decided them; a hold pending across
    /// the reload resolves, and its release is history the new rules read.
    #[test]
    fn retries_and_holds_outlive_a_reload() {
        let old = compiled("default.rules", crate::rules::DEFAULT_RULES);
        let (head, mut blocks) = rule_blocks(crate::rules::DEFAULT_RULES);
        blocks.reverse();
        let new = compiled("reversed.rules", &(head + &blocks.concat()));
        assert!(!SeriesMap::between(&old.series, &new.series).keeps_numbers());
        let mut e = Engine::new(old.clone());
        let held = hold_swaps(&mut e, 800, 2);
        let allowed = swap("a1", "+447700900899", "2026-03-01T10:00:00Z");
        let mut before = vec![decided(&run(&mut e, &allowed))];
        for h in &held {
            before.push(decided(&run(&mut e, h)));
        }
        let done = e.load_rules(new.clone()).expect("reload");
        assert_eq!(
            (done.ruleset, done.series_kept, done.series_dropped),
            (1, old.series.len(), 0)
        );
        assert!(done.entities_walked > 0);
        for (ev, was) in [&allowed, &held[0], &held[1]].into_iter().zip(&before) {
            let d = decided(&run(&mut e, ev));
            assert_eq!(
                d,
                Decided {
                    retry: true,
                    ..*was
                }
            );
            assert_eq!(e.ruleset(d.ruleset).hash, old.hash);
            assert_eq!(e.decision_of(ev.id.as_deref().expect("id")), Some(d));
        }
        assert_eq!(e.holds_pending(), 2);
        // One passes, one fails: each resolves as it would have.
        let pass = verification("h800", "pass", "2026-03-01T10:05:00Z");
        let fail = verification("h801", "fail", "2026-03-01T10:05:00Z");
        assert!(matches!(run(&mut e, &pass), Answer::Signal { .. }));
        assert!(matches!(run(&mut e, &fail), Answer::Signal { .. }));
        assert_eq!(e.holds_pending(), 0);
        let mut out = |ev: &Event| decided(&run(&mut e, ev));
        assert_eq!(
            (out(&held[0]).outcome, out(&held[1]).outcome),
            (Outcome::Allow, Outcome::Deny)
        );
        assert_eq!(out(&held[0]).ruleset, 0);
        // The released swap is a completed SIM change on its line, in the
        // new ruleset's numbering: another swap is held for it.
        let again = swap("h800b", "+447700900800", "2026-03-02T10:00:00Z");
        let d = decided(&run(&mut e, &again));
        assert_eq!((d.outcome, d.ruleset), (Outcome::Hold, 1));
        assert_eq!(names(&new, d.matched, &|_| true), ["repeat_sim_change"]);
    }

    /// Loading the ruleset in use changes nothing; loading one used before
    /// decides under its old index again.
    #[test]
    fn an_equal_ruleset_keeps_its_index() {
        let a = compiled("default.rules", crate::rules::DEFAULT_RULES);
        let b = compiled(
            "b.rules",
            &format!("{}\n# edited\n", crate::rules::DEFAULT_RULES),
        );
        let mut e = Engine::new(a.clone());
        let same = e.load_rules(compiled("default.rules", crate::rules::DEFAULT_RULES));
        assert_eq!(
            same,
            Ok(Reloaded {
                ruleset: 0,
                rules_changed: false,
                series_kept: a.series.len(),
                ..Reloaded::default()
            })
        );
        assert_eq!(e.load_rules(b.clone()).map(|r| r.ruleset), Ok(1));
        assert_eq!(
            e.load_rules(a.clone())
                .map(|r| (r.ruleset, r.rules_changed)),
            Ok((0, true))
        );
        assert_eq!(e.load_rules(b).map(|r| r.ruleset), Ok(1));
        assert_eq!(e.rulesets.len(), 2);
        let d = decided(&run(
            &mut e,
            &swap("x", "+447700900901", "2026-03-01T10:00:00Z"),
        ));
        assert_eq!(d.ruleset, 1);
        // At RULESETS_MAX a new ruleset is refused, changing nothing; one
        // kept still loads.
        e.rulesets.resize(RULESETS_MAX, a.clone());
        let c = compiled(
            "c.rules",
            &format!("{}\n# c\n", crate::rules::DEFAULT_RULES),
        );
        let refused = e.load_rules(c);
        assert_eq!(refused, Err(ReloadError::Rulesets { max: RULESETS_MAX }));
        assert_eq!((e.current_index(), e.rulesets.len()), (1, RULESETS_MAX));
        assert_eq!(e.load_rules(a).map(|r| r.ruleset), Ok(0));
    }

    #[test]
    fn list_file_values_skip_blanks_and_comments() {
        assert_eq!(
            list_file_value("  356938035643809  # a phone"),
            Some("356938035643809")
        );
        assert_eq!(list_file_value("# only a comment"), None);
        assert_eq!(list_file_value("   "), None);
    }
}
