//! The rules language that fraud teams write: lexer, parser, type checker and
//! compiler, with a limit on everything an analyst controls.
//!
//! A ruleset compiles once at load into [`CompiledRules`]: typed condition
//! trees plus the history plan they imply (which events to keep per line,
//! account, agent, device or store, and for how long). No rule needs state
//! written for it in Rust. `docs/rules.md` is the language reference.
//!
//! # Untrusted input
//! Rules files are written by people, so compilation never panics: every
//! error names the file, line and column, says what is wrong and gives a hint.
//! The limits in [`Limits`] bound source size, rule count, nesting depth,
//! set sizes, windows and the history each entity keeps.

mod compile;
mod compiled;
mod error;
mod lexer;
mod limits;
mod paired;
mod parser;
pub mod program;

pub use compiled::{CompiledRules, DEFAULT_RULES, Plan};
pub use error::Pos;
pub use error::{RuleError, render_errors};
pub use limits::{Limits, RULES_MAX_HARD};
pub use paired::{Paired, Verdict};
pub use program::*;

#[cfg(test)]
mod tests {
    use super::*;

    fn err(src: &str) -> RuleError {
        CompiledRules::compile("t.rules", src, &Limits::default())
            .unwrap_err()
            .remove(0)
    }

    /// A ruleset can stop a request only through a deny or hold rule that
    /// is not shadow: the default can, an empty one or one of shadow rules
    /// alone cannot.
    #[test]
    fn only_live_deny_or_hold_rules_can_stop_a_request() {
        let default = CompiledRules::default_rules();
        assert!(default.can_stop());
        let empty = CompiledRules::compile("empty.rules", "# nothing\n", &Limits::default())
            .expect("an empty ruleset compiles");
        assert!(!empty.can_stop());
        let mut shadowed = default.clone();
        shadowed.rules.iter_mut().for_each(|r| r.shadow = true);
        assert!(!shadowed.can_stop());
    }

    #[test]
    fn default_ruleset_compiles() {
        let r = CompiledRules::default_rules();
        assert_eq!(r.rules.len(), 13);
        assert_eq!(r.label, "default");
    }

    #[test]
    fn errors_have_positions_and_hints() {
        let e = err("rule a deny when bogus == 1");
        assert_eq!((e.pos.line, e.pos.col), (1, 18));
        assert!(e.message.contains("unknown field bogus"), "{e}");
        let e = err("rule a deny\n  when count(auth_failure on account within 500d) >= 1");
        assert_eq!(e.pos.line, 2);
        assert!(e.message.contains("window_max"), "{e}");
        let e = err("rule a deny when kind is swap");
        assert!(e.message.contains("swap is not an event kind"), "{e}");
        let e = err("rule a deny when count(auth_failure on line within 1h) >= 1");
        assert!(e.message.contains("never recorded on line"), "{e}");
        let e = err("rule a deny when channel >= 3");
        assert!(e.message.contains("cannot compare"), "{e}");
        let e = err("rule a deny when frob(auth_failure on account within 1h)");
        assert!(e.message.contains("unknown function"), "{e}");
        let e = err("rule a deny when imei in list nope");
        assert!(e.message.contains("unknown list nope"), "{e}");
    }

    #[test]
    fn plans_hold_the_rules_a_kind_can_match_specialized_to_it() {
        use crate::contract::Kind;
        let r = CompiledRules::default_rules();
        let plan = |k: Kind| &r.plans[usize::from(HKind::of(k).0)];
        let names = |k: Kind| -> Vec<&str> {
            plan(k)
                .rules
                .iter()
                .map(|(i, _)| r.rules[usize::from(*i)].name.as_str())
                .collect()
        };
        let port = names(Kind::PortOut);
        assert!(port.contains(&"port_after_sim_change"), "{port:?}");
        assert!(!port.contains(&"repeat_sim_change"), "{port:?}");
        // No kind test: every kind.
        assert!(names(Kind::AccountChange).contains(&"fraud_reported"));
        // The branch for other kinds is gone: for a port-out, account_lock is
        // the one test of the port-out lock.
        let lock = plan(Kind::PortOut)
            .rules
            .iter()
            .find(|(i, _)| r.rules[usize::from(*i)].name == "account_lock")
            .map(|(_, c)| c);
        assert!(matches!(lock, Some(Node::LatestIs(..))), "{lock:?}");
        // `pin_ok is false` is one test; so is a sum of counts against a number.
        let pin = plan(Kind::PortOut)
            .rules
            .iter()
            .find(|(i, _)| r.rules[usize::from(*i)].name == "port_pin_mismatch")
            .map(|(_, c)| c);
        assert!(matches!(pin, Some(Node::BoolIs(_, false))), "{pin:?}");
        let auth = &r
            .rules
            .iter()
            .find(|x| x.name == "auth_failures_deny")
            .unwrap()
            .cond;
        assert!(
            matches!(auth, Node::CountsCmp(q, Cmp::Ge, 10) if q.len() == 2),
            "{auth:?}"
        );
        // An account change reads no line history under the default rules.
        assert_eq!(plan(Kind::AccountChange).series[slot(Entity::Line)], 0);
    }

    #[test]
    fn more_rules_than_the_hard_limit_are_refused() {
        let src: String = (0..=RULES_MAX_HARD)
            .map(|i| format!("rule r{i} deny when kind is port_out\n"))
            .collect();
        let limits = Limits {
            rules_max: 1000,
            ..Limits::default()
        };
        let e = CompiledRules::compile("t.rules", &src, &limits)
            .unwrap_err()
            .remove(0);
        assert!(e.message.contains("rules_max (128)"), "{e}");
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let src = format!(
            "rule a deny when {}true{}",
            "(".repeat(100_000),
            ")".repeat(100_000)
        );
        let e = err(&src);
        assert!(e.message.contains("expr_depth_max"), "{e}");
        let src = format!("rule a deny when {}true", "not ".repeat(100_000));
        assert!(err(&src).message.contains("expr_depth_max"));
        // Sets nest too (found by fuzzing: each `[` recursed uncounted).
        let src = format!("rule a deny when kind in {}", "[".repeat(100_000));
        assert!(err(&src).message.contains("expr_depth_max"));
        let ok = format!(
            "rule a deny when kind in {}sim_swap{}",
            "[".repeat(4),
            "]".repeat(4)
        );
        assert!(
            !CompiledRules::compile("t.rules", &ok, &Limits::default())
                .err()
                .is_some_and(|es| es.iter().any(|e| e.message.contains("expr_depth_max")))
        );
    }

    #[test]
    fn equal_queries_share_a_series_with_the_longest_window() {
        let r = CompiledRules::compile(
            "t.rules",
            "rule a deny when count(fraud_report on account within 1h) >= 1\n\
             rule b deny when exists(fraud_report on account within 2d)",
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(r.series.len(), 1);
        assert_eq!(r.series[0].keep, Keep::Window(2 * 86_400 * 1_000_000_000));
    }

    /// Series correspond by what they record, not by number or window: the
    /// default rules in reverse order with other windows keep every series
    /// under other numbers; a series kept otherwise (`ever`, not a window)
    /// or filtered otherwise is another series.
    #[test]
    fn series_correspond_by_what_they_record() {
        let old = CompiledRules::default_rules();
        let same = SeriesMap::between(&old.series, &old.series);
        assert!(same.keeps_numbers());
        assert_eq!(
            (same.kept(), same.started_empty(), same.dropped()),
            (13, 0, 0)
        );
        let mut blocks: Vec<&str> = DEFAULT_RULES.split("\nrule ").collect();
        let head = blocks.remove(0);
        blocks.reverse();
        let src =
            format!("{head}\nrule {}", blocks.join("\nrule ")).replace("within 30d", "within 60d");
        let new = CompiledRules::compile("r.rules", &src, &Limits::default()).expect("compiles");
        let map = SeriesMap::between(&old.series, &new.series);
        assert!(!map.keeps_numbers());
        assert_eq!((map.kept(), map.started_empty(), map.dropped()), (13, 0, 0));
        for (n, o) in map.new_from_old.iter().enumerate() {
            let o = usize::from(o.expect("every series kept"));
            assert!(new.series[n].records_as(&old.series[o]));
            assert_eq!(map.old_to_new[o], Some(n as u16));
        }
        let other = CompiledRules::compile(
            "o.rules",
            "rule a deny when exists(device_seen on line within 1h where new_device)\n\
             rule b deny when imei in ever(imei of device_seen on line)\n\
             rule c deny when exists(unlock on line within 24h where scope is sim_change)",
            &Limits::default(),
        )
        .expect("compiles");
        let map = SeriesMap::between(&old.series, &other.series);
        // `a` and the sim_change unlock match the default's series; the
        // devices series `new_device` reads (also `b`'s ever set) does too.
        assert_eq!(other.series.len(), 3);
        assert_eq!((map.kept(), map.started_empty()), (3, 0));
        let filtered = CompiledRules::compile(
            "f.rules",
            "rule c deny when exists(unlock on line within 24h where scope is port_out or scope is sim_change)",
            &Limits::default(),
        )
        .expect("compiles");
        let map = SeriesMap::between(&old.series, &filtered.series);
        assert_eq!((map.kept(), map.started_empty(), map.dropped()), (0, 1, 13));
    }
}
