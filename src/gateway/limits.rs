//! The limits the gateway itself enforces, each with its unit. They are
//! read from the service's configuration (`server::config::ServiceLimits`, where
//! each is documented with its range and default and checked), so the
//! gateway depends on no file format.

use std::time::Duration;

/// What the decider bounds: its queue, its deadline, its awaits, what it
/// keeps in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeciderLimits {
    /// Streams accepted and not yet done: past it, `overloaded`.
    pub queue_requests_max: usize,
    /// How long a request may wait for the lock before `deadline`.
    pub request_deadline: Duration,
    /// The longest `timeout_ms` an `await` may ask for.
    pub await_timeout_ms_max: u64,
    /// `await`s waiting at once; more are answered `overloaded`.
    pub awaits_max: usize,
    /// Alerts kept for the operator surface; the oldest go first.
    pub alerts_kept_max: usize,
    /// Bytes of entity states kept in memory in front of the store.
    pub cache_bytes_max: usize,
}
