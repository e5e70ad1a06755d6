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
mod tally;

pub use tally::*;

use crate::engine::{Answer, Engine};
use crate::files::FileError;
use crate::replay::Item;
use crate::rules::{CompiledRules, Paired, RuleError, Verdict};
use std::fmt;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
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

/// Why `portcullis backtest` stopped. Each variant names the step and
/// the file; [`BacktestError::exit_code`] is 2 for what the operator wrote
/// (options, rules, lists) and 1 for what could not be read or written.
#[derive(Debug)]
pub enum BacktestError {
    /// `--hot-share` is not a share from 0 to 1.
    HotShare { hot_share: f64 },
    /// A rules file (the new ruleset or the baseline) could not be read.
    RulesRead { path: PathBuf, source: io::Error },
    /// The two rulesets do not compile: every error, in order.
    Rules(Vec<RuleError>),
    /// The labels file could not be opened or read (a bad line is skipped,
    /// not this).
    Labels { path: PathBuf, source: io::Error },
    /// A `--list` argument or its file was refused.
    Lists(FileError),
    /// The events file could not be opened.
    Events(FileError),
    /// The changes file could not be created.
    Changes { path: PathBuf, source: io::Error },
    /// Reading the events or writing the changes failed mid-run.
    Stopped(io::Error),
    /// The HTML report could not be written.
    Report { path: PathBuf, source: io::Error },
}

impl BacktestError {
    /// The command's exit code: 2 for what the operator wrote (an option,
    /// the rules, the lists), 1 for a file that cannot be read or written.
    pub fn exit_code(&self) -> u8 {
        match self {
            BacktestError::HotShare { .. }
            | BacktestError::RulesRead { .. }
            | BacktestError::Rules(_)
            | BacktestError::Lists(_) => 2,
            BacktestError::Labels { .. }
            | BacktestError::Events(_)
            | BacktestError::Changes { .. }
            | BacktestError::Stopped(_)
            | BacktestError::Report { .. } => 1,
        }
    }
}

impl fmt::Display for BacktestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BacktestError::HotShare { hot_share } => {
                write!(f, "--hot-share {hot_share}: expected a share from 0 to 1")
            }
            BacktestError::RulesRead { path, source } => {
                write!(f, "cannot read rules file {}: {source}", path.display())
            }
            BacktestError::Rules(errs) => f.write_str(&crate::rules::render_errors(errs)),
            BacktestError::Labels { path, source } => {
                write!(f, "cannot read labels file {}: {source}", path.display())
            }
            BacktestError::Lists(e) | BacktestError::Events(e) => write!(f, "{e}"),
            BacktestError::Changes { path, source } => {
                write!(f, "cannot write changes file {}: {source}", path.display())
            }
            BacktestError::Stopped(e) => write!(f, "backtest stopped: {e}"),
            BacktestError::Report { path, source } => {
                write!(f, "cannot write report {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for BacktestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BacktestError::RulesRead { source, .. }
            | BacktestError::Labels { source, .. }
            | BacktestError::Changes { source, .. }
            | BacktestError::Report { source, .. } => Some(source),
            BacktestError::Stopped(e) => Some(e),
            BacktestError::Lists(e) | BacktestError::Events(e) => Some(e),
            BacktestError::HotShare { .. } | BacktestError::Rules(_) => None,
        }
    }
}

/// `portcullis backtest`.
pub fn command(o: &Options) -> ExitCode {
    match command_inner(o) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn read_source(path: &Path) -> Result<String, BacktestError> {
    std::fs::read_to_string(path).map_err(|source| BacktestError::RulesRead {
        path: path.to_path_buf(),
        source,
    })
}

fn command_inner(o: &Options) -> Result<(), BacktestError> {
    if !(0.0..=1.0).contains(&o.hot_share) {
        return Err(BacktestError::HotShare {
            hot_share: o.hot_share,
        });
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
    .map_err(BacktestError::Rules)?;
    let labels = match &o.labels {
        None => Labels::new(),
        Some(p) => {
            let labels_err = |source| BacktestError::Labels {
                path: p.clone(),
                source,
            };
            let f = std::fs::File::open(p).map_err(labels_err)?;
            let (labels, problems) = read_labels(io::BufReader::new(f)).map_err(labels_err)?;
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
    crate::files::load_lists(&mut engine, &o.lists).map_err(BacktestError::Lists)?;
    let input =
        crate::replay::open_events_for(&mut engine, &o.events).map_err(BacktestError::Events)?;
    let mut changes: Box<dyn Write> = match &o.changes {
        Some(p) => Box::new(io::BufWriter::new(std::fs::File::create(p).map_err(
            |source| BacktestError::Changes {
                path: p.clone(),
                source,
            },
        )?)),
        None => Box::new(io::sink()),
    };
    let started = crate::gateway::clock::monotonic();
    let bt =
        run(paired, &mut engine, input, &labels, &mut changes).map_err(BacktestError::Stopped)?;
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
        std::fs::write(p, html::render(&bt, o.hot_share)).map_err(|source| {
            BacktestError::Report {
                path: p.clone(),
                source,
            }
        })?;
        println!("report: {}", p.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(rules: &str, hot_share: f64) -> Options {
        Options {
            rules: PathBuf::from(rules),
            baseline: None,
            labels: None,
            changes: None,
            report: None,
            lists: Vec::new(),
            hot_share,
            events: "-".to_string(),
        }
    }

    /// What the operator wrote is exit 2, a file that cannot be read or
    /// written exit 1; the texts are the command's.
    #[test]
    fn each_error_has_its_exit_code_and_text() {
        let err = command_inner(&options("rules/default.rules", 2.0)).expect_err("a share");
        assert!(matches!(err, BacktestError::HotShare { .. }), "{err:?}");
        assert_eq!(err.exit_code(), 2);
        assert_eq!(
            err.to_string(),
            "--hot-share 2: expected a share from 0 to 1"
        );
        let missing = "/nonexistent/portcullis-backtest.rules";
        let err = command_inner(&options(missing, 0.05)).expect_err("no rules file");
        assert!(matches!(err, BacktestError::RulesRead { .. }), "{err:?}");
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string()
                .starts_with(&format!("cannot read rules file {missing}: ")),
            "{err}"
        );
        let mut o = options("rules/default.rules", 0.05);
        o.lists = vec!["nameonly".to_string()];
        let err = command_inner(&o).expect_err("a bad --list");
        assert!(
            matches!(err, BacktestError::Lists(FileError::ListArg { .. })),
            "{err:?}"
        );
        assert_eq!(err.exit_code(), 2);
        assert_eq!(err.to_string(), "--list nameonly: expected NAME=FILE");
        let mut o = options("rules/default.rules", 0.05);
        o.events = "/nonexistent/portcullis-events.jsonl".to_string();
        let err = command_inner(&o).expect_err("no events file");
        assert!(
            matches!(err, BacktestError::Events(FileError::Events { .. })),
            "{err:?}"
        );
        assert_eq!(err.exit_code(), 1);
    }
}
