//! The engine thread: the one place requests are decided, in one total
//! order.
//!
//! Connection tasks parse nothing; they hand each request body to this
//! thread through a bounded queue (`queue_requests_max`) and wait for its
//! answer. A full queue is answered `overloaded` by the connection task at
//! once (the request was not applied); a request that waited in the queue
//! longer than `request_deadline_ms` is answered `deadline` here, unapplied.
//! Neither is ever an allow.
//!
//! The thread also owns the `await`s waiting on holds (at most
//! `awaits_max`): a verification that resolves a hold answers the awaits
//! on it at once, and a timer answers the rest at their timeouts. Rule and
//! list reloads come down the same queue, so they fall between two
//! requests and no request sees half of one.

use crate::engine::{Alert, Engine};
use crate::server::alerts::AlertStore;
use crate::server::clock::Clock;
use crate::server::config::Limits;
use crate::tls::Peer;
use crate::transport::service::{Service, Step, Waiting};
use crate::transport::wire::{self, WireCode};
use bytes::Bytes;
use ring::hmac;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A change to the engine made between two requests: a rules and lists
/// reload. It returns a line for the log, or why it was refused (and then
/// it changed nothing).
pub type EngineChange = Box<dyn FnOnce(&mut Engine) -> Result<String, String> + Send>;

/// What the engine thread is asked to do.
pub enum Msg {
    Request(Job),
    Change {
        change: EngineChange,
        done: oneshot::Sender<Result<String, String>>,
    },
    /// Shutting down: answer every waiting `await` now with its current
    /// decision, so that no answer in flight waits out its timeout.
    ReleaseAwaits {
        done: oneshot::Sender<()>,
    },
}

/// One request body and where its answer goes.
pub struct Job {
    pub peer: Arc<Peer>,
    pub body: Bytes,
    /// When the connection task read the frame: `request_deadline_ms`
    /// counts from here.
    pub read_at: Instant,
    pub reply: oneshot::Sender<Vec<u8>>,
}

/// The sending side of the engine thread's queue.
#[derive(Clone)]
pub struct Queue(SyncSender<Msg>);

impl Queue {
    /// Queues `job`, or answers at once: `overloaded` when the queue is
    /// full, `unavailable` when the engine thread is gone. Either way the
    /// request was not applied.
    pub fn submit(&self, job: Job) -> Result<(), Vec<u8>> {
        match self.0.try_send(Msg::Request(job)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(refusal(
                WireCode::Overloaded,
                "the service is at queue_requests_max; retry after a pause",
            )),
            Err(TrySendError::Disconnected(_)) => Err(refusal(
                WireCode::Unavailable,
                "the decision engine is not running; retry after a pause",
            )),
        }
    }

    /// Sends a control message, waiting for room in the queue (from a
    /// blocking context).
    pub fn send_blocking(&self, msg: Msg) -> Result<(), EngineGone> {
        self.0.send(msg).map_err(|_| EngineGone)
    }
}

/// The engine thread has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineGone;

/// An error body without an id: the request was not read.
pub fn refusal(code: WireCode, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(192);
    wire::error_body(None, code, None, message, &mut out);
    out
}

/// Starts the engine thread around `service`.
pub fn spawn(
    service: Service,
    clock: Arc<dyn Clock>,
    limits: &Limits,
    alerts: Arc<AlertStore>,
    log_key: hmac::Key,
) -> std::io::Result<(Queue, std::thread::JoinHandle<()>)> {
    let (tx, rx) = std::sync::mpsc::sync_channel(limits.queue_requests_max);
    let mut decider = Decider {
        service,
        clock,
        deadline: limits.request_deadline(),
        awaits_max: limits.awaits_max,
        waiters: Waiters::default(),
        alerts,
        log_key,
    };
    let handle = std::thread::Builder::new()
        .name("portcullis-engine".into())
        .spawn(move || decider.run(rx))?;
    Ok((Queue(tx), handle))
}

struct Decider {
    service: Service,
    clock: Arc<dyn Clock>,
    deadline: Duration,
    awaits_max: usize,
    waiters: Waiters,
    alerts: Arc<AlertStore>,
    /// Keys the line pseudonyms alerts are logged with: no identifier is
    /// ever logged in clear.
    log_key: hmac::Key,
}

/// How long the thread sleeps when no await is waiting: only a bound, any
/// message wakes it.
const IDLE_WAIT: Duration = Duration::from_secs(1);

impl Decider {
    fn run(&mut self, rx: Receiver<Msg>) {
        loop {
            let wait = self
                .waiters
                .next_deadline()
                .map_or(IDLE_WAIT, |d| d.saturating_duration_since(Instant::now()));
            match rx.recv_timeout(wait) {
                Ok(msg) => self.handle(msg),
                Err(RecvTimeoutError::Timeout) => {}
                // Every sender is gone: the service has shut down.
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.expire(Instant::now());
        }
        self.release_all();
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Request(job) => self.request(job),
            Msg::Change { change, done } => {
                let result = change(self.service.engine_mut());
                let _ = done.send(result);
            }
            Msg::ReleaseAwaits { done } => {
                self.release_all();
                let _ = done.send(());
            }
        }
    }

    fn request(&mut self, job: Job) {
        let mut out = Vec::with_capacity(256);
        let now = self.clock.now();
        let step = if job.read_at.elapsed() > self.deadline {
            self.service
                .handle_late(&job.peer, &job.body, now, &mut out)
        } else {
            self.service.handle(&job.peer, &job.body, now, &mut out)
        };
        match step {
            // The client may have gone: its answer has nowhere to go.
            Step::Answered => drop(job.reply.send(out)),
            Step::Await { scoped, timeout_ms } => self.await_hold(scoped, timeout_ms, job.reply),
        }
        while let Some(alert) = self.service.poll_alert() {
            self.raise(alert);
        }
        while let Some(resolved) = self.service.poll_resolved() {
            self.wake(&resolved);
        }
    }

    fn await_hold(&mut self, scoped: String, timeout_ms: u64, reply: oneshot::Sender<Vec<u8>>) {
        let mut out = Vec::with_capacity(256);
        if self.service.await_now(&scoped, &mut out) == Waiting::Answered {
            let _ = reply.send(out);
            return;
        }
        if timeout_ms == 0 {
            self.service.await_timed_out(&scoped, &mut out);
            let _ = reply.send(out);
            return;
        }
        if self.waiters.len() >= self.awaits_max {
            let _ = reply.send(refusal(
                WireCode::Overloaded,
                "the service is at awaits_max; retry the await after a pause",
            ));
            return;
        }
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        self.waiters.add(scoped.into(), deadline, reply);
    }

    /// Answers the awaits on a hold a verification just resolved.
    fn wake(&mut self, scoped: &str) {
        for reply in self.waiters.take(scoped) {
            let mut out = Vec::with_capacity(256);
            // A verification that resolved it leaves it answered; if not,
            // the current decision (hold) is still the truthful answer.
            if self.service.await_now(scoped, &mut out) == Waiting::Pending {
                self.service.await_timed_out(scoped, &mut out);
            }
            let _ = reply.send(out);
        }
    }

    /// Answers the awaits whose timeout has passed.
    fn expire(&mut self, now: Instant) {
        while let Some((scoped, reply)) = self.waiters.pop_expired(now) {
            let mut out = Vec::with_capacity(256);
            self.service.await_timed_out(&scoped, &mut out);
            let _ = reply.send(out);
        }
    }

    fn release_all(&mut self) {
        self.expire(Instant::now() + Duration::from_secs(365 * 24 * 3600));
        debug_assert_eq!(self.waiters.len(), 0);
    }

    fn raise(&mut self, alert: Alert) {
        let tag = hmac::sign(&self.log_key, alert.msisdn.to_string().as_bytes());
        let line: String = tag.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        tracing::warn!(
            alert = Alert::KIND,
            line = %line,
            at = %alert.at.to_rfc3339_utc(),
            "alert raised"
        );
        self.alerts.push(alert);
    }
}

/// Where an answer goes.
type Reply = oneshot::Sender<Vec<u8>>;

/// The `await`s waiting on holds, by the hold's scoped id, with a heap of
/// their deadlines. An entry of the heap whose await was already answered
/// is skipped when it comes up.
#[derive(Default)]
struct Waiters {
    by_ref: HashMap<Box<str>, Vec<(u64, Reply)>>,
    deadlines: BinaryHeap<Reverse<(Instant, u64, Box<str>)>>,
    waiting: usize,
    next_seq: u64,
}

impl Waiters {
    fn len(&self) -> usize {
        self.waiting
    }

    fn add(&mut self, scoped: Box<str>, deadline: Instant, reply: oneshot::Sender<Vec<u8>>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_ref
            .entry(scoped.clone())
            .or_default()
            .push((seq, reply));
        self.deadlines.push(Reverse((deadline, seq, scoped)));
        self.waiting += 1;
        // Awaits a verification answered leave their deadlines behind; drop
        // them before they outnumber the live ones, so the heap stays
        // bounded by `awaits_max` too.
        if self.deadlines.len() > 2 * self.waiting + 1024 {
            let by_ref = &self.by_ref;
            self.deadlines.retain(|Reverse((_, seq, s))| {
                by_ref
                    .get(s)
                    .is_some_and(|l| l.iter().any(|(q, _)| q == seq))
            });
        }
    }

    fn take(&mut self, scoped: &str) -> Vec<oneshot::Sender<Vec<u8>>> {
        let taken: Vec<_> = self
            .by_ref
            .remove(scoped)
            .unwrap_or_default()
            .into_iter()
            .map(|(_, reply)| reply)
            .collect();
        self.waiting -= taken.len();
        taken
    }

    fn next_deadline(&mut self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((at, _, _))| *at)
    }

    fn pop_expired(&mut self, now: Instant) -> Option<(Box<str>, oneshot::Sender<Vec<u8>>)> {
        while let Some(Reverse((at, _, _))) = self.deadlines.peek() {
            if *at > now {
                return None;
            }
            // Invariant: peek just returned an entry.
            let Reverse((_, seq, scoped)) = self.deadlines.pop().expect("peeked");
            let Some(list) = self.by_ref.get_mut(&scoped) else {
                continue; // answered by a verification
            };
            let Some(pos) = list.iter().position(|(s, _)| *s == seq) else {
                continue;
            };
            let (_, reply) = list.swap_remove(pos);
            if list.is_empty() {
                self.by_ref.remove(&scoped);
            }
            self.waiting -= 1;
            return Some((scoped, reply));
        }
        None
    }
}
