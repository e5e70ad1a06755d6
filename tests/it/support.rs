//! Helpers shared by the integration tests.

use portcullis::engine::Engine;
use portcullis::rules::{CompiledRules, Limits};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Replays `input` with `rules` (default when None) and returns the output lines.
pub fn replay_with(rules: Option<&str>, input: &str) -> Vec<String> {
    let rules = match rules {
        Some(src) => CompiledRules::compile("test.rules", src, &Limits::default())
            .unwrap_or_else(|e| panic!("rules compile: {e:?}")),
        None => CompiledRules::default_rules(),
    };
    let mut engine = Engine::new(Arc::new(rules));
    let mut out = Vec::new();
    portcullis::replay::run(&mut engine, input.as_bytes(), &mut out).expect("in-memory replay");
    String::from_utf8(out)
        .expect("replay writes UTF-8")
        .lines()
        .map(str::to_string)
        .collect()
}

/// Whether every key of `want` is in `got` with an equal value (objects
/// recursively; arrays and scalars exactly).
pub fn subset(want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => w
            .iter()
            .all(|(k, v)| g.get(k).is_some_and(|gv| subset(v, gv))),
        _ => want == got,
    }
}

/// A fresh, empty directory for one test's files: `AREA-TEST-PID` under
/// cargo's temporary directory for tests.
pub fn scratch_dir(area: &str, test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{area}-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A two-worker tokio runtime for tests over real sockets.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}
