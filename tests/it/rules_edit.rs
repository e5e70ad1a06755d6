//! Editing the shipped ruleset moves outcomes.
//!
//! The issue asks for "a test that edits a number or window of each default
//! rule in a copy of the file and sees outcomes move". It proves that the
//! thresholds and windows live in `rules/default.rules` and nowhere in Rust:
//! for every one of the 13 default rules, a small trace puts one request
//! exactly at the rule's threshold or at the edge of its window (where, the
//! windows being inclusive, the rule still fires). A copy of `DEFAULT_RULES`
//! with that rule's number raised by one, or its window shortened, must then
//! decide the same request differently. Rules without a number or window
//! (`account_lock`, `port_pin_mismatch`, `blocked_device`,
//! `remote_esim_new_device`) get another meaningful edit: the action, the
//! lock scope read, the list name, the channel set.
//!
//! Each edit must match exactly once in the file, so a reworded default rule
//! makes this test fail loudly instead of silently editing nothing, and every
//! rule of the default set must be covered by at least one case.

use crate::support::replay_with;
use portcullis::rules::{CompiledRules, DEFAULT_RULES, Limits};
use serde_json::Value;
use std::collections::BTreeSet;

/// What one request is decided: the decision and the matched rules.
type Outcome = (&'static str, &'static [&'static str]);

struct Check {
    id: &'static str,
    /// With the shipped rules.
    before: Outcome,
    /// With the edited copy.
    after: Outcome,
}

struct Case {
    rule: &'static str,
    what: &'static str,
    /// Replacements applied to `DEFAULT_RULES`, each matching exactly once.
    edits: &'static [(&'static str, &'static str)],
    trace: &'static str,
    checks: &'static [Check],
}

const ALLOW: Outcome = ("allow", &[]);

/// A copy of the default rules with `edits` applied.
fn edited(case: &Case) -> String {
    let mut src = DEFAULT_RULES.to_string();
    for (from, to) in case.edits {
        let n = src.matches(from).count();
        assert_eq!(
            n, 1,
            "{} ({}): {from:?} occurs {n} times in the rules, expected exactly once",
            case.rule, case.what
        );
        src = src.replacen(from, to, 1);
    }
    assert_ne!(src, DEFAULT_RULES);
    src
}

/// The one decision whose id is `id`.
fn answer<'a>(out: &'a [Value], id: &str) -> &'a Value {
    let found: Vec<&Value> = out
        .iter()
        .filter(|v| v["id"] == id && v.get("decision").is_some())
        .collect();
    assert_eq!(found.len(), 1, "{id}: expected one decision in {out:#?}");
    found[0]
}

fn outcome_of(v: &Value) -> (String, Vec<String>) {
    let rules = v["rules"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    (v["decision"].as_str().unwrap_or("").to_string(), rules)
}

fn own((d, rules): Outcome) -> (String, Vec<String>) {
    (d.to_string(), rules.iter().map(|r| r.to_string()).collect())
}

fn parse(lines: Vec<String>) -> Vec<Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn run(case: &Case) -> Vec<String> {
    let mut failures = Vec::new();
    let src = edited(case);
    if let Err(errs) = CompiledRules::compile("edited.rules", &src, &Limits::default()) {
        let msgs: Vec<String> = errs.iter().map(ToString::to_string).collect();
        return vec![format!(
            "{} ({}): the edited copy does not compile:\n{}",
            case.rule,
            case.what,
            msgs.join("\n")
        )];
    }
    let trace: String = case
        .trace
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    let before = parse(replay_with(None, &trace));
    let after = parse(replay_with(Some(&src), &trace));
    for out in [&before, &after] {
        if let Some(e) = out.iter().find(|v| v.get("error").is_some()) {
            failures.push(format!(
                "{} ({}): the trace has an error line: {e}",
                case.rule, case.what
            ));
        }
    }
    for c in case.checks {
        let b = outcome_of(answer(&before, c.id));
        let a = outcome_of(answer(&after, c.id));
        if b != own(c.before) || a != own(c.after) {
            failures.push(format!(
                "{} ({}), request {}:\n  shipped rules: got {b:?}, want {:?}\n  edited rules:  got {a:?}, want {:?}",
                case.rule, case.what, c.id, c.before, c.after
            ));
        }
    }
    assert!(
        case.checks.iter().any(|c| own(c.before) != own(c.after)),
        "{} ({}): no check expects the outcome to move",
        case.rule,
        case.what
    );
    failures
}

const CASES: &[Case] = &[
    Case {
        rule: "account_lock",
        what: "deny becomes hold",
        edits: &[(
            "rule account_lock\n  deny",
            "rule account_lock\n  hold verify analyst_review",
        )],
        trace: r#"
            {"kind":"lock","at":"2026-03-01T10:00:00Z","msisdn":"+447700900123","scope":"port_out"}
            {"id":"al-1","kind":"port_out","at":"2026-03-02T10:00:00Z","msisdn":"+447700900123","account":"A1","pin_ok":true}
        "#,
        checks: &[Check {
            id: "al-1",
            before: ("deny", &["account_lock"]),
            after: ("hold", &["account_lock"]),
        }],
    },
    Case {
        rule: "account_lock",
        what: "the port-out half reads the SIM-change lock",
        edits: &[(
            "latest([lock, unlock] on line where scope is port_out) is lock",
            "latest([lock, unlock] on line where scope is sim_change) is lock",
        )],
        trace: r#"
            {"kind":"lock","at":"2026-03-01T10:00:00Z","msisdn":"+447700900123","scope":"port_out"}
            {"kind":"lock","at":"2026-03-01T10:00:00Z","msisdn":"+447700900124","scope":"sim_change"}
            {"id":"al-2","kind":"port_out","at":"2026-03-02T10:00:00Z","msisdn":"+447700900123","account":"A1","pin_ok":true}
            {"id":"al-3","kind":"port_out","at":"2026-03-02T10:00:00Z","msisdn":"+447700900124","account":"A2","pin_ok":true}
        "#,
        checks: &[
            Check {
                id: "al-2",
                before: ("deny", &["account_lock"]),
                after: ALLOW,
            },
            Check {
                id: "al-3",
                before: ALLOW,
                after: ("deny", &["account_lock"]),
            },
        ],
    },
    Case {
        rule: "port_pin_mismatch",
        what: "deny becomes hold",
        edits: &[(
            "rule port_pin_mismatch\n  deny",
            "rule port_pin_mismatch\n  hold verify analyst_review",
        )],
        trace: r#"
            {"id":"pp-1","kind":"port_out","at":"2026-03-01T10:00:00Z","msisdn":"+447700900123","account":"A1","pin_ok":false}
        "#,
        checks: &[Check {
            id: "pp-1",
            before: ("deny", &["port_pin_mismatch"]),
            after: ("hold", &["port_pin_mismatch"]),
        }],
    },
    Case {
        rule: "blocked_device",
        what: "the rule reads another list",
        edits: &[
            ("list blocked_imei: imei", "list watched_imei: imei"),
            ("imei in list blocked_imei", "imei in list watched_imei"),
        ],
        trace: r#"
            {"kind":"list_add","at":"2026-03-01T10:00:00Z","list":"blocked_imei","value":"260531793113837"}
            {"id":"bd-1","kind":"sim_swap","at":"2026-03-01T10:01:00Z","msisdn":"+447700900123","account":"A1","iccid":"8944110000000000008","imei":"260531793113837"}
            {"kind":"list_add","at":"2026-03-01T10:02:00Z","list":"watched_imei","value":"356938035643809"}
            {"id":"bd-2","kind":"sim_swap","at":"2026-03-01T10:03:00Z","msisdn":"+447700900124","account":"A2","iccid":"8944110000000000008","imei":"356938035643809"}
        "#,
        checks: &[
            Check {
                id: "bd-1",
                before: ("deny", &["blocked_device"]),
                after: ALLOW,
            },
            Check {
                id: "bd-2",
                before: ALLOW,
                after: ("deny", &["blocked_device"]),
            },
        ],
    },
    Case {
        rule: "auth_failures_deny",
        what: "threshold 10 becomes 11",
        edits: &[(
            "where pin_ok is false) >= 10",
            "where pin_ok is false) >= 11",
        )],
        trace: r#"
            {"kind":"auth_failure","at":"2026-03-01T10:00:00Z","account":"A1"}
            {"kind":"auth_failure","at":"2026-03-01T10:00:00Z","account":"A1"}
            {"kind":"auth_failure","at":"2026-03-01T10:00:00Z","account":"A1"}
            {"kind":"auth_failure","at":"2026-03-01T10:00:00Z","account":"A1"}
            {"kind":"auth_failure","at":"2026-03-01T10:00:00Z","account":"A1"}
            {"kind":"auth_failure","at":"2026-03-01T10:00:00Z","account":"A1"}
            {"kind":"auth_failure","at":"2026-03-01T10:00:00Z","account":"A1"}
            {"kind":"auth_failure","at":"2026-03-01T10:00:00Z","account":"A1"}
            {"kind":"auth_failure","at":"2026-03-01T10:00:00Z","account":"A1"}
            {"kind":"auth_failure","at":"2026-03-01T10:00:00Z","account":"A1"}
            {"id":"afd-1","kind":"sim_swap","at":"2026-03-02T10:00:00Z","msisdn":"+447700900123","account":"A1","iccid":"8944110000000000008"}
        "#,
        checks: &[Check {
            id: "afd-1",
            before: ("deny", &["auth_failures_deny"]),
            after: ALLOW,
        }],
    },
    Case {
        rule: "auth_failures_deny",
        what: "the auth_failure window 24h becomes 1439m",
        edits: &[(
            "count(auth_failure on account within 24h)",
            "count(auth_failure on account within 1439m)",
        )],
        trace: r#"
            {"kind":"auth_failure","at":"2026-03-01T10:00:00Z","account":"A1"}
            {"kind":"auth_failure","at":"2026-03-01T10:00:00Z","account":"A1"}
            {"kind":"auth_failure","at":"2026-03-01T10:00:00Z","account":"A1"}
            {"kind":"auth_failure","at":"2026-03-01T10:00:00Z","account":"A1"}
            {"kind":"auth_failure","at":"2026-03-01T10:00:00Z","account":"A1"}
            {"kind":"auth_failure","at":"2026-03-01T10:00:00Z","account":"A1"}
            {"kind":"auth_failure","at":"2026-03-01T10:00:00Z","account":"A1"}
            {"kind":"auth_failure","at":"2026-03-01T10:00:00Z","account":"A1"}
            {"kind":"auth_failure","at":"2026-03-01T10:00:00Z","account":"A1"}
            {"kind":"auth_failure","at":"2026-03-01T10:00:00Z","account":"A1"}
            {"id":"afd-2","kind":"sim_swap","at":"2026-03-02T10:00:00Z","msisdn":"+447700900123","account":"A1","iccid":"8944110000000000008"}
        "#,
        checks: &[Check {
            id: "afd-2",
            before: ("deny", &["auth_failures_deny"]),
            after: ALLOW,
        }],
    },
    Case {
        rule: "auth_failures_deny",
        what: "the wrong-PIN port-out window 24h becomes 1439m",
        edits: &[(
            "count(port_out on account within 24h where pin_ok is false) >= 10",
            "count(port_out on account within 1439m where pin_ok is false) >= 10",
        )],
        trace: r#"
            {"id":"afd-p0","kind":"port_out","at":"2026-03-01T10:00:00Z","msisdn":"+447700900123","account":"A1","pin_ok":false}
            {"id":"afd-p1","kind":"port_out","at":"2026-03-01T10:00:00Z","msisdn":"+447700900123","account":"A1","pin_ok":false}
            {"id":"afd-p2","kind":"port_out","at":"2026-03-01T10:00:00Z","msisdn":"+447700900123","account":"A1","pin_ok":false}
            {"id":"afd-p3","kind":"port_out","at":"2026-03-01T10:00:00Z","msisdn":"+447700900123","account":"A1","pin_ok":false}
            {"id":"afd-p4","kind":"port_out","at":"2026-03-01T10:00:00Z","msisdn":"+447700900123","account":"A1","pin_ok":false}
            {"id":"afd-p5","kind":"port_out","at":"2026-03-01T10:00:00Z","msisdn":"+447700900123","account":"A1","pin_ok":false}
            {"id":"afd-p6","kind":"port_out","at":"2026-03-01T10:00:00Z","msisdn":"+447700900123","account":"A1","pin_ok":false}
            {"id":"afd-p7","kind":"port_out","at":"2026-03-01T10:00:00Z","msisdn":"+447700900123","account":"A1","pin_ok":false}
            {"id":"afd-p8","kind":"port_out","at":"2026-03-01T10:00:00Z","msisdn":"+447700900123","account":"A1","pin_ok":false}
            {"id":"afd-p9","kind":"port_out","at":"2026-03-01T10:00:00Z","msisdn":"+447700900123","account":"A1","pin_ok":false}
            {"id":"afd-3","kind":"account_change","at":"2026-03-02T10:00:00Z","account":"A1","change":"address"}
        "#,
        checks: &[Check {
            id: "afd-3",
            before: ("deny", &["auth_failures_deny"]),
            after: ALLOW,
        }],
    },
    Case {
        rule: "auth_failures_hold",
        what: "threshold 3 becomes 4",
        edits: &[(
            "within 1h where pin_ok is false) >= 3",
            "within 1h where pin_ok is false) >= 4",
        )],
        trace: r#"
            {"kind":"auth_failure","at":"2026-03-01T10:00:00Z","account":"A1"}
            {"kind":"auth_failure","at":"2026-03-01T10:00:00Z","account":"A1"}
            {"kind":"auth_failure","at":"2026-03-01T10:00:00Z","account":"A1"}
            {"id":"afh-1","kind":"sim_swap","at":"2026-03-01T11:00:00Z","msisdn":"+447700900123","account":"A1","iccid":"8944110000000000008"}
        "#,
        checks: &[Check {
            id: "afh-1",
            before: ("hold", &["auth_failures_hold"]),
            after: ALLOW,
        }],
    },
    Case {
        rule: "auth_failures_hold",
        what: "window 1h becomes 59m",
        edits: &[(
            "count(auth_failure on account within 1h)",
            "count(auth_failure on account within 59m)",
        )],
        trace: r#"
            {"kind":"auth_failure","at":"2026-03-01T10:00:00Z","account":"A1"}
            {"kind":"auth_failure","at":"2026-03-01T10:00:00Z","account":"A1"}
            {"kind":"auth_failure","at":"2026-03-01T10:00:00Z","account":"A1"}
            {"id":"afh-2","kind":"sim_swap","at":"2026-03-01T11:00:00Z","msisdn":"+447700900123","account":"A1","iccid":"8944110000000000008"}
        "#,
        checks: &[Check {
            id: "afh-2",
            before: ("hold", &["auth_failures_hold"]),
            after: ALLOW,
        }],
    },
    Case {
        rule: "credential_change_then_sim_change",
        what: "window 48h becomes 47h",
        edits: &[(
            "account_change on account within 48h",
            "account_change on account within 47h",
        )],
        trace: r#"
            {"id":"cc-0","kind":"account_change","at":"2026-03-01T10:00:00Z","account":"A1","change":"email"}
            {"id":"cc-1","kind":"sim_swap","at":"2026-03-03T10:00:00Z","msisdn":"+447700900123","account":"A1","iccid":"8944110000000000008"}
        "#,
        checks: &[
            Check {
                id: "cc-0",
                before: ALLOW,
                after: ALLOW,
            },
            Check {
                id: "cc-1",
                before: ("hold", &["credential_change_then_sim_change"]),
                after: ALLOW,
            },
        ],
    },
    Case {
        rule: "credential_change_then_sim_change",
        what: "email leaves the set of changes",
        edits: &[(
            "where change in [email, password, contact, pin]",
            "where change in [password, contact, pin]",
        )],
        trace: r#"
            {"id":"cc-2","kind":"account_change","at":"2026-03-01T10:00:00Z","account":"A1","change":"email"}
            {"id":"cc-3","kind":"port_out","at":"2026-03-01T10:30:00Z","msisdn":"+447700900123","account":"A1","pin_ok":true}
        "#,
        checks: &[Check {
            id: "cc-3",
            before: ("hold", &["credential_change_then_sim_change"]),
            after: ALLOW,
        }],
    },
    Case {
        rule: "port_after_sim_change",
        what: "window 7d becomes 6d",
        edits: &[("on line within 7d", "on line within 6d")],
        trace: r#"
            {"id":"pa-0","kind":"sim_swap","at":"2026-03-01T10:00:00Z","msisdn":"+447700900123","account":"A1","iccid":"8944110000000000008","imsi":"234150000000001"}
            {"id":"pa-1","kind":"port_out","at":"2026-03-08T10:00:00Z","msisdn":"+447700900123","account":"A1","pin_ok":true}
        "#,
        checks: &[Check {
            id: "pa-1",
            before: ("hold", &["port_after_sim_change"]),
            after: ALLOW,
        }],
    },
    Case {
        rule: "repeat_sim_change",
        what: "window 30d becomes 29d",
        edits: &[(
            "[sim_swap, esim_transfer, unapproved_sim_change] on line within 30d",
            "[sim_swap, esim_transfer, unapproved_sim_change] on line within 29d",
        )],
        trace: r#"
            {"id":"rs-0","kind":"sim_swap","at":"2026-03-01T10:00:00Z","msisdn":"+447700900123","account":"A1","iccid":"8944110000000000008"}
            {"id":"rs-1","kind":"sim_swap","at":"2026-03-31T10:00:00Z","msisdn":"+447700900123","account":"A1","iccid":"89441100000000000017"}
        "#,
        checks: &[Check {
            id: "rs-1",
            before: ("hold", &["repeat_sim_change"]),
            after: ALLOW,
        }],
    },
    Case {
        rule: "agent_velocity",
        what: "threshold 10 becomes 11",
        edits: &[("on agent within 1h) >= 10", "on agent within 1h) >= 11")],
        trace: AGENT_TRACE,
        checks: &[Check {
            id: "av-10",
            before: ("hold", &["agent_velocity"]),
            after: ALLOW,
        }],
    },
    Case {
        rule: "agent_velocity",
        what: "window 1h becomes 59m",
        edits: &[("on agent within 1h)", "on agent within 59m)")],
        trace: AGENT_TRACE,
        checks: &[Check {
            id: "av-10",
            before: ("hold", &["agent_velocity"]),
            after: ALLOW,
        }],
    },
    Case {
        rule: "fraud_reported",
        what: "window 30d becomes 29d",
        edits: &[(
            "fraud_report on account within 30d",
            "fraud_report on account within 29d",
        )],
        trace: r#"
            {"kind":"fraud_report","at":"2026-03-01T10:00:00Z","account":"A1","channel":"care"}
            {"id":"fr-1","kind":"account_change","at":"2026-03-31T10:00:00Z","account":"A1","change":"address"}
        "#,
        checks: &[Check {
            id: "fr-1",
            before: ("hold", &["fraud_reported"]),
            after: ALLOW,
        }],
    },
    Case {
        rule: "remote_esim_new_device",
        what: "online leaves the remote channels",
        edits: &[("channel in [online, app, care]", "channel in [app, care]")],
        trace: r#"
            {"id":"re-1","kind":"esim_transfer","at":"2026-03-01T10:00:00Z","msisdn":"+447700900123","account":"A1","eid":"89049032123451234512345678901235","channel":"online"}
            {"id":"re-2","kind":"esim_transfer","at":"2026-03-01T10:00:00Z","msisdn":"+447700900124","account":"A2","eid":"89049032000000000000000000000163","channel":"app"}
        "#,
        checks: &[
            Check {
                id: "re-1",
                before: ("hold", &["remote_esim_new_device"]),
                after: ALLOW,
            },
            Check {
                id: "re-2",
                before: ("hold", &["remote_esim_new_device"]),
                after: ("hold", &["remote_esim_new_device"]),
            },
        ],
    },
    Case {
        rule: "device_change_then_port",
        what: "window 24h becomes 23h",
        edits: &[(
            "on line within 24h where new_device",
            "on line within 23h where new_device",
        )],
        trace: r#"
            {"kind":"device_seen","at":"2026-03-01T10:00:00Z","msisdn":"+447700900123","imsi":"234150000000001","imei":"356938035643809"}
            {"kind":"device_seen","at":"2026-03-01T11:00:00Z","msisdn":"+447700900123","imsi":"234150000000001","imei":"260531793113837"}
            {"id":"dc-1","kind":"port_out","at":"2026-03-02T11:00:00Z","msisdn":"+447700900123","account":"A1","pin_ok":true}
        "#,
        checks: &[Check {
            id: "dc-1",
            before: ("hold", &["device_change_then_port"]),
            after: ALLOW,
        }],
    },
    Case {
        rule: "recent_unlock",
        what: "the port-out window 24h becomes 23h",
        edits: &[(
            "exists(unlock on line within 24h where scope is port_out)",
            "exists(unlock on line within 23h where scope is port_out)",
        )],
        trace: r#"
            {"kind":"unlock","at":"2026-03-01T10:00:00Z","msisdn":"+447700900123","scope":"port_out"}
            {"id":"ru-1","kind":"port_out","at":"2026-03-02T10:00:00Z","msisdn":"+447700900123","account":"A1","pin_ok":true}
        "#,
        checks: &[Check {
            id: "ru-1",
            before: ("hold", &["recent_unlock"]),
            after: ALLOW,
        }],
    },
    Case {
        rule: "recent_unlock",
        what: "the SIM-change window 24h becomes 23h",
        edits: &[(
            "exists(unlock on line within 24h where scope is sim_change)",
            "exists(unlock on line within 23h where scope is sim_change)",
        )],
        trace: r#"
            {"kind":"unlock","at":"2026-03-01T10:00:00Z","msisdn":"+447700900123","scope":"sim_change"}
            {"id":"ru-2","kind":"sim_swap","at":"2026-03-02T10:00:00Z","msisdn":"+447700900123","account":"A1","iccid":"8944110000000000008"}
        "#,
        checks: &[Check {
            id: "ru-2",
            before: ("hold", &["recent_unlock"]),
            after: ALLOW,
        }],
    },
];

/// One agent swaps ten different lines, one a minute from 10:00; the
/// eleventh swap comes exactly one hour after the first.
const AGENT_TRACE: &str = r#"
    {"id":"av-00","kind":"sim_swap","at":"2026-03-01T10:00:00Z","msisdn":"+447700900200","account":"B0","iccid":"8944110000000000008","channel":"retail","agent":"ag-1"}
    {"id":"av-01","kind":"sim_swap","at":"2026-03-01T10:01:00Z","msisdn":"+447700900201","account":"B1","iccid":"8944110000000000008","channel":"retail","agent":"ag-1"}
    {"id":"av-02","kind":"sim_swap","at":"2026-03-01T10:02:00Z","msisdn":"+447700900202","account":"B2","iccid":"8944110000000000008","channel":"retail","agent":"ag-1"}
    {"id":"av-03","kind":"sim_swap","at":"2026-03-01T10:03:00Z","msisdn":"+447700900203","account":"B3","iccid":"8944110000000000008","channel":"retail","agent":"ag-1"}
    {"id":"av-04","kind":"sim_swap","at":"2026-03-01T10:04:00Z","msisdn":"+447700900204","account":"B4","iccid":"8944110000000000008","channel":"retail","agent":"ag-1"}
    {"id":"av-05","kind":"sim_swap","at":"2026-03-01T10:05:00Z","msisdn":"+447700900205","account":"B5","iccid":"8944110000000000008","channel":"retail","agent":"ag-1"}
    {"id":"av-06","kind":"sim_swap","at":"2026-03-01T10:06:00Z","msisdn":"+447700900206","account":"B6","iccid":"8944110000000000008","channel":"retail","agent":"ag-1"}
    {"id":"av-07","kind":"sim_swap","at":"2026-03-01T10:07:00Z","msisdn":"+447700900207","account":"B7","iccid":"8944110000000000008","channel":"retail","agent":"ag-1"}
    {"id":"av-08","kind":"sim_swap","at":"2026-03-01T10:08:00Z","msisdn":"+447700900208","account":"B8","iccid":"8944110000000000008","channel":"retail","agent":"ag-1"}
    {"id":"av-09","kind":"sim_swap","at":"2026-03-01T10:09:00Z","msisdn":"+447700900209","account":"B9","iccid":"8944110000000000008","channel":"retail","agent":"ag-1"}
    {"id":"av-10","kind":"sim_swap","at":"2026-03-01T11:00:00Z","msisdn":"+447700900210","account":"B10","iccid":"8944110000000000008","channel":"retail","agent":"ag-1"}
"#;

#[test]
fn editing_each_default_rule_moves_its_outcome() {
    let failures: Vec<String> = CASES.iter().flat_map(run).collect();
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_default_rule_has_an_edit_case() {
    let shipped: BTreeSet<String> = CompiledRules::default_rules()
        .rules
        .iter()
        .map(|r| r.name.clone())
        .collect();
    assert_eq!(shipped.len(), 13, "{shipped:?}");
    let covered: BTreeSet<String> = CASES.iter().map(|c| c.rule.to_string()).collect();
    let missing: Vec<&String> = shipped.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "default rules without an edit case: {missing:?}"
    );
    let unknown: Vec<&String> = covered.difference(&shipped).collect();
    assert!(
        unknown.is_empty(),
        "cases for rules the default set lacks: {unknown:?}"
    );
    // Each case's check names a request of its own trace, and every edit
    // touches the rule the case is about.
    for c in CASES {
        for check in c.checks {
            assert!(
                c.trace.contains(&format!("\"id\":\"{}\"", check.id)),
                "{}: no request {}",
                c.rule,
                check.id
            );
        }
        let start = DEFAULT_RULES
            .find(&format!("rule {}\n", c.rule))
            .unwrap_or_else(|| panic!("no rule {}", c.rule));
        let end = DEFAULT_RULES[start + 1..]
            .find("\nrule ")
            .map_or(DEFAULT_RULES.len(), |e| start + 1 + e);
        let body = &DEFAULT_RULES[start..end];
        let touches = c.edits.iter().any(|(from, _)| body.contains(from));
        assert!(
            touches,
            "{} ({}): no edit falls inside the rule's own text",
            c.rule, c.what
        );
    }
}
