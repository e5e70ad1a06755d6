//! A ruleset compiled and ready to decide: the rules in file order, the
//! history plan they imply, and per request kind a [`Plan`] of what deciding
//! it evaluates. Compiling goes lexer, parser, [`super::compile`] (types and
//! the history plan), then the plans.

use super::compile;
use super::error::Pos;
use super::error::RuleError;
use super::lexer;
use super::limits::Limits;
use super::parser;
use super::program::{self, *};

/// The ruleset built into the binary (the same file fraud teams copy and edit).
pub const DEFAULT_RULES: &str = include_str!("../../rules/default.rules");

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
    /// Which entities any series is kept on, by [`slot`].
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
    /// [`slot`]), as [`presence_bit`]s: a
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
            plan.series[slot(q.entity)] |= presence_bit(q.series);
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
    pub(super) fn compile_keeping_ast(
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
    pub(super) fn build(
        ast: &parser::FileAst,
        limits: &Limits,
    ) -> Result<CompiledRules, Vec<RuleError>> {
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
            entities_used[slot(s.entity)] = true;
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
    /// Whether a rule that is not shadow can hold or deny: a ruleset that
    /// cannot allows every request, which `serve` refuses unless asked.
    pub fn can_stop(&self) -> bool {
        self.rules
            .iter()
            .any(|r| !r.shadow && matches!(r.action, Action::Deny | Action::Hold))
    }

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

impl<'r> Describe<'r> {
    /// A describer for a compiled ruleset.
    pub fn of(rules: &'r CompiledRules) -> Describe<'r> {
        Describe {
            queries: &rules.queries,
            series: &rules.series,
            lists: &rules.lists,
        }
    }
}
