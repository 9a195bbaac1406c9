//! The scheduling loop: the imperative shell around [`crate::plan`].
//!
//! One task owns all scheduling state; it sleeps until the earliest of the
//! next fire (one host and a healthy store: `plan::LEAD` before it, to
//! decide and commit it ahead; several hosts: its claim ahead,
//! `cluster::AHEAD` before it, and the instant of a fire claimed ahead) and
//! the next heartbeat, or until a command or a finished run
//! arrives (the shape of mini-redis's expiry task). For each wake it reads
//! the clocks, feeds the plan, and carries out the plan's effects in order:
//! the writes are committed by the [`Journal`] in one transaction (on the
//! [`Writer`] thread; the loop waits for it at most [`WRITE_WAIT`]), then
//! the events are sent, runs stopped and runs spawned, so every fire the
//! supervisor hears of is durable, or, when the store is slow or failing,
//! its claim was copied to the supervisor first (`claimed`). A burst is
//! fired in chunks, each committed and its starts handed over before the
//! next is planned (`fire`). A *turn* (a wake by the timer or
//! after any input) fires what is due, then, when due, writes a heartbeat
//! carrying the turn's sequence number and the time of the last turn that
//! completed without error. A panic inside a turn is caught and logged;
//! the loop goes on and the heartbeat shows the failing turns.
//!
//! When the store fails (ENOSPC, EIO, read-only), the journal holds the
//! writes and retries them; scheduling and runs go on, the heartbeat
//! carries the error, and the supervisor raises `store_error` without
//! replacing the worker. The store file's side of the loop (writes handed
//! to the writer, settling at exit, the file's identity) is `store_file`;
//! the heartbeat, whose first ends start-up (its pages handed back,
//! `cronwarden_shared::footprint`), is `heartbeat`.

use std::{
    collections::BTreeMap, panic::AssertUnwindSafe, path::PathBuf, sync::Arc, time::Duration,
};

use cronwarden_shared::{
    alarm::Alarm,
    config::{Config, Source},
    status::{Outcome, RunRecord},
    store::{Store, Write},
    wire::{Command, Event, Frame, LineCodec, MAX_COMMAND_LINE},
    VERSION,
};
use futures_util::StreamExt;
use jiff::Timestamp;
use tokio::{
    net::unix::pipe,
    signal::unix::{signal, SignalKind},
    sync::mpsc,
    task::LocalSet,
    time::Instant,
};
use tokio_util::codec::FramedRead;

use crate::{
    cgroup::Hierarchy,
    clock::{wall_now, Clocks},
    cluster::{self, Cluster},
    error::WorkerError,
    events::{self, EventTx},
    journal::Journal,
    kill,
    plan::{self, Effects, Plan},
    retention::Pruner,
    runner::{self, StopHandle, StopReason},
    sweep, sys,
    takeover::{take_over_store, Adoption, TakeOver},
    writer::{file_identity, Writer},
    WorkerArgs,
};

mod fire;
mod heartbeat;
mod store_file;

/// How long the worker waits for its first `configure` command.
const CONFIGURE_WITHIN: Duration = Duration::from_secs(30);

/// What the loop keeps of a run in progress (stop, progress, record).
struct Running {
    stop: StopHandle,
    progress: crate::output::SharedProgress,
    /// Its record as committed at its start, to write back into a store
    /// recreated while it runs.
    record: RunRecord,
}

/// How long the loop waits for a batch's commit before it goes on (the
/// batch then counts as held until the writer reports).
const WRITE_WAIT: Duration = Duration::from_millis(50);
/// A batch in flight this long is reported as `store_error`.
const SLOW_WRITE: Duration = Duration::from_secs(1);

/// How long a run waits for the supervisor's copy of its claim to be in
/// the event pipe while the store fails.
const CLAIM_COPY_WITHIN: Duration = Duration::from_secs(1);

/// How often the store file's identity (device, inode) is checked.
const IDENTITY_EVERY: Duration = Duration::from_secs(1);
/// How long a lost store file stays reported in `store_error` after it
/// was recreated (so the supervisor surely sees it and alerts).
const IDENTITY_NOTE_FOR: Duration = Duration::from_secs(60);

/// The plan, and everything it must not touch: the store, the journal,
/// the event pipe, the runs' handles, the heartbeat. Methods never await:
/// the loop stays responsive.
struct Scheduler {
    plan: Plan,
    /// Effects planned since the last flush.
    fx: Effects,
    store: Store,
    journal: Journal,
    /// Whether start-up's pages were released (at the first heartbeat).
    startup_shed: bool,
    /// Commits the journal's batches off the loop (`None` only if its
    /// thread could not start: then the loop commits itself).
    writer: Option<Writer>,
    pruner: Pruner,
    events: EventTx,
    done_tx: mpsc::UnboundedSender<RunRecord>,
    running: BTreeMap<u64, Running>,
    heartbeat_interval: Duration,
    seq: u64,
    last_good_turn: Option<Timestamp>,
    next_heartbeat: Instant,
    /// Something panicked since the last turn: that turn is not good.
    panicked: bool,
    /// `<state_dir>/output`: where `keep_output` jobs' files go.
    output_root: PathBuf,
    /// The store file and its identity (device, inode) when opened: a
    /// file deleted or replaced under the open connection is noticed
    /// within [`IDENTITY_EVERY`] (issue 14: records kept going to a
    /// deleted file for good).
    store_path: PathBuf,
    identity: Option<(u64, u64)>,
    next_identity_check: Instant,
    /// What happened to the store file, and until when it is reported.
    identity_note: Option<(String, Instant)>,
    /// No store file could be reopened: `store` is an in-memory stand-in,
    /// writes are held, and reopening is tried at every check.
    store_down: bool,
    /// Where runs get their cgroups (`None`: process groups only).
    cgroups: Option<Arc<Hierarchy>>,
    /// Several hosts: scheduled runs start only once claimed in the
    /// shared ledger (see [`crate::cluster`]).
    cluster: Option<Cluster>,
    /// The fires starting up to this time were considered for claiming
    /// ahead (`cluster::AHEAD`).
    ahead_through: Option<Timestamp>,
    /// The instant the last turn ahead fired for (`plan::LEAD`).
    fired_for: Option<Timestamp>,
}

impl Scheduler {
    fn new(
        config: &Config,
        store: Store,
        events: EventTx,
        done_tx: mpsc::UnboundedSender<RunRecord>,
        (first_run_id, reserved): (u64, u64),
        in_doubt: bool,
        claims: mpsc::UnboundedSender<cluster::Answer>,
    ) -> Self {
        let mut plan = Plan::new(first_run_id, reserved);
        plan.in_doubt_through = in_doubt.then(wall_now);
        let store_path = store.path().to_path_buf();
        let identity = file_identity(&store_path).ok().flatten();
        plan.drop_fires_of = fail::eval("worker::drop_fire", |arg| arg).flatten();
        plan.misarm_once = fail::eval("worker::misarm", |arg| arg).flatten();
        let mut s = Scheduler {
            plan,
            fx: Effects::default(),
            writer: Writer::start(store_path.clone())
                .map_err(|e| {
                    tracing::error!(
                        "cannot start the store writer thread ({e}); writing from the loop"
                    )
                })
                .ok(),
            store,
            journal: Journal::new(),
            startup_shed: false,
            pruner: Pruner::new(Instant::now()),
            events,
            done_tx,
            running: BTreeMap::new(),
            heartbeat_interval: config.watchdog.heartbeat_interval,
            seq: 0,
            last_good_turn: None,
            next_heartbeat: Instant::now(),
            panicked: false,
            output_root: config.state_dir.join("output"),
            store_path,
            identity,
            next_identity_check: Instant::now() + IDENTITY_EVERY,
            identity_note: None,
            store_down: false,
            cgroups: None,
            ahead_through: None,
            fired_for: None,
            cluster: config
                .cluster
                .as_ref()
                .map(|c| Cluster::start(c, config.watchdog.heartbeat_interval, claims)),
        };
        s.configure(config);
        s
    }

    /// Applies a (new) config: the store reconciles its schedule rows with
    /// it (removed jobs lose theirs, history stays; new and changed jobs are
    /// armed from now; unchanged ones keep their next fire and paused
    /// flag), and the plan takes the result. If the store cannot, the plan
    /// schedules from the config alone and the error is reported.
    fn configure(&mut self, config: &Config) {
        self.heartbeat_interval = config.watchdog.heartbeat_interval;
        if let Some(c) = self.cluster.as_mut() {
            c.configure(config);
        }
        let now = wall_now();
        let wanted = plan::wanted_rows(config, now);
        // Held writes go first: a reconcile committed before them would be
        // undone by them (a removed job's row written back by its claims).
        self.flush();
        let reconciled = match (self.store_down, self.journal.held()) {
            (false, 0) => self.store.reconcile(&wanted).map_err(|e| e.to_string()),
            (true, _) => Err("no store is open".to_string()),
            (false, n) => Err(format!("{n} earlier write(s) are still held")),
        };
        // Which boot `@reboot` jobs last fired in, known only from a store
        // that answers (see `plan/reboot.rs`).
        let fired = match reconciled {
            Ok(_) => self
                .store
                .reboot_fired()
                .map_err(|e| tracing::error!("{e}"))
                .ok(),
            Err(_) => None,
        };
        self.plan.set_boot(crate::boot_id::read(), fired);
        let rows = match reconciled {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!("{e}; scheduling from the config alone");
                self.journal
                    .set_error(format!("{e}; scheduling from the config alone"));
                // The store's rows follow with the held writes.
                let rows = self.plan.unreconciled_writes(&wanted);
                self.fx.writes.extend(rows);
                wanted
            }
        };
        // A job's history may exceed a retention that was just lowered.
        let plan = &self.plan;
        self.pruner
            .mark_over_retention(&self.store, self.store_down, config, |j| plan.retention(j));
        self.plan.configure(config, rows, now, &mut self.fx);
    }

    /// Carries out the planned effects: commit the writes, then send the
    /// events, stop and spawn runs. A store failure does not stop the rest:
    /// a job that should run still runs (see [`Journal`]).
    fn flush(&mut self) {
        self.flush_within(WRITE_WAIT);
    }

    /// As [`Scheduler::flush`], waiting at most `wait` (twice: for a
    /// batch still in flight, then for this one) for the commit.
    fn flush_within(&mut self, wait: Duration) {
        let mut fx = std::mem::take(&mut self.fx);
        if let Some(c) = self.cluster.as_mut() {
            self.plan.expire_ahead(cluster::RELEASE_AFTER);
            c.release_ahead(self.plan.take_released_ahead());
            self.plan
                .drop_stale_ahead(wall_now(), cluster::RELEASE_AFTER, &mut fx);
            c.hold(&mut fx);
            c.next_fire(self.plan.earliest_fire());
        }
        self.pruner.mark_written(&fx.writes);
        self.journal.extend(fx.writes);
        // A few starts prepare while their records commit (`fire.rs`),
        // handed to their threads once the commit is handed to the writer.
        let gated = if self.gates_ahead(fx.spawns.len()) {
            self.gated(&fx.spawns)
        } else {
            Vec::new()
        };
        if let Some(w) = self.writer.as_mut() {
            w.open_on_commit(gated.iter().flatten().map(|g| g.key.opener()));
        }
        let mut ahead = self.write_then(wait, || fire::begin_ahead(gated));
        for ev in fx.events {
            self.events.send(ev);
        }
        for (id, reason) in fx.stops {
            if let Some(run) = self.running.get(&id) {
                run.stop.stop(reason);
            }
        }
        ahead.resize_with(fx.spawns.len(), || None);
        for (spawn, ahead) in fx.spawns.into_iter().zip(ahead) {
            self.spawn(spawn, ahead);
        }
    }

    /// The earliest instant the loop must wake at: the next fire's or the
    /// heartbeat's.
    fn next_deadline(&self) -> Instant {
        let now = Instant::now();
        let wall = wall_now();
        let instant = |t: Timestamp| match Duration::try_from(t.duration_since(wall)) {
            Ok(wait) => now.checked_add(wait).unwrap_or(now + Duration::MAX / 4),
            Err(_) => now,
        };
        let mut wake = self.next_heartbeat;
        if self.cluster.is_some() {
            // Several hosts: the next fire to claim ahead (not a precise
            // wake), and a fire claimed ahead that a reload took off the
            // schedule since: recorded at its instant (`plan/ahead.rs`).
            let ahead = self
                .plan
                .next_start_after(self.ahead_through)
                .and_then(|start| start.checked_sub(cluster::AHEAD).ok());
            // (Judged by the turn that just ended: no spin.)
            let claimed = self.plan.earliest_ahead_unjudged();
            for t in ahead.into_iter().chain(claimed) {
                wake = wake.min(instant(t));
            }
        }
        match self.plan.earliest_fire() {
            Some(fire) if self.leads() => {
                wake.min(instant(fire.checked_sub(plan::lead_span()).unwrap_or(fire)))
            }
            Some(fire) => wake.min(instant(fire)),
            None => wake,
        }
    }

    /// Several hosts: hands the fires due within `cluster::AHEAD` of `now`
    /// that the plan would start to the cluster, to claim ahead.
    fn claim_ahead(&mut self, now: Timestamp) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let through = now.checked_add(cluster::AHEAD).unwrap_or(now);
        c.ahead(self.plan.claim_ahead(through, &mut self.fx));
        self.ahead_through = Some(through);
    }

    /// One loop turn: fire what is due, commit, then heartbeat when due.
    fn turn(&mut self) {
        self.seq += 1;
        let clocks = Clocks::read();
        self.guarded("clock check", |s| s.plan.observe_clocks(clocks, &mut s.fx));
        // A failing store is reported as `store_error`, not as a failing
        // turn: replacing the worker cannot fix a full or read-only disk
        // and would throw away the writes it holds for retry.
        self.guarded("store identity", Self::check_store_identity);
        self.guarded("turn", |s| {
            fail::fail_point!("worker::turn");
            s.plan.store_failing = s.store_down || s.journal.error().is_some();
            let until = Instant::now() + 2 * WRITE_WAIT;
            let instant = s.fire_instant(clocks.wall);
            if instant > clocks.wall {
                // Kept until the next turn ahead: a heartbeat from a turn
                // in between is still inside this one's lead.
                s.fired_for = Some(instant);
            }
            s.fire(instant, until);
            s.claim_ahead(clocks.wall);
            s.flush_within(fire::wait_until(until));
            let failing = s.journal.error().is_some();
            s.pruner.sweep(
                Instant::now(),
                &mut s.store,
                |j| s.plan.retention(j),
                failing,
            );
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

    /// A run ended: the plan records it, frees its job, may start a queued fire.
    fn finished(&mut self, record: RunRecord) {
        if record.outcome == Outcome::Running {
            // Not an end: a run without a cgroup says which process group
            // it holds (sent before its end, on the same channel).
            if let Some(run) = self.running.get_mut(&record.id) {
                run.record = record.clone();
                self.fx.writes.push(Write::Insert(record));
            }
            return;
        }
        self.running.remove(&record.id);
        if let Some(c) = self.cluster.as_mut() {
            c.finished(&record);
        }
        self.guarded("finish", |s| s.plan.finished(record, wall_now(), &mut s.fx));
    }

    /// A claim's answer: the run starts, or is released in the plan.
    fn claimed(&mut self, answer: cluster::Answer) {
        self.guarded("claim", |s| {
            let now = wall_now();
            let Some(c) = s.cluster.as_mut() else {
                return;
            };
            if let Some((job, id)) = c.resolve(answer, now, &mut s.fx) {
                s.plan.disclaimed(&job, id, now, &mut s.fx);
            }
        });
    }

    /// Carries out a command. One that panics is answered with an error
    /// (when it carried a request id), so its caller is not left waiting.
    fn command(&mut self, cmd: Command) {
        let (name, request) = match &cmd {
            Command::Trigger { request, .. } => ("trigger", *request),
            Command::Pause { request, .. } => ("pause", *request),
            Command::Resume { request, .. } => ("resume", *request),
            Command::Kill { request, .. } => ("kill", *request),
            Command::Configure { .. } => ("configure", None),
            Command::Rearm { .. } => ("rearm", None),
            Command::Adopt { .. } => ("adopt", None),
            Command::ReportSchedule | Command::Shutdown => ("", None),
        };
        if !self.guarded("command", |s| s.command_unguarded(cmd)) {
            let error = format!("the worker panicked carrying out {name}; see its log");
            match request {
                Some(_) => plan::answer(name, request, Err(error), &mut self.fx),
                None if !name.is_empty() => plan::command_failed(name, error, &mut self.fx),
                None => {}
            }
        }
    }

    fn command_unguarded(&mut self, cmd: Command) {
        fail::fail_point!("worker::command");
        match cmd {
            Command::Configure {
                path,
                source,
                dropins,
            } => match Config::parse_source(&path, &Source::of(source, dropins)) {
                Ok(config) => {
                    self.configure(&config);
                    tracing::info!(jobs = config.jobs.len(), "configuration applied");
                }
                Err(e) => plan::command_failed("configure", e.to_string(), &mut self.fx),
            },
            Command::Kill {
                job,
                run_id,
                uid,
                request,
            } => {
                let running = self.running.iter();
                let runs = kill::chosen(&job, run_id, running.map(|(id, r)| (*id, &*r.record.job)));
                for id in runs.iter().flatten() {
                    tracing::info!(job, run_id = *id, uid, "kill requested by an operator");
                    if let Some(run) = self.running.get(id) {
                        run.stop.stop(StopReason::Operator(uid));
                    }
                }
                plan::answer(
                    "kill",
                    request,
                    runs.map(|ids| ids.first().copied()),
                    &mut self.fx,
                );
            }
            // Only meaningful before the store is taken over.
            Command::Adopt { records, .. } => tracing::warn!(
                records = records.len(),
                "ignoring an adopt command after start"
            ),
            cmd => self.plan.command(cmd, wall_now(), &mut self.fx),
        }
    }

    /// Stops every run; returns how many were running.
    fn stop_all(&mut self) -> usize {
        let now = wall_now();
        if let Some(c) = self.cluster.as_mut() {
            // A fire claimed ahead that a reload took off the schedule is
            // recorded now, not at its instant (the next worker would never
            // see it due), and its row ended alike before the rest are.
            self.plan.drop_stale_ahead_now(now, &mut self.fx);
            c.skipped_ahead(&self.fx);
            // Runs still waiting for their claim never start.
            for (job, id) in c.abandon(now, &mut self.fx) {
                self.plan.disclaimed(&job, id, now, &mut self.fx);
            }
        }
        let n = self.plan.shutdown(now, &mut self.fx);
        self.flush();
        n
    }

    fn longest_stop(&self) -> Duration {
        self.plan.longest_kill_grace()
            + runner::REAP_BOUND
            + runner::DRAIN
            + crate::cgroup::EMPTY_BOUND
            + Duration::from_secs(2)
    }
}

/// Decodes the supervisor's commands from stdin into `tx`. A bad line is
/// skipped, never taken for EOF (which would end the worker); at EOF the
/// supervisor is gone, and dropping `tx` tells the loop.
async fn read_commands(stdin: pipe::Receiver, tx: mpsc::Sender<Command>) {
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
                if tx.send(cmd).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::warn!("ignoring undecodable command line: {e}"),
        }
    }
}

/// The config of the first command, which must be `configure`, within
/// [`CONFIGURE_WITHIN`]; `adopt` commands may come before it (the
/// supervisor's copy of what the previous worker held) and are gathered.
async fn first_config(
    rx: &mut mpsc::Receiver<Command>,
    adoption: &mut Adoption,
) -> Result<Config, WorkerError> {
    let until = Instant::now() + CONFIGURE_WITHIN;
    loop {
        match tokio::time::timeout_at(until, rx.recv()).await {
            Ok(Some(Command::Configure {
                path,
                source,
                dropins,
            })) => {
                return Config::parse_source(&path, &Source::of(source, dropins))
                    .map_err(|source| WorkerError::ConfigRefused { path, source })
            }
            Ok(Some(Command::Adopt { records, cursors })) => adoption.add(records, cursors),
            // Named by its wire tag ("trigger"), never Debug text.
            Ok(Some(other)) => {
                return Err(WorkerError::NotConfigured(
                    serde_json::to_value(&other)
                        .ok()
                        .and_then(|v| v["type"].as_str().map(str::to_string))
                        .unwrap_or_else(|| "another command".into()),
                ))
            }
            Ok(None) => return Err(WorkerError::SupervisorGone),
            Err(_) => return Err(WorkerError::NoConfiguration(CONFIGURE_WITHIN.as_secs())),
        }
    }
}

/// The worker's whole life: adopt descriptors, wait for the config, loop.
pub(crate) async fn run(args: WorkerArgs) -> Result<(), WorkerError> {
    LocalSet::new().run_until(run_local(args)).await
}

async fn run_local(args: WorkerArgs) -> Result<(), WorkerError> {
    let adopt =
        |what, fd| sys::adopt(fd).map_err(|source| WorkerError::Descriptor { what, fd, source });
    // Held, never read: keeping the inherited lock open keeps it locked.
    let _lock = args
        .lock_fd
        .map(|fd| adopt("inherited lock", fd))
        .transpose()?;
    let events_fd = adopt("event pipe", args.events_fd)?;
    let (events, mut broken, writer) = events::start(events_fd).map_err(WorkerError::EventPipe)?;

    let (cmd_tx, mut cmd_rx) = mpsc::channel::<Command>(1024);
    let stdin =
        pipe::Receiver::from_owned_fd(adopt("stdin", 0)?).map_err(WorkerError::StdinNotAPipe)?;
    tokio::task::spawn_local(read_commands(stdin, cmd_tx));
    let mut adoption = Adoption::default();
    let config = first_config(&mut cmd_rx, &mut adoption).await?;

    let mut term = signal(SignalKind::terminate()).map_err(WorkerError::Signal)?;
    // The supervisor passes on the signal that stops it: Ctrl-C arrives
    // here as SIGINT (and without a handler would end us without stopping
    // the jobs).
    let mut int = signal(SignalKind::interrupt()).map_err(WorkerError::Signal)?;
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<RunRecord>();
    let (claims_tx, mut claims_rx) = mpsc::unbounded_channel::<cluster::Answer>();
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
    let mut config = config;
    let mut replay = vec![];
    let started = {
        let stop = async {
            tokio::select! {
                biased;
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                _ = &mut broken => "the event pipe broke",
            }
        };
        tokio::pin!(stop);
        take_over_store(
            &mut config,
            args.first_run_id,
            adoption,
            &events,
            &mut cmd_rx,
            &mut replay,
            &mut stop,
        )
        .await?
    };
    let Some(TakeOver {
        store,
        lost,
        first_run_id,
        reserved,
        in_doubt,
    }) = started
    else {
        return Ok(());
    };
    // What an earlier generation left running is killed before anything
    // fires (issue 15: old runs kept running beside new ones).
    let (cgroups, mut swept) = sweep::contain_setup(&config).await;
    swept.extend(sweep::kill_lost_groups(&lost).await);
    let mut survivors = sweep::survivors(&lost).await;
    let (mut held, mut recount) = (vec![], vec![]);
    // Runs left `running` belonged to a worker that died: they are lost.
    for mut lost in lost {
        if let Some((_, n)) = swept.iter().find(|(id, _)| *id == lost.id) {
            lost.contain.leftovers_killed = Some(*n as u32);
        }
        if let Some(i) = survivors.iter().position(|(id, _)| *id == lost.id) {
            held.push((lost, survivors.swap_remove(i).1));
            continue;
        }
        if lost.contain.leftovers_killed.is_some() {
            // The store says `lost` already; this adds what was killed.
            recount.push(lost.clone());
        }
        tracing::error!(job = %lost.job, run = lost.id, "run recorded lost: its worker died while it was running");
        events.send(Event::Finish { run: lost });
    }
    let mut sched = Scheduler::new(
        &config,
        store,
        events.clone(),
        done_tx,
        (first_run_id, reserved),
        in_doubt,
        claims_tx,
    );
    sched.cgroups = cgroups.clone();
    for lost in recount {
        let _ = sched.done_tx.send(lost);
    }
    if let Some(c) = sched.cluster.as_mut() {
        c.take_over(first_run_id, held.iter().map(|(r, _)| r.id).collect());
    }
    // Still running despite the kill: their jobs count them as running.
    for (lost, where_) in held {
        sched.plan.hold(&lost.job, lost.id);
        sweep::release_when_gone(lost, where_, events.clone(), sched.done_tx.clone());
    }
    tracing::info!(jobs = config.jobs.len(), "worker started");
    for cmd in replay {
        sched.command(cmd);
    }

    let mut alarm = Alarm::new().map_err(WorkerError::Timer)?;
    loop {
        sched.turn();
        let deadline = sched.next_deadline();
        tokio::select! {
            biased;
            _ = term.recv() => { tracing::info!("SIGTERM: stopping jobs"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: stopping jobs"); break; }
            _ = &mut broken => break,
            cmd = cmd_rx.recv() => match cmd {
                None => { tracing::warn!("supervisor closed the command pipe: stopping jobs"); break; }
                Some(Command::Shutdown) => { tracing::info!("shutdown requested: stopping jobs"); break; }
                Some(cmd) => { sched.command(cmd); sched.guarded("flush", Scheduler::flush); }
            },
            Some(record) = done_rx.recv() => {
                sched.finished(record);
                // Record every run that ended meanwhile in the same commit.
                while let Ok(record) = done_rx.try_recv() {
                    sched.finished(record);
                }
                sched.guarded("flush", Scheduler::flush);
            }
            Some(answer) = claims_rx.recv() => {
                sched.claimed(answer);
                while let Ok(answer) = claims_rx.try_recv() {
                    sched.claimed(answer);
                }
                sched.guarded("flush", Scheduler::flush);
            }
            // One wake-up, at the instant (see `Alarm`).
            () = alarm.sleep_until(Some(deadline)) => {}
        }
    }

    // Shutdown: every run gets SIGTERM, then SIGKILL after its grace; wait
    // for their records (bounded), then flush the event pipe (bounded).
    let mut left = sched.stop_all();
    let until = Instant::now() + sched.longest_stop();
    while left > 0 {
        match tokio::time::timeout_at(until, done_rx.recv()).await {
            Ok(Some(record)) => {
                let ended = record.outcome != Outcome::Running;
                sched.finished(record);
                sched.flush();
                left -= usize::from(ended);
            }
            _ => break,
        }
    }
    sched.settle_writes(Duration::from_secs(5));
    sched.mark_stopped();
    drop(sched);
    if let Some(h) = cgroups {
        // The runs' emptied cgroups first (none is in flight now, so at
        // once): what is left stays for the next start's sweep.
        crate::spawner::removals_done(Duration::from_secs(2)).await;
        h.remove_instance();
    }
    drop(events);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    Ok(())
}
