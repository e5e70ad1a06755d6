//! What a backtest counts: per ruleset the outcomes, the confusion against
//! labels, each rule's hits, and the requests whose outcome changed. The
//! text report, the HTML report and the changes file all read it.

use crate::contract::{Event, Kind, Timestamp};
use crate::rules::{CompiledRules, Outcome, Paired, Verdict};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{self, BufRead};

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

/// Why one line of a labels file was skipped. No variant holds the line
/// or a value of it: a label's id is a request's, and the report names the
/// line by its number.
#[derive(Debug)]
pub enum LabelError {
    /// The line is not JSON.
    NotJson(serde_json::Error),
    /// The line is JSON but not an object.
    NotObject,
    /// `id` is missing, not a string, or empty.
    Id,
    /// `label` is missing or neither `"fraud"` nor `"legit"`.
    Label,
    /// `story` is there and neither a string nor null.
    Story,
}

impl fmt::Display for LabelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabelError::NotJson(e) => write!(f, "not JSON: {e}"),
            LabelError::NotObject => f.write_str("not a JSON object"),
            LabelError::Id => f.write_str("field id: expected a non-empty string"),
            LabelError::Label => f.write_str("field label: expected \"fraud\" or \"legit\""),
            LabelError::Story => f.write_str("field story: expected a string"),
        }
    }
}

impl std::error::Error for LabelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LabelError::NotJson(e) => Some(e),
            LabelError::NotObject | LabelError::Id | LabelError::Label | LabelError::Story => None,
        }
    }
}

fn parse_label(line: &str) -> Result<(String, Label), LabelError> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(LabelError::NotJson)?;
    let obj = v.as_object().ok_or(LabelError::NotObject)?;
    let id = obj
        .get("id")
        .and_then(|x| x.as_str())
        .filter(|s| !s.is_empty())
        .ok_or(LabelError::Id)?;
    let fraud = match obj.get("label").and_then(|x| x.as_str()) {
        Some("fraud") => true,
        Some("legit") => false,
        _ => return Err(LabelError::Label),
    };
    let story = match obj.get("story") {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(_) => return Err(LabelError::Story),
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

    pub(super) fn error(&mut self, code: &'static str) {
        *self.errors.entry(code).or_default() += 1;
    }
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

/// What every backtest report says of the history the new rules saw.
pub const HISTORY_NOTE: &str = "The new rules were evaluated on the history the baseline's decisions made, as shadow rules are: a request the new rules would have held does not, here, change what later requests see.";

/// The outcomes in their `as usize` order.
pub const OUTCOMES: [Outcome; 3] = [Outcome::Allow, Outcome::Hold, Outcome::Deny];

/// A share as a percentage with one decimal, or `n/a` when undefined.
pub fn percent(x: Option<f64>) -> String {
    x.map_or("n/a".to_string(), |v| format!("{:.1}%", v * 100.0))
}

pub fn share(n: u64, of: u64) -> f64 {
    if of == 0 { 0.0 } else { n as f64 / of as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each way a label line is wrong is its own variant, with the text the
    /// report has always given.
    #[test]
    fn a_bad_label_line_says_what_is_wrong() {
        /// Whether an error is the variant a case expects.
        type Is = fn(&LabelError) -> bool;
        let cases: [(&str, Is, &str); 5] = [
            (
                "not json",
                |e| matches!(e, LabelError::NotJson(_)),
                "not JSON: ",
            ),
            (
                "[1]",
                |e| matches!(e, LabelError::NotObject),
                "not a JSON object",
            ),
            (
                r#"{"id":"","label":"fraud"}"#,
                |e| matches!(e, LabelError::Id),
                "field id: expected a non-empty string",
            ),
            (
                r#"{"id":"a","label":"maybe"}"#,
                |e| matches!(e, LabelError::Label),
                "field label: expected \"fraud\" or \"legit\"",
            ),
            (
                r#"{"id":"a","label":"legit","story":1}"#,
                |e| matches!(e, LabelError::Story),
                "field story: expected a string",
            ),
        ];
        for (line, is, want) in cases {
            let err = parse_label(line).expect_err(line);
            assert!(is(&err), "{line}: {err:?}");
            assert!(err.to_string().starts_with(want), "{line}: {err}");
        }
        let (id, label) = parse_label(r#"{"id":"a","label":"fraud"}"#).expect("a label");
        assert_eq!(
            (id.as_str(), label.fraud, label.story.as_str()),
            ("a", true, "")
        );
    }
}
