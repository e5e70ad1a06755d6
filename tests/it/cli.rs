//! The real `portcullis` binary, as an analyst or a CI job runs it.
//!
//! Library tests cannot see what only the command line does: argument
//! parsing, exit codes, what goes to stdout and what to stderr, reading
//! files and standard input, loading `--list` files, and printing rule
//! errors with their positions. These tests run the built binary on small
//! inputs and check each of those promises of issue 2:
//! - `replay` prints one JSON line per decision, error and alert on stdout,
//!   a summary on stderr (events, decisions by outcome, per-rule hits, errors
//!   by code, alerts, events/s), and exits 0 even when lines are bad;
//! - it exits non-zero only when the input cannot be read, the rules do not
//!   compile (with `file:line:col`), or a `--list` names a list the rules do
//!   not declare;
//! - `--list blocked_imei=FILE` (with `#` comments and blank lines) blocks
//!   the IMEIs in the file and only those;
//! - `replay -` reads standard input;
//! - `rules check` prints a one-line `ok:` summary for the default file and,
//!   for every broken file under `tests/data/rules/`, fails with the position
//!   and message recorded in its sibling `NAME.expect` (`LINE:COL fragment`);
//! - `gen` is deterministic and writes traffic that replays without errors.

use crate::support::{read, repo};
use portcullis::rules::DEFAULT_RULES;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// A fresh directory for one test's files.
fn scratch(test: &str) -> PathBuf {
    crate::support::scratch_dir("cli", test)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    p
}

/// Runs the binary with `args`, feeding `stdin` (empty when None).
fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
    let input = stdin.unwrap_or_default().to_vec();
    let mut pipe = child.stdin.take().expect("stdin is piped");
    // A thread, so that a large input cannot deadlock against a full stdout pipe.
    let feeder = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let out = child
        .wait_with_output()
        .expect("the binary runs to its end");
    feeder.join().expect("the stdin feeder");
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("stderr is UTF-8")
}

fn describe(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    )
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"))
        })
        .collect()
}

/// Whether some line holds `word` followed, after spaces or a colon, by the number `n`.
fn counts(text: &str, word: &str, n: u64) -> bool {
    text.lines().any(|line| {
        line.match_indices(word).any(|(i, _)| {
            let rest = line[i + word.len()..].trim_start_matches([' ', ':', '\t', '=']);
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse() == Ok(n)
        })
    })
}

/// Nine lines: three decisions (allow, deny, hold), a blank line, two bad
/// lines and an unapproved SIM change.
const SMALL: &str = r#"{"kind":"device_seen","at":"2026-03-01T10:00:00Z","msisdn":"+447700900123","imsi":"234150000000001","imei":"356938035643809"}
{"id":"s1","kind":"sim_swap","at":"2026-03-01T10:01:00Z","msisdn":"+447700900124","account":"A2","iccid":"8944110000000000008"}

{"id":"p1","kind":"port_out","at":"2026-03-01T10:02:00Z","msisdn":"+447700900125","account":"A3","pin_ok":false}
this is not json
{"id":"u1","kind":"sim_swop","at":"2026-03-01T10:03:00Z"}
{"kind":"fraud_report","at":"2026-03-01T10:04:00Z","account":"A4"}
{"id":"h1","kind":"account_change","at":"2026-03-01T10:05:00Z","account":"A4","change":"address"}
{"kind":"device_seen","at":"2026-03-01T10:06:00Z","msisdn":"+447700900123","imsi":"234150000000002","imei":"356938035643809"}
"#;

fn check_small_output(o: &Output) {
    assert!(
        o.status.success(),
        "replay with bad lines must exit 0\n{}",
        describe(o)
    );
    let out = json_lines(&stdout(o));
    assert_eq!(out.len(), 6, "{}", describe(o));
    assert_eq!(
        (&out[0]["id"], &out[0]["decision"]),
        (&"s1".into(), &"allow".into()),
        "{}",
        out[0]
    );
    assert_eq!(
        (&out[1]["id"], &out[1]["decision"]),
        (&"p1".into(), &"deny".into()),
        "{}",
        out[1]
    );
    assert_eq!(out[1]["rules"], serde_json::json!(["port_pin_mismatch"]));
    assert_eq!(
        (&out[2]["line"], &out[2]["error"]["code"]),
        (&5.into(), &"bad_json".into()),
        "{}",
        out[2]
    );
    assert_eq!(out[2]["id"], Value::Null);
    assert_eq!(
        (&out[3]["line"], &out[3]["error"]["code"]),
        (&6.into(), &"unknown_kind".into()),
        "{}",
        out[3]
    );
    assert_eq!(out[3]["id"], "u1");
    assert_eq!(
        (&out[4]["id"], &out[4]["decision"]),
        (&"h1".into(), &"hold".into()),
        "{}",
        out[4]
    );
    assert_eq!(out[4]["verify"], serde_json::json!(["analyst_review"]));
    assert_eq!(out[5]["alert"], "unapproved_sim_change");
    assert_eq!(out[5]["msisdn"], "+447700900123");
    assert_eq!(out[5]["at"], "2026-03-01T10:06:00Z");
    for d in &out[..2] {
        assert_eq!(d["ruleset"]["label"], "default", "{d}");
    }
}

#[test]
fn replay_prints_answers_on_stdout_and_a_summary_on_stderr() {
    let dir = scratch("replay-small");
    let events = write(&dir, "small.jsonl", SMALL);
    let o = run(&["replay", events.to_str().expect("UTF-8 path")], None);
    check_small_output(&o);
    let err = stderr(&o);
    let mut missing = Vec::new();
    if !err
        .lines()
        .any(|l| l.contains("events") && l.chars().any(|c| c.is_ascii_digit()))
    {
        missing.push("the number of events");
    }
    for (word, n, what) in [
        ("allow", 1, "allow decisions"),
        ("hold", 1, "hold decisions"),
        ("deny", 1, "deny decisions"),
        ("port_pin_mismatch", 1, "per-rule hits"),
        ("fraud_reported", 1, "per-rule hits"),
        (
            "account_lock",
            0,
            "per-rule hits (a rule that never matched)",
        ),
        ("bad_json", 1, "errors by code"),
        ("unknown_kind", 1, "errors by code"),
    ] {
        if !counts(&err, word, n) {
            missing.push(what);
        }
    }
    if !err.lines().any(|l| l.contains("alert") && l.contains('1')) {
        missing.push("alerts");
    }
    if !err.contains("events/s") {
        missing.push("events/s");
    }
    assert!(
        missing.is_empty(),
        "the summary lacks {missing:?}\n{}",
        describe(&o)
    );
}

#[test]
fn replay_dash_reads_standard_input() {
    let o = run(&["replay", "-"], Some(SMALL.as_bytes()));
    check_small_output(&o);
}

#[test]
fn replay_with_broken_rules_exits_non_zero_with_the_position() {
    let rules = repo().join("tests/data/rules/unknown_field.rules");
    let dir = scratch("replay-broken-rules");
    let events = write(&dir, "small.jsonl", SMALL);
    let o = run(
        &[
            "replay",
            "--rules",
            rules.to_str().expect("UTF-8 path"),
            events.to_str().expect("UTF-8 path"),
        ],
        None,
    );
    assert!(!o.status.success(), "{}", describe(&o));
    assert!(
        stdout(&o).is_empty(),
        "no decision may be printed with rules that do not compile\n{}",
        describe(&o)
    );
    assert!(
        stderr(&o).contains("unknown_field.rules:12:8:"),
        "{}",
        describe(&o)
    );
}

#[test]
fn replay_with_a_missing_rules_file_exits_non_zero() {
    let o = run(
        &[
            "replay",
            "--rules",
            "tests/data/rules/no-such-file.rules",
            "-",
        ],
        Some(SMALL.as_bytes()),
    );
    assert!(!o.status.success(), "{}", describe(&o));
    assert!(
        stderr(&o).contains("no-such-file.rules"),
        "{}",
        describe(&o)
    );
}

#[test]
fn replay_of_a_missing_events_file_exits_non_zero() {
    let dir = scratch("replay-missing");
    let missing = dir.join("no-such-events.jsonl");
    let o = run(&["replay", missing.to_str().expect("UTF-8 path")], None);
    assert!(!o.status.success(), "{}", describe(&o));
    assert!(
        stderr(&o).contains("no-such-events.jsonl"),
        "the error should name the file\n{}",
        describe(&o)
    );
}

/// Two swaps: one on a listed IMEI, one on an IMEI that is only in a comment.
const SWAPS: &str = r#"{"id":"b1","kind":"sim_swap","at":"2026-03-01T10:00:00Z","msisdn":"+447700900123","account":"A1","iccid":"8944110000000000008","imei":"260531793113837"}
{"id":"b2","kind":"sim_swap","at":"2026-03-01T10:01:00Z","msisdn":"+447700900124","account":"A2","iccid":"8944110000000000008","imei":"356938035643809"}
"#;

#[test]
fn a_list_file_blocks_the_imeis_it_names() {
    let dir = scratch("list");
    let list = write(
        &dir,
        "blocked.txt",
        "# stolen handsets, March\n\n260531793113837   # reported stolen\n   \n# 356938035643809 was found again\n",
    );
    let events = write(&dir, "swaps.jsonl", SWAPS);
    let arg = format!("blocked_imei={}", list.display());
    let o = run(
        &[
            "replay",
            "--list",
            &arg,
            events.to_str().expect("UTF-8 path"),
        ],
        None,
    );
    assert!(o.status.success(), "{}", describe(&o));
    let out = json_lines(&stdout(&o));
    assert_eq!(out.len(), 2, "{}", describe(&o));
    assert_eq!(
        (&out[0]["id"], &out[0]["decision"]),
        (&"b1".into(), &"deny".into()),
        "{}",
        out[0]
    );
    assert_eq!(out[0]["rules"], serde_json::json!(["blocked_device"]));
    assert_eq!(
        (&out[1]["id"], &out[1]["decision"]),
        (&"b2".into(), &"allow".into()),
        "{}",
        out[1]
    );

    // Without the list both swaps are allowed: the file made the difference.
    let o = run(&["replay", events.to_str().expect("UTF-8 path")], None);
    let out = json_lines(&stdout(&o));
    assert!(
        out.iter().all(|d| d["decision"] == "allow"),
        "{}",
        describe(&o)
    );
}

#[test]
fn a_list_the_rules_do_not_declare_is_refused() {
    let dir = scratch("list-unknown");
    let list = write(&dir, "sims.txt", "8944110000000000008\n");
    let arg = format!("stolen_sims={}", list.display());
    let o = run(&["replay", "--list", &arg, "-"], Some(SWAPS.as_bytes()));
    assert!(!o.status.success(), "{}", describe(&o));
    assert!(stdout(&o).is_empty(), "{}", describe(&o));
    let err = stderr(&o);
    assert!(
        err.contains("stolen_sims") && err.contains("list"),
        "the message should name the list\n{}",
        describe(&o)
    );
}

#[test]
fn a_list_file_with_a_value_of_the_wrong_type_is_refused() {
    // `blocked_imei` holds IMEIs: a value that is not one is a mistake in the
    // file, not something to skip silently.
    let dir = scratch("list-bad-value");
    let list = write(&dir, "blocked.txt", "260531793113837\n26053179311383\n");
    let arg = format!("blocked_imei={}", list.display());
    let o = run(&["replay", "--list", &arg, "-"], Some(SWAPS.as_bytes()));
    assert!(!o.status.success(), "{}", describe(&o));
    assert!(stdout(&o).is_empty(), "{}", describe(&o));
    assert!(
        stderr(&o).contains("blocked.txt:2"),
        "the message should give the file and line\n{}",
        describe(&o)
    );
}

#[test]
fn a_list_file_with_a_line_past_its_bound_is_refused_at_that_line() {
    // A file that is not a list (a log, a dump) stops at its first long
    // line, not after filling memory with it.
    let dir = scratch("list-long-line");
    let long = "9".repeat(5000);
    let list = write(&dir, "blocked.txt", &format!("260531793113837\n{long}\n"));
    let arg = format!("blocked_imei={}", list.display());
    let o = run(&["replay", "--list", &arg, "-"], Some(SWAPS.as_bytes()));
    assert!(!o.status.success(), "{}", describe(&o));
    assert!(stdout(&o).is_empty(), "{}", describe(&o));
    assert!(
        stderr(&o).contains("blocked.txt:2: the line is longer than 4096 bytes"),
        "{}",
        describe(&o)
    );
}

#[test]
fn a_list_argument_without_a_file_is_refused() {
    let o = run(
        &["replay", "--list", "blocked_imei", "-"],
        Some(SWAPS.as_bytes()),
    );
    assert!(!o.status.success(), "{}", describe(&o));
    assert!(stderr(&o).contains("NAME=FILE"), "{}", describe(&o));
}

#[test]
fn rules_check_accepts_the_default_file_with_a_one_line_summary() {
    let o = run(&["rules", "check", "rules/default.rules"], None);
    assert!(o.status.success(), "{}", describe(&o));
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 1, "{}", describe(&o));
    assert!(out.starts_with("ok:"), "{}", describe(&o));
    assert!(out.contains("13 rules"), "{}", describe(&o));
}

/// A ruleset that cannot hold or deny checks, with a warning that it
/// allows everything; the default one gets no warning.
#[test]
fn rules_check_warns_of_a_ruleset_that_allows_everything() {
    let dir =
        std::env::temp_dir().join(format!("portcullis-cli-permissive-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let empty = dir.join("empty.rules");
    std::fs::write(&empty, "# nothing left\n").expect("write");
    let o = run(&["rules", "check", empty.to_str().expect("UTF-8")], None);
    assert!(o.status.success(), "{}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("allows every request"), "{}", describe(&o));
    let o = run(&["rules", "check", "rules/default.rules"], None);
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("warning"),
        "{}",
        describe(&o)
    );
}

#[test]
fn rules_default_prints_the_built_in_rules() {
    let o = run(&["rules", "default"], None);
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(stdout(&o), DEFAULT_RULES);
    assert_eq!(read(&repo().join("rules/default.rules")), DEFAULT_RULES);
}

/// The broken rules files and what `rules check` must say about each.
fn broken_files() -> Vec<(PathBuf, u32, u32, String)> {
    let dir = repo().join("tests/data/rules");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/data/rules exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    for f in &files {
        let ext = f.extension().and_then(|e| e.to_str());
        assert!(
            matches!(ext, Some("rules" | "expect")),
            "unexpected file {}",
            f.display()
        );
        let sibling = f.with_extension(if ext == Some("rules") {
            "expect"
        } else {
            "rules"
        });
        assert!(
            sibling.exists(),
            "{} has no sibling {}",
            f.display(),
            sibling.display()
        );
    }
    files
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "rules"))
        .map(|f| {
            let expect = read(&f.with_extension("expect"));
            let expect = expect.trim_end_matches('\n');
            let (pos, fragment) = expect
                .split_once(' ')
                .unwrap_or_else(|| panic!("{}.expect: want `LINE:COL fragment`", f.display()));
            let (line, col) = pos.split_once(':').expect("LINE:COL");
            let line = line.parse().expect("LINE is a number");
            let col = col.parse().expect("COL is a number");
            (f, line, col, fragment.to_string())
        })
        .collect()
}

#[test]
fn rules_check_reports_each_broken_file_at_its_position() {
    let cases = broken_files();
    assert!(cases.len() >= 10, "only {} broken rules files", cases.len());
    let mut failures = Vec::new();
    for (file, line, col, fragment) in &cases {
        let o = run(
            &["rules", "check", file.to_str().expect("UTF-8 path")],
            None,
        );
        let all = format!("{}{}", stdout(&o), stderr(&o));
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .expect("file name");
        let at = format!("{name}:{line}:{col}: ");
        let located = all
            .lines()
            .any(|l| l.contains(&at) && l.contains(fragment.as_str()));
        if o.status.success() || !located || !all.contains("hint:") || stdout(&o).contains("ok:") {
            failures.push(format!(
                "{name}: want a failure with `{at}...{fragment}` and a hint\n{}",
                describe(&o)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The same positions through the library: the binary only prints them.
#[test]
fn the_broken_files_fail_to_compile_in_the_library_too() {
    use portcullis::rules::{CompiledRules, Limits};
    for (file, line, col, fragment) in broken_files() {
        let src = read(&file);
        let errs = match CompiledRules::compile("x.rules", &src, &Limits::default()) {
            Ok(_) => panic!("{} compiles", file.display()),
            Err(e) => e,
        };
        let first = &errs[0];
        assert_eq!(
            (first.pos.line, first.pos.col),
            (line as _, col as _),
            "{}: {first}",
            file.display()
        );
        assert!(
            first.message.contains(&fragment),
            "{}: {first}",
            file.display()
        );
        assert!(!first.hint.is_empty(), "{}: no hint", file.display());
    }
}

#[test]
fn gen_is_deterministic_and_replays_without_errors() {
    let a = run(&["gen", "--seed", "3", "--events", "500"], None);
    let b = run(&["gen", "--seed", "3", "--events", "500"], None);
    assert!(a.status.success(), "{}", describe(&a));
    assert_eq!(a.stdout, b.stdout, "two runs with the same seed differ");
    let c = run(&["gen", "--seed", "4", "--events", "500"], None);
    assert_ne!(a.stdout, c.stdout, "the seed changes nothing");
    let text = stdout(&a);
    assert_eq!(text.lines().count(), 500);
    let requests = json_lines(&text)
        .iter()
        .filter(|e| {
            matches!(
                e["kind"].as_str(),
                Some("sim_swap" | "esim_transfer" | "port_out" | "account_change")
            )
        })
        .count();
    assert!(requests > 50, "only {requests} requests in 500 events");

    let o = run(&["replay", "-"], Some(&a.stdout));
    assert!(o.status.success(), "{}", describe(&o));
    let out = json_lines(&stdout(&o));
    let errors: Vec<&Value> = out.iter().filter(|v| v.get("error").is_some()).collect();
    assert!(errors.is_empty(), "generated lines give errors: {errors:?}");
    let decisions = out.iter().filter(|v| v.get("decision").is_some()).count();
    assert_eq!(decisions, requests, "one decision per request");
}
