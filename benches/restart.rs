//! Restart with a large store: how long `portcullis serve` takes, from
//! process start to `listening`, over a store holding 1M subscribers
//! (a line and an account each, sealed under pseudonyms as the service
//! writes them) and 1,000 pending holds. The issue's target: at most 10 s
//! to accept requests.
//!
//! The store is written directly (the engine deciding one SIM swap per
//! subscriber, its changes sealed by `store::Persist` and committed in
//! large transactions): building it through QUIC would take far longer
//! than restarting from it. Then the binary is started three times over
//! it, stopped with SIGTERM each time, and the median start is printed;
//! then once more after a SIGKILL, the restart after a crash.
//!
//! Run: `cargo bench --bench restart` (`RESTART_SUBSCRIBERS` to change the
//! count).
// A benchmark or test times what it measures: it reads the clock itself.
#![allow(clippy::disallowed_methods)]

use portcullis::contract::{AtRule, parse_line};
use portcullis::engine::{Changes, Engine, EngineLimits, FingerprintKey};
use portcullis::keys::Keys;
use portcullis::rules::CompiledRules;
use portcullis::store::{Persist, RedbStore, Store};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn main() {
    let subscribers: u64 = std::env::var("RESTART_SUBSCRIBERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("portcullis-restart-{}", std::process::id()));
    let tls = dir.join("tls");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    portcullis::tls::dev_pki(&tls).expect("dev pki");
    portcullis::keys::write_dev_keys(&tls).expect("dev keys");
    let built = Instant::now();
    build(&tls, &data, subscribers);
    let size = std::fs::metadata(data.join("portcullis.redb")).map_or(0, |m| m.len());
    println!(
        "store: {subscribers} subscribers, {} MiB, built in {:.1} s",
        size >> 20,
        built.elapsed().as_secs_f64()
    );
    let mut starts: Vec<Duration> = (0..3).map(|_| start_and_stop(&tls, &data, false)).collect();
    starts.sort();
    let crash = {
        start_and_stop(&tls, &data, true);
        start_and_stop(&tls, &data, false)
    };
    println!(
        "restart: median {:.3} s to listening (runs {:?}); after a SIGKILL {:.3} s (target <= 10 s)",
        starts[1].as_secs_f64(),
        starts
            .iter()
            .map(|d| format!("{:.3}", d.as_secs_f64()))
            .collect::<Vec<_>>(),
        crash.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes the store: one SIM swap per subscriber (the first 1,000 on lines
/// swapped once already, so held).
fn build(tls: &Path, data: &Path, subscribers: u64) {
    let keys = Arc::new(Keys::load(tls).expect("keys"));
    let store = RedbStore::open(&data.join("portcullis.redb")).expect("store");
    let rules = Arc::new(CompiledRules::default_rules());
    let mut engine = Engine::with_key(
        rules,
        EngineLimits::default(),
        FingerprintKey(keys.records_key()),
    );
    engine.track_changes();
    let persist = Persist::new(keys.clone(), FingerprintKey(keys.records_key()));
    let mut batches = Vec::new();
    let mut changes = Changes::default();
    let empty = portcullis::store::Loaded::default();
    for i in 0..subscribers + 1_000 {
        let line = i % subscribers;
        let text = format!(
            r#"{{"id":"client:r{i}","kind":"sim_swap","at":"2026-11-01T10:00:00Z","msisdn":"+4477{line:08}","account":"A{line}","iccid":"8944110000000000008"}}"#
        );
        let ev = parse_line(&text, AtRule::Required).expect("a valid event");
        let at = ev.at.expect("at");
        engine.handle(&ev, at);
        engine.take_changes(&mut changes);
        batches.push(persist.batch(&engine, &changes, &empty).expect("a batch"));
        changes.clear();
        // Memory stays bounded: the states are in the store.
        for id in portcullis::history::EntityId::all_of(&ev) {
            engine.evict_entity(&id);
        }
        if batches.len() == 20_000 {
            store.commit(&batches).expect("commit");
            batches.clear();
        }
    }
    batches.push(portcullis::gateway::durable::rulesets_batch(&engine, 0));
    batches.push(portcullis::gateway::durable::check_format(&store).expect("format"));
    store.commit(&batches).expect("commit");
}

/// Starts the binary over `data`, waits for `listening`, then stops it
/// (SIGKILL when `kill`, else SIGTERM and a clean exit). Returns the time
/// to `listening`.
fn start_and_stop(tls: &Path, data: &Path, kill: bool) -> Duration {
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .args(["serve", "--quic", "127.0.0.1:0", "--tls-dir"])
        .arg(tls)
        .arg("--data")
        .arg(data)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start serve");
    let stderr = child.stderr.take().expect("piped");
    let mut took = None;
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        if line.contains("listening quic=") {
            took = Some(started.elapsed());
            break;
        }
    }
    let took = took.expect("serve listened");
    let signal = if kill { "-KILL" } else { "-TERM" };
    Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill");
    let _ = child.wait();
    took
}
