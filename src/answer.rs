//! The answers the gateway writes: decision, error and alert lines as
//! replay writes them (`proto/spec.md`), and the response bodies of the
//! service (`proto/wire.md`: a decision, a signal's alerts, an error with
//! its code and whether it is retryable), one writer for every edge that
//! writes them: replay, the QUIC wire, backtest, explain, and the gateway's
//! own refusals. Sans-IO: each writer appends to a buffer.
//!
//! It sits above the engine because a decision's line names its rules and
//! methods, which only the ruleset that decided it knows; strings are written
//! by [`crate::contract::json_str`], so the contract's reader and every
//! writer agree on escaping.

use crate::contract::{ContractError, ErrorCode, ID_CHARS_MAX, json_str};
use crate::engine::{Alert, Decided, verify_methods};
use crate::rules::{Action, CompiledRules};
use std::fmt;

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

fn json_opt(buf: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(buf, s),
        None => buf.extend_from_slice(b"null"),
    }
}

fn json_list<'a>(buf: &mut Vec<u8>, items: impl Iterator<Item = &'a str>) {
    buf.push(b'[');
    for (i, s) in items.enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        json_str(buf, s);
    }
    buf.push(b']');
}

/// `{"id","decision","rules","verify","shadow_rules","ruleset":{"hash","label"}}`
pub fn write_decision(buf: &mut Vec<u8>, id: Option<&str>, d: &Decided, rules: &CompiledRules) {
    buf.extend_from_slice(b"{\"id\":");
    json_opt(buf, id);
    buf.extend_from_slice(b",\"decision\":\"");
    buf.extend_from_slice(d.outcome.as_str().as_bytes());
    buf.extend_from_slice(b"\",\"rules\":");
    names(buf, rules, d.matched);
    buf.extend_from_slice(b",\"verify\":");
    if rules.methods.len() <= 128 {
        // Methods in order of first appearance among the matched hold rules.
        let mut seen = 0u128;
        let mut first = true;
        buf.push(b'[');
        for_each_bit(d.matched, |i| {
            let Some(r) = rules.rules.get(i) else { return };
            if r.action != Action::Hold {
                return;
            }
            for &m in &r.verify {
                if seen & (1 << m) == 0 {
                    seen |= 1 << m;
                    if !first {
                        buf.push(b',');
                    }
                    first = false;
                    raw_str(buf, &rules.methods[m as usize]);
                }
            }
        });
        buf.push(b']');
    } else {
        json_list(buf, verify_methods(rules, d.matched).into_iter());
    }
    buf.extend_from_slice(b",\"shadow_rules\":");
    names(buf, rules, d.shadow);
    buf.extend_from_slice(b",\"ruleset\":{\"hash\":");
    raw_str(buf, &rules.hash);
    buf.extend_from_slice(b",\"label\":");
    json_str(buf, &rules.label);
    buf.extend_from_slice(b"}}\n");
}

/// Writes a string that needs no escaping: rule and method names are
/// letters, digits and `_` (the rules lexer admits nothing else), and the
/// ruleset hash is hex.
fn raw_str(buf: &mut Vec<u8>, s: &str) {
    debug_assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    buf.push(b'"');
    buf.extend_from_slice(s.as_bytes());
    buf.push(b'"');
}

/// Calls `f` with the index of every set bit, lowest first.
fn for_each_bit(mut bits: u128, mut f: impl FnMut(usize)) {
    while bits != 0 {
        f(bits.trailing_zeros() as usize);
        bits &= bits - 1;
    }
}

/// A JSON array of the names of the rules set in `bits`, in ruleset order.
fn names(buf: &mut Vec<u8>, rules: &CompiledRules, bits: u128) {
    buf.push(b'[');
    let mut first = true;
    for_each_bit(bits, |i| {
        if let Some(r) = rules.rules.get(i) {
            if !first {
                buf.push(b',');
            }
            first = false;
            raw_str(buf, &r.name);
        }
    });
    buf.push(b']');
}

/// `{"id","line","error":{"code","field","message","retryable":false}}`
pub fn write_error(buf: &mut Vec<u8>, line: u64, e: &ContractError) {
    buf.extend_from_slice(b"{\"id\":");
    json_opt(buf, e.id.as_deref());
    buf.extend_from_slice(format!(",\"line\":{line},\"error\":{{\"code\":\"").as_bytes());
    buf.extend_from_slice(e.code.as_str().as_bytes());
    buf.extend_from_slice(b"\",\"field\":");
    json_opt(buf, e.field.as_deref());
    buf.extend_from_slice(b",\"message\":");
    json_str(buf, &e.message);
    buf.extend_from_slice(b",\"retryable\":false}}\n");
}

/// `{"alert":"unapproved_sim_change","msisdn","at"}`
pub fn write_alert(buf: &mut Vec<u8>, a: &Alert) {
    buf.extend_from_slice(b"{\"alert\":\"");
    buf.extend_from_slice(Alert::KIND.as_bytes());
    buf.extend_from_slice(b"\",\"msisdn\":");
    json_str(buf, &a.msisdn.to_string());
    buf.extend_from_slice(b",\"at\":");
    json_str(buf, &a.at.to_rfc3339_utc());
    buf.extend_from_slice(b"}\n");
}
