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
use crate::replay::Item;
use crate::rules::{CompiledRules, Paired, Verdict};
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
    let started = crate::gateway::clock::monotonic();
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
