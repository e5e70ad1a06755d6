//! The search for a server's peak rate (`loadgen --find-peak`), sans-IO:
//! [`PeakSearch`] names the next rate to try and learns whether it
//! passed, and the caller runs the load. Tested without a socket.
//!
//! The peak is the highest offered rate at which the server keeps up:
//! accepted answers at least [`KEEP_UP_SHARE`] of the offered rate, and
//! their p99 latency at most [`P99_US_MAX`]. The search is coarse, then
//! binary: from the start rate it doubles while runs pass (up to the upper
//! bound), or halves while they fail, until one rate passes and a higher
//! one fails; then it bisects that bracket until its ends are within
//! [`PRECISION`] of each other. It stops after at most its budget of runs,
//! whatever it has found.

use crate::loadgen::run::Report;

/// The share of the offered rate a server must achieve to keep up.
pub const KEEP_UP_SHARE: f64 = 0.99;

/// The most p99 latency, in microseconds, a server may show and keep up.
pub const P99_US_MAX: u64 = 10_000;

/// The search stops when the bracket's ends are this close (relative).
pub const PRECISION: f64 = 0.05;

/// Runs a search may make: it is bounded, whatever the server does.
pub const RUNS_MAX: usize = 12;

/// The lowest rate worth trying, requests per second.
const RATE_MIN: f64 = 1.0;

/// Whether a run kept up with what it was offered.
pub fn keeps_up(r: &Report) -> bool {
    r.achieved_rate >= KEEP_UP_SHARE * r.offered_rate && r.p99().is_some_and(|p| p <= P99_US_MAX)
}

/// The state of one peak search.
#[derive(Debug, Clone, PartialEq)]
pub struct PeakSearch {
    start: f64,
    max: f64,
    budget: usize,
    runs: usize,
    /// The highest rate that passed.
    pass: Option<f64>,
    /// The lowest rate that failed.
    fail: Option<f64>,
}

impl PeakSearch {
    /// A search from `start` up to at most `max` (both clamped to at least
    /// 1 request per second), in at most `budget` runs.
    pub fn new(start: f64, max: f64, budget: usize) -> PeakSearch {
        let max = max.max(RATE_MIN);
        PeakSearch {
            start: start.clamp(RATE_MIN, max).round(),
            max: max.round(),
            budget,
            runs: 0,
            pass: None,
            fail: None,
        }
    }

    /// The next rate to run, or `None` when the search is over.
    pub fn next_rate(&self) -> Option<f64> {
        if self.runs >= self.budget {
            return None;
        }
        let next = match (self.pass, self.fail) {
            (None, None) => self.start,
            // Coarse, upwards: everything so far passed.
            (Some(pass), None) if pass >= self.max => return None,
            (Some(pass), None) => (pass * 2.0).min(self.max),
            // Coarse, downwards: nothing has passed yet.
            (None, Some(fail)) if fail <= RATE_MIN => return None,
            (None, Some(fail)) => (fail / 2.0).max(RATE_MIN),
            // Binary, inside the bracket.
            (Some(pass), Some(fail)) => {
                if fail <= pass * (1.0 + PRECISION) {
                    return None;
                }
                (pass + fail) / 2.0
            }
        };
        let next = next.round();
        let tried = |r: Option<f64>| r == Some(next);
        (!tried(self.pass) && !tried(self.fail)).then_some(next)
    }

    /// Learns whether `rate` kept up.
    pub fn record(&mut self, rate: f64, passed: bool) {
        self.runs += 1;
        if passed {
            self.pass = Some(self.pass.map_or(rate, |p| p.max(rate)));
        } else {
            self.fail = Some(self.fail.map_or(rate, |f| f.min(rate)));
        }
    }

    /// The peak found so far: the highest rate that kept up.
    pub fn peak(&self) -> Option<f64> {
        self.pass
    }

    /// Runs made.
    pub fn runs(&self) -> usize {
        self.runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a search against a server that keeps up to `capacity`.
    fn search(start: f64, max: f64, capacity: f64) -> PeakSearch {
        let mut s = PeakSearch::new(start, max, RUNS_MAX);
        while let Some(rate) = s.next_rate() {
            s.record(rate, rate <= capacity);
        }
        s
    }

    #[test]
    fn the_peak_is_found_within_the_precision_and_budget() {
        for capacity in [1500.0, 7_777.0, 33_000.0, 150_000.0] {
            let s = search(1000.0, 200_000.0, capacity);
            let peak = s.peak().unwrap();
            assert!(peak <= capacity, "{capacity}: {peak}");
            assert!(
                peak >= capacity * (1.0 - 2.0 * PRECISION),
                "{capacity}: {peak}"
            );
            assert!(s.runs() <= RUNS_MAX);
        }
    }

    #[test]
    fn a_start_too_high_searches_down() {
        let s = search(100_000.0, 200_000.0, 3000.0);
        let peak = s.peak().unwrap();
        assert!((2800.0..=3000.0).contains(&peak), "{peak}");
        assert!(s.runs() <= RUNS_MAX);
    }

    #[test]
    fn the_upper_bound_ends_the_search() {
        let s = search(1000.0, 10_000.0, f64::INFINITY);
        assert_eq!(s.peak(), Some(10_000.0));
        assert_eq!(s.runs(), 5); // 1000, 2000, 4000, 8000, 10000
    }

    #[test]
    fn a_server_that_never_keeps_up_has_no_peak() {
        let s = search(1000.0, 200_000.0, 0.0);
        assert_eq!(s.peak(), None);
        assert!(s.runs() <= RUNS_MAX);
    }
}
