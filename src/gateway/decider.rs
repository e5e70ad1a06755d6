//! The decider: the one place requests are decided, in one total order.
//!
//! Every request is decided under one lock, so the engine sees one request
//! at a time, in one order, and a stream's requests in the order they were
//! read. Deciding takes microseconds, and a request decides on the task
//! that read it: no thread hop, no wake-up per request. The lock is a
//! blocking one ([`std::sync::Mutex`]): a worker that finds it taken waits
//! the few microseconds the holder needs, where an async lock would park
//! the task and send it to the back of a run queue that, under load, is
//! long. A panic while deciding poisons the lock, and from then on every
//! request is answered `unavailable`: the service fails closed.
//!
//! Streams accepted and not yet done are the service's queue (a stream is
//! spawned as a task the moment QUIC hands it over, so under load this
//! counts the work the runtime has not reached yet): past
//! `queue_requests_max` of them a new stream is answered `overloaded` at
//! once, unread. A request that waited longer than `request_deadline_ms`
//! for the lock is answered `deadline`. Neither was applied, and neither is
//! ever an allow.
//!
//! The decider also owns the `await`s waiting on holds (at most
//! `awaits_max`): a verification that resolves a hold answers the awaits on
//! it at once, and a timer task answers the rest at their timeouts. Reloads
//! take the same lock, so they fall between two requests and no request
//! sees half of one.

use crate::answer::{WireCode, error_body};
use crate::contract::Kind;
use crate::engine::Changes;
use crate::engine::{Alert, Engine};
use crate::gateway::access::Peer;
use crate::gateway::alerts::AlertStore;
use crate::gateway::cache::EntityCache;
use crate::gateway::clock::{Clock, monotonic};
use crate::gateway::durable::{Durable, rulesets_batch};
use crate::gateway::limits::DeciderLimits;
use crate::gateway::service::{self, Prepared, Request, Service, Step, Waiting};
use crate::keys::{IdKind, Keys};
use crate::store::{GroupCommit, Loaded, Store, Ticket};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, oneshot, watch};

/// A change to the engine made between two requests: a rules and lists
/// reload. It returns a line for the log, or why it was refused (and then
/// it changed nothing).
pub type EngineChange = Box<dyn FnOnce(&mut Engine) -> Result<String, String> + Send>;

/// An answer: written now, or coming when a hold resolves or its await
/// times out.
pub enum Decided {
    Now(Vec<u8>),
    Later(oneshot::Receiver<Vec<u8>>),
    /// Written once the ticket says the change (and every earlier one) is
    /// durable; `unavailable` if it never will be.
    Durable(Ticket, Vec<u8>),
}

/// Entity states read per page of the store's pruning.
const PRUNE_PAGE: usize = 1000;

/// Entries read per page of a pseudonym re-key: small, so that each page's
/// batch is one short transaction among the decisions'.
const REKEY_PAGE: usize = 1000;

/// The answer to every request once the store has failed.
pub fn store_failed() -> Vec<u8> {
    refusal(
        WireCode::Unavailable,
        "the store failed; the service is refusing every request until it restarts",
    )
}

/// Where an answer goes.
type Reply = oneshot::Sender<Vec<u8>>;

pub struct Decider {
    core: Mutex<Core>,
    /// Streams admitted and not yet done ([`Admitted`]).
    in_progress: Arc<AtomicUsize>,
    queue_requests_max: usize,
    await_timeout_ms_max: u64,
    /// The store, its writer and codecs (shared with `Core`): what a
    /// request needs is read before the lock.
    durable: Option<Arc<Durable>>,
    /// Entity states evicted so far (`Core::cache`): see `Core::admit`.
    evictions: Arc<AtomicU64>,
    deadline: Duration,
    /// Wakes the timer task when an await with an earlier deadline waits.
    timer: Notify,
}

struct Core {
    /// Evictions so far, for requests reading before the lock.
    evictions: Arc<AtomicU64>,
    service: Service,
    durable: Option<Arc<Durable>>,
    /// The bound on entity states in memory, with a store.
    cache: Option<EntityCache>,
    /// Scratch: the entities one request named.
    named: Vec<crate::history::EntityId>,
    /// Alerts raised by the request being handled, kept with its batch.
    raised: Vec<Alert>,
    /// The number the next alert is kept under, and how many to keep.
    next_alert: u64,
    alerts_kept_max: usize,
    /// Scratch for the changes of one request.
    changes: Changes,
    clock: Arc<dyn Clock>,
    awaits_max: usize,
    waiters: Waiters,
    /// Shutting down: awaits answer at once with the current decision.
    closing: bool,
    alerts: Arc<AlertStore>,
    /// Keys the line pseudonyms alerts are logged with (the store's own
    /// pseudonyms): no identifier is ever logged in clear.
    keys: Arc<Keys>,
}

/// A stream counted toward `queue_requests_max` until dropped.
pub struct Admitted(Arc<AtomicUsize>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The answer to a stream over `queue_requests_max`.
pub fn overloaded() -> Vec<u8> {
    refusal(
        WireCode::Overloaded,
        "the service is at queue_requests_max; retry after a pause",
    )
}

/// An error body without an id: the request was not read.
pub fn refusal(code: WireCode, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(192);
    error_body(None, code, None, message, &mut out);
    out
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
                alerts,
                keys,
            }),
            in_progress: Arc::new(AtomicUsize::new(0)),
            queue_requests_max: limits.queue_requests_max,
            deadline: limits.request_deadline,
            timer: Notify::new(),
        }
    }

    /// Admits a new stream, or `None` when `queue_requests_max` are in
    /// progress (answer it [`overloaded`]).
    pub fn admit(&self) -> Option<Admitted> {
        let max = self.queue_requests_max;
        self.in_progress
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Admitted(self.in_progress.clone()))
    }

    /// The state, for a read or a change that cannot make an answer wrong
    /// (expiring awaits, shutting down): a poisoned lock still holds the
    /// waiters, who must be answered.
    fn core(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The longest `timeout_ms` an `await` may ask for: what an edge
    /// parses requests with.
    pub fn await_timeout_ms_max(&self) -> u64 {
        self.await_timeout_ms_max
    }

    /// Decides one request from `peer` (parsed by its edge), read at
    /// `read_at`.
    pub fn decide(&self, peer: &Peer, request: Request, read_at: Instant) -> Decided {
        let mut out = Vec::with_capacity(256);
        // The role check and the id's scope read no state: done before the lock.
        let prepared = service::prepare(peer, request, &mut out);
        if prepared == Prepared::Answered {
            return Decided::Now(out);
        }
        // Read before the store: an eviction after it may leave what the
        // read found older than what was evicted (see `Core::admit`).
        let epoch = self.evictions.load(Ordering::Acquire);
        let loaded = match self.read(&prepared) {
            Ok(l) => l.map(|l| (l, epoch)),
            Err(answer) => return Decided::Now(answer),
        };
        let Ok(mut core) = self.core.lock() else {
            return Decided::Now(refusal(
                WireCode::Unavailable,
                "the decision engine failed; the service is refusing every request until it restarts",
            ));
        };
        let prepared = if read_at.elapsed() > self.deadline {
            service::late(prepared, &mut out)
        } else {
            prepared
        };
        let decided = core.request(prepared, loaded, out);
        if let Decided::Later(_) = decided {
            self.timer.notify_one();
        }
        decided
    }

    /// Reads from the store what `prepared` needs, before the lock: its
    /// records and entity states. A failed read is answered `unavailable`
    /// (retryable; nothing applied): without its history a request cannot
    /// be decided, and is never allowed.
    fn read(&self, prepared: &Prepared) -> Result<Option<Loaded>, Vec<u8>> {
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
            Prepared::Answered => return Ok(None),
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
    pub fn change_blocking(&self, change: EngineChange) -> Result<String, String> {
        let Ok(mut core) = self.core.lock() else {
            return Err("the decision engine failed; restart the service".to_string());
        };
        let kept = core.service.engine().rulesets_len();
        let line = change(core.service.engine_mut())?;
        // A new ruleset is kept before any record it decides: queued under
        // the lock, so ahead of every later decision's batch.
        if let Some(d) = &core.durable {
            let batch = rulesets_batch(core.service.engine(), kept);
            if !batch.is_empty() {
                let ticket = d.writer.submit(batch).map_err(|e| {
                    d.writer.fail();
                    format!("the new ruleset could not be kept: {e}")
                })?;
                drop(core);
                ticket
                    .wait()
                    .map_err(|e| format!("the new ruleset could not be kept: {e}"))?;
            }
        }
        Ok(line)
    }

    /// Deletes, page by page, the decision records written before
    /// `records_kept_days` before `now`, through the writer (so each page
    /// is one more batch in order). Blocks: run it off the runtime.
    pub fn sweep_records(
        &self,
        now: crate::contract::Timestamp,
        records_kept_days: u32,
    ) -> Result<u64, String> {
        use crate::store::retention::{SWEEP_PAGE_RECORDS, cutoff, sweep_page};
        let Some(Durable { store, writer, .. }) = self.durable.as_deref() else {
            return Ok(0);
        };
        let cut = cutoff(now.unix_secs(), records_kept_days);
        let deleted = walk_pages(writer, |after| {
            let (batch, next) = sweep_page(store.as_ref(), after, SWEEP_PAGE_RECORDS, cut)
                .map_err(|e| e.to_string())?;
            let n = batch.len();
            Ok((batch, next, n))
        })?;
        Ok(deleted as u64)
    }

    /// Puts the alerts the store keeps back in the operator's list, and
    /// numbers the next after them (at start).
    pub fn restore_alerts(&self) -> Result<usize, String> {
        let Some(Durable {
            store,
            persist: reader,
            ..
        }) = self.durable.as_deref()
        else {
            return Ok(0);
        };
        let kept = reader.alerts(store.as_ref()).map_err(|e| e.to_string())?;
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

    /// Moves every entity state and list value still under a key of the
    /// previous pseudonym master to the new one, page by page, through the
    /// writer. Blocks: run it off the runtime. Returns how many moved.
    pub fn rekey(&self) -> Result<usize, String> {
        use crate::store::Table;
        let Some(Durable {
            store,
            writer,
            persist: reader,
        }) = self.durable.as_deref()
        else {
            return Ok(0);
        };
        let mut moved = 0;
        for table in [Table::Entities, Table::Lists] {
            moved += walk_pages(writer, |after| {
                reader
                    .rekey_page(store.as_ref(), table, after, REKEY_PAGE)
                    .map_err(|e| e.to_string())
            })?;
        }
        Ok(moved)
    }

    /// Prunes one part of the history in memory (between two requests).
    pub fn prune_memory_part(&self, part: usize, parts: usize) {
        if let Ok(mut core) = self.core.lock() {
            let now = core.clock.now();
            core.service.engine_mut().prune_part(now, part, parts);
        }
    }

    /// Prunes the entity states in the store that are not in memory (those
    /// are pruned there, and written when they change): page by page, each
    /// state opened outside the lock, pruned by the current rules under it,
    /// written back through the writer only if nothing rewrote it since.
    /// Blocks: run it off the runtime. Returns how many states changed.
    pub fn prune_store(&self) -> Result<usize, String> {
        use crate::store::Table;
        let Some(Durable {
            store,
            writer,
            persist: reader,
        }) = self.durable.as_deref()
        else {
            return Ok(0);
        };
        walk_pages(writer, |after| {
            let page = store
                .scan_from(Table::Entities, after, PRUNE_PAGE)
                .map_err(|e| e.to_string())?;
            let next = crate::store::next_page(&page, PRUNE_PAGE);
            let mut opened = Vec::with_capacity(page.len());
            for (key, sealed) in page {
                let plain = reader
                    .open_entity(&key, &sealed)
                    .map_err(|e| e.to_string())?;
                opened.push((key, sealed, plain));
            }
            let pruned = self.prune_opened(opened)?;
            let mut batch = crate::store::Batch::new();
            for (key, sealed, new) in &pruned {
                if new.is_empty() {
                    batch.delete_if(Table::Entities, key.clone(), sealed.clone());
                } else {
                    let resealed = reader.seal_entity(key, new).map_err(|e| e.to_string())?;
                    batch.put_if(Table::Entities, key.clone(), resealed, sealed.clone());
                }
            }
            Ok((batch, next, pruned.len()))
        })
    }

    /// Under the lock: the opened states (key, sealed value, plain) not in
    /// memory, pruned by the current rules, those that changed with their
    /// new encoding (empty: delete).
    fn prune_opened(&self, opened: Vec<StoredState>) -> Result<Vec<StoredState>, String> {
        let Ok(mut core) = self.core.lock() else {
            return Err("the decision engine failed".into());
        };
        let now = core.clock.now();
        let engine = core.service.engine_mut();
        let mut pruned = Vec::new();
        for (key, sealed, plain) in opened {
            let id = Engine::entity_of(&plain).map_err(|e| e.to_string())?;
            if engine.is_resident(&id) {
                continue;
            }
            if let Some(new) = engine
                .prune_encoded(&plain, now)
                .map_err(|e| e.to_string())?
            {
                pruned.push((key, sealed, new));
            }
        }
        Ok(pruned)
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

impl Core {
    fn request(
        &mut self,
        prepared: Prepared,
        loaded: Option<(Loaded, u64)>,
        mut out: Vec<u8>,
    ) -> Decided {
        let (mut loaded, epoch) = loaded.unwrap_or_default();
        if let Err(answer) = self.admit(&prepared, &mut loaded, epoch) {
            return Decided::Now(answer);
        }
        let now = self.clock.now();
        let step = self.service.apply(prepared, now, &mut out);
        let decided = match step {
            Step::Answered => Decided::Now(out),
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
    fn admit(
        &mut self,
        prepared: &Prepared,
        loaded: &mut Loaded,
        epoch: u64,
    ) -> Result<(), Vec<u8>> {
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
    fn commit(&mut self, decided: Decided, loaded: &Loaded) -> Decided {
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
                Decided::Now(body) => Decided::Durable(ticket, body),
                other => other,
            },
            Err(e) => {
                tracing::error!(error = %e, "a change could not be queued for the store: no further answers");
                d.writer.fail();
                Decided::Now(store_failed())
            }
        }
    }

    fn await_hold(&mut self, scoped: String, timeout_ms: u64) -> Decided {
        let mut out = Vec::with_capacity(256);
        if self.service.await_now(&scoped, &mut out) == Waiting::Answered {
            return Decided::Now(out);
        }
        if timeout_ms == 0 || self.closing {
            self.service.await_timed_out(&scoped, &mut out);
            return Decided::Now(out);
        }
        if self.waiters.len() >= self.awaits_max {
            return Decided::Now(refusal(
                WireCode::Overloaded,
                "the service is at awaits_max; retry the await after a pause",
            ));
        }
        let (reply, answer) = oneshot::channel();
        let deadline = monotonic() + Duration::from_millis(timeout_ms);
        self.waiters.add(scoped.into(), deadline, reply);
        Decided::Later(answer)
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
            self.deliver(reply, out);
        }
    }

    /// Answers the awaits whose timeout has passed.
    fn expire(&mut self, now: Instant) {
        while let Some((scoped, reply)) = self.waiters.pop_expired(now) {
            let mut out = Vec::with_capacity(256);
            self.service.await_timed_out(&scoped, &mut out);
            self.deliver(reply, out);
        }
    }

    /// Sends an await's answer once everything decided before it is
    /// durable: it may read a hold released by a verification whose change
    /// is still queued.
    fn deliver(&self, reply: Reply, out: Vec<u8>) {
        let Some(d) = &self.durable else {
            // The client may have gone: its answer has nowhere to go.
            let _ = reply.send(out);
            return;
        };
        match d.writer.submit(crate::store::Batch::new()) {
            Ok(ticket) => {
                tokio::spawn(async move {
                    let body = match ticket.await {
                        Ok(()) => out,
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

    fn release_all(&mut self) {
        self.expire(monotonic() + Duration::from_secs(365 * 24 * 3600));
        debug_assert_eq!(self.waiters.len(), 0);
    }

    fn raise(&mut self, alert: Alert) {
        let mut line = self
            .keys
            .pseudonym(IdKind::Msisdn, &alert.msisdn.to_string())
            .to_hex();
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
/// A stored entity state: its key, its sealed value, and a plain encoding
/// (as read, or as it is to become).
type StoredState = (Vec<u8>, Vec<u8>, Vec<u8>);

/// Walks a table page by page: `page(after)` reads the page after `after`
/// and makes its batch, giving where the next page starts and a count;
/// each non-empty batch goes through the writer (one more batch in order)
/// and is waited for before the next page. Returns the counts' sum.
fn walk_pages(
    writer: &GroupCommit,
    mut page: impl FnMut(Option<&[u8]>) -> Result<(crate::store::Batch, Option<Vec<u8>>, usize), String>,
) -> Result<usize, String> {
    let mut after: Option<Vec<u8>> = None;
    let mut total = 0;
    loop {
        let (batch, next, n) = page(after.as_deref())?;
        total += n;
        if !batch.is_empty() {
            let ticket = writer.submit(batch).map_err(|e| e.to_string())?;
            ticket.wait().map_err(|e| e.to_string())?;
        }
        match next {
            Some(k) => after = Some(k),
            None => return Ok(total),
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
