//! The fuzz targets' corpus and regressions, replayed on stable Rust: every
//! file under `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` goes
//! through the same check as the target (`fuzz_checks.rs`, which the fuzz
//! targets include by path). See `fuzz/README.md`.

#[path = "fuzz_checks.rs"]
mod fuzz_checks;

use crate::support::repo;
use std::path::Path;

/// The inputs of one target: corpus first, then regressions (a missing
/// directory holds none). Sorted, so a failure names the same file each run.
fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for dir in ["corpus", "regressions"] {
        let dir = repo().join("fuzz").join(dir).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<_> = entries
            .map(|e| {
                e.unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                    .path()
            })
            .filter(|p| p.is_file())
            .collect();
        paths.sort();
        for p in paths {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            out.push((rel(&p), bytes));
        }
    }
    out
}

fn rel(p: &Path) -> String {
    p.strip_prefix(repo())
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned()
}

/// Stack for the replay thread. The fuzzers ran optimized on an 8 MiB main
/// thread; a debug build's frames are several times larger, and the rules
/// corpus holds conditions nested thousands deep (see `fuzz/README.md`).
const REPLAY_STACK_BYTES: usize = 256 << 20;

/// Runs `check` on each input on a thread with a large stack; a panic names
/// the file that caused it. Returns how many inputs there were.
fn replay(target: &'static str, check: fn(&[u8])) -> usize {
    let run = move || {
        let all = inputs(target);
        for (name, bytes) in &all {
            if let Err(e) = std::panic::catch_unwind(|| check(bytes)) {
                let why = e
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| e.downcast_ref::<&str>().copied())
                    .unwrap_or("a panic");
                panic!("{name}: {why}");
            }
        }
        all.len()
    };
    std::thread::Builder::new()
        .name(format!("replay-{target}"))
        .stack_size(REPLAY_STACK_BYTES)
        .spawn(run)
        .expect("spawn the replay thread")
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

#[test]
fn frame_corpus_passes_the_frame_checks() {
    let n = replay("frame", fuzz_checks::check_frame);
    assert!(n > 0, "fuzz/corpus/frame is empty");
}

#[test]
fn event_corpus_passes_the_event_checks() {
    let n = replay("event", fuzz_checks::check_event);
    assert!(n > 0, "fuzz/corpus/event is empty");
}

#[test]
fn rules_corpus_compiles_without_panicking() {
    let n = replay("rules", fuzz_checks::check_rules);
    assert!(n > 0, "fuzz/corpus/rules is empty");
}

#[test]
fn stored_corpus_passes_the_stored_checks() {
    let n = replay("stored", fuzz_checks::check_stored);
    assert!(n > 0, "fuzz/corpus/stored is empty");
}

#[test]
fn the_frame_input_layout_reads_as_documented() {
    let data = [10, 0, 1, 5, 0x81, 0, 0, 0, 1, b'x'];
    let input = fuzz_checks::FrameInput::read(&data).expect("a whole header");
    assert_eq!(input.frame_bytes_max, 10);
    assert_eq!(input.chunks, vec![6, 2048]);
    assert_eq!(input.stream, &[0, 0, 0, 1, b'x']);
    assert!(fuzz_checks::FrameInput::read(&[0, 0]).is_none());
    let default = fuzz_checks::FrameInput::read(&[0, 0, 0, 1]).expect("a whole header");
    assert_eq!(default.frame_bytes_max, 65536);
    assert!(default.stream.is_empty());
    fuzz_checks::check_frame(&data);
}

#[test]
fn files_corpus_passes_the_files_checks() {
    let n = replay("files", fuzz_checks::check_files);
    assert!(n > 0, "fuzz/corpus/files is empty");
}
