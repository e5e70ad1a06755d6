//! The per-request state machine: one valid event in, one answer out. A
//! request is a retry (answered from its record), or is decided by the
//! rules and recorded, and may be put on hold; a signal changes history
//! (a device seen, a verification, a list edit). This is the hot path: its
//! steps live in this file, beside each other, and the small record
//! helpers it calls from `records.rs` are `#[inline]`.
//!
//! The methods are [`State`]'s. Holds expire and verifications resolve
//! through `State` methods declared in `holds.rs`, called as methods, so
//! this file does not import it.

use super::answer::{Alert, Answer, Decided};
use super::lists::list_error;
use super::records::{IdKey, Record, fingerprint};
use super::state::{Held, State};
use crate::contract::{ContractError, ErrorCode, Event, Kind, Timestamp};
use crate::history::{Facts, Phase, SimSeen};
use crate::rules::{Action, CompiledRules, HKind, Outcome, Subject, truth};

impl State {
    /// Handles one valid event at time `now` under `rules`, the ruleset
    /// numbered `ruleset`.
    #[inline]
    pub(super) fn handle(
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

    /// The current decision on the request with `id`, if one is
    /// remembered: what a retry would answer (see `retry`), read without
    /// changing anything. `None` for an unknown id or a signal's.
    pub(super) fn decision_of(&self, id: &str) -> Option<Decided> {
        let key = IdKey::of(id, self.id_secret.as_ref());
        let rec = self.records.get(key).filter(|r| !r.is_signal())?;
        let mut decided = rec.decided();
        if decided.outcome == Outcome::Hold && !self.holds.contains_key(&key) {
            decided.outcome = Outcome::Deny;
        }
        Some(decided)
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

    pub(super) fn complete_sim_change(&mut self, ev: &Event) {
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

    /// What `rules` decide for `ev` at `now`, reading history and changing
    /// nothing: the rules' half of a decision.
    pub(super) fn evaluate(
        &self,
        rules: &CompiledRules,
        ev: &Event,
        now: Timestamp,
    ) -> (Outcome, u128, u128) {
        let subject = Subject::request(ev);
        let Some(plan) = rules.plans.get(usize::from(subject.kind.0)) else {
            return (Outcome::Allow, 0, 0);
        };
        let facts = self.history.facts(rules, &plan.series, &subject, now);
        evaluate_with(rules, &subject, &facts)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Engine;
    use crate::engine::tests::{engine, run, swap};
    use std::sync::Arc;

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
}
