//! The load generator against its echo server: a short open-loop run, the
//! stream wait that counts `refused`, and the command line. No assertion
//! depends on timing: a run is checked for what it counted, not how fast.

use crate::support::scratch_dir;
use portcullis::client::{self, Client};
use portcullis::loadgen::payloads::Payloads;
use portcullis::loadgen::run::{self, RunOutcome, RunSpec, Target};
use portcullis::loadgen::{echo, plain_json};
use portcullis::server::ServiceLimits;
use portcullis::{tls, traffic};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn pki() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch_dir("loadgen", "pki");
        std::fs::remove_dir(&dir).expect("an empty scratch directory");
        tls::dev_pki(&dir).unwrap_or_else(|e| panic!("dev_pki {}: {e}", dir.display()));
        dir
    })
}

fn payloads(n: usize) -> Payloads {
    let cfg = traffic::Config {
        subscribers: 100_000,
        ..traffic::Config::default()
    };
    let mut p = Payloads::new(cfg, "admin");
    p.ensure(n).unwrap_or_else(|e| panic!("{e}"));
    p
}

fn target(label: &str, addr: std::net::SocketAddr) -> Target {
    Target {
        label: label.to_string(),
        addr,
        server_name: "localhost".to_string(),
        config: client::client_config(pki(), "admin").unwrap_or_else(|e| panic!("{e}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_against_the_echo_server_is_all_answered() {
    let (addr, echo) = echo::start(pki()).unwrap_or_else(|e| panic!("{e}"));
    let spec = RunSpec {
        rate: 500.0,
        duration: Duration::from_secs(1),
        connections: 2,
        answer_timeout: Duration::from_secs(10),
    };
    let p = payloads(spec.requests());
    let report = run::run(&target("echo", addr), &spec, Arc::new(p))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let t = &report.tally;
    assert_eq!(report.scheduled, 500);
    assert_eq!((report.sent, t.answered, t.accepted), (500, 500, 500));
    assert_eq!(t.refused, 0);
    assert!(t.errors.is_empty(), "{:?}", t.errors);
    assert_eq!(t.transport_errors(), 0, "{:?}", t.transport);
    assert_eq!(t.latency.len(), 500);
    let l = report.latency.expect("latencies of accepted answers");
    assert!(1 <= l.p50 && l.p50 <= l.p99 && l.p99 <= l.p99_9 && l.p99_9 <= l.max);
    assert!(l.max < 10_000_000, "{l:?}");
    assert!(report.elapsed_s >= 1.0);
    assert!(report.achieved_rate > 0.0 && report.achieved_rate <= 500.0);

    // The report's JSON, alone and beside a baseline.
    let alone = report.to_json();
    assert_eq!(alone["answered"], 500);
    assert_eq!(alone["errors"], serde_json::json!({}));
    assert!(alone["latency_us"]["p99_9"].is_u64());
    let both = plain_json(&report, Some(&report));
    for key in ["throughput_ratio", "p50_ratio", "p99_ratio"] {
        assert_eq!(both[key], 1.0, "{key}: {both}");
    }
    assert_eq!(both["gateway"]["sent"], 500);
    echo.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_waits_for_a_stream_counts_refused() {
    // One stream per connection, held open by the test: the next request
    // can have no stream until it ends, whatever the timing.
    let limits = ServiceLimits {
        streams_per_connection_max: 1,
        ..ServiceLimits::default()
    };
    let (addr, echo) = echo::start_with(pki(), &limits).unwrap_or_else(|e| panic!("{e}"));
    let client = Client::connect(addr, pki(), "client", "localhost")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let conn = client.connection().clone();
    let (mut send, mut recv) = conn.open_bi().await.expect("the one stream");
    send.write_all(b"\0\0\0\x02{}").await.expect("a frame");
    let p = payloads(1);
    let frame = bytes::Bytes::copy_from_slice(p.frame(0));
    let due = std::time::Instant::now();
    let outcome = run::request_once(conn.clone(), frame.clone(), due, Duration::from_secs(5)).await;
    assert_eq!(outcome, RunOutcome::Refused);
    // Once the held stream ends, the same request is answered.
    send.finish().expect("finish the held stream");
    let answer = recv
        .read_to_end(64)
        .await
        .expect("the held stream's answer");
    assert_eq!(answer, b"\0\0\0\x02{}");
    let answered = client
        .call(p.body(0))
        .await
        .expect("an answer on a new stream");
    assert_eq!(answered, p.body(0));
    client.close().await;
    echo.stop();
}

fn loadgen(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("loadgen")
        .args(args)
        .output()
        .expect("run portcullis loadgen")
}

#[test]
fn the_command_reports_one_json_object() {
    let (addr, echo) = echo::start(pki()).unwrap_or_else(|e| panic!("{e}"));
    let addr_s = addr.to_string();
    let dir = pki().to_str().expect("a UTF-8 path");
    let base = ["--addr", &addr_s, "--tls-dir", dir];
    let args = [
        &base[..],
        &["--rate", "200", "--duration", "0.5", "--connections", "1"],
        &["--json", "--echo-baseline"],
    ]
    .concat();
    let out = loadgen(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    for side in ["gateway", "echo"] {
        assert_eq!(v[side]["scheduled"], 100, "{v}");
        assert_eq!(v[side]["answered"], 100, "{v}");
        assert_eq!(v[side]["transport_errors"], 0, "{v}");
    }
    assert!(v["throughput_ratio"].is_f64(), "{v}");
    // Too small a population is refused as a usage error.
    let small = [&base[..], &["--rate", "10", "--subscribers", "1000"]].concat();
    let out = loadgen(&small);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--subscribers"));
    echo.stop();
}
