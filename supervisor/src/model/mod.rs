//! The supervisor's own model of the worker and every job, built only from
//! what it observed (the config, the event stream, the worker's comings
//! and goings, and the forensics the loop gathered), and the judgement of
//! it (`judge`): the conditions found in it and the actions they call for.
//!
//! Nothing here is assumed: the state is `ok` only when the worker has said
//! hello, its heartbeat and its last good loop turn are fresh, and no job is
//! late, failing or wedged. Each job's next expected fire is computed here
//! from the config (through the same `shared` schedule code), not taken
//! from the worker, so a worker that silently stops firing one job is caught
//! by `job_late`, and one that arms a job for the wrong time by the armed
//! cross-check, before the fire is even due.
//!
//! Invariants: observations change only through [`Model::apply`] and the
//! `worker_*`/`set_config`/`seed_history`/`looked` methods;
//! [`Model::status`] and `judge::judge` read and never mutate;
//! `Model::evaluate` is the one place a judgement is adopted.
//!
//! - `apply`: the worker's events, one function each;
//! - `judge`: the detectors, the actions and the forensics wanted;
//! - `counters`: what `/metrics` counts, recorded as events are applied.
//!
//! `held` is the second copy of the worker's writes not yet confirmed
//! stored (`cronwarden_shared::held_copy`), handed to the next worker.

mod apply;
pub(crate) mod counters;
pub(crate) mod judge;
mod retry;

use cronwarden_shared::alert_kind::AlertKind;
use std::{
    cell::RefCell,
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, OnceLock},
};

use bytes::Bytes;
use cronwarden_shared::{
    config::{Config, JobSpec},
    status::{
        AlertNotice, JobState, JobStatus, Outcome, RunRecord, RunningInfo, SkipReason, State,
        StatusReport, Streaks, SupervisorInfo, Trigger, WorkerInfo,
    },
    wire::ArmedDigest,
};
use jiff::Timestamp;
use tokio::time::Instant;

use crate::{
    alerts::{AlertBook, Condition},
    forensics,
    run_groups::Reparented,
};
use judge::{Action, Clocks, Judgement, Look, LookWhy, LOOKS_PER_EVENT};

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
    /// The worker's own wall-clock stamp of that turn, as last reported:
    /// a stamp seen before is not re-dated.
    pub last_good_turn_wall: Option<Timestamp>,
    /// When the current worker's hello was observed: nothing is late, on
    /// our clock, for longer than this worker has been there to fire it.
    pub hello_at: Option<Instant>,
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
    /// Run records the workers of this supervisor dropped beyond their
    /// held-write bound: the current worker's count (its last heartbeat)
    /// plus its predecessors'. A loss, never forgotten while we run.
    pub records_dropped: u64,
    pub records_dropped_earlier: u64,
    /// Store writes the current worker holds for retry (its last
    /// heartbeat): while above zero, claims and records are not durable.
    pub writes_held: u64,
    /// The worker's armed digest (last heartbeat), and since when it has
    /// disagreed with ours: judged when each heartbeat is applied, against
    /// our expectation as of that heartbeat (see `apply::Model::armed_check`),
    /// never against one later events have advanced.
    pub armed: Option<ArmedDigest>,
    pub armed_mismatch_since: Option<Instant>,
    /// The last heartbeat that disagreed: a disagreement lasts only as long
    /// as heartbeats keep showing it.
    pub armed_mismatch_last: Option<Instant>,
    /// Fires the worker's digest shows it took (armed past them) that it
    /// has reported neither fired nor skipped yet: by job, the due time
    /// we still expect and when a heartbeat first showed it taken.
    pub unreported: BTreeMap<String, (Timestamp, Instant)>,
    /// Whether the worker was asked for its full schedule in this episode.
    pub armed_report_requested: bool,
    /// Whether the current worker has reported its schedule yet.
    pub schedule_seen: bool,
    /// The worker the supervisor decided to replace (killed, not reaped
    /// yet): it is not judged for replacement again.
    pub replacing: Option<u32>,
}

/// How long after a backward clock step schedule reports re-base our
/// expectations: the `fire` lines of runs taken before the step come
/// within their processes' start (seconds); a minute leaves room for a
/// loaded host, and no more: later, an arming before ours is a
/// disagreement again.
pub(crate) const REBASE_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// One job as observed.
#[derive(Debug, Clone)]
pub struct JobObs {
    /// The config's own (shared, not copied: issue 18).
    pub spec: Arc<JobSpec>,
    /// What the worker says it armed.
    pub next_fire_at: Option<Timestamp>,
    /// What we expect, from the schedule and the fires seen.
    pub expected_next: Option<Timestamp>,
    /// Since when the worker's armed time has disagreed with ours.
    pub misarmed_since: Option<Instant>,
    /// When the worker was told to re-arm the job, in the current
    /// disagreement (see `judge::heal`).
    pub rearm_sent: Option<Instant>,
    pub paused: bool,
    /// Not inline, as the forensics below: most jobs' are `None` or
    /// rarely set, and inline they made every job's entry ~1.5 KiB (issue
    /// 18). Shared with the reported status, which holds the same record.
    pub last_run: Option<Arc<RunRecord>>,
    pub running: BTreeMap<u64, RunningInfo>,
    /// When the supervisor observed each run in flight start (its `fire`
    /// line was applied), on its monotonic clock: a run's age is measured
    /// from here, never from the worker's wall-clock `started_at`, so a
    /// step of the wall clock cannot age (and kill) a healthy run.
    pub seen_started: BTreeMap<u64, Instant>,
    /// The due time the supervisor first saw come (by the wall clock),
    /// and when, on its monotonic clock: lateness is measured from there.
    pub due_seen: Option<(Timestamp, Instant)>,
    pub streaks: Streaks,
    /// Runs the supervisor itself killed for outliving their timeout.
    pub enforced: Vec<u64>,
    /// What runs near or past their timeout were last seen doing, by run.
    pub snapshots: BTreeMap<u64, forensics::Snapshot>,
    /// The snapshot of the last run that timed out or was lost, for its alert.
    pub last_forensics: Option<Box<forensics::Snapshot>>,
    /// The loop's last look at the busy run of an overlap streak.
    pub busy_look: Option<Box<forensics::Snapshot>>,
    /// The attempt of the job's last finished run (0: its fire's own run,
    /// n: its nth retry), for the failure streak (see `retry`).
    pub retry_attempt: u32,
    /// The status last reported for the job, shared with the snapshots
    /// that hold it (see [`JobObs::status`]).
    pub reported: RefCell<Option<Reported>>,
}

/// A job's status as last reported, and what goes with it.
#[derive(Debug, Clone)]
pub struct Reported {
    /// The definition it was made from.
    spec: Arc<JobSpec>,
    pub status: Arc<JobStatus>,
    /// Its JSON, made by the first request that needs it and kept while
    /// the status is: successive snapshots share it, so serialising is
    /// cached between evaluations, not only within one (issue 18).
    pub json: Arc<OnceLock<Bytes>>,
}

impl JobObs {
    /// The job's status in a report: the one reported last, shared, while
    /// everything it shows is unchanged, else a new one. Each evaluation
    /// reports every job, and copying each job's strings and last record
    /// at each was most of the supervisor's CPU with thousands of jobs
    /// (issue 18). The comparison reads and allocates nothing else: a
    /// record and a definition are replaced, never changed in place, so
    /// their pointers say; the name is the job's key in the model.
    pub(crate) fn status(&self, name: &str, state: JobState) -> Arc<JobStatus> {
        let next_fire_at = self.next_fire_at.or(self.expected_next);
        let mut reported = self.reported.borrow_mut();
        let same = |Reported {
                        spec, status: s, ..
                    }: &Reported| {
            Arc::ptr_eq(spec, &self.spec)
                && s.state == state
                && s.paused == self.paused
                && s.next_fire_at == next_fire_at
                && s.streaks == self.streaks
                && match (&s.last_run, &self.last_run) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    (None, None) => true,
                    _ => false,
                }
                && s.running.len() == self.running.len()
                && s.running.iter().eq(self.running.values())
        };
        if let Some(r) = reported.as_ref().filter(|r| same(r)) {
            return r.status.clone();
        }
        let s = Arc::new(JobStatus {
            name: name.to_string(),
            schedule: self.spec.schedule.expr().to_string(),
            timezone: self.spec.timezone.clone(),
            state,
            paused: self.paused,
            next_fire_at,
            last_run: self.last_run.clone(),
            streaks: self.streaks.clone(),
            running: self.running.values().cloned().collect(),
        });
        *reported = Some(Reported {
            spec: self.spec.clone(),
            status: s.clone(),
            json: Arc::default(),
        });
        s
    }
}

pub struct Model {
    pub config: Arc<Config>,
    pub supervisor: SupervisorInfo,
    pub worker: WorkerObs,
    pub jobs: BTreeMap<String, JobObs>,
    pub malformed_events: u64,
    pub max_run_id: u64,
    /// The highest run id each job is known to have ended, never lowered
    /// (runs may end out of order) and kept across reloads: a process of
    /// a run up to it, found after a worker died, is a kept leftover, not
    /// a run the worker never reported.
    pub ended_through: HashMap<String, u64>,
    /// The last reload that was refused, until one succeeds.
    pub reload_error: Option<(Timestamp, String)>,
    pub alerts: AlertBook,
    /// Alert sinks' health, refreshed by the supervisor's loop.
    pub sinks: Vec<cronwarden_shared::status::SinkHealth>,
    /// The last clock jumps the worker reported.
    pub clock_jumps: VecDeque<cronwarden_shared::status::ClockJump>,
    /// The latest of them, and when we read it (monotonic): the
    /// `clock_jumped` condition lasts a while from then.
    pub last_clock_jump: Option<(cronwarden_shared::status::ClockJump, Instant)>,
    /// Set by a backward clock step (to the new wall time, and when we
    /// read it): schedule reports re-base our expectations (see
    /// `apply::rebase`) for [`REBASE_WINDOW`] after. Not only the first
    /// report: a `fire` line of the pass before the step, written once its
    /// process started, can come after the step's report and advance our
    /// expectation onto that pass again; the disagreement it makes asks
    /// for the schedule, and that report re-bases us once more.
    pub rebase_after_jump: Option<(Timestamp, Instant)>,
    /// The current worker's last report of the shared ledger (store =
    /// postgres); forgotten when a worker is spawned, whose claim thread
    /// reports afresh at its first beat.
    pub cluster: Option<cronwarden_shared::wire::ClusterHealth>,
    /// Counters and histograms for `/metrics`.
    pub(crate) counters: counters::Counters,
    /// Runs started and ended since the supervisor last drained this (for pings).
    pub run_events: Vec<crate::pings::RunEvent>,
    /// When the last adopted judgement was made, on the monotonic clock.
    pub last_judged: Option<Instant>,
    /// The latest wall time any worker's heartbeat carried.
    pub last_worker_wall: Option<Timestamp>,
    /// What the worker wrote that its heartbeats have not confirmed
    /// stored: for the next worker, if this one dies.
    pub held: cronwarden_shared::held_copy::HeldCopy,
}

/// One evaluation: the alerts that opened, were reminded or resolved, the
/// actions for the loop, and the status as of this evaluation (its state
/// and its alert list agree: they come from the same judgement).
#[derive(Debug)]
pub(crate) struct Evaluation {
    pub notices: Vec<AlertNotice>,
    pub actions: Vec<Action>,
    pub status: StatusReport,
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
            ended_through: HashMap::new(),
            reload_error: None,
            alerts,
            sinks: vec![],
            clock_jumps: VecDeque::new(),
            last_clock_jump: None,
            rebase_after_jump: None,
            cluster: None,
            counters: Default::default(),
            run_events: vec![],
            last_judged: None,
            last_worker_wall: None,
            held: Default::default(),
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
        let mut jobs = Vec::with_capacity(config.jobs.len());
        for spec in &config.jobs {
            let obs = match old.remove(&spec.name) {
                Some(mut o) => {
                    let changed = o.spec.schedule.expr() != spec.schedule.expr()
                        || o.spec.timezone != spec.timezone;
                    if changed {
                        o.expected_next = initial_expectation(spec, now);
                        o.misarmed_since = None;
                        o.rearm_sent = None;
                    }
                    o.spec = spec.clone();
                    o
                }
                None => JobObs {
                    spec: spec.clone(),
                    next_fire_at: None,
                    expected_next: initial_expectation(spec, now),
                    misarmed_since: None,
                    rearm_sent: None,
                    paused: false,
                    last_run: None,
                    running: BTreeMap::new(),
                    seen_started: BTreeMap::new(),
                    due_seen: None,
                    streaks: Streaks::default(),
                    enforced: vec![],
                    snapshots: BTreeMap::new(),
                    last_forensics: None,
                    busy_look: None,
                    retry_attempt: 0,
                    reported: RefCell::new(None),
                },
            };
            jobs.push((spec.name.clone(), obs));
        }
        // Collected, not inserted one by one: a map built from an iterator
        // has full nodes, where inserting in name order leaves them half
        // empty (twice the memory per job).
        self.jobs = jobs.into_iter().collect();
        self.counters.set_jobs(&config);
        self.config = config;
    }

    pub fn worker_spawned(&mut self, pid: u32) {
        self.worker_spawned_at(pid, Instant::now(), Timestamp::now());
    }

    /// [`Model::worker_spawned`] at the given clocks.
    pub(crate) fn worker_spawned_at(&mut self, pid: u32, now: Instant, wall: Timestamp) {
        if self.worker.spawned.is_some() {
            self.worker.restarts += 1;
        }
        self.counters.worker_replaced();
        self.worker.pid = Some(pid);
        self.worker.started_at = Some(wall);
        self.worker.spawned = Some(now);
        self.worker.hello = false;
        self.cluster = None;
        self.worker.last_heartbeat = None;
        self.worker.seq = None;
        self.worker.last_good_turn = None;
        self.worker.last_good_turn_wall = None;
        self.worker.hello_at = None;
        self.worker.armed = None;
        self.worker.armed_mismatch_since = None;
        self.worker.unreported.clear();
        self.worker.schedule_seen = false;
    }

    /// The worker is gone. Returns the process groups of runs that were in
    /// flight (to be killed); their runs are recorded `lost`. `reparented`
    /// are the runs found among its orphans (see [`Model::worker_gone_at`]).
    pub fn worker_gone(
        &mut self,
        how: String,
        counts_as_crash: bool,
        reparented: &[Reparented],
    ) -> Vec<u32> {
        self.worker_gone_at(
            how,
            counts_as_crash,
            reparented,
            Instant::now(),
            Timestamp::now(),
        )
    }

    /// [`Model::worker_gone`] at the given clocks. It looks at each run in
    /// flight in /proc (its processes are still there: they are killed
    /// after this), as no judgement does. A run the worker started but
    /// died before reporting (its `fire` line never came) is among
    /// `reparented` and in no job's runs in flight: its group is killed
    /// too, and what it was doing kept for the `lost` record the next
    /// worker's recovery sends, so its `job_lost` alert says it as well.
    pub(crate) fn worker_gone_at(
        &mut self,
        how: String,
        counts_as_crash: bool,
        reparented: &[Reparented],
        now: Instant,
        wall: Timestamp,
    ) -> Vec<u32> {
        self.worker.pid = None;
        self.worker.hello = false;
        self.worker.last_exit = Some(how.clone());
        if counts_as_crash {
            self.worker.exits.push_back(now);
            while self
                .worker
                .exits
                .front()
                .is_some_and(|t| now.duration_since(*t) > judge::CRASH_WINDOW)
            {
                self.worker.exits.pop_front();
            }
        }
        let mut groups = vec![];
        let now = wall;
        let mut looks = LOOKS_PER_EVENT;
        for (name, job) in &mut self.jobs {
            job.snapshots.clear();
            job.seen_started.clear();
            // A run this job reported the end of, or left behind on
            // purpose (`leftovers = "keep"`), has an id up to the last it
            // ended.
            let ended = self.ended_through.get(name).copied();
            let unreported = reparented.iter().filter(|r| {
                r.job == *name
                    && !job.running.contains_key(&r.run_id)
                    && ended.is_none_or(|e| r.run_id > e)
            });
            for r in unreported {
                groups.push(r.pgid);
                if looks > 0 && !job.snapshots.contains_key(&r.run_id) {
                    looks -= 1;
                    let snap = forensics::Snapshot::of_group(r.run_id, r.pgid, r.running_ms, now);
                    job.snapshots.insert(r.run_id, snap);
                }
                tracing::error!(job = %name, run = r.run_id, pgid = r.pgid, "run lost: the worker died after starting it, before reporting it");
            }
            for (id, r) in std::mem::take(&mut job.running) {
                groups.push(r.pid);
                // Its processes are still there: they are killed after this.
                job.last_forensics = (looks > 0).then(|| {
                    looks -= 1;
                    Box::new(forensics::Snapshot::take(&r, None, now))
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
                job.last_run = Some(Arc::new(rec));
                ended_at_least(&mut self.ended_through, name, id);
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

    /// Seeds a job's last run and streaks from its stored history (newest
    /// first), so a restarted supervisor judges from the same facts as the
    /// one before it and keeps, rather than flaps, the alerts they justify.
    pub fn seed_history(&mut self, job: &str, newest_first: &[RunRecord]) {
        self.counters.seed(job, newest_first);
        let Some(j) = self.jobs.get_mut(job) else {
            return;
        };
        if let Some(max) = newest_first.iter().map(|r| r.id).max() {
            ended_at_least(&mut self.ended_through, job, max);
        }
        let finished: Vec<&RunRecord> = newest_first
            .iter()
            .filter(|r| !matches!(r.outcome, Outcome::Skipped | Outcome::Running))
            .collect();
        j.last_run = finished.first().map(|r| Arc::new((*r).clone()));
        j.streaks.failures = retry::seeded_streak(&finished);
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

    /// Records what the loop saw of a run in /proc (see [`judge::looks_near_timeout`]
    /// and [`judge::looks_at_busy_runs`]). A later look near a timeout
    /// replaces an earlier one unless it finds no process left (the kill
    /// came first): the `job_timeout` alert says what the run was doing.
    pub(crate) fn looked(&mut self, look: &Look, snap: forensics::Snapshot) {
        let Some(j) = self.jobs.get_mut(&look.job) else {
            return;
        };
        if !j.running.contains_key(&snap.run_id) {
            return;
        }
        match look.why {
            LookWhy::Busy => j.busy_look = Some(Box::new(snap)),
            LookWhy::NearTimeout => {
                let keep_old = snap.processes.is_empty()
                    && j.snapshots
                        .get(&snap.run_id)
                        .is_some_and(|s| !s.processes.is_empty());
                if !keep_old {
                    j.snapshots.insert(snap.run_id, snap);
                }
            }
        }
    }

    /// Judges the model now, adopts the judgement's memory, and brings the
    /// alert book in line with its conditions. The caller must carry out
    /// every returned action (the memory already counts them as done).
    pub(crate) fn evaluate(&mut self, now: Instant, now_wall: Timestamp) -> Evaluation {
        let clocks = Clocks {
            now,
            wall: now_wall,
        };
        let Judgement {
            conditions,
            actions,
            memory,
        } = judge::judge(self, clocks);
        self.remember(memory);
        let notices = self
            .alerts
            .update(&conditions, now_wall, self.config.alert_repeat_after);
        let status = self.report(&conditions, now);
        Evaluation {
            notices,
            actions,
            status,
        }
    }

    fn remember(&mut self, memory: judge::Memory) {
        let w = &mut self.worker;
        w.armed_report_requested = memory.armed_report_requested;
        w.replacing = memory.replacing;
        if let Some(pid) = memory.declared_stalled {
            w.replacing_stalled = true;
            w.stalled_pid = Some(pid);
        }
        for (name, since) in memory.misarmed_since {
            if let Some(j) = self.jobs.get_mut(&name) {
                j.misarmed_since = since;
            }
        }
        for (name, sent) in memory.rearm_sent {
            if let Some(j) = self.jobs.get_mut(&name) {
                j.rearm_sent = sent;
            }
        }
        for (name, due) in memory.due_seen {
            if let Some(j) = self.jobs.get_mut(&name) {
                j.due_seen = due;
            }
        }
        if memory.judged_at.is_some() {
            self.last_judged = memory.judged_at;
        }
        for (name, run) in memory.enforced {
            if let Some(j) = self.jobs.get_mut(&name) {
                j.enforced.push(run);
            }
        }
    }

    /// The status, judged now from what was observed; changes nothing.
    pub fn status(&self, now: Instant, now_wall: Timestamp) -> StatusReport {
        let conditions = judge::judge(
            self,
            Clocks {
                now,
                wall: now_wall,
            },
        )
        .conditions;
        self.report(&conditions, now)
    }

    /// The status report of a judgement's conditions.
    fn report(&self, conds: &[Condition], now: Instant) -> StatusReport {
        let state = conds.iter().map(|c| c.state).max().unwrap_or(State::Ok);
        // Info conditions (a restart) are alerts, not reasons the state is not ok.
        let reasons = conds
            .iter()
            .filter(|c| c.state != State::Ok)
            .map(|c| c.summary.clone())
            .collect();
        let w = &self.worker;
        // Each job's conditions, found once: a scan of every condition for
        // each job grew as jobs times conditions (thousands of late jobs
        // after a long outage).
        let mut by_job: BTreeMap<&str, Vec<AlertKind>> = BTreeMap::new();
        for c in conds {
            if let Some(job) = c.job.as_deref() {
                by_job.entry(job).or_default().push(c.kind);
            }
        }
        let jobs = self
            .jobs
            .iter()
            .map(|(name, j)| {
                let kinds = by_job.get(name.as_str()).map_or(&[][..], Vec::as_slice);
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
                j.status(name, state)
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
            peers: self
                .cluster
                .as_ref()
                .map(|c| c.peers.clone())
                .unwrap_or_default(),
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
                binary_replaced: None,
            },
            AlertBook::new(vec![]),
        )
    }
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod sim;

/// Raises `job`'s entry in [`Model::ended_through`] to `run_id`, never
/// lowering it.
pub(super) fn ended_at_least(ended: &mut HashMap<String, u64>, job: &str, run_id: u64) {
    let e = ended.entry(job.to_string()).or_default();
    *e = (*e).max(run_id);
}
