//! `portcullis backtest`: a new ruleset beside a baseline on recorded
//! events, in one pass.
//!
//! The engine runs the two rulesets joined ([`Paired`]): the baseline
//! decides, so history (completed SIM changes, decisions per agent, holds)
//! is what the baseline's decisions made, and the new rules are evaluated
//! on the same requests against that same history, as shadow rules are.
//! History is read once per request for both, which is what keeps a
//! backtest close to the cost of one replay. The report says so, since a
//! new rule that would hold more requests also would, in production, have
//! changed what later requests see.
//!
//! [`Backtest`] gathers the comparison from decisions; [`report`] renders
//! it for a terminal and [`html`] as one self-contained page.

pub mod html;

use crate::contract::{Event, Kind, Timestamp};
use crate::engine::{Answer, Engine};
use crate::replay::Item;
use crate::rules::{CompiledRules, Outcome, Paired, Verdict};
use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// What `portcullis backtest` was asked for.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The new ruleset.
    #[arg(long)]
    pub rules: PathBuf,
    /// The baseline ruleset (default: the built-in default ruleset).
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Labels ({"id","label","story"} lines, as `gen --labels` writes).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Write every request whose outcome changed here, as JSON lines.
    #[arg(long)]
    pub changes: Option<PathBuf>,
    /// Write a self-contained HTML report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Load a list: NAME=FILE (into both rulesets).
    #[arg(long = "list", value_name = "NAME=FILE")]
    pub lists: Vec<String>,
    /// Flag rules that fire on more than this share of requests.
    #[arg(long, value_name = "SHARE", default_value_t = 0.05)]
    pub hot_share: f64,
    /// Events file, or - for standard input.
    pub events: String,
}

/// Changed requests shown in the terminal; `--changes` gets them all.
pub const CHANGES_SHOWN_MAX: usize = 10;
/// Changed requests kept in memory for the HTML report's table.
pub const REPORT_CHANGES_MAX: usize = 200;
/// Labels read from one file (labels).
pub const LABELS_MAX: usize = 50_000_000;

/// A request's label: fraud or legitimate, and the story it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub fraud: bool,
    pub story: String,
}

/// Labels by request id.
pub type Labels = HashMap<String, Label>;

/// Reads labels (`{"id","label":"fraud"|"legit","story"}` per line). A bad
/// line is reported with its number and skipped; the others are kept.
pub fn read_labels<R: BufRead>(input: R) -> io::Result<(Labels, Vec<String>)> {
    let mut labels = Labels::new();
    let mut problems = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match parse_label(&line) {
            Ok((id, label)) if labels.len() < LABELS_MAX => {
                labels.insert(id, label);
            }
            Ok(_) => {
                problems.push(format!("line {}: over labels_max ({LABELS_MAX})", i + 1));
                break;
            }
            Err(why) => problems.push(format!("line {}: {why}", i + 1)),
        }
    }
    Ok((labels, problems))
}

fn parse_label(line: &str) -> Result<(String, Label), String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    let id = obj
        .get("id")
        .and_then(|x| x.as_str())
        .filter(|s| !s.is_empty())
        .ok_or("field id: expected a non-empty string")?;
    let fraud = match obj.get("label").and_then(|x| x.as_str()) {
        Some("fraud") => true,
        Some("legit") => false,
        _ => return Err("field label: expected \"fraud\" or \"legit\"".into()),
    };
    let story = match obj.get("story") {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(_) => return Err("field story: expected a string".into()),
    };
    Ok((id.to_string(), Label { fraud, story }))
}

/// Counts of outcomes, indexed by `Outcome as usize` (allow, hold, deny).
pub type Outcomes = [u64; 3];

/// Stopped (held or denied) versus let through, for requests labeled
/// fraud and legitimate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Confusion {
    /// Fraud held or denied.
    pub caught: u64,
    /// Fraud allowed.
    pub missed: u64,
    /// Legitimate requests held or denied.
    pub stopped_legit: u64,
    /// Legitimate requests allowed.
    pub passed_legit: u64,
}

impl Confusion {
    fn add(&mut self, fraud: bool, stopped: bool) {
        match (fraud, stopped) {
            (true, true) => self.caught += 1,
            (true, false) => self.missed += 1,
            (false, true) => self.stopped_legit += 1,
            (false, false) => self.passed_legit += 1,
        }
    }
    /// Of the labeled requests stopped, the share that were fraud.
    pub fn precision(&self) -> Option<f64> {
        let stopped = self.caught + self.stopped_legit;
        (stopped > 0).then(|| self.caught as f64 / stopped as f64)
    }
    /// Of the fraud, the share stopped.
    pub fn recall(&self) -> Option<f64> {
        let fraud = self.caught + self.missed;
        (fraud > 0).then(|| self.caught as f64 / fraud as f64)
    }
}

/// Per rule: how often it matched, and on labeled requests, on fraud and
/// on legitimate ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleStats {
    pub hits: u64,
    pub fraud_hits: u64,
    pub legit_hits: u64,
}

/// One side of the comparison.
#[derive(Debug, Clone, Default)]
pub struct Side {
    pub outcomes: Outcomes,
    pub rules: Vec<RuleStats>,
    pub confusion: Confusion,
}

impl Side {
    fn new(rules: &CompiledRules) -> Side {
        Side {
            rules: vec![RuleStats::default(); rules.rules.len()],
            ..Side::default()
        }
    }
    fn add(&mut self, v: &Verdict, label: Option<&Label>) {
        self.outcomes[v.outcome as usize] += 1;
        let bits = v.matched | v.shadow;
        for (i, r) in self.rules.iter_mut().enumerate() {
            if bits & (1 << i) != 0 {
                r.hits += 1;
                match label {
                    Some(l) if l.fraud => r.fraud_hits += 1,
                    Some(_) => r.legit_hits += 1,
                    None => {}
                }
            }
        }
        if let Some(l) = label {
            self.confusion.add(l.fraud, v.outcome != Outcome::Allow);
        }
    }
}

/// A request whose outcome differs between the two rulesets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    pub line: u64,
    pub id: String,
    pub kind: Kind,
    pub at: Timestamp,
    pub baseline: Verdict,
    pub new: Verdict,
    pub label: Option<Label>,
}

/// The comparison, gathered one decision at a time.
#[derive(Debug, Clone)]
pub struct Backtest {
    pub paired: Paired,
    pub baseline: Side,
    pub new: Side,
    /// Outcomes per UTC day (days since 1970-01-01): baseline, new.
    pub days: BTreeMap<i64, (Outcomes, Outcomes)>,
    /// Requests decided (retries not counted again).
    pub requests: u64,
    pub events: u64,
    pub lines: u64,
    /// Lines that were refused (errors), by code.
    pub errors: BTreeMap<&'static str, u64>,
    pub changed: u64,
    /// Changes by (baseline outcome, new outcome).
    pub transitions: [[u64; 3]; 3],
    /// The first changed requests, for reports.
    pub changed_sample: Vec<Changed>,
    /// Labeled requests seen, and labels whose id never came.
    pub labeled: u64,
}

impl Backtest {
    pub fn new(paired: Paired) -> Backtest {
        Backtest {
            baseline: Side::new(&paired.baseline),
            new: Side::new(&paired.new),
            paired,
            days: BTreeMap::new(),
            requests: 0,
            events: 0,
            lines: 0,
            errors: BTreeMap::new(),
            changed: 0,
            transitions: [[0; 3]; 3],
            changed_sample: Vec::new(),
            labeled: 0,
        }
    }

    /// Takes in one fresh decision; returns the change when the outcomes
    /// differ.
    pub fn decision(
        &mut self,
        line: u64,
        ev: &Event,
        at: Timestamp,
        (outcome, matched, shadow): (Outcome, u128, u128),
        labels: &Labels,
    ) -> Option<Changed> {
        let (b, n) = self.paired.split(outcome, matched, shadow);
        let id = ev.id.as_deref().unwrap_or("");
        let label = labels.get(id);
        self.requests += 1;
        if label.is_some() {
            self.labeled += 1;
        }
        self.baseline.add(&b, label);
        self.new.add(&n, label);
        let day = at.unix_secs().div_euclid(86_400);
        let d = self.days.entry(day).or_default();
        d.0[b.outcome as usize] += 1;
        d.1[n.outcome as usize] += 1;
        if b.outcome == n.outcome {
            return None;
        }
        self.changed += 1;
        self.transitions[b.outcome as usize][n.outcome as usize] += 1;
        let change = Changed {
            line,
            id: id.to_string(),
            kind: ev.kind,
            at,
            baseline: b,
            new: n,
            label: label.cloned(),
        };
        if self.changed_sample.len() < REPORT_CHANGES_MAX {
            self.changed_sample.push(change.clone());
        }
        Some(change)
    }

    /// Each outcome with its count under the baseline, under the new
    /// ruleset, and the change.
    pub fn outcome_rows(&self) -> [(Outcome, u64, u64, i64); 3] {
        OUTCOMES.map(|o| {
            let (a, b) = (
                self.baseline.outcomes[o as usize],
                self.new.outcomes[o as usize],
            );
            (o, a, b, b as i64 - a as i64)
        })
    }

    fn error(&mut self, code: &'static str) {
        *self.errors.entry(code).or_default() += 1;
    }
}

/// Runs a backtest over `input`, writing each changed request to
/// `changes` as a JSON line.
pub fn run<R: BufRead, W: Write>(
    paired: Paired,
    engine: &mut Engine,
    input: R,
    labels: &Labels,
    changes: &mut W,
) -> io::Result<Backtest> {
    let mut bt = Backtest::new(paired);
    let mut buf = Vec::with_capacity(1 << 16);
    crate::replay::drive(engine, input, |_, line, item| {
        bt.lines = line;
        match item {
            Item::Blank => {}
            Item::Refused(e) => bt.error(e.code.as_str()),
            Item::Answered(ev, at, answer) => {
                bt.events += 1;
                if let Answer::Decision(d) = answer
                    && !d.retry
                    && let Some(c) =
                        bt.decision(line, ev, at, (d.outcome, d.matched, d.shadow), labels)
                {
                    change_json(&mut buf, &c, &bt.paired);
                }
            }
        }
        if buf.len() >= 1 << 16 {
            changes.write_all(&buf)?;
            buf.clear();
        }
        Ok(())
    })?;
    changes.write_all(&buf)?;
    changes.flush()?;
    Ok(bt)
}

/// One changed request as a JSON line.
pub fn change_json(buf: &mut Vec<u8>, c: &Changed, p: &Paired) {
    let side = |rules: &CompiledRules, v: &Verdict| {
        serde_json::json!({
            "decision": v.outcome.as_str(),
            "rules": names(rules, v.matched),
            "shadow_rules": names(rules, v.shadow),
        })
    };
    let mut v = serde_json::json!({
        "line": c.line,
        "id": c.id,
        "kind": c.kind.as_str(),
        "at": c.at.to_rfc3339_utc(),
        "baseline": side(&p.baseline, &c.baseline),
        "new": side(&p.new, &c.new),
    });
    if let (Some(l), Some(obj)) = (&c.label, v.as_object_mut()) {
        obj.insert(
            "label".into(),
            (if l.fraud { "fraud" } else { "legit" }).into(),
        );
        obj.insert("story".into(), l.story.clone().into());
    }
    // Invariant: a Value of strings and numbers always serializes.
    serde_json::to_writer(&mut *buf, &v).expect("JSON to memory");
    buf.push(b'\n');
}

/// The names of the rules set in `bits`, in ruleset order.
pub fn names(rules: &CompiledRules, bits: u128) -> Vec<&str> {
    rules
        .rules
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, r)| r.name.as_str())
        .collect()
}

/// The terminal report.
pub fn report(bt: &Backtest, hot_share: f64, changes_file: Option<&str>) -> String {
    use std::fmt::Write as _;
    let p = &bt.paired;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "backtest: {} lines, {} events, {} requests decided",
        bt.lines, bt.events, bt.requests
    );
    let _ = writeln!(s, "baseline: {} ({})", p.baseline.label, p.baseline.hash);
    let _ = writeln!(s, "new:      {} ({})", p.new.label, p.new.hash);
    let _ = writeln!(s, "{HISTORY_NOTE}");
    let _ = writeln!(s, "\noutcome      baseline         new      change");
    for (o, a, b, change) in bt.outcome_rows() {
        let _ = writeln!(s, "{:<8} {a:>12} {b:>11} {change:>+11}", o.as_str());
    }
    let _ = writeln!(s, "\nchanged requests: {}", bt.changed);
    for (from, row) in bt.transitions.iter().enumerate() {
        for (to, n) in row.iter().enumerate() {
            if *n > 0 {
                let _ = writeln!(
                    s,
                    "  {} -> {}: {n}",
                    OUTCOMES[from].as_str(),
                    OUTCOMES[to].as_str()
                );
            }
        }
    }
    for c in bt.changed_sample.iter().take(CHANGES_SHOWN_MAX) {
        let _ = writeln!(
            s,
            "  line {} id {} {} at {}: {} [{}] -> {} [{}]{}",
            c.line,
            c.id,
            c.kind.as_str(),
            c.at.to_rfc3339_utc(),
            c.baseline.outcome.as_str(),
            names(&p.baseline, c.baseline.matched).join(", "),
            c.new.outcome.as_str(),
            names(&p.new, c.new.matched).join(", "),
            c.label
                .as_ref()
                .map(|l| format!(
                    " ({}{})",
                    if l.fraud { "fraud" } else { "legit" },
                    if l.story.is_empty() {
                        String::new()
                    } else {
                        format!(", {}", l.story)
                    }
                ))
                .unwrap_or_default()
        );
    }
    if bt.changed as usize > CHANGES_SHOWN_MAX {
        let _ = writeln!(
            s,
            "  ... {} more{}",
            bt.changed as usize - CHANGES_SHOWN_MAX,
            changes_file.map_or_else(
                || " (--changes FILE writes them all)".to_string(),
                |f| format!(" (all in {f})")
            )
        );
    }
    for (title, rules, side) in [
        ("baseline", &p.baseline, &bt.baseline),
        ("new", &p.new, &bt.new),
    ] {
        let _ = writeln!(s, "\nrule hits, {title} ({}):", rules.label);
        for (r, st) in rules.rules.iter().zip(&side.rules) {
            let share = share(st.hits, bt.requests);
            let mut flags = Vec::new();
            if r.shadow {
                flags.push("shadow".to_string());
            }
            if st.hits == 0 {
                flags.push("never fires".to_string());
            } else if share > hot_share {
                flags.push(format!(
                    "fires on over {:.1}% of requests",
                    hot_share * 100.0
                ));
            }
            let labeled = if bt.labeled > 0 {
                let on_labeled = st.fraud_hits + st.legit_hits;
                let precision =
                    percent((on_labeled > 0).then(|| st.fraud_hits as f64 / on_labeled as f64));
                format!(
                    "  fraud {:>7}  legit {:>7}  precision {precision}",
                    st.fraud_hits, st.legit_hits
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "  {:<36} {:>9} {:>6.2}%{labeled}{}",
                r.name,
                st.hits,
                share * 100.0,
                if flags.is_empty() {
                    String::new()
                } else {
                    format!("  [{}]", flags.join("; "))
                }
            );
        }
    }
    if bt.labeled > 0 {
        let _ = writeln!(
            s,
            "\nlabels: {} labeled requests (stopped = held or denied)",
            bt.labeled
        );
        let pct = percent;
        for (title, side) in [("baseline", &bt.baseline), ("new", &bt.new)] {
            let c = &side.confusion;
            let _ = writeln!(
                s,
                "  {title:<9} fraud caught {} missed {}; legit stopped {} passed {}; precision {} recall {}",
                c.caught,
                c.missed,
                c.stopped_legit,
                c.passed_legit,
                pct(c.precision()),
                pct(c.recall())
            );
        }
    }
    if !bt.errors.is_empty() {
        let _ = writeln!(s, "\nerrors (lines refused, as replay refuses them):");
        for (code, n) in &bt.errors {
            let _ = writeln!(s, "  {code}: {n}");
        }
    }
    s
}

/// What every backtest report says of the history the new rules saw.
pub const HISTORY_NOTE: &str = "The new rules were evaluated on the history the baseline's decisions made, as shadow rules are: a request the new rules would have held does not, here, change what later requests see.";

/// The outcomes in their `as usize` order.
pub const OUTCOMES: [Outcome; 3] = [Outcome::Allow, Outcome::Hold, Outcome::Deny];

/// A share as a percentage with one decimal, or `n/a` when undefined.
pub fn percent(x: Option<f64>) -> String {
    x.map_or("n/a".to_string(), |v| format!("{:.1}%", v * 100.0))
}

fn share(n: u64, of: u64) -> f64 {
    if of == 0 { 0.0 } else { n as f64 / of as f64 }
}

/// `portcullis backtest`.
pub fn command(o: &Options) -> ExitCode {
    match command_inner(o) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => {
            eprintln!("{msg}");
            ExitCode::from(code)
        }
    }
}

fn read_source(path: &std::path::Path) -> Result<String, (u8, String)> {
    std::fs::read_to_string(path)
        .map_err(|e| (2, format!("cannot read rules file {}: {e}", path.display())))
}

fn command_inner(o: &Options) -> Result<(), (u8, String)> {
    if !(0.0..=1.0).contains(&o.hot_share) {
        return Err((
            2,
            format!("--hot-share {}: expected a share from 0 to 1", o.hot_share),
        ));
    }
    let new_src = read_source(&o.rules)?;
    let (base_file, base_src) = match &o.baseline {
        Some(p) => (p.display().to_string(), read_source(p)?),
        None => (
            "default.rules".to_string(),
            crate::rules::DEFAULT_RULES.to_string(),
        ),
    };
    let new_file = o.rules.display().to_string();
    let paired = Paired::compile(
        (&base_file, &base_src),
        (&new_file, &new_src),
        &crate::rules::Limits::default(),
    )
    .map_err(|errs| (2, crate::rules::render_errors(&errs)))?;
    let labels = match &o.labels {
        None => Labels::new(),
        Some(p) => {
            let f = std::fs::File::open(p)
                .map_err(|e| (1, format!("cannot read labels file {}: {e}", p.display())))?;
            let (labels, problems) = read_labels(io::BufReader::new(f))
                .map_err(|e| (1, format!("cannot read labels file {}: {e}", p.display())))?;
            for why in problems.iter().take(20) {
                eprintln!("{}: {why} (skipped)", p.display());
            }
            if problems.len() > 20 {
                eprintln!(
                    "{}: {} more bad lines skipped",
                    p.display(),
                    problems.len() - 20
                );
            }
            labels
        }
    };
    let mut engine = Engine::new(std::sync::Arc::new(paired.joint.clone()));
    crate::files::load_lists(&mut engine, &o.lists).map_err(|e| (2, e.to_string()))?;
    let input =
        crate::replay::open_events_for(&mut engine, &o.events).map_err(|e| (1, e.to_string()))?;
    let mut changes: Box<dyn Write> = match &o.changes {
        Some(p) => Box::new(io::BufWriter::new(std::fs::File::create(p).map_err(
            |e| (1, format!("cannot write changes file {}: {e}", p.display())),
        )?)),
        None => Box::new(io::sink()),
    };
    let started = std::time::Instant::now();
    let bt = run(paired, &mut engine, input, &labels, &mut changes)
        .map_err(|e| (1, format!("backtest stopped: {e}")))?;
    let secs = started.elapsed().as_secs_f64();
    let changes_name = o.changes.as_ref().map(|p| p.display().to_string());
    print!("{}", report(&bt, o.hot_share, changes_name.as_deref()));
    println!(
        "\n{} events in {:.2}s ({:.0} events/s)",
        bt.events,
        secs,
        bt.events as f64 / secs.max(1e-9)
    );
    if let Some(p) = &o.report {
        std::fs::write(p, html::render(&bt, o.hot_share))
            .map_err(|e| (1, format!("cannot write report {}: {e}", p.display())))?;
        println!("report: {}", p.display());
    }
    Ok(())
}
