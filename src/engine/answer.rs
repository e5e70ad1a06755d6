//! What the engine answers: a decision, an applied signal (with any alert
//! it raised) or a state-dependent error. A leaf that names no other file
//! of the engine, so that the records that replay a decision and the state
//! machine that makes one share these types without an import loop.

use crate::contract::{ContractError, Timestamp};
use crate::rules::Outcome;

/// The answer to a decision kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decided {
    /// The outcome now: a released hold reads `Allow`, a failed one `Deny`.
    pub outcome: Outcome,
    /// Rules that matched when the request was decided (bit i = rule i).
    pub matched: u128,
    /// Shadow rules that matched (bit i = rule i).
    pub shadow: u128,
    /// The ruleset that decided it: see
    /// [`Engine::ruleset`](crate::engine::Engine::ruleset).
    pub ruleset: u32,
    /// True when this answers a retry of an earlier request.
    pub retry: bool,
}

/// An alert raised while handling a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alert {
    pub msisdn: crate::contract::ident::Msisdn,
    pub at: Timestamp,
}

impl Alert {
    pub const KIND: &'static str = "unapproved_sim_change";
}

/// What the engine answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Decision(Decided),
    /// A signal was applied (or was a retry and changed nothing).
    Signal {
        alert: Option<Alert>,
        retry: bool,
    },
    Error(ContractError),
}
