//! The state under the decider's lock, and what is done under it: putting
//! what a request read in place, deciding it, queueing its changes for the
//! store in decision order, and answering the `await`s it woke.

use super::answers::{Response, engine_failed, queue_full, refusal, store_failed};
use super::waiters::{Waiter, Waiters};
use crate::answer::WireCode;
use crate::contract::Kind;
use crate::engine::{Alert, Changes, Engine};
use crate::gateway::alerts::AlertStore;
use crate::gateway::cache::EntityCache;
use crate::gateway::clock::{Clock, monotonic};
use crate::gateway::durable::Durable;
use crate::gateway::reply::Reply;
use crate::gateway::service::{Prepared, Service, Step};
use crate::keys::Keys;
use crate::store::Loaded;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The decider's state: one request at a time.
pub struct Core {
    /// Evictions so far, for requests reading before the lock.
    pub(super) evictions: Arc<AtomicU64>,
    pub(super) service: Service,
    pub(super) durable: Option<Arc<Durable>>,
    /// The bound on entity states in memory, with a store.
    pub(super) cache: Option<EntityCache>,
    /// Scratch: the entities one request named.
    pub(super) named: Vec<crate::history::EntityId>,
    /// Alerts raised by the request being handled, kept with its batch.
    pub(super) raised: Vec<Alert>,
    /// The number the next alert is kept under, and how many to keep.
    pub(super) next_alert: u64,
    pub(super) alerts_kept_max: usize,
    /// Scratch for the changes of one request.
    pub(super) changes: Changes,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) awaits_max: usize,
    pub(super) waiters: Waiters,
    /// Shutting down: awaits answer at once with the current decision.
    pub(super) closing: bool,
    /// The engine panicked under the lock: memory is not to be trusted.
    pub(super) failed: bool,
    pub(super) alerts: Arc<AlertStore>,
    /// Keys the line pseudonyms alerts are logged with (the store's own
    /// pseudonyms): no identifier is ever logged in clear.
    pub(super) keys: Arc<Keys>,
}

impl Core {
    pub(super) fn request(
        &mut self,
        prepared: Prepared,
        loaded: Option<(Loaded, u64)>,
    ) -> Response {
        // A full write queue is back-pressure: refused before anything
        // changes in memory, so the change is never made and never lost.
        if let Some(d) = &self.durable {
            if d.writer.is_failed() {
                return Response::Now(store_failed());
            }
            if !d.writer.has_room() {
                return Response::Now(queue_full());
            }
        }
        let (mut loaded, epoch) = loaded.unwrap_or_default();
        if let Err(answer) = self.admit(&prepared, &mut loaded, epoch) {
            return Response::Now(answer);
        }
        let now = self.clock.now();
        let step = self.service.apply(prepared, now);
        let decided = match step {
            Step::Answered(reply) => Response::Now(reply),
            Step::Await { scoped, timeout_ms } => self.await_hold(scoped, timeout_ms),
        };
        while let Some(alert) = self.service.poll_alert() {
            self.raise(alert);
        }
        // Made durable (with its alerts) before any answer the request woke
        // is written.
        let decided = self.commit(decided, &loaded);
        while let Some(resolved) = self.service.poll_resolved() {
            self.wake(&resolved);
        }
        decided
    }

    /// Puts what was read for the request in place, and reads (under the
    /// lock: rare) what it turned out to need besides: the entities of the
    /// request a verification releases.
    ///
    /// What was read before the lock is current for every entity not in
    /// memory now, unless an entity was evicted since the read began
    /// (`epoch` differs): a state read, then changed by another request and
    /// committed and evicted, would come back older. Then the entities not
    /// in memory are read again, under the lock, where no eviction can
    /// come between (rare: evictions happen only past `cache_bytes_max`).
    pub(super) fn admit(
        &mut self,
        prepared: &Prepared,
        loaded: &mut Loaded,
        epoch: u64,
    ) -> Result<(), Reply> {
        let Some(d) = &self.durable else {
            return Ok(());
        };
        let evicted = self.cache.as_ref().map_or(0, EntityCache::evicted);
        let engine = self.service.engine_mut();
        admit_loaded(d, engine, prepared, loaded, evicted != epoch).map_err(|e| {
            tracing::error!(error = %e, "store state unreadable: the request is refused");
            refusal(
                WireCode::Unavailable,
                "the stored state could not be read; the request was not applied",
            )
        })
    }

    /// Queues what the request changed (nothing, for most errors: then an
    /// empty batch, so the answer still waits for every earlier change) and
    /// makes an immediate answer wait for it. A batch the writer refuses is
    /// a change made in memory that will never be durable: the writer is
    /// failed, and from then on every request is answered `unavailable`.
    pub(super) fn commit(&mut self, decided: Response, loaded: &Loaded) -> Response {
        let Some(d) = &self.durable else {
            return decided;
        };
        let engine = self.service.engine_mut();
        engine.take_changes(&mut self.changes);
        let (raised, next_alert) = (&mut self.raised, &mut self.next_alert);
        let kept_max = self.alerts_kept_max as u64;
        let batch = d
            .persist
            .batch(engine, &self.changes, loaded)
            .and_then(|mut b| {
                for alert in raised.drain(..) {
                    let seq = *next_alert;
                    *next_alert += 1;
                    let (key, value) = d.persist.alert_entry(seq, &alert)?;
                    b.put(crate::store::Table::Alerts, key, value);
                    // The oldest beyond alerts_kept_max goes.
                    if let Some(old) = seq.checked_sub(kept_max) {
                        b.delete(crate::store::Table::Alerts, old.to_be_bytes().to_vec());
                    }
                }
                Ok(b)
            });
        // A batch that failed takes its alerts with it (the writer fails).
        self.raised.clear();
        let ticket = match batch {
            Ok(b) => d.writer.submit(b).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let (Ok(t), Some(cache)) = (&ticket, &mut self.cache) {
            self.named.clear();
            self.named.extend(loaded.entity_ids().cloned());
            cache.after_request(
                engine,
                &self.named,
                &self.changes.entities,
                t.seq(),
                d.writer.batches(),
            );
            self.evictions.store(cache.evicted(), Ordering::Release);
        }
        self.changes.clear();
        match ticket {
            Ok(ticket) => match decided {
                Response::Now(body) => Response::Durable(ticket, body),
                other => other,
            },
            Err(e) => {
                tracing::error!(error = %e, "a change could not be queued for the store: no further answers");
                d.writer.fail();
                Response::Now(store_failed())
            }
        }
    }

    pub(super) fn await_hold(&mut self, scoped: String, timeout_ms: u64) -> Response {
        if let Some(reply) = self.service.await_now(&scoped) {
            return Response::Now(reply);
        }
        if timeout_ms == 0 || self.closing {
            return Response::Now(self.service.await_timed_out(&scoped));
        }
        if self.waiters.len() >= self.awaits_max {
            return Response::Now(refusal(
                WireCode::Overloaded,
                "the service is at awaits_max; retry the await after a pause",
            ));
        }
        let (reply, answer) = oneshot::channel();
        let deadline = monotonic() + Duration::from_millis(timeout_ms);
        self.waiters.add(scoped.into(), deadline, reply);
        Response::Later(answer)
    }

    /// Answers the awaits on a hold a verification just resolved.
    pub(super) fn wake(&mut self, scoped: &str) {
        for reply in self.waiters.take(scoped) {
            // A verification that resolved it leaves it answered; if not,
            // the current decision (hold) is still the truthful answer.
            let answer = self.service.await_timed_out(scoped);
            self.deliver(reply, answer);
        }
    }

    /// Answers the awaits whose timeout has passed.
    pub(super) fn expire(&mut self, now: Instant) {
        while let Some((scoped, reply)) = self.waiters.pop_expired(now) {
            if self.failed {
                let _ = reply.send(engine_failed());
                continue;
            }
            let answer = self.service.await_timed_out(&scoped);
            self.deliver(reply, answer);
        }
    }

    /// After a panic under the lock: no answer comes from memory again,
    /// and the writer is failed, so nothing more is acknowledged and the
    /// service exits non-zero.
    pub(super) fn fail(&mut self) {
        if !self.failed {
            tracing::error!("the decision engine panicked: refusing every request until restarted");
        }
        self.failed = true;
        if let Some(d) = &self.durable {
            d.writer.fail();
        }
    }

    /// Sends an await's answer once everything decided before it is
    /// durable: it may read a hold released by a verification whose change
    /// is still queued.
    pub(super) fn deliver(&self, reply: Waiter, answer: Reply) {
        let Some(d) = &self.durable else {
            // The client may have gone: its answer has nowhere to go.
            let _ = reply.send(answer);
            return;
        };
        match d.writer.barrier() {
            Ok(ticket) => {
                tokio::spawn(async move {
                    let body = match ticket.await {
                        Ok(()) => answer,
                        Err(_) => store_failed(),
                    };
                    let _ = reply.send(body);
                });
            }
            Err(_) => {
                d.writer.fail();
                let _ = reply.send(store_failed());
            }
        }
    }

    pub(super) fn release_all(&mut self) {
        self.expire(monotonic() + Duration::from_secs(365 * 24 * 3600));
        debug_assert_eq!(self.waiters.len(), 0);
    }

    pub(super) fn raise(&mut self, alert: Alert) {
        let mut line = self.keys.log_pseudonym(&alert.msisdn.to_string()).to_hex();
        line.truncate(16);
        tracing::warn!(
            alert = Alert::KIND,
            line = %line,
            at = %alert.at.to_rfc3339_utc(),
            "alert raised"
        );
        self.alerts.push(alert);
        if self.durable.is_some() {
            self.raised.push(alert);
        }
    }
}

/// [`Core::admit`]'s reads: the entities not in memory read again when
/// `stale`, what was read put in place, then what a verification's held
/// request names read and put in place too.
fn admit_loaded(
    d: &Durable,
    engine: &mut Engine,
    prepared: &Prepared,
    loaded: &mut Loaded,
    stale: bool,
) -> Result<(), crate::store::PersistError> {
    let store = d.store.as_ref();
    if stale {
        let ids: Vec<_> = loaded
            .entity_ids()
            .filter(|id| !engine.is_resident(id))
            .cloned()
            .collect();
        loaded.forget_entities(&ids);
        d.persist.read_entities(store, ids, loaded)?;
    }
    d.persist.admit(engine, loaded)?;
    if let Prepared::Event { ev, .. } = prepared
        && ev.kind == Kind::Verification
    {
        let missing: Vec<_> = engine
            .missing(ev)
            .into_iter()
            .filter(|id| !loaded.has(id))
            .collect();
        if !missing.is_empty() {
            d.persist.read_entities(store, missing, loaded)?;
            d.persist.admit(engine, loaded)?;
        }
    }
    Ok(())
}
