//! How the decider's answers arrive, and the answers it gives on its own.
//!
//! An answer is ready now, comes later (an `await` waiting on a hold), or
//! is ready once the change behind it is durable: an edge writes it only
//! then, so nothing is acknowledged that a crash could take back. The
//! decider's own answers (`overloaded`, `unavailable`) are refusals: each
//! is retryable and none is ever an allow.

use crate::answer::WireCode;
use crate::gateway::reply::Reply;
use crate::store::Ticket;
use tokio::sync::oneshot;

/// An answer: ready now, or coming when a hold resolves or its await
/// times out, or ready once durable.
pub enum Response {
    Now(Reply),
    Later(oneshot::Receiver<Reply>),
    /// Ready once the ticket says the change (and every earlier one) is
    /// durable; `unavailable` if it never will be.
    Durable(Ticket, Reply),
}

/// A refusal without an id: the request was not read, or not applied.
pub fn refusal(code: WireCode, message: &'static str) -> Reply {
    Reply::refused(code, message)
}

/// The answer to every request once the store has failed.
pub fn store_failed() -> Reply {
    refusal(
        WireCode::Unavailable,
        "the store failed; the service is refusing every request until it restarts",
    )
}

/// The answer to every request, and every waiting await, once the engine
/// panicked under the lock: what memory holds may never have been
/// committed, so nothing is answered from it.
pub fn engine_failed() -> Reply {
    refusal(
        WireCode::Unavailable,
        "the decision engine failed; the service is refusing every request until it restarts",
    )
}

/// The answer to a request while the store's write queue is full
/// (`queue_batches_max`): nothing was applied, and the client retries.
pub fn queue_full() -> Reply {
    refusal(
        WireCode::Overloaded,
        "the store's write queue is full; the request was not applied; retry after a pause",
    )
}

/// The answer to a stream over `queue_requests_max`.
pub fn overloaded() -> Reply {
    refusal(
        WireCode::Overloaded,
        "the service is at queue_requests_max; retry after a pause",
    )
}
