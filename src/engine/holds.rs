//! Requests on hold: their expiry when too many are pending, finding the
//! one a verification names, and the verification that releases or fails
//! it; and the verification methods a hold asks for. Apart from the
//! decision path because a hold outlives its request: it is resolved by a
//! later event, and expires, in its own order.
//!
//! The methods are [`State`]'s (its `holds`, `hold_order` and `hold_seq`
//! fields). The state machine calls them as methods, so it does not import
//! this file; and the held request's type, [`Held`](super::state::Held),
//! is declared in `state.rs` beside the field that keeps it, because
//! `state.rs` names it and this file names `state.rs`: declared here, the
//! two would import each other.

use super::records::IdKey;
use super::state::State;
use crate::contract::{ContractError, ErrorCode, Event, Timestamp, VerifyResult};
use crate::history::Phase;
use crate::rules::{Action, CompiledRules, Outcome, Subject};

impl State {
    /// Makes room for one more hold: at the limit, the oldest sixteenth of
    /// the pending holds become final denies. Their records still say hold;
    /// a retry reads "held but no longer pending" as expired, a deny (see
    /// `retry`).
    pub(super) fn expire_holds(&mut self) {
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

    /// The request pending on hold under `id`, with its key. The key
    /// locates the hold; the held request's own id confirms it.
    pub(super) fn held(&self, id: &str) -> Option<(IdKey, Event)> {
        let key = IdKey::of(id, self.id_secret.as_ref());
        let held = self
            .holds
            .get(&key)
            .and_then(|h| Event::from_canonical(&h.canonical))
            .filter(|h| h.id.as_deref() == Some(id))?;
        Some((key, held))
    }

    /// Resolves the held request a verification names.
    pub(super) fn verify(
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
    use crate::engine::tests::{engine, hold_swaps, run, swap, verification};
    use crate::engine::{Answer, Engine, EngineLimits};
    use std::sync::Arc;

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
}
