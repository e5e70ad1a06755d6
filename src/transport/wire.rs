//! Request and response bodies of the wire contract v1 (`proto/wire.md`),
//! sans-IO.
//!
//! A request body is a contract v1 event, parsed by the same
//! [`contract::parse_line`] as replay but with `at` optional (the server
//! stamps events with its own clock), or an `await` of a held request. A
//! response body is a decision, a signal's `{"ok":true,"alerts":[...]}`, or
//! an error. Decisions and alerts are written by replay's own writers, so a
//! trace decided over the network reads as replay writes it.
//!
//! Every response must fit in one frame. Error bodies are bounded by
//! construction ([`ERROR_BODY_BYTES_MAX`]); signal bodies by the alerts a
//! signal raises (at most one); a decision body by its ruleset, which a
//! server checks with [`ruleset_fits`] before it serves that ruleset, so
//! that a decision can never be too long to send.

use crate::answer::{write_alert, write_decision};
use crate::contract::json_str;
use crate::contract::{self, AtRule, ContractError, ErrorCode, Event, ID_CHARS_MAX};
use crate::engine::{Alert, Decided};
use crate::rules::{CompiledRules, Outcome};
use crate::transport::frame::FrameError;
use serde_json::{Map, Value};
use std::fmt;

/// The default and proposed bound of an `await`'s `timeout_ms`: half a
/// minute keeps a stream (and its slot under `streams_per_connection_max`)
/// from being parked indefinitely, and is longer than a customer takes to
/// answer a one-time code only in the easy cases, so clients loop.
pub const AWAIT_TIMEOUT_MS_MAX_DEFAULT: u64 = 30_000;

/// Bytes of an error's `field` kept in a response (before JSON escaping).
/// No v1 field name is longer than 9 bytes; only an unknown key as sent can
/// be longer, and it is cut at a character boundary.
pub const ERROR_FIELD_BYTES_MAX: usize = 256;

/// Bytes of an error's `message` kept in a response (before JSON escaping),
/// cut at a character boundary. A message quotes what it refuses, which a
/// client controls; the cut keeps every error body well inside a frame.
pub const ERROR_MESSAGE_BYTES_MAX: usize = 1024;

/// The most bytes one character can take in a JSON string as
/// [`json_str`] writes it: a control character becomes `\u00XX`.
const ESCAPED_BYTES_PER_BYTE_MAX: usize = 6;

/// The longest error body [`error_body`] writes, whatever its inputs: the
/// fixed keys, the longest code, and `id`, `field` and `message` at their
/// caps with every byte escaped. Far below any `frame_bytes_max` a server
/// would run with (tested against the bound).
pub const ERROR_BODY_BYTES_MAX: usize = 128
    + ID_CHARS_MAX * ESCAPED_BYTES_PER_BYTE_MAX
    + ERROR_FIELD_BYTES_MAX * ESCAPED_BYTES_PER_BYTE_MAX
    + ERROR_MESSAGE_BYTES_MAX * ESCAPED_BYTES_PER_BYTE_MAX;

// Every error fits any frame a server would run with, with room to spare.
const _: () = assert!(ERROR_BODY_BYTES_MAX < crate::transport::frame::FRAME_BYTES_MAX_LIMIT / 4);

/// One request frame's body, parsed.
// Nearly every request is an event: boxing it would add an allocation per
// request to save stack space only for the rare `await`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A contract v1 event; `at`, when the client sent one, is checked for
    /// form and recorded, never used as the engine's clock.
    Event(Event),
    /// Wait until the request whose `id` is `reference` is no longer on hold,
    /// or `timeout_ms` passes.
    Await {
        reference: Box<str>,
        timeout_ms: u64,
    },
}

/// The error codes the wire adds to the contract's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WireCode {
    /// The body is not one UTF-8 JSON object, or the frame's length is 0 or
    /// over `frame_bytes_max`, or the stream ended inside a frame.
    BadFrame,
    /// The client's certificate role may not send this request.
    Forbidden,
    /// The server is at a limit (streams, pending work); nothing was done.
    Overloaded,
    /// The server cannot decide now (starting, stopping, storage down).
    Unavailable,
    /// The request was not answered within `request_deadline_ms`; its effect
    /// is unknown, so it is retried with the same `id`.
    Deadline,
}

impl WireCode {
    pub const ALL: &'static [WireCode] = &[
        WireCode::BadFrame,
        WireCode::Forbidden,
        WireCode::Overloaded,
        WireCode::Unavailable,
        WireCode::Deadline,
    ];

    /// The contract's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            WireCode::BadFrame => "bad_frame",
            WireCode::Forbidden => "forbidden",
            WireCode::Overloaded => "overloaded",
            WireCode::Unavailable => "unavailable",
            WireCode::Deadline => "deadline",
        }
    }

    /// Whether the same request may succeed when sent again later: true for
    /// the server's passing conditions, false for faults of the request.
    pub const fn retryable(self) -> bool {
        matches!(
            self,
            WireCode::Overloaded | WireCode::Unavailable | WireCode::Deadline
        )
    }
}

/// Any code a response may carry: the closed set of `proto/wire.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Code {
    Contract(ErrorCode),
    Wire(WireCode),
}

impl Code {
    /// Every code, the contract's first.
    pub fn all() -> impl Iterator<Item = Code> {
        ErrorCode::ALL
            .iter()
            .map(|c| Code::Contract(*c))
            .chain(WireCode::ALL.iter().map(|c| Code::Wire(*c)))
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Code::Contract(c) => c.as_str(),
            Code::Wire(c) => c.as_str(),
        }
    }

    /// A contract error is the request's own fault: sending it again gets
    /// the same error. Only the server's passing conditions are retryable.
    pub const fn retryable(self) -> bool {
        match self {
            Code::Contract(_) => false,
            Code::Wire(c) => c.retryable(),
        }
    }

    /// Whether the server ever sends it. `bad_json` becomes `bad_frame` on
    /// the wire, and `out_of_order` cannot happen: the server's clock orders
    /// events. Both stay in the closed set so that one client handles
    /// replay's output and the wire's.
    pub const fn sent_over_the_wire(self) -> bool {
        !matches!(
            self,
            Code::Contract(ErrorCode::BadJson | ErrorCode::OutOfOrder)
        )
    }

    /// Parses a code's spelling.
    pub fn from_name(s: &str) -> Option<Code> {
        Code::all().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<ErrorCode> for Code {
    fn from(c: ErrorCode) -> Code {
        Code::Contract(c)
    }
}

impl From<WireCode> for Code {
    fn from(c: WireCode) -> Code {
        Code::Wire(c)
    }
}

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
    let Ok(obj) = serde_json::from_str::<Map<String, Value>>(text) else {
        // Unreachable in practice: the contract's stricter JSON layer took it.
        return Err(err.into());
    };
    match obj.get("kind") {
        Some(Value::String(k)) if k == "await" => parse_await(&obj, await_timeout_ms_max),
        _ => {
            let mut err = WireError::from(err);
            if err.code == Code::Contract(ErrorCode::UnknownKind) {
                err.message.push_str("; over the network also await");
            }
            Err(err)
        }
    }
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

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The first `max` characters of `s`.
fn cut_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

/// Appends `{"id":..,"error":{"code","field","message","retryable"}}`.
///
/// `retryable` follows from the code ([`Code::retryable`]), so no answer can
/// contradict the documented table. `id` is kept to its first 128
/// characters (a valid id is never cut), `field` to
/// [`ERROR_FIELD_BYTES_MAX`] bytes and `message` to
/// [`ERROR_MESSAGE_BYTES_MAX`] bytes, so the body is at most
/// [`ERROR_BODY_BYTES_MAX`] bytes.
pub fn error_body(
    id: Option<&str>,
    code: impl Into<Code>,
    field: Option<&str>,
    message: &str,
    out: &mut Vec<u8>,
) {
    let code = code.into();
    out.extend_from_slice(b"{\"id\":");
    match id {
        Some(id) => json_str(out, cut_chars(id, ID_CHARS_MAX)),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"error\":{\"code\":\"");
    out.extend_from_slice(code.as_str().as_bytes());
    out.extend_from_slice(b"\",\"field\":");
    match field {
        Some(f) => json_str(out, cut(f, ERROR_FIELD_BYTES_MAX)),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"message\":");
    json_str(out, cut(message, ERROR_MESSAGE_BYTES_MAX));
    out.extend_from_slice(if code.retryable() {
        b",\"retryable\":true}}"
    } else {
        b",\"retryable\":false}}"
    });
}

/// Removes the newline replay's writers end a line with: a frame's body is
/// the object alone.
fn strip_newline(out: &mut Vec<u8>) {
    if out.last() == Some(&b'\n') {
        out.pop();
    }
}

/// Appends `{"ok":true,"alerts":[...]}`, each alert as replay writes it.
/// The engine raises at most one alert per signal (about 90 bytes).
pub fn signal_body(alerts: &[Alert], out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"ok\":true,\"alerts\":[");
    for (i, a) in alerts.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_alert(out, a);
        strip_newline(out);
    }
    out.extend_from_slice(b"]}");
}

/// Appends the decision object replay writes (`id`, `decision`, `rules`,
/// `verify`, `shadow_rules`, `ruleset`), without replay's newline. Also the
/// answer to an `await`: the held request's current decision, `hold` when
/// the timeout passed first.
pub fn decision_body(id: &str, d: &Decided, rules: &CompiledRules, out: &mut Vec<u8>) {
    write_decision(out, Some(id), d, rules);
    strip_newline(out);
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
    use crate::contract::Kind;
    use crate::rules::Limits;
    use crate::transport::frame::FRAME_BYTES_MAX_LIMIT;

    const MAX: u64 = AWAIT_TIMEOUT_MS_MAX_DEFAULT;

    fn parse(s: &str) -> Result<Request, WireError> {
        parse_request(s.as_bytes(), MAX)
    }

    fn code_field(s: &str) -> (String, Option<String>) {
        let e = parse(s).unwrap_err();
        (e.code.to_string(), e.field.map(|f| f.to_string()))
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
