//! One open-loop load run: request `i` is due at `start + i / rate`,
//! whatever the answers do, and its latency is counted from when it was
//! due, not from when it was sent, so a server that falls behind is seen
//! falling behind (no coordinated omission).
//!
//! A scheduler wakes at least every millisecond and launches every request
//! whose time has come, each in a task of its own (the scheduler sleeps on
//! a thread of its own, finer than tokio's millisecond timers): round-robin over the connections, it
//! waits at most [`OPEN_WAIT`] for a stream (longer counts as `refused`,
//! and nothing is sent), writes one frame, finishes the stream and reads
//! one answer frame. Per-request state is a task with its frame (a few
//! hundred bytes); tasks in flight are bounded by the streams the server
//! allows plus the requests due in [`OPEN_WAIT`].

use crate::client::{AnswerReader, Client, ClientError};
use crate::edge::quic::frame::FRAME_BYTES_MAX_DEFAULT;
use crate::edge::quic::wire::Code;
use crate::loadgen::payloads::Payloads;
use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::{Value, json};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;
use tokio::task::JoinSet;

/// How long a request waits for a stream before it counts as refused:
/// the server's stream limit is its back-pressure, and an open-loop client
/// that queued behind it would hide the server's limit in its own queue.
pub const OPEN_WAIT: Duration = Duration::from_millis(5);

/// The scheduler's longest sleep.
const TICK: Duration = Duration::from_millis(1);

/// The largest latency the histogram holds, in microseconds (60 s); a
/// longer one is counted at this value.
pub const LATENCY_US_MAX: u64 = 60_000_000;

/// What to offer, and how.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunSpec {
    /// Requests per second.
    pub rate: f64,
    /// How long to offer them for.
    pub duration: Duration,
    /// QUIC connections to spread them over, round-robin.
    pub connections: usize,
    /// How long a request waits for its answer before it counts as a
    /// transport error (`timeout`).
    pub answer_timeout: Duration,
}

impl RunSpec {
    /// Requests the run offers: `ceil(rate * duration)`.
    pub fn requests(&self) -> usize {
        let n = (self.rate * self.duration.as_secs_f64()).ceil();
        if n.is_finite() && n > 0.0 {
            n as usize
        } else {
            0
        }
    }

    /// When request `i` is due, from the start of the run.
    fn due(&self, i: usize) -> Duration {
        Duration::from_secs_f64(i as f64 / self.rate)
    }
}

/// How a request that was sent failed to get a usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TransportError {
    /// The connection was lost before a stream opened.
    Open,
    /// Writing the request or finishing the stream failed.
    Write,
    /// Reading the answer failed (reset, connection lost).
    Read,
    /// The answer broke the framing, or the stream ended without one.
    Frame,
    /// The answer is not a JSON object of the contract's shapes, or more
    /// than one answer came.
    BadAnswer,
    /// No answer within the answer timeout.
    Timeout,
    /// The request's task failed (a bug).
    Task,
}

impl TransportError {
    pub fn as_str(self) -> &'static str {
        match self {
            TransportError::Open => "open",
            TransportError::Write => "write",
            TransportError::Read => "read",
            TransportError::Frame => "frame",
            TransportError::BadAnswer => "bad_answer",
            TransportError::Timeout => "timeout",
            TransportError::Task => "task",
        }
    }

    fn of(e: &ClientError) -> TransportError {
        match e {
            ClientError::Connection(_) => TransportError::Open,
            ClientError::Write(_) | ClientError::Finish(_) => TransportError::Write,
            ClientError::Read(_) => TransportError::Read,
            ClientError::Frame(_) | ClientError::MissingAnswers { .. } => TransportError::Frame,
            ClientError::Timeout(_) | ClientError::ConnectTimeout(_) => TransportError::Timeout,
            _ => TransportError::BadAnswer,
        }
    }
}

/// What an answer body says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// A decision, a signal's answer, or anything else without `error`.
    Success,
    /// An error body, with its `error.code`.
    Error(Cow<'static, str>),
}

impl Class {
    /// Whether the answer counts in the achieved rate: everything but
    /// the retryable codes (`overloaded`, `unavailable`, `deadline`), which
    /// mean the server did not (or may not have) done the work.
    pub fn accepted(&self) -> bool {
        match self {
            Class::Success => true,
            Class::Error(code) => !Code::from_name(code).is_some_and(Code::retryable),
        }
    }
}

/// The fate of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// No stream within [`OPEN_WAIT`]; nothing was sent.
    Refused,
    /// Sent, and answered `latency_us` after it was due.
    Answered { class: Class, latency_us: u64 },
    /// Sent, and no usable answer.
    Transport(TransportError),
}

/// The part of an answer body the load generator reads: whether it has an
/// `error` object, and its code. Everything else is checked to be JSON
/// and skipped, without building a tree.
#[derive(Deserialize)]
struct AnswerShape<'a> {
    #[serde(borrow, default)]
    error: Option<ErrorShape<'a>>,
}

#[derive(Deserialize)]
struct ErrorShape<'a> {
    #[serde(borrow)]
    code: Cow<'a, str>,
}

/// Classifies an answer body: an error body counts under its
/// `error.code`, every other JSON object is a success; anything else is
/// `None` (a broken answer). Known codes borrow their static names, so an
/// error costs no allocation.
pub fn classify(body: &[u8]) -> Option<Class> {
    let shape: AnswerShape<'_> = serde_json::from_slice(body).ok()?;
    Some(match shape.error {
        None => Class::Success,
        Some(e) => Class::Error(match Code::from_name(&e.code) {
            Some(c) => Cow::Borrowed(c.as_str()),
            None => Cow::Owned(e.code.into_owned()),
        }),
    })
}

/// Sends one request (`frame`, already framed) on a new stream of `conn`
/// and reads its answer; `due` is when the schedule wanted it sent.
pub async fn request_once(
    conn: quinn::Connection,
    frame: Bytes,
    due: Instant,
    answer_timeout: Duration,
) -> RunOutcome {
    let (send, recv) = match tokio::time::timeout(OPEN_WAIT, conn.open_bi()).await {
        Err(_) => return RunOutcome::Refused,
        Ok(Err(_)) => return RunOutcome::Transport(TransportError::Open),
        Ok(Ok(streams)) => streams,
    };
    match tokio::time::timeout(answer_timeout, exchange(send, recv, frame, due)).await {
        Err(_) => RunOutcome::Transport(TransportError::Timeout),
        Ok(outcome) => outcome,
    }
}

async fn exchange(
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
    frame: Bytes,
    due: Instant,
) -> RunOutcome {
    let sent = async {
        send.write_chunk(frame).await?;
        send.finish().map_err(ClientError::Finish)
    };
    if let Err(e) = sent.await {
        return RunOutcome::Transport(TransportError::of(&e));
    }
    let mut reader = AnswerReader::new(recv, FRAME_BYTES_MAX_DEFAULT);
    let body = match reader.next_frame().await {
        Ok(Some(body)) => body,
        Ok(None) => return RunOutcome::Transport(TransportError::Frame),
        Err(e) => return RunOutcome::Transport(TransportError::of(&e)),
    };
    let latency_us = u64::try_from(due.elapsed().as_micros()).unwrap_or(u64::MAX);
    let Some(class) = classify(&body) else {
        return RunOutcome::Transport(TransportError::BadAnswer);
    };
    // The server finishes its side after the one answer; a second frame
    // is a broken contract.
    if let Err(e) = reader.end(1).await {
        return RunOutcome::Transport(TransportError::of(&e));
    }
    RunOutcome::Answered { class, latency_us }
}

/// The counts of one run as it goes.
#[derive(Debug, Clone)]
pub struct Tally {
    pub refused: u64,
    pub answered: u64,
    pub accepted: u64,
    /// Error answers by `error.code`.
    pub errors: BTreeMap<String, u64>,
    pub transport: BTreeMap<TransportError, u64>,
    /// Latency of accepted answers, in microseconds.
    pub latency: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Tally {
        Tally {
            refused: 0,
            answered: 0,
            accepted: 0,
            errors: BTreeMap::new(),
            transport: BTreeMap::new(),
            // Invariant: the bounds are constants that hdrhistogram
            // accepts (low 1 >= 1, high >= 2 * low, 3 significant digits).
            latency: Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)
                .expect("constant histogram bounds are valid"),
        }
    }
}

impl Tally {
    /// Counts one request's fate.
    pub fn record(&mut self, outcome: RunOutcome) {
        match outcome {
            RunOutcome::Refused => self.refused += 1,
            RunOutcome::Transport(t) => *self.transport.entry(t).or_default() += 1,
            RunOutcome::Answered { class, latency_us } => {
                self.answered += 1;
                if class.accepted() {
                    self.accepted += 1;
                    self.latency.saturating_record(latency_us.max(1));
                }
                if let Class::Error(code) = class {
                    *self.errors.entry(code.into_owned()).or_default() += 1;
                }
            }
        }
    }

    pub fn transport_errors(&self) -> u64 {
        self.transport.values().sum()
    }
}

/// Latency percentiles of accepted answers, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percentiles {
    pub p50: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub max: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Option<Percentiles> {
        (!h.is_empty()).then(|| Percentiles {
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p99_9: h.value_at_quantile(0.999),
            max: h.max(),
        })
    }
}

/// The result of one run.
#[derive(Debug, Clone)]
pub struct Report {
    /// `gateway` or `echo`.
    pub target: String,
    pub addr: SocketAddr,
    pub connections: usize,
    /// Offered requests per second.
    pub offered_rate: f64,
    /// Accepted answers per second of the run.
    pub achieved_rate: f64,
    /// Seconds from the start to the later of the schedule's end and the
    /// last accepted answer: a server that answers late is not credited
    /// with the rate it was offered.
    pub elapsed_s: f64,
    /// Requests the schedule held.
    pub scheduled: u64,
    /// Requests written on a stream (scheduled less refused).
    pub sent: u64,
    pub tally: Tally,
    pub latency: Option<Percentiles>,
}

impl Report {
    /// The accepted share of the requests offered.
    pub fn accepted_share(&self) -> f64 {
        if self.scheduled == 0 {
            0.0
        } else {
            self.tally.accepted as f64 / self.scheduled as f64
        }
    }

    pub fn p50(&self) -> Option<u64> {
        self.latency.map(|l| l.p50)
    }

    pub fn p99(&self) -> Option<u64> {
        self.latency.map(|l| l.p99)
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> Value {
        let t = &self.tally;
        let transport: BTreeMap<&str, u64> =
            t.transport.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        json!({
            "target": self.target,
            "addr": self.addr.to_string(),
            "connections": self.connections,
            "offered_rate": round2(self.offered_rate),
            "achieved_rate": round2(self.achieved_rate),
            "elapsed_s": round2(self.elapsed_s),
            "scheduled": self.scheduled,
            "sent": self.sent,
            "answered": t.answered,
            "accepted": t.accepted,
            "refused": t.refused,
            "errors": t.errors,
            "transport_errors": t.transport_errors(),
            "transport_errors_by_kind": transport,
            "latency_us": self.latency.map(|l| json!({
                "p50": l.p50, "p99": l.p99, "p99_9": l.p99_9, "max": l.max,
            })),
        })
    }

    /// A short table for people.
    pub fn render(&self) -> String {
        let t = &self.tally;
        let mut s = format!(
            "{} {}: offered {:.0}/s, achieved {:.0}/s over {:.2} s, {} connection(s)\n",
            self.target,
            self.addr,
            self.offered_rate,
            self.achieved_rate,
            self.elapsed_s,
            self.connections
        );
        s.push_str(&format!(
            "  scheduled {}  sent {}  answered {}  accepted {}  refused {}  transport errors {}\n",
            self.scheduled,
            self.sent,
            t.answered,
            t.accepted,
            t.refused,
            t.transport_errors()
        ));
        if !t.errors.is_empty() {
            let errs: Vec<String> = t.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
            s.push_str(&format!("  errors: {}\n", errs.join(", ")));
        }
        if !t.transport.is_empty() {
            let errs: Vec<String> = t
                .transport
                .iter()
                .map(|(k, v)| format!("{} {v}", k.as_str()))
                .collect();
            s.push_str(&format!("  transport errors: {}\n", errs.join(", ")));
        }
        match self.latency {
            Some(l) => s.push_str(&format!(
                "  latency of accepted answers (us): p50 {}  p99 {}  p99.9 {}  max {}\n",
                l.p50, l.p99, l.p99_9, l.max
            )),
            None => s.push_str("  latency: no accepted answers\n"),
        }
        s
    }
}

/// Rounds to two decimals for reports: more digits are noise.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Where a run sends its load.
#[derive(Debug, Clone)]
pub struct Target {
    /// `gateway` or `echo`, for reports.
    pub label: String,
    pub addr: SocketAddr,
    pub server_name: String,
    pub config: quinn::ClientConfig,
}

/// Connects `spec.connections` clients to the target, runs the schedule
/// over the first `spec.requests()` payloads (which must be ready), and
/// closes the connections. Only connecting can fail; what happens to
/// requests is counted in the report. The payloads are shared with the
/// scheduler's thread for the run and are the caller's alone again once
/// this returns.
pub async fn run(
    target: &Target,
    spec: &RunSpec,
    payloads: Arc<Payloads>,
) -> Result<Report, ClientError> {
    let mut clients = Vec::with_capacity(spec.connections);
    for _ in 0..spec.connections.max(1) {
        let client =
            Client::connect_with(target.addr, target.config.clone(), &target.server_name).await?;
        clients.push(client);
    }
    let conns: Vec<quinn::Connection> = clients.iter().map(|c| c.connection().clone()).collect();
    let n = spec.requests().min(payloads.len());
    let (counter, start) = schedule(conns.clone(), *spec, payloads, n).await;
    for c in clients {
        c.close().await;
    }
    let Counter { tally, last } = counter;
    let end = (start + spec.duration).max(last.unwrap_or(start));
    let elapsed_s = end.duration_since(start).as_secs_f64();
    let achieved_rate = if elapsed_s > 0.0 {
        tally.accepted as f64 / elapsed_s
    } else {
        0.0
    };
    Ok(Report {
        target: target.label.clone(),
        addr: target.addr,
        connections: conns.len(),
        offered_rate: spec.rate,
        achieved_rate,
        elapsed_s,
        scheduled: n as u64,
        sent: n as u64 - tally.refused,
        latency: Percentiles::of(&tally.latency),
        tally,
    })
}

/// The tally, and when the last accepted answer came.
#[derive(Debug, Default)]
struct Counter {
    tally: Tally,
    last: Option<Instant>,
}

impl Counter {
    fn count(&mut self, joined: Result<(RunOutcome, Instant), tokio::task::JoinError>) {
        match joined {
            Ok((outcome, at)) => {
                if matches!(&outcome, RunOutcome::Answered { class, .. } if class.accepted()) {
                    self.last = Some(self.last.map_or(at, |l| l.max(at)));
                }
                self.tally.record(outcome);
            }
            Err(_) => self
                .tally
                .record(RunOutcome::Transport(TransportError::Task)),
        }
    }
}

type Tasks = JoinSet<(RunOutcome, Instant)>;

/// The open loop: launches request `i` at `start + i / rate` on
/// connection `i % C`, counts every outcome, and returns the counts and
/// the start.
///
/// The launching runs on a thread of its own (tokio's blocking pool), which
/// sleeps with the system's timer rather than tokio's: tokio's timers fire
/// on millisecond ticks, so a request would leave up to a millisecond
/// after it was due, and that delay, counted in every latency, would hide
/// the difference between two fast servers. The thread still wakes at
/// least every millisecond, launches every request whose time has come
/// onto the runtime, and counts the finished ones as it goes.
async fn schedule(
    conns: Vec<quinn::Connection>,
    spec: RunSpec,
    payloads: Arc<Payloads>,
    n: usize,
) -> (Counter, Instant) {
    let handle = tokio::runtime::Handle::current();
    let launched =
        tokio::task::spawn_blocking(move || launch_all(&handle, &conns, &spec, &payloads, n)).await;
    let (mut tasks, mut counter, start) = match launched {
        Ok(done) => done,
        // The launcher panicked (a bug): nothing more can be counted.
        Err(_) => (Tasks::new(), Counter::default(), Instant::now()),
    };
    while let Some(joined) = tasks.join_next().await {
        counter.count(joined);
    }
    (counter, start)
}

/// The scheduler's loop, on a blocking thread: returns the tasks still
/// running, the counts of those finished, and the start.
fn launch_all(
    handle: &tokio::runtime::Handle,
    conns: &[quinn::Connection],
    spec: &RunSpec,
    payloads: &Payloads,
    n: usize,
) -> (Tasks, Counter, Instant) {
    let mut tasks = Tasks::new();
    let mut counter = Counter::default();
    let start = Instant::now();
    let mut next = 0;
    while next < n {
        let now = Instant::now();
        while next < n && start + spec.due(next) <= now {
            let conn = conns[next % conns.len()].clone();
            let frame = Bytes::copy_from_slice(payloads.frame(next));
            let due = start + spec.due(next);
            let timeout = spec.answer_timeout;
            tasks.spawn_on(
                async move {
                    let outcome = request_once(conn, frame, due, timeout).await;
                    (outcome, Instant::now())
                },
                handle,
            );
            next += 1;
        }
        while let Some(joined) = tasks.try_join_next() {
            counter.count(joined);
        }
        if next < n {
            let wake = (start + spec.due(next)).min(now + TICK);
            std::thread::sleep(wake.saturating_duration_since(Instant::now()));
        }
    }
    (tasks, counter, start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_by_their_error_code() {
        assert_eq!(
            classify(br#"{"id":"a","decision":"allow","rules":[],"ruleset":{"label":"error"}}"#),
            Some(Class::Success)
        );
        assert_eq!(
            classify(br#"{"ok":true,"alerts":[]}"#),
            Some(Class::Success)
        );
        let over = classify(
            br#"{"id":"r1","error":{"code":"overloaded","field":null,"message":"m","retryable":true}}"#,
        )
        .unwrap();
        assert_eq!(over, Class::Error(Cow::Borrowed("overloaded")));
        assert!(!over.accepted());
        for code in ["unavailable", "deadline"] {
            let body = format!(r#"{{"id":null,"error":{{"code":"{code}"}}}}"#);
            assert!(!classify(body.as_bytes()).unwrap().accepted(), "{code}");
        }
        let conflict = classify(br#"{"id":"r1","error":{"code":"id_conflict"}}"#).unwrap();
        assert!(conflict.accepted());
        let odd = classify(br#"{"error":{"code":"new_code"}}"#).unwrap();
        assert_eq!(odd, Class::Error(Cow::Owned("new_code".into())));
        assert!(odd.accepted());
        for broken in [&b"not json"[..], b"[1]", b"{\"error\":1}", b"{\"a\":1} x"] {
            assert_eq!(classify(broken), None, "{broken:?}");
        }
    }

    #[test]
    fn the_tally_counts_accepted_latency_only() {
        let mut t = Tally::default();
        t.record(RunOutcome::Refused);
        t.record(RunOutcome::Transport(TransportError::Timeout));
        t.record(RunOutcome::Answered {
            class: Class::Success,
            latency_us: 100,
        });
        t.record(RunOutcome::Answered {
            class: Class::Error(Cow::Borrowed("overloaded")),
            latency_us: 5,
        });
        t.record(RunOutcome::Answered {
            class: Class::Error(Cow::Borrowed("forbidden")),
            latency_us: 300,
        });
        t.record(RunOutcome::Answered {
            class: Class::Success,
            latency_us: LATENCY_US_MAX * 10,
        });
        assert_eq!((t.refused, t.answered, t.accepted), (1, 4, 3));
        assert_eq!(t.transport_errors(), 1);
        assert_eq!(t.errors["overloaded"], 1);
        assert_eq!(t.errors["forbidden"], 1);
        assert_eq!(t.latency.len(), 3);
        assert!(t.latency.min() >= 100);
        assert!(t.latency.max() >= LATENCY_US_MAX);
    }

    #[test]
    fn the_schedule_offers_ceil_rate_times_duration() {
        let spec = RunSpec {
            rate: 333.0,
            duration: Duration::from_millis(1500),
            connections: 1,
            answer_timeout: Duration::from_secs(1),
        };
        assert_eq!(spec.requests(), 500);
        assert_eq!(spec.due(0), Duration::ZERO);
        assert_eq!(spec.due(333), Duration::from_secs(1));
    }
}
