//! The decision engine: one valid event in, exactly one answer out.
//!
//! Sans-IO, like quinn-proto: the caller passes the event and the time; the
//! engine reads no clock, opens no file or socket, draws no randomness and
//! spawns nothing. It cannot fail on a valid event: contract errors are
//! stopped at the edge, and the only errors it gives are those that depend
//! on state (`id_conflict`, `unknown_ref`, and a list value it cannot keep).
//!
//! This file is the facade: [`Engine`], whose methods delegate to the file
//! that owns each part, and the re-exports that make the public API
//! `crate::engine::X`. The files, each owning one part:
//!
//! - `answer.rs`: what the engine answers ([`Decided`], [`Alert`],
//!   [`Answer`]).
//! - `limits.rs`: [`EngineLimits`].
//! - `records.rs`: idempotency records, keyed by request id, bounded in
//!   generations, and the keyed content fingerprints ([`FingerprintKey`])
//!   that tell a retry from a conflict.
//! - `state.rs`: the state the engine changes (history, records, holds,
//!   changes for the store) and the held request's type.
//! - `decide.rs`: the per-request state machine, the hot path: a retry, a
//!   decision by the rules, or a signal applied.
//! - `holds.rs`: requests on hold: expiry, lookup, verification, and
//!   [`verify_methods`].
//! - `reload.rs`: the rulesets kept ([`RULESETS_MAX`]) and the switch to a
//!   new one ([`Reloaded`], [`ReloadError`]).
//! - `lists.rs`: list files ([`ListFileValue`], [`list_file_values`]),
//!   staged and checked before a reload, and list edits.
//! - `stored.rs`: the durable store's side: encodings, changes taken and
//!   state admitted.
//!
//! No file imports another in a loop: this file imports its children and
//! none of them imports it. Among the children, what several share lives
//! in a file that names none of its users: `answer.rs`, `limits.rs` and
//! `reload.rs` name no other file, `records.rs` only `answer.rs`,
//! `state.rs` only `records.rs` and `limits.rs`. `State`'s methods are
//! spread over `decide.rs`, `holds.rs` and `stored.rs`, which call each
//! other's as methods, with no import. `Engine::reload` is here, not in
//! `reload.rs`, because it checks the rulesets (`reload.rs`) and the lists
//! (`lists.rs`, which names `reload.rs` for its error) before it changes
//! either.

mod answer;
mod decide;
mod holds;
mod limits;
mod lists;
mod records;
mod reload;
mod state;
pub mod stored;

pub use answer::{Alert, Answer, Decided};
pub use holds::verify_methods;
pub use limits::EngineLimits;
pub use lists::{ListFileValue, list_file_value, list_file_values};
pub use records::FingerprintKey;
pub use reload::{RULESETS_MAX, ReloadError, Reloaded};
pub use stored::{AdmitError, Changes, RECORD_BYTES, record_key};

use crate::contract::{Event, Timestamp};
use crate::history::{EntityId, Facts, History, ListError};
use crate::rules::{CompiledRules, Outcome, Subject};
use lists::{check_carried_lists, replace_list, stage_lists};
use reload::Rulesets;
use state::State;
use std::sync::Arc;

pub struct Engine {
    /// Every distinct ruleset loaded, and the one that decides now
    /// ([`Rulesets`]: why all are kept).
    rules: Rulesets,
    /// Everything else: apart from the rulesets, so that deciding borrows
    /// the current ruleset while it changes the state, without counting a
    /// reference per event.
    state: State,
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
            rules: Rulesets::new(rules),
            state: State::new(&limits, fingerprint_key),
        }
    }

    /// The ruleset that decides from now on.
    pub fn current(&self) -> &Arc<CompiledRules> {
        self.rules.current()
    }

    /// The index of the ruleset that decides from now on: what its
    /// decisions carry in [`Decided::ruleset`].
    pub fn current_index(&self) -> u32 {
        self.rules.current_index()
    }

    /// A ruleset by the index a [`Decided`] carries.
    pub fn ruleset(&self, i: u32) -> &CompiledRules {
        self.rules.get(i)
    }

    /// [`Engine::ruleset`], shared: an answer written after the engine is
    /// released (by an edge, outside the decider's lock) keeps the ruleset
    /// that decided it, even past a reload.
    pub fn ruleset_shared(&self, i: u32) -> Arc<CompiledRules> {
        Arc::clone(self.rules.shared(i))
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
        self.state.decision_of(id)
    }

    /// The request on hold under `id` (in the engine's scoped form), as it
    /// was sent: who made it and through which agent, for the gateway's
    /// check that nobody clears their own hold. `None` when nothing is on
    /// hold under that id.
    pub fn held_request(&self, id: &str) -> Option<Event> {
        self.state.held(id).map(|(_, ev)| ev)
    }

    /// Adds a list value from a file at load time (not an event).
    pub fn list_add(&mut self, list: &str, value: &str) -> Result<(), ListError> {
        self.state
            .history
            .list_add(self.rules.current(), list, value)
    }

    /// Replaces the whole contents of list `name` with `values`, each
    /// parsed as the type the current ruleset declares for it. Every value
    /// is checked first: on an error nothing changes.
    pub fn replace_list<'v>(
        &mut self,
        name: &str,
        values: impl IntoIterator<Item = &'v str>,
    ) -> Result<(), ListError> {
        replace_list(&mut self.state.history, self.rules.current(), name, values)
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
    ///
    /// [`SeriesMap`]: crate::rules::SeriesMap
    pub fn reload(
        &mut self,
        new: Arc<CompiledRules>,
        lists: &[(String, Vec<ListFileValue>)],
    ) -> Result<Reloaded, ReloadError> {
        let index = self.rules.index_for(&new)?;
        let staged = stage_lists(&new, lists)?;
        check_carried_lists(&self.state.history, self.rules.current(), &new, &staged)?;
        // Everything is checked: from here on nothing fails, so all of the
        // reload applies.
        let history = &mut self.state.history;
        let mut done = self.rules.switch_rules(new, index, history);
        done.lists_replaced = staged.len();
        for l in staged {
            history.replace_list(l);
        }
        done.lists_dropped = history.drop_undeclared_lists(self.rules.current());
        Ok(done)
    }

    /// Makes `stored` the rulesets kept, in their order (index `i` is
    /// `stored[i]`), the last one deciding: an engine over a store starts
    /// with the rulesets its records name, before any event, then loads
    /// the configured rules with [`Engine::reload`].
    pub fn restore_rulesets(&mut self, stored: Vec<Arc<CompiledRules>>) {
        self.rules.restore(stored);
    }

    /// Drops windowed history that no loaded rule can read any more.
    pub fn prune(&mut self, now: Timestamp) {
        self.state.history.prune(self.rules.current(), now);
    }

    /// Reads, changing nothing, the memory that handling `ev` will read
    /// first: its id's record and the states of the entities it names. A
    /// caller holding several events calls this for each before handling
    /// them in order: the cache misses of their lookups, each a wait of a
    /// few hundred cycles, overlap instead of coming one after another
    /// (replay does this for batches of lines). Answers never depend on it.
    pub fn prefetch(&self, ev: &Event) {
        self.state.prefetch(ev);
    }

    /// Sizes the tables for about `events` more events, so that they do
    /// not grow while a known input is decided: each growth moves every
    /// entry, a cache miss apiece. Room for a record per event (up to
    /// `decision_records_max`), and for a line and an account per ten
    /// events, a trace's usual share of subscribers. Answers never depend
    /// on it.
    pub fn reserve(&mut self, events: usize) {
        self.state.reserve(events);
    }

    /// Handles one valid event at time `now`.
    pub fn handle(&mut self, ev: &Event, now: Timestamp) -> Answer {
        let index = self.rules.current;
        self.state
            .handle(&self.rules.all[index], index as u32, ev, now)
    }

    /// What the current rules decide for `ev` at `now`, reading history and
    /// changing nothing: the rules' half of a decision. (History is laid out
    /// by the current ruleset's series: a reload renumbers it.)
    pub fn evaluate(&self, ev: &Event, now: Timestamp) -> (Outcome, u128, u128) {
        self.state.evaluate(self.rules.current(), ev, now)
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

/// The durable store's side (see [`stored`]).
impl Engine {
    /// Starts noting what handled events change, for
    /// [`Engine::take_changes`]: a service with a store calls it once,
    /// before the first event.
    pub fn track_changes(&mut self) {
        self.state.track_changes();
    }

    /// Moves what handled events changed since the last call into `out`:
    /// records and holds in bytes, the entities and list values by name
    /// (encode their states with [`Engine::encode_entity`]).
    pub fn take_changes(&mut self, out: &mut Changes) {
        self.state.take_changes(out);
    }

    /// Appends the state of `id`, as it is now, to `out`; `false` when it
    /// holds nothing (store a deletion).
    pub fn encode_entity(&self, id: &EntityId, out: &mut Vec<u8>) -> bool {
        self.state.history.encode(id, self.current_index(), out)
    }

    /// Bytes the state of `id` holds in memory, if it is there.
    pub fn entity_bytes(&self, id: &EntityId) -> Option<usize> {
        self.state.history.entity_bytes(id)
    }

    /// Drops the state of `id` from memory; the store must hold it as it
    /// is (see `gateway::cache`). Returns whether it was there.
    pub fn evict_entity(&mut self, id: &EntityId) -> bool {
        self.state.history.evict(id)
    }

    /// Whether the state of `id` is in memory.
    pub fn is_resident(&self, id: &EntityId) -> bool {
        self.state.history.is_resident(id)
    }

    /// Puts a record read back from the store in place, unless the id has
    /// one in memory (which is never older).
    pub fn admit_record(&mut self, key: [u8; 16], bytes: &[u8]) -> Result<(), AdmitError> {
        self.state.admit_record(key, bytes, self.rules.all.len())
    }

    /// Puts an entity state read back from the store in place (laid out by
    /// the current ruleset), unless the entity is in memory.
    pub fn admit_entity(&mut self, bytes: &[u8]) -> Result<(), AdmitError> {
        self.rules.admit_entity(&mut self.state.history, bytes)
    }

    /// A stored entity state pruned at `now` by the current rules: `None`
    /// when nothing in it has expired, else its new encoding (empty when
    /// nothing is left: delete it). Changes nothing in memory.
    pub fn prune_encoded(
        &mut self,
        bytes: &[u8],
        now: Timestamp,
    ) -> Result<Option<Vec<u8>>, AdmitError> {
        self.rules.prune_encoded(bytes, now)
    }

    /// The entity a stored state belongs to.
    pub fn entity_of(bytes: &[u8]) -> Result<EntityId, AdmitError> {
        stored::entity_of(bytes)
    }

    /// Prunes one part of the states in memory (see
    /// [`crate::history::History::prune_part`]).
    pub fn prune_part(&mut self, now: Timestamp, part: usize, parts: usize) {
        let rules = self.rules.current();
        self.state.history.prune_part(rules, now, part, parts);
    }

    /// Puts a pending hold read back from the store in place (at start,
    /// before any event). Call [`Engine::holds_admitted`] after the last.
    pub fn admit_hold(&mut self, key: [u8; 16], bytes: &[u8]) -> Result<(), AdmitError> {
        self.state.admit_hold(key, bytes)
    }

    /// Orders the holds [`Engine::admit_hold`] put in place, oldest first,
    /// so that the oldest expire first as before the restart.
    pub fn holds_admitted(&mut self) {
        self.state.holds_admitted();
    }

    /// The entities handling `ev` reads or changes that are not in memory:
    /// those it names and, for a verification of a pending hold, those the
    /// held request names.
    pub fn missing(&self, ev: &Event) -> Vec<EntityId> {
        self.state.missing(ev)
    }

    /// Puts a list value read back from the store in place (at start).
    pub fn admit_list_value(&mut self, list: &str, value: u128) {
        self.state.history.admit_list_value(list, value);
    }

    /// Rulesets kept (every index below this names one).
    pub fn rulesets_len(&self) -> usize {
        self.rules.all.len()
    }
}

/// Helpers the tests of every file of the engine share, and the tests of
/// the facade itself.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{AtRule, parse_line};

    pub(super) fn engine(records_max: usize) -> Engine {
        Engine::with_limits(
            Arc::new(CompiledRules::default_rules()),
            EngineLimits {
                decision_records_max: records_max,
                ..EngineLimits::default()
            },
        )
    }

    pub(super) fn swap(id: &str, msisdn: &str, at: &str) -> Event {
        parse_line(
            &format!(
                r#"{{"id":"{id}","kind":"sim_swap","at":"{at}","msisdn":"{msisdn}","account":"A{}","iccid":"8944110000000000008"}}"#,
                &msisdn[1..]
            ),
            AtRule::Required,
        )
        .expect("valid swap")
    }

    pub(super) fn run(e: &mut Engine, ev: &Event) -> Answer {
        e.handle(ev, ev.at.expect("at"))
    }

    pub(super) fn verification(reference: &str, result: &str, at: &str) -> Event {
        parse_line(
            &format!(
                r#"{{"kind":"verification","ref":"{reference}","result":"{result}","at":"{at}"}}"#
            ),
            AtRule::Required,
        )
        .expect("valid verification")
    }

    /// `n` held requests, each a second SIM swap on its own line (numbered
    /// from `first`) a minute after the first.
    pub(super) fn hold_swaps(e: &mut Engine, first: u32, n: u32) -> Vec<Event> {
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

    pub(super) fn compiled(file: &str, src: &str) -> Arc<CompiledRules> {
        let rules = CompiledRules::compile(file, src, &crate::rules::Limits::default());
        Arc::new(rules.unwrap_or_else(|e| panic!("{file}: {e:?}\n{src}")))
    }

    pub(super) fn event(line: &str) -> Event {
        parse_line(line, AtRule::Required).unwrap_or_else(|e| panic!("{line}: {e:?}"))
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
}
