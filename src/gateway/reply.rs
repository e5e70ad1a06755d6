//! What the gateway answers, typed: a decision, a signal's alerts, or a
//! refusal with its code. The gateway never writes bytes for a client:
//! each edge writes a [`Reply`] in its own form (the QUIC wire as the
//! bodies of `proto/wire.md`, through [`crate::answer`]), so a new edge
//! adds a codec, not a second decider.

use crate::answer::{Code, WireCode};
use crate::contract::ContractError;
use crate::engine::{Alert, Decided};
use crate::rules::CompiledRules;
use std::borrow::Cow;
use std::sync::Arc;

/// One answer of the gateway.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A decision (also the answer to an `await`): the request's id as its
    /// client sent it, and the ruleset that decided it, which names its
    /// rules and methods.
    Decision {
        id: Box<str>,
        decided: Decided,
        rules: Arc<CompiledRules>,
    },
    /// A signal was applied; the alert it raised, if any (at most one).
    Signal { alert: Option<Alert> },
    /// The request was refused: nothing was applied, unless the code says
    /// its effect is unknown (`deadline`).
    Refused(Refusal),
}

/// A refused request: the contract's or the service's code, the field at
/// fault, and what was wrong. Whether it is retryable follows from the
/// code ([`Code::retryable`]), so no answer contradicts the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The request's `id` as its client sent it, when it had a valid one.
    pub id: Option<Box<str>>,
    pub code: Code,
    pub field: Option<Box<str>>,
    pub message: Cow<'static, str>,
}

impl Reply {
    /// A refusal without an id or a field: the service's own conditions.
    pub fn refused(code: WireCode, message: &'static str) -> Reply {
        Reply::Refused(Refusal {
            id: None,
            code: code.into(),
            field: None,
            message: Cow::Borrowed(message),
        })
    }

    /// The engine's refusal of a request, with the id its client sent.
    pub fn of_error(id: Option<Box<str>>, e: ContractError) -> Reply {
        Reply::Refused(Refusal {
            id,
            code: e.code.into(),
            field: e.field,
            message: Cow::Owned(e.message),
        })
    }

    /// The code of a refusal; `None` for a decision or a signal.
    pub fn code(&self) -> Option<Code> {
        match self {
            Reply::Refused(r) => Some(r.code),
            _ => None,
        }
    }
}
