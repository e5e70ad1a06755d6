//! `portcullis explain`: one request, every rule, and the values that
//! decided it at that moment.
//!
//! Explain reads events exactly as replay does (it runs replay's own loop,
//! [`crate::replay::drive_with`]: the same parsing, order checks, skipped
//! errors and engine), up to the first line the engine answers with the
//! id asked for. Just before the engine decides that request, with the
//! request's own `at` as now, it evaluates every rule's whole condition
//! (not the per-kind plan the engine runs, so that rules which cannot
//! match the kind show why) through a [`Lookup`] that records each history
//! query and list lookup with the value it got. Then the engine decides,
//! and the run log reports the engine's own answer beside the trace; the
//! two must agree (the plans are an optimization of the conditions), and
//! [`Explanation::agrees`] says whether they did.

use crate::contract::{Event, Kind, Timestamp};
use crate::engine::{Answer, Decided, Engine, verify_methods};
use crate::replay::Item;
use crate::rules::{
    Action, Attr, CompiledRules, Describe, Lookup, Node, Outcome, Query, Subject, Ty, Val,
    cmp_text, code_set_text, elapsed_text, flip_cmp, is_constant, key_text, truth, val_text,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, BufRead, Write};
use std::ops::ControlFlow;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

/// One value a rule's evaluation read: a field of the request, a history
/// query or a list lookup, with what it got (and, where the rule compares
/// it with a constant, the comparison in parentheses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub what: String,
    pub value: String,
}

/// One rule, evaluated on the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleTrace {
    pub name: String,
    pub action: Action,
    pub shadow: bool,
    pub matched: bool,
    /// What the evaluation read, in the order it read it. `and` and `or`
    /// stop at the first part that settles them, as the engine's do, so a
    /// part after it was not read and is not here.
    pub reads: Vec<Read>,
}

/// One request explained: the engine's decision and every rule's trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub id: String,
    /// The 1-based input line of the request.
    pub line: u64,
    pub kind: Kind,
    pub at: Timestamp,
    pub ruleset_label: String,
    pub ruleset_hash: String,
    /// The outcome the engine decided.
    pub decision: Outcome,
    /// The rules the engine matched (bit i = rule i), not shadow.
    pub matched: u128,
    /// The shadow rules the engine matched.
    pub shadow: u128,
    /// Verification methods of the matched hold rules, as replay lists them.
    pub verify: Vec<String>,
    /// Every rule of the ruleset, in ruleset order.
    pub rules: Vec<RuleTrace>,
}

impl Explanation {
    /// The names of the rules the trace found matching whose shadow flag
    /// is `shadow`, in ruleset order.
    fn traced(&self, shadow: bool) -> Vec<&str> {
        self.rules
            .iter()
            .filter(|r| r.matched && r.shadow == shadow)
            .map(|r| r.name.as_str())
            .collect()
    }

    /// Non-shadow rules the trace found matching, in ruleset order (replay's
    /// `rules`, when [`Explanation::agrees`]).
    pub fn matched_rules(&self) -> Vec<&str> {
        self.traced(false)
    }

    /// Shadow rules the trace found matching (replay's `shadow_rules`).
    pub fn shadow_rules(&self) -> Vec<&str> {
        self.traced(true)
    }

    /// Whether the trace matched exactly the rules the engine matched. The
    /// engine evaluates per-kind plans, the trace each whole condition: a
    /// difference is a bug in one of them.
    pub fn agrees(&self) -> bool {
        let traced = self
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.matched)
            .fold(0u128, |bits, (i, _)| bits | 1 << i);
        traced == self.matched | self.shadow
    }

    /// The run log: a header with the decision, then one block per rule.
    pub fn render(&self) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_log(&mut s);
        s
    }

    fn write_log(&self, s: &mut String) -> std::fmt::Result {
        writeln!(
            s,
            "request {} ({} at {}, line {}), ruleset {} ({})",
            self.id,
            self.kind,
            self.at.to_rfc3339_utc(),
            self.line,
            self.ruleset_label,
            self.ruleset_hash
        )?;
        let names = |v: Vec<&str>| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(", ")
            }
        };
        let engine_rules = |shadow: bool| {
            self.rules
                .iter()
                .enumerate()
                .filter(|(i, _)| {
                    let bits = if shadow { self.shadow } else { self.matched };
                    bits & (1 << i) != 0
                })
                .map(|(_, r)| r.name.as_str())
                .collect::<Vec<_>>()
        };
        write!(
            s,
            "decision: {}  rules: {}  verify: {}",
            self.decision,
            names(engine_rules(false)),
            names(self.verify.iter().map(String::as_str).collect())
        )?;
        if self.shadow != 0 {
            write!(s, "  shadow: {}", names(engine_rules(true)))?;
        }
        writeln!(s)?;
        const NAME: usize = 34;
        const ACTION: usize = 12;
        let indent = 2 + NAME + 1 + ACTION + 1 + 4 + 1;
        for r in &self.rules {
            let action = if r.shadow {
                format!("shadow {}", action_text(r.action))
            } else {
                action_text(r.action).to_string()
            };
            let verdict = if r.matched { "YES" } else { "no" };
            write!(s, "  {:<NAME$} {action:<ACTION$} {verdict:<4} ", r.name)?;
            if r.reads.is_empty() {
                writeln!(s, "(reads nothing)")?;
            }
            for (i, read) in r.reads.iter().enumerate() {
                if i > 0 {
                    write!(s, "{:indent$}", "")?;
                }
                writeln!(s, "{} = {}", read.what, read.value)?;
            }
        }
        if !self.agrees() {
            writeln!(
                s,
                "warning: the trace matched other rules than the engine did (a bug: please report it)"
            )?;
        }
        Ok(())
    }
}

/// Why an id got no explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unexplained {
    /// No line the engine answered carries the id.
    NotFound,
    /// The id's first answered line is a signal: signals get no decision.
    NotARequest { line: u64, kind: Kind },
    /// The engine answered the id's first line as a retry of an earlier
    /// request: it evaluated no rules for it.
    Retry { line: u64 },
    /// The engine refused the id's first valid request (`id_conflict`).
    Refused { line: u64, message: String },
}

impl std::fmt::Display for Unexplained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unexplained::NotFound => f.write_str("no valid event in the input has this id"),
            Unexplained::NotARequest { line, kind } => write!(
                f,
                "line {line}, the first event with this id, is a {kind}, a signal: only sim_swap, esim_transfer, port_out and account_change are decided"
            ),
            Unexplained::Retry { line } => write!(
                f,
                "line {line}, the first event with this id, was answered as a retry of an earlier request: no rules were evaluated for it"
            ),
            Unexplained::Refused { line, message } => {
                write!(
                    f,
                    "line {line}, the first request with this id, was refused: {message}"
                )
            }
        }
    }
}

/// What the search for one id found.
pub type Found = Result<Explanation, Unexplained>;

/// Explains `id` in `input` ([`explain_many`] for one id).
pub fn explain<R: BufRead>(engine: &mut Engine, input: R, id: &str) -> io::Result<Found> {
    let mut all = explain_many(engine, input, &[id])?;
    Ok(all.pop().unwrap_or(Err(Unexplained::NotFound)))
}

/// The state of a search, shared by the hook that traces a request before
/// the engine decides it and the one that sees the answer.
struct Search<'i> {
    /// Each id sought, and what was found for it once settled.
    wanted: HashMap<&'i str, Option<Found>>,
    /// Ids not settled yet.
    open: usize,
    /// The trace of the request being decided: its line, id and rules.
    pending: Option<(u64, String, Vec<RuleTrace>)>,
}

impl Search<'_> {
    fn is_open(&self, id: &str) -> bool {
        self.wanted.get(id).is_some_and(Option::is_none)
    }

    fn settle(&mut self, id: &str, found: Found) {
        if let Some(slot) = self.wanted.get_mut(id).filter(|s| s.is_none()) {
            *slot = Some(found);
            self.open -= 1;
        }
    }
}

/// Explains several requests in one pass over `input`, read as replay
/// reads it, from `engine` as it is: for each of `ids` (in that order), its
/// explanation or why there is none. Reading stops once every id is
/// settled: at the first line the engine answered with it.
pub fn explain_many<R: BufRead>(
    engine: &mut Engine,
    input: R,
    ids: &[&str],
) -> io::Result<Vec<Found>> {
    let wanted: HashMap<&str, Option<Found>> = ids.iter().map(|id| (*id, None)).collect();
    let search = RefCell::new(Search {
        open: wanted.len(),
        wanted,
        pending: None,
    });
    if search.borrow().open > 0 {
        crate::replay::drive_with(
            engine,
            input,
            |engine, line, ev, at| {
                let mut s = search.borrow_mut();
                if let Some(id) = ev.id.as_deref()
                    && ev.kind.is_decision()
                    && s.is_open(id)
                {
                    s.pending = Some((line, id.to_string(), trace(engine, ev, at)));
                }
            },
            |engine, line, item| {
                let mut s = search.borrow_mut();
                let traced = s.pending.take_if(|(l, ..)| *l == line);
                match item {
                    Item::Blank => {}
                    Item::Refused(e) => {
                        if let Some((_, id, _)) = traced {
                            let why = Unexplained::Refused {
                                line,
                                message: e.message.clone(),
                            };
                            s.settle(&id, Err(why));
                        }
                    }
                    Item::Answered(ev, at, answer) => {
                        if let Some(id) = ev.id.as_deref().filter(|id| s.is_open(id)) {
                            let rules = traced.map(|(.., rules)| rules);
                            let found = settle(engine, ev, at, line, answer, rules);
                            s.settle(id, found);
                        }
                    }
                }
                Ok(if s.open == 0 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                })
            },
        )?;
    }
    let wanted = search.into_inner().wanted;
    Ok(ids
        .iter()
        .map(|id| {
            wanted
                .get(id)
                .cloned()
                .flatten()
                .unwrap_or(Err(Unexplained::NotFound))
        })
        .collect())
}

/// The explanation of a request the engine answered, from the trace taken
/// just before it did.
fn settle(
    engine: &Engine,
    ev: &Event,
    at: Timestamp,
    line: u64,
    answer: &Answer,
    traced: Option<Vec<RuleTrace>>,
) -> Found {
    let d: Decided = match answer {
        Answer::Decision(d) if !d.retry => *d,
        Answer::Decision(_) => return Err(Unexplained::Retry { line }),
        Answer::Signal { .. } => {
            return Err(Unexplained::NotARequest {
                line,
                kind: ev.kind,
            });
        }
        Answer::Error(e) => {
            return Err(Unexplained::Refused {
                line,
                message: e.message.clone(),
            });
        }
    };
    let rules = engine.ruleset(d.ruleset);
    Ok(Explanation {
        id: ev.id.as_deref().unwrap_or_default().to_string(),
        line,
        kind: ev.kind,
        at,
        ruleset_label: rules.label.clone(),
        ruleset_hash: rules.hash.clone(),
        decision: d.outcome,
        matched: d.matched,
        shadow: d.shadow,
        verify: verify_methods(rules, d.matched)
            .into_iter()
            .map(str::to_string)
            .collect(),
        // A decision kind passed `before` on this very line, which traced it.
        rules: traced.unwrap_or_default(),
    })
}

/// Every rule of the engine's current ruleset evaluated on request `ev` at
/// `now`, against history as it is, with what each read. Changes nothing.
pub fn trace(engine: &Engine, ev: &Event, now: Timestamp) -> Vec<RuleTrace> {
    let rules: &CompiledRules = engine.current();
    let subject = Subject::request(ev);
    let facts = engine.facts_all(&subject, now);
    let mut tracer = Tracer {
        rules,
        describe: Describe::of(rules),
        subject: &subject,
        look: Tracing {
            inner: &facts,
            calls: RefCell::new(Vec::new()),
        },
        reads: Vec::new(),
    };
    rules
        .rules
        .iter()
        .map(|r| {
            tracer.reads.clear();
            let matched = tracer.walk(&r.cond);
            debug_assert_eq!(
                matched,
                truth(&r.cond, &subject, &rules.queries, &facts),
                "{}",
                r.name
            );
            RuleTrace {
                name: r.name.clone(),
                action: r.action,
                shadow: r.shadow,
                matched,
                reads: std::mem::take(&mut tracer.reads),
            }
        })
        .collect()
}

/// A call a condition made through [`Lookup`], with its answer.
#[derive(Debug, Clone)]
enum Call {
    Count(Query, i64),
    Distinct(Query, i64, i64),
    Exists(Query, bool),
    Since(Query, Option<i128>),
    Latest(Query, Option<u128>),
    Ever(Query, bool),
    List(u16, bool),
}

/// A [`Lookup`] that answers as `inner` does and records every call.
struct Tracing<'a, L: Lookup> {
    inner: &'a L,
    calls: RefCell<Vec<Call>>,
}

impl<L: Lookup> Tracing<'_, L> {
    fn note(&self, c: Call) {
        self.calls.borrow_mut().push(c);
    }
    fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.borrow_mut())
    }
}

impl<L: Lookup> Lookup for Tracing<'_, L> {
    fn count(&self, q: &Query) -> i64 {
        let n = self.inner.count(q);
        self.note(Call::Count(q.clone(), n));
        n
    }
    fn distinct(&self, q: &Query, cap: i64) -> i64 {
        let n = self.inner.distinct(q, cap);
        self.note(Call::Distinct(q.clone(), cap, n));
        n
    }
    fn exists(&self, q: &Query) -> bool {
        let b = self.inner.exists(q);
        self.note(Call::Exists(q.clone(), b));
        b
    }
    fn since(&self, q: &Query) -> Option<i128> {
        let d = self.inner.since(q);
        self.note(Call::Since(q.clone(), d));
        d
    }
    fn latest(&self, q: &Query) -> Option<u128> {
        let v = self.inner.latest(q);
        self.note(Call::Latest(q.clone(), v));
        v
    }
    fn ever_contains(&self, q: &Query, key: u128) -> bool {
        let b = self.inner.ever_contains(q, key);
        self.note(Call::Ever(q.clone(), b));
        b
    }
    fn list_contains(&self, list: u16, v: Val<'_>) -> bool {
        let b = self.inner.list_contains(list, v);
        self.note(Call::List(list, b));
        b
    }
}

/// Walks a condition as [`truth`] does (`and` and `or` stop at the first
/// part that settles them, `not` flips), evaluating each other node (a
/// leaf: a test of fields, history or lists) with [`truth`] itself through
/// [`Tracing`], and turns what each leaf read into [`Read`]s.
struct Tracer<'a, L: Lookup> {
    rules: &'a CompiledRules,
    describe: Describe<'a>,
    subject: &'a Subject<'a>,
    look: Tracing<'a, L>,
    reads: Vec<Read>,
}

impl<L: Lookup> Tracer<'_, L> {
    fn walk(&mut self, n: &Node) -> bool {
        match n {
            Node::And(xs) => xs.iter().all(|x| self.walk(x)),
            Node::Or(xs) => xs.iter().any(|x| self.walk(x)),
            Node::Not(x) => !self.walk(x),
            leaf => self.leaf(leaf),
        }
    }

    fn push(&mut self, what: String, value: String) {
        self.reads.push(Read { what, value });
    }

    /// A field of the request, with the test the leaf makes of it, if any.
    fn field(&mut self, a: Attr, test: Option<String>) {
        let v = val_text(self.subject.get(a), a.ty());
        let value = match test {
            Some(t) => format!("{v} ({t})"),
            None => v,
        };
        self.push(a.name().to_string(), value);
    }

    fn leaf(&mut self, n: &Node) -> bool {
        let got = truth(n, self.subject, &self.rules.queries, &self.look);
        let mut calls = self.look.take();
        let d = self.describe;
        match n {
            Node::CodeIn(a, mask) => self.field(*a, Some(code_set_text(a.ty(), *mask))),
            Node::BoolIs(a, b) => self.field(*a, Some(format!("is {b}"))),
            Node::LatestIs(_, c) if calls.len() == 1 => {
                if let Some(Call::Latest(q, v)) = calls.pop() {
                    let ty = d.query_ty(&q);
                    let test = format!("is {}", key_text(u128::from(*c), ty));
                    self.push(
                        d.call("latest", &q),
                        format!("{} ({test})", latest_text(v, ty)),
                    );
                }
            }
            Node::CountsCmp(_, op, c) => {
                let test = format!("{} {c}", cmp_text(*op));
                let counts: Vec<(Query, i64)> = calls
                    .into_iter()
                    .filter_map(|call| match call {
                        Call::Count(q, n) => Some((q, n)),
                        _ => None,
                    })
                    .collect();
                if let [(q, n)] = counts.as_slice() {
                    self.push(d.call("count", q), format!("{n} ({test})"));
                } else {
                    let mut sum = 0i64;
                    let mut terms = Vec::new();
                    for (q, n) in &counts {
                        self.push(d.call("count", q), n.to_string());
                        sum = sum.saturating_add(*n);
                        terms.push(n.to_string());
                    }
                    self.push(
                        "sum".to_string(),
                        format!("{} = {sum} ({test})", terms.join(" + ")),
                    );
                }
            }
            Node::DistinctCmp(_, _, op, c) => {
                let test = format!("{} {c}", cmp_text(*op));
                let distinct = calls.iter().find_map(|call| match call {
                    Call::Distinct(q, cap, n) => Some((q, *cap, *n)),
                    _ => None,
                });
                let count = calls.iter().find_map(|call| match call {
                    Call::Count(q, n) => Some((q, *n)),
                    _ => None,
                });
                match (distinct, count) {
                    (Some((q, cap, n)), _) => {
                        let more = if n >= cap { " or more" } else { "" };
                        self.push(d.call("distinct", q), format!("{n}{more} ({test})"));
                    }
                    // The engine stops at the count when it already fails:
                    // distinct values are at most the events.
                    (None, Some((q, n))) => self.push(
                        d.call("distinct", q),
                        format!(
                            "at most {n}, the events within {} ({test})",
                            crate::rules::window_text(q.window)
                        ),
                    ),
                    (None, None) => {}
                }
            }
            Node::Exists(_) if calls.len() == 1 => {
                if let Some(Call::Exists(q, b)) = calls.pop() {
                    let n = self.look.inner.count(&q);
                    let window = crate::rules::window_text(q.window);
                    self.push(
                        d.call("exists", &q),
                        format!("{} ({n} within {window})", yes(b)),
                    );
                }
            }
            Node::InList(x, list) => {
                self.fields_of(x);
                if let Some(Call::List(_, b)) = calls.pop() {
                    let what = format!("{} in list {}", d.node(x), d.list_name(*list));
                    self.push(what, yes(b).to_string());
                }
            }
            Node::InEver(x, _) => {
                self.fields_of(x);
                if let Some(Call::Ever(q, b)) = calls.pop() {
                    let what = format!("{} in {}", d.node(x), d.call("ever", &q));
                    self.push(what, yes(b).to_string());
                }
            }
            Node::Cmp(op, a, b) if is_constant(a) != is_constant(b) && calls.len() <= 1 => {
                // One side reads one value, the other is a constant: the
                // read, with the comparison after it.
                let (var, fixed, op) = if is_constant(b) {
                    (&**a, &**b, *op)
                } else {
                    (&**b, &**a, flip_cmp(*op))
                };
                let test = format!("{} {}", cmp_text(op), d.operand(fixed, var));
                match (var, calls.pop()) {
                    (Node::Attr(attr), None) => self.field(*attr, Some(test)),
                    (
                        Node::Count(_)
                        | Node::Distinct(..)
                        | Node::Exists(_)
                        | Node::Since(_)
                        | Node::Latest(..),
                        Some(call),
                    ) => {
                        let (what, value) = self.call_read(call);
                        self.push(what, format!("{value} ({test})"));
                    }
                    (_, call) => {
                        self.fields_of(var);
                        if let Some(call) = call {
                            let (what, value) = self.call_read(call);
                            self.push(what, value);
                        }
                        self.push(d.node(n), yes(got).to_string());
                    }
                }
            }
            other => {
                self.fields_of(other);
                let bare = matches!(
                    other,
                    Node::Count(_)
                        | Node::Distinct(..)
                        | Node::Exists(_)
                        | Node::Since(_)
                        | Node::Latest(..)
                        | Node::LatestIs(..)
                );
                for call in calls {
                    let (what, value) = self.call_read(call);
                    self.push(what, value);
                }
                if !bare {
                    self.push(d.node(other), yes(got).to_string());
                }
            }
        }
        got
    }

    /// Reads the request's fields a node names (each once), as the
    /// evaluator does before it compares them.
    fn fields_of(&mut self, n: &Node) {
        let mut attrs = Vec::new();
        attrs_in(n, &mut attrs);
        for a in attrs {
            self.field(a, None);
        }
    }

    /// A recorded call, without the test around it.
    fn call_read(&self, call: Call) -> (String, String) {
        let d = self.describe;
        match call {
            Call::Count(q, n) => (d.call("count", &q), n.to_string()),
            Call::Distinct(q, cap, n) => {
                let more = if n >= cap { " or more" } else { "" };
                (d.call("distinct", &q), format!("{n}{more}"))
            }
            Call::Exists(q, b) => (d.call("exists", &q), yes(b).to_string()),
            Call::Since(q, t) => {
                let value = match t {
                    Some(t) => elapsed_text(t),
                    None => format!("none within {}", crate::rules::window_text(q.window)),
                };
                (d.call("since", &q), value)
            }
            Call::Latest(q, v) => {
                let ty = d.query_ty(&q);
                (d.call("latest", &q), latest_text(v, ty))
            }
            Call::Ever(q, b) => (format!("in {}", d.call("ever", &q)), yes(b).to_string()),
            Call::List(l, b) => (format!("in list {}", d.list_name(l)), yes(b).to_string()),
        }
    }
}

/// The request's attributes a node reads, in order, without repeats.
fn attrs_in(n: &Node, out: &mut Vec<Attr>) {
    let add = |a: Attr, out: &mut Vec<Attr>| {
        if !out.contains(&a) {
            out.push(a);
        }
    };
    match n {
        Node::Attr(a) | Node::CodeIn(a, _) | Node::BoolIs(a, _) => add(*a, out),
        Node::Not(x) | Node::InConsts(x, _) | Node::InList(x, _) | Node::InEver(x, _) => {
            attrs_in(x, out);
        }
        Node::And(xs) | Node::Or(xs) => xs.iter().for_each(|x| attrs_in(x, out)),
        Node::Cmp(_, a, b) | Node::Add(a, b) | Node::Sub(a, b) => {
            attrs_in(a, out);
            attrs_in(b, out);
        }
        Node::Const(_)
        | Node::LatestIs(..)
        | Node::Count(_)
        | Node::Distinct(..)
        | Node::Exists(_)
        | Node::Since(_)
        | Node::Latest(..)
        | Node::CountsCmp(..)
        | Node::DistinctCmp(..) => {}
    }
}

fn latest_text(v: Option<u128>, ty: Ty) -> String {
    v.map_or_else(|| "none".to_string(), |k| key_text(k, ty))
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn action_text(a: Action) -> &'static str {
    match a {
        Action::Allow => "allow",
        Action::Hold => "hold",
        Action::Deny => "deny",
    }
}

/// `portcullis explain`: prints the run log of one request. Exits 0 with
/// the log, 1 when the id has no explanation or the input cannot be read,
/// 2 when the rules or lists do not load.
pub fn command(rules: Option<&Path>, lists: &[String], id: &str, events: &str) -> ExitCode {
    let rules = match crate::files::load_rules(rules) {
        Ok(r) => Arc::new(r),
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let mut engine = Engine::new(rules);
    if let Err(msg) = crate::files::load_lists(&mut engine, lists) {
        eprintln!("{msg}");
        return ExitCode::from(2);
    }
    let input = match crate::replay::open_events_for(&mut engine, events) {
        Ok(input) => input,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(1);
        }
    };
    let found = match explain(&mut engine, input, id) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("explain stopped: {e}");
            return ExitCode::from(1);
        }
    };
    match found {
        Ok(x) => {
            let stdout = io::stdout();
            let mut out = stdout.lock();
            match out
                .write_all(x.render().as_bytes())
                .and_then(|()| out.flush())
            {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
                Err(e) => {
                    eprintln!("explain: cannot write: {e}");
                    return ExitCode::from(1);
                }
            }
            if x.agrees() {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "explain: {id}: the trace matched other rules than the engine did; this is a bug"
                );
                ExitCode::from(3)
            }
        }
        Err(why) => {
            eprintln!("explain: {id}: {why}");
            ExitCode::from(1)
        }
    }
}
