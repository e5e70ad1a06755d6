//! Data-driven replay cases: `tests/data/replay/NAME.in.jsonl` replayed with
//! the default ruleset must give `NAME.out.jsonl`, line by line, each
//! expected object a subset of the actual one (see that folder's README).

use crate::support::{read, replay_with, repo, subset};
use serde_json::Value;

#[test]
fn every_replay_case_matches() {
    let dir = repo().join("tests/data/replay");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("tests/data/replay exists")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".in.jsonl"))
                .map(str::to_string)
        })
        .collect();
    names.sort();
    assert!(names.len() >= 40, "only {} cases found", names.len());
    let mut failures = Vec::new();
    for name in &names {
        let input = read(&dir.join(format!("{name}.in.jsonl")));
        let expected = read(&dir.join(format!("{name}.out.jsonl")));
        let got = replay_with(None, &input);
        let want: Vec<&str> = expected.lines().filter(|l| !l.trim().is_empty()).collect();
        if got.len() != want.len() {
            failures.push(format!(
                "{name}: {} lines, expected {}\n  got:\n    {}",
                got.len(),
                want.len(),
                got.join("\n    ")
            ));
            continue;
        }
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let gv: Value = serde_json::from_str(g).expect("replay output is JSON");
            let wv: Value = serde_json::from_str(w)
                .unwrap_or_else(|e| panic!("{name}.out.jsonl line {}: {e}", i + 1));
            if !subset(&wv, &gv) {
                failures.push(format!(
                    "{name} output line {}:\n  want {w}\n  got  {g}",
                    i + 1
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        names.len(),
        failures.join("\n")
    );
}
