//! The service's decision step, sans-IO: one request from one peer in
//! (typed: its edge parsed it), one response body out (written by
//! [`crate::answer`], the same for every edge). `portcullis serve` wraps it
//! in the decider, QUIC streams and a clock; tests call it directly.
//!
//! What it owns, on top of the engine:
//! - **Roles.** What each role may send is the one table in
//!   [`crate::gateway::access`]; anything else gets `forbidden` (field
//!   `kind`) and nothing changes.
//! - **Id scopes.** Ids are scoped to the peer's name: the engine sees
//!   `NAME:ID`. Names never hold `:` ([`crate::tls::check_name`]), so two
//!   clients' ids never meet. A verification names a hold as `CLIENT:ID`
//!   (the client that sent the request, then its id), since an analyst
//!   verifies other clients' requests; its own `id` is scoped to the
//!   analyst. Answers carry the id as the client sent it.
//! - **Awaits.** A caller awaits its own requests (`ref` is an id in its
//!   scope); an analyst or admin names any client's request as a
//!   verification does, `CLIENT:ID`.
//! - **Time.** Events are decided at the service's time, which never goes
//!   backwards: a client's `at` is checked for form by the parser and never
//!   used for windows or order.

use crate::answer::WireCode;
use crate::contract::{ErrorCode, Event, Kind, Timestamp};
use crate::engine::{Alert, Answer, Decided, Engine};
use crate::gateway::access::{Peer, may_send};
use crate::gateway::reply::{Refusal, Reply};
use crate::rules::Outcome;
use std::borrow::Cow;

/// One request, parsed by its edge: what the gateway decides.
// Nearly every request is an event: boxing it would add an allocation per
// request to save stack space only for the rare `await`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A contract v1 event; `at`, when the client sent one, is checked for
    /// form and recorded, never used as the engine's clock.
    Event(Event),
    /// Wait until the request whose `id` is `reference` is no longer on hold,
    /// or `timeout_ms` passes.
    Await {
        reference: Box<str>,
        timeout_ms: u64,
    },
}

/// The separator between a client's name and its id in the engine.
pub const SCOPE_SEPARATOR: char = ':';

/// What became of one request.
#[derive(Debug, Clone)]
pub enum Step {
    /// The answer.
    Answered(Reply),
    /// An `await` of the request `scoped` (in the awaiting client's scope),
    /// for the runtime to wait on, at most `timeout_ms`.
    Await { scoped: String, timeout_ms: u64 },
}

/// The id as its client sent it, from `NAME:ID`.
fn unscoped(scoped: &str) -> &str {
    scoped
        .split_once(SCOPE_SEPARATOR)
        .map_or(scoped, |(_, id)| id)
}

/// A request checked and scoped, not yet applied: see [`prepare`].
// An event is moved once, from parsing to the engine: boxing it would cost
// an allocation per request to shrink a value that lives microseconds.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Prepared {
    /// Answered already (a forbidden kind).
    Answered(Reply),
    /// An `await` of `scoped`.
    Await { scoped: String, timeout_ms: u64 },
    /// An event, its id scoped; `own_id` is the id as the client sent it.
    Event { own_id: Option<Box<str>>, ev: Event },
}

/// The part of handling a request that reads no state, done before the
/// lock the state is under: the role check and the id's scope.
pub fn prepare(peer: &Peer, request: Request) -> Prepared {
    let mut ev = match request {
        Request::Await {
            reference,
            timeout_ms,
        } => {
            // An analyst or admin names any client's request, as a
            // verification does; a caller only ever its own.
            let scoped = if peer.role.may_name_any_request() {
                reference.into()
            } else {
                scoped(&peer.name, &reference)
            };
            return Prepared::Await { scoped, timeout_ms };
        }
        Request::Event(ev) => ev,
    };
    let own_id = ev.id.clone();
    if !may_send(peer.role, ev.kind) {
        return Prepared::Answered(Reply::Refused(Refusal {
            id: own_id,
            code: WireCode::Forbidden.into(),
            field: Some("kind".into()),
            message: Cow::Owned(format!(
                "the {} role may not send {}",
                peer.role.as_str(),
                ev.kind.as_str()
            )),
        }));
    }
    if let Some(refused) = self_approval_by_client(peer, &ev) {
        return Prepared::Answered(refused);
    }
    if let Some(id) = &ev.id {
        ev.id = Some(scoped(&peer.name, id).into());
    }
    Prepared::Event { own_id, ev }
}

/// No client clears its own request's hold: a verification naming
/// `CLIENT:ID` is refused `forbidden` when `CLIENT` is the sender itself (a
/// stolen analyst certificate could otherwise request a SIM swap and
/// release it).
fn self_approval_by_client(peer: &Peer, ev: &Event) -> Option<Reply> {
    let reference = ev
        .reference
        .as_deref()
        .filter(|_| ev.kind == Kind::Verification)?;
    let (client, _) = reference.split_once(SCOPE_SEPARATOR)?;
    (client == peer.name).then(|| {
        forbidden(
            ev.id.clone(),
            "ref",
            "a client may not verify its own request; another client's analyst must",
        )
    })
}

/// A refusal for what the sender may not do.
fn forbidden(id: Option<Box<str>>, field: &str, message: &'static str) -> Reply {
    Reply::Refused(Refusal {
        id,
        code: WireCode::Forbidden.into(),
        field: Some(field.into()),
        message: Cow::Borrowed(message),
    })
}

/// A prepared request that waited too long to be decided: an event is
/// answered `deadline` (retryable; nothing changed); the rest stay as they
/// are.
pub fn late(prepared: Prepared) -> Prepared {
    match prepared {
        Prepared::Event { own_id, .. } => Prepared::Answered(Reply::Refused(Refusal {
            id: own_id,
            code: WireCode::Deadline.into(),
            field: None,
            message: Cow::Borrowed(
                "the request waited longer than request_deadline_ms to be decided; it was not applied",
            ),
        })),
        other => other,
    }
}

/// The decision step of the service.
pub struct Service {
    engine: Engine,
    /// The latest time an event was decided at.
    last: Timestamp,
    await_timeout_ms_max: u64,
    /// Alerts raised and not yet polled ([`Service::poll_alert`]).
    alerts: Vec<Alert>,
    /// Holds (scoped ids) a verification resolved, not yet polled
    /// ([`Service::poll_resolved`]).
    resolved: Vec<Box<str>>,
}

/// `NAME:ID`: an id in its client's scope.
pub fn scoped(name: &str, id: &str) -> String {
    let mut s = String::with_capacity(name.len() + 1 + id.len());
    s.push_str(name);
    s.push(SCOPE_SEPARATOR);
    s.push_str(id);
    s
}

impl Service {
    pub fn new(engine: Engine, await_timeout_ms_max: u64) -> Service {
        Service {
            engine,
            last: Timestamp::MIN,
            await_timeout_ms_max,
            alerts: Vec::new(),
            resolved: Vec::new(),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The engine, to reload its rules and lists between requests.
    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// The next alert a handled signal raised, for the runtime to log and
    /// keep; in the order they were raised. The runtime drains this after
    /// every request, so at most one waits at a time.
    pub fn poll_alert(&mut self) -> Option<Alert> {
        self.alerts.pop()
    }

    /// The next hold (its scoped id, `CLIENT:ID`) a verification resolved:
    /// the runtime answers the `await`s waiting on it. Drained after every
    /// request, like [`Service::poll_alert`].
    pub fn poll_resolved(&mut self) -> Option<Box<str>> {
        self.resolved.pop()
    }

    /// Handles one request from `peer` at the service's time `now`.
    pub fn handle(&mut self, peer: &Peer, request: Request, now: Timestamp) -> Step {
        self.apply(prepare(peer, request), now)
    }

    /// The longest `timeout_ms` an `await` may ask for: what an edge parses
    /// requests with.
    pub fn await_timeout_ms_max(&self) -> u64 {
        self.await_timeout_ms_max
    }

    /// Applies a prepared request at the service's time `now`.
    pub fn apply(&mut self, prepared: Prepared, now: Timestamp) -> Step {
        match prepared {
            Prepared::Answered(reply) => Step::Answered(reply),
            Prepared::Await { scoped, timeout_ms } => Step::Await { scoped, timeout_ms },
            Prepared::Event { own_id, ev } => {
                if let Some(refused) = self.self_approval_by_agent(own_id.as_deref(), &ev) {
                    return Step::Answered(refused);
                }
                // Time never goes backwards, whatever the host clock does.
                let at = now.max(self.last);
                self.last = at;
                Step::Answered(self.answer(own_id, &ev, at))
            }
        }
    }

    /// Handles a request that waited longer than the runtime allows
    /// before it could be decided: a decision or signal is answered
    /// `deadline` (retryable; nothing changed) with its id when it has a
    /// valid one, and an `await` as usual, since its own `timeout_ms`
    /// bounds it instead.
    pub fn handle_late(&mut self, peer: &Peer, request: Request, now: Timestamp) -> Step {
        self.apply(late(prepare(peer, request)), now)
    }

    /// Answers an `await` of `scoped` (as [`Step::Await`] gave it) as it
    /// stands now: the request's decision when it is allowed or denied, or
    /// `unknown_ref` when no decision request has that id. `None` while
    /// the request is on hold: the runtime then waits (at most the await's
    /// `timeout_ms`) and asks again, or answers `hold` with
    /// [`Service::await_timed_out`].
    pub fn await_now(&self, scoped: &str) -> Option<Reply> {
        match self.engine.decision_of(scoped) {
            Some(d) if d.outcome == Outcome::Hold => None,
            _ => Some(self.await_timed_out(scoped)),
        }
    }

    /// The answer to an `await` whose timeout passed: the request's current
    /// decision, which reads `hold` if it is still pending, or `unknown_ref`.
    pub fn await_timed_out(&self, scoped: &str) -> Reply {
        match self.engine.decision_of(scoped) {
            Some(d) => self.decision(unscoped(scoped).into(), d),
            None => Reply::Refused(Refusal {
                id: None,
                code: ErrorCode::UnknownRef.into(),
                field: Some("ref".into()),
                message: Cow::Borrowed("no decision request with this id is remembered"),
            }),
        }
    }

    /// No agent clears a hold on a request made through them: a
    /// verification that names an `agent` is refused `forbidden` when the
    /// held request names the same one (an insider at a store cannot swap
    /// a SIM and approve the swap).
    fn self_approval_by_agent(&self, own_id: Option<&str>, ev: &Event) -> Option<Reply> {
        let agent = ev
            .agent
            .as_ref()
            .filter(|_| ev.kind == Kind::Verification)?;
        let held = self.engine.held_request(ev.reference.as_deref()?)?;
        (held.agent.as_ref() == Some(agent)).then(|| {
            forbidden(
                own_id.map(Into::into),
                "agent",
                "the agent who made the request may not verify it",
            )
        })
    }

    fn decision(&self, id: Box<str>, decided: Decided) -> Reply {
        Reply::Decision {
            id,
            decided,
            rules: self.engine.ruleset_shared(decided.ruleset),
        }
    }

    fn answer(&mut self, own_id: Option<Box<str>>, ev: &Event, at: Timestamp) -> Reply {
        match self.engine.handle(ev, at) {
            // A decision kind always carries an id: the parser requires it.
            Answer::Decision(d) => self.decision(own_id.unwrap_or_default(), d),
            Answer::Signal { alert, retry } => {
                if let Some(a) = alert {
                    self.alerts.push(a);
                }
                if !retry
                    && ev.kind == Kind::Verification
                    && let Some(reference) = &ev.reference
                {
                    self.resolved.push(reference.clone());
                }
                Reply::Signal { alert }
            }
            Answer::Error(e) => Reply::of_error(own_id, e),
        }
    }
}

/// Test support: requests as bodies and answers as bodies, as the QUIC
/// edge reads and writes them, for tests written against bytes.
#[cfg(test)]
pub(crate) mod bodies {
    use super::{Peer, Prepared, Request, Service, Timestamp, prepare};
    use crate::edge::quic::wire;

    /// What became of one request body, its answer written.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Step {
        Answered,
        Await { scoped: String, timeout_ms: u64 },
    }

    /// Where an `await` stands, its answer written if it has one.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Waiting {
        Answered,
        Pending,
    }

    /// The body as the QUIC edge parses it; a refusal is written to `out`
    /// and given back as the edge's own reply.
    fn parsed(
        s: &Service,
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Request, crate::gateway::Reply> {
        wire::parse_request(body, s.await_timeout_ms_max()).map_err(|e| {
            let reply = crate::gateway::Reply::from(e);
            wire::reply_body(&reply, out);
            reply
        })
    }

    fn written(step: super::Step, out: &mut Vec<u8>) -> Step {
        match step {
            super::Step::Answered(reply) => {
                wire::reply_body(&reply, out);
                Step::Answered
            }
            super::Step::Await { scoped, timeout_ms } => Step::Await { scoped, timeout_ms },
        }
    }

    /// The service's methods over bodies.
    pub trait Bodies {
        fn handle_body(
            &mut self,
            peer: &Peer,
            body: &[u8],
            now: Timestamp,
            out: &mut Vec<u8>,
        ) -> Step;
        fn prepare_body(&self, peer: &Peer, body: &[u8], out: &mut Vec<u8>) -> Prepared;
        fn apply_body(&mut self, prepared: Prepared, now: Timestamp, out: &mut Vec<u8>) -> Step;
        fn await_now_body(&self, scoped: &str, out: &mut Vec<u8>) -> Waiting;
        fn await_timed_out_body(&self, scoped: &str, out: &mut Vec<u8>);
    }

    impl Bodies for Service {
        fn handle_body(
            &mut self,
            peer: &Peer,
            body: &[u8],
            now: Timestamp,
            out: &mut Vec<u8>,
        ) -> Step {
            match parsed(self, body, out) {
                Ok(request) => written(self.handle(peer, request, now), out),
                Err(_) => Step::Answered,
            }
        }

        fn prepare_body(&self, peer: &Peer, body: &[u8], out: &mut Vec<u8>) -> Prepared {
            match parsed(self, body, out) {
                Ok(request) => match prepare(peer, request) {
                    Prepared::Answered(reply) => {
                        wire::reply_body(&reply, out);
                        Prepared::Answered(reply)
                    }
                    other => other,
                },
                Err(refused) => Prepared::Answered(refused),
            }
        }

        fn apply_body(&mut self, prepared: Prepared, now: Timestamp, out: &mut Vec<u8>) -> Step {
            if let Prepared::Answered(_) = prepared {
                // Written already by `prepare_body`.
                return Step::Answered;
            }
            written(self.apply(prepared, now), out)
        }

        fn await_now_body(&self, scoped: &str, out: &mut Vec<u8>) -> Waiting {
            match self.await_now(scoped) {
                Some(reply) => {
                    wire::reply_body(&reply, out);
                    Waiting::Answered
                }
                None => Waiting::Pending,
            }
        }

        fn await_timed_out_body(&self, scoped: &str, out: &mut Vec<u8>) {
            wire::reply_body(&self.await_timed_out(scoped), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bodies::{Bodies, Step, Waiting};
    use super::*;
    use crate::gateway::access::Role;
    use crate::rules::CompiledRules;
    use std::sync::Arc;

    fn service() -> Service {
        Service::new(
            Engine::new(Arc::new(CompiledRules::default_rules())),
            30_000,
        )
    }

    fn peer(name: &str, role: Role) -> Peer {
        Peer {
            name: name.to_string(),
            role,
        }
    }

    fn at(s: &str) -> Timestamp {
        Timestamp::parse(s).expect("a valid time")
    }

    fn call(s: &mut Service, p: &Peer, body: &str, now: &str) -> serde_json::Value {
        let mut out = Vec::new();
        assert_eq!(
            s.handle_body(p, body.as_bytes(), at(now), &mut out),
            Step::Answered
        );
        serde_json::from_slice(&out).expect("a JSON body")
    }

    const SWAP: &str = r#"{"id":"1","kind":"sim_swap","msisdn":"+447700900001","account":"A1","iccid":"8944110000000000008"}"#;

    /// A generated multi-day trace, sent by an admin with the service's
    /// clock at each event's time, is decided exactly as replay decides it.
    #[test]
    fn a_generated_trace_is_decided_as_replay_decides_it() {
        let cfg = crate::traffic::Config {
            seed: 5,
            subscribers: 500,
            ..crate::traffic::Config::default()
        };
        let mut input = Vec::new();
        crate::traffic::write(&cfg, 20_000, &mut input).expect("in memory");
        let mut engine = Engine::new(Arc::new(CompiledRules::default_rules()));
        let mut replayed = Vec::new();
        crate::replay::run(&mut engine, &input[..], &mut replayed).expect("in memory");
        let replayed = String::from_utf8(replayed).expect("UTF-8");
        let want: Vec<&str> = replayed
            .lines()
            .filter(|l| l.contains("\"decision\""))
            .collect();
        let mut s = service();
        let admin = peer("ops", Role::Admin);
        let mut got = Vec::new();
        let mut alerts = 0;
        for line in String::from_utf8(input).expect("UTF-8").lines() {
            let now = crate::contract::parse_line(line, crate::contract::AtRule::Required)
                .expect("generated lines are valid")
                .at
                .expect("replay lines carry at");
            let mut out = Vec::new();
            s.handle_body(&admin, line.as_bytes(), now, &mut out);
            let body = String::from_utf8(out).expect("UTF-8");
            if body.contains("\"decision\"") {
                got.push(body);
            } else if body.contains("\"alert\"") {
                alerts += 1;
            }
        }
        assert!(want.len() > 1_000, "{}", want.len());
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w);
        }
        assert_eq!(
            alerts,
            replayed.lines().filter(|l| l.contains("\"alert\"")).count()
        );
    }

    #[test]
    fn a_caller_may_not_verify_or_edit_lists() {
        let mut s = service();
        let pos = peer("pos", Role::Caller);
        for body in [
            r#"{"kind":"verification","ref":"pos:1","result":"pass"}"#,
            r#"{"kind":"list_add","list":"blocked_imei","value":"490154203237518"}"#,
            r#"{"kind":"list_remove","list":"blocked_imei","value":"490154203237518"}"#,
        ] {
            let v = call(&mut s, &pos, body, "2026-03-01T10:00:00Z");
            assert_eq!(v["error"]["code"], "forbidden", "{v}");
            assert_eq!(v["error"]["field"], "kind");
            assert_eq!(v["error"]["retryable"], false);
        }
        assert_eq!(s.engine().holds_pending(), 0);
    }

    /// Two clients may both send id `1`; a client's own retry gets its
    /// earlier answer.
    #[test]
    fn ids_are_scoped_to_their_client() {
        let mut s = service();
        let (a, b) = (peer("a", Role::Caller), peer("b", Role::Caller));
        let first = call(&mut s, &a, SWAP, "2026-03-01T10:00:00Z");
        assert_eq!(first["id"], "1");
        assert_eq!(first["decision"], "allow");
        let other = SWAP.replace("+447700900001", "+447700900002");
        let v = call(&mut s, &b, &other, "2026-03-01T10:00:01Z");
        assert_eq!(v["decision"], "allow", "{v}");
        let conflict = call(&mut s, &a, &other, "2026-03-01T10:00:02Z");
        assert_eq!(conflict["error"]["code"], "id_conflict", "{conflict}");
        let retry = call(&mut s, &a, SWAP, "2026-03-01T10:00:03Z");
        assert_eq!(retry, first);
    }

    /// An analyst releases a caller's hold by naming it `CLIENT:ID`.
    #[test]
    fn an_analyst_verifies_a_callers_hold_by_its_scoped_id() {
        let mut s = service();
        let pos = peer("pos", Role::Caller);
        let desk = peer("desk", Role::Analyst);
        call(&mut s, &pos, SWAP, "2026-03-01T10:00:00Z");
        let second = SWAP.replace("\"1\"", "\"2\"");
        let held = call(&mut s, &pos, &second, "2026-03-01T10:01:00Z");
        assert_eq!(held["decision"], "hold", "{held}");
        let unscoped = call(
            &mut s,
            &desk,
            r#"{"kind":"verification","ref":"2","result":"pass"}"#,
            "2026-03-01T10:02:00Z",
        );
        assert_eq!(unscoped["error"]["code"], "unknown_ref", "{unscoped}");
        let ok = call(
            &mut s,
            &desk,
            r#"{"kind":"verification","ref":"pos:2","result":"pass"}"#,
            "2026-03-01T10:02:00Z",
        );
        assert_eq!(ok["ok"], true, "{ok}");
        let retry = call(&mut s, &pos, &second, "2026-03-01T10:03:00Z");
        assert_eq!(retry["decision"], "allow", "{retry}");
    }

    /// Nobody clears their own hold: not the client whose certificate sent
    /// the request (even with the analyst role), nor the agent the request
    /// names. Another analyst, naming another agent, may.
    #[test]
    fn nobody_verifies_their_own_request() {
        let mut s = service();
        let desk = peer("desk", Role::Analyst);
        let ops = peer("ops", Role::Analyst);
        let by_agent = SWAP.replace("\"iccid\"", "\"agent\":\"dlr-1\",\"iccid\"");
        call(&mut s, &desk, &by_agent, "2026-03-01T10:00:00Z");
        let second = by_agent.replace("\"1\"", "\"2\"");
        let held = call(&mut s, &desk, &second, "2026-03-01T10:01:00Z");
        assert_eq!(held["decision"], "hold", "{held}");
        let own = call(
            &mut s,
            &desk,
            r#"{"kind":"verification","ref":"desk:2","result":"pass"}"#,
            "2026-03-01T10:02:00Z",
        );
        assert_eq!(own["error"]["code"], "forbidden", "{own}");
        assert_eq!(own["error"]["field"], "ref", "{own}");
        let agent = call(
            &mut s,
            &ops,
            r#"{"kind":"verification","ref":"desk:2","result":"pass","agent":"dlr-1"}"#,
            "2026-03-01T10:02:00Z",
        );
        assert_eq!(agent["error"]["code"], "forbidden", "{agent}");
        assert_eq!(agent["error"]["field"], "agent", "{agent}");
        // Neither refusal released it.
        let still = call(&mut s, &desk, &second, "2026-03-01T10:03:00Z");
        assert_eq!(still["decision"], "hold", "{still}");
        let ok = call(
            &mut s,
            &ops,
            r#"{"kind":"verification","ref":"desk:2","result":"pass","agent":"sup-9"}"#,
            "2026-03-01T10:04:00Z",
        );
        assert_eq!(ok["ok"], true, "{ok}");
        let released = call(&mut s, &desk, &second, "2026-03-01T10:05:00Z");
        assert_eq!(released["decision"], "allow", "{released}");
    }

    /// A client's `at` never moves the service's clock, and the clock never
    /// goes backwards.
    #[test]
    fn time_is_the_services_and_never_goes_backwards() {
        let mut s = service();
        let pos = peer("pos", Role::Caller);
        call(&mut s, &pos, SWAP, "2026-03-01T10:00:00Z");
        // A second swap on the line "a year later" by the client's `at`,
        // but a minute later by the service's clock: still within 30 days.
        let later = SWAP
            .replace("\"1\"", "\"2\"")
            .replace("{\"id\"", "{\"at\":\"2027-03-01T10:00:00Z\",\"id\"");
        let v = call(&mut s, &pos, &later, "2026-03-01T10:01:00Z");
        assert_eq!(v["decision"], "hold", "{v}");
        // A host clock that steps back is held at the latest time.
        let third = SWAP.replace("\"1\"", "\"3\"");
        let v = call(&mut s, &pos, &third, "2026-02-01T00:00:00Z");
        assert_eq!(v["decision"], "hold", "{v}");
        assert_eq!(s.last, at("2026-03-01T10:01:00Z"));
    }

    /// An await reads the current decision: unknown, pending while held,
    /// then the released outcome; a timeout reads `hold`.
    #[test]
    fn awaits_read_the_current_decision() {
        let mut s = service();
        let pos = peer("pos", Role::Caller);
        let desk = peer("desk", Role::Analyst);
        let mut out = Vec::new();
        assert_eq!(s.await_now_body("pos:2", &mut out), Waiting::Answered);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
        assert_eq!(v["error"]["code"], "unknown_ref", "{v}");
        call(&mut s, &pos, SWAP, "2026-03-01T10:00:00Z");
        let second = SWAP.replace("\"1\"", "\"2\"");
        call(&mut s, &pos, &second, "2026-03-01T10:01:00Z");
        out.clear();
        assert_eq!(s.await_now_body("pos:2", &mut out), Waiting::Pending);
        assert!(out.is_empty());
        s.await_timed_out_body("pos:2", &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
        assert_eq!(
            (v["id"].as_str(), v["decision"].as_str()),
            (Some("2"), Some("hold"))
        );
        // Another client's scope does not see it.
        out.clear();
        assert_eq!(s.await_now_body("other:2", &mut out), Waiting::Answered);
        assert!(String::from_utf8_lossy(&out).contains("unknown_ref"));
        call(
            &mut s,
            &desk,
            r#"{"kind":"verification","ref":"pos:2","result":"fail"}"#,
            "2026-03-01T10:02:00Z",
        );
        out.clear();
        assert_eq!(s.await_now_body("pos:2", &mut out), Waiting::Answered);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
        assert_eq!(
            (v["id"].as_str(), v["decision"].as_str()),
            (Some("2"), Some("deny"))
        );
    }

    #[test]
    fn bad_bodies_and_awaits() {
        let mut s = service();
        let pos = peer("pos", Role::Caller);
        let v = call(&mut s, &pos, "[1]", "2026-03-01T10:00:00Z");
        assert_eq!(v["error"]["code"], "bad_frame", "{v}");
        let mut out = Vec::new();
        let step = s.handle_body(
            &pos,
            br#"{"kind":"await","ref":"7","timeout_ms":100}"#,
            at("2026-03-01T10:00:00Z"),
            &mut out,
        );
        assert_eq!(
            step,
            Step::Await {
                scoped: "pos:7".into(),
                timeout_ms: 100
            }
        );
        assert!(out.is_empty());
    }
}
