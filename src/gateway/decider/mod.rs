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
//!
//! - [`admission`]: the queue bound, `queue_requests_max`.
//! - `decide`: the [`Decider`], from admission to answer.
//! - `locked`: the state under the lock and what is done under it.
//! - `waiters`: the awaits on holds, by hold and by deadline.
//! - `upkeep`: record retention, re-keying and pruning, page by page.
//! - `answers`: how answers arrive, and the decider's own refusals.

pub mod admission;
mod answers;
mod decide;
mod locked;
mod upkeep;
mod waiters;

pub use admission::Admitted;
pub use answers::{Response, engine_failed, overloaded, refusal, store_failed};
pub use decide::{Decider, EngineChange};
