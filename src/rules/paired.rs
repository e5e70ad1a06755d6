//! Two rulesets compiled to run in one engine, for a backtest: the baseline
//! deciding, the new rules beside it in shadow.

use super::compiled::CompiledRules;
use super::error::Pos;
use super::error::RuleError;
use super::limits::{Limits, RULES_MAX_HARD};
use super::parser;
use super::program::*;

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
