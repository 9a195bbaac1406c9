//! The supervisor's own model of the worker and every job, built only from
//! what it observed (the config and the event stream), and the status
//! computed from it.
//!
//! Nothing here is assumed: the state is `ok` only when the worker has said
//! hello, its heartbeat and its last good loop turn are fresh, and no job is
//! late or failing. Every other state comes with a reason a person can read.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use cronwarden_shared::{
    config::Config,
    status::{
        JobState, JobStatus, Outcome, RunRecord, RunningInfo, SkipReason, State, StatusReport,
        Streaks, SupervisorInfo, Trigger, WorkerInfo,
    },
    timefmt::human_duration,
    wire::Event,
};
use jiff::Timestamp;
use tokio::time::Instant;

/// Heartbeat silence after which the status stops saying `ok`: two missed
/// beats, plus slack for a busy host.
pub fn overdue_after(interval: Duration) -> Duration {
    interval * 2 + Duration::from_millis(100)
}

/// The worker as observed.
#[derive(Debug, Default)]
pub struct WorkerObs {
    pub pid: Option<u32>,
    pub started_at: Option<Timestamp>,
    pub spawned: Option<Instant>,
    /// Workers started after the first.
    pub restarts: u64,
    pub hello: bool,
    pub last_heartbeat: Option<Instant>,
    pub seq: Option<u64>,
    /// When the last good turn happened, on our monotonic clock.
    pub last_good_turn: Option<Instant>,
    /// How the previous worker ended, for the status.
    pub last_exit: Option<String>,
    /// The previous worker was killed for stalling and its replacement has
    /// not said hello yet: the state stays `stalled` until it does.
    pub replacing_stalled: bool,
}

/// One job as observed.
#[derive(Debug, Clone)]
pub struct JobObs {
    pub schedule: String,
    pub timezone: String,
    pub next_fire_at: Option<Timestamp>,
    pub paused: bool,
    pub last_run: Option<RunRecord>,
    pub running: BTreeMap<u64, RunningInfo>,
    pub streaks: Streaks,
    pub late_after: Duration,
    pub alert_after_failures: u32,
    pub zero_output_alert_after: Option<u32>,
}

pub struct Model {
    pub config: Arc<Config>,
    pub supervisor: SupervisorInfo,
    pub worker: WorkerObs,
    pub jobs: BTreeMap<String, JobObs>,
    pub malformed_events: u64,
    pub max_run_id: u64,
    /// The last reload that was refused, until one succeeds.
    pub reload_error: Option<(Timestamp, String)>,
}

impl Model {
    pub fn new(config: Arc<Config>, supervisor: SupervisorInfo) -> Self {
        let mut m = Model {
            config: config.clone(),
            supervisor,
            worker: WorkerObs::default(),
            jobs: BTreeMap::new(),
            malformed_events: 0,
            max_run_id: 0,
            reload_error: None,
        };
        m.set_config(config);
        m
    }

    /// Adopts a (new) config: jobs no longer in it disappear from the model
    /// and the status at once; kept jobs keep what was observed of them.
    pub fn set_config(&mut self, config: Arc<Config>) {
        let mut old = std::mem::take(&mut self.jobs);
        for spec in &config.jobs {
            let mut obs = old.remove(&spec.name).unwrap_or(JobObs {
                schedule: String::new(),
                timezone: String::new(),
                next_fire_at: None,
                paused: false,
                last_run: None,
                running: BTreeMap::new(),
                streaks: Streaks::default(),
                late_after: spec.late_after,
                alert_after_failures: spec.alert_after_failures,
                zero_output_alert_after: spec.zero_output_alert_after,
            });
            if obs.schedule != spec.schedule.expr() || obs.timezone != spec.timezone {
                // Re-armed by the worker; until it says so, expect the
                // schedule's own next fire.
                obs.next_fire_at = spec.schedule.next_after(Timestamp::now(), None);
            }
            obs.schedule = spec.schedule.expr().to_string();
            obs.timezone = spec.timezone.clone();
            obs.late_after = spec.late_after;
            obs.alert_after_failures = spec.alert_after_failures;
            obs.zero_output_alert_after = spec.zero_output_alert_after;
            self.jobs.insert(spec.name.clone(), obs);
        }
        self.config = config;
    }

    pub fn store_path(&self) -> std::path::PathBuf {
        self.config
            .state_dir
            .join(cronwarden_shared::store::FILE_NAME)
    }

    pub fn worker_spawned(&mut self, pid: u32) {
        if self.worker.spawned.is_some() {
            self.worker.restarts += 1;
        }
        self.worker.pid = Some(pid);
        self.worker.started_at = Some(Timestamp::now());
        self.worker.spawned = Some(Instant::now());
        self.worker.hello = false;
        self.worker.last_heartbeat = None;
        self.worker.seq = None;
        self.worker.last_good_turn = None;
    }

    /// The worker is gone. Returns the process groups of runs that were in
    /// flight (to be killed); their runs are recorded `lost`.
    pub fn worker_gone(&mut self, how: String) -> Vec<u32> {
        self.worker.pid = None;
        self.worker.hello = false;
        self.worker.last_exit = Some(how.clone());
        let mut groups = vec![];
        let now = Timestamp::now();
        for (name, job) in &mut self.jobs {
            for (id, r) in std::mem::take(&mut job.running) {
                groups.push(r.pid);
                let rec = RunRecord {
                    id,
                    job: name.clone(),
                    scheduled_at: r.scheduled_at,
                    covers: r.scheduled_at.into_iter().collect(),
                    trigger: Trigger::Schedule,
                    started_at: Some(r.started_at),
                    finished_at: Some(now),
                    outcome: Outcome::Lost,
                    skip_reason: None,
                    exit_code: None,
                    signal: None,
                    duration_ms: Some(now.duration_since(r.started_at).as_millis().max(0) as u64),
                    stdout_bytes: 0,
                    stderr_bytes: 0,
                    error: Some(format!("the worker died while the run was in flight ({how}); its process group was killed")),
                    stdout_tail: String::new(),
                    stderr_tail: String::new(),
                };
                tracing::error!(job = %name, run = id, pid = r.pid, "run lost: worker died while it was running");
                job.streaks.failures += 1;
                job.last_run = Some(rec);
            }
        }
        groups
    }

    /// The process groups of every run in flight.
    pub fn running_groups(&self) -> Vec<u32> {
        self.jobs
            .values()
            .flat_map(|j| j.running.values().map(|r| r.pid))
            .collect()
    }

    pub fn apply(&mut self, ev: Event, now: Instant) {
        match ev {
            Event::Hello { pid, version, .. } => {
                if Some(pid) != self.worker.pid {
                    tracing::warn!(pid, expected = ?self.worker.pid, "hello from an unexpected pid");
                }
                tracing::info!(pid, version, "worker ready");
                self.worker.hello = true;
                self.worker.replacing_stalled = false;
                self.worker.last_heartbeat = Some(now);
            }
            Event::Heartbeat {
                seq,
                at,
                last_good_turn_at,
                ..
            } => {
                self.worker.last_heartbeat = Some(now);
                self.worker.seq = Some(seq);
                // Convert the worker's wall-clock age to our monotonic clock.
                self.worker.last_good_turn = last_good_turn_at.map(|g| {
                    let age = at.duration_since(g);
                    now.checked_sub(Duration::try_from(age).unwrap_or_default())
                        .unwrap_or(now)
                });
            }
            Event::Schedule { jobs } => {
                for a in jobs {
                    if let Some(j) = self.jobs.get_mut(&a.job) {
                        j.next_fire_at = a.next_fire_at;
                        j.paused = a.paused;
                    }
                }
            }
            Event::Fire {
                job,
                run_id,
                scheduled_at,
                pid,
                started_at,
                next_fire_at,
                ..
            } => {
                self.max_run_id = self.max_run_id.max(run_id);
                if let Some(j) = self.jobs.get_mut(&job) {
                    j.running.insert(
                        run_id,
                        RunningInfo {
                            run_id,
                            pid,
                            started_at,
                            scheduled_at,
                        },
                    );
                    if scheduled_at.is_some() {
                        j.next_fire_at = next_fire_at;
                    }
                    j.streaks.overlap_skips = 0;
                }
            }
            Event::Skip {
                job,
                run_id,
                reason,
                next_fire_at,
                ..
            } => {
                self.max_run_id = self.max_run_id.max(run_id);
                if let Some(j) = self.jobs.get_mut(&job) {
                    j.next_fire_at = next_fire_at;
                    if reason == SkipReason::Overlap {
                        j.streaks.overlap_skips += 1;
                    }
                }
            }
            Event::Finish { run } => {
                self.max_run_id = self.max_run_id.max(run.id);
                if let Some(j) = self.jobs.get_mut(&run.job) {
                    j.running.remove(&run.id);
                    if j.last_run
                        .as_ref()
                        .is_some_and(|l| l.id == run.id && l.outcome == run.outcome)
                    {
                        // Already counted (a lost run we recorded ourselves,
                        // reported again by the next worker's recovery).
                        return;
                    }
                    if run.outcome.is_failure() {
                        j.streaks.failures += 1;
                    } else {
                        j.streaks.failures = 0;
                    }
                    if run.stdout_bytes == 0 && run.stderr_bytes == 0 {
                        j.streaks.zero_output += 1;
                    } else {
                        j.streaks.zero_output = 0;
                    }
                    j.last_run = Some(run);
                }
            }
            Event::CommandFailed { command, error } => {
                tracing::warn!(command, "worker refused a command: {error}");
            }
            // Answered by the supervisor's control path before the model.
            Event::Reply { .. } => {}
        }
    }

    /// The status, computed now from what was observed.
    pub fn status(&self, now: Instant, now_wall: Timestamp) -> StatusReport {
        let stall_after = self.config.watchdog.stall_after;
        let mut state = State::Ok;
        let mut reasons = vec![];
        let mut worse = |s: State, reason: String, state: &mut State| {
            *state = (*state).max(s);
            reasons.push(reason);
        };
        let w = &self.worker;
        let hb_age = w.last_heartbeat.map(|t| now.saturating_duration_since(t));
        let good_age = w.last_good_turn.map(|t| now.saturating_duration_since(t));
        let not_up = if w.replacing_stalled {
            State::Stalled
        } else {
            State::Down
        };
        match (w.pid, w.hello) {
            (None, _) => worse(
                not_up,
                format!(
                    "no worker is running{}",
                    w.last_exit
                        .as_deref()
                        .map(|e| format!(" (last one {e}); restarting"))
                        .unwrap_or_default()
                ),
                &mut state,
            ),
            (Some(pid), false) => worse(
                State::Down,
                format!("worker {pid} is starting and has not said hello yet"),
                &mut state,
            ),
            (Some(pid), true) => {
                let age = hb_age.unwrap_or_default();
                if age > stall_after {
                    worse(
                        State::Stalled,
                        format!(
                            "worker {pid} sent no heartbeat for {} (stall_after {})",
                            human_duration(age),
                            human_duration(stall_after)
                        ),
                        &mut state,
                    );
                } else if age > overdue_after(self.config.watchdog.heartbeat_interval) {
                    // Not yet stalled, but heartbeats are missing: say so
                    // before stall_after rather than claim all is well.
                    worse(
                        State::Degraded,
                        format!(
                            "worker {pid} heartbeat overdue: none for {} (expected every {}; replaced after {})",
                            human_duration(age),
                            human_duration(self.config.watchdog.heartbeat_interval),
                            human_duration(stall_after)
                        ),
                        &mut state,
                    );
                } else {
                    match good_age {
                        Some(g) if g <= stall_after => {}
                        Some(g) => worse(
                            State::Degraded,
                            format!("worker {pid} is alive but its loop has not completed a turn without error for {}", human_duration(g)),
                            &mut state,
                        ),
                        None if w.seq.is_some() => worse(
                            State::Degraded,
                            format!("worker {pid} is alive but none of its loop turns has completed without error"),
                            &mut state,
                        ),
                        None => {}
                    }
                }
            }
        }
        if let Some((at, err)) = &self.reload_error {
            let first = err.lines().next().unwrap_or_default();
            worse(
                State::Degraded,
                format!("config reload at {at} was refused; the previous config stays in force: {first}"),
                &mut state,
            );
        }
        let worker_up = w.pid.is_some() && w.hello;
        let mut jobs = vec![];
        for (name, j) in &self.jobs {
            let mut job_state = if j.paused {
                JobState::Paused
            } else if !j.running.is_empty() {
                JobState::Running
            } else {
                JobState::Idle
            };
            if let Some(due) = j.next_fire_at {
                let late_by = now_wall.duration_since(due);
                let late_after = jiff::SignedDuration::try_from(j.late_after)
                    .unwrap_or(jiff::SignedDuration::MAX);
                if worker_up && !j.paused && late_by > late_after {
                    job_state = JobState::Late;
                    worse(
                        State::Degraded,
                        format!(
                            "job {name} is late: due at {due}, not fired for {}",
                            human_duration(Duration::try_from(late_by).unwrap_or_default())
                        ),
                        &mut state,
                    );
                }
            }
            if j.streaks.failures >= j.alert_after_failures && job_state != JobState::Late {
                let last = j.last_run.as_ref();
                let what = last
                    .map(|r| match (r.exit_code, r.signal, &r.error) {
                        (_, _, Some(e)) => e.clone(),
                        (Some(c), _, _) => format!("exit code {c}"),
                        (_, Some(s), _) => format!("signal {s}"),
                        _ => r.outcome.as_str().to_string(),
                    })
                    .unwrap_or_default();
                if !j.paused && j.running.is_empty() {
                    job_state = JobState::Failing;
                }
                worse(
                    State::Degraded,
                    format!(
                        "job {name} failed {} time(s) in a row (last: {what})",
                        j.streaks.failures
                    ),
                    &mut state,
                );
            }
            if let Some(n) = j.zero_output_alert_after {
                if j.streaks.zero_output >= n {
                    if job_state == JobState::Idle {
                        job_state = JobState::Failing;
                    }
                    worse(
                        State::Degraded,
                        format!(
                            "job {name} produced no output in {} consecutive runs",
                            j.streaks.zero_output
                        ),
                        &mut state,
                    );
                }
            }
            jobs.push(JobStatus {
                name: name.clone(),
                schedule: j.schedule.clone(),
                timezone: j.timezone.clone(),
                state: job_state,
                paused: j.paused,
                next_fire_at: j.next_fire_at,
                last_run: j.last_run.clone(),
                streaks: j.streaks.clone(),
                running: j.running.values().cloned().collect(),
            });
        }
        StatusReport {
            state,
            reasons,
            supervisor: self.supervisor.clone(),
            worker: WorkerInfo {
                pid: w.pid,
                started_at: w.started_at,
                restarts: w.restarts,
                heartbeat_age_ms: hb_age.map(|d| d.as_millis() as u64),
                last_good_turn_age_ms: good_age.map(|d| d.as_millis() as u64),
                heartbeat_seq: w.seq,
                malformed_events: self.malformed_events,
            },
            jobs,
            alerts: vec![],
        }
    }
}
