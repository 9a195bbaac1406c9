//! The supervisor's own model of the worker and every job, built only from
//! what it observed (the config and the event stream), the conditions it
//! finds in it, and the status computed from them.
//!
//! Nothing here is assumed: the state is `ok` only when the worker has said
//! hello, its heartbeat and its last good loop turn are fresh, and no job is
//! late, failing or wedged. Each job's next expected fire is computed here
//! from the config (through the same `shared` schedule code), not taken
//! from the worker, so a worker that silently stops firing one job is caught
//! by `job_late`, and one that arms a job for the wrong time by the armed
//! cross-check, before the fire is even due.
//!
//! [`counters`] holds what `/metrics` counts, recorded as events are applied.

pub mod counters;

use cronwarden_shared::alert_kind::AlertKind;
use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use cronwarden_shared::{
    config::{Config, JobSpec},
    status::{
        JobState, JobStatus, Outcome, RunRecord, RunningInfo, Severity, SkipReason, State,
        StatusReport, Streaks, SupervisorInfo, Trigger, WorkerInfo,
    },
    timefmt::human_duration,
    wire::{ArmedDigest, Event},
};
use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use tokio::time::Instant;

use crate::{
    alerts::{AlertBook, Condition},
    forensics,
};

/// Heartbeat silence after which the status stops saying `ok`: two missed
/// beats, plus slack for a busy host.
pub fn overdue_after(interval: Duration) -> Duration {
    interval * 2 + Duration::from_millis(100)
}

/// A crash loop: this many worker exits within [`CRASH_WINDOW`].
pub const CRASH_LOOP_EXITS: usize = 5;
pub const CRASH_WINDOW: Duration = Duration::from_secs(60);
/// How long a restart stays reported as news.
const RESTART_NEWS: Duration = Duration::from_secs(60);
/// A worker up this long ends a crash loop.
pub const CRASH_SETTLED: Duration = Duration::from_secs(15);
/// At most this many runs are looked at in /proc per tick (near their
/// timeout) or per worker death (in flight): each look reads /proc, and the
/// supervisor's loop must stay short when a thousand runs time out at once.
const LOOKS_PER_EVENT: usize = 16;
/// How long the worker's armed time may disagree with ours before it is a
/// condition (the two legitimately differ for an instant around a fire).
const MISARMED_AFTER: Duration = Duration::from_secs(3);

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
    /// A worker was killed for stalling and no worker has proven progress
    /// since: the state stays `stalled` (and `worker_stalled` open) until
    /// the replacement's first heartbeat after its hello. A hello only
    /// says the process started; the heartbeat says its loop turned.
    pub replacing_stalled: bool,
    /// The pid declared stalled: its own late lines prove nothing.
    pub stalled_pid: Option<u32>,
    /// When recent workers exited, for crash-loop detection.
    pub exits: VecDeque<Instant>,
    pub store_error: Option<String>,
    /// The worker's armed digest (last heartbeat), and since when it has
    /// disagreed with ours.
    pub armed: Option<ArmedDigest>,
    pub armed_mismatch_since: Option<Instant>,
    /// Whether the worker was asked for its full schedule in this episode.
    pub armed_report_requested: bool,
}

/// One job as observed.
#[derive(Debug, Clone)]
pub struct JobObs {
    pub spec: JobSpec,
    /// What the worker says it armed.
    pub next_fire_at: Option<Timestamp>,
    /// What we expect, from the schedule and the fires seen.
    pub expected_next: Option<Timestamp>,
    /// Since when the worker's armed time has disagreed with ours.
    pub misarmed_since: Option<Instant>,
    pub paused: bool,
    pub last_run: Option<RunRecord>,
    pub running: BTreeMap<u64, RunningInfo>,
    pub streaks: Streaks,
    /// Runs the supervisor itself killed for outliving their timeout.
    pub enforced: Vec<u64>,
    /// What runs near or past their timeout were last seen doing, by run.
    pub snapshots: BTreeMap<u64, forensics::Snapshot>,
    /// The snapshot of the last run that timed out or was lost, for its alert.
    pub last_forensics: Option<forensics::Snapshot>,
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
    pub alerts: AlertBook,
    /// Alert sinks' health, refreshed by the supervisor's loop.
    pub sinks: Vec<cronwarden_shared::status::SinkHealth>,
    /// The last clock jumps the worker reported.
    pub clock_jumps: VecDeque<cronwarden_shared::status::ClockJump>,
    /// Counters and histograms for `/metrics`.
    pub counters: counters::Counters,
    /// Runs started and ended since the supervisor last drained this (for pings).
    pub run_events: Vec<crate::pings::RunEvent>,
}

impl Model {
    pub fn new(config: Arc<Config>, supervisor: SupervisorInfo, alerts: AlertBook) -> Self {
        let mut m = Model {
            config: config.clone(),
            supervisor,
            worker: WorkerObs::default(),
            jobs: BTreeMap::new(),
            malformed_events: 0,
            max_run_id: 0,
            reload_error: None,
            alerts,
            sinks: vec![],
            clock_jumps: VecDeque::new(),
            counters: Default::default(),
            run_events: vec![],
        };
        m.set_config(config);
        m
    }

    pub fn store_path(&self) -> std::path::PathBuf {
        self.config
            .state_dir
            .join(cronwarden_shared::store::FILE_NAME)
    }

    /// Adopts a (new) config: jobs no longer in it disappear from the model
    /// and the status at once; kept jobs keep what was observed of them.
    pub fn set_config(&mut self, config: Arc<Config>) {
        let now = Timestamp::now();
        let mut old = std::mem::take(&mut self.jobs);
        for spec in &config.jobs {
            let obs = match old.remove(&spec.name) {
                Some(mut o) => {
                    let changed = o.spec.schedule.expr() != spec.schedule.expr()
                        || o.spec.timezone != spec.timezone;
                    if changed {
                        o.expected_next = initial_expectation(spec, now);
                        o.misarmed_since = None;
                    }
                    o.spec = spec.clone();
                    o
                }
                None => JobObs {
                    spec: spec.clone(),
                    next_fire_at: None,
                    expected_next: initial_expectation(spec, now),
                    misarmed_since: None,
                    paused: false,
                    last_run: None,
                    running: BTreeMap::new(),
                    streaks: Streaks::default(),
                    enforced: vec![],
                    snapshots: BTreeMap::new(),
                    last_forensics: None,
                },
            };
            self.jobs.insert(spec.name.clone(), obs);
        }
        self.counters.set_jobs(&config);
        self.config = config;
    }

    pub fn worker_spawned(&mut self, pid: u32) {
        if self.worker.spawned.is_some() {
            self.worker.restarts += 1;
        }
        self.counters.worker_replaced();
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
    pub fn worker_gone(&mut self, how: String, counts_as_crash: bool) -> Vec<u32> {
        self.worker.pid = None;
        self.worker.hello = false;
        self.worker.last_exit = Some(how.clone());
        if counts_as_crash {
            let now = Instant::now();
            self.worker.exits.push_back(now);
            while self
                .worker
                .exits
                .front()
                .is_some_and(|t| now.duration_since(*t) > CRASH_WINDOW)
            {
                self.worker.exits.pop_front();
            }
        }
        let mut groups = vec![];
        let now = Timestamp::now();
        let mut looks = LOOKS_PER_EVENT;
        for (name, job) in &mut self.jobs {
            job.snapshots.clear();
            for (id, r) in std::mem::take(&mut job.running) {
                groups.push(r.pid);
                // Its processes are still there: they are killed after this.
                job.last_forensics = (looks > 0).then(|| {
                    looks -= 1;
                    forensics::Snapshot::take(&r, None, now)
                });
                let mut rec = RunRecord::new(
                    id,
                    name,
                    r.scheduled_at.into_iter().collect(),
                    Trigger::Schedule,
                    Outcome::Lost,
                );
                rec.started_at = Some(r.started_at);
                rec.finished_at = Some(now);
                rec.duration_ms = Some(now.duration_since(r.started_at).as_millis().max(0) as u64);
                rec.error = Some(format!(
                    "the worker died while the run was in flight ({how}); its process group was killed"
                ));
                tracing::error!(job = %name, run = id, pid = r.pid, "run lost: worker died while it was running");
                job.streaks.failures += 1;
                self.counters.finished(&rec);
                self.run_events
                    .push(crate::pings::RunEvent::Finished(Box::new(rec.clone())));
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

    /// Looks at every run from `lead` before its timeout until its kill
    /// grace is over, while its processes are still there: the
    /// `job_timeout` alert says what it was doing. A later look replaces an
    /// earlier one unless it finds no process left (the kill came first).
    pub fn snapshot_timeouts(&mut self, now: Timestamp, lead: Duration) {
        let worker = self.worker.pid;
        let mut looks = LOOKS_PER_EVENT;
        for j in self.jobs.values_mut() {
            let Some(timeout) = j.spec.timeout else {
                continue;
            };
            let signed = |d: Duration| SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX);
            let from = signed(timeout.saturating_sub(lead));
            let until = signed(timeout + j.spec.kill_grace + lead);
            for r in j.running.values() {
                let age = now.duration_since(r.started_at);
                if age < from || age > until || looks == 0 {
                    continue;
                }
                looks -= 1;
                let snap = forensics::Snapshot::take(r, worker, now);
                let keep_old = snap.processes.is_empty()
                    && j.snapshots
                        .get(&r.run_id)
                        .is_some_and(|s| !s.processes.is_empty());
                if !keep_old {
                    j.snapshots.insert(r.run_id, snap);
                }
            }
        }
    }

    /// Runs that outlived timeout + kill grace + `margin` by our own clock:
    /// the worker should have ended them. Returns (job, run, pgid) once each.
    pub fn overdue_runs(&mut self, now: Timestamp, margin: Duration) -> Vec<(String, u64, u32)> {
        let mut out = vec![];
        for (name, j) in &mut self.jobs {
            let Some(timeout) = j.spec.timeout else {
                continue;
            };
            let limit = SignedDuration::try_from(timeout + j.spec.kill_grace + margin)
                .unwrap_or(SignedDuration::MAX);
            for r in j.running.values() {
                if now.duration_since(r.started_at) > limit && !j.enforced.contains(&r.run_id) {
                    j.enforced.push(r.run_id);
                    out.push((name.clone(), r.run_id, r.pid));
                }
            }
        }
        out
    }

    /// Advances our expectation past every scheduled time a fire or skip
    /// stood for.
    fn accounted(j: &mut JobObs, covered: Timestamp) {
        let next = j.spec.schedule.next_after(covered, Some(covered));
        if j.expected_next.is_none_or(|e| e <= covered) {
            j.expected_next = next;
        }
    }

    pub fn apply(&mut self, ev: Event, now: Instant) {
        match ev {
            Event::Hello { pid, version, .. } => {
                if Some(pid) != self.worker.pid {
                    tracing::warn!(pid, expected = ?self.worker.pid, "hello from an unexpected pid");
                }
                tracing::info!(pid, version, "worker ready");
                self.worker.hello = true;
                self.worker.last_heartbeat = Some(now);
            }
            Event::Heartbeat {
                seq,
                at,
                last_good_turn_at,
                store_error,
                armed,
                progress,
                stats,
                ..
            } => {
                self.counters.heartbeat(now, stats.as_ref());
                if self.worker.replacing_stalled
                    && self.worker.hello
                    && self.worker.pid != self.worker.stalled_pid
                {
                    tracing::info!(pid = ?self.worker.pid, "the replacement of the stalled worker is making progress");
                    self.worker.replacing_stalled = false;
                    self.worker.stalled_pid = None;
                }
                self.worker.armed = armed;
                for p in progress {
                    if let Some(r) = self
                        .jobs
                        .values_mut()
                        .find_map(|j| j.running.get_mut(&p.run_id))
                    {
                        r.last_output_at = p.last_output_at;
                        r.last_line = (!p.last_line.is_empty()).then_some(p.last_line);
                    }
                }
                self.worker.last_heartbeat = Some(now);
                self.worker.seq = Some(seq);
                self.worker.store_error = store_error;
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
                        // An @every cadence is anchored in the worker's store;
                        // we learn the anchor from its arming once.
                        if j.spec.schedule.every().is_some() && j.expected_next.is_none() {
                            j.expected_next = a.next_fire_at;
                        }
                    }
                }
            }
            Event::Fire {
                job,
                run_id,
                scheduled_at,
                covers,
                pid,
                pipes,
                started_at,
                next_fire_at,
                trigger,
            } => {
                self.max_run_id = self.max_run_id.max(run_id);
                if let Some(j) = self.jobs.get_mut(&job) {
                    self.counters.fired(trigger, scheduled_at, started_at);
                    self.run_events.push(crate::pings::RunEvent::Started {
                        job: job.clone(),
                        run_id,
                    });
                    j.running.insert(
                        run_id,
                        RunningInfo {
                            run_id,
                            pid,
                            started_at,
                            scheduled_at,
                            last_output_at: None,
                            last_line: None,
                            pipes,
                        },
                    );
                    if scheduled_at.is_some() {
                        j.next_fire_at = next_fire_at;
                        j.streaks.overlap_skips = 0;
                    }
                    if let Some(last) = covers.iter().max() {
                        Self::accounted(j, *last);
                    }
                }
            }
            Event::Skip {
                job,
                run_id,
                scheduled_at,
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
                    self.counters.skipped(&job, reason);
                    Self::accounted(j, scheduled_at);
                }
            }
            Event::Queued {
                job,
                run_id,
                covers,
                next_fire_at,
            } => {
                self.max_run_id = self.max_run_id.max(run_id);
                if let Some(j) = self.jobs.get_mut(&job) {
                    j.next_fire_at = next_fire_at;
                    if let Some(last) = covers.iter().max() {
                        Self::accounted(j, *last);
                    }
                }
            }
            Event::Finish { run } => {
                self.max_run_id = self.max_run_id.max(run.id);
                if let Some(j) = self.jobs.get_mut(&run.job) {
                    j.running.remove(&run.id);
                    let snap = j.snapshots.remove(&run.id);
                    if matches!(run.outcome, Outcome::Timeout | Outcome::Lost) && snap.is_some() {
                        j.last_forensics = snap;
                    }
                    if j.last_run
                        .as_ref()
                        .is_some_and(|l| l.id == run.id && l.outcome == run.outcome)
                    {
                        // Already counted (a lost run we recorded ourselves,
                        // reported again by the next worker's recovery).
                        return;
                    }
                    if run.outcome == Outcome::Skipped {
                        // A queued fire dropped at shutdown: accounted, not a run.
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
                    if let Some(last) = run.covers.iter().max() {
                        Self::accounted(j, *last);
                    }
                    self.counters.finished(&run);
                    self.run_events
                        .push(crate::pings::RunEvent::Finished(Box::new(run.clone())));
                    j.last_run = Some(run);
                }
            }
            Event::CommandFailed { command, error } => {
                tracing::warn!(command, "worker refused a command: {error}");
            }
            Event::ClockJump(j) => {
                tracing::warn!(
                    jump_ms = j.jump_ms,
                    kind = ?j.kind,
                    jobs_due = j.jobs_due,
                    fires_due = j.fires_due,
                    "the worker saw the wall clock jump"
                );
                if self.clock_jumps.len() >= 10 {
                    self.clock_jumps.pop_front();
                }
                // Armings compared across the jump are not comparable; start over.
                for job in self.jobs.values_mut() {
                    job.misarmed_since = None;
                }
                self.clock_jumps.push_back(j);
            }
            // Answered by the supervisor's control path before the model.
            Event::Reply { .. } => {}
        }
    }

    /// Everything wrong right now, from observations only.
    pub fn conditions(&mut self, now: Instant, now_wall: Timestamp) -> Vec<Condition> {
        let mut out = vec![];
        let wd = &self.config.watchdog;
        let stall_after = wd.stall_after;
        // The worker's whole armed schedule against ours, every heartbeat.
        let ours = ArmedDigest::of(self.jobs.iter().map(|(n, j)| (n.as_str(), j.expected_next)));
        let differs = self.worker.pid.is_some()
            && self.worker.hello
            && self.worker.armed.is_some_and(|a| a != ours);
        match (differs, self.worker.armed_mismatch_since) {
            (true, None) => self.worker.armed_mismatch_since = Some(now),
            (false, Some(_)) => {
                self.worker.armed_mismatch_since = None;
                self.worker.armed_report_requested = false;
            }
            _ => {}
        }
        let w = &self.worker;
        let hb_age = w.last_heartbeat.map(|t| now.saturating_duration_since(t));
        let good_age = w.last_good_turn.map(|t| now.saturating_duration_since(t));
        let mut push = |kind: AlertKind,
                        job: Option<&str>,
                        severity,
                        state,
                        summary: String,
                        details,
                        alert| {
            out.push(Condition {
                kind,
                job: job.map(str::to_string),
                severity,
                state,
                summary,
                details,
                alert,
            });
        };
        // Over once the current worker has stayed up for a while.
        let settled = w.hello
            && w.spawned
                .is_some_and(|s| now.duration_since(s) >= CRASH_SETTLED);
        let crash_loop = !settled
            && w.exits
                .iter()
                .filter(|t| now.duration_since(**t) <= CRASH_WINDOW)
                .count()
                >= CRASH_LOOP_EXITS;
        if crash_loop {
            push(
                AlertKind::WorkerCrashLoop,
                None,
                Severity::Critical,
                State::Down,
                format!(
                    "the worker exited {} times within {}; retrying with backoff (last one {})",
                    w.exits.len(),
                    human_duration(CRASH_WINDOW),
                    w.last_exit.as_deref().unwrap_or("?")
                ),
                json!({ "exits": w.exits.len(), "last_exit": w.last_exit }),
                true,
            );
        }
        let previous = |prefix: &str| {
            w.last_exit
                .as_deref()
                .map(|e| format!(" ({prefix} {e})"))
                .unwrap_or_default()
        };
        let not_up = match (w.pid, w.hello) {
            (None, _) => Some(format!("no worker is running{}", previous("last one"))),
            (Some(pid), false) => Some(format!(
                "worker {pid} is starting and has not said hello yet{}",
                previous("the previous one")
            )),
            (Some(_), true) => None,
        };
        if let Some(summary) = not_up {
            // After a stall-kill the state stays `stalled` (and alerted)
            // until the replacement proves progress; a first start is no alert.
            let (kind, state) = if w.replacing_stalled {
                (AlertKind::WorkerStalled, State::Stalled)
            } else {
                (AlertKind::WorkerDown, State::Down)
            };
            push(
                kind,
                None,
                Severity::Critical,
                state,
                summary,
                json!({ "pid": w.pid }),
                w.replacing_stalled,
            );
        }
        if let (Some(pid), true) = (w.pid, w.hello) {
            let age = hb_age.unwrap_or_default();
            if age > stall_after {
                push(
                    AlertKind::WorkerStalled,
                    None,
                    Severity::Critical,
                    State::Stalled,
                    format!(
                        "worker {pid} sent no heartbeat for {} (stall_after {}); replacing it",
                        human_duration(age),
                        human_duration(stall_after)
                    ),
                    json!({ "pid": pid, "heartbeat_age_ms": age.as_millis() as u64 }),
                    true,
                );
            } else if w.replacing_stalled {
                push(
                    AlertKind::WorkerStalled,
                    None,
                    Severity::Critical,
                    State::Stalled,
                    format!(
                        "worker {pid} replaced a stalled worker{} and has not sent a heartbeat yet",
                        previous("that")
                    ),
                    json!({ "pid": pid, "stalled_pid": w.stalled_pid }),
                    true,
                );
            } else if age > overdue_after(wd.heartbeat_interval) {
                // Not yet stalled, but heartbeats are missing: say so
                // before stall_after rather than claim all is well.
                push(
                        AlertKind::WorkerHeartbeatOverdue,
                        None,
                        Severity::Warning,
                        State::Degraded,
                        format!(
                            "worker {pid} heartbeat overdue: none for {} (expected every {}; replaced after {})",
                            human_duration(age),
                            human_duration(wd.heartbeat_interval),
                            human_duration(stall_after)
                        ),
                        json!({ "pid": pid }),
                        false,
                    );
            } else {
                let failing = match good_age {
                    Some(g) if g <= stall_after => None,
                    Some(g) => Some(format!(
                        "its loop has not completed a turn without error for {}",
                        human_duration(g)
                    )),
                    None if w.seq.is_some() => {
                        Some("none of its loop turns has completed without error".into())
                    }
                    None => None,
                };
                if let Some(f) = failing {
                    push(
                        AlertKind::WorkerFailing,
                        None,
                        Severity::Critical,
                        State::Degraded,
                        format!(
                            "worker {pid} is alive but failing: {f}; replaced after {}",
                            human_duration(wd.failing_restart_after)
                        ),
                        json!({ "pid": pid, "last_good_turn_age_ms": good_age.map(|g| g.as_millis() as u64) }),
                        true,
                    );
                }
            }
        }
        // A restart is news (info), until the new worker has been up a while.
        if w.restarts > 0
            && w.spawned
                .is_some_and(|s| now.duration_since(s) < RESTART_NEWS)
        {
            if let Some(how) = &w.last_exit {
                push(
                    AlertKind::WorkerRestarted,
                    None,
                    Severity::Info,
                    State::Ok,
                    format!("the worker was restarted: the previous one {how}; {} restart(s) since start", w.restarts),
                    json!({ "pid": w.pid, "restarts": w.restarts, "previous": how }),
                    true,
                );
            }
        }
        if let Some(e) = &w.store_error {
            push(
                AlertKind::StoreError,
                None,
                Severity::Critical,
                State::Degraded,
                format!("store writes are failing: {e}"),
                json!({ "error": e }),
                true,
            );
        }
        if let Some((at, err)) = &self.reload_error {
            let first = err.lines().next().unwrap_or_default();
            push(
                AlertKind::ConfigReloadFailed,
                None,
                Severity::Warning,
                State::Degraded,
                format!("config reload at {at} was refused; the previous config stays in force: {first}"),
                json!({ "errors": err }),
                true,
            );
        }
        let failing: Vec<&str> = self
            .sinks
            .iter()
            .filter(|h| h.consecutive_failures >= crate::sinks::FAILING_AFTER)
            .map(|h| h.name.as_str())
            .collect();
        if !failing.is_empty() {
            let errors: Vec<String> = self
                .sinks
                .iter()
                .filter(|h| failing.contains(&h.name.as_str()))
                .map(|h| format!("{}: {}", h.name, h.last_error.as_deref().unwrap_or("?")))
                .collect();
            push(
                AlertKind::AlertDeliveryFailed,
                None,
                Severity::Critical,
                State::Degraded,
                format!(
                    "alerts are not reaching sink(s) {}: {}",
                    failing.join(", "),
                    errors.join("; ")
                ),
                json!({ "sinks": failing }),
                true,
            );
        }
        let worker_up = w.pid.is_some() && w.hello;
        if let (Some(since), Some(theirs)) = (self.worker.armed_mismatch_since, self.worker.armed) {
            if now.duration_since(since) > MISARMED_AFTER {
                let jobs: Vec<&str> = self
                    .jobs
                    .iter()
                    .filter(|(_, j)| j.next_fire_at != j.expected_next)
                    .map(|(n, _)| n.as_str())
                    .collect();
                let summary = if theirs.jobs != ours.jobs {
                    format!(
                        "the worker has {} jobs armed but the config has {}: a ghost or a missing job",
                        theirs.jobs, ours.jobs
                    )
                } else if !jobs.is_empty() {
                    format!(
                        "the worker's armed schedule differs from the config's for: {}",
                        jobs.join(", ")
                    )
                } else {
                    "the worker's armed schedule differs from what it reported; its in-memory state has diverged".into()
                };
                push(
                    AlertKind::WorkerMisarmed,
                    None,
                    Severity::Warning,
                    State::Degraded,
                    summary,
                    json!({ "worker": theirs, "supervisor": ours, "jobs": jobs }),
                    true,
                );
            }
        }
        for (name, j) in &mut self.jobs {
            let n = Some(name.as_str());
            // Past due, by our own computation.
            if let Some(due) = j.expected_next {
                let late_by = now_wall.duration_since(due);
                if worker_up
                    && late_by
                        > SignedDuration::try_from(j.spec.late_after).unwrap_or(SignedDuration::MAX)
                {
                    push(
                        AlertKind::JobLate,
                        n,
                        Severity::Warning,
                        State::Degraded,
                        format!(
                            "job {name} is late: due at {due}, neither fired nor skipped for {}",
                            human_duration(Duration::try_from(late_by).unwrap_or_default())
                        ),
                        json!({ "due_at": due, "late_ms": late_by.as_millis() as i64 }),
                        true,
                    );
                }
            }
            // Armed cross-check: the worker's arming against ours.
            let misarmed = worker_up
                && j.next_fire_at.is_some()
                && j.expected_next.is_some()
                && j.next_fire_at != j.expected_next;
            match (misarmed, j.misarmed_since) {
                (true, None) => j.misarmed_since = Some(now),
                (false, Some(_)) => j.misarmed_since = None,
                _ => {}
            }
            if j.misarmed_since
                .is_some_and(|s| now.duration_since(s) > MISARMED_AFTER)
            {
                push(
                    AlertKind::JobMisarmed,
                    n,
                    Severity::Warning,
                    State::Degraded,
                    format!(
                        "job {name}: the worker armed it for {} but its schedule says {}",
                        j.next_fire_at.map(|t| t.to_string()).unwrap_or_default(),
                        j.expected_next.map(|t| t.to_string()).unwrap_or_default()
                    ),
                    json!({ "armed": j.next_fire_at, "expected": j.expected_next }),
                    true,
                );
            }
            if j.streaks.overlap_skips >= j.spec.overlap_alert_after {
                let (run, detail) = match j.running.values().next() {
                    Some(r) => {
                        let procs = forensics::process_group(r.pid);
                        let holders = forensics::pipe_holders(&r.pipes, w.pid);
                        let age = Duration::try_from(now_wall.duration_since(r.started_at))
                            .unwrap_or_default();
                        let held = if holders.is_empty() {
                            String::new()
                        } else {
                            let hs: Vec<String> =
                                holders.iter().map(|(p, c)| format!("{c} {p}")).collect();
                            format!("; its output is held open by {}", hs.join(", "))
                        };
                        let last = match (&r.last_line, r.last_output_at) {
                            (Some(line), Some(at)) => format!(
                                "; last output {:?} {} ago",
                                line,
                                human_duration(
                                    Duration::try_from(now_wall.duration_since(at))
                                        .unwrap_or_default()
                                )
                            ),
                            _ => "; no output yet".into(),
                        };
                        (
                            format!(
                                "run {} has been running for {}: {}{held}{last}",
                                r.run_id,
                                human_duration(age),
                                forensics::describe(&procs)
                            ),
                            json!({ "run_id": r.run_id, "pid": r.pid, "running_ms": age.as_millis() as u64,
                                    "processes": procs, "pipe_holders": holders, "last_line": r.last_line,
                                    "last_output_at": r.last_output_at }),
                        )
                    }
                    None => ("the busy run has just ended".into(), json!({})),
                };
                push(
                    AlertKind::JobOverlapStreak,
                    n,
                    Severity::Warning,
                    State::Degraded,
                    format!("job {name}: {} fires in a row skipped because the previous run is still busy; {run}", j.streaks.overlap_skips),
                    detail,
                    true,
                );
            }
            if let Some(last) = &j.last_run {
                let what =
                    last.error
                        .clone()
                        .unwrap_or_else(|| match (last.exit_code, last.signal) {
                            (Some(c), _) => format!("exit code {c}"),
                            (_, Some(s)) => format!("signal {s}"),
                            _ => last.outcome.as_str().into(),
                        });
                let mut details = json!({ "run_id": last.id, "outcome": last.outcome, "streak": j.streaks.failures });
                // What the run was doing, seen while it was still there.
                let seen = j
                    .last_forensics
                    .as_ref()
                    .filter(|f| f.run_id == last.id)
                    .filter(|_| matches!(last.outcome, Outcome::Timeout | Outcome::Lost));
                let seen_line = match seen {
                    Some(f) => {
                        details["processes"] = json!(f.processes);
                        details["pipe_holders"] = json!(f.pipe_holders);
                        details["last_line"] = json!(f.last_line);
                        details["last_output_at"] = json!(f.last_output_at);
                        details["seen_at"] = json!(f.taken_at);
                        format!("; seen at {}", f.describe())
                    }
                    None => String::new(),
                };
                match last.outcome {
                    Outcome::Timeout => push(
                        AlertKind::JobTimeout,
                        n,
                        Severity::Warning,
                        State::Degraded,
                        format!(
                            "job {name}: run {} {what}; its process group was killed{seen_line}",
                            last.id
                        ),
                        details,
                        true,
                    ),
                    Outcome::Lost => push(
                        AlertKind::JobLost,
                        n,
                        Severity::Critical,
                        State::Degraded,
                        format!("job {name}: run {} lost: {what}{seen_line}", last.id),
                        details,
                        true,
                    ),
                    _ if j.streaks.failures >= j.spec.alert_after_failures => push(
                        AlertKind::JobFailing,
                        n,
                        Severity::Warning,
                        State::Degraded,
                        format!(
                            "job {name} failed {} time(s) in a row (last: {what})",
                            j.streaks.failures
                        ),
                        details,
                        true,
                    ),
                    _ => {}
                }
            }
            if let Some(limit) = j.spec.zero_output_alert_after {
                if j.streaks.zero_output >= limit {
                    push(
                        AlertKind::JobZeroOutputStreak,
                        n,
                        Severity::Warning,
                        State::Degraded,
                        format!(
                            "job {name} produced no output at all in {} consecutive runs",
                            j.streaks.zero_output
                        ),
                        json!({ "streak": j.streaks.zero_output }),
                        true,
                    );
                }
            }
        }
        out
    }

    /// Seeds a job's last run and streaks from its stored history (newest
    /// first), so a restarted supervisor judges from the same facts as the
    /// one before it and keeps, rather than flaps, the alerts they justify.
    pub fn seed_history(&mut self, job: &str, newest_first: &[RunRecord]) {
        self.counters.seed(job, newest_first);
        let Some(j) = self.jobs.get_mut(job) else {
            return;
        };
        let finished: Vec<&RunRecord> = newest_first
            .iter()
            .filter(|r| !matches!(r.outcome, Outcome::Skipped | Outcome::Running))
            .collect();
        j.last_run = finished.first().map(|r| (*r).clone());
        j.streaks.failures = finished
            .iter()
            .take_while(|r| r.outcome.is_failure())
            .count() as u32;
        j.streaks.zero_output = finished
            .iter()
            .take_while(|r| r.stdout_bytes == 0 && r.stderr_bytes == 0)
            .count() as u32;
        j.streaks.overlap_skips = newest_first
            .iter()
            .take_while(|r| r.outcome == Outcome::Skipped)
            .filter(|r| r.skip_reason == Some(SkipReason::Overlap))
            .count() as u32;
        if let Some(max) = newest_first.iter().map(|r| r.id).max() {
            self.max_run_id = self.max_run_id.max(max);
        }
    }

    /// Re-evaluates the conditions and the alert book; returns the notices
    /// of alerts that opened or resolved.
    pub fn evaluate(
        &mut self,
        now: Instant,
        now_wall: Timestamp,
    ) -> Vec<cronwarden_shared::status::AlertNotice> {
        let conds = self.conditions(now, now_wall);
        self.alerts
            .update(&conds, now_wall, self.config.alert_repeat_after)
    }

    /// The status, computed now from what was observed.
    pub fn status(&mut self, now: Instant, now_wall: Timestamp) -> StatusReport {
        let conds = self.conditions(now, now_wall);
        let state = conds.iter().map(|c| c.state).max().unwrap_or(State::Ok);
        // Info conditions (a restart) are alerts, not reasons the state is not ok.
        let reasons = conds
            .iter()
            .filter(|c| c.state != State::Ok)
            .map(|c| c.summary.clone())
            .collect();
        let w = &self.worker;
        let jobs = self
            .jobs
            .iter()
            .map(|(name, j)| {
                let kinds: Vec<AlertKind> = conds
                    .iter()
                    .filter(|c| c.job.as_deref() == Some(name))
                    .map(|c| c.kind)
                    .collect();
                let state = if kinds.contains(&AlertKind::JobOverlapStreak) {
                    JobState::Wedged
                } else if kinds.contains(&AlertKind::JobLate) {
                    JobState::Late
                } else if j.paused {
                    JobState::Paused
                } else if !j.running.is_empty() {
                    JobState::Running
                } else if kinds.iter().any(|k| {
                    [
                        AlertKind::JobFailing,
                        AlertKind::JobTimeout,
                        AlertKind::JobLost,
                        AlertKind::JobZeroOutputStreak,
                    ]
                    .contains(k)
                }) {
                    JobState::Failing
                } else {
                    JobState::Idle
                };
                JobStatus {
                    name: name.clone(),
                    schedule: j.spec.schedule.expr().to_string(),
                    timezone: j.spec.timezone.clone(),
                    state,
                    paused: j.paused,
                    next_fire_at: j.next_fire_at.or(j.expected_next),
                    last_run: j.last_run.clone(),
                    streaks: j.streaks.clone(),
                    running: j.running.values().cloned().collect(),
                }
            })
            .collect();
        StatusReport {
            state,
            reasons,
            supervisor: self.supervisor.clone(),
            worker: WorkerInfo {
                pid: w.pid,
                started_at: w.started_at,
                restarts: w.restarts,
                heartbeat_age_ms: w
                    .last_heartbeat
                    .map(|t| now.saturating_duration_since(t).as_millis() as u64),
                last_good_turn_age_ms: w
                    .last_good_turn
                    .map(|t| now.saturating_duration_since(t).as_millis() as u64),
                heartbeat_seq: w.seq,
                malformed_events: self.malformed_events,
            },
            jobs,
            alerts: self.alerts.list(),
            sinks: self.sinks.clone(),
            clock_jumps: self.clock_jumps.iter().cloned().collect(),
        }
    }
}

/// Our expectation for a job we have not seen fire yet: its schedule's next
/// fire after now (for `@every`, learned from the worker's arming instead).
fn initial_expectation(spec: &JobSpec, now: Timestamp) -> Option<Timestamp> {
    match spec.schedule.every() {
        Some(_) => None,
        None => spec.schedule.next_after(now, None),
    }
}

#[cfg(test)]
impl Model {
    /// A model of `config` with no history and no alerts, for tests.
    pub(crate) fn for_test(config: Config) -> Model {
        Model::new(
            Arc::new(config),
            SupervisorInfo {
                pid: 1,
                version: "test".into(),
                started_at: Timestamp::now(),
            },
            AlertBook::new(vec![]),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cronwarden_shared::status::State;

    fn model() -> Model {
        let config = Config::parse(
            std::path::Path::new("/x/cronwarden.toml"),
            "[[job]]\nname = \"a\"\nschedule = \"@daily\"\nshell = \"true\"\n",
        )
        .unwrap();
        Model::for_test(config)
    }

    fn hello(pid: u32) -> Event {
        Event::Hello {
            pid,
            version: "test".into(),
            started_at: Timestamp::now(),
        }
    }

    fn heartbeat(seq: u64) -> Event {
        Event::Heartbeat {
            seq,
            at: Timestamp::now(),
            last_good_turn_at: Some(Timestamp::now()),
            running: 0,
            store_error: None,
            armed: None,
            progress: vec![],
            stats: None,
        }
    }

    /// (state, the worker_stalled alert's notices) after each step.
    fn check(m: &mut Model, want: State) -> Vec<String> {
        let (now, wall) = (Instant::now(), Timestamp::now());
        assert_eq!(
            m.status(now, wall).state,
            want,
            "{:?}",
            m.status(now, wall).reasons
        );
        m.evaluate(now, wall)
            .into_iter()
            .filter(|n| n.kind == AlertKind::WorkerStalled)
            .map(|n| n.event)
            .collect()
    }

    #[test]
    fn stalled_lasts_until_the_replacements_first_heartbeat() {
        let mut m = model();
        m.worker_spawned(10);
        m.apply(hello(10), Instant::now());
        m.apply(heartbeat(1), Instant::now());
        assert!(check(&mut m, State::Ok).is_empty());
        // Declared stalled (as on_stall does); a line the stalled worker
        // still had in the pipe proves nothing.
        m.worker.replacing_stalled = true;
        m.worker.stalled_pid = Some(10);
        assert_eq!(check(&mut m, State::Stalled), ["opened"]);
        m.apply(heartbeat(2), Instant::now());
        assert!(check(&mut m, State::Stalled).is_empty());
        m.worker_gone("was killed after 2s without a heartbeat".into(), true);
        assert!(check(&mut m, State::Stalled).is_empty());
        m.worker_spawned(11);
        assert!(check(&mut m, State::Stalled).is_empty());
        // Hello: started, not yet proven to make progress.
        m.apply(hello(11), Instant::now());
        assert!(check(&mut m, State::Stalled).is_empty());
        m.apply(heartbeat(1), Instant::now());
        assert_eq!(check(&mut m, State::Ok), ["resolved"]);
    }
}

#[cfg(test)]
mod props;
