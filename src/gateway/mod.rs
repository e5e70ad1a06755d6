//! The gateway: the decision service with no listener. An edge hands it a
//! typed request from a known peer; it checks the peer's role, decides
//! under one lock in one total order, commits what changed, and hands back
//! the answer once it is durable. It opens no socket and parses no frame:
//! every edge (QUIC today, HTTPS next) owns its own codec and calls in.
//!
//! - [`access`]: roles, peers, and the one table of what each role may send.
//! - [`service`]: the sans-IO step from a typed request to an answer body:
//!   role check, ids scoped `NAME:ID`, the service's clock.
//! - [`decider`]: admission, deadlines, store reads, deciding under the
//!   lock, queueing the durable commit, awaits and their timer, upkeep.
//! - [`durable`]: opening the service's state (the store, the rulesets its
//!   records name, pending holds, lists) and the writer.
//! - [`error`]: what can go wrong outside a request, typed.
//! - [`cache`]: entity states in memory in front of the store, bounded.
//! - [`alerts`]: alerts kept for the operator surface.
//! - [`clock`]: the one place the service reads the time.
//! - [`limits`]: the limits the gateway itself enforces.
//! - [`reply`]: the typed answer an edge writes in its own form.

pub mod access;
pub mod alerts;
pub mod cache;
pub mod clock;
pub mod decider;
pub mod durable;
pub mod error;
pub mod limits;
pub mod reply;
pub mod service;

pub use error::GatewayError;
pub use reply::{Refusal, Reply};
pub use service::Request;
