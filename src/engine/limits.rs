//! The engine's limits on what it keeps for idempotency. A leaf: the state
//! is sized by them and the facade takes them, so they live apart from both.

/// Limits on what the engine keeps for idempotency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineLimits {
    /// Decision and signal records kept for idempotent retries (records).
    /// Past it the oldest resolved record is forgotten: a retry of it is
    /// decided afresh. Held requests are never forgotten while pending.
    pub decision_records_max: usize,
    /// Requests on hold at once (requests). When a new hold finds it
    /// reached, the oldest pending holds (a sixteenth of the limit, at least
    /// one) expire as a failed verification would: each becomes a final deny
    /// (fail closed), and its retries answer `deny`. Expiring in batches
    /// lets the cache misses of the removals overlap.
    pub holds_pending_max: usize,
}

impl Default for EngineLimits {
    fn default() -> Self {
        EngineLimits {
            decision_records_max: 16_000_000,
            holds_pending_max: 1_000_000,
        }
    }
}
