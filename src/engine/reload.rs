//! The rulesets an engine keeps and the switch between them: a reload
//! checks that a ruleset can be kept (an equal one reuses its index, at
//! most [`RULESETS_MAX`] are kept) and makes it decide, laying history out
//! by its series. What a reload did ([`Reloaded`]) and why one was refused
//! ([`ReloadError`]) are declared here too. The list files a reload also
//! replaces are `lists.rs`'s; `Engine::reload` in `mod.rs` checks both
//! before it changes either, so that a reload is all or nothing. This file
//! names no other file of the engine.

use crate::history::{History, ListError, Map, Renumbered};
use crate::rules::{CompiledRules, SeriesMap};
use std::sync::Arc;

/// The most distinct rulesets one engine loads (rulesets): records name the
/// ruleset that decided them in 16 bits. Past it a reload is refused
/// ([`ReloadError::Rulesets`]) and the service must restart; at one reload
/// a minute that is 45 days of edits, each a different ruleset.
pub const RULESETS_MAX: usize = 1 << 16;

/// The rulesets an engine keeps, and which of them decides now: apart
/// from the [`State`](super::state::State) they decide on, so that deciding
/// borrows the current ruleset while it changes the state.
pub(super) struct Rulesets {
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
    pub(super) all: Vec<Arc<CompiledRules>>,
    /// The index of the ruleset that decides now. Invariant: below
    /// `all.len()`.
    pub(super) current: usize,
    /// How states written under an older ruleset are laid out by the
    /// current one, by the older ruleset's index: computed on the first
    /// state read back from it, dropped when the current ruleset changes.
    pub(super) layouts: Map<u32, (Vec<Option<u16>>, Vec<usize>)>,
}

impl Rulesets {
    /// Only `rules`, deciding.
    pub(super) fn new(rules: Arc<CompiledRules>) -> Rulesets {
        Rulesets {
            all: vec![rules],
            current: 0,
            layouts: Map::default(),
        }
    }

    /// The ruleset that decides from now on.
    pub(super) fn current(&self) -> &Arc<CompiledRules> {
        &self.all[self.current]
    }

    /// The index of the ruleset that decides from now on.
    pub(super) fn current_index(&self) -> u32 {
        ruleset_index(self.current)
    }

    /// A ruleset by the index a decision carries; the current one for an
    /// index never given.
    pub(super) fn get(&self, i: u32) -> &CompiledRules {
        self.shared(i)
    }

    /// [`Rulesets::get`], shared: for an answer that outlives the lock.
    pub(super) fn shared(&self, i: u32) -> &Arc<CompiledRules> {
        self.all.get(i as usize).unwrap_or_else(|| self.current())
    }

    /// The index `new` will decide under: that of an equal ruleset kept
    /// (the current one's, most often), else the next one.
    pub(super) fn index_for(&self, new: &CompiledRules) -> Result<usize, ReloadError> {
        if same_ruleset(self.current(), new) {
            return Ok(self.current);
        }
        if let Some(i) = self.all.iter().position(|r| same_ruleset(r, new)) {
            return Ok(i);
        }
        if self.all.len() >= RULESETS_MAX {
            return Err(ReloadError::Rulesets { max: RULESETS_MAX });
        }
        Ok(self.all.len())
    }

    /// Makes the ruleset `new`, to be kept at `index`, the current one,
    /// laying `history` out by its series.
    pub(super) fn switch_rules(
        &mut self,
        new: Arc<CompiledRules>,
        index: usize,
        history: &mut History,
    ) -> Reloaded {
        let old = Arc::clone(self.current());
        if index == self.current {
            return Reloaded {
                ruleset: ruleset_index(index),
                rules_changed: false,
                series_kept: old.series.len(),
                ..Reloaded::default()
            };
        }
        assert!(index <= self.all.len() && index < RULESETS_MAX);
        if index == self.all.len() {
            self.all.push(new);
        }
        // Else the ruleset kept at `index` equals `new`: it stays, `new` goes.
        let new = Arc::clone(&self.all[index]);
        self.layouts.clear();
        let map = SeriesMap::between(&old.series, &new.series);
        let caps_shrink = new.limits.series_items_max < old.limits.series_items_max
            || new.limits.ever_items_max < old.limits.ever_items_max;
        let walked = if map.keeps_numbers() && !caps_shrink {
            Renumbered::default()
        } else {
            history.renumber(&map.old_to_new, &new)
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

    /// Makes `stored` the rulesets kept, in their order, the last one
    /// deciding (see
    /// [`Engine::restore_rulesets`](crate::engine::Engine::restore_rulesets)).
    pub(super) fn restore(&mut self, stored: Vec<Arc<CompiledRules>>) {
        assert!(!stored.is_empty() && stored.len() <= RULESETS_MAX);
        self.current = stored.len() - 1;
        self.all = stored;
        self.layouts.clear();
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
    /// The index of the ruleset that decides now ([`Decided::ruleset`](crate::engine::Decided::ruleset)).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Event;
    use crate::engine::tests::{compiled, event, hold_swaps, run, swap, verification};
    use crate::engine::{Answer, Decided, Engine};
    use crate::rules::Outcome;

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
        assert_eq!(e.rules.all.len(), 2);
        let d = decided(&run(
            &mut e,
            &swap("x", "+447700900901", "2026-03-01T10:00:00Z"),
        ));
        assert_eq!(d.ruleset, 1);
        // At RULESETS_MAX a new ruleset is refused, changing nothing; one
        // kept still loads.
        e.rules.all.resize(RULESETS_MAX, a.clone());
        let c = compiled(
            "c.rules",
            &format!("{}\n# c\n", crate::rules::DEFAULT_RULES),
        );
        let refused = e.load_rules(c);
        assert_eq!(refused, Err(ReloadError::Rulesets { max: RULESETS_MAX }));
        assert_eq!((e.current_index(), e.rules.all.len()), (1, RULESETS_MAX));
        assert_eq!(e.load_rules(a).map(|r| r.ruleset), Ok(0));
    }
}
