//! The written contract in `proto/` against the code: every example line of
//! `proto/examples/events.jsonl` parses, every line of `invalid.jsonl` gets
//! the code and field its twin in `invalid.expected.jsonl` names, and every
//! schema file is valid JSON with one schema per kind.

use crate::support::{read, repo};
use portcullis::contract::{AtRule, Kind, parse_line};
use serde_json::Value;

#[test]
fn valid_examples_parse_and_cover_every_kind() {
    let text = read(&repo().join("proto/examples/events.jsonl"));
    let mut seen = std::collections::HashSet::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let ev = parse_line(line, AtRule::Required)
            .unwrap_or_else(|e| panic!("events.jsonl line {}: {e}", i + 1));
        seen.insert(ev.kind);
    }
    for k in Kind::ALL {
        assert!(seen.contains(k), "no example of {k}");
    }
}

#[test]
fn invalid_examples_get_their_documented_errors() {
    let lines = read(&repo().join("proto/examples/invalid.jsonl"));
    let expected = read(&repo().join("proto/examples/invalid.expected.jsonl"));
    let lines: Vec<&str> = lines.split('\n').filter(|l| !l.is_empty()).collect();
    let expected: Vec<&str> = expected.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), expected.len(), "one expectation per example");
    assert!(lines.len() >= 40);
    let mut codes = std::collections::HashSet::new();
    for (i, (line, want)) in lines.iter().zip(&expected).enumerate() {
        let want: Value = serde_json::from_str(want).expect("expected line is JSON");
        let err = parse_line(line, AtRule::Required)
            .err()
            .unwrap_or_else(|| panic!("invalid.jsonl line {} parsed: {line}", i + 1));
        assert_eq!(
            Some(err.code.as_str()),
            want["code"].as_str(),
            "invalid.jsonl line {}: {line}",
            i + 1
        );
        assert_eq!(
            err.field.as_deref(),
            want["field"].as_str(),
            "invalid.jsonl line {}: {line}",
            i + 1
        );
        codes.insert(err.code);
    }
    assert!(
        codes.len() >= 6,
        "examples cover the codes a line can get alone"
    );
}

#[test]
fn schemas_are_json_one_per_kind() {
    let dir = repo().join("proto/schemas");
    for k in Kind::ALL {
        let path = dir.join(format!("{k}.schema.json"));
        let v: Value = serde_json::from_str(&read(&path))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(v["type"], "object", "{}", path.display());
        assert_eq!(v["additionalProperties"], false, "{}", path.display());
    }
    for out in ["decision", "error", "alert"] {
        let path = dir.join(format!("{out}.schema.json"));
        let _: Value = serde_json::from_str(&read(&path))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}
