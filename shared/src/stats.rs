//! Numbers the worker measures and the supervisor exposes as metrics.
//!
//! The worker writes the store, so only it can time a store write; it sends
//! its cumulative figures (since the worker started) with every heartbeat.
//! Cumulative rather than deltas: a lost or malformed heartbeat line then
//! loses nothing, and the supervisor only has to carry the figures of
//! previous workers forward when one is replaced.
//!
//! Both processes count the log lines their non-blocking log writer had to
//! drop; [`set_log_drop_source`] is how the binary's logging setup tells
//! the libraries where that counter is.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// Upper bounds (seconds) of the store write latency histogram: an SQLite
/// commit on a healthy disk takes well under a millisecond to a few ms; the
/// long tail is what matters (fsync on a busy or failing disk).
pub const STORE_WRITE_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram over fixed bounds: `counts[i]` is the number of observations
/// in bucket `i` (not cumulative), with one extra last bucket for +Inf.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Histogram {
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn new(bounds: &[f64]) -> Histogram {
        Histogram {
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, bounds: &[f64], value: f64) {
        if self.counts.len() != bounds.len() + 1 {
            *self = Histogram::new(bounds);
        }
        let i = bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(bounds.len());
        self.counts[i] += 1;
        self.sum += value;
        self.count += 1;
    }

    /// Adds `other` into `self`; a histogram of other bounds (a mismatched
    /// length) is ignored rather than mixed in.
    pub fn add(&mut self, other: &Histogram) {
        if other.counts.is_empty() {
            return;
        }
        if self.counts.is_empty() {
            *self = other.clone();
            return;
        }
        if self.counts.len() != other.counts.len() {
            return;
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum += other.sum;
        self.count += other.count;
    }
}

/// What a heartbeat carries for the metrics (cumulative since the worker started).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct WorkerStats {
    /// Latency of each store write transaction (the journal of one loop turn).
    #[serde(default)]
    pub store_write_seconds: Histogram,
    /// Log lines the worker's log file writer dropped because it fell behind.
    #[serde(default)]
    pub log_lines_dropped: u64,
    /// Run records (starts, finishes, skips) the worker's write journal
    /// dropped because the store failed longer than its bound allows: each
    /// is a fire or a run with no record. Never a claim (claims coalesce
    /// per job and are always kept). Any value above zero is a loss the
    /// supervisor should alert on (critical).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub records_dropped: u64,
    /// Store writes held in memory for retry right now (0 while the store
    /// commits): while above zero, claims and records are not durable.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub writes_held: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

type DropSource = Box<dyn Fn() -> u64 + Send + Sync>;
static LOG_DROPS: OnceLock<DropSource> = OnceLock::new();

/// Registers how to read this process's count of dropped log lines (once;
/// later calls are ignored).
pub fn set_log_drop_source(f: impl Fn() -> u64 + Send + Sync + 'static) {
    let _ = LOG_DROPS.set(Box::new(f));
}

/// Log lines this process dropped (0 when logs go only to stderr, which
/// blocks rather than drops).
pub fn log_lines_dropped() -> u64 {
    LOG_DROPS.get().map_or(0, |f| f())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let b = [0.1, 1.0];
        let mut h = Histogram::new(&b);
        for v in [0.05, 0.1, 0.5, 3.0] {
            h.observe(&b, v);
        }
        assert_eq!(h.counts, vec![2, 1, 1]);
        assert_eq!(h.count, 4);
        assert!((h.sum - 3.65).abs() < 1e-9);
        let mut total = Histogram::default();
        total.add(&h);
        total.add(&h);
        assert_eq!(total.counts, vec![4, 2, 2]);
        total.add(&Histogram::new(&[1.0]));
        assert_eq!(total.count, 8, "other bounds are not mixed in");
    }

    #[test]
    fn old_heartbeats_without_stats_and_partial_stats_decode() {
        let s: WorkerStats = serde_json::from_str("{}").unwrap();
        assert_eq!(s, WorkerStats::default());
    }
}
