//! `portcullis backtest`: the comparison against replay, labels by hand,
//! the report in a real browser, and the command.

use crate::support::repo;
use portcullis::backtest::{self, Backtest, Labels, html};
use portcullis::engine::Engine;
use portcullis::rules::{DEFAULT_RULES, Limits, Outcome, Paired};
use portcullis::traffic::{Config, write};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn trace(seed: u64, events: u64) -> Vec<u8> {
    let cfg = Config {
        seed,
        subscribers: 2_000,
        ..Config::default()
    };
    let mut out = Vec::new();
    write(&cfg, events, &mut out).expect("writing to memory");
    out
}

/// Runs a backtest in memory; returns it and the changed requests' lines.
fn backtest(baseline: &str, new: &str, input: &[u8], labels: &Labels) -> (Backtest, Vec<Value>) {
    let paired = Paired::compile(
        ("baseline.rules", baseline),
        ("new.rules", new),
        &Limits::default(),
    )
    .unwrap_or_else(|e| panic!("rules compile: {e:?}"));
    let mut engine = Engine::new(Arc::new(paired.joint.clone()));
    let mut changes = Vec::new();
    let bt = backtest::run(paired, &mut engine, input, labels, &mut changes).expect("in memory");
    let lines = String::from_utf8(changes)
        .expect("UTF-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a change is JSON"))
        .collect();
    (bt, lines)
}

/// The default rules without the rule named `name`.
fn without(name: &str) -> String {
    let start = DEFAULT_RULES
        .find(&format!("\nrule {name}\n"))
        .unwrap_or_else(|| panic!("no rule {name}"));
    let rest = &DEFAULT_RULES[start + 1..];
    let end = rest
        .find("\nrule ")
        .map_or(DEFAULT_RULES.len(), |i| start + 1 + i);
    format!("{}{}", &DEFAULT_RULES[..start], &DEFAULT_RULES[end..])
}

#[test]
fn a_ruleset_against_itself_changes_nothing() {
    let input = trace(11, 30_000);
    let (bt, changes) = backtest(DEFAULT_RULES, DEFAULT_RULES, &input, &Labels::new());
    assert!(
        bt.requests > 5_000,
        "a trace with requests: {}",
        bt.requests
    );
    assert_eq!(bt.changed, 0);
    assert!(changes.is_empty());
    assert_eq!(bt.baseline.outcomes, bt.new.outcomes);
    for (a, b) in bt.baseline.rules.iter().zip(&bt.new.rules) {
        assert_eq!(a.hits, b.hits);
    }
    // The baseline's side is exactly what replay decides.
    let out = crate::support::replay_with(None, std::str::from_utf8(&input).expect("UTF-8"));
    let mut replayed = [0u64; 3];
    for l in &out {
        let v: Value = serde_json::from_str(l).expect("JSON");
        match v["decision"].as_str() {
            Some("allow") => replayed[0] += 1,
            Some("hold") => replayed[1] += 1,
            Some("deny") => replayed[2] += 1,
            _ => {}
        }
    }
    // Replay counts retries again; the backtest counts each request once,
    // and the generator sends no retries.
    assert_eq!(bt.baseline.outcomes, replayed);
}

/// Removing one rule changes exactly the requests where it was the only
/// matched rule with the winning action.
#[test]
fn removing_a_rule_changes_exactly_where_it_alone_won() {
    let input = trace(12, 40_000);
    let text = std::str::from_utf8(&input).expect("UTF-8");
    let replayed: Vec<Value> = crate::support::replay_with(None, text)
        .iter()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let default = portcullis::rules::CompiledRules::default_rules();
    let action = |name: &str| {
        default
            .rules
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.action)
            .expect("a default rule")
    };
    for name in [
        "agent_velocity",
        "port_pin_mismatch",
        "repeat_sim_change",
        "account_lock",
    ] {
        let (bt, changes) = backtest(DEFAULT_RULES, &without(name), &input, &Labels::new());
        let mut want = BTreeSet::new();
        for d in &replayed {
            let (Some(id), Some(decision)) = (d["id"].as_str(), d["decision"].as_str()) else {
                continue;
            };
            let rules: Vec<&str> = d["rules"]
                .as_array()
                .expect("rules")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let winning = match decision {
                "deny" => portcullis::rules::Action::Deny,
                "hold" => portcullis::rules::Action::Hold,
                _ => continue,
            };
            let with_action: Vec<&&str> = rules.iter().filter(|r| action(r) == winning).collect();
            if with_action.len() == 1 && *with_action[0] == name {
                want.insert(id.to_string());
            }
        }
        let got: BTreeSet<String> = changes
            .iter()
            .map(|c| c["id"].as_str().expect("id").to_string())
            .collect();
        assert!(!want.is_empty(), "{name}: the trace exercises the rule");
        assert_eq!(got, want, "{name}");
        assert_eq!(bt.changed as usize, want.len());
        for c in &changes {
            assert!(
                c["baseline"]["rules"]
                    .as_array()
                    .expect("rules")
                    .iter()
                    .any(|r| r == name),
                "{name}: {c}"
            );
            assert!(
                !c["new"]["rules"]
                    .as_array()
                    .expect("rules")
                    .iter()
                    .any(|r| r == name)
            );
        }
    }
}

/// A small file whose precision and recall are worked out by hand.
#[test]
fn labels_give_the_precision_and_recall_worked_by_hand() {
    // Four SIM swaps on four lines; the new ruleset holds every swap by a
    // care agent (`care_swap`), the baseline holds none of them (no
    // history). Labels: s1 and s2 fraud, s3 and s4 legit; s1, s2 and s3
    // come through care, s4 through retail. s5 has no label.
    let swap = |id: &str, m: &str, ch: &str, t: &str| {
        format!(
            "{{\"id\":\"{id}\",\"kind\":\"sim_swap\",\"at\":\"2026-03-01T10:00:0{t}Z\",\"msisdn\":\"{m}\",\"account\":\"A{t}\",\"iccid\":\"8944110000000000008\",\"channel\":\"{ch}\"}}\n"
        )
    };
    let input = [
        swap("s1", "+447700900001", "care", "1"),
        swap("s2", "+447700900002", "care", "2"),
        swap("s3", "+447700900003", "care", "3"),
        swap("s4", "+447700900004", "retail", "4"),
        swap("s5", "+447700900005", "care", "5"),
    ]
    .concat();
    let new = "ruleset \"care\"\nrule care_swap\n  hold verify analyst_review\n  when kind is sim_swap and channel is care\n";
    let labels_text = "{\"id\":\"s1\",\"label\":\"fraud\",\"story\":\"x\"}\n\
                       {\"id\":\"s2\",\"label\":\"fraud\",\"story\":\"x\"}\n\
                       {\"id\":\"s3\",\"label\":\"legit\",\"story\":\"ordinary\"}\n\
                       {\"id\":\"s4\",\"label\":\"legit\",\"story\":\"ordinary\"}\n\
                       not json\n\
                       {\"id\":\"s9\",\"label\":\"maybe\"}\n";
    let (labels, problems) = backtest::read_labels(labels_text.as_bytes()).expect("in memory");
    assert_eq!(labels.len(), 4);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].starts_with("line 5:"), "{problems:?}");
    assert!(problems[1].contains("field label"), "{problems:?}");
    let (bt, changes) = backtest(DEFAULT_RULES, new, input.as_bytes(), &labels);
    assert_eq!(bt.requests, 5);
    assert_eq!(bt.labeled, 4);
    // Baseline: nothing stopped. Caught 0 of 2 fraud: recall 0; nothing
    // stopped, so precision is undefined.
    let b = bt.baseline.confusion;
    assert_eq!(
        (b.caught, b.missed, b.stopped_legit, b.passed_legit),
        (0, 2, 0, 2)
    );
    assert_eq!(b.recall(), Some(0.0));
    assert_eq!(b.precision(), None);
    // New: s1, s2, s3 held (s5 too, unlabeled). Caught 2 of 2 fraud
    // (recall 1), stopped 3 labeled requests of which 2 fraud (precision 2/3).
    let n = bt.new.confusion;
    assert_eq!(
        (n.caught, n.missed, n.stopped_legit, n.passed_legit),
        (2, 0, 1, 1)
    );
    assert_eq!(n.recall(), Some(1.0));
    assert_eq!(n.precision(), Some(2.0 / 3.0));
    assert_eq!(bt.new.rules[0].fraud_hits, 2);
    assert_eq!(bt.new.rules[0].legit_hits, 1);
    assert_eq!(bt.new.rules[0].hits, 4);
    assert_eq!(bt.new.outcomes[Outcome::Hold as usize], 4);
    assert_eq!(changes.len(), 4);
    assert_eq!(changes[0]["label"], "fraud");
    assert_eq!(changes[3]["id"], "s5");
    assert!(changes[3].get("label").is_none());
    let text = backtest::report(&bt, 0.05, None);
    assert!(text.contains("precision 66.7% recall 100.0%"), "{text}");
    // Per rule: care_swap matched 2 fraud and 1 legit labeled requests.
    assert!(
        text.contains("fraud       2  legit       1  precision 66.7%"),
        "{text}"
    );
}

fn scratch(test: &str) -> PathBuf {
    crate::support::scratch_dir("backtest", test)
}

/// The report stands alone: no script, and no address of anything
/// outside the page.
#[test]
fn the_report_is_self_contained_and_escapes_input() {
    let mut input = trace(13, 20_000);
    // An id that would be markup if it were not escaped.
    input.extend_from_slice(
        b"{\"id\":\"<b>x</b>&\",\"kind\":\"port_out\",\"at\":\"2027-01-01T00:00:00Z\",\"msisdn\":\"+447700900001\",\"account\":\"A1\",\"pin_ok\":false}\n",
    );
    let (bt, _) = backtest(
        DEFAULT_RULES,
        &without("port_pin_mismatch"),
        &input,
        &Labels::new(),
    );
    let page = html::render(&bt, 0.05);
    for banned in ["<script", "http://", "https://", "src=", "url(", "@import"] {
        assert!(!page.contains(banned), "the report holds {banned}");
    }
    assert!(page.contains("&lt;b&gt;x&lt;/b&gt;&amp;"));
    assert!(!page.contains("<b>x</b>"));
    for id in ["id=\"days\"", "id=\"rules\"", "id=\"changes\""] {
        assert!(page.contains(id), "chart {id}");
    }
}

/// Counts the pixels of `png` within a few steps of `rgb`.
fn pixels_of(png: &[u8], rgb: [u8; 3]) -> usize {
    let decoder = png::Decoder::new(png);
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let step = match info.color_type {
        png::ColorType::Rgba => 4,
        png::ColorType::Rgb => 3,
        other => panic!("colour type {other:?}"),
    };
    buf[..info.buffer_size()]
        .chunks(step)
        .filter(|p| (0..3).all(|i| p[i].abs_diff(rgb[i]) <= 6))
        .count()
}

fn rgb(hex: &str) -> [u8; 3] {
    let v = u32::from_str_radix(hex.trim_start_matches('#'), 16).expect("hex colour");
    [(v >> 16) as u8, (v >> 8) as u8, v as u8]
}

/// Debian's Chromium, where `.ci/run` installs it.
fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Opens the report in headless Chromium, takes a screenshot, and checks
/// that each chart drew: the baseline's and the new ruleset's bars and the
/// changed decisions' bars are on the screen in their colours.
#[test]
fn the_report_draws_its_charts_in_a_browser() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("PORTCULLIS_REQUIRE_CHROMIUM").is_none(),
            "PORTCULLIS_REQUIRE_CHROMIUM is set but Chromium is not installed"
        );
        eprintln!("skipped: Chromium is not installed (.ci/run installs it)");
        return;
    };
    let dir = scratch("browser");
    let events = dir.join("events.jsonl");
    std::fs::write(&events, trace(14, 40_000)).expect("write events");
    let rules = dir.join("new.rules");
    std::fs::write(&rules, without("repeat_sim_change")).expect("write rules");
    let report = dir.join("report.html");
    let out = Command::new(BIN)
        .current_dir(repo())
        .args(["backtest", "--rules"])
        .arg(&rules)
        .arg("--report")
        .arg(&report)
        .arg(&events)
        .output()
        .expect("run backtest");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shot = dir.join("report.png");
    let profile = dir.join("profile");
    let status = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1200,2400",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", report.display()))
        .output()
        .expect("run chromium");
    assert!(
        status.status.success() && shot.exists(),
        "chromium: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let png = std::fs::read(&shot).expect("read screenshot");
    // Far more than the legends' squares (144 pixels each): the bars drew.
    for (what, colour, least) in [
        ("baseline bars", html::BASELINE_COLOUR, 5_000),
        ("new bars", html::NEW_COLOUR, 5_000),
        ("changed decisions", html::CHANGED_COLOUR, 2_000),
    ] {
        let n = pixels_of(&png, rgb(colour));
        assert!(n > least, "{what} ({colour}): {n} pixels on screen");
    }
}

#[test]
fn the_command_reports_and_refuses_bad_rules_with_their_position() {
    let dir = scratch("command");
    let events = dir.join("events.jsonl");
    std::fs::write(&events, trace(15, 5_000)).expect("write events");
    let bad = dir.join("bad.rules");
    std::fs::write(
        &bad,
        "rule x\n  hold\n  when count(nothing on line within 1h) > 1\n",
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["backtest", "--rules"])
        .arg(&bad)
        .arg(&events)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.rules:3:"), "{err}");
    let changes = dir.join("changes.jsonl");
    let new = dir.join("new.rules");
    std::fs::write(&new, without("agent_velocity")).expect("write");
    let out = Command::new(BIN)
        .args(["backtest", "--rules"])
        .arg(&new)
        .arg("--changes")
        .arg(&changes)
        .arg(&events)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "baseline: default",
        "outcome",
        "changed requests:",
        "rule hits, new",
        "as shadow rules are",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
    assert!(changes.exists());
}
