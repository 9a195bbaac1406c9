//! The counters and histograms behind `/metrics`, as plain data: the model
//! records into them as it applies events, and `metrics` only renders them.
//! Keeping them here (not in `metrics`) is what lets `metrics` read the
//! model without the model depending on `metrics`.
//!
//! Per-job series exist only for configured jobs ([`Counters::set_jobs`]),
//! so their cardinality is bounded by the config.

use std::{collections::BTreeMap, sync::Arc};

use cronwarden_shared::{
    config::Config,
    stats::{Histogram, WorkerStats},
    status::{Outcome, RunRecord, SkipReason, Trigger},
};
use jiff::Timestamp;
use tokio::time::Instant;

/// Delay from a fire's scheduled instant to its start: sub-millisecond when
/// healthy, seconds when the host or the worker is struggling.
pub(crate) const FIRE_DELAY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];
/// Run durations, from a quick check to a six-hour batch.
pub(crate) const RUN_DURATION_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0,
];

pub(crate) const RUN_OUTCOMES: &[Outcome] = &[
    Outcome::Success,
    Outcome::Failed,
    Outcome::Timeout,
    Outcome::Killed,
    Outcome::Lost,
];
pub(crate) const SKIP_REASONS: &[SkipReason] = &[
    SkipReason::Overlap,
    SkipReason::Misfire,
    SkipReason::Paused,
    SkipReason::WorkerDown,
    SkipReason::Removed,
    SkipReason::StoreUnavailable,
    SkipReason::Peer,
    SkipReason::DefinitionDiffers,
];

/// The reason's word in metrics and pages: the JSON's ([`SkipReason::as_str`]).
pub(crate) fn reason_str(r: SkipReason) -> &'static str {
    r.as_str()
}

#[derive(Debug, Default, Clone)]
pub(crate) struct JobCounters {
    pub(crate) runs: BTreeMap<&'static str, u64>,
    pub(crate) skips: BTreeMap<&'static str, u64>,
    pub(crate) last_success: Option<Timestamp>,
    /// When the newest run of each outcome finished.
    pub(crate) last_finish: BTreeMap<&'static str, Timestamp>,
    pub(crate) duration: Histogram,
    /// CPU time of finished runs that had a cgroup, µs.
    pub(crate) cpu_usec: u64,
}

/// What the supervisor counts as events arrive.
#[derive(Debug, Clone)]
pub struct Counters {
    pub(crate) started: Instant,
    /// Shared with the published snapshots (which clone the counters at
    /// every evaluation) and copied only when a job's series changes while
    /// one holds it: idle jobs' series are kept once (issue 18).
    pub(crate) jobs: Arc<BTreeMap<String, JobCounters>>,
    pub(crate) fire_delay: Histogram,
    /// The last heartbeat from any worker (not reset by a restart, so the
    /// age keeps growing while no worker beats).
    pub(crate) last_heartbeat: Option<Instant>,
    /// Figures of workers that have been replaced, and of the current one.
    pub(crate) past_workers: WorkerStats,
    pub(crate) current_worker: WorkerStats,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            started: Instant::now(),
            jobs: Arc::default(),
            fire_delay: Histogram::new(FIRE_DELAY_BUCKETS),
            last_heartbeat: None,
            past_workers: WorkerStats::default(),
            current_worker: WorkerStats::default(),
        }
    }
}

impl Counters {
    /// Keeps the series of configured jobs only.
    pub fn set_jobs(&mut self, config: &Config) {
        let mut old = std::mem::take(Arc::make_mut(&mut self.jobs));
        // Collected: full nodes (inserting in name order leaves them half
        // empty), and no look-up of each kept name in the config's list.
        self.jobs = Arc::new(
            config
                .jobs
                .iter()
                .map(|j| (j.name.clone(), old.remove(&j.name).unwrap_or_default()))
                .collect(),
        );
    }

    fn job(&mut self, name: &str) -> Option<&mut JobCounters> {
        // A name not configured must not cost a copy of the map.
        if !self.jobs.contains_key(name) {
            return None;
        }
        Arc::make_mut(&mut self.jobs).get_mut(name)
    }

    /// The last success, and the last finish of each outcome, found in a
    /// job's stored history (newest first).
    pub fn seed(&mut self, job: &str, newest_first: &[RunRecord]) {
        let last = newest_first
            .iter()
            .find(|r| r.outcome == Outcome::Success)
            .and_then(|r| r.finished_at);
        let Some(j) = self.job(job) else { return };
        j.last_success = j.last_success.max(last);
        for o in RUN_OUTCOMES {
            let newest = newest_first
                .iter()
                .find(|r| r.outcome == *o)
                .and_then(|r| r.finished_at);
            if let Some(at) = newest {
                let e = j.last_finish.entry(o.as_str()).or_insert(at);
                *e = (*e).max(at);
            }
        }
    }

    pub fn fired(
        &mut self,
        trigger: Trigger,
        scheduled_at: Option<Timestamp>,
        started_at: Timestamp,
    ) {
        // Catch-up runs are late by design and manual ones have no
        // schedule: only on-time fires measure the scheduler.
        if let (Trigger::Schedule, Some(s)) = (trigger, scheduled_at) {
            let delay = started_at.duration_since(s).as_secs_f64().max(0.0);
            self.fire_delay.observe(FIRE_DELAY_BUCKETS, delay);
        }
    }

    pub fn skipped(&mut self, job: &str, reason: SkipReason) {
        if let Some(j) = self.job(job) {
            *j.skips.entry(reason_str(reason)).or_default() += 1;
        }
    }

    /// A run ended (counted once: the model calls this after its own
    /// de-duplication of lost runs).
    pub fn finished(&mut self, run: &RunRecord) {
        let Some(j) = self.job(&run.job) else { return };
        *j.runs.entry(run.outcome.as_str()).or_default() += 1;
        if run.outcome == Outcome::Success {
            j.last_success = j.last_success.max(run.finished_at);
        }
        if let Some(at) = run.finished_at {
            let e = j.last_finish.entry(run.outcome.as_str()).or_insert(at);
            *e = (*e).max(at);
        }
        if let Some(ms) = run.duration_ms {
            j.duration.observe(RUN_DURATION_BUCKETS, ms as f64 / 1000.0);
        }
        j.cpu_usec += run.contain.cpu_usec.unwrap_or(0);
    }

    pub fn heartbeat(&mut self, now: Instant, stats: Option<&WorkerStats>) {
        self.last_heartbeat = Some(now);
        if let Some(s) = stats {
            self.current_worker = s.clone();
        }
    }

    /// A new worker starts from zero: carry the previous one's figures.
    pub fn worker_replaced(&mut self) {
        let w = std::mem::take(&mut self.current_worker);
        self.past_workers
            .store_write_seconds
            .add(&w.store_write_seconds);
        self.past_workers.log_lines_dropped += w.log_lines_dropped;
    }
}
