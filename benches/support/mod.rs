//! What the replay benchmarks share: the generated trace and the floor.

// Each benchmark uses part of what is here.
#![allow(dead_code)]

use portcullis::contract::{AtRule, parse_line};
use portcullis::traffic::{Config, write};

/// Whether `cargo bench` asked to measure: it passes `--bench`, while
/// `cargo test --benches` passes nothing and only checks the target runs.
pub fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Events a benchmark generates (`PORTCULLIS_BENCH_EVENTS`, default 1M).
pub fn bench_events() -> u64 {
    std::env::var("PORTCULLIS_BENCH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000)
}

/// The median of measurements (sorts them).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// About 1M generated events over 100k subscribers (`PORTCULLIS_BENCH_EVENTS`
/// changes the count), as JSON lines in memory.
pub fn trace() -> (Vec<u8>, u64) {
    let n = bench_events();
    let cfg = Config {
        subscribers: 100_000,
        ..Config::default()
    };
    let mut out = Vec::new();
    write(&cfg, n, &mut out).expect("writing to memory");
    (out, n)
}

/// The floor: find each line as replay does (memchr), parse it into a typed
/// event, and write one small JSON line.
pub fn floor(input: &[u8], out: &mut Vec<u8>) -> u64 {
    let mut n = 0;
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', input).chain(std::iter::once(input.len())) {
        let line = &input[start..end];
        start = end + 1;
        if line.is_empty() {
            continue;
        }
        let Ok(text) = std::str::from_utf8(line) else {
            continue;
        };
        match parse_line(text, AtRule::Required) {
            Ok(ev) => {
                out.extend_from_slice(b"{\"id\":");
                portcullis::contract::json_str(out, ev.id.as_deref().unwrap_or(""));
                out.extend_from_slice(b",\"kind\":\"");
                out.extend_from_slice(ev.kind.as_str().as_bytes());
                out.extend_from_slice(b"\"}\n");
                n += 1;
            }
            Err(e) => {
                out.extend_from_slice(b"{\"error\":\"");
                out.extend_from_slice(e.code.as_str().as_bytes());
                out.extend_from_slice(b"\"}\n");
            }
        }
    }
    n
}
