//! The wire contract in `proto/wire.md` and `proto/examples/wire/` against
//! the code:
//!
//! - `frames.jsonl`: each example's bytes decode, in one push and byte by
//!   byte, to the frames and the error it documents.
//! - `requests.jsonl` / `responses.jsonl`: one stream's requests and, on the
//!   same line number, the answer each gets, run through the real parser,
//!   engine (default ruleset) and body writers with a server clock that
//!   starts at [`CLOCK_START`] and moves one minute per request. An `await`
//!   is answered as the server answers it when nothing resolves the hold
//!   during the wait: the request's current decision (a retry reads it
//!   without changing anything). `PORTCULLIS_BLESS=1` rewrites
//!   `responses.jsonl` from the code, for a reviewed change of the contract.
//! - `errors.jsonl` and every response: one of the three documented shapes,
//!   with a code from the closed set and the `retryable` it documents.
//! - `wire.md`'s table of error codes is exactly `Code::all()`, with the
//!   same retryable flags, and every named limit's default matches the code.

use crate::support::{read, repo};
use portcullis::contract::{Event, Timestamp};
use portcullis::edge::quic::frame::{FRAME_BYTES_MAX_DEFAULT, FrameDecoder, FrameError};
use portcullis::edge::quic::wire::{
    AWAIT_TIMEOUT_MS_MAX_DEFAULT, Code, Request, WireError, decision_body, parse_request,
    signal_body,
};
use portcullis::engine::{Answer, Engine};
use portcullis::rules::CompiledRules;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

const CLOCK_START: &str = "2026-03-01T10:00:00Z";

fn examples(name: &str) -> String {
    read(&repo().join("proto/examples/wire").join(name))
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex: {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or_else(|e| panic!("{s}: {e}")))
        .collect()
}

/// Decodes `bytes` in chunks of `chunk`, then ends the stream.
fn decode(bytes: &[u8], chunk: usize) -> (Vec<Vec<u8>>, Option<FrameError>) {
    let mut dec = FrameDecoder::default();
    let mut frames = Vec::new();
    let mut err = None;
    for piece in bytes.chunks(chunk) {
        let mut rest = piece;
        while !rest.is_empty() {
            let used = dec.push(rest);
            rest = &rest[used..];
            while let Some(f) = dec.next() {
                match f {
                    Ok(b) => frames.push(b.to_vec()),
                    Err(e) => err = Some(e),
                }
            }
        }
    }
    if err.is_none() {
        err = dec.end().err();
    }
    (frames, err)
}

#[test]
fn frame_examples_decode_as_documented() {
    let text = examples("frames.jsonl");
    let mut errors_seen = std::collections::HashSet::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let ex: Value = serde_json::from_str(line).expect("frames.jsonl is JSON lines");
        let name = ex["name"].as_str().expect("a name");
        let bytes = unhex(ex["hex"].as_str().expect("hex"));
        let want: Vec<Vec<u8>> = ex["frames"]
            .as_array()
            .expect("frames")
            .iter()
            .map(|f| match (f["text"].as_str(), f["hex"].as_str()) {
                (Some(t), None) => t.as_bytes().to_vec(),
                (None, Some(h)) => unhex(h),
                _ => panic!("{name}: a frame is {{text}} or {{hex}}"),
            })
            .collect();
        for chunk in [bytes.len().max(1), 1] {
            let (frames, err) = decode(&bytes, chunk);
            assert_eq!(frames, want, "{name} (chunks of {chunk})");
            let got = match err {
                None => Value::Null,
                Some(FrameError::Empty) => "empty".into(),
                Some(FrameError::TooLong { len, max }) => {
                    assert_eq!(max, FRAME_BYTES_MAX_DEFAULT);
                    assert_eq!(ex["len"].as_u64(), Some(len), "{name}");
                    "too_long".into()
                }
                Some(FrameError::Truncated { .. }) => "truncated".into(),
            };
            assert_eq!(got, ex["error"], "{name} (chunks of {chunk})");
            if let Some(e) = err {
                // Every framing error is answered `bad_frame`.
                let body = body_of_error(&WireError::from_frame(e));
                assert_eq!(body["error"]["code"], "bad_frame");
            }
        }
        errors_seen.insert(ex["error"].to_string());
    }
    assert_eq!(
        errors_seen.len(),
        4,
        "examples of no error, empty, too_long, truncated"
    );
}

fn body_of_error(e: &WireError) -> Value {
    let mut out = Vec::new();
    e.write(&mut out);
    serde_json::from_slice(&out).expect("an error body is JSON")
}

/// Runs `requests` as one stream against a fresh engine, as the service
/// answers it; one body per request.
fn exchange(requests: &str) -> Vec<String> {
    let mut engine = Engine::new(Arc::new(CompiledRules::default_rules()));
    // Decision requests by id, to answer awaits as retries.
    let mut requests_by_id: HashMap<Box<str>, Event> = HashMap::new();
    let mut clock = Timestamp::parse(CLOCK_START).expect("a valid start");
    let mut answers = Vec::new();
    for line in requests.lines() {
        let mut out = Vec::new();
        match parse_request(line.as_bytes(), AWAIT_TIMEOUT_MS_MAX_DEFAULT) {
            Err(e) => e.write(&mut out),
            Ok(Request::Event(ev)) => match engine.handle(&ev, clock) {
                Answer::Decision(d) => {
                    let id = ev.id.clone().expect("decision kinds carry an id");
                    decision_body(&id, &d, engine.ruleset(d.ruleset), &mut out);
                    requests_by_id.entry(id).or_insert(ev);
                }
                Answer::Signal { alert, .. } => signal_body(alert.as_slice(), &mut out),
                Answer::Error(e) => WireError::from(e).write(&mut out),
            },
            Ok(Request::Await { reference, .. }) => match requests_by_id.get(&reference) {
                Some(ev) => match engine.handle(ev, clock) {
                    Answer::Decision(d) => {
                        assert!(d.retry, "an await reads, it never decides");
                        decision_body(&reference, &d, engine.ruleset(d.ruleset), &mut out);
                    }
                    other => panic!("a stored request answered {other:?}"),
                },
                None => WireError::new(
                    portcullis::contract::ErrorCode::UnknownRef,
                    Some("ref"),
                    format!("no request {reference:?} was decided"),
                )
                .write(&mut out),
            },
        }
        answers.push(String::from_utf8(out).expect("bodies are UTF-8"));
        clock = Timestamp::from_nanos(clock.as_nanos() + 60_000_000_000).expect("in range");
    }
    answers
}

#[test]
fn the_example_exchange_is_what_the_code_answers() {
    let requests = examples("requests.jsonl");
    let got = exchange(&requests);
    let path = repo().join("proto/examples/wire/responses.jsonl");
    if std::env::var_os("PORTCULLIS_BLESS").is_some() {
        std::fs::write(&path, got.join("\n") + "\n").expect("write responses.jsonl");
    }
    let want = read(&path);
    let want: Vec<&str> = want.lines().collect();
    assert_eq!(want.len(), got.len(), "one response per request");
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        let wv: Value = serde_json::from_str(w).expect("responses.jsonl is JSON lines");
        let gv: Value = serde_json::from_str(g).expect("a body is JSON");
        assert_eq!(wv, gv, "responses.jsonl line {}", i + 1);
    }
    // The exchange shows every kind of answer.
    let shapes: std::collections::HashSet<&str> = got
        .iter()
        .map(|b| shape(&serde_json::from_str(b).expect("JSON")))
        .collect();
    assert_eq!(shapes.len(), 3, "{shapes:?}");
}

/// Which of the three documented response shapes `v` has; panics on any other.
fn shape(v: &Value) -> &'static str {
    let obj = v.as_object().expect("a response is an object");
    let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    match sorted.as_slice() {
        [
            "decision",
            "id",
            "rules",
            "ruleset",
            "shadow_rules",
            "verify",
        ] => {
            assert!(v["id"].is_string());
            assert!(matches!(
                v["decision"].as_str(),
                Some("allow" | "hold" | "deny")
            ));
            for k in ["rules", "verify", "shadow_rules"] {
                assert!(v[k].as_array().expect(k).iter().all(Value::is_string));
            }
            assert!(v["ruleset"]["hash"].is_string() && v["ruleset"]["label"].is_string());
            "decision"
        }
        ["alerts", "ok"] => {
            assert_eq!(v["ok"], true);
            for a in v["alerts"].as_array().expect("alerts") {
                assert_eq!(a["alert"], "unapproved_sim_change");
                assert!(a["msisdn"].is_string() && a["at"].is_string());
            }
            "signal"
        }
        ["error", "id"] => {
            assert!(v["id"].is_string() || v["id"].is_null());
            let e = v["error"].as_object().expect("error object");
            let mut ek: Vec<&str> = e.keys().map(String::as_str).collect();
            ek.sort_unstable();
            assert_eq!(ek, ["code", "field", "message", "retryable"]);
            let code = Code::from_name(v["error"]["code"].as_str().expect("code"))
                .unwrap_or_else(|| panic!("a code outside the closed set: {v}"));
            assert!(code.sent_over_the_wire(), "{code} is never sent: {v}");
            assert_eq!(v["error"]["retryable"], code.retryable(), "{v}");
            assert!(v["error"]["field"].is_string() || v["error"]["field"].is_null());
            assert!(v["error"]["message"].is_string());
            "error"
        }
        _ => panic!("not a documented response shape: {v}"),
    }
}

#[test]
fn every_response_example_has_a_documented_shape() {
    let mut codes = std::collections::HashSet::new();
    for file in ["responses.jsonl", "errors.jsonl"] {
        for line in examples(file).lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{file}: {e}"));
            if shape(&v) == "error" {
                codes.insert(v["error"]["code"].as_str().unwrap_or_default().to_string());
            }
        }
    }
    for c in Code::all().filter(|c| c.sent_over_the_wire()) {
        // Codes only a particular ruleset can give need no example.
        assert!(codes.contains(c.as_str()), "no example of {c}");
    }
}

/// The rows of the markdown table that follows `heading` in `doc`.
fn table_after<'a>(doc: &'a str, heading: &str) -> Vec<Vec<&'a str>> {
    let start = doc
        .find(heading)
        .unwrap_or_else(|| panic!("wire.md has no {heading:?}"));
    doc[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect()
}

#[test]
fn the_documented_error_codes_are_the_codes() {
    let doc = read(&repo().join("proto/wire.md"));
    let rows = table_after(&doc, "## 8. Error codes");
    let documented: Vec<(String, bool, bool)> = rows
        .iter()
        .map(|r| {
            let code = r[0].trim_matches('`').to_string();
            let retryable = match r[1] {
                "yes" => true,
                "no" => false,
                other => panic!("retryable column: {other}"),
            };
            let sent = !r[2].starts_with("never");
            (code, retryable, sent)
        })
        .collect();
    let code: Vec<(String, bool, bool)> = Code::all()
        .map(|c| {
            (
                c.as_str().to_string(),
                c.retryable(),
                c.sent_over_the_wire(),
            )
        })
        .collect();
    assert_eq!(documented, code);
}

#[test]
fn the_documented_limits_match_the_code() {
    let doc = read(&repo().join("proto/wire.md"));
    let rows = table_after(&doc, "## 9. Limits");
    let default_of = |name: &str| -> String {
        let row = rows
            .iter()
            .find(|r| r[0] == format!("`{name}`"))
            .unwrap_or_else(|| panic!("wire.md lists no {name}"));
        row[2].replace([' ', ','], "")
    };
    assert_eq!(
        default_of("frame_bytes_max"),
        FRAME_BYTES_MAX_DEFAULT.to_string()
    );
    assert!(
        default_of("await_timeout_ms_max").starts_with(&AWAIT_TIMEOUT_MS_MAX_DEFAULT.to_string())
    );
    // Every configured limit is in the table with the code's default.
    let defaults =
        toml::Table::try_from(portcullis::server::ServiceLimits::default()).expect("serializable");
    for (name, value) in &defaults {
        let value = value.as_integer().expect("limits are integers");
        assert_eq!(default_of(name), value.to_string(), "{name}");
    }
    assert_eq!(
        rows.len(),
        defaults.len(),
        "a row for a limit the code does not have"
    );
}
