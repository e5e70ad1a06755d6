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
mod lexer;
mod parser;
pub mod program;

pub use lexer::Pos;
pub use program::*;
use std::fmt;

/// The ruleset built into the binary (the same file fraud teams copy and edit).
pub const DEFAULT_RULES: &str = include_str!("../../rules/default.rules");

/// The most rules any ruleset may hold, whatever the configured limit.
pub const RULES_MAX_HARD: usize = 128;

/// Limits on what a ruleset may ask for. Each is named with its unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of rules source.
    pub source_bytes_max: usize,
    /// Rules in one ruleset (at most [`RULES_MAX_HARD`]: decisions carry
    /// their matched rules as a 128-bit set).
    pub rules_max: usize,
    /// Nesting levels of a condition (parentheses, sets, `not`, function calls).
    pub expr_depth_max: usize,
    /// Constants in one `[...]` set.
    pub set_items_max: usize,
    /// Declared lists.
    pub lists_max: usize,
    /// Values in one list (files and `list_add` together).
    pub list_items_max: usize,
    /// Days of the longest window.
    pub window_max_days: u32,
    /// Distinct history series (equal queries share one).
    pub series_max: usize,
    /// Events kept per entity in one windowed series; older ones are dropped
    /// first (counts saturate at this number).
    pub series_items_max: usize,
    /// Values kept per entity in one `ever` set; the oldest is forgotten first,
    /// which errs toward holding (a forgotten device looks new).
    pub ever_items_max: usize,
    /// Characters in a name.
    pub name_chars_max: usize,
    /// Characters in a description.
    pub description_chars_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            source_bytes_max: 1 << 20,
            rules_max: RULES_MAX_HARD,
            expr_depth_max: 32,
            set_items_max: 64,
            lists_max: 64,
            list_items_max: 1_000_000,
            window_max_days: 400,
            series_max: 256,
            series_items_max: 1024,
            ever_items_max: 64,
            name_chars_max: 64,
            description_chars_max: 1024,
        }
    }
}

impl Limits {
    pub fn window_max_nanos(&self) -> i128 {
        i128::from(self.window_max_days) * 86_400 * 1_000_000_000
    }
}

/// A compile error: where, what, and a hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub file: String,
    pub pos: Pos,
    pub message: String,
    pub hint: String,
}

impl RuleError {
    pub fn at(pos: Pos, message: String, hint: &str) -> Self {
        RuleError {
            file: String::new(),
            pos,
            message,
            hint: hint.to_string(),
        }
    }
}

/// Every error on its own lines, then how many: what a command prints when
/// a rules file does not compile.
pub fn render_errors(errs: &[RuleError]) -> String {
    let mut s = String::new();
    for e in errs {
        s.push_str(&e.to_string());
        s.push('\n');
    }
    s.push_str(&format!(
        "{} error(s); the rules do not compile",
        errs.len()
    ));
    s
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.pos.line, self.pos.col, self.message
        )?;
        if !self.hint.is_empty() {
            write!(f, "\n  hint: {}", self.hint)?;
        }
        Ok(())
    }
}

/// A ruleset ready to decide: rules in file order plus the history plan.
#[derive(Debug, Clone)]
pub struct CompiledRules {
    /// The file it was compiled from, as named, and its source: a store
    /// keeps both, so that after a restart a record this ruleset decided is
    /// answered by it again.
    pub file: String,
    pub source: std::sync::Arc<str>,
    pub label: String,
    /// The first 16 hex digits of the source's SHA-256: names this exact version.
    pub hash: String,
    pub rules: Vec<Rule>,
    pub series: Vec<Series>,
    pub queries: Vec<Query>,
    pub lists: Vec<ListDecl>,
    /// Verification method names, indexed by [`Rule::verify`].
    pub methods: Vec<String>,
    /// The series of IMEIs seen per line, when a rule reads `new_device`.
    pub devices: Option<u16>,
    /// For each history kind, the series that record it.
    pub by_kind: Vec<Vec<u16>>,
    /// Which entities any series is kept on, by [`crate::history::slot`].
    pub entities_used: [bool; 5],
    /// For each request kind (by [`HKind`] code), what deciding it evaluates.
    pub plans: Vec<Plan>,
    pub limits: Limits,
}

/// What the engine evaluates for requests of one kind.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The rules that can match this kind, in ruleset order, each with its
    /// condition specialized to the kind (see [`program::specialize`]).
    pub rules: Vec<(u16, Node)>,
    /// For each of `rules`, what its entity must hold for it to match, when
    /// that can be said: `(slot, series bits)`, as [`program::need`] finds.
    /// Most requests ask about what an entity has never had (a lock, a fraud
    /// report): such a rule is false before it is evaluated.
    pub needs: Vec<Option<(usize, u32)>>,
    /// The series those conditions read, per entity (by
    /// [`crate::history::slot`]), as [`crate::history::presence_bit`]s: a
    /// decision looks up only the entities with bits here, and reads an
    /// entity's entries only when it has one of these series.
    pub series: [u32; 5],
}

impl Plan {
    fn of(kind: HKind, rules: &[Rule], queries: &[Query]) -> Plan {
        let mut plan = Plan::default();
        let mut read = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            let cond = program::specialize(&r.cond, kind);
            if cond == Node::Const(Const::Bool(false)) {
                continue;
            }
            program::queries_read(&cond, &mut read);
            plan.needs.push(program::need(&cond, queries));
            // Invariant: rules_max is at most 128.
            plan.rules.push((i as u16, cond));
        }
        for q in read {
            let q = &queries[q as usize];
            plan.series[crate::history::slot(q.entity)] |= crate::history::presence_bit(q.series);
        }
        plan
    }
}

impl CompiledRules {
    /// Compiles `src`; `file` names it in errors, and its stem is the label
    /// when the file has no `ruleset "label"` line.
    pub fn compile(
        file: &str,
        src: &str,
        limits: &Limits,
    ) -> Result<CompiledRules, Vec<RuleError>> {
        Self::compile_keeping_ast(file, src, limits).map(|(built, _)| built)
    }

    /// [`CompiledRules::compile`], also giving back the parsed file (for
    /// [`Paired`], which compiles two files together as well as alone).
    fn compile_keeping_ast(
        file: &str,
        src: &str,
        limits: &Limits,
    ) -> Result<(CompiledRules, parser::FileAst), Vec<RuleError>> {
        let named = |mut e: RuleError| {
            e.file = file.to_string();
            e
        };
        if src.len() > limits.source_bytes_max {
            return Err(vec![named(RuleError::at(
                Pos { line: 1, col: 1 },
                format!(
                    "the file is {} bytes, over source_bytes_max ({})",
                    src.len(),
                    limits.source_bytes_max
                ),
                "split it or remove unused rules",
            ))]);
        }
        let ast = parse(src, limits).map_err(|e| vec![named(e)])?;
        let mut built = CompiledRules::build(&ast, limits)
            .map_err(|es| es.into_iter().map(named).collect::<Vec<_>>())?;
        let digest = ring::digest::digest(&ring::digest::SHA256, src.as_bytes());
        built.hash = digest.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        built.file = file.to_string();
        built.source = src.into();
        built.label = ast.label.clone().unwrap_or_else(|| {
            std::path::Path::new(file)
                .file_stem()
                .map_or_else(|| file.to_string(), |s| s.to_string_lossy().into_owned())
        });
        Ok((built, ast))
    }

    /// Compiles a parsed file; `hash` and `label` are left empty for the
    /// caller to fill.
    fn build(ast: &parser::FileAst, limits: &Limits) -> Result<CompiledRules, Vec<RuleError>> {
        let built = compile::compile(ast, limits)?;
        let mut by_kind = vec![Vec::new(); HKind::COUNT];
        for (i, s) in built.series.iter().enumerate() {
            for (k, list) in by_kind.iter_mut().enumerate() {
                if s.kinds.contains(HKind(k as u8)) {
                    list.push(i as u16);
                }
            }
        }
        let mut entities_used = [false; 5];
        for s in &built.series {
            entities_used[crate::history::slot(s.entity)] = true;
        }
        let plans = (0..HKind::COUNT)
            .map(|k| Plan::of(HKind(k as u8), &built.rules, &built.queries))
            .collect();
        Ok(CompiledRules {
            file: String::new(),
            source: "".into(),
            label: String::new(),
            hash: String::new(),
            rules: built.rules,
            series: built.series,
            queries: built.queries,
            lists: built.lists,
            methods: built.methods,
            devices: built.devices,
            by_kind,
            entities_used,
            plans,
            limits: limits.clone(),
        })
    }

    /// The built-in default ruleset.
    pub fn default_rules() -> CompiledRules {
        // Invariant: the shipped file compiles; `default_ruleset_compiles` tests it.
        CompiledRules::compile("default.rules", DEFAULT_RULES, &Limits::default())
            .expect("the built-in default ruleset compiles")
    }

    /// The longest window any series keeps: older windowed history can go.
    pub fn longest_window(&self) -> i128 {
        self.series
            .iter()
            .filter_map(|s| match s.keep {
                Keep::Window(w) => Some(w),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// A one-line summary for `rules check`.
    pub fn summary(&self) -> String {
        let count = |a: Action| {
            self.rules
                .iter()
                .filter(|r| r.action == a && !r.shadow)
                .count()
        };
        format!(
            "ok: ruleset {:?} ({}): {} rules ({} deny, {} hold, {} allow, {} shadow), {} history series, {} lists, longest window {}d",
            self.label,
            self.hash,
            self.rules.len(),
            count(Action::Deny),
            count(Action::Hold),
            count(Action::Allow),
            self.rules.iter().filter(|r| r.shadow).count(),
            self.series.len(),
            self.lists.len(),
            self.longest_window() / 86_400_000_000_000,
        )
    }
}

/// Lexes and parses a rules source within `limits`.
fn parse(src: &str, limits: &Limits) -> Result<parser::FileAst, RuleError> {
    let toks = lexer::lex(src, limits)?;
    parser::Parser::new(&toks, limits).file()
}

/// Two rulesets compiled to run in one engine, for a backtest: the
/// baseline's rules as they are, then the new ruleset's rules, all in
/// shadow. The engine decides, and so makes history, by the baseline
/// alone; the new rules are evaluated on the same requests against that
/// same history, as shadow rules are, and never change an outcome.
#[derive(Debug, Clone)]
pub struct Paired {
    /// The baseline as compiled alone: its label, hash and rules.
    pub baseline: CompiledRules,
    /// The new ruleset as compiled alone.
    pub new: CompiledRules,
    /// What the engine runs: the baseline's rules (indexes below
    /// `baseline.rules.len()`), then the new ones in shadow.
    pub joint: CompiledRules,
}

/// One ruleset's half of a decision in a paired run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub outcome: Outcome,
    /// Matched rules that count toward the outcome, as indexes of that
    /// ruleset's own rules.
    pub matched: u128,
    /// Matched shadow rules of that ruleset.
    pub shadow: u128,
}

impl Paired {
    /// Compiles `baseline` and `new` (each `(file, source)`) alone, so that
    /// each error names its own file, then together.
    pub fn compile(
        baseline: (&str, &str),
        new: (&str, &str),
        limits: &Limits,
    ) -> Result<Paired, Vec<RuleError>> {
        let (base, joint_ast) = CompiledRules::compile_keeping_ast(baseline.0, baseline.1, limits)?;
        let (fresh, new_ast) = CompiledRules::compile_keeping_ast(new.0, new.1, limits)?;
        Self::pair(base, fresh, joint_ast, new_ast, new.0, limits)
    }

    /// Joins the two parsed files (the baseline's is `joint_ast`) into the
    /// ruleset the engine runs.
    fn pair(
        base: CompiledRules,
        fresh: CompiledRules,
        mut joint_ast: parser::FileAst,
        new_ast: parser::FileAst,
        new_file: &str,
        limits: &Limits,
    ) -> Result<Paired, Vec<RuleError>> {
        let whole = |message: String, hint: &str| {
            let mut e = RuleError::at(Pos { line: 1, col: 1 }, message, hint);
            e.file = new_file.to_string();
            vec![e]
        };
        let total = base.rules.len() + fresh.rules.len();
        if total > RULES_MAX_HARD {
            return Err(whole(
                format!(
                    "a backtest runs both rulesets together: {} + {} rules is over {RULES_MAX_HARD}",
                    base.rules.len(),
                    fresh.rules.len()
                ),
                "backtest fewer rules at a time, or drop rules the change does not touch from both files",
            ));
        }
        for l in new_ast.lists {
            match joint_ast.lists.iter().find(|b| b.name == l.name) {
                Some(b) if b.ty.0 != l.ty.0 => {
                    let mut e = RuleError::at(
                        l.pos,
                        format!(
                            "list {} holds {} here but {} in the baseline",
                            l.name, l.ty.0, b.ty.0
                        ),
                        "a backtest loads each list once for both rulesets: declare it with the same type",
                    );
                    e.file = new_file.to_string();
                    return Err(vec![e]);
                }
                Some(_) => {}
                None => joint_ast.lists.push(l),
            }
        }
        for mut r in new_ast.rules {
            // A name no source can spell, so it never meets a baseline rule's.
            r.name.push_str("@new");
            r.shadow = true;
            joint_ast.rules.push(r);
        }
        let joint_limits = Limits {
            rules_max: RULES_MAX_HARD,
            ..limits.clone()
        };
        let mut joint = CompiledRules::build(&joint_ast, &joint_limits).map_err(|es| {
            es.into_iter()
                .map(|mut e| {
                    e.message = format!("with the baseline's rules: {}", e.message);
                    e.file = new_file.to_string();
                    e
                })
                .collect::<Vec<_>>()
        })?;
        joint.label = format!("{}+{}", base.label, fresh.label);
        joint.hash = format!("{}+{}", base.hash, fresh.hash);
        Ok(Paired {
            baseline: base,
            new: fresh,
            joint,
        })
    }

    /// Both rulesets' verdicts on a decision the joint ruleset made.
    pub fn split(&self, outcome: Outcome, matched: u128, shadow: u128) -> (Verdict, Verdict) {
        let n = self.baseline.rules.len();
        let low = if n >= 128 {
            u128::MAX
        } else {
            (1u128 << n) - 1
        };
        let base = Verdict {
            outcome,
            matched: matched & low,
            shadow: shadow & low,
        };
        let theirs = if n >= 128 { 0 } else { shadow >> n };
        let (mut m, mut sh) = (0u128, 0u128);
        let (mut deny, mut allow, mut hold) = (false, false, false);
        for (i, r) in self.new.rules.iter().enumerate() {
            if theirs & (1 << i) == 0 {
                continue;
            }
            if r.shadow {
                sh |= 1 << i;
                continue;
            }
            m |= 1 << i;
            match r.action {
                Action::Deny => deny = true,
                Action::Allow => allow = true,
                Action::Hold => hold = true,
            }
        }
        (
            base,
            Verdict {
                outcome: outcome_of(deny, allow, hold),
                matched: m,
                shadow: sh,
            },
        )
    }
}

/// The outcome rule of the contract: deny if any deny rule matched; else
/// allow if an allow rule matched; else hold if a hold rule matched; else
/// allow.
pub fn outcome_of(deny: bool, allow: bool, hold: bool) -> Outcome {
    if deny {
        Outcome::Deny
    } else if allow || !hold {
        Outcome::Allow
    } else {
        Outcome::Hold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(src: &str) -> RuleError {
        CompiledRules::compile("t.rules", src, &Limits::default())
            .unwrap_err()
            .remove(0)
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
        assert_eq!(
            plan(Kind::AccountChange).series[crate::history::slot(Entity::Line)],
            0
        );
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
