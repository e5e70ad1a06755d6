//! The service over QUIC with its state durable (redb under a data
//! directory) beside the same service with its state in memory, side by
//! side: the two speed targets.
//!
//! 1. Throughput with 64 requests in flight (64 tasks, each sending its
//!    next request when the last is answered, over 4 connections): durable
//!    at least 0.5x memory. Pairs alternate (memory, durable) so that drift
//!    of a shared machine falls on both; the median ratio is printed.
//! 2. The p99 durability adds at half of that load: an open-loop run at
//!    half the durable rate against each, p99 minus p99.
//!
//! Both servers run in this process with the same generated traffic
//! (100k subscribers, the loadgen's payloads).
//! Run: `cargo bench --bench durable`.
// A benchmark or test times what it measures: it reads the clock itself.
#![allow(clippy::disallowed_methods)]

use portcullis::client::Client;
use portcullis::gateway::clock::SystemClock;
use portcullis::loadgen::payloads::{Payloads, RunTag};
use portcullis::loadgen::run::{RunSpec, Target, run};
use portcullis::server::{Config, Server};
use portcullis::store::{RedbStore, Store};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const IN_FLIGHT: usize = 64;
const CONNECTIONS: usize = 4;
const PAIRS: usize = 3;
const RUN: Duration = Duration::from_secs(3);

fn main() {
    let dir = std::env::temp_dir().join(format!("portcullis-durable-{}", std::process::id()));
    let tls = dir.join("tls");
    portcullis::tls::dev_pki(&tls).expect("dev pki");
    portcullis::keys::write_dev_keys(&tls).expect("dev keys");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let mut payloads = Payloads::new(
            portcullis::traffic::Config {
                subscribers: 100_000,
                ..portcullis::traffic::Config::default()
            },
            "admin",
        );
        payloads.ensure(400_000).expect("payloads");
        let mut payloads = Arc::new(payloads);
        let mut tag = 0;
        let mut retagged = |p: &mut Arc<Payloads>| {
            tag += 1;
            // Invariant: every run has ended, so no one else holds them.
            Arc::get_mut(p).expect("payloads not shared").retag(RunTag::from_number(tag));
            p.clone()
        };
        let mut ratios = Vec::new();
        let mut durable_rates = Vec::new();
        for pair in 0..PAIRS {
            let memory = closed_loop(&tls, None, retagged(&mut payloads)).await;
            let store = redb_store(&dir, pair);
            let durable = closed_loop(&tls, Some(store), retagged(&mut payloads)).await;
            println!(
                "pair {pair}: memory {memory:.0}/s, durable {durable:.0}/s, ratio {:.2}",
                durable / memory
            );
            ratios.push(durable / memory);
            durable_rates.push(durable);
        }
        ratios.sort_by(f64::total_cmp);
        durable_rates.sort_by(f64::total_cmp);
        let half = (durable_rates[PAIRS / 2] / 2.0).round();
        println!(
            "throughput with {IN_FLIGHT} in flight: median ratio durable/memory {:.2} (target >= 0.5)",
            ratios[PAIRS / 2]
        );
        let memory = open_loop(&tls, None, half, retagged(&mut payloads)).await;
        let durable = open_loop(&tls, Some(redb_store(&dir, 99)), half, retagged(&mut payloads)).await;
        println!(
            "p99 at {half:.0}/s (half the durable rate): memory {memory} us, durable {durable} us, added {} us (target <= 2000)",
            durable.saturating_sub(memory)
        );
    });
    let _ = std::fs::remove_dir_all(&dir);
}

fn redb_store(dir: &std::path::Path, n: usize) -> Arc<dyn Store> {
    let data: PathBuf = dir.join(format!("data-{n}"));
    std::fs::create_dir_all(&data).expect("mkdir");
    Arc::new(RedbStore::open(&data.join("portcullis.redb")).expect("a store"))
}

async fn server(tls: &std::path::Path, store: Option<Arc<dyn Store>>) -> Server {
    let mut config = Config::local(tls);
    config.keys = Some(tls.to_path_buf());
    Server::start_over(config, Arc::new(SystemClock), store)
        .await
        .expect("a server")
}

/// Requests per second with IN_FLIGHT requests always in flight.
async fn closed_loop(
    tls: &std::path::Path,
    store: Option<Arc<dyn Store>>,
    p: Arc<Payloads>,
) -> f64 {
    let server = server(tls, store).await;
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        clients.push(Arc::new(
            Client::connect(server.local_addr(), tls, "admin", "localhost")
                .await
                .expect("connect"),
        ));
    }
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..IN_FLIGHT {
        let (client, p, next, done) = (
            clients[t % CONNECTIONS].clone(),
            p.clone(),
            next.clone(),
            done.clone(),
        );
        tasks.spawn(async move {
            while start.elapsed() < RUN {
                let i = next.fetch_add(1, Ordering::Relaxed) % p.len();
                if client.call(p.body(i)).await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let rate = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    server.shutdown().await;
    rate
}

/// The p99 latency (microseconds) of an open-loop run at `rate`.
async fn open_loop(
    tls: &std::path::Path,
    store: Option<Arc<dyn Store>>,
    rate: f64,
    p: Arc<Payloads>,
) -> u64 {
    let server = server(tls, store).await;
    let spec = RunSpec {
        rate,
        duration: RUN,
        connections: CONNECTIONS,
        answer_timeout: Duration::from_secs(5),
    };
    let target = Target {
        label: "gateway".into(),
        addr: server.local_addr(),
        server_name: "localhost".into(),
        config: portcullis::client::client_config(tls, "admin").expect("a client config"),
    };
    let report = run(&target, &spec, p).await.expect("a run");
    server.shutdown().await;
    report.p99().unwrap_or(u64::MAX)
}
