//! `portcullis loadgen`: an open-loop load generator for the QUIC service,
//! and the bare quinn echo server it measures the gateway against.
//!
//! - [`payloads`]: realistic requests from the traffic generator, made
//!   before the timed run, with ids tagged so every run's are new.
//! - [`run`]: one open-loop run (requests due at `start + i / rate`,
//!   latency from when each was due) and its report.
//! - [`echo`]: the echo server, with the gateway's TLS and transport.
//! - [`peak`]: the search for the highest rate a server keeps up with.
//!
//! A plain run offers `--rate` for `--duration` seconds to the gateway
//! (and, with `--echo-baseline`, the same requests to the echo server) and
//! reports both. `--find-peak` measures the three targets of a gateway
//! worth shipping in one command: its peak against the echo server's
//! (ratio at least 0.8), its p50 against the echo server's at half its
//! peak (ratio at most 1.5), and its behaviour at twice its peak: the p99
//! of accepted requests at most twice what it is at 80% of the peak, the
//! excess shed as `refused` or `overloaded`.
// The load generator times a run from each request's scheduled send: it
// reads the monotonic clock itself, the one place besides `gateway::clock`.
#![allow(clippy::disallowed_methods)]

pub mod echo;
pub mod payloads;
pub mod peak;
pub mod run;

use crate::client::{self, ClientError};
use crate::traffic;
use clap::Args;
use payloads::{PayloadError, Payloads, RunTag};
use peak::PeakSearch;
use run::{Report, RunSpec, Target, round2};
use serde_json::{Value, json};
use std::fmt;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args, Debug, Clone)]
pub struct LoadgenOptions {
    /// The service's QUIC address.
    #[arg(long)]
    pub addr: SocketAddr,
    /// The directory of `portcullis certs dev`.
    #[arg(long)]
    pub tls_dir: PathBuf,
    /// Offered requests per second (open loop: sent on schedule whatever
    /// the answers do). With --find-peak, the rate the search starts from.
    #[arg(long)]
    pub rate: f64,
    /// Seconds to offer load for (each run's, with --find-peak).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// QUIC connections to spread the load over.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also run the same load against an in-process bare quinn echo server
    /// and print both results and their ratios.
    #[arg(long)]
    pub echo_baseline: bool,
    /// Which certificate of the TLS directory to present. Generated
    /// traffic holds list edits (and may hold verifications), which need
    /// the analyst or admin role.
    #[arg(long = "as", default_value = "admin")]
    pub as_: String,
    /// The name the server's certificate must carry.
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
    /// Subscribers in the generated population (at least 100000, so the
    /// gateway's history is not a handful of hot entries).
    #[arg(long, default_value_t = SUBSCRIBERS_MIN)]
    pub subscribers: u32,
    /// Seed of the generated traffic.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How long a request waits for its answer before it counts as a
    /// transport error, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub answer_timeout_ms: u64,
    /// Find the gateway's and the echo server's peak rates, the p50 ratio
    /// at half the gateway's peak, and the gateway at 80% and 2x its peak.
    #[arg(long)]
    pub find_peak: bool,
    /// With --find-peak: the highest rate the search tries.
    #[arg(long, default_value_t = 200_000.0)]
    pub rate_max: f64,
    /// With --find-peak: runs per measured point; the point is the run
    /// with the median p99. On a shared machine one run can be slowed by a
    /// neighbour, and the median keeps one such run from moving the peak.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
}

/// The smallest generated population: fewer subscribers would make every
/// request hit the same few history entries, which no carrier's traffic
/// does.
pub const SUBSCRIBERS_MIN: u32 = 100_000;

/// The most connections a run opens.
pub const CONNECTIONS_MAX: usize = 1000;

/// The longest run, in seconds.
const DURATION_MAX_S: f64 = 3600.0;

/// The pause between two runs, so the server's backlog of one run (late
/// answers, `deadline`s, connections closing) does not count in the next.
const SETTLE: Duration = Duration::from_millis(500);

/// The target p50 ratio (gateway / echo) at half the gateway's peak.
pub const P50_RATIO_MAX: f64 = 1.5;

/// The target peak ratio (gateway / echo).
pub const PEAK_RATIO_MIN: f64 = 0.8;

/// Why `portcullis loadgen` made no runs, or stopped. The option variants
/// (exit 2) carry the value given; the others (exit 1) the step that
/// failed and its typed source.
#[derive(Debug)]
pub enum LoadgenError {
    /// `--rate` is not a number more than 0.
    Rate { rate: f64 },
    /// `--duration` is not more than 0 and at most `DURATION_MAX_S`.
    Duration { duration: f64 },
    /// `--connections` is not from 1 to [`CONNECTIONS_MAX`].
    Connections { connections: usize },
    /// `--subscribers` is not from [`SUBSCRIBERS_MIN`] to
    /// `traffic::SUBSCRIBERS_MAX`.
    Subscribers { subscribers: u32 },
    /// `--answer-timeout-ms` is 0.
    AnswerTimeout,
    /// With `--find-peak`, `--rate-max` is below `--rate`.
    RateMax { rate_max: f64, rate: f64 },
    /// The runs would need more requests than a run may prepare
    /// (`payloads::PAYLOADS_MAX`); `requests` is rate x duration, rounded
    /// up.
    TooManyRequests { requests: f64 },
    /// The async runtime could not be started.
    Runtime(io::Error),
    /// The client certificate `who` of `tls_dir` could not be read or
    /// used.
    Identity {
        tls_dir: PathBuf,
        who: String,
        source: ClientError,
    },
    /// The payloads were still shared with an earlier run's tasks.
    PayloadsShared,
    /// The requests could not be generated.
    Payloads(PayloadError),
    /// A run could not connect to its target, `label` at `addr`.
    Connect {
        addr: SocketAddr,
        label: String,
        source: ClientError,
    },
    /// The echo server did not start.
    Echo(echo::EchoError),
}

impl LoadgenError {
    /// The command's exit code: 2 for options out of range, 1 when the
    /// certificates cannot be read or a server cannot be reached.
    pub fn exit_code(&self) -> u8 {
        match self {
            LoadgenError::Rate { .. }
            | LoadgenError::Duration { .. }
            | LoadgenError::Connections { .. }
            | LoadgenError::Subscribers { .. }
            | LoadgenError::AnswerTimeout
            | LoadgenError::RateMax { .. }
            | LoadgenError::TooManyRequests { .. } => 2,
            LoadgenError::Runtime(_)
            | LoadgenError::Identity { .. }
            | LoadgenError::PayloadsShared
            | LoadgenError::Payloads(_)
            | LoadgenError::Connect { .. }
            | LoadgenError::Echo(_) => 1,
        }
    }
}

impl fmt::Display for LoadgenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadgenError::Rate { rate } => write!(f, "--rate {rate}: must be more than 0"),
            LoadgenError::Duration { duration } => write!(
                f,
                "--duration {duration}: must be more than 0 and at most {DURATION_MAX_S} seconds"
            ),
            LoadgenError::Connections { connections } => write!(
                f,
                "--connections {connections}: must be from 1 to {CONNECTIONS_MAX}"
            ),
            LoadgenError::Subscribers { subscribers } => write!(
                f,
                "--subscribers {subscribers}: must be from {SUBSCRIBERS_MIN} to {}, so requests spread over a realistic population",
                traffic::SUBSCRIBERS_MAX
            ),
            LoadgenError::AnswerTimeout => f.write_str("--answer-timeout-ms must be more than 0"),
            LoadgenError::RateMax { rate_max, rate } => {
                write!(f, "--rate-max {rate_max}: must be at least --rate ({rate})")
            }
            LoadgenError::TooManyRequests { requests } => write!(
                f,
                "{requests} requests (rate x duration) is more than the {} a run may prepare",
                payloads::PAYLOADS_MAX
            ),
            LoadgenError::Runtime(e) => write!(f, "cannot start the runtime: {e}"),
            LoadgenError::Identity {
                tls_dir,
                who,
                source,
            } => write!(f, "{} as {who}: {source}", tls_dir.display()),
            LoadgenError::PayloadsShared => {
                f.write_str("the requests are still shared with an earlier run")
            }
            LoadgenError::Payloads(e) => write!(f, "{e}"),
            LoadgenError::Connect {
                addr,
                label,
                source,
            } => write!(f, "cannot connect to {addr} ({label}): {source}"),
            LoadgenError::Echo(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for LoadgenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadgenError::Runtime(e) => Some(e),
            LoadgenError::Identity { source, .. } | LoadgenError::Connect { source, .. } => {
                Some(source)
            }
            LoadgenError::Payloads(e) => Some(e),
            LoadgenError::Echo(e) => Some(e),
            LoadgenError::Rate { .. }
            | LoadgenError::Duration { .. }
            | LoadgenError::Connections { .. }
            | LoadgenError::Subscribers { .. }
            | LoadgenError::AnswerTimeout
            | LoadgenError::RateMax { .. }
            | LoadgenError::TooManyRequests { .. }
            | LoadgenError::PayloadsShared => None,
        }
    }
}

/// Checks the options, naming the first one out of range.
pub fn check(o: &LoadgenOptions) -> Result<(), LoadgenError> {
    if !(o.rate.is_finite() && o.rate > 0.0) {
        return Err(LoadgenError::Rate { rate: o.rate });
    }
    if !(o.duration.is_finite() && o.duration > 0.0 && o.duration <= DURATION_MAX_S) {
        return Err(LoadgenError::Duration {
            duration: o.duration,
        });
    }
    if !(1..=CONNECTIONS_MAX).contains(&o.connections) {
        return Err(LoadgenError::Connections {
            connections: o.connections,
        });
    }
    if !(SUBSCRIBERS_MIN..=traffic::SUBSCRIBERS_MAX).contains(&o.subscribers) {
        return Err(LoadgenError::Subscribers {
            subscribers: o.subscribers,
        });
    }
    if o.answer_timeout_ms == 0 {
        return Err(LoadgenError::AnswerTimeout);
    }
    if o.find_peak && !(o.rate_max.is_finite() && o.rate_max >= o.rate) {
        return Err(LoadgenError::RateMax {
            rate_max: o.rate_max,
            rate: o.rate,
        });
    }
    let most = if o.find_peak {
        2.0 * o.rate_max
    } else {
        o.rate
    };
    let n = (most * o.duration).ceil();
    if n > payloads::PAYLOADS_MAX as f64 {
        return Err(LoadgenError::TooManyRequests { requests: n });
    }
    Ok(())
}

/// `portcullis loadgen`. Exit 0 when the runs were made (whatever they
/// measured), 2 for options out of range, 1 when the certificates cannot
/// be read or a server cannot be reached.
pub fn command(o: &LoadgenOptions) -> ExitCode {
    match command_inner(o) {
        Ok(out) => {
            // A closed standard output (`| head`) is not the run's failure.
            let _ = writeln!(std::io::stdout(), "{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// The options checked, then the runs, on a runtime of their own: what
/// the command prints, or why it stopped.
fn command_inner(o: &LoadgenOptions) -> Result<String, LoadgenError> {
    check(o)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(LoadgenError::Runtime)?;
    runtime.block_on(main(o))
}

/// Everything a command's runs share: the client configuration, the
/// identity it presents, and the payloads.
pub struct Bench {
    pub gateway: Target,
    pub payloads: Arc<Payloads>,
    pub connections: usize,
    pub duration: Duration,
    pub answer_timeout: Duration,
    /// Print a line per run on standard error.
    pub progress: bool,
}

impl Bench {
    /// Reads the client's certificate (its identity names verifications'
    /// holds) and prepares an empty set of payloads.
    pub fn new(o: &LoadgenOptions) -> Result<Bench, LoadgenError> {
        let who = &o.as_;
        let tls_err = |source: ClientError| LoadgenError::Identity {
            tls_dir: o.tls_dir.clone(),
            who: who.clone(),
            source,
        };
        let peer = client::identity(&o.tls_dir, who).map_err(tls_err)?;
        let config = client::client_config(&o.tls_dir, who).map_err(tls_err)?;
        let cfg = traffic::Config {
            seed: o.seed,
            subscribers: o.subscribers,
            ..traffic::Config::default()
        };
        Ok(Bench {
            gateway: Target {
                label: "gateway".to_string(),
                addr: o.addr,
                server_name: o.server_name.clone(),
                config,
            },
            payloads: Arc::new(Payloads::new(cfg, &peer.name)),
            connections: o.connections,
            duration: Duration::from_secs_f64(o.duration),
            answer_timeout: Duration::from_millis(o.answer_timeout_ms),
            progress: true,
        })
    }

    /// The echo server as a target: same client configuration, the
    /// development server certificate's name.
    pub fn echo_target(&self, addr: SocketAddr) -> Target {
        Target {
            label: "echo".to_string(),
            addr,
            server_name: "localhost".to_string(),
            config: self.gateway.config.clone(),
        }
    }

    fn spec(&self, rate: f64) -> RunSpec {
        RunSpec {
            rate,
            duration: self.duration,
            connections: self.connections,
            answer_timeout: self.answer_timeout,
        }
    }

    /// `repeats` runs at `rate` against `target`: the one with the median
    /// p99 (a run with no accepted answer counts as the slowest).
    pub async fn run_median(
        &mut self,
        target: &Target,
        rate: f64,
        repeats: usize,
    ) -> Result<Report, LoadgenError> {
        let mut reports = Vec::with_capacity(repeats.max(1));
        for i in 0..repeats.max(1) {
            if i > 0 {
                tokio::time::sleep(SETTLE).await;
            }
            reports.push(self.run(target, rate).await?);
        }
        reports.sort_by_key(|r| r.p99().unwrap_or(u64::MAX));
        // Invariant: at least one run was pushed above.
        let median = reports.swap_remove(reports.len() / 2);
        Ok(median)
    }

    /// One run at `rate` against `target`: payloads generated first if
    /// there are not enough, then tagged afresh, so no id repeats one
    /// the server has seen.
    pub async fn run(&mut self, target: &Target, rate: f64) -> Result<Report, LoadgenError> {
        let spec = self.spec(rate);
        let n = spec.requests();
        // The last run's scheduler has ended, so the payloads are ours
        // alone again; an error rather than a panic if they are not.
        let payloads = Arc::get_mut(&mut self.payloads).ok_or(LoadgenError::PayloadsShared)?;
        if n > payloads.len() {
            if self.progress {
                eprintln!("loadgen: generating {n} requests");
            }
            payloads.ensure(n).map_err(LoadgenError::Payloads)?;
        }
        payloads.retag(RunTag::fresh());
        let report = run::run(target, &spec, Arc::clone(&self.payloads))
            .await
            .map_err(|source| LoadgenError::Connect {
                addr: target.addr,
                label: target.label.clone(),
                source,
            })?;
        if self.progress {
            eprintln!(
                "loadgen: {} at {:.0}/s: achieved {:.0}/s, p99 {} us{}",
                target.label,
                rate,
                report.achieved_rate,
                report
                    .p99()
                    .map_or_else(|| "-".to_string(), |p| p.to_string()),
                if peak::keeps_up(&report) {
                    ", keeps up"
                } else {
                    ""
                }
            );
        }
        Ok(report)
    }
}

async fn main(o: &LoadgenOptions) -> Result<String, LoadgenError> {
    let mut bench = Bench::new(o)?;
    if o.find_peak {
        let found = find_peak(&mut bench, o).await?;
        return Ok(if o.json {
            found.to_json().to_string()
        } else {
            found.render()
        });
    }
    let gateway = bench.run(&bench.gateway.clone(), o.rate).await?;
    let echo = if o.echo_baseline {
        tokio::time::sleep(SETTLE).await;
        let (addr, handle) = echo::start(&o.tls_dir).map_err(LoadgenError::Echo)?;
        let report = bench.run(&bench.echo_target(addr), o.rate).await;
        stop_echo(handle).await;
        Some(report?)
    } else {
        None
    };
    Ok(if o.json {
        plain_json(&gateway, echo.as_ref()).to_string()
    } else {
        plain_text(&gateway, echo.as_ref())
    })
}

/// Stops the echo server off the async threads (stopping joins its
/// thread).
async fn stop_echo(handle: echo::EchoHandle) {
    let _ = tokio::task::spawn_blocking(move || handle.stop()).await;
}

/// `a / b`, or `None` when either is missing or `b` is 0.
fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(round2(a / b)),
        _ => None,
    }
}

fn p50(r: &Report) -> Option<f64> {
    r.p50().map(|v| v as f64)
}

fn p99(r: &Report) -> Option<f64> {
    r.p99().map(|v| v as f64)
}

/// `{"gateway":{...},"echo":{...},"throughput_ratio":..,"p50_ratio":..,
/// "p99_ratio":..}`; without an echo run, the gateway's report alone.
pub fn plain_json(gateway: &Report, echo: Option<&Report>) -> Value {
    let Some(echo) = echo else {
        return gateway.to_json();
    };
    json!({
        "gateway": gateway.to_json(),
        "echo": echo.to_json(),
        "throughput_ratio": ratio(Some(gateway.achieved_rate), Some(echo.achieved_rate)),
        "p50_ratio": ratio(p50(gateway), p50(echo)),
        "p99_ratio": ratio(p99(gateway), p99(echo)),
    })
}

fn plain_text(gateway: &Report, echo: Option<&Report>) -> String {
    let mut s = gateway.render();
    if let Some(echo) = echo {
        s.push_str(&echo.render());
        let show = |r: Option<f64>| r.map_or_else(|| "-".to_string(), |r| format!("{r:.2}"));
        s.push_str(&format!(
            "gateway / echo: throughput {}  p50 {}  p99 {}\n",
            show(ratio(Some(gateway.achieved_rate), Some(echo.achieved_rate))),
            show(ratio(p50(gateway), p50(echo))),
            show(ratio(p99(gateway), p99(echo))),
        ));
    }
    s.trim_end().to_string()
}

// ---------------------------------------------------------------------------
// --find-peak
// ---------------------------------------------------------------------------

/// One server's peak search: the peak and the runs that found it.
#[derive(Debug, Clone)]
pub struct Peak {
    pub peak: Option<f64>,
    pub runs: Vec<Report>,
}

impl Peak {
    fn to_json(&self) -> Value {
        let runs: Vec<Value> = self
            .runs
            .iter()
            .map(|r| {
                json!({
                    "rate": r.offered_rate,
                    "achieved_rate": round2(r.achieved_rate),
                    "p99_us": r.p99(),
                    "keeps_up": peak::keeps_up(r),
                })
            })
            .collect();
        json!({"peak": self.peak, "runs": runs})
    }
}

/// p99 at 2x the peak over p99 at 80% of it.
fn overload_ratio(runs: Option<&(Report, Report)>) -> Option<f64> {
    runs.and_then(|(at80, at2x)| ratio(p99(at2x), p99(at80)))
}

/// What `--find-peak` measured.
#[derive(Debug, Clone)]
pub struct PeakFound {
    pub duration_s: f64,
    pub connections: usize,
    pub gateway: Peak,
    pub echo: Peak,
    /// The gateway and the echo server at half the gateway's peak.
    pub half: Option<(Report, Report)>,
    /// The gateway at 80% and at twice its peak.
    pub overload: Option<(Report, Report)>,
    /// The echo server at 80% and at twice its own peak: the overload
    /// baseline, what the QUIC stack and the load generator alone do when
    /// offered twice what they can carry.
    pub echo_overload: Option<(Report, Report)>,
}

impl PeakFound {
    pub fn peak_ratio(&self) -> Option<f64> {
        ratio(self.gateway.peak, self.echo.peak)
    }

    pub fn p50_ratio(&self) -> Option<f64> {
        self.half.as_ref().and_then(|(g, e)| ratio(p50(g), p50(e)))
    }

    /// p99 at 2x over p99 at 80% (target at most 2).
    pub fn overload_p99_ratio(&self) -> Option<f64> {
        overload_ratio(self.overload.as_ref())
    }

    /// The same ratio for the echo server at its own peak.
    pub fn echo_overload_p99_ratio(&self) -> Option<f64> {
        overload_ratio(self.echo_overload.as_ref())
    }

    /// Whether every request not accepted at 2x was shed as the contract
    /// says a busy server sheds: refused a stream, or answered
    /// `overloaded`, `unavailable` or `deadline`; none lost.
    pub fn shed_cleanly(&self) -> Option<bool> {
        self.overload
            .as_ref()
            .map(|(_, at2x)| at2x.tally.transport_errors() == 0)
    }

    pub fn to_json(&self) -> Value {
        let half = self.half.as_ref().map(|(g, e)| {
            json!({
                "rate": g.offered_rate,
                "gateway_p50_us": g.p50(),
                "echo_p50_us": e.p50(),
                "p50_ratio": self.p50_ratio(),
                "target_max": P50_RATIO_MAX,
                "ok": self.p50_ratio().map(|r| r <= P50_RATIO_MAX),
                "gateway": g.to_json(),
                "echo": e.to_json(),
            })
        });
        let overload = self.overload.as_ref().map(|(at80, at2x)| {
            json!({
                "rate_80": at80.offered_rate,
                "p99_80_us": at80.p99(),
                "rate_2x": at2x.offered_rate,
                "p99_2x_us": at2x.p99(),
                "p99_ratio": self.overload_p99_ratio(),
                "p99_ok": self.overload_p99_ratio().map(|r| r <= 2.0),
                "accepted_share_2x": round2(at2x.accepted_share()),
                "refused_2x": at2x.tally.refused,
                "errors_2x": at2x.tally.errors,
                "transport_errors_2x": at2x.tally.transport_errors(),
                "shed_cleanly": self.shed_cleanly(),
                "at_80": at80.to_json(),
                "at_2x": at2x.to_json(),
            })
        });
        let echo_overload = self.echo_overload.as_ref().map(|(at80, at2x)| {
            json!({
                "rate_80": at80.offered_rate,
                "p99_80_us": at80.p99(),
                "rate_2x": at2x.offered_rate,
                "p99_2x_us": at2x.p99(),
                "p99_ratio": self.echo_overload_p99_ratio(),
                "at_80": at80.to_json(),
                "at_2x": at2x.to_json(),
            })
        });
        json!({
            "mode": "find_peak",
            "criteria": {"keep_up_share": peak::KEEP_UP_SHARE, "p99_us_max": peak::P99_US_MAX},
            "duration_s": self.duration_s,
            "connections": self.connections,
            "gateway": self.gateway.to_json(),
            "echo": self.echo.to_json(),
            "peak_ratio": self.peak_ratio(),
            "peak_ratio_target_min": PEAK_RATIO_MIN,
            "peak_ratio_ok": self.peak_ratio().map(|r| r >= PEAK_RATIO_MIN),
            "half_peak": half,
            "overload": overload,
            "echo_overload": echo_overload,
        })
    }

    pub fn render(&self) -> String {
        let rate = |r: Option<f64>| r.map_or_else(|| "none".to_string(), |r| format!("{r:.0}/s"));
        let num = |r: Option<f64>| r.map_or_else(|| "-".to_string(), |r| format!("{r:.2}"));
        let us = |r: Option<u64>| r.map_or_else(|| "-".to_string(), |r| format!("{r} us"));
        let yes = |b: Option<bool>| match b {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        let mut s = format!(
            "peak rate (achieved >= {:.0}% of offered, p99 <= {} ms), runs of {} s on {} connection(s):\n",
            peak::KEEP_UP_SHARE * 100.0,
            peak::P99_US_MAX / 1000,
            self.duration_s,
            self.connections
        );
        s.push_str(&format!(
            "  gateway {} ({} runs)\n  echo    {} ({} runs)\n",
            rate(self.gateway.peak),
            self.gateway.runs.len(),
            rate(self.echo.peak),
            self.echo.runs.len()
        ));
        let pr = self.peak_ratio();
        s.push_str(&format!(
            "  ratio   {} (target >= {PEAK_RATIO_MIN}: {})\n",
            num(pr),
            yes(pr.map(|r| r >= PEAK_RATIO_MIN))
        ));
        if let Some((g, e)) = &self.half {
            let r = self.p50_ratio();
            s.push_str(&format!(
                "p50 at half the gateway's peak ({:.0}/s): gateway {}, echo {}, ratio {} (target <= {P50_RATIO_MAX}: {})\n",
                g.offered_rate,
                us(g.p50()),
                us(e.p50()),
                num(r),
                yes(r.map(|r| r <= P50_RATIO_MAX))
            ));
        }
        if let Some((at80, at2x)) = &self.overload {
            let r = self.overload_p99_ratio();
            s.push_str(&format!(
                "gateway overload: p99 {} at 80% ({:.0}/s), {} at 2x ({:.0}/s), ratio {} (target <= 2: {})\n",
                us(at80.p99()),
                at80.offered_rate,
                us(at2x.p99()),
                at2x.offered_rate,
                num(r),
                yes(r.map(|r| r <= 2.0))
            ));
            let errs: Vec<String> = at2x
                .tally
                .errors
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            s.push_str(&format!(
                "  at 2x: accepted {:.1}% of {}, refused {}, errors [{}], transport errors {} (shed cleanly: {})\n",
                at2x.accepted_share() * 100.0,
                at2x.scheduled,
                at2x.tally.refused,
                errs.join(", "),
                at2x.tally.transport_errors(),
                yes(self.shed_cleanly())
            ));
        }
        if let Some((at80, at2x)) = &self.echo_overload {
            s.push_str(&format!(
                "echo overload (baseline): p99 {} at 80% ({:.0}/s), {} at 2x ({:.0}/s), ratio {}\n",
                us(at80.p99()),
                at80.offered_rate,
                us(at2x.p99()),
                at2x.offered_rate,
                num(self.echo_overload_p99_ratio()),
            ));
        }
        s.trim_end().to_string()
    }
}

/// Runs `target` at 80% and at twice `peak`, settling between.
async fn overload(
    bench: &mut Bench,
    target: &Target,
    peak: f64,
    repeats: usize,
) -> Result<(Report, Report), LoadgenError> {
    tokio::time::sleep(SETTLE).await;
    let at80 = bench
        .run_median(target, (peak * 0.8).round().max(1.0), repeats)
        .await?;
    tokio::time::sleep(SETTLE).await;
    let at2x = bench
        .run_median(target, (peak * 2.0).round(), repeats)
        .await?;
    Ok((at80, at2x))
}

/// Searches one target's peak from `--rate` up to `--rate-max`.
async fn search(
    bench: &mut Bench,
    target: &Target,
    o: &LoadgenOptions,
) -> Result<Peak, LoadgenError> {
    let mut s = PeakSearch::new(o.rate, o.rate_max, peak::RUNS_MAX);
    let mut runs = Vec::new();
    while let Some(rate) = s.next_rate() {
        let report = bench.run_median(target, rate, o.repeats).await?;
        s.record(rate, peak::keeps_up(&report));
        runs.push(report);
        tokio::time::sleep(SETTLE).await;
    }
    Ok(Peak {
        peak: s.peak(),
        runs,
    })
}

/// `--find-peak`: the gateway's peak, the echo server's, the p50s at half
/// the gateway's peak, and the gateway at 80% and 2x its peak.
async fn find_peak(bench: &mut Bench, o: &LoadgenOptions) -> Result<PeakFound, LoadgenError> {
    let gateway_target = bench.gateway.clone();
    let gateway = search(bench, &gateway_target, o).await?;
    let (addr, handle) = echo::start(&o.tls_dir).map_err(LoadgenError::Echo)?;
    let echo_target = bench.echo_target(addr);
    let measured = async {
        let echo = search(bench, &echo_target, o).await?;
        let half = match gateway.peak {
            Some(p) => {
                let half = (p / 2.0).round().max(1.0);
                let g = bench.run_median(&gateway_target, half, o.repeats).await?;
                tokio::time::sleep(SETTLE).await;
                let e = bench.run_median(&echo_target, half, o.repeats).await?;
                Some((g, e))
            }
            None => None,
        };
        let echo_overload = match echo.peak {
            Some(p) => Some(overload(bench, &echo_target, p, o.repeats).await?),
            None => None,
        };
        Ok::<_, LoadgenError>((echo, half, echo_overload))
    }
    .await;
    stop_echo(handle).await;
    let (echo, half, echo_overload) = measured?;
    let overload = match gateway.peak {
        Some(p) => Some(overload(bench, &gateway_target, p, o.repeats).await?),
        None => None,
    };
    Ok(PeakFound {
        duration_s: o.duration,
        connections: o.connections,
        gateway,
        echo,
        half,
        overload,
        echo_overload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> LoadgenOptions {
        LoadgenOptions {
            addr: "127.0.0.1:4433".parse().expect("an address"),
            tls_dir: PathBuf::from("/nonexistent/portcullis-loadgen-tls"),
            rate: 100.0,
            duration: 1.0,
            connections: 4,
            json: false,
            echo_baseline: false,
            as_: "admin".to_string(),
            server_name: "localhost".to_string(),
            subscribers: SUBSCRIBERS_MIN,
            seed: 1,
            answer_timeout_ms: 5000,
            find_peak: false,
            rate_max: 200_000.0,
            repeats: 3,
        }
    }

    /// Each option out of range is its own variant, exit 2, with the text
    /// the command has always printed.
    #[test]
    fn options_out_of_range_are_exit_2_and_name_the_option() {
        assert!(check(&options()).is_ok());
        /// What a case changes in valid options.
        type Change = fn(&mut LoadgenOptions);
        let cases: [(Change, &str); 4] = [
            (|o| o.rate = 0.0, "--rate 0: must be more than 0"),
            (
                |o| o.connections = 0,
                "--connections 0: must be from 1 to 1000",
            ),
            (
                |o| o.answer_timeout_ms = 0,
                "--answer-timeout-ms must be more than 0",
            ),
            (
                |o| {
                    o.find_peak = true;
                    o.rate_max = 50.0;
                },
                "--rate-max 50: must be at least --rate (100)",
            ),
        ];
        for (change, want) in cases {
            let mut o = options();
            change(&mut o);
            let err = check(&o).expect_err(want);
            assert_eq!(err.to_string(), want);
            assert_eq!(err.exit_code(), 2, "{err:?}");
        }
        let mut o = options();
        o.rate = 1e9;
        let err = check(&o).expect_err("too many");
        assert!(matches!(err, LoadgenError::TooManyRequests { requests } if requests == 1e9));
        assert!(
            err.to_string()
                .starts_with("1000000000 requests (rate x duration)")
        );
    }

    /// Certificates that cannot be read are exit 1, named by directory and
    /// role, with the client's error as the source.
    #[test]
    fn unreadable_certificates_are_exit_1() {
        let err = Bench::new(&options()).err().expect("no certificates");
        assert!(matches!(err, LoadgenError::Identity { .. }), "{err:?}");
        assert_eq!(err.exit_code(), 1);
        assert!(std::error::Error::source(&err).is_some());
        assert!(
            err.to_string()
                .starts_with("/nonexistent/portcullis-loadgen-tls as admin: "),
            "{err}"
        );
    }
}
