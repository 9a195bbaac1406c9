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
//! Every scheduled fire time yields exactly one event: a `fire` (and later a
//! `finish`) or a `skip` with its reason. Fires missed while the loop could
//! not run (a stopped process, a slow turn) are coalesced into one run that
//! `covers` them if they are younger than the job's misfire grace, and
//! skipped as `misfire` otherwise.

use std::{collections::BTreeMap, panic::AssertUnwindSafe, sync::Arc, time::Duration};

use cronwarden_shared::{
    config::{Config, JobSpec, Overlap},
    status::{RunRecord, SkipReason, Trigger},
    wire::{Armed, Command, Event, MAX_LINE},
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
use tokio_util::codec::{FramedRead, LinesCodec};

use crate::{
    events::{self, EventTx},
    fds,
    runner::{self, RunRequest, StopHandle, StopReason},
    WorkerArgs,
};

/// How long the worker waits for its first `configure` command.
const CONFIGURE_WITHIN: Duration = Duration::from_secs(30);
/// At most this many missed fires of one job are enumerated in one turn
/// (a per-second job after a day of downtime); the rest are skipped in
/// later turns, so one turn stays short.
const MAX_DUE_PER_TURN: usize = 10_000;

struct Running {
    run_id: u64,
    stop: StopHandle,
}

struct JobRt {
    spec: Arc<JobSpec>,
    next: Option<Timestamp>,
    /// The last scheduled time handled: `@every` keeps its cadence from it.
    anchor: Option<Timestamp>,
    paused: bool,
    running: Vec<Running>,
    /// `overlap = queue`: the one fire waiting for the current run.
    pending: Option<Vec<Timestamp>>,
}

/// All scheduling state. Methods never await: the loop stays responsive.
pub struct Scheduler {
    jobs: BTreeMap<String, JobRt>,
    events: EventTx,
    done_tx: mpsc::UnboundedSender<RunRecord>,
    next_run_id: u64,
    heartbeat_interval: Duration,
    seq: u64,
    last_good_turn: Option<Timestamp>,
    next_heartbeat: Instant,
}

impl Scheduler {
    pub fn new(
        config: &Config,
        events: EventTx,
        done_tx: mpsc::UnboundedSender<RunRecord>,
        first_run_id: u64,
    ) -> Self {
        let mut s = Scheduler {
            jobs: BTreeMap::new(),
            events,
            done_tx,
            next_run_id: first_run_id.max(1),
            heartbeat_interval: config.watchdog.heartbeat_interval,
            seq: 0,
            last_good_turn: None,
            next_heartbeat: Instant::now(),
        };
        s.configure(config);
        s
    }

    /// Applies a (new) config: removed jobs are dropped at once (their
    /// running runs finish, but they never fire again), new jobs are armed,
    /// jobs whose schedule changed are re-armed from now.
    pub fn configure(&mut self, config: &Config) {
        let now = Timestamp::now();
        self.heartbeat_interval = config.watchdog.heartbeat_interval;
        let mut old = std::mem::take(&mut self.jobs);
        for spec in &config.jobs {
            let spec = Arc::new(spec.clone());
            let rt = match old.remove(&spec.name) {
                Some(mut rt)
                    if rt.spec.schedule.expr() == spec.schedule.expr()
                        && rt.spec.timezone == spec.timezone =>
                {
                    rt.spec = spec;
                    rt
                }
                Some(mut rt) => {
                    rt.next = spec.schedule.next_after(now, None);
                    rt.anchor = None;
                    rt.spec = spec;
                    rt
                }
                None => JobRt {
                    next: spec.schedule.next_after(now, None),
                    spec,
                    anchor: None,
                    paused: false,
                    running: vec![],
                    pending: None,
                },
            };
            self.jobs.insert(rt.spec.name.clone(), rt);
        }
        for (name, rt) in old {
            tracing::info!(job = %name, running = rt.running.len(), "job removed from the config; it will not fire again");
        }
        self.send_schedule();
    }

    fn send_schedule(&self) {
        let jobs = self
            .jobs
            .values()
            .map(|j| Armed {
                job: j.spec.name.clone(),
                next_fire_at: j.next,
                paused: j.paused,
            })
            .collect();
        self.events.send(Event::Schedule { jobs });
    }

    fn alloc_id(&mut self) -> u64 {
        let id = self.next_run_id;
        self.next_run_id += 1;
        id
    }

    /// The earliest instant the loop must wake at.
    pub fn next_deadline(&self) -> Instant {
        let now_wall = Timestamp::now();
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

    /// One loop turn: fire what is due, then heartbeat when due.
    pub fn turn(&mut self) {
        self.seq += 1;
        let ok =
            match std::panic::catch_unwind(AssertUnwindSafe(|| self.fire_due(Timestamp::now()))) {
                Ok(()) => true,
                Err(panic) => {
                    let msg = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "non-string panic".into());
                    tracing::error!(seq = self.seq, "scheduler turn panicked: {msg}");
                    false
                }
            };
        if ok {
            self.last_good_turn = Some(Timestamp::now());
        }
        if Instant::now() >= self.next_heartbeat {
            self.heartbeat();
        }
    }

    fn heartbeat(&mut self) {
        let running = self.jobs.values().map(|j| j.running.len() as u32).sum();
        self.events.send(Event::Heartbeat {
            seq: self.seq,
            at: Timestamp::now(),
            last_good_turn_at: self.last_good_turn,
            running,
        });
        self.next_heartbeat = Instant::now() + self.heartbeat_interval;
    }

    fn fire_due(&mut self, now: Timestamp) {
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
            job.next = cursor;
            job.anchor = due.last().copied();
            self.dispatch(&name, due, now);
        }
    }

    fn skip(&mut self, job: &str, t: Timestamp, reason: SkipReason, busy: Option<u64>) {
        let run_id = self.alloc_id();
        let next_fire_at = self.jobs.get(job).and_then(|j| j.next);
        if reason != SkipReason::Paused {
            tracing::warn!(job, run = run_id, scheduled_at = %t, ?reason, busy_run = ?busy, "fire skipped");
        }
        self.events.send(Event::Skip {
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
                        job.pending = Some(fresh);
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

    /// Starts a run for the given scheduled times (empty: a manual run).
    fn start(&mut self, name: &str, covers: Vec<Timestamp>) {
        let run_id = self.alloc_id();
        let Some(job) = self.jobs.get_mut(name) else {
            return;
        };
        let trigger = match covers.len() {
            0 => Trigger::Manual,
            1 => Trigger::Schedule,
            _ => Trigger::Catchup,
        };
        let req = RunRequest {
            run_id,
            job: job.spec.clone(),
            scheduled_at: covers.last().copied(),
            covers,
            trigger,
            next_fire_at: job.next,
        };
        let stop = StopHandle::default();
        job.running.push(Running {
            run_id,
            stop: stop.clone(),
        });
        let events = self.events.clone();
        let done = self.done_tx.clone();
        tokio::task::spawn_local(async move {
            let record = runner::run(req, events.clone(), stop).await;
            events.send(Event::Finish {
                run: record.clone(),
            });
            let _ = done.send(record);
        });
    }

    /// A run ended: release its busy flag and start a queued fire.
    pub fn finished(&mut self, record: &RunRecord) {
        let Some(job) = self.jobs.get_mut(&record.job) else {
            return;
        };
        job.running.retain(|r| r.run_id != record.id);
        if job.running.is_empty() {
            if let Some(covers) = job.pending.take() {
                let name = record.job.clone();
                self.start(&name, covers);
            }
        }
    }

    pub fn command(&mut self, cmd: Command, config_path: &mut std::path::PathBuf) {
        match cmd {
            Command::Configure { path, source } => match Config::parse(&path, &source) {
                Ok(config) => {
                    *config_path = path;
                    self.configure(&config);
                    tracing::info!(jobs = config.jobs.len(), "configuration applied");
                }
                Err(e) => self.command_failed("configure", e.to_string()),
            },
            Command::Trigger { job } => {
                let Some(j) = self.jobs.get(&job) else {
                    return self.command_failed("trigger", format!("no job named {job:?}"));
                };
                if let (Some(busy), false) = (j.running.first(), j.spec.overlap == Overlap::Allow) {
                    let msg = format!(
                        "job {job:?} is still running (run {}) and its overlap policy is {}",
                        busy.run_id,
                        j.spec.overlap.as_str()
                    );
                    return self.command_failed("trigger", msg);
                }
                self.start(&job, vec![]);
            }
            Command::Pause { job } | Command::Resume { job } if !self.jobs.contains_key(&job) => {
                self.command_failed("pause", format!("no job named {job:?}"));
            }
            Command::Pause { job } => {
                if let Some(j) = self.jobs.get_mut(&job) {
                    j.paused = true;
                }
                self.send_schedule();
            }
            Command::Resume { job } => {
                if let Some(j) = self.jobs.get_mut(&job) {
                    j.paused = false;
                }
                self.send_schedule();
            }
            Command::Shutdown => {}
        }
    }

    fn command_failed(&self, command: &str, error: String) {
        tracing::warn!(command, "{error}");
        self.events.send(Event::CommandFailed {
            command: command.into(),
            error,
        });
    }

    /// Stops every run; returns how many were running.
    fn stop_all(&mut self) -> usize {
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

/// The worker's whole life: adopt descriptors, wait for the config, loop.
pub async fn run(args: WorkerArgs) -> Result<(), String> {
    LocalSet::new().run_until(run_local(args)).await
}

async fn run_local(args: WorkerArgs) -> Result<(), String> {
    // Held, never read: keeping the inherited lock open keeps it locked.
    let _lock = args
        .lock_fd
        .map(fds::adopt)
        .transpose()
        .map_err(|e| format!("inherited lock descriptor: {e}"))?;
    let events_fd = fds::adopt(args.events_fd)
        .map_err(|e| format!("event pipe descriptor {}: {e}", args.events_fd))?;
    let (events, mut broken, writer) =
        events::start(events_fd).map_err(|e| format!("event pipe: {e}"))?;

    let (cmd_tx, mut cmd_rx) = mpsc::channel::<Command>(1024);
    let stdin = pipe::Receiver::from_owned_fd(fds::adopt(0).map_err(|e| format!("stdin: {e}"))?)
        .map_err(|e| format!("stdin is not a pipe from the supervisor: {e}"))?;
    tokio::task::spawn_local(async move {
        let mut lines = FramedRead::new(stdin, LinesCodec::new_with_max_length(MAX_LINE));
        while let Some(line) = lines.next().await {
            match line {
                Ok(line) => match serde_json::from_str::<Command>(&line) {
                    Ok(cmd) => {
                        if cmd_tx.send(cmd).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!("ignoring undecodable command line: {e}"),
                },
                Err(e) => tracing::warn!("ignoring command line: {e}"),
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
        started_at: Timestamp::now(),
    });
    let mut sched = Scheduler::new(&config, events.clone(), done_tx, args.first_run_id);
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
                Some(cmd) => sched.command(cmd, &mut config_path),
            },
            Some(record) = done_rx.recv() => sched.finished(&record),
            _ = tokio::time::sleep_until(deadline) => {}
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
