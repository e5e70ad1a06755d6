//! The [`Decider`]: a request from its admission to its answer. What it
//! needs from the store is read before the lock; it is decided under the
//! lock, on the task that read it; its answer waits for its commit.

use super::admission::{Admission, Admitted};
use super::answers::{Response, engine_failed, refusal, store_failed};
use super::locked::Core;
use super::waiters::Waiters;
use crate::answer::WireCode;
use crate::engine::{Changes, Engine, ReloadError};
use crate::gateway::access::Peer;
use crate::gateway::alerts::AlertStore;
use crate::gateway::cache::EntityCache;
use crate::gateway::clock::{Clock, monotonic};
use crate::gateway::durable::{Durable, rulesets_batch};
use crate::gateway::error::GatewayError;
use crate::gateway::limits::DeciderLimits;
use crate::gateway::reply::Reply;
use crate::gateway::service::{self, Prepared, Request, Service};
use crate::keys::Keys;
use crate::store::{Loaded, Store};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};

/// A change to the engine made between two requests: a rules and lists
/// reload. It returns a line for the log, or why it was refused (and then
/// it changed nothing).
pub type EngineChange = Box<dyn FnOnce(&mut Engine) -> Result<String, ReloadError> + Send>;

pub struct Decider {
    pub(super) core: Mutex<Core>,
    /// Streams admitted and not yet done ([`Admitted`]).
    pub(super) admission: Admission,
    pub(super) await_timeout_ms_max: u64,
    /// The store, its writer and codecs (shared with `Core`): what a
    /// request needs is read before the lock.
    pub(super) durable: Option<Arc<Durable>>,
    /// Entity states evicted so far (`Core::cache`): see `Core::admit`.
    pub(super) evictions: Arc<AtomicU64>,
    pub(super) deadline: Duration,
    /// Wakes the timer task when an await with an earlier deadline waits.
    pub(super) timer: Notify,
}

impl Decider {
    pub fn new(
        service: Service,
        clock: Arc<dyn Clock>,
        limits: &DeciderLimits,
        alerts: Arc<AlertStore>,
        keys: Arc<Keys>,
        durable: Option<Durable>,
    ) -> Decider {
        let durable = durable.map(Arc::new);
        let cache = durable
            .as_ref()
            .map(|_| EntityCache::new(limits.cache_bytes_max));
        let evictions = Arc::new(AtomicU64::new(0));
        Decider {
            evictions: evictions.clone(),
            await_timeout_ms_max: limits.await_timeout_ms_max,
            durable: durable.clone(),
            core: Mutex::new(Core {
                evictions,
                service,
                durable,
                cache,
                named: Vec::new(),
                raised: Vec::new(),
                next_alert: 0,
                alerts_kept_max: limits.alerts_kept_max,
                changes: Changes::default(),
                clock,
                awaits_max: limits.awaits_max,
                waiters: Waiters::default(),
                closing: false,
                failed: false,
                alerts,
                keys,
            }),
            admission: Admission::new(limits.queue_requests_max),
            deadline: limits.request_deadline,
            timer: Notify::new(),
        }
    }

    /// Admits a new stream, or `None` when `queue_requests_max` are in
    /// progress (answer it [`super::overloaded`]).
    pub fn admit(&self) -> Option<Admitted> {
        self.admission.admit()
    }

    /// The state, for work that must go on after a panic (expiring awaits,
    /// shutting down): a poisoned lock still holds the waiters, who must be
    /// answered, but with `unavailable`, never from memory a panic may have
    /// left half-changed; and the writer is failed, so nothing more is
    /// acknowledged and the process exits.
    pub(super) fn core(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|p| {
            let mut core = p.into_inner();
            core.fail();
            core
        })
    }

    /// The longest `timeout_ms` an `await` may ask for: what an edge
    /// parses requests with.
    pub fn await_timeout_ms_max(&self) -> u64 {
        self.await_timeout_ms_max
    }

    /// Decides one request from `peer` (parsed by its edge), read at
    /// `read_at`.
    pub fn decide(&self, peer: &Peer, request: Request, read_at: Instant) -> Response {
        // The role check and the id's scope read no state: done before the lock.
        let prepared = match service::prepare(peer, request) {
            Prepared::Answered(reply) => return Response::Now(reply),
            prepared => prepared,
        };
        // Read before the store: an eviction after it may leave what the
        // read found older than what was evicted (see `Core::admit`).
        let epoch = self.evictions.load(Ordering::Acquire);
        let loaded = match self.read(&prepared) {
            Ok(l) => l.map(|l| (l, epoch)),
            Err(answer) => return Response::Now(answer),
        };
        let Ok(mut core) = self.core.lock() else {
            self.core().fail();
            return Response::Now(engine_failed());
        };
        let prepared = if read_at.elapsed() > self.deadline {
            service::late(prepared)
        } else {
            prepared
        };
        let decided = core.request(prepared, loaded);
        if let Response::Later(_) = decided {
            self.timer.notify_one();
        }
        decided
    }

    /// Reads from the store what `prepared` needs, before the lock: its
    /// records and entity states. A failed read is answered `unavailable`
    /// (retryable; nothing applied): without its history a request cannot
    /// be decided, and is never allowed.
    fn read(&self, prepared: &Prepared) -> Result<Option<Loaded>, Reply> {
        let Some(d) = &self.durable else {
            return Ok(None);
        };
        if d.writer.is_failed() {
            return Err(store_failed());
        }
        let store = d.store.as_ref();
        let read = match prepared {
            Prepared::Event { ev, .. } => d.persist.read(store, Some(ev), None),
            Prepared::Await { scoped, .. } => d.persist.read(store, None, Some(scoped)),
            Prepared::Answered(_) => return Ok(None),
        };
        read.map(Some).map_err(|e| {
            tracing::error!(error = %e, "store read failed: the request is refused");
            refusal(
                WireCode::Unavailable,
                "the store could not be read; the request was not applied; retry after a pause",
            )
        })
    }

    /// Applies `change` between two requests (from a blocking context: a
    /// reload may walk all history).
    pub fn change_blocking(&self, change: EngineChange) -> Result<String, GatewayError> {
        let Ok(mut core) = self.core.lock() else {
            self.core().fail();
            return Err(GatewayError::EngineFailed);
        };
        // The new ruleset's batch must find room: checked before the change.
        if let Some(d) = &core.durable
            && !d.writer.has_room()
        {
            return Err(GatewayError::Writer(crate::store::Refused::Overloaded));
        }
        let kept = core.service.engine().rulesets_len();
        let line = change(core.service.engine_mut())?;
        // A new ruleset is kept before any record it decides: queued under
        // the lock, so ahead of every later decision's batch.
        if let Some(d) = &core.durable {
            let batch = rulesets_batch(core.service.engine(), kept);
            if !batch.is_empty() {
                let not_kept = |e: GatewayError| GatewayError::RulesetNotKept(Box::new(e));
                let ticket = d.writer.submit(batch).map_err(|e| {
                    d.writer.fail();
                    not_kept(e.into())
                })?;
                drop(core);
                ticket.wait().map_err(|e| not_kept(e.into()))?;
            }
        }
        Ok(line)
    }

    /// Puts the alerts the store keeps back in the operator's list, and
    /// numbers the next after them (at start).
    pub fn restore_alerts(&self) -> Result<usize, GatewayError> {
        let Some(Durable {
            store,
            persist: reader,
            ..
        }) = self.durable.as_deref()
        else {
            return Ok(0);
        };
        let kept = reader.alerts(store.as_ref())?;
        let mut core = self.core();
        for (seq, alert) in &kept {
            core.alerts.push(*alert);
            core.next_alert = core.next_alert.max(seq + 1);
        }
        Ok(kept.len())
    }

    /// Whether a pseudonym-key migration runs (the previous master is
    /// loaded).
    pub fn migrating(&self) -> bool {
        self.durable
            .as_ref()
            .is_some_and(|d| d.persist.keys().migrating())
    }

    /// The store behind the engine, if any.
    pub fn store(&self) -> Option<Arc<dyn Store>> {
        self.durable.as_ref().map(|d| Arc::clone(&d.store))
    }

    /// Whether the store failed: every request is answered `unavailable`.
    pub fn store_failed(&self) -> bool {
        self.durable.as_ref().is_some_and(|d| d.writer.is_failed())
    }

    /// Shutting down: answers every waiting `await` now with its current
    /// decision, so that no answer in flight waits out its timeout.
    /// Awaits read from then on answer at once too.
    pub fn release_awaits(&self) {
        let mut core = self.core();
        core.closing = true;
        core.release_all();
    }

    /// Answers awaits at their timeouts until `shutdown`.
    pub async fn run_timer(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let next = self.core().waiters.next_deadline();
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = sleep => {}
                () = self.timer.notified() => {}
                _ = shutdown.wait_for(|down| *down) => return,
            }
            self.core().expire(monotonic());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::Code;
    use crate::contract::{AtRule, Timestamp, parse_line};
    use crate::gateway::access::Role;
    use crate::gateway::clock::ManualClock;
    use crate::rules::CompiledRules;

    const DEADLINE: Duration = Duration::from_millis(50);

    fn decider_limits(awaits_max: usize) -> DeciderLimits {
        DeciderLimits {
            queue_requests_max: 2,
            request_deadline: DEADLINE,
            await_timeout_ms_max: 1000,
            awaits_max,
            alerts_kept_max: 10,
            cache_bytes_max: 1 << 20,
        }
    }

    fn decider(awaits_max: usize) -> Decider {
        let engine = Engine::new(Arc::new(CompiledRules::default_rules()));
        let limits = decider_limits(awaits_max);
        let at = Timestamp::parse("2026-03-01T10:00:00Z").expect("a time");
        Decider::new(
            Service::new(engine, 1000),
            Arc::new(ManualClock::new(at)),
            &limits,
            Arc::new(AlertStore::new(10)),
            Arc::new(Keys::random().expect("keys")),
            None,
        )
    }

    fn swap(id: &str) -> Request {
        let line = format!(
            r#"{{"id":"{id}","kind":"sim_swap","msisdn":"+447700900001","account":"A1","iccid":"8944110000000000008"}}"#
        );
        Request::Event(parse_line(&line, AtRule::Optional).expect("a valid swap"))
    }

    fn pos() -> Peer {
        Peer {
            name: "pos".into(),
            role: Role::Caller,
        }
    }

    fn now(r: Response) -> Reply {
        match r {
            Response::Now(reply) => reply,
            _ => panic!("an answer now"),
        }
    }

    /// A request that waited past `request_deadline` is refused
    /// `deadline` and changes nothing: the same id sent again in time is
    /// decided as new, not answered as a retry.
    #[test]
    fn a_late_request_is_refused_and_not_applied() {
        let d = decider(1);
        let late = monotonic() - DEADLINE - Duration::from_millis(1);
        let reply = now(d.decide(&pos(), swap("1"), late));
        assert_eq!(reply.code(), Some(Code::Wire(WireCode::Deadline)));
        match now(d.decide(&pos(), swap("1"), monotonic())) {
            Reply::Decision { decided, .. } => assert!(!decided.retry),
            other => panic!("a decision, not {other:?}"),
        }
    }

    /// Past `awaits_max` an await is refused `overloaded`, retryable.
    #[test]
    fn awaits_past_the_bound_are_overloaded() {
        let d = decider(1);
        // The second swap on the line is held by the default rules.
        let _ = d.decide(&pos(), swap("1"), monotonic());
        let held = now(d.decide(&pos(), swap("2"), monotonic()));
        assert!(
            matches!(held, Reply::Decision { decided, .. } if decided.outcome == crate::rules::Outcome::Hold),
            "{held:?}"
        );
        let wait = || Request::Await {
            reference: "2".into(),
            timeout_ms: 1000,
        };
        assert!(matches!(
            d.decide(&pos(), wait(), monotonic()),
            Response::Later(_)
        ));
        let refused = now(d.decide(&pos(), wait(), monotonic()));
        assert_eq!(refused.code(), Some(Code::Wire(WireCode::Overloaded)));
    }

    /// A full write queue is back-pressure: past `queue_batches_max` a
    /// request is answered `overloaded` and not applied, nothing fails, and
    /// once the queue drains requests are served again.
    #[test]
    fn a_full_write_queue_answers_overloaded_and_fails_nothing() {
        use crate::engine::FingerprintKey;
        use crate::store::{GroupCommit, Persist, WriterLimits, fault::FailingCommits};
        let keys = Arc::new(Keys::random().expect("keys"));
        // Commits of 20 ms each: a slow disk.
        let store: Arc<dyn Store> =
            Arc::new(FailingCommits::new(Duration::from_millis(20), usize::MAX));
        let writer = GroupCommit::start(
            store.clone(),
            WriterLimits {
                queue_batches_max: 8,
                ..WriterLimits::default()
            },
        );
        let durable = Durable {
            store,
            writer,
            persist: Persist::new(keys.clone(), FingerprintKey(keys.records_key())),
        };
        let mut engine = Engine::new(Arc::new(CompiledRules::default_rules()));
        engine.track_changes();
        let at = Timestamp::parse("2026-03-01T10:00:00Z").expect("a time");
        let d = Decider::new(
            Service::new(engine, 1000),
            Arc::new(ManualClock::new(at)),
            &decider_limits(1),
            Arc::new(AlertStore::new(10)),
            keys,
            Some(durable),
        );
        let pos = pos();
        let mut accepted = Vec::new();
        let mut refused = Vec::new();
        for i in 0..100 {
            match d.decide(&pos, swap(&i.to_string()), monotonic()) {
                Response::Durable(ticket, _) => accepted.push(ticket),
                Response::Now(reply) => {
                    assert_eq!(
                        reply.code(),
                        Some(Code::Wire(WireCode::Overloaded)),
                        "{reply:?}"
                    );
                    refused.push(i);
                }
                Response::Later(_) => panic!("no await here"),
            }
        }
        assert!(!refused.is_empty() && !accepted.is_empty(), "{refused:?}");
        for ticket in accepted {
            ticket.wait().expect("every accepted request is durable");
        }
        assert!(!d.store_failed());
        // Drained: served again, and a refused request was never applied:
        // sent again, it is decided afresh, not answered as a retry.
        let again = refused[refused.len() - 1].to_string();
        match d.decide(&pos, swap(&again), monotonic()) {
            Response::Durable(ticket, Reply::Decision { decided, .. }) => {
                ticket.wait().expect("durable");
                assert!(!decided.retry, "{decided:?}");
            }
            _ => panic!("a decision once the queue drained"),
        }
    }

    /// An await waiting when the engine panics under the lock is answered
    /// `unavailable` (here at shutdown; the timer takes the same path), not
    /// with the decision memory holds, which may never have been committed.
    #[test]
    fn after_a_panic_no_await_is_answered_from_memory() {
        let d = decider(4);
        let _ = d.decide(&pos(), swap("1"), monotonic());
        let held = now(d.decide(&pos(), swap("2"), monotonic()));
        assert!(matches!(held, Reply::Decision { .. }), "{held:?}");
        let wait = Request::Await {
            reference: "2".into(),
            timeout_ms: 1000,
        };
        let Response::Later(mut answer) = d.decide(&pos(), wait, monotonic()) else {
            panic!("the await waits on the hold");
        };
        let change: EngineChange = Box::new(|_| panic!("a change that panics half-way"));
        let panicked =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| d.change_blocking(change)));
        assert!(panicked.is_err());
        d.release_awaits();
        let reply = answer.try_recv().expect("answered at shutdown");
        assert_eq!(
            reply.code(),
            Some(Code::Wire(WireCode::Unavailable)),
            "{reply:?}"
        );
    }

    /// A panic while the engine is changed poisons the lock: from then on
    /// every request is refused `unavailable`, never decided on what the
    /// panic left.
    #[test]
    fn a_panic_under_the_lock_fails_closed() {
        let d = decider(1);
        let change: EngineChange = Box::new(|_| panic!("a reload that panics"));
        let panicked =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| d.change_blocking(change)));
        assert!(panicked.is_err());
        let reply = now(d.decide(&pos(), swap("1"), monotonic()));
        assert_eq!(reply.code(), Some(Code::Wire(WireCode::Unavailable)));
        assert!(matches!(
            d.change_blocking(Box::new(|_| Ok(String::new()))),
            Err(GatewayError::EngineFailed)
        ));
    }
}
