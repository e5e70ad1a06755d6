//! The service's clock: an interface, so that tests drive it, and the
//! monotonic clock. The only module that reads either (`clippy.toml`).
//!
//! The engine takes time as a parameter; the runtime asks a [`Clock`] once
//! per request, on the engine thread, just before deciding it. With a
//! [`ManualClock`] a test sets the time of each event it sends, and a
//! recorded multi-day trace sent over QUIC is decided exactly as replay
//! decides it.

use crate::contract::Timestamp;
use std::sync::Mutex;
use std::time::Instant;

/// The monotonic clock, for deadlines, timeouts and elapsed times: the one
/// read of it outside the load generator (`clippy.toml`), so a search for
/// who reads the time finds this module.
#[allow(clippy::disallowed_methods)]
pub fn monotonic() -> Instant {
    Instant::now()
}

pub trait Clock: Send + Sync + 'static {
    /// The time to decide the next event at. The service never lets time
    /// go backwards, whatever this returns.
    fn now(&self) -> Timestamp;
}

/// The host's clock (UTC, from `SystemTime`).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> Timestamp {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        // A host clock before 1970 or after 9999 reads as the nearest end.
        i64::try_from(since.as_secs())
            .ok()
            .and_then(|s| Timestamp::from_unix(s, since.subsec_nanos()))
            .unwrap_or(Timestamp::MAX)
    }
}

/// A clock a test sets.
#[derive(Debug)]
pub struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    pub fn new(at: Timestamp) -> ManualClock {
        ManualClock(Mutex::new(at))
    }

    pub fn set(&self, at: Timestamp) {
        // A poisoned lock still holds a valid time: a Timestamp is Copy.
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
