//! The scheduling loop.
//!
//! One task owns all scheduling state; it sleeps until the earliest of the
//! next fire and the next heartbeat, or until a command or a finished run
//! arrives (the shape of mini-redis's expiry task). Each wake is a *turn*:
//! fire what is due, then, when due, write a heartbeat carrying the turn's
//! sequence number and the time of the last turn that completed without
//! error. A panic inside a turn is caught and logged; the loop goes on and
//! the heartbeat shows the failing turns.
//!
//! Every scheduled fire time yields exactly one record: a run (started
//! `running`, finished with its outcome) or a skip with its reason. Fires
//! missed while the loop could not run (downtime, a stopped process, a slow
//! turn) are coalesced into one run that `covers` them if they are younger
//! than the job's misfire grace, and skipped as `misfire` otherwise.
//!
//! Writes are journaled while a turn plans its fires and committed in one
//! transaction by [`Scheduler::flush`]; only then are runs spawned and
//! events sent, so every fire the supervisor hears of is already durable.
//! When the store fails (ENOSPC, EIO, read-only), the batch is held in
//! memory (bounded) and retried before the next one; scheduling and runs go
//! on, the heartbeat carries the error, and the supervisor raises
//! `store_error` without replacing the worker.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    panic::AssertUnwindSafe,
    sync::Arc,
    time::Duration,
};

use cronwarden_shared::{
    config::{Config, JobSpec, Overlap},
    stats::{Histogram, WorkerStats, STORE_WRITE_BUCKETS},
    status::{Outcome, RunRecord, SkipReason, Trigger},
    store::{self, JobRow, Store, Write},
    wire::{Armed, ArmedDigest, Command, Event, Frame, LineCodec, RunProgress, MAX_COMMAND_LINE},
    VERSION,
};
use futures_util::StreamExt;
use jiff::{SignedDuration, Timestamp};
use tokio::{
    net::unix::pipe,
    signal::unix::{signal, SignalKind},
    sync::mpsc,
    task::LocalSet,
    time::Instant,
};
use tokio_util::codec::FramedRead;

use crate::{
    events::{self, EventTx},
    runner::{self, RunRequest, StopHandle, StopReason},
    sys, WorkerArgs,
};

/// How long the worker waits for its first `configure` command.
const CONFIGURE_WITHIN: Duration = Duration::from_secs(30);
/// At most this many missed fires of one job are enumerated in one turn
/// (a per-second job after a day of downtime); the rest follow in the next
/// turns, so one turn stays short.
const MAX_DUE_PER_TURN: usize = 10_000;
/// Wall-clock movement beyond this, against the monotonic clock, between
/// two turns is a clock jump (NTP step, suspend, VM restore).
const CLOCK_JUMP: Duration = Duration::from_secs(2);
/// At most this many failed store writes are held in memory for retry
/// (each at most a run record with its two 4 KiB tails: under 100 MiB).
const MAX_HELD_WRITES: usize = 10_000;
/// The longest spread of catch-up runs after a forward clock jump.
const STAGGER: Duration = Duration::from_secs(1);
/// Retention is enforced by a sweep this often, over at most
/// [`PRUNE_JOBS`] jobs that got records since they were last pruned (runs
/// and skips alike: a paused or always-overlapping job only ever skips).
/// Each prune deletes a bounded number of rows, so a sweep stays short
/// however many jobs there are; a job waits at most a few sweeps.
const PRUNE_EVERY: Duration = Duration::from_secs(1);
const PRUNE_JOBS: usize = 8;

struct Running {
    run_id: u64,
    stop: StopHandle,
    progress: crate::output::SharedProgress,
}

struct JobRt {
    spec: Arc<JobSpec>,
    next: Option<Timestamp>,
    /// The last scheduled time handled: `@every` keeps its cadence from it.
    anchor: Option<Timestamp>,
    paused: bool,
    running: Vec<Running>,
    /// `overlap = queue`: the one fire waiting for the current run, with
    /// the id its record was committed under when it was claimed.
    pending: Option<(u64, Vec<Timestamp>)>,
}

fn trigger_for(covers: &[Timestamp]) -> Trigger {
    match covers.len() {
        0 => Trigger::Manual,
        1 => Trigger::Schedule,
        _ => Trigger::Catchup,
    }
}

/// All scheduling state. Methods never await: the loop stays responsive.
pub struct Scheduler {
    jobs: BTreeMap<String, JobRt>,
    store: Store,
    journal: Vec<Write>,
    outbox: Vec<Event>,
    to_spawn: Vec<(RunRequest, StopHandle)>,
    /// Writes that failed, oldest first, retried before each new batch.
    held: Vec<Write>,
    /// Held writes dropped because the bound was reached.
    dropped_writes: u64,
    /// The last store error, while writes keep failing.
    store_error: Option<String>,
    /// Jobs with records written since their last prune, oldest first (a
    /// queue, so every job gets its turn), and the same as a set.
    unpruned: VecDeque<String>,
    unpruned_set: BTreeSet<String>,
    next_prune: Instant,
    events: EventTx,
    done_tx: mpsc::UnboundedSender<RunRecord>,
    next_run_id: u64,
    heartbeat_interval: Duration,
    seq: u64,
    last_good_turn: Option<Timestamp>,
    next_heartbeat: Instant,
    /// The clocks at the previous turn, to notice jumps and suspends.
    last_clocks: Clocks,
    /// Spread this turn's catch-up runs (after a forward clock jump).
    stagger: bool,
    /// Store write latency, sent with every heartbeat for the metrics.
    store_write: Histogram,
    /// Something panicked since the last turn: that turn is not good.
    panicked: bool,
    /// `<state_dir>/output`: where `keep_output` jobs' files go.
    output_root: std::path::PathBuf,
}

impl Scheduler {
    pub fn new(
        config: &Config,
        store: Store,
        events: EventTx,
        done_tx: mpsc::UnboundedSender<RunRecord>,
        first_run_id: u64,
    ) -> Self {
        let mut s = Scheduler {
            jobs: BTreeMap::new(),
            store,
            journal: vec![],
            outbox: vec![],
            to_spawn: vec![],
            held: vec![],
            dropped_writes: 0,
            store_error: None,
            unpruned: VecDeque::new(),
            unpruned_set: BTreeSet::new(),
            next_prune: Instant::now(),
            events,
            done_tx,
            next_run_id: first_run_id.max(1),
            heartbeat_interval: config.watchdog.heartbeat_interval,
            seq: 0,
            last_good_turn: None,
            next_heartbeat: Instant::now(),
            last_clocks: Clocks::read(),
            stagger: false,
            store_write: Histogram::new(STORE_WRITE_BUCKETS),
            panicked: false,
            output_root: config.state_dir.join("output"),
        };
        s.configure(config);
        s
    }

    /// Applies a (new) config, reconciled with the store: removed jobs are
    /// dropped at once (their running runs finish, but they never fire
    /// again; their schedule rows are deleted, their history stays); new
    /// jobs are armed from now; jobs whose schedule or zone changed are
    /// re-armed from now; unchanged jobs keep their stored next fire (a fire
    /// that came due while cronwarden was down then goes through the misfire
    /// rules) and their paused flag.
    pub fn configure(&mut self, config: &Config) {
        let now = wall_now();
        self.heartbeat_interval = config.watchdog.heartbeat_interval;
        let wanted: Vec<JobRow> = config
            .jobs
            .iter()
            .map(|j| JobRow {
                name: j.name.clone(),
                schedule: j.schedule.expr().to_string(),
                timezone: j.timezone.clone(),
                next_run_at: j.schedule.next_after(now, None),
                last_scheduled_at: None,
                paused: false,
            })
            .collect();
        let rows = match self.store.reconcile(&wanted) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!("{e}; scheduling from the config alone");
                self.store_error = Some(format!("{e}; scheduling from the config alone"));
                wanted
            }
        };
        let mut old = std::mem::take(&mut self.jobs);
        for (spec, row) in config.jobs.iter().zip(rows) {
            let spec = Arc::new(spec.clone());
            let mut rt = old.remove(&spec.name).unwrap_or(JobRt {
                spec: spec.clone(),
                next: None,
                anchor: None,
                paused: false,
                running: vec![],
                pending: None,
            });
            rt.spec = spec;
            rt.next = row.next_run_at;
            rt.anchor = row.last_scheduled_at;
            rt.paused = row.paused;
            // Its history may exceed a retention that was just lowered.
            self.mark_unpruned(&rt.spec.name);
            self.jobs.insert(rt.spec.name.clone(), rt);
        }
        for (name, rt) in old {
            tracing::info!(job = %name, running = rt.running.len(), "job removed from the config; it will not fire again");
        }
        self.send_schedule();
    }

    fn send_schedule(&mut self) {
        let jobs = self
            .jobs
            .values()
            .map(|j| Armed {
                job: j.spec.name.clone(),
                next_fire_at: j.next,
                paused: j.paused,
            })
            .collect();
        self.outbox.push(Event::Schedule { jobs });
    }

    fn mark_unpruned(&mut self, job: &str) {
        if self.unpruned_set.insert(job.to_string()) {
            self.unpruned.push_back(job.to_string());
        }
    }

    /// Prunes the next few jobs beyond their `retention`, when due.
    fn sweep_retention(&mut self) {
        let now = Instant::now();
        if now < self.next_prune {
            return;
        }
        self.next_prune = now + PRUNE_EVERY;
        for _ in 0..PRUNE_JOBS {
            let Some(name) = self.unpruned.pop_front() else {
                break;
            };
            self.unpruned_set.remove(&name);
            // A removed job's history stays, whole.
            let Some(keep) = self.jobs.get(&name).map(|j| j.spec.retention) else {
                continue;
            };
            match self.store.prune(&name, keep) {
                Ok(n) if n > 0 => {
                    tracing::debug!(job = %name, pruned = n, keep, "old records pruned")
                }
                Ok(_) => {}
                // While writes fail, the store error is already reported.
                Err(e) if self.store_error.is_some() => tracing::debug!("{e}"),
                Err(e) => tracing::warn!("{e}"),
            }
        }
    }

    fn alloc_id(&mut self) -> u64 {
        let id = self.next_run_id;
        self.next_run_id += 1;
        id
    }

    /// Commits the journal, then sends the events and spawns the runs it
    /// planned. A store failure is logged and reported (`store_error`), but
    /// scheduling goes on: a job that should run still runs, and the writes
    /// that failed are kept, in order, and retried first at every later
    /// flush, so the records of a period when the disk was full or
    /// read-only reach the store once it recovers. Order matters: a claim
    /// moves `next_run_at` from T to T', and the next claim of that job
    /// expects T'.
    pub fn flush(&mut self) {
        if !self.journal.is_empty() || !self.held.is_empty() {
            let mut batch = std::mem::take(&mut self.held);
            let retried = batch.len();
            batch.append(&mut self.journal);
            let injected = fail::eval("store::apply", |_| ())
                .map(|()| "store write failed (injected fault)".to_string());
            let started = std::time::Instant::now();
            let mut result = match injected {
                Some(e) => Err(e),
                None => self.store.apply(&batch).map_err(|e| e.to_string()),
            };
            if let Ok(false) = result {
                // With the state lock held this means a bug or a hand edit:
                // keep the records, drop the claims, continue from memory.
                tracing::error!("store refused a claim (next_run_at moved underneath us); writing the records without it and continuing from memory");
                batch.retain(|w| !matches!(w, Write::Claim { .. }));
                result = self.store.apply(&batch).map_err(|e| e.to_string());
            }
            self.store_write
                .observe(STORE_WRITE_BUCKETS, started.elapsed().as_secs_f64());
            match result {
                Ok(_) => {
                    if self.store_error.take().is_some() {
                        tracing::info!(
                            retried,
                            dropped = self.dropped_writes,
                            "store writes succeed again; the writes held in memory are stored"
                        );
                    }
                }
                Err(e) => {
                    self.held = batch;
                    let excess = self.held.len().saturating_sub(MAX_HELD_WRITES);
                    if excess > 0 {
                        // Bounded memory: the oldest go first, and are counted.
                        self.held.drain(..excess);
                        self.dropped_writes += excess as u64;
                    }
                    let msg = format!(
                        "{e}; {} write(s) held in memory and retried every turn{}",
                        self.held.len(),
                        match self.dropped_writes {
                            0 => String::new(),
                            n => format!(", {n} dropped beyond the bound of {MAX_HELD_WRITES}"),
                        }
                    );
                    if self.store_error.is_none() {
                        tracing::error!("store write failed: {msg}");
                    }
                    self.store_error = Some(msg);
                }
            }
        }
        for ev in std::mem::take(&mut self.outbox) {
            self.events.send(ev);
        }
        let spawns = std::mem::take(&mut self.to_spawn);
        // After a forward clock jump, catch-up runs start spread over at
        // most STAGGER instead of all in the same millisecond.
        let step = if std::mem::take(&mut self.stagger) && spawns.len() > 1 {
            (STAGGER / spawns.len() as u32).min(Duration::from_millis(50))
        } else {
            Duration::ZERO
        };
        for (i, (req, stop)) in spawns.into_iter().enumerate() {
            let events = self.events.clone();
            let done = self.done_tx.clone();
            let delay = if req.trigger == Trigger::Catchup {
                step * i as u32
            } else {
                Duration::ZERO
            };
            tokio::task::spawn_local(async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let record = runner::run(req, events.clone(), stop).await;
                events.send(Event::Finish {
                    run: record.clone(),
                });
                let _ = done.send(record);
            });
        }
    }

    /// The earliest instant the loop must wake at.
    pub fn next_deadline(&self) -> Instant {
        let now_wall = wall_now();
        let now = Instant::now();
        let mut deadline = self.next_heartbeat;
        for j in self.jobs.values() {
            if let Some(t) = j.next {
                let wait = t.duration_since(now_wall);
                let at = if wait <= SignedDuration::ZERO {
                    now
                } else {
                    now + Duration::try_from(wait).unwrap_or(Duration::MAX / 4)
                };
                deadline = deadline.min(at);
            }
        }
        deadline
    }

    /// One loop turn: fire what is due, commit, then heartbeat when due.
    pub fn turn(&mut self) {
        self.seq += 1;
        self.guarded("clock check", Self::check_clock);
        // A failing store is reported as `store_error`, not as a failing
        // turn: replacing the worker cannot fix a full or read-only disk
        // and would throw away the writes it holds for retry.
        self.guarded("turn", |s| {
            s.fire_due(wall_now());
            s.flush();
            s.sweep_retention();
        });
        // Not good if anything panicked since the last turn (a command or a
        // finish in between included).
        if !std::mem::take(&mut self.panicked) {
            self.last_good_turn = Some(wall_now());
        }
        if Instant::now() >= self.next_heartbeat && !self.guarded("heartbeat", Self::heartbeat) {
            // No heartbeat this time (the supervisor sees the silence);
            // wait an interval before the next try rather than spin.
            self.next_heartbeat = Instant::now() + self.heartbeat_interval;
        }
    }

    /// Runs a part of the loop's work. A panic in it is caught and logged
    /// at ERROR with its message, and makes the turn not good (so the
    /// heartbeat shows a failing loop), but never ends the worker: a worker
    /// that fails every turn is replaced by the supervisor after
    /// `failing_restart_after`, with the reason in the status.
    fn guarded(&mut self, what: &str, f: impl FnOnce(&mut Self)) -> bool {
        match std::panic::catch_unwind(AssertUnwindSafe(|| f(self))) {
            Ok(()) => true,
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic".into());
                tracing::error!(seq = self.seq, "scheduler {what} panicked: {msg}");
                self.panicked = true;
                false
            }
        }
    }

    /// Notices a jump of the wall clock against the monotonic one, and a
    /// suspend (boot time against monotonic). A forward jump needs nothing
    /// more: the fires it skipped over are due now and go through the
    /// misfire rules. A backward jump cannot fire a time twice: next fires
    /// only ever move forward. Each is reported and logged with its size.
    fn check_clock(&mut self) {
        let now = Clocks::read();
        let prev = std::mem::replace(&mut self.last_clocks, now);
        let Some((jump, kind)) = clock_event(prev, now) else {
            return;
        };
        let wall = now.wall;
        let (mut jobs_due, mut fires_due) = (0u32, 0u32);
        for j in self.jobs.values() {
            let mut cursor = j.next.filter(|t| *t <= wall);
            if cursor.is_some() {
                jobs_due += 1;
            }
            let mut n = 0;
            while let Some(t) = cursor.filter(|t| *t <= wall && n < MAX_DUE_PER_TURN) {
                n += 1;
                cursor = j.spec.schedule.next_after(t, Some(t));
            }
            fires_due = fires_due.saturating_add(n as u32);
        }
        self.outbox
            .push(Event::ClockJump(cronwarden_shared::status::ClockJump {
                at: wall,
                jump_ms: jump.as_millis() as i64,
                jobs_due,
                fires_due,
                kind,
            }));
        // Many catch-up runs at once after a forward jump: spread them.
        self.stagger = !jump.is_negative() && jobs_due > 1;
        tracing::warn!(
            jump_ms = jump.as_millis(),
            direction = if jump.is_negative() {
                "backward"
            } else {
                "forward"
            },
            kind = ?kind,
            jobs_due,
            fires_due,
            "wall clock jumped; fires it skipped are handled as misfires, none fires twice"
        );
    }

    fn heartbeat(&mut self) {
        let running = self.jobs.values().map(|j| j.running.len() as u32).sum();
        let mut progress: Vec<RunProgress> = self
            .jobs
            .values()
            .flat_map(|j| j.running.iter())
            .map(|r| {
                let p = r.progress.borrow();
                RunProgress {
                    run_id: r.run_id,
                    bytes: p.bytes,
                    last_output_at: p.last_output_at,
                    last_line: p.last_line.clone(),
                }
            })
            .collect();
        progress.sort_by_key(|p| p.run_id);
        progress.truncate(100);
        self.events.send(Event::Heartbeat {
            seq: self.seq,
            at: wall_now(),
            last_good_turn_at: self.last_good_turn,
            running,
            store_error: self.store_error.clone(),
            armed: Some(ArmedDigest::of(
                self.jobs.iter().map(|(n, j)| (n.as_str(), j.next)),
            )),
            progress,
            stats: Some(WorkerStats {
                store_write_seconds: self.store_write.clone(),
                log_lines_dropped: cronwarden_shared::stats::log_lines_dropped(),
            }),
        });
        self.next_heartbeat = Instant::now() + self.heartbeat_interval;
    }

    fn fire_due(&mut self, now: Timestamp) {
        fail::fail_point!("worker::turn");
        let names: Vec<String> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.next.is_some_and(|t| t <= now))
            .map(|(n, _)| n.clone())
            .collect();
        for name in names {
            let Some(job) = self.jobs.get_mut(&name) else {
                continue;
            };
            let mut due = vec![];
            let mut cursor = job.next;
            while let Some(t) = cursor {
                if t > now || due.len() >= MAX_DUE_PER_TURN {
                    break;
                }
                due.push(t);
                cursor = job.spec.schedule.next_after(t, Some(t));
            }
            self.journal.push(Write::Claim {
                job: name.clone(),
                from: job.next,
                to: cursor,
                last_scheduled_at: due.last().copied(),
            });
            job.next = cursor;
            job.anchor = due.last().copied();
            if fail::eval("worker::drop_fire", |arg| arg)
                .flatten()
                .as_deref()
                == Some(name.as_str())
            {
                // Fault injection: the silent loss of a job's fires.
                continue;
            }
            self.dispatch(&name, due, now);
        }
    }

    fn skip(&mut self, job: &str, t: Timestamp, reason: SkipReason, busy: Option<u64>) {
        let run_id = self.alloc_id();
        let next_fire_at = self.jobs.get(job).and_then(|j| j.next);
        if reason != SkipReason::Paused {
            tracing::warn!(job, run = run_id, scheduled_at = %t, ?reason, busy_run = ?busy, "fire skipped");
        }
        self.mark_unpruned(job);
        let mut rec = RunRecord::new(run_id, job, vec![t], Trigger::Schedule, Outcome::Skipped);
        rec.finished_at = Some(wall_now());
        rec.skip_reason = Some(reason);
        rec.error = busy.map(|b| format!("run {b} was still running"));
        self.journal.push(Write::Insert(rec));
        self.outbox.push(Event::Skip {
            job: job.to_string(),
            run_id,
            scheduled_at: t,
            reason,
            busy_run_id: busy,
            next_fire_at,
        });
    }

    fn dispatch(&mut self, name: &str, due: Vec<Timestamp>, now: Timestamp) {
        let Some(job) = self.jobs.get(name) else {
            return;
        };
        let grace = SignedDuration::try_from(job.spec.misfire_grace).unwrap_or(SignedDuration::MAX);
        let (stale, fresh): (Vec<_>, Vec<_>) = due
            .into_iter()
            .partition(|t| now.duration_since(*t) > grace);
        for t in stale {
            self.skip(name, t, SkipReason::Misfire, None);
        }
        let Some(job) = self.jobs.get_mut(name) else {
            return;
        };
        if fresh.is_empty() {
            return;
        }
        if job.paused {
            for t in fresh {
                self.skip(name, t, SkipReason::Paused, None);
            }
            return;
        }
        if let Some(busy) = job.running.first().map(|r| r.run_id) {
            match job.spec.overlap {
                Overlap::Skip => {
                    for t in fresh {
                        self.skip(name, t, SkipReason::Overlap, Some(busy));
                    }
                    return;
                }
                Overlap::Queue => {
                    if job.pending.is_none() {
                        // Recorded now (as in flight), so a crash before it
                        // starts still leaves a record: it becomes `lost`.
                        let id = self.alloc_id();
                        let Some(job) = self.jobs.get_mut(name) else {
                            return;
                        };
                        job.pending = Some((id, fresh.clone()));
                        let next_fire_at = job.next;
                        let mut rec = self.run_record(id, name, &fresh);
                        rec.started_at = None;
                        self.journal.push(Write::Insert(rec));
                        self.outbox.push(Event::Queued {
                            job: name.to_string(),
                            run_id: id,
                            covers: fresh,
                            next_fire_at,
                        });
                    } else {
                        for t in fresh {
                            self.skip(name, t, SkipReason::Overlap, Some(busy));
                        }
                    }
                    return;
                }
                Overlap::Replace => {
                    for r in &job.running {
                        r.stop.stop(StopReason::Killed);
                    }
                }
                Overlap::Allow => {}
            }
        }
        self.start(name, fresh);
    }

    /// Plans a run for the given scheduled times (empty: a manual run); it
    /// is spawned by the next flush, after its record is committed.
    fn start(&mut self, name: &str, covers: Vec<Timestamp>) {
        let run_id = self.alloc_id();
        self.start_as(run_id, name, covers);
    }

    /// The record of a run starting now (stored `running` until finished).
    fn run_record(&self, id: u64, name: &str, covers: &[Timestamp]) -> RunRecord {
        let mut r = RunRecord::new(
            id,
            name,
            covers.to_vec(),
            trigger_for(covers),
            Outcome::Running,
        );
        r.started_at = Some(wall_now());
        r
    }

    fn start_as(&mut self, run_id: u64, name: &str, covers: Vec<Timestamp>) {
        let record = self.run_record(run_id, name, &covers);
        let Some(job) = self.jobs.get_mut(name) else {
            return;
        };
        let trigger = trigger_for(&covers);
        let req = RunRequest {
            run_id,
            job: job.spec.clone(),
            scheduled_at: covers.last().copied(),
            covers,
            trigger,
            next_fire_at: job.next,
            progress: Default::default(),
            output_dir: job
                .spec
                .keep_output
                .map(|_| self.output_root.join(&job.spec.name)),
        };
        let stop = StopHandle::default();
        job.running.push(Running {
            run_id,
            stop: stop.clone(),
            progress: req.progress.clone(),
        });
        self.journal.push(Write::Insert(record));
        self.to_spawn.push((req, stop));
    }

    /// A run ended: record it, release its busy flag, start a queued fire.
    pub fn finished(&mut self, record: &RunRecord) {
        self.guarded("finish", |s| s.finished_unguarded(record));
    }

    fn finished_unguarded(&mut self, record: &RunRecord) {
        self.journal.push(Write::Finish(record.clone()));
        self.mark_unpruned(&record.job);
        let Some(job) = self.jobs.get_mut(&record.job) else {
            return;
        };
        job.running.retain(|r| r.run_id != record.id);
        if job.running.is_empty() {
            if let Some((id, covers)) = job.pending.take() {
                let name = record.job.clone();
                self.start_as(id, &name, covers);
            }
        }
    }

    /// Carries out a command. One that panics is answered with an error
    /// (when it carried a request id), so its caller is not left waiting.
    pub fn command(&mut self, cmd: Command, config_path: &mut std::path::PathBuf) {
        let (name, request) = match &cmd {
            Command::Trigger { request, .. } => ("trigger", *request),
            Command::Pause { request, .. } => ("pause", *request),
            Command::Resume { request, .. } => ("resume", *request),
            Command::Configure { .. } => ("configure", None),
            Command::ReportSchedule | Command::Shutdown => ("", None),
        };
        if !self.guarded("command", |s| s.command_unguarded(cmd, config_path)) {
            let error = format!("the worker panicked carrying out {name}; see its log");
            match request {
                Some(_) => self.answer(name, request, Err(error)),
                None if !name.is_empty() => self.command_failed(name, error),
                None => {}
            }
        }
    }

    fn command_unguarded(&mut self, cmd: Command, config_path: &mut std::path::PathBuf) {
        fail::fail_point!("worker::command");
        match cmd {
            Command::Configure { path, source } => match Config::parse(&path, &source) {
                Ok(config) => {
                    *config_path = path;
                    self.configure(&config);
                    tracing::info!(jobs = config.jobs.len(), "configuration applied");
                }
                Err(e) => self.command_failed("configure", e.to_string()),
            },
            Command::Trigger { job, request } => {
                let refusal = match self.jobs.get(&job) {
                    None => Some(format!("no job named {job:?}")),
                    Some(j) => match (j.running.first(), j.spec.overlap) {
                        (Some(busy), overlap) if overlap != Overlap::Allow => Some(format!(
                            "job {job:?} is still running (run {}) and its overlap policy is {}",
                            busy.run_id,
                            overlap.as_str()
                        )),
                        _ => None,
                    },
                };
                match refusal {
                    Some(error) => self.answer("trigger", request, Err(error)),
                    None => {
                        tracing::info!(job, "manual trigger");
                        let run_id = self.alloc_id();
                        self.start_as(run_id, &job, vec![]);
                        self.answer("trigger", request, Ok(Some(run_id)));
                    }
                }
            }
            Command::Pause { job, request } => self.set_paused("pause", job, request, true),
            Command::Resume { job, request } => self.set_paused("resume", job, request, false),
            Command::ReportSchedule => self.send_schedule(),
            Command::Shutdown => {}
        }
    }

    fn set_paused(&mut self, command: &str, job: String, request: Option<u64>, paused: bool) {
        let Some(j) = self.jobs.get_mut(&job) else {
            return self.answer(command, request, Err(format!("no job named {job:?}")));
        };
        j.paused = paused;
        tracing::info!(job, paused, "pause state changed");
        self.journal.push(Write::Paused { job, paused });
        self.send_schedule();
        self.answer(command, request, Ok(None));
    }

    /// Answers a command: a `reply` when it carried a request id, else a
    /// `command_failed` event for failures.
    fn answer(&mut self, command: &str, request: Option<u64>, result: Result<Option<u64>, String>) {
        match (request, result) {
            (Some(request), Ok(run_id)) => self.outbox.push(Event::Reply {
                request,
                ok: true,
                error: None,
                run_id,
            }),
            (Some(request), Err(error)) => {
                tracing::warn!(command, "{error}");
                self.outbox.push(Event::Reply {
                    request,
                    ok: false,
                    error: Some(error),
                    run_id: None,
                })
            }
            (None, Ok(_)) => {}
            (None, Err(error)) => self.command_failed(command, error),
        }
    }

    fn command_failed(&mut self, command: &str, error: String) {
        tracing::warn!(command, "{error}");
        self.outbox.push(Event::CommandFailed {
            command: command.into(),
            error,
        });
    }

    /// Stops every run; returns how many were running. Queued fires will
    /// not run now: their records say `worker_down`.
    fn stop_all(&mut self) -> usize {
        let queued: Vec<(String, u64, Vec<Timestamp>)> = self
            .jobs
            .iter_mut()
            .filter_map(|(n, j)| j.pending.take().map(|(id, c)| (n.clone(), id, c)))
            .collect();
        for (name, id, covers) in queued {
            let mut rec = self.run_record(id, &name, &covers);
            rec.started_at = None;
            rec.finished_at = Some(wall_now());
            rec.outcome = Outcome::Skipped;
            rec.skip_reason = Some(SkipReason::WorkerDown);
            rec.error = Some("queued behind a running run when the worker shut down".into());
            self.journal.push(Write::Finish(rec));
        }
        self.flush();
        let mut n = 0;
        for j in self.jobs.values() {
            for r in &j.running {
                r.stop.stop(StopReason::Shutdown);
                n += 1;
            }
        }
        n
    }

    fn longest_stop(&self) -> Duration {
        self.jobs
            .values()
            .filter(|j| !j.running.is_empty())
            .map(|j| j.spec.kill_grace)
            .max()
            .unwrap_or_default()
            + runner::REAP_BOUND
            + runner::DRAIN
            + Duration::from_secs(2)
    }
}

/// The three clocks at one moment: wall time (as the scheduler sees it),
/// CLOCK_MONOTONIC (stops while the machine is suspended) and
/// CLOCK_BOOTTIME (does not).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Clocks {
    wall: Timestamp,
    mono: Duration,
    boot: Duration,
}

impl Clocks {
    fn read() -> Clocks {
        use nix::time::{clock_gettime, ClockId};
        let read = |id| clock_gettime(id).map(Duration::from).unwrap_or_default();
        let mono = read(ClockId::CLOCK_MONOTONIC);
        let boot = read(ClockId::CLOCK_BOOTTIME);
        Clocks {
            wall: wall_now(),
            mono,
            boot,
        }
    }
}

/// What moved between two readings, if anything did: the wall clock's
/// movement beyond the monotonic one, and whether that was a suspend
/// (boot time ran ahead of monotonic by more than [`CLOCK_JUMP`]) or a
/// step of the wall clock. Movements within `CLOCK_JUMP` are nothing.
fn clock_event(
    prev: Clocks,
    now: Clocks,
) -> Option<(SignedDuration, cronwarden_shared::status::ClockJumpKind)> {
    use cronwarden_shared::status::ClockJumpKind;
    let signed = |d: Duration| SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX);
    let mono_step = signed(now.mono.saturating_sub(prev.mono));
    let boot_step = signed(now.boot.saturating_sub(prev.boot));
    let jump = now.wall.duration_since(prev.wall) - mono_step;
    let limit = signed(CLOCK_JUMP);
    if boot_step - mono_step > limit {
        Some((jump, ClockJumpKind::Suspend))
    } else if jump.abs() > limit {
        Some((jump, ClockJumpKind::Step))
    } else {
        None
    }
}

/// Wall time as the scheduler sees it. In test builds a fail point can add
/// an offset read from a file (`worker::clock_offset=return(PATH)`, seconds),
/// so a test can jump the worker's clock without touching the machine's.
fn wall_now() -> Timestamp {
    let now = Timestamp::now();
    match fail::eval("worker::clock_offset", |path| path) {
        Some(Some(path)) => {
            let secs: i64 = std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            now.checked_add(SignedDuration::from_secs(secs))
                .unwrap_or(now)
        }
        _ => now,
    }
}

/// tokio's timer has millisecond granularity and rounds up, which alone
/// would make every fire about 1 ms late. The loop sleeps with tokio until
/// just before the deadline and covers the rest with [`precise_wait`].
const PRECISE: Duration = Duration::from_millis(2);

fn coarse(deadline: Instant) -> Instant {
    deadline.checked_sub(PRECISE).unwrap_or(deadline)
}

/// Blocks the loop for the last < 2 ms before a deadline (a high-resolution
/// kernel sleep): precise fire times at the cost of at most 2 ms of command
/// latency.
fn precise_wait(deadline: Instant) {
    let left = deadline.saturating_duration_since(Instant::now());
    if !left.is_zero() && left <= PRECISE + Duration::from_millis(1) {
        std::thread::sleep(left);
    }
}

/// The worker's whole life: adopt descriptors, wait for the config, loop.
pub async fn run(args: WorkerArgs) -> Result<(), String> {
    LocalSet::new().run_until(run_local(args)).await
}

async fn run_local(args: WorkerArgs) -> Result<(), String> {
    // Held, never read: keeping the inherited lock open keeps it locked.
    let _lock = args
        .lock_fd
        .map(sys::adopt)
        .transpose()
        .map_err(|e| format!("inherited lock descriptor: {e}"))?;
    let events_fd = sys::adopt(args.events_fd)
        .map_err(|e| format!("event pipe descriptor {}: {e}", args.events_fd))?;
    let (events, mut broken, writer) =
        events::start(events_fd).map_err(|e| format!("event pipe: {e}"))?;

    let (cmd_tx, mut cmd_rx) = mpsc::channel::<Command>(1024);
    let stdin = pipe::Receiver::from_owned_fd(sys::adopt(0).map_err(|e| format!("stdin: {e}"))?)
        .map_err(|e| format!("stdin is not a pipe from the supervisor: {e}"))?;
    tokio::task::spawn_local(async move {
        // A bad line is skipped, never taken for EOF (which would end the worker).
        let mut lines = FramedRead::new(stdin, LineCodec::new(MAX_COMMAND_LINE));
        while let Some(Ok(frame)) = lines.next().await {
            let cmd = match frame {
                Frame::Line(line) => serde_json::from_slice::<Command>(&line),
                Frame::TooLong => {
                    tracing::warn!("ignoring a command line longer than {MAX_COMMAND_LINE} bytes");
                    continue;
                }
            };
            match cmd {
                Ok(cmd) => {
                    if cmd_tx.send(cmd).await.is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!("ignoring undecodable command line: {e}"),
            }
        }
        // EOF: the supervisor is gone; dropping cmd_tx tells the loop.
    });

    let config = match tokio::time::timeout(CONFIGURE_WITHIN, cmd_rx.recv()).await {
        Ok(Some(Command::Configure { path, source })) => {
            Config::parse(&path, &source).map_err(|e| format!("configuration refused:\n{e}"))?
        }
        Ok(Some(other)) => {
            return Err(format!("expected a configure command first, got {other:?}"))
        }
        Ok(None) => return Err("the supervisor closed the command pipe before configuring".into()),
        Err(_) => {
            return Err(format!(
                "no configuration within {}s",
                CONFIGURE_WITHIN.as_secs()
            ))
        }
    };
    let mut config_path = config.path.clone();

    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<RunRecord>();
    events.send(Event::Hello {
        pid: std::process::id(),
        version: VERSION.to_string(),
        started_at: wall_now(),
    });
    // Fault injection: a slow start after hello (a long WAL recovery). An
    // async sleep, so the hello itself goes out first.
    if let Some(ms) = fail::eval("worker::after_hello", |arg| {
        arg.and_then(|a| a.parse().ok())
    })
    .flatten()
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let store_path = config.state_dir.join(store::FILE_NAME);
    let mut store = Store::open(&store_path).map_err(|e| e.to_string())?;
    // Runs left `running` belonged to a worker that died: they are lost.
    for lost in store.recover_lost().map_err(|e| e.to_string())? {
        tracing::error!(job = %lost.job, run = lost.id, "run recorded lost: its worker died while it was running");
        events.send(Event::Finish { run: lost });
    }
    let first_run_id = args
        .first_run_id
        .max(store.max_run_id().map_err(|e| e.to_string())? + 1);
    let mut sched = Scheduler::new(&config, store, events.clone(), done_tx, first_run_id);
    tracing::info!(jobs = config.jobs.len(), "worker started");

    loop {
        sched.turn();
        let deadline = sched.next_deadline();
        tokio::select! {
            biased;
            _ = term.recv() => { tracing::info!("SIGTERM: stopping jobs"); break; }
            _ = &mut broken => break,
            cmd = cmd_rx.recv() => match cmd {
                None => { tracing::warn!("supervisor closed the command pipe: stopping jobs"); break; }
                Some(Command::Shutdown) => { tracing::info!("shutdown requested: stopping jobs"); break; }
                Some(cmd) => { sched.command(cmd, &mut config_path); sched.guarded("flush", Scheduler::flush); }
            },
            Some(record) = done_rx.recv() => {
                sched.finished(&record);
                // Record every run that ended meanwhile in the same commit.
                while let Ok(record) = done_rx.try_recv() {
                    sched.finished(&record);
                }
                sched.guarded("flush", Scheduler::flush);
            }
                        _ = tokio::time::sleep_until(coarse(deadline)) => precise_wait(deadline),
        }
    }

    // Shutdown: every run gets SIGTERM, then SIGKILL after its grace; wait
    // for their records (bounded), then flush the event pipe (bounded).
    let mut left = sched.stop_all();
    let until = Instant::now() + sched.longest_stop();
    while left > 0 {
        match tokio::time::timeout_at(until, done_rx.recv()).await {
            Ok(Some(record)) => {
                sched.finished(&record);
                sched.flush();
                left -= 1;
            }
            _ => break,
        }
    }
    drop(sched);
    drop(events);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cronwarden_shared::status::ClockJumpKind;

    fn at(wall_s: i64, mono_s: u64, boot_s: u64) -> Clocks {
        Clocks {
            wall: Timestamp::from_second(1_800_000_000 + wall_s).unwrap(),
            mono: Duration::from_secs(mono_s),
            boot: Duration::from_secs(boot_s),
        }
    }

    #[test]
    fn clock_events_tell_a_step_from_a_suspend() {
        let t0 = at(0, 100, 100);
        // Ordinary progress, and drift within the bound: nothing.
        assert_eq!(clock_event(t0, at(1, 101, 101)), None);
        assert_eq!(clock_event(t0, at(3, 101, 101)), None);
        // The wall clock set 30 s ahead, or 30 s back: steps.
        assert_eq!(
            clock_event(t0, at(31, 101, 101)),
            Some((SignedDuration::from_secs(30), ClockJumpKind::Step))
        );
        assert_eq!(
            clock_event(t0, at(-29, 101, 101)),
            Some((SignedDuration::from_secs(-30), ClockJumpKind::Step))
        );
        // An hour asleep: monotonic stood still, boot time and the wall
        // clock ran on.
        assert_eq!(
            clock_event(t0, at(3601, 101, 3701)),
            Some((SignedDuration::from_secs(3600), ClockJumpKind::Suspend))
        );
        // A suspend is one even if the wall clock was not kept (no RTC).
        assert_eq!(
            clock_event(t0, at(1, 101, 3701)),
            Some((SignedDuration::ZERO, ClockJumpKind::Suspend))
        );
        // A slow turn (the loop stopped, not the machine) is no event.
        assert_eq!(clock_event(t0, at(60, 160, 160)), None);
    }
}
