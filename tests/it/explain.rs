//! `portcullis explain`: one request's run log.
//!
//! - Explain agrees with replay: on 200 requests sampled from a generated
//!   trace (with shadow rules added to the default set), the decision,
//!   matched rules, shadow rules and verification methods it reports are
//!   replay's, and its trace of every rule's whole condition matches
//!   exactly the rules the engine's per-kind plans matched.
//! - On a hand-written trace it shows the exact counts and windows that
//!   decided (three auth failures in the hour, a fourth outside it but
//!   inside the day) and a list hit, and skips what replay skips (an
//!   out-of-order line with the id asked for).
//! - An id that never comes, or whose first event is a signal, has no
//!   explanation, and says why.
//! - The command prints the run log and exits 0, and exits non-zero with a
//!   message on stderr for an unknown id.

use portcullis::engine::Engine;
use portcullis::explain::{Explanation, Read, Unexplained, explain, explain_many};
use portcullis::rules::{CompiledRules, DEFAULT_RULES, Limits};
use portcullis::traffic::{self, Config};
use serde_json::Value;
use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

/// The default rules and three shadow rules (a tighter agent velocity, a
/// PIN change just before a port, a deny on any failure in the hour), so
/// that shadow matches, `since` and plain comparisons are traced too.
fn rules() -> Arc<CompiledRules> {
    let src = format!(
        "{DEFAULT_RULES}
rule agent_velocity_trial
  shadow hold verify supervisor_review
  when kind in [sim_swap, esim_transfer]
   and distinct(msisdn of [sim_swap, esim_transfer] on agent within 1h) >= 3

rule pin_reset_then_port
  shadow deny
  when kind is port_out
   and since(completed account_change on account within 1h where change is pin) <= 10m

rule any_failure
  shadow deny
  when count(auth_failure on account within 1h) + 0 > 0
    or (kind is port_out and not pin_ok)
"
    );
    let rules = CompiledRules::compile("trial.rules", &src, &Limits::default())
        .unwrap_or_else(|e| panic!("the trial rules compile: {e:?}"));
    Arc::new(rules)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("names are strings").to_string())
        .collect()
}

fn names(v: Vec<&str>) -> Vec<String> {
    v.into_iter().map(str::to_string).collect()
}

#[test]
fn explain_agrees_with_replay_on_200_sampled_requests() {
    let rules = rules();
    let cfg = Config {
        seed: 11,
        subscribers: 2_000,
        ..Config::default()
    };
    let mut input = Vec::new();
    traffic::write(&cfg, 30_000, &mut input).expect("in-memory trace");
    let mut out = Vec::new();
    portcullis::replay::run(&mut Engine::new(rules.clone()), &input[..], &mut out)
        .expect("in-memory replay");
    let out = String::from_utf8(out).expect("replay writes UTF-8");

    // The first decision of each id (a later one is a retry's answer).
    let mut seen = HashSet::new();
    let decisions: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("replay writes JSON"))
        .filter(|v| v.get("decision").is_some())
        .filter(|v| seen.insert(v["id"].as_str().expect("decisions carry ids").to_string()))
        .collect();
    let flagged: Vec<&Value> = decisions
        .iter()
        .filter(|v| v["decision"] != "allow")
        .collect();
    assert!(
        flagged.len() >= 100 && decisions.len() >= 2_000,
        "{} decisions, {} flagged",
        decisions.len(),
        flagged.len()
    );
    // Every k-th held or denied request, then every k-th of all, to 200
    // distinct ids.
    let mut sample: Vec<&Value> = Vec::new();
    let mut picked = HashSet::new();
    let id = |v: &Value| v["id"].as_str().unwrap_or_default().to_string();
    for v in flagged.iter().step_by(flagged.len() / 100).copied() {
        if sample.len() < 100 && picked.insert(id(v)) {
            sample.push(v);
        }
    }
    for v in decisions.iter().step_by(decisions.len() / 150) {
        if sample.len() < 200 && picked.insert(id(v)) {
            sample.push(v);
        }
    }
    assert_eq!(sample.len(), 200);
    let ids: Vec<&str> = sample
        .iter()
        .map(|v| v["id"].as_str().expect("decisions carry ids"))
        .collect();

    let found =
        explain_many(&mut Engine::new(rules.clone()), &input[..], &ids).expect("in-memory explain");
    assert_eq!(found.len(), ids.len());
    let mut fired = HashSet::new();
    for (want, got) in sample.iter().zip(&found) {
        let x = got
            .as_ref()
            .unwrap_or_else(|why| panic!("{}: {why}", want["id"]));
        assert!(x.agrees(), "{}", x.render());
        assert_eq!(x.id, want["id"].as_str().unwrap_or_default());
        assert_eq!(x.decision.as_str(), want["decision"], "{}", x.render());
        assert_eq!(
            names(x.matched_rules()),
            strings(&want["rules"]),
            "{}",
            x.render()
        );
        assert_eq!(
            names(x.shadow_rules()),
            strings(&want["shadow_rules"]),
            "{}",
            x.render()
        );
        assert_eq!(x.verify, strings(&want["verify"]), "{}", x.render());
        assert_eq!(x.rules.len(), rules.rules.len());
        assert!(
            x.rules.iter().all(|r| !r.reads.is_empty()),
            "{}",
            x.render()
        );
        fired.extend(x.matched_rules().into_iter().map(str::to_string));
        fired.extend(x.shadow_rules().into_iter().map(str::to_string));
    }
    assert!(
        fired.len() >= 8,
        "the sample exercises many rules: {fired:?}"
    );

    // One id at a time explains as the batch does.
    for (id, batch) in ids.iter().zip(&found).step_by(67) {
        let alone = explain(&mut Engine::new(rules.clone()), &input[..], id).expect("explain");
        assert_eq!(&alone, batch);
    }
}

/// Four auth failures (one outside the hour), a port-out, a blocked IMEI
/// added by the trace, a SIM swap on it, a signal with an id, and an
/// out-of-order line that replay refuses before the id's valid request.
const SMALL: &str = r#"{"kind":"auth_failure","at":"2026-03-01T09:00:00Z","account":"A1"}
{"kind":"auth_failure","at":"2026-03-01T10:00:00Z","account":"A1"}
{"kind":"auth_failure","at":"2026-03-01T10:10:00Z","account":"A1"}
{"kind":"auth_failure","at":"2026-03-01T10:20:00Z","account":"A1"}
{"id":"p1","kind":"port_out","at":"2026-03-01T10:30:00Z","msisdn":"+447700900123","account":"A1","pin_ok":true}
{"kind":"list_add","at":"2026-03-01T10:31:00Z","list":"blocked_imei","value":"356938035643809"}

{"id":"s1","kind":"sim_swap","at":"2026-03-01T10:32:00Z","msisdn":"+447700900124","account":"A2","iccid":"8944110000000000008","imei":"356938035643809"}
{"id":"sig1","kind":"fraud_report","at":"2026-03-01T10:33:00Z","account":"A3"}
{"id":"o1","kind":"account_change","at":"2026-03-01T09:00:00Z","account":"A1","change":"pin"}
{"id":"o1","kind":"account_change","at":"2026-03-01T10:40:00Z","account":"A1","change":"email"}
{"id":"p1","kind":"port_out","at":"2026-03-01T10:50:00Z","msisdn":"+447700900123","account":"A1","pin_ok":true}
"#;

fn rule<'x>(x: &'x Explanation, name: &str) -> &'x portcullis::explain::RuleTrace {
    x.rules
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no rule {name}"))
}

fn read(what: &str, value: &str) -> Read {
    Read {
        what: what.to_string(),
        value: value.to_string(),
    }
}

fn default_engine() -> Engine {
    Engine::new(Arc::new(CompiledRules::default_rules()))
}

#[test]
fn a_small_trace_shows_the_counts_windows_and_list_hits_that_decided() {
    let ids = ["p1", "s1", "o1", "sig1", "nobody"];
    let found = explain_many(&mut default_engine(), SMALL.as_bytes(), &ids).expect("explain");
    let [p1, s1, o1, sig1, nobody] = &found[..] else {
        panic!("one answer per id: {found:?}");
    };

    let p1 = p1.as_ref().expect("p1 is explained");
    assert_eq!(
        (p1.line, p1.decision.as_str()),
        (5, "hold"),
        "{}",
        p1.render()
    );
    assert_eq!(p1.matched_rules(), ["auth_failures_hold"]);
    assert_eq!(p1.verify, ["analyst_review"]);
    let hold = rule(p1, "auth_failures_hold");
    assert!(hold.matched);
    assert_eq!(
        hold.reads,
        [
            read("count(auth_failure on account within 1h)", "3"),
            read(
                "count(port_out on account within 1h where pin_ok is false)",
                "0"
            ),
            read("sum", "3 + 0 = 3 (>= 3)"),
        ]
    );
    let deny = rule(p1, "auth_failures_deny");
    assert!(!deny.matched);
    assert_eq!(
        deny.reads[0],
        read("count(auth_failure on account within 24h)", "4")
    );
    let pin = rule(p1, "port_pin_mismatch");
    assert_eq!(
        pin.reads,
        [
            read("kind", "port_out (is port_out)"),
            read("pin_ok", "true (is false)")
        ]
    );
    let text = p1.render();
    assert!(
        text.starts_with(
            "request p1 (port_out at 2026-03-01T10:30:00Z, line 5), ruleset default ("
        ),
        "{text}"
    );
    assert!(
        text.contains("\ndecision: hold  rules: auth_failures_hold  verify: analyst_review\n"),
        "{text}"
    );

    let s1 = s1.as_ref().expect("s1 is explained");
    assert_eq!(
        (s1.line, s1.decision.as_str()),
        (8, "deny"),
        "{}",
        s1.render()
    );
    assert_eq!(s1.matched_rules(), ["blocked_device"]);
    assert_eq!(
        rule(s1, "blocked_device").reads,
        [
            read("imei", "356938035643809"),
            read("imei in list blocked_imei", "yes"),
        ]
    );
    // Nothing of A1's history is A2's.
    assert_eq!(
        rule(s1, "auth_failures_hold").reads[0],
        read("count(auth_failure on account within 1h)", "0")
    );

    // The out-of-order line is refused, as replay refuses it; the id's
    // request is the next one, which reads the port-out's account history.
    let o1 = o1.as_ref().expect("o1 is explained");
    assert_eq!(
        (o1.line, o1.decision.as_str()),
        (11, "hold"),
        "{}",
        o1.render()
    );

    assert_eq!(
        sig1,
        &Err(Unexplained::NotARequest {
            line: 9,
            kind: portcullis::contract::Kind::FraudReport
        })
    );
    assert!(sig1.as_ref().unwrap_err().to_string().contains("signal"));
    assert_eq!(nobody, &Err(Unexplained::NotFound));

    // Replay decides the same.
    let lines = crate::support::replay_with(None, SMALL);
    let replayed: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .filter(|v: &Value| v.get("decision").is_some())
        .collect();
    for x in [p1, s1, o1] {
        let want = replayed
            .iter()
            .find(|v| v["id"] == x.id.as_str())
            .expect("replay decided it");
        assert_eq!(x.decision.as_str(), want["decision"]);
        assert_eq!(names(x.matched_rules()), strings(&want["rules"]));
    }
}

#[test]
fn tracing_changes_nothing() {
    let mut engine = default_engine();
    let mut lines = SMALL.lines();
    for line in lines.by_ref().take(4) {
        let ev = portcullis::contract::parse_line(line, portcullis::contract::AtRule::Required)
            .expect("valid");
        engine.handle(&ev, ev.at.expect("at"));
    }
    let p1 = portcullis::contract::parse_line(
        lines.next().expect("p1"),
        portcullis::contract::AtRule::Required,
    )
    .expect("valid");
    let at = p1.at.expect("at");
    let before = engine.history().approx_bytes();
    let first = portcullis::explain::trace(&engine, &p1, at);
    assert_eq!(portcullis::explain::trace(&engine, &p1, at), first);
    assert_eq!(engine.history().approx_bytes(), before);
    assert_eq!(engine.evaluate(&p1, at).1.count_ones(), 1);
}

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn scratch(test: &str) -> PathBuf {
    crate::support::scratch_dir("explain", test)
}

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let o = Command::new(BIN)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
    let text = |b: Vec<u8>| String::from_utf8(b).expect("UTF-8");
    (o.status.code(), text(o.stdout), text(o.stderr))
}

#[test]
fn the_command_prints_the_run_log_and_refuses_unknown_ids() {
    let dir = scratch("cli");
    // Without the trace's own list_add: the blocked IMEI comes from --list.
    let events: String = SMALL
        .lines()
        .filter(|l| !l.contains("list_add"))
        .map(|l| format!("{l}\n"))
        .collect();
    let events_path = dir.join("events.jsonl");
    std::fs::write(&events_path, events).expect("write events");
    let list_path = dir.join("blocked.txt");
    std::fs::write(&list_path, "# stolen\n356938035643809\n").expect("write list");
    let events = events_path.to_str().expect("UTF-8 path");
    let list = format!("blocked_imei={}", list_path.to_str().expect("UTF-8 path"));

    let (code, out, err) = run(&["explain", "--id", "p1", events]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("decision: hold  rules: auth_failures_hold"),
        "{out}"
    );
    let hold = out
        .lines()
        .find(|l| l.trim_start().starts_with("auth_failures_hold "))
        .unwrap_or_else(|| panic!("no auth_failures_hold line: {out}"));
    assert!(hold.contains(" hold ") && hold.contains(" YES "), "{hold}");
    assert!(
        hold.ends_with("count(auth_failure on account within 1h) = 3"),
        "{hold}"
    );
    assert!(out.contains("sum = 3 + 0 = 3 (>= 3)"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("blocked_device ") && l.contains(" no ")),
        "{out}"
    );

    let (code, out, err) = run(&["explain", "--list", &list, "--id", "s1", events]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("decision: deny  rules: blocked_device"),
        "{out}"
    );
    assert!(out.contains("imei in list blocked_imei = yes"), "{out}");

    let (code, out, err) = run(&["explain", "--id", "nobody", events]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("nobody") && err.contains("no valid event"),
        "{err}"
    );

    let (code, _, err) = run(&["explain", "--id", "sig1", events]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("fraud_report, a signal"), "{err}");
}
