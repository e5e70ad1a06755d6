//! Property tests of the replay pipeline and the contract parser.
//!
//! What they check, and why:
//! - (a) arbitrary lines (raw bytes, arbitrary text, JSON-ish text, mangled
//!   valid events) through `replay::run` never panic, and the output has the
//!   shape the contract promises: every non-blank line gives at most one
//!   output line, in input order; a line that `parse_line` refuses gives
//!   exactly one error naming its line number with the same code and field;
//!   a valid line is an error exactly when a small model of the issue's
//!   text says so (`out_of_order` against the last good line's `at`,
//!   `id_conflict`, `unknown_ref`), a request gets exactly one decision, a
//!   retried request answers its first answer with its current outcome
//!   (after a verification: allow or deny), and a `device_seen` raises
//!   `unapproved_sim_change` exactly when the model's expected IMSI says so.
//! - (b) realistic traffic from the generator, mutated the way carriers get it
//!   wrong (shuffled windows, raw retries, junk values, dropped fields, blank
//!   lines, truncated lines, verifications of earlier requests), never panics,
//!   keeps the shape of (a), and replays to identical bytes twice: fraud
//!   teams compare replays, so replay must be deterministic.
//! - (c) `parse_line` never panics on strings from a JSON-ish alphabet; what
//!   it accepts is strict JSON (serde_json agrees) and survives a round trip
//!   through `Event::write_json`; what strict JSON accepts as an object is
//!   never called `bad_json`.
//! - (d) a retried request (the same line again later, with a later `at`)
//!   gets byte-for-byte the first answer and changes nothing else; a retried
//!   signal writes nothing and changes nothing.
//! - (e) the canonical form behind fingerprints and held requests reads back
//!   as the event it was written from (less `at`, which it leaves out).
//!
//! Every property runs 64 cases from a fixed seed with no failure
//! persistence, so a run is reproducible and leaves no files behind
//! (`PROPTEST_CASES` and `PROPTEST_RNG_SEED` widen a hunt by hand).
//! `the_shape_checker_rejects_wrong_answers` shows the checker can fail.

use portcullis::contract::{AtRule, Event, Kind, Timestamp, parse_line};
use portcullis::engine::Engine;
use portcullis::rules::CompiledRules;
use portcullis::traffic::{self, Config};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm, RngSeed, TestCaseError};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

fn config(seed: u64) -> ProptestConfig {
    ProptestConfig {
        // 64 by default; `PROPTEST_CASES=5000` for a longer hunt (same seed).
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(64),
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::ChaCha,
        // Fixed; `PROPTEST_RNG_SEED=N` explores elsewhere.
        rng_seed: RngSeed::Fixed(
            std::env::var("PROPTEST_RNG_SEED")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(seed),
        ),
        ..ProptestConfig::default()
    }
}

fn default_rules() -> Arc<CompiledRules> {
    static RULES: OnceLock<Arc<CompiledRules>> = OnceLock::new();
    RULES
        .get_or_init(|| Arc::new(CompiledRules::default_rules()))
        .clone()
}

/// Replays `input` with a fresh engine and the default rules.
fn replay(input: &[u8]) -> Vec<u8> {
    let mut engine = Engine::new(default_rules());
    let mut out = Vec::new();
    portcullis::replay::run(&mut engine, input, &mut out).expect("in-memory replay");
    out
}

/// The input's lines as `BufRead::read_until(b'\n')` sees them, without the
/// newline: a last line without a newline counts, an empty tail does not.
fn input_lines(input: &[u8]) -> Vec<&[u8]> {
    let mut lines: Vec<&[u8]> = input.split(|b| *b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
}

/// Blank: nothing but spaces, tabs and carriage returns.
fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r'))
}

fn opt_str(v: Option<&str>) -> Value {
    v.map_or(Value::Null, |s| Value::String(s.to_string()))
}

/// What an earlier valid line with an `id` left behind.
enum Record {
    Signal(Vec<u8>),
    Decision {
        /// The canonical form of the request.
        fingerprint: Vec<u8>,
        /// The first answer, as written.
        answer: Value,
        /// The outcome now (a released hold reads allow, a failed one deny).
        outcome: String,
    },
}

impl Record {
    fn fingerprint(&self) -> &[u8] {
        match self {
            Record::Signal(f) | Record::Decision { fingerprint: f, .. } => f,
        }
    }
}

/// A small model of what replay must answer, from the text of issue 2 only:
/// the order mark, idempotency records, held requests, and each line's
/// expected IMSI (for `unapproved_sim_change` alerts). It does not model the
/// rules: a fresh request may get any decision, which the model then holds
/// replay to for the request's retries and verifications.
#[derive(Default)]
struct Model {
    mark: Option<Timestamp>,
    records: HashMap<String, Record>,
    /// Requests on hold now: id -> the request.
    held: HashMap<String, Event>,
    /// Per line: the expected IMSI, and whether a completed SIM change
    /// without `imsi` left it waiting for the next different one.
    sims: HashMap<String, (Option<String>, bool)>,
}

/// What the model expects for one valid, in-order line.
enum Expect {
    Error(&'static str, &'static str),
    Fresh,
    Retry,
    Signal,
    SignalRetry,
}

impl Model {
    fn expect(&self, ev: &Event) -> Expect {
        if let Some(id) = &ev.id
            && let Some(rec) = self.records.get(&**id)
        {
            return match rec {
                _ if rec.fingerprint() != ev.canonical() => Expect::Error("id_conflict", "id"),
                Record::Signal(_) => Expect::SignalRetry,
                Record::Decision { .. } => Expect::Retry,
            };
        }
        if ev.kind == Kind::Verification
            && !ev
                .reference
                .as_deref()
                .is_some_and(|r| self.held.contains_key(r))
        {
            return Expect::Error("unknown_ref", "ref");
        }
        if ev.kind.is_decision() {
            Expect::Fresh
        } else {
            Expect::Signal
        }
    }

    /// A completed SIM change of `ev`'s line.
    fn sim_change_completed(&mut self, ev: &Event) {
        if !ev.kind.is_sim_change() {
            return;
        }
        let Some(m) = ev.msisdn else { return };
        let state = self.sims.entry(m.to_string()).or_default();
        match ev.imsi {
            Some(imsi) => *state = (Some(imsi.to_string()), false),
            None => state.1 = true,
        }
    }

    /// Applies a `device_seen`; returns whether it raises the alert.
    fn device_seen(&mut self, ev: &Event) -> bool {
        let (Some(m), Some(imsi)) = (ev.msisdn, ev.imsi) else {
            return false;
        };
        let imsi = imsi.to_string();
        let (expected, waiting) = self.sims.entry(m.to_string()).or_default();
        let differs = expected.as_deref() != Some(imsi.as_str());
        if *waiting {
            if differs {
                *expected = Some(imsi);
                *waiting = false;
            }
            false
        } else if expected.is_none() {
            *expected = Some(imsi);
            false
        } else if differs {
            *expected = Some(imsi);
            true
        } else {
            false
        }
    }
}

fn fail(msg: String) -> TestCaseError {
    TestCaseError::fail(msg)
}

/// Checks that `output` is what replay must answer to `input`: see (a) above
/// and [`Model`].
fn check_answers(input: &[u8], output: &[u8]) -> Result<(), TestCaseError> {
    let text =
        std::str::from_utf8(output).map_err(|e| fail(format!("output is not UTF-8: {e}")))?;
    prop_assert!(
        text.is_empty() || text.ends_with('\n'),
        "output does not end its last line"
    );
    let mut outs = Vec::new();
    for l in text.lines() {
        let v: Value = serde_json::from_str(l)
            .map_err(|e| fail(format!("output line is not JSON: {e}: {l}")))?;
        prop_assert!(v.is_object(), "output line is not an object: {}", l);
        outs.push(v);
    }
    let mut model = Model::default();
    let mut k = 0usize;
    let mut non_blank = 0usize;
    for (i, raw) in input_lines(input).into_iter().enumerate() {
        let line_no = i as u64 + 1;
        if is_blank(raw) {
            continue;
        }
        non_blank += 1;
        let next = outs.get(k);
        let error_here = next.filter(|o| o.get("error").is_some() && o["line"] == json!(line_no));
        if let Some(o) = error_here {
            prop_assert_eq!(&o["error"]["retryable"], &json!(false), "{}", o);
            prop_assert!(o["error"]["message"].is_string(), "{}", o);
        }
        let shown = String::from_utf8_lossy(raw);
        let parsed = std::str::from_utf8(raw)
            .ok()
            .map(|s| parse_line(s, AtRule::Required));
        let ev = match parsed {
            None | Some(Err(_)) => {
                let Some(o) = error_here else {
                    return Err(fail(format!(
                        "line {line_no} {shown:?} is not a valid event, but the next output is {next:?}"
                    )));
                };
                match parsed {
                    Some(Err(e)) => {
                        prop_assert_eq!(
                            &o["error"]["code"],
                            &json!(e.code.as_str()),
                            "line {}: {}",
                            line_no,
                            o
                        );
                        prop_assert_eq!(
                            &o["error"]["field"],
                            &opt_str(e.field.as_deref()),
                            "line {}: {}",
                            line_no,
                            o
                        );
                        prop_assert_eq!(
                            &o["id"],
                            &opt_str(e.id.as_deref()),
                            "line {}: {}",
                            line_no,
                            o
                        );
                    }
                    _ => {
                        prop_assert_eq!(
                            &o["error"]["code"],
                            &json!("bad_json"),
                            "non-UTF-8 line {}",
                            line_no
                        );
                        prop_assert_eq!(&o["id"], &Value::Null);
                    }
                }
                k += 1;
                continue;
            }
            Some(Ok(ev)) => ev,
        };
        let at = ev.at.expect("AtRule::Required gives at");
        let id = opt_str(ev.id.as_deref());
        let late = model.mark.is_some_and(|m| at < m);
        let expect = model.expect(&ev);
        if late || matches!(expect, Expect::Error(..)) {
            let Some(o) = error_here else {
                return Err(fail(format!(
                    "line {line_no} {shown:?} must be an error (late: {late}), but the next output is {next:?}"
                )));
            };
            let code = o["error"]["code"].as_str().unwrap_or("");
            let field = o["error"]["field"].as_str().unwrap_or("");
            // With several faults, any of them may be named.
            let ok = (late && (code, field) == ("out_of_order", "at"))
                || matches!(expect, Expect::Error(c, f) if (code, field) == (c, f));
            prop_assert!(
                ok,
                "line {} {:?} (late: {}) got {}",
                line_no,
                shown,
                late,
                o
            );
            prop_assert_eq!(&o["id"], &id, "line {}: {}", line_no, o);
            k += 1;
            continue;
        }
        if let Some(o) = error_here {
            return Err(fail(format!(
                "line {line_no} {shown:?} is valid and in order, but got {o}"
            )));
        }
        model.mark = Some(at);
        let key = ev.id.as_deref().map(str::to_string);
        match expect {
            Expect::Error(..) => unreachable!("handled above"),
            // A retried signal writes nothing and changes nothing.
            Expect::SignalRetry => {}
            Expect::Fresh | Expect::Retry => {
                let Some(o) = next.filter(|o| o.get("decision").is_some()) else {
                    return Err(fail(format!(
                        "request line {line_no} {shown:?} got no decision; next output {next:?}"
                    )));
                };
                prop_assert_eq!(&o["id"], &id, "line {}: {}", line_no, o);
                let d = o["decision"].as_str().unwrap_or("").to_string();
                prop_assert!(
                    matches!(d.as_str(), "allow" | "hold" | "deny"),
                    "line {}: {}",
                    line_no,
                    o
                );
                for f in ["rules", "verify", "shadow_rules"] {
                    prop_assert!(
                        o[f].is_array(),
                        "line {}: {} has no array {}",
                        line_no,
                        o,
                        f
                    );
                }
                prop_assert!(
                    o["ruleset"]["hash"].is_string() && o["ruleset"]["label"].is_string(),
                    "{}",
                    o
                );
                let key = key.expect("requests have ids");
                if let Expect::Retry = expect {
                    let Some(Record::Decision {
                        answer, outcome, ..
                    }) = model.records.get(&key)
                    else {
                        return Err(fail(format!(
                            "line {line_no}: a retry of a signal id got a decision {o}"
                        )));
                    };
                    prop_assert_eq!(
                        &d,
                        outcome,
                        "line {}: a retry answers the current outcome: {}",
                        line_no,
                        o
                    );
                    for f in ["rules", "shadow_rules", "ruleset"] {
                        prop_assert_eq!(
                            &o[f],
                            &answer[f],
                            "line {}: a retry changed {}: {}",
                            line_no,
                            f,
                            o
                        );
                    }
                    if answer["decision"] == json!(d) {
                        prop_assert_eq!(
                            o,
                            answer,
                            "line {}: a retry answers as the first time",
                            line_no
                        );
                    }
                } else {
                    if d == "hold" {
                        model.held.insert(key.clone(), ev.clone());
                    }
                    if d == "allow" {
                        model.sim_change_completed(&ev);
                    }
                    model.records.insert(
                        key,
                        Record::Decision {
                            fingerprint: ev.canonical(),
                            answer: o.clone(),
                            outcome: d,
                        },
                    );
                }
                k += 1;
            }
            Expect::Signal => {
                if let Some(key) = key {
                    model.records.insert(key, Record::Signal(ev.canonical()));
                }
                match ev.kind {
                    Kind::Verification => {
                        let r = ev.reference.as_deref().expect("verification has ref");
                        let held = model.held.remove(r).expect("checked by Model::expect");
                        let pass = ev.result == Some(portcullis::contract::VerifyResult::Pass);
                        if let Some(Record::Decision { outcome, .. }) = model.records.get_mut(r) {
                            *outcome = if pass { "allow" } else { "deny" }.to_string();
                        }
                        if pass {
                            model.sim_change_completed(&held);
                        }
                    }
                    Kind::DeviceSeen if model.device_seen(&ev) => {
                        let Some(o) = next.filter(|o| o.get("alert").is_some()) else {
                            return Err(fail(format!(
                                "line {line_no} {shown:?} must raise an alert; next output {next:?}"
                            )));
                        };
                        prop_assert_eq!(&o["alert"], &json!("unapproved_sim_change"));
                        prop_assert_eq!(
                            &o["msisdn"],
                            &opt_str(ev.msisdn.map(|m| m.to_string()).as_deref()),
                            "{}",
                            o
                        );
                        let t = o["at"].as_str().unwrap_or("");
                        prop_assert!(
                            t.ends_with('Z') && Timestamp::parse(t).ok() == Some(at),
                            "{}",
                            o
                        );
                        k += 1;
                    }
                    _ => {}
                }
            }
        }
    }
    prop_assert_eq!(
        k,
        outs.len(),
        "outputs left unexplained: {:?}",
        &outs[k.min(outs.len())..]
    );
    prop_assert!(outs.len() <= non_blank);
    Ok(())
}

// ---------------------------------------------------------------------------
// Lines

const SWAP: &str = r#"{"id":"s1","kind":"sim_swap","at":"2026-03-01T10:00:00Z","msisdn":"+447700900123","account":"A1","iccid":"8944110000000000008","imei":"260531793113837"}"#;
const PORT: &str = r#"{"id":"p1","kind":"port_out","at":"2026-03-01T10:00:00Z","msisdn":"+447700900123","account":"A1","pin_ok":false}"#;
const ESIM: &str = r#"{"id":"e1","kind":"esim_transfer","at":"2026-03-01T10:00:00Z","msisdn":"+447700900123","account":"A1","eid":"89049032123451234512345678901235","channel":"online"}"#;
const SEEN: &str = r#"{"kind":"device_seen","at":"2026-03-01T10:00:00Z","msisdn":"+447700900123","imsi":"234150000000001","imei":"356938035643809"}"#;
const SEEN2: &str = r#"{"kind":"device_seen","at":"2026-03-01T10:00:00Z","msisdn":"+447700900123","imsi":"234150000000002","imei":"356938035643809"}"#;
const VERIFY: &str =
    r#"{"kind":"verification","at":"2026-03-01T10:00:00Z","ref":"e1","result":"pass"}"#;
const LIST: &str = r#"{"kind":"list_add","at":"2026-03-01T10:00:00Z","list":"blocked_imei","value":"260531793113837"}"#;
const LOCK: &str = r#"{"id":"l1","kind":"lock","at":"2026-03-01T10:00:00Z","msisdn":"+447700900123","scope":"sim_change"}"#;
const CHANGE: &str = r#"{"id":"c1","kind":"account_change","at":"2026-03-01T10:00:00Z","account":"A1","change":"email"}"#;
const TEMPLATES: &[&str] = &[SWAP, PORT, ESIM, SEEN, SEEN2, VERIFY, LIST, LOCK, CHANGE];

/// Times around 2026-03-01T10:00:00Z, the templates' own `at`.
const TIMES: &[&str] = &[
    "2026-03-01T09:59:59.999999999Z",
    "2026-03-01T10:00:00Z",
    "2026-03-01T10:00:00.000000001Z",
    "2026-03-01T11:00:00+01:00",
    "2026-03-01T10:00:00.5z",
    "2026-03-01t09:00:00.000000001-01:00",
    "2026-03-02T10:00:00Z",
];

/// Pieces of JSON and of the contract, to build lines that get far into the parser.
const PIECES: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"",
    " ",
    "\t",
    "\r",
    "\\",
    "null",
    "true",
    "false",
    "0",
    "-1",
    "1.5e3",
    "1e999",
    "NaN",
    "Infinity",
    "-Infinity",
    "\"id\"",
    "\"kind\"",
    "\"at\"",
    "\"k\\u0069nd\"",
    "\"sim_swap\"",
    "\"port_out\"",
    "\"device_seen\"",
    "\"verification\"",
    "\"msisdn\"",
    "\"+447700900123\"",
    "\"account\"",
    "\"A1\"",
    "\"iccid\"",
    "\"8944110000000000008\"",
    "\"imei\"",
    "\"260531793113837\"",
    "\"pin_ok\"",
    "\"ref\"",
    "\"result\"",
    "\"pass\"",
    "\"2026-03-01T10:00:00Z\"",
    "\"2026-02-29T10:00:00Z\"",
    "\"2026-03-01T23:59:60Z\"",
    "\"\\ud800\"",
    "\"\\udc00\\ud800\"",
    "\"\\ud83d\\ude00\"",
    "\"\\u0000\"",
    "\"\\n\"",
    "\"\u{1}\"",
    "\"é\"",
    "\u{2028}",
    "\u{feff}",
    "\"\"",
    "\"x\"",
    "{\"a\":{\"a\":1,\"a\":2}}",
];

fn jsonish() -> impl Strategy<Value = String> {
    prop_oneof![
        vec(prop::sample::select(PIECES), 0..24).prop_map(|p| p.concat()),
        "[{}\\[\\]\":,\\\\ a-z0-9.eE+\\-_]{0,60}",
        // A valid object with one piece spliced in somewhere.
        (
            prop::sample::select(TEMPLATES),
            any::<prop::sample::Index>(),
            prop::sample::select(PIECES)
        )
            .prop_map(|(t, i, p)| {
                let mut at = i.index(t.len() + 1);
                while !t.is_char_boundary(at) {
                    at -= 1;
                }
                format!("{}{p}{}", &t[..at], &t[at..])
            }),
    ]
}

/// One line of input for (a): anything at all, or something close to valid.
fn any_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => vec(any::<u8>(), 0..80),
        2 => "\\PC{0,60}".prop_map(String::into_bytes),
        3 => jsonish().prop_map(String::into_bytes),
        3 => (prop::sample::select(TEMPLATES), vec(any::<(u8, u8)>(), 0..3)).prop_map(|(t, edits)| {
            let mut b = t.as_bytes().to_vec();
            for (pos, byte) in edits {
                let i = usize::from(pos) % b.len();
                b[i] = byte;
            }
            b
        }),
        2 => prop::sample::select(TEMPLATES).prop_map(|t| t.as_bytes().to_vec()),
        // Valid lines at times around the templates' own, some in another
        // offset, so that order and exact comparisons come into play.
        3 => (prop::sample::select(TEMPLATES), prop::sample::select(TIMES))
            .prop_map(|(t, at)| t.replace("2026-03-01T10:00:00Z", at).into_bytes()),
        1 => prop::sample::select(vec!["", " ", "\t", "\r", " \t\r "]).prop_map(|s| s.as_bytes().to_vec()),
    ]
}

// ---------------------------------------------------------------------------
// Mutations of generated traffic

#[derive(Debug, Clone)]
enum Mutation {
    /// Swap two neighbouring lines.
    Swap(prop::sample::Index),
    /// Copy a line to a later position unchanged (a raw retry).
    Retry(prop::sample::Index, prop::sample::Index),
    /// Copy a line to a later position with the `at` of the line before it.
    RetryLater(prop::sample::Index, prop::sample::Index),
    /// Set one field to a junk value.
    Junk(
        prop::sample::Index,
        prop::sample::Index,
        prop::sample::Index,
    ),
    /// Drop one field.
    Drop(prop::sample::Index, prop::sample::Index),
    /// Insert a blank line.
    Blank(prop::sample::Index, prop::sample::Index),
    /// Cut a line short.
    Truncate(prop::sample::Index, prop::sample::Index),
    /// A verification of some earlier line's id, at the time of the line before it.
    Verify(prop::sample::Index, prop::sample::Index, bool),
    /// Reuse a line's id for other content (another account), later on.
    Conflict(prop::sample::Index, prop::sample::Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    use prop::sample::Index;
    prop_oneof![
        any::<Index>().prop_map(Mutation::Swap),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Retry(a, b)),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::RetryLater(a, b)),
        (any::<Index>(), any::<Index>(), any::<Index>())
            .prop_map(|(a, b, c)| Mutation::Junk(a, b, c)),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Drop(a, b)),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Blank(a, b)),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Truncate(a, b)),
        (any::<Index>(), any::<Index>(), any::<bool>())
            .prop_map(|(a, b, c)| Mutation::Verify(a, b, c)),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Conflict(a, b)),
    ]
}

fn junk_values() -> Vec<Value> {
    vec![
        json!(5),
        json!(-0.5),
        Value::Null,
        json!(true),
        json!(""),
        json!(" "),
        json!("x".repeat(200)),
        json!([]),
        json!({}),
        json!({"at": "2026-03-01T10:00:00Z"}),
        json!("+447700900123"),
        json!("+4477009001230000000"),
        json!("2026-13-01T00:00:00Z"),
        json!("2026-03-01T10:00:00"),
        json!("1970-01-01T00:00:00Z"),
        json!("9999-12-31T23:59:59.999999999Z"),
        json!("NaN"),
        json!("\u{0}"),
        json!("é"),
        json!("8944110000000000009"),
        json!("260531793113838"),
        json!("sim_swap"),
        json!("verification"),
        json!("pass"),
        json!("a b"),
    ]
}

fn object(line: &str) -> Option<Map<String, Value>> {
    match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

fn with_at(line: &str, at: &Value) -> String {
    match object(line) {
        Some(mut m) => {
            m.insert("at".into(), at.clone());
            Value::Object(m).to_string()
        }
        None => line.to_string(),
    }
}

/// The `at` of the nearest line before position `i` that has one.
fn at_before(lines: &[String], i: usize) -> Value {
    lines[..i]
        .iter()
        .rev()
        .find_map(|l| object(l).and_then(|m| m.get("at").cloned()))
        .unwrap_or(json!("2026-01-01T00:00:00Z"))
}

fn apply(lines: &mut Vec<String>, m: &Mutation) {
    if lines.is_empty() {
        return;
    }
    let n = lines.len();
    match m {
        Mutation::Swap(i) => {
            let i = i.index(n);
            if i + 1 < n {
                lines.swap(i, i + 1);
            }
        }
        Mutation::Retry(from, to) => {
            let from = from.index(n);
            let to = from + 1 + to.index(n - from);
            lines.insert(to, lines[from].clone());
        }
        Mutation::RetryLater(from, to) => {
            let from = from.index(n);
            let to = from + 1 + to.index(n - from);
            let at = at_before(lines, to);
            lines.insert(to, with_at(&lines[from], &at));
        }
        Mutation::Conflict(from, to) => {
            let from = from.index(n);
            let to = from + 1 + to.index(n - from);
            let at = at_before(lines, to);
            if let Some(mut obj) = object(&lines[from])
                && obj.contains_key("account")
            {
                obj.insert("account".into(), json!("acct-conflict"));
                obj.insert("at".into(), at);
                lines.insert(to, Value::Object(obj).to_string());
            }
        }
        Mutation::Junk(i, field, pick) => {
            let i = i.index(n);
            if let Some(mut obj) = object(&lines[i]) {
                let keys: Vec<String> = obj.keys().cloned().collect();
                if keys.is_empty() {
                    return;
                }
                let junk = junk_values();
                obj.insert(
                    keys[field.index(keys.len())].clone(),
                    junk[pick.index(junk.len())].clone(),
                );
                lines[i] = Value::Object(obj).to_string();
            }
        }
        Mutation::Drop(i, field) => {
            let i = i.index(n);
            if let Some(mut obj) = object(&lines[i]) {
                let keys: Vec<String> = obj.keys().cloned().collect();
                if keys.is_empty() {
                    return;
                }
                obj.remove(&keys[field.index(keys.len())]);
                lines[i] = Value::Object(obj).to_string();
            }
        }
        Mutation::Blank(i, which) => {
            let blanks = ["", " ", "\t\t", "\r", "  \r"];
            lines.insert(
                i.index(n + 1),
                blanks[which.index(blanks.len())].to_string(),
            );
        }
        Mutation::Truncate(i, cut) => {
            let i = i.index(n);
            let l = &lines[i];
            let mut c = cut.index(l.len().max(1));
            while !l.is_char_boundary(c) {
                c -= 1;
            }
            lines[i] = l[..c].to_string();
        }
        Mutation::Verify(of, to, pass) => {
            let of = of.index(n);
            let Some(id) = object(&lines[of]).and_then(|m| m.get("id").cloned()) else {
                return;
            };
            let to = of + 1 + to.index(n - of);
            let at = at_before(lines, to);
            let v = json!({"kind": "verification", "at": at, "ref": id,
                           "result": if *pass { "pass" } else { "fail" }});
            lines.insert(to, v.to_string());
        }
    }
}

/// `n` lines of generated traffic: a small population and many attack
/// stories, so that rules fire and lines share history.
fn traffic(seed: u64, n: u64) -> Vec<String> {
    let cfg = Config {
        seed,
        subscribers: 40,
        attacks_per_10k: 800,
        ..Config::default()
    };
    let mut out = Vec::new();
    traffic::write(&cfg, n, &mut out).expect("writing to a Vec");
    String::from_utf8(out)
        .expect("generated traffic is UTF-8")
        .lines()
        .map(str::to_string)
        .collect()
}

fn joined(lines: &[String]) -> Vec<u8> {
    let mut s = lines.join("\n");
    s.push('\n');
    s.into_bytes()
}

// ---------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(config(0x5eed_0001))]

    /// (a) Arbitrary lines: no panic, and the output has the promised shape.
    #[test]
    fn arbitrary_lines_give_one_answer_per_line_at_most(
        lines in vec(any_line(), 0..30),
        trailing_newline in any::<bool>(),
    ) {
        let mut input = lines.join(&b'\n');
        if trailing_newline {
            input.push(b'\n');
        }
        let out = replay(&input);
        check_answers(&input, &out)?;
    }

    /// (b) Mutated generated traffic: no panic, promised shape, deterministic bytes.
    #[test]
    fn mutated_traffic_replays_deterministically(
        seed in 0u64..1_000,
        mutations in vec(mutation(), 0..16),
    ) {
        let mut lines = traffic(seed, 120);
        for m in &mutations {
            apply(&mut lines, m);
        }
        let input = joined(&lines);
        let first = replay(&input);
        let second = replay(&input);
        prop_assert!(first == second, "two replays of the same input differ");
        check_answers(&input, &first)?;
    }

    /// (c) The parser never panics, accepts only strict JSON, and round-trips what it accepts.
    #[test]
    fn parse_line_is_total_and_strict(line in jsonish()) {
        for rule in [AtRule::Required, AtRule::Optional] {
            match parse_line(&line, rule) {
                Ok(ev) => {
                    let strict = serde_json::from_str::<Value>(&line);
                    prop_assert!(
                        matches!(strict, Ok(Value::Object(_))),
                        "parse_line accepted {:?}, which is not a strict JSON object: {:?}", line, strict
                    );
                    let mut buf = Vec::new();
                    ev.write_json(&mut buf);
                    let text = String::from_utf8(buf).expect("write_json writes UTF-8");
                    let back: Result<Event, _> = parse_line(text.trim_end_matches('\n'), rule);
                    prop_assert_eq!(back.as_ref().ok(), Some(&ev), "{:?} wrote {:?}", line, text);
                }
                Err(e) => {
                    if e.code == portcullis::contract::ErrorCode::BadJson {
                        let strict = serde_json::from_str::<Value>(&line);
                        prop_assert!(
                            !matches!(strict, Ok(Value::Object(_))),
                            "{:?} is a JSON object but parse_line says bad_json: {}", line, e
                        );
                    }
                }
            }
        }
    }

    /// (e) The canonical form the engine fingerprints (and a hold keeps) reads
    /// back as the same event, less `at`: mutated generated traffic, and
    /// every example line of the contract.
    #[test]
    fn the_canonical_form_reads_back(seed in 0u64..1_000, mutations in vec(mutation(), 0..20)) {
        let mut lines = traffic(seed, 300);
        for m in &mutations {
            apply(&mut lines, m);
        }
        let examples = include_str!("../../proto/examples/events.jsonl");
        let mut buf = Vec::new();
        for line in lines.iter().map(String::as_str).chain(examples.lines()) {
            let Ok(ev) = parse_line(line, AtRule::Optional) else { continue };
            ev.canonical_into(&mut buf);
            let back = Event::from_canonical(&buf);
            let want = Event { at: None, ..ev.clone() };
            prop_assert_eq!(back.as_ref(), Some(&want), "{}", line);
            prop_assert_eq!(back.map(|b| b.canonical()), Some(buf.clone()));
        }
    }

    /// (d) A retried request gets the same answer, and a retry changes nothing.
    #[test]
    fn a_retried_request_gets_the_same_answer(
        seed in 0u64..1_000,
        pick in any::<prop::sample::Index>(),
        place in any::<prop::sample::Index>(),
    ) {
        let lines = traffic(seed, 150);
        let decisions: Vec<usize> = (0..lines.len())
            .filter(|&i| object(&lines[i]).is_some_and(|m| m.contains_key("id")))
            .collect();
        prop_assume!(!decisions.is_empty());
        let i = decisions[pick.index(decisions.len())];
        let j = i + 1 + place.index(lines.len() - i);
        let at = at_before(&lines, j);
        let retry = with_at(&lines[i], &at);
        let first_at = object(&lines[i]).and_then(|m| m.get("at").cloned());
        let t = |v: &Value| v.as_str().and_then(|s| Timestamp::parse(s).ok());
        prop_assert!(first_at.as_ref().and_then(t) <= t(&at), "the retry is not later");

        let without = replay(&joined(&lines));
        let mut with_lines = lines.clone();
        with_lines.insert(j, retry);
        let with = replay(&joined(&with_lines));
        let without: Vec<&str> = std::str::from_utf8(&without).expect("UTF-8").lines().collect();
        let with: Vec<&str> = std::str::from_utf8(&with).expect("UTF-8").lines().collect();
        // Outputs before the retry's position, and the first answer.
        let before = std::str::from_utf8(&replay(&joined(&lines[..j]))).expect("UTF-8").lines().count();
        let first_before = std::str::from_utf8(&replay(&joined(&lines[..i]))).expect("UTF-8").lines().count();
        let first_answer = without[first_before];
        let id = object(&lines[i]).and_then(|m| m.get("id").cloned());
        let answer: Value = serde_json::from_str(first_answer).expect("JSON");
        prop_assert_eq!(answer.get("id"), id.as_ref(), "not the request's answer: {}", first_answer);
        prop_assert!(answer.get("decision").is_some(), "the first answer is not a decision: {}", first_answer);
        let mut expected = without.clone();
        expected.insert(before, first_answer);
        prop_assert_eq!(with, expected);
    }

    /// (d) A retried signal (same id, same content, later at) writes nothing and changes nothing.
    #[test]
    fn a_retried_signal_changes_nothing(
        seed in 0u64..1_000,
        pick in any::<prop::sample::Index>(),
        place in any::<prop::sample::Index>(),
    ) {
        let mut lines = traffic(seed, 150);
        let signals: Vec<usize> = (0..lines.len())
            .filter(|&i| object(&lines[i]).is_some_and(|m| !m.contains_key("id")))
            .collect();
        prop_assume!(!signals.is_empty());
        let i = signals[pick.index(signals.len())];
        let mut obj = object(&lines[i]).expect("generated lines are objects");
        obj.insert("id".into(), json!("signal-retry-1"));
        lines[i] = Value::Object(obj).to_string();
        let j = i + 1 + place.index(lines.len() - i);
        let at = at_before(&lines, j);
        let mut with_lines = lines.clone();
        with_lines.insert(j, with_at(&lines[i], &at));
        let without = replay(&joined(&lines));
        let with = replay(&joined(&with_lines));
        prop_assert_eq!(String::from_utf8_lossy(&with), String::from_utf8_lossy(&without));
    }
}

/// The properties above can fail: a checker that accepted anything would
/// prove nothing. These hand-made outputs break the shape (a) promises.
#[test]
fn the_shape_checker_rejects_wrong_answers() {
    let input = format!("{SWAP}\nnot json\n");
    let good = replay(input.as_bytes());
    assert!(check_answers(input.as_bytes(), &good).is_ok());
    let text = String::from_utf8(good).expect("UTF-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    // A missing answer, an extra answer, answers swapped, an error on the wrong line.
    let wrong = [
        format!("{}\n", lines[0]),
        format!("{text}{}\n", lines[1]),
        format!("{}\n{}\n", lines[1], lines[0]),
        text.replace("\"line\":2", "\"line\":1"),
    ];
    for w in &wrong {
        assert!(
            check_answers(input.as_bytes(), w.as_bytes()).is_err(),
            "accepted:\n{w}"
        );
    }
    // The model: a retry must answer as the first time, and a SIM the line
    // was never given must raise the alert.
    let input = format!("{SWAP}\n{SWAP}\n{SEEN}\n{SEEN2}\n");
    let good = replay(input.as_bytes());
    assert!(check_answers(input.as_bytes(), &good).is_ok());
    let text = String::from_utf8(good).expect("UTF-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[2].contains("unapproved_sim_change"), "{text}");
    let changed = lines[1].replace("\"allow\"", "\"deny\"");
    assert_ne!(changed, lines[1]);
    for w in [
        format!("{}\n{}\n", lines[0], lines[1]),
        format!("{}\n{changed}\n{}\n", lines[0], lines[2]),
    ] {
        assert!(
            check_answers(input.as_bytes(), w.as_bytes()).is_err(),
            "accepted:\n{w}"
        );
    }
}

/// Every template is a valid event, so the mutations start from valid lines.
#[test]
fn the_templates_are_valid_events() {
    for t in TEMPLATES {
        if let Err(e) = parse_line(t, AtRule::Required) {
            panic!("{t}: {e}");
        }
    }
}
