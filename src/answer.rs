//! The lines the gateway writes: decisions, errors and alerts as JSON
//! (`proto/spec.md`), one writer for every edge that writes them: replay,
//! the QUIC wire, backtest and explain. Sans-IO: each writer appends to a
//! buffer.
//!
//! It sits above the engine because a decision's line names its rules and
//! methods, which only the ruleset that decided it knows; strings are written
//! by [`crate::contract::json_str`], so the contract's reader and every
//! writer agree on escaping.

use crate::contract::{ContractError, json_str};
use crate::engine::{Alert, Decided, verify_methods};
use crate::rules::{Action, CompiledRules};

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
