//! Request bodies of the wire contract v1 (`proto/wire.md`), sans-IO: the
//! QUIC edge's half of the codec.
//!
//! A request body is a contract v1 event, parsed by the same
//! [`contract::parse_line`] as replay but with `at` optional (the server
//! stamps events with its own clock), or an `await` of a held request:
//! either way a typed [`Request`] for the gateway. A response body is a
//! decision, a signal's `{"ok":true,"alerts":[...]}`, or an error, written
//! by [`crate::answer`] (re-exported here), the writer replay uses, so a
//! trace decided over the network reads as replay writes it.
//!
//! Every response must fit in one frame. Error bodies are bounded by
//! construction ([`ERROR_BODY_BYTES_MAX`]); signal bodies by the alerts a
//! signal raises (at most one); a decision body by its ruleset, which a
//! server checks with [`ruleset_fits`] before it serves that ruleset, so
//! that a decision can never be too long to send.

pub use crate::answer::{
    Code, ERROR_BODY_BYTES_MAX, ERROR_FIELD_BYTES_MAX, ERROR_MESSAGE_BYTES_MAX, WireCode,
    decision_body, error_body, signal_body,
};
use crate::contract::{self, AtRule, ContractError, ErrorCode, ID_CHARS_MAX};
use crate::edge::quic::frame::FrameError;
use crate::engine::Decided;
use crate::gateway::Reply;
pub use crate::gateway::Request;
use crate::rules::{CompiledRules, Outcome};
use serde_json::{Map, Value};
use std::fmt;

/// The default and proposed bound of an `await`'s `timeout_ms`: half a
/// minute keeps a stream (and its slot under `streams_per_connection_max`)
/// from being parked indefinitely, and is longer than a customer takes to
/// answer a one-time code only in the easy cases, so clients loop.
pub const AWAIT_TIMEOUT_MS_MAX_DEFAULT: u64 = 30_000;

/// The longest `await` body, in bytes: its three fields, a `ref` of
/// `ID_CHARS_MAX` characters each escaped, and room to spare. Only an
/// await this short is read into a map of its values.
pub const AWAIT_BODY_BYTES_MAX: usize = 4096;

/// A body's `kind`, every other key skipped without building its value.
#[derive(Default, serde::Deserialize)]
struct KindOnly<'a> {
    #[serde(borrow, default)]
    kind: Option<std::borrow::Cow<'a, str>>,
}

// Every error fits any frame a server would run with, with room to spare.
const _: () = assert!(ERROR_BODY_BYTES_MAX < crate::edge::quic::frame::FRAME_BYTES_MAX_LIMIT / 4);

/// A refused request: what [`error_body`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    pub code: Code,
    /// The request's `id` when it was present and itself valid.
    pub id: Option<Box<str>>,
    pub field: Option<Box<str>>,
    pub message: String,
}

impl WireError {
    pub fn new(code: impl Into<Code>, field: Option<&str>, message: impl Into<String>) -> Self {
        WireError {
            code: code.into(),
            id: None,
            field: field.map(Into::into),
            message: message.into(),
        }
    }

    /// The answer to a bad length prefix or a stream that ended inside a
    /// frame.
    pub fn from_frame(e: FrameError) -> Self {
        WireError::new(WireCode::BadFrame, None, e.to_string())
    }

    /// Writes this error's body ([`error_body`]).
    pub fn write(&self, out: &mut Vec<u8>) {
        error_body(
            self.id.as_deref(),
            self.code,
            self.field.as_deref(),
            &self.message,
            out,
        );
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{} ({field}): {}", self.code, self.message),
            None => write!(f, "{}: {}", self.code, self.message),
        }
    }
}

impl From<ContractError> for WireError {
    /// Replay's `bad_json` is the wire's `bad_frame`: the body of a frame of
    /// valid length is not one JSON object.
    fn from(e: ContractError) -> Self {
        let code = match e.code {
            ErrorCode::BadJson => Code::Wire(WireCode::BadFrame),
            c => Code::Contract(c),
        };
        let message = match e.code {
            // The contract's JSON layer speaks of lines; a frame holds a body.
            ErrorCode::BadJson => format!(
                "the body is not one JSON object: {}",
                e.message.replace("the line", "the body")
            ),
            _ => e.message,
        };
        WireError {
            code,
            id: e.id,
            field: e.field,
            message,
        }
    }
}

/// Parses one request frame's body.
///
/// Not UTF-8, not JSON or not an object is `bad_frame` (the message gives
/// the position); otherwise events get exactly replay's validation with
/// `at` optional, and `{"kind":"await",...}` its own strict reading
/// (`ref` 1 to 128 characters; `timeout_ms` an integer from 0 to
/// `await_timeout_ms_max`; no other non-null field).
pub fn parse_request(body: &[u8], await_timeout_ms_max: u64) -> Result<Request, WireError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        WireError::new(
            WireCode::BadFrame,
            None,
            format!("the body is not UTF-8 (byte {})", e.valid_up_to() + 1),
        )
    })?;
    // Events are the hot path: one parse. Only a body the contract refuses
    // (after its JSON layer accepted it as one object with no repeated key)
    // is read again, to see whether it is an `await`.
    let err = match contract::parse_line(text, AtRule::Optional) {
        Ok(ev) => return Ok(Request::Event(ev)),
        Err(e) => e,
    };
    if matches!(err.code, ErrorCode::BadJson | ErrorCode::DuplicateKey) {
        return Err(err.into());
    }
    // Only the kind is read first, everything else skipped unbuilt: a
    // refused frame costs about one parse more, never a tree of values
    // (which for a hostile frame costs ten times the parse).
    let peek: KindOnly<'_> = serde_json::from_str(text).unwrap_or_default();
    if peek.kind.as_deref() != Some("await") {
        let mut err = WireError::from(err);
        if err.code == Code::Contract(ErrorCode::UnknownKind) {
            err.message.push_str("; over the network also await");
        }
        return Err(err);
    }
    if text.len() > AWAIT_BODY_BYTES_MAX {
        return Err(WireError::new(
            WireCode::BadFrame,
            None,
            format!(
                "an await body is at most {AWAIT_BODY_BYTES_MAX} bytes (AWAIT_BODY_BYTES_MAX), not {}",
                text.len()
            ),
        ));
    }
    let Ok(obj) = serde_json::from_str::<Map<String, Value>>(text) else {
        // Unreachable in practice: the contract's stricter JSON layer took it.
        return Err(err.into());
    };
    parse_await(&obj, await_timeout_ms_max)
}

fn parse_await(obj: &Map<String, Value>, timeout_max: u64) -> Result<Request, WireError> {
    let present = |k: &str| obj.get(k).filter(|v| !v.is_null());
    // `null` counts as absent, as in every event.
    if let Some((key, _)) = obj
        .iter()
        .find(|(k, v)| !v.is_null() && !matches!(k.as_str(), "kind" | "ref" | "timeout_ms"))
    {
        return Err(WireError::new(
            ErrorCode::UnknownField,
            Some(key),
            format!("await takes no field {key:?}; it takes kind, ref and timeout_ms"),
        ));
    }
    let reference = match present("ref") {
        None => {
            return Err(WireError::new(
                ErrorCode::MissingField,
                Some("ref"),
                "await needs \"ref\"",
            ));
        }
        Some(Value::String(s)) => {
            let n = s.chars().count();
            if n == 0 || n > ID_CHARS_MAX {
                return Err(WireError::new(
                    ErrorCode::InvalidValue,
                    Some("ref"),
                    format!("ref must hold 1 to {ID_CHARS_MAX} characters, not {n}"),
                ));
            }
            s.as_str().into()
        }
        Some(other) => {
            return Err(WireError::new(
                ErrorCode::InvalidValue,
                Some("ref"),
                format!("ref must be a string, not {}", describe(other)),
            ));
        }
    };
    let timeout_ms = match present("timeout_ms") {
        None => {
            return Err(WireError::new(
                ErrorCode::MissingField,
                Some("timeout_ms"),
                "await needs \"timeout_ms\"",
            ));
        }
        Some(Value::Number(n)) => match n.as_u64() {
            Some(ms) if ms <= timeout_max => ms,
            _ => {
                return Err(WireError::new(
                    ErrorCode::InvalidValue,
                    Some("timeout_ms"),
                    format!(
                        "timeout_ms must be an integer from 0 to await_timeout_ms_max ({timeout_max}), not {n}"
                    ),
                ));
            }
        },
        Some(other) => {
            return Err(WireError::new(
                ErrorCode::InvalidValue,
                Some("timeout_ms"),
                format!("timeout_ms must be a number, not {}", describe(other)),
            ));
        }
    };
    Ok(Request::Await {
        reference,
        timeout_ms,
    })
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Writes a gateway [`Reply`] as its response body: a decision, a signal's
/// `{"ok":true,"alerts":[...]}`, or an error.
pub fn reply_body(reply: &Reply, out: &mut Vec<u8>) {
    match reply {
        Reply::Decision { id, decided, rules } => decision_body(id, decided, rules, out),
        Reply::Signal { alert } => signal_body(alert.as_slice(), out),
        Reply::Refused(r) => {
            error_body(r.id.as_deref(), r.code, r.field.as_deref(), &r.message, out)
        }
    }
}

impl From<WireError> for Reply {
    /// A body that does not parse is refused by the edge itself, as the
    /// gateway refuses: the same typed answer, written the same way.
    fn from(e: WireError) -> Reply {
        Reply::Refused(crate::gateway::Refusal {
            id: e.id,
            code: e.code,
            field: e.field,
            message: e.message.into(),
        })
    }
}

/// The longest decision body `rules` can give: computed by writing the
/// worst case with replay's own writer (every rule matched and
/// shadow-matched, so every name twice and every hold rule's methods; the
/// longest outcome word; an id of 128 control characters, each escaped to
/// six bytes). Every list and string in a real decision is a part of these,
/// so no real decision is longer.
pub fn decision_body_bytes_bound(rules: &CompiledRules) -> usize {
    let worst = Decided {
        outcome: longest_outcome(),
        matched: u128::MAX,
        shadow: u128::MAX,
        ruleset: 0,
        retry: false,
    };
    let id: String = std::iter::repeat_n('\u{1}', ID_CHARS_MAX).collect();
    let mut out = Vec::with_capacity(16 * 1024);
    decision_body(&id, &worst, rules, &mut out);
    out.len()
}

fn longest_outcome() -> Outcome {
    let mut best = Outcome::Allow;
    for o in [Outcome::Allow, Outcome::Hold, Outcome::Deny] {
        if o.as_str().len() > best.as_str().len() {
            best = o;
        }
    }
    best
}

/// Checks, before a server serves `rules`, that none of its decisions can
/// be over `frame_bytes_max`; on failure, the bound it found. Rule and
/// method names are at most 64 characters and a ruleset at most 128 rules,
/// but a hold may name many methods and a label is any string, so only the
/// ruleset itself can say.
pub fn ruleset_fits(rules: &CompiledRules, frame_bytes_max: usize) -> Result<(), usize> {
    match decision_body_bytes_bound(rules) {
        n if n <= frame_bytes_max => Ok(()),
        n => Err(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::write_decision;
    use crate::contract::Kind;
    use crate::edge::quic::frame::FRAME_BYTES_MAX_LIMIT;
    use crate::engine::Alert;
    use crate::rules::Limits;

    const MAX: u64 = AWAIT_TIMEOUT_MS_MAX_DEFAULT;

    fn parse(s: &str) -> Result<Request, WireError> {
        parse_request(s.as_bytes(), MAX)
    }

    fn code_field(s: &str) -> (String, Option<String>) {
        let e = parse(s).unwrap_err();
        (e.code.to_string(), e.field.map(|f| f.to_string()))
    }

    /// An await past `AWAIT_BODY_BYTES_MAX` is refused before its values
    /// are read; one within it reads as before.
    #[test]
    fn an_await_body_is_bounded() {
        let pad = "x".repeat(AWAIT_BODY_BYTES_MAX);
        let long = format!(r#"{{"kind":"await","ref":"7","timeout_ms":5,"pad":"{pad}"}}"#);
        let e = parse(&long).expect_err("too long");
        assert_eq!(e.code, Code::Wire(WireCode::BadFrame));
        assert!(e.message.contains("AWAIT_BODY_BYTES_MAX"), "{e}");
        let short = r#"{"kind":"await","ref":"7","timeout_ms":5,"pad":"x"}"#;
        assert_eq!(
            parse(short).expect_err("a field too many").code,
            ErrorCode::UnknownField.into()
        );
    }

    #[test]
    fn events_parse_with_or_without_at() {
        let with = r#"{"id":"r1","kind":"sim_swap","at":"2026-03-01T10:00:00Z","msisdn":"+447700900123","account":"A1","iccid":"8944110000000000008"}"#;
        let Request::Event(ev) = parse(with).unwrap() else {
            panic!("an event")
        };
        assert_eq!(ev.kind, Kind::SimSwap);
        assert!(ev.at.is_some());
        let without = r#"{"id":"r1","kind":"sim_swap","msisdn":"+447700900123","account":"A1","iccid":"8944110000000000008"}"#;
        let Request::Event(ev) = parse(without).unwrap() else {
            panic!("an event")
        };
        assert_eq!(ev.at, None);
        // A client's `at` is still checked for form.
        let bad_at = with.replace("10:00:00Z", "10:00:60Z");
        assert_eq!(
            code_field(&bad_at),
            ("invalid_value".into(), Some("at".into()))
        );
    }

    #[test]
    fn not_one_json_object_is_bad_frame_with_a_position() {
        for body in [
            &b"\xff{}"[..],
            b"{\"a\":",
            b"[1]",
            b"null",
            b"{} x",
            b"\"s\"",
            b"{'a':1}",
        ] {
            let e = parse_request(body, MAX).unwrap_err();
            assert_eq!(e.code, Code::Wire(WireCode::BadFrame), "{body:?}");
            assert_eq!((e.id, e.field), (None, None));
        }
        let e = parse_request(b"{\"a\":1,,}", MAX).unwrap_err();
        assert!(e.message.contains("column"), "{}", e.message);
        let e = parse_request(b"{\"a\":\"\xc3\x28\"}", MAX).unwrap_err();
        assert!(e.message.contains("byte 7"), "{}", e.message);
    }

    #[test]
    fn contract_errors_keep_their_codes() {
        assert_eq!(
            code_field(r#"{"kind":"lock","kind":"lock"}"#),
            ("duplicate_key".into(), None)
        );
        assert_eq!(
            code_field(r#"{"kind":"SIM_SWAP"}"#),
            ("unknown_kind".into(), Some("kind".into()))
        );
        assert!(
            parse(r#"{"kind":"nope"}"#)
                .unwrap_err()
                .message
                .contains("await")
        );
        assert_eq!(
            code_field(r#"{"kind":"sim_swap","id":"r","msisdn":"+447700900123","account":"A1"}"#),
            ("missing_field".into(), Some("iccid".into()))
        );
        let e = parse(r#"{"kind":"lock","id":"x","msisdn":"+447700900123","scope":"all"}"#)
            .unwrap_err();
        assert_eq!(e.id.as_deref(), Some("x"));
    }

    #[test]
    fn await_parses_strictly() {
        assert_eq!(
            parse(r#"{"kind":"await","ref":"r1","timeout_ms":5000}"#).unwrap(),
            Request::Await {
                reference: "r1".into(),
                timeout_ms: 5000
            }
        );
        assert_eq!(
            parse(r#"{"timeout_ms":0,"ref":"\u0072\u0031","kind":"\u0061wait","x":null}"#).unwrap(),
            Request::Await {
                reference: "r1".into(),
                timeout_ms: 0
            }
        );
        let cases = [
            (
                r#"{"kind":"await","timeout_ms":1}"#,
                "missing_field",
                Some("ref"),
            ),
            (
                r#"{"kind":"await","ref":null,"timeout_ms":1}"#,
                "missing_field",
                Some("ref"),
            ),
            (
                r#"{"kind":"await","ref":"r"}"#,
                "missing_field",
                Some("timeout_ms"),
            ),
            (
                r#"{"kind":"await","ref":"","timeout_ms":1}"#,
                "invalid_value",
                Some("ref"),
            ),
            (
                r#"{"kind":"await","ref":7,"timeout_ms":1}"#,
                "invalid_value",
                Some("ref"),
            ),
            (
                r#"{"kind":"await","ref":"r","timeout_ms":-1}"#,
                "invalid_value",
                Some("timeout_ms"),
            ),
            (
                r#"{"kind":"await","ref":"r","timeout_ms":1.5}"#,
                "invalid_value",
                Some("timeout_ms"),
            ),
            (
                r#"{"kind":"await","ref":"r","timeout_ms":1e3}"#,
                "invalid_value",
                Some("timeout_ms"),
            ),
            (
                r#"{"kind":"await","ref":"r","timeout_ms":"5"}"#,
                "invalid_value",
                Some("timeout_ms"),
            ),
            (
                r#"{"kind":"await","ref":"r","timeout_ms":30001}"#,
                "invalid_value",
                Some("timeout_ms"),
            ),
            (
                r#"{"kind":"await","ref":"r","timeout_ms":1,"id":"a"}"#,
                "unknown_field",
                Some("id"),
            ),
            (
                r#"{"kind":"await","ref":"r","timeout_ms":1,"id":""}"#,
                "unknown_field",
                Some("id"),
            ),
            (
                r#"{"kind":"await","ref":"r","timeout_ms":1,"at":"2026-01-01T00:00:00Z"}"#,
                "unknown_field",
                Some("at"),
            ),
            (
                r#"{"kind":"await","ref":"r","ref":"s","timeout_ms":1}"#,
                "duplicate_key",
                None,
            ),
        ];
        for (body, code, field) in cases {
            assert_eq!(
                code_field(body),
                (code.into(), field.map(Into::into)),
                "{body}"
            );
        }
        let long: String = "é".repeat(128);
        assert!(
            parse(&format!(
                r#"{{"kind":"await","ref":"{long}","timeout_ms":1}}"#
            ))
            .is_ok()
        );
        assert_eq!(
            code_field(&format!(
                r#"{{"kind":"await","ref":"{long}x","timeout_ms":1}}"#
            )),
            ("invalid_value".into(), Some("ref".into()))
        );
    }

    #[test]
    fn codes_form_a_closed_set_with_retryable_flags() {
        let names: Vec<&str> = Code::all().map(Code::as_str).collect();
        assert_eq!(names.len(), 14);
        for c in Code::all() {
            assert_eq!(Code::from_name(c.as_str()), Some(c));
        }
        let retryable: Vec<&str> = Code::all()
            .filter(|c| c.retryable())
            .map(Code::as_str)
            .collect();
        assert_eq!(retryable, ["overloaded", "unavailable", "deadline"]);
        let unsent: Vec<&str> = Code::all()
            .filter(|c| !c.sent_over_the_wire())
            .map(Code::as_str)
            .collect();
        assert_eq!(unsent, ["bad_json", "out_of_order"]);
    }

    #[test]
    fn error_bodies_have_the_shape_and_stay_bounded() {
        let mut out = Vec::new();
        error_body(
            Some("r1"),
            WireCode::Overloaded,
            None,
            "try later",
            &mut out,
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id":"r1","error":{"code":"overloaded","field":null,"message":"try later","retryable":true}})
        );
        // The worst case: every string at or past its cap, every byte escaped.
        let ctl: String = "\u{1}".repeat(100_000);
        for code in Code::all() {
            out.clear();
            error_body(Some(&ctl), code, Some(&ctl), &ctl, &mut out);
            assert!(out.len() <= ERROR_BODY_BYTES_MAX, "{}", out.len());
            let v: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["id"].as_str().unwrap().chars().count(), ID_CHARS_MAX);
            assert_eq!(v["error"]["retryable"], Value::Bool(code.retryable()));
        }
        // Cuts fall on character boundaries.
        out.clear();
        error_body(
            None,
            ErrorCode::UnknownField,
            Some(&"é".repeat(300)),
            &"€".repeat(1000),
            &mut out,
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"]["field"].as_str().unwrap().len(), 256);
        assert_eq!(v["error"]["message"].as_str().unwrap().len(), 1023);
    }

    #[test]
    fn an_unknown_field_as_long_as_a_frame_gets_a_bounded_error() {
        let key = "k".repeat(60_000);
        let body = format!(r#"{{"kind":"lock","{key}":1}}"#);
        let e = parse(&body).unwrap_err();
        assert_eq!(e.code, Code::Contract(ErrorCode::UnknownField));
        let mut out = Vec::new();
        e.write(&mut out);
        assert!(out.len() <= ERROR_BODY_BYTES_MAX);
    }

    #[test]
    fn signal_bodies_hold_replays_alert_objects() {
        let mut out = Vec::new();
        signal_body(&[], &mut out);
        assert_eq!(out, br#"{"ok":true,"alerts":[]}"#);
        let a = Alert {
            msisdn: crate::contract::ident::Msisdn::parse("+447700900123").unwrap(),
            at: crate::contract::Timestamp::parse("2026-11-02T13:30:00.250+05:30").unwrap(),
        };
        out.clear();
        signal_body(&[a, a], &mut out);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"ok":true,"alerts":[{"alert":"unapproved_sim_change","msisdn":"+447700900123","at":"2026-11-02T08:00:00.25Z"},{"alert":"unapproved_sim_change","msisdn":"+447700900123","at":"2026-11-02T08:00:00.25Z"}]}"#
        );
    }

    #[test]
    fn decision_bodies_are_replays_without_the_newline() {
        let rules = CompiledRules::default_rules();
        let d = Decided {
            outcome: Outcome::Hold,
            matched: 0,
            shadow: 0,
            ruleset: 0,
            retry: false,
        };
        let mut out = Vec::new();
        decision_body("r1", &d, &rules, &mut out);
        let mut line = Vec::new();
        write_decision(&mut line, Some("r1"), &d, &rules);
        assert_eq!([&out[..], b"\n"].concat(), line);
        assert!(ruleset_fits(&rules, FRAME_BYTES_MAX_LIMIT).is_ok());
    }

    /// A ruleset at every limit an analyst has by default: 128 rules with
    /// 64-character names, each a hold naming four methods of its own with
    /// 64-character names, and a long label.
    fn widest_rules(methods_per_rule: usize, label_chars: usize) -> CompiledRules {
        let mut src = format!("ruleset \"{}\"\n", "L".repeat(label_chars));
        for r in 0..128 {
            let name = format!("r{r:03}_{}", "n".repeat(59));
            let methods: Vec<String> = (0..methods_per_rule)
                .map(|m| format!("m{r:03}_{m:03}_{}", "v".repeat(55)))
                .collect();
            src.push_str(&format!(
                "rule {name}{} hold verify {} when kind is port_out\n",
                if r % 2 == 1 { " shadow" } else { "" },
                methods.join(", ")
            ));
        }
        CompiledRules::compile("wide.rules", &src, &Limits::default())
            .unwrap_or_else(|e| panic!("{}", e[0]))
    }

    #[test]
    fn the_widest_default_limited_decision_fits_a_frame() {
        let rules = widest_rules(4, 1000);
        assert_eq!(rules.rules.len(), 128);
        assert!(rules.rules.iter().all(|r| r.name.len() == 64));
        let bound = decision_body_bytes_bound(&rules);
        // 128 names of 64 bytes twice and 512 methods of 64 bytes: about
        // 50 KB, under 65536.
        assert!(bound < FRAME_BYTES_MAX_LIMIT, "{bound}");
        assert!(bound > 2 * 128 * 64 + 512 * 64, "{bound}");
        assert_eq!(ruleset_fits(&rules, FRAME_BYTES_MAX_LIMIT), Ok(()));
        // A real worst decision (every live rule matched, every shadow
        // rule shadow-matched) is within the bound and parses.
        let mut live = 0u128;
        let mut shadow = 0u128;
        for (i, r) in rules.rules.iter().enumerate() {
            if r.shadow {
                shadow |= 1 << i;
            } else {
                live |= 1 << i;
            }
        }
        let d = Decided {
            outcome: Outcome::Hold,
            matched: live,
            shadow,
            ruleset: 0,
            retry: false,
        };
        let mut out = Vec::new();
        decision_body(&"\u{1}".repeat(128), &d, &rules, &mut out);
        assert!(out.len() <= bound);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["rules"].as_array().unwrap().len(), 64);
    }

    #[test]
    fn a_ruleset_whose_decisions_cannot_fit_is_refused() {
        let rules = widest_rules(8, 10);
        let bound = ruleset_fits(&rules, FRAME_BYTES_MAX_LIMIT).unwrap_err();
        assert!(bound > FRAME_BYTES_MAX_LIMIT);
        assert!(ruleset_fits(&rules, bound).is_ok());
    }
}
