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
/// Every configured job's series, in name order. Shared with the
/// published snapshots, which clone the counters at every evaluation: the
/// list (a pointer per job) is copied only when a series changes while a
/// snapshot holds it, and of the series only the one that changed (issue
/// 18: one map of every job's series, copied whole at a finish after each
/// evaluation, was most of the supervisor's cost per fire with thousands
/// of jobs).
#[derive(Debug, Default, Clone)]
pub(crate) struct JobSeries {
    names: Arc<[String]>,
    series: Arc<Vec<Arc<JobCounters>>>,
}

impl JobSeries {
    /// Each job's name and series, in name order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&String, &JobCounters)> {
        self.names.iter().zip(self.series.iter().map(|s| &**s))
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &String> {
        self.names.iter()
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.names.binary_search_by(|n| n.as_str().cmp(name)).ok()
    }

    /// A job's series to change (none for a name not configured, which
    /// must not cost a copy of the list).
    fn get_mut(&mut self, name: &str) -> Option<&mut JobCounters> {
        let i = self.find(name)?;
        Some(Arc::make_mut(&mut Arc::make_mut(&mut self.series)[i]))
    }

    /// A series for `name` (tests: a job the config did not list).
    #[cfg(test)]
    pub(crate) fn insert_for_test(&mut self, name: &str) {
        if self.find(name).is_none() {
            let mut names: Vec<String> = self.names.to_vec();
            let mut series: Vec<Arc<JobCounters>> = self.series.to_vec();
            let at = names.partition_point(|n| n.as_str() < name);
            names.insert(at, name.to_string());
            series.insert(at, Arc::default());
            (self.names, self.series) = (names.into(), Arc::new(series));
        }
    }
}

#[derive(Debug, Clone)]
pub struct Counters {
    pub(crate) started: Instant,
    pub(crate) jobs: JobSeries,
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
            jobs: JobSeries::default(),
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
        let old = std::mem::take(&mut self.jobs);
        let mut names: Vec<&String> = config.jobs.iter().map(|j| &j.name).collect();
        names.sort_unstable();
        names.dedup();
        let series = names
            .iter()
            .map(|n| {
                old.find(n)
                    .map_or_else(Arc::default, |i| old.series[i].clone())
            })
            .collect();
        self.jobs = JobSeries {
            names: names.into_iter().cloned().collect(),
            series: Arc::new(series),
        };
    }

    fn job(&mut self, name: &str) -> Option<&mut JobCounters> {
        self.jobs.get_mut(name)
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(jobs: &[&str]) -> Config {
        let text: String = jobs
            .iter()
            .map(|j| {
                format!("[[job]]\nname = {j:?}\nschedule = \"@hourly\"\ncommand = [\"true\"]\n")
            })
            .collect();
        Config::parse(Path::new("/x/cronwarden.toml"), &text).unwrap()
    }

    fn success(id: u64, job: &str) -> RunRecord {
        RunRecord::new(id, job, vec![], Trigger::Manual, Outcome::Success)
    }

    fn runs(c: &Counters, job: &str) -> u64 {
        let (_, j) = c.jobs.iter().find(|(n, _)| *n == job).unwrap();
        j.runs.get("success").copied().unwrap_or(0)
    }

    /// A snapshot's copy keeps what it saw; a finish copies the one series
    /// it changes and shares the others'; a reload keeps the series of the
    /// jobs it keeps, in name order, and drops the others'.
    #[test]
    fn a_finish_copies_only_its_own_series_and_a_reload_keeps_the_kept_jobs() {
        let mut c = Counters::default();
        c.set_jobs(&config(&["b", "a", "c"]));
        c.finished(&success(1, "a"));
        let snapshot = c.clone();
        c.finished(&success(2, "a"));
        c.finished(&success(3, "nobody"));
        assert_eq!((runs(&snapshot, "a"), runs(&c, "a")), (1, 2));
        let shared = |name: &str| {
            let i = c.jobs.find(name).unwrap();
            Arc::ptr_eq(&c.jobs.series[i], &snapshot.jobs.series[i])
        };
        assert!(!shared("a") && shared("b") && shared("c"));

        c.set_jobs(&config(&["c", "a", "d"]));
        let names: Vec<&String> = c.jobs.keys().collect();
        assert_eq!(names, ["a", "c", "d"]);
        assert_eq!((runs(&c, "a"), runs(&c, "d")), (2, 0));
        c.set_jobs(&config(&["b"]));
        c.set_jobs(&config(&["a", "b"]));
        assert_eq!(runs(&c, "a"), 0, "a job removed and added back starts anew");
    }
}
