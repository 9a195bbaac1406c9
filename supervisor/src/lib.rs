//! The supervisor: `cronwarden run`, in the foreground.
//!
//! - [`lock`]: one supervisor per state directory;
//! - [`spawn`]: starting the worker; subreaper; the only `unsafe` here;
//! - [`model`]: what was observed of the worker and the jobs, and the status;
//! - [`server`]: the status socket; [`client`]: the CLI's side of it.
//!
//! The supervisor never runs jobs and never blocks on them: it reads the
//! worker's events, watches the heartbeat against `stall_after`, replaces a
//! worker that died or wedged (first restart at once, then exponential
//! backoff), kills and records the runs a dead worker leaves behind, and
//! answers on the socket. Every wait in its loop has a bound.

pub mod alerts;
pub mod audit;
pub mod control;
pub mod forensics;
pub mod lock;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod pings;
pub mod queue;
pub mod reaper;
pub mod server;
pub mod sinks;
pub mod spawn;

use std::{
    cell::RefCell,
    path::{Path, PathBuf},
    rc::Rc,
    sync::Arc,
    time::Duration,
};

use cronwarden_shared::{
    config::{Config, ConfigErrors},
    status::{State, SupervisorInfo},
    wire::{decode_event, encode, BadLine, Command, Event, Frame, LineCodec, MAX_LINE},
    VERSION,
};
use futures_util::StreamExt;
use jiff::Timestamp;
use nix::{
    sys::{
        signal::Signal,
        wait::{waitpid, WaitPidFlag, WaitStatus},
    },
    unistd::Pid,
};
use tokio::{
    io::AsyncWriteExt,
    net::unix::pipe,
    signal::unix::{signal, SignalKind},
    sync::mpsc,
    task::LocalSet,
    time::Instant,
};
use tokio_util::codec::FramedRead;

use crate::{
    control::{ControlOp, ControlReply, ControlRequest},
    model::Model,
};
use cronwarden_shared::store::{self, Store};
use std::collections::HashMap;
use tokio::sync::oneshot;

/// Why `run` could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("cannot create state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    #[error(transparent)]
    Server(#[from] server::ServerError),
    #[error(transparent)]
    Metrics(#[from] metrics::ListenError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
}

impl SupervisorError {
    /// Exit code: 2 for an invalid config (as `check`), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            SupervisorError::Config(_) => 2,
            _ => 1,
        }
    }
}

/// Restart backoff: the first restart is immediate (a crashed worker is
/// replaced within milliseconds); repeated crashes back off exponentially
/// from 100 ms to 30 s; a worker that stayed up a minute resets it.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    const HEALTHY_AFTER: Duration = Duration::from_secs(60);
    const CAP: Duration = Duration::from_secs(30);

    fn next_delay(&mut self, lived: Duration) -> Duration {
        if lived >= Self::HEALTHY_AFTER {
            self.failures = 0;
        }
        let delay = match self.failures {
            0 => Duration::ZERO,
            n => (Duration::from_millis(100) * 2u32.saturating_pow(n - 1)).min(Self::CAP),
        };
        self.failures = self.failures.saturating_add(1);
        delay
    }
}

/// The longest a finished run's conditions wait while event lines keep
/// coming (see `on_line`).
const EVALUATE_WITHIN: Duration = Duration::from_millis(100);

struct WorkerConn {
    pid: u32,
    events: Option<FramedRead<pipe::Receiver, LineCodec>>,
    commands: mpsc::Sender<Command>,
    /// Set when we killed it, to say why in the status.
    killed_because: Option<String>,
}

/// At most `burst` log lines per `window`; the first line after a quiet
/// spell says how many were held back, so the log stays honest and small.
#[derive(Debug)]
pub(crate) struct LogBudget {
    burst: u32,
    window: Duration,
    window_start: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl LogBudget {
    pub(crate) fn new(burst: u32, window: Duration) -> LogBudget {
        LogBudget {
            burst,
            window,
            window_start: None,
            used: 0,
            suppressed: 0,
        }
    }

    /// `Some(lines held back since the last one logged)` if this one may be
    /// logged, `None` if it must be held back.
    pub(crate) fn admit(&mut self, now: Instant) -> Option<u64> {
        if self
            .window_start
            .is_none_or(|s| now.saturating_duration_since(s) >= self.window)
        {
            self.window_start = Some(now);
            self.used = 0;
        }
        if self.used < self.burst {
            self.used += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

/// Options of `cronwarden run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub config_path: PathBuf,
    pub log_json: bool,
}

/// Runs the supervisor until SIGTERM/SIGINT.
pub fn run(opts: RunOptions) -> Result<(), SupervisorError> {
    let config = Config::load(&opts.config_path)?;
    let source =
        std::fs::read_to_string(&opts.config_path).map_err(|source| SupervisorError::Io {
            what: "reading the config",
            source,
        })?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .create(&config.state_dir)
        .map_err(|source| SupervisorError::StateDir {
            path: config.state_dir.clone(),
            source,
        })?;
    let started_at = Timestamp::now();
    let lock = lock::acquire(
        &config.lock_path(),
        &lock::Holder {
            pid: std::process::id(),
            version: VERSION.into(),
            socket: config.socket.clone(),
            started_at,
        },
    )?;
    // Opened (and migrated) here first, so a corrupt or unreadable store
    // stops `run` with an error naming the file instead of a worker crash loop.
    let store_path = config.state_dir.join(store::FILE_NAME);
    let (restored, history) = {
        let store = Store::open(&store_path)?;
        let mut history = vec![];
        for j in &config.jobs {
            history.push((j.name.clone(), store.runs(&j.name, 200)?));
        }
        (store.alerts(false, 10_000)?, history)
    };
    spawn::become_subreaper().map_err(|source| SupervisorError::Io {
        what: "becoming a child subreaper",
        source,
    })?;
    let exe = std::fs::read_link("/proc/self/exe").map_err(|source| SupervisorError::Io {
        what: "finding our own executable",
        source,
    })?;
    let reaper = reaper::Reaper::default();
    let sink_specs = config.sinks.clone();
    let host_beat = pings::HostBeat::from_config(&config);
    // Log files are opened at start (by the CLI, before the config reaches
    // us); every worker gets the same ones, whatever a reload says.
    let log_files = config
        .integrations
        .log_dir
        .clone()
        .map(|d| (d, config.integrations.log_retention));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| SupervisorError::Io {
            what: "starting the runtime",
            source,
        })?;
    let supervisor = Supervisor {
        model: Rc::new(RefCell::new(Model::new(
            Arc::new(config),
            SupervisorInfo {
                pid: std::process::id(),
                version: VERSION.into(),
                started_at,
            },
            alerts::AlertBook::new(restored),
        ))),
        recorder: alerts::Recorder::start(store_path),
        notifier: notify::Notifier::from_env(),
        sinks: sinks::Sinks::start(&sink_specs, &reaper),
        reaper,
        source,
        exe,
        lock,
        log_json: opts.log_json,
        log_files,
        job_pings: pings::JobPings::new(),
        host_beat,
        worker: None,
        backoff: Backoff::default(),
        restart_at: Some(Instant::now()),
        stopping: false,
        next_request: 1,
        pending: HashMap::new(),
        evaluate_since: None,
        bad_line_log: LogBudget::new(10, Duration::from_secs(60)),
    };
    for (job, runs) in history {
        supervisor.model.borrow_mut().seed_history(&job, &runs);
    }
    rt.block_on(LocalSet::new().run_until(supervisor.main_loop()))
}

struct Supervisor {
    reaper: reaper::Reaper,
    sinks: sinks::Sinks,
    notifier: notify::Notifier,
    model: Rc<RefCell<Model>>,
    recorder: alerts::Recorder,
    /// The text of the config in force, sent whole to each worker.
    source: String,
    exe: PathBuf,
    lock: lock::Lock,
    log_json: bool,
    log_files: Option<(PathBuf, u32)>,
    job_pings: pings::JobPings,
    host_beat: Option<pings::HostBeat>,
    worker: Option<WorkerConn>,
    backoff: Backoff,
    restart_at: Option<Instant>,
    /// Set once shutdown begins: a worker exit is then expected.
    stopping: bool,
    next_request: u64,
    /// Control calls waiting for the worker's reply, by request id.
    pending: HashMap<u64, (ControlOp, oneshot::Sender<ControlReply>)>,
    /// Set when a finish (or hello) was applied and conditions have not
    /// been re-evaluated since: when that became due.
    evaluate_since: Option<Instant>,
    /// Rate limit of the log lines about malformed event lines.
    bad_line_log: LogBudget,
}

async fn next_line(w: &mut Option<WorkerConn>) -> Option<std::io::Result<Frame>> {
    match w.as_mut().and_then(|w| w.events.as_mut()) {
        Some(ev) => ev.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn sig(
    kind: SignalKind,
    name: &'static str,
) -> Result<tokio::signal::unix::Signal, SupervisorError> {
    signal(kind).map_err(|source| SupervisorError::Io { what: name, source })
}

impl Supervisor {
    fn config(&self) -> Arc<Config> {
        self.model.borrow().config.clone()
    }

    async fn main_loop(mut self) -> Result<(), SupervisorError> {
        let config = self.config();
        // Before the socket: a metrics address in use stops `run` leaving nothing behind.
        let metrics_listener = config
            .integrations
            .metrics_listen
            .map(metrics::bind_tcp)
            .transpose()?;
        let listener = server::bind(
            &config.socket,
            &config.state_dir,
            config.socket_group.as_ref().map(|g| g.1),
        )?;
        let (control_tx, mut control_rx) = mpsc::channel::<ControlRequest>(64);
        let server = tokio::task::spawn_local(server::serve(
            listener,
            server::Shared {
                model: self.model.clone(),
                control: control_tx,
            },
        ));
        let metrics_tcp = metrics_listener.map(|l| {
            tracing::info!(addr = ?l.local_addr().ok(), "serving /metrics over TCP");
            tokio::task::spawn_local(metrics::serve_tcp(l, self.model.clone()))
        });
        let mut sigchld = sig(SignalKind::child(), "SIGCHLD handler")?;
        let mut sigterm = sig(SignalKind::terminate(), "SIGTERM handler")?;
        let mut sigint = sig(SignalKind::interrupt(), "SIGINT handler")?;
        let mut sighup = sig(SignalKind::hangup(), "SIGHUP handler")?;
        tracing::info!(
            pid = std::process::id(), version = VERSION, config = %config.path.display(),
            socket = %config.socket.display(), jobs = config.jobs.len(), "supervisor started"
        );
        // Conditions are re-evaluated every second (and right after each
        // event line); one wakeup a second keeps the idle cost negligible.
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // systemd's watchdog is fed from this loop, so it sees the loop itself.
        let mut watchdog =
            tokio::time::interval(self.notifier.watchdog.unwrap_or(Duration::from_secs(3600)));
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stall_at = self.stall_deadline();
            // Biased, in this order. Timers are ready only when due, so they
            // go before the event lines: a worker flooding lines can never
            // starve the stall check, the tick or systemd's watchdog ping.
            // The deferred evaluation goes after the lines, so that the
            // lines already queued are read first (see `on_line`).
            tokio::select! {
                biased;
                _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
                _ = sigint.recv() => { tracing::info!("SIGINT: shutting down"); break; }
                _ = sighup.recv() => { let _ = self.reload("SIGHUP"); }
                _ = sigchld.recv() => self.reap(),
                _ = sleep_until_opt(stall_at) => self.on_stall(),
                _ = sleep_until_opt(self.restart_at) => self.start_worker(),
                _ = watchdog.tick(), if self.notifier.watchdog.is_some() => self.notifier.watchdog_ping(),
                _ = tick.tick() => self.on_tick(),
                Some(req) = control_rx.recv() => self.control(req),
                line = next_line(&mut self.worker) => self.on_line(line),
                _ = std::future::ready(()), if self.evaluate_since.is_some() => self.evaluate(),
            }
        }
        self.notifier.stopping();
        self.shutdown(&mut sigchld).await;
        // The results of runs stopped on the way out; bounded.
        self.send_pings();
        self.job_pings.flush(Duration::from_secs(2));
        server.abort();
        if let Some(m) = metrics_tcp {
            m.abort();
        }
        let _ = std::fs::remove_file(&config.socket);
        tracing::info!("supervisor stopped");
        Ok(())
    }

    /// When the worker counts as stalled if it stays silent: `stall_after`
    /// after its last heartbeat (or after it was started, for a worker that
    /// never said hello).
    fn stall_deadline(&self) -> Option<Instant> {
        let w = self.worker.as_ref()?;
        if w.killed_because.is_some() {
            return None;
        }
        let m = self.model.borrow();
        // The judgement's own deadline: `on_stall` evaluates, and the
        // judgement replaces the worker once this instant has come.
        model::judge::stall_deadline(&m.worker, &m.config.watchdog)
    }

    fn start_worker(&mut self) {
        self.restart_at = None;
        // Saturating: the id comes from what a worker reported, which must
        // never be able to crash the supervisor.
        let first_run_id = self.model.borrow().max_run_id.saturating_add(1);
        let spawned = match spawn::spawn_worker(
            &self.exe,
            self.lock.as_fd(),
            first_run_id,
            self.log_json,
            self.log_files.as_ref().map(|(d, n)| (d.as_path(), *n)),
        ) {
            Ok(s) => s,
            Err(e) => {
                let delay = self
                    .backoff
                    .next_delay(Duration::ZERO)
                    .max(Duration::from_millis(100));
                tracing::error!("cannot start the worker: {e}; retrying in {delay:?}");
                self.model
                    .borrow_mut()
                    .worker_gone(format!("could not be started: {e}"), true);
                self.restart_at = Some(Instant::now() + delay);
                return;
            }
        };
        let events = match pipe::Receiver::from_owned_fd(spawned.events) {
            Ok(r) => Some(FramedRead::new(r, LineCodec::new(MAX_LINE))),
            Err(e) => {
                tracing::error!("worker event pipe unusable: {e}");
                None
            }
        };
        let (tx, mut rx) = mpsc::channel::<Command>(1024);
        match pipe::Sender::from_owned_fd(spawned.commands) {
            Ok(mut w) => {
                // Writes happen on their own task: a worker that stops reading
                // its stdin can block this task, never the supervisor's loop.
                tokio::task::spawn_local(async move {
                    while let Some(cmd) = rx.recv().await {
                        if w.write_all(&encode(&cmd)).await.is_err() {
                            return;
                        }
                    }
                });
            }
            Err(e) => tracing::error!("worker command pipe unusable: {e}"),
        }
        let config = self.config();
        let _ = tx.try_send(Command::Configure {
            path: config.path.clone(),
            source: self.source.clone(),
        });
        tracing::info!(pid = spawned.pid, "worker started");
        self.model.borrow_mut().worker_spawned(spawned.pid);
        self.worker = Some(WorkerConn {
            pid: spawned.pid,
            events,
            commands: tx,
            killed_because: None,
        });
    }

    fn on_line(&mut self, line: Option<std::io::Result<Frame>>) {
        let frame = match line {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                // A read error on the pipe itself (not its content): the
                // stream is over; SIGCHLD or the stall deadline tells the rest.
                tracing::warn!("reading the worker's event pipe failed: {e}");
                if let Some(w) = self.worker.as_mut() {
                    w.events = None;
                }
                return;
            }
            None => {
                // EOF: the worker closed its event pipe (it is exiting);
                // SIGCHLD tells the rest.
                if let Some(w) = self.worker.as_mut() {
                    w.events = None;
                }
                return;
            }
        };
        let shown = match &frame {
            Frame::Line(l) => String::from_utf8_lossy(&l[..l.len().min(200)]).into_owned(),
            Frame::TooLong => String::new(),
        };
        match decode_event(frame) {
            Ok(Event::Reply {
                request,
                ok,
                error,
                run_id,
            }) => {
                if let Some((op, reply)) = self.pending.remove(&request) {
                    let _ = reply.send(if ok {
                        ControlReply::ok(
                            serde_json::json!({ "ok": true, "op": op.name(), "run_id": run_id }),
                        )
                    } else {
                        ControlReply::error(
                            409,
                            error.unwrap_or_else(|| format!("{} refused", op.name())),
                        )
                    });
                }
            }
            Ok(ev) => {
                let finished = matches!(ev, Event::Finish { .. } | Event::Hello { .. });
                if matches!(ev, Event::Hello { .. }) {
                    self.notifier.ready();
                }
                self.model.borrow_mut().apply(ev, Instant::now());
                self.send_pings();
                if finished {
                    // Outcome-driven alerts (timeout, lost, streaks) open
                    // and resolve with the run that causes them, but not
                    // once per line: evaluating walks every job, and 1,000
                    // runs finishing together made that quadratic, eating
                    // the CPU their successors needed to start. It runs as
                    // soon as no more lines are waiting, and at the latest
                    // EVALUATE_WITHIN after the first finish of a burst.
                    let since = *self.evaluate_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= EVALUATE_WITHIN {
                        self.evaluate();
                    }
                }
            }
            Err(e) => self.bad_line(e, shown),
        }
    }

    /// Counts a dropped event line and logs it within a budget: a worker
    /// spewing junk must not turn into gigabytes of log.
    fn bad_line(&mut self, e: BadLine, shown: String) {
        let count = {
            let mut m = self.model.borrow_mut();
            m.malformed_events += 1;
            m.malformed_events
        };
        if let Some(suppressed) = self.bad_line_log.admit(Instant::now()) {
            let pid = self.worker.as_ref().map(|w| w.pid);
            tracing::warn!(
                pid,
                count,
                suppressed,
                "dropped an event line from the worker ({e}): {shown:?}"
            );
        }
    }

    /// Re-evaluates conditions: opens and resolves alerts, replaces a
    /// worker that has been alive but failing for too long, and kills runs
    /// that outlived their timeout when the worker did not.
    fn on_tick(&mut self) {
        // A look at runs nearing their timeout, at most a tick before it,
        // while their processes are still there to be seen.
        {
            let mut m = self.model.borrow_mut();
            let wall = Timestamp::now();
            for look in model::judge::looks_near_timeout(&m, wall, Duration::from_secs(1)) {
                let snap = forensics::Snapshot::take(&look.run, m.worker.pid, wall);
                m.looked(&look, snap);
            }
        }
        self.evaluate();
    }

    /// Job pings for the runs the model saw start and end.
    fn send_pings(&mut self) {
        let (config, events) = {
            let mut m = self.model.borrow_mut();
            (m.config.clone(), std::mem::take(&mut m.run_events))
        };
        if !events.is_empty() {
            self.job_pings.dispatch(&config, events);
        }
    }

    /// Opens and resolves alerts; every notice is logged and recorded.
    fn evaluate(&mut self) {
        self.evaluate_since = None;
        self.send_pings();
        let health = self.sinks.health();
        let (evaluation, line) = {
            let mut m = self.model.borrow_mut();
            m.sinks = health;
            let (now, wall) = (Instant::now(), Timestamp::now());
            // Forensics are read here, on the loop, and judged as
            // observations: the judgement itself never reads /proc.
            for look in model::judge::looks_at_busy_runs(&m) {
                let snap = forensics::Snapshot::take(&look.run, m.worker.pid, wall);
                m.looked(&look, snap);
            }
            let evaluation = m.evaluate(now, wall);
            let s = &evaluation.status;
            let worker = s
                .worker
                .pid
                .map(|p| format!("worker {p}"))
                .unwrap_or_else(|| "no worker".into());
            let line = format!(
                "{}: {} jobs, {} open alerts, {worker}",
                s.state.as_str(),
                s.jobs.len(),
                s.alerts.len()
            );
            if let Some(hb) = self.host_beat.as_mut() {
                hb.observe(now, s.state == State::Ok, || {
                    let mut body = format!("cronwarden on {}: {line}\n", alerts::hostname());
                    for r in &s.reasons {
                        body.push_str(r);
                        body.push('\n');
                    }
                    body
                });
            }
            (evaluation, line)
        };
        // The model already counts every action as done: each is carried
        // out here, before the notices go out. Not on the way out: the
        // worker is then stopping its jobs within their grace, and
        // `shutdown` bounds that itself.
        let actions = if self.stopping {
            vec![]
        } else {
            evaluation.actions
        };
        for action in actions {
            match action {
                model::judge::Action::ReplaceWorker { pid, why } => {
                    let Some(w) = self.worker.as_mut().filter(|w| w.pid == pid) else {
                        continue;
                    };
                    if w.killed_because.is_some() {
                        continue;
                    }
                    match why {
                        model::judge::Replace::Stalled { allowance } => tracing::error!(
                            pid,
                            "worker stalled: no heartbeat for {allowance:?}; killing and replacing it"
                        ),
                        model::judge::Replace::Failing { failing_for } => tracing::error!(
                            pid,
                            "worker alive but failing for {failing_for:?}; replacing it"
                        ),
                    }
                    w.killed_because = Some(why.because());
                    spawn::signal(pid, Signal::SIGKILL);
                }
                model::judge::Action::KillRun { job, run_id, pgid } => {
                    tracing::error!(job, run = run_id, pgid, "run outlived its timeout + kill_grace + 10s and the worker did not end it; killing its process group");
                    spawn::signal_group(pgid, Signal::SIGKILL);
                }
                model::judge::Action::AskArmedSchedule => {
                    // So the per-job comparison can name the jobs.
                    if let Some(w) = self.worker.as_ref() {
                        let _ = w.commands.try_send(Command::ReportSchedule);
                    }
                }
            }
        }
        self.notifier.status(line);
        for n in evaluation.notices {
            alerts::log(&n);
            self.sinks.dispatch(&n);
            self.recorder.record(n);
        }
        if self.sinks.reminds() {
            let open = self.model.borrow().alerts.reminders();
            self.sinks.remind(&open, Timestamp::now());
        }
    }

    fn on_stall(&mut self) {
        // The stall deadline has come: the judgement declares the worker
        // stalled and `evaluate` kills it, alerting now, not at the next
        // tick: detection time is what counts.
        self.evaluate();
    }

    /// Reaps every exited child: the worker (then schedules its
    /// replacement) and any orphaned job process reparented to us.
    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => {
                    let Some(pid) = status.pid() else { return };
                    let pid = pid.as_raw() as u32;
                    if self.worker.as_ref().is_some_and(|w| w.pid == pid) {
                        let how = match status {
                            WaitStatus::Exited(_, code) => format!("exited with code {code}"),
                            WaitStatus::Signaled(_, s, _) => format!("was killed by {s}"),
                            other => format!("ended ({other:?})"),
                        };
                        self.worker_exited(how);
                    } else {
                        let code = match status {
                            WaitStatus::Exited(_, c) => c,
                            WaitStatus::Signaled(_, sig, _) => 128 + sig as i32,
                            _ => -1,
                        };
                        // A sink's child, or an orphan reparented to us.
                        self.reaper.reaped(pid, code);
                        tracing::debug!(pid, ?status, "reaped a child");
                    }
                }
            }
        }
    }

    fn worker_exited(&mut self, how: String) {
        let Some(w) = self.worker.take() else { return };
        let how = w.killed_because.unwrap_or(how);
        self.pending.clear();
        if self.stopping {
            let lost = self.model.borrow_mut().worker_gone(how.clone(), false);
            for g in &lost {
                spawn::signal_group(*g, Signal::SIGKILL);
            }
            tracing::info!(pid = w.pid, "worker {how}");
            return;
        }
        let lived = self
            .model
            .borrow()
            .worker
            .spawned
            .map(|s| s.elapsed())
            .unwrap_or_default();
        let groups = self.model.borrow_mut().worker_gone(how.clone(), true);
        for g in &groups {
            // Orphaned runs: kill the whole group; we reap them as subreaper.
            spawn::signal_group(*g, Signal::SIGKILL);
        }
        let delay = self.backoff.next_delay(lived);
        self.evaluate();
        tracing::error!(
            pid = w.pid,
            lost_runs = groups.len(),
            "worker {how}; restarting in {delay:?}"
        );
        self.restart_at = Some(Instant::now() + delay);
    }

    /// Re-reads the config. A valid one replaces the running config (the
    /// worker reconciles its schedule and the store); an invalid one is
    /// refused, logged, shown in the status, and the running one stays.
    fn reload(&mut self, why: &str) -> Result<usize, String> {
        let path = self.config().path.clone();
        let loaded = std::fs::read_to_string(&path)
            .map_err(|e| format!("{}: cannot read config file: {e}", path.display()))
            .and_then(|src| {
                Config::parse(&path, &src)
                    .map(|c| (c, src))
                    .map_err(|e| e.to_string())
            });
        match loaded {
            Ok((config, source)) => {
                let jobs = config.jobs.len();
                if config.sinks != self.config().sinks {
                    self.sinks = sinks::Sinks::start(&config.sinks, &self.reaper);
                }
                if !self
                    .host_beat
                    .as_ref()
                    .is_some_and(|h| h.same_target(&config))
                {
                    self.host_beat = pings::HostBeat::from_config(&config);
                }
                let old = &self.config().integrations;
                if (old.metrics_listen, &old.log_dir, old.log_retention)
                    != (
                        config.integrations.metrics_listen,
                        &config.integrations.log_dir,
                        config.integrations.log_retention,
                    )
                {
                    tracing::warn!("{why}: metrics_listen, log_dir and log_retention take effect at the next start");
                }
                {
                    let mut m = self.model.borrow_mut();
                    m.set_config(Arc::new(config));
                    m.reload_error = None;
                }
                self.source = source.clone();
                if let Some(w) = &self.worker {
                    let _ = w.commands.try_send(Command::Configure {
                        path: path.clone(),
                        source,
                    });
                }
                tracing::info!(jobs, "{why}: configuration reloaded");
                Ok(jobs)
            }
            Err(e) => {
                tracing::error!(
                    "{why}: configuration refused, the running one stays in force:\n{e}"
                );
                self.model.borrow_mut().reload_error = Some((Timestamp::now(), e.clone()));
                Err(e)
            }
        }
    }

    /// A control call from the socket.
    fn control(&mut self, req: ControlRequest) {
        let ControlRequest { op, reply } = req;
        if op == ControlOp::AlertTest {
            let notice = cronwarden_shared::status::AlertNotice {
                event: "opened".into(),
                kind: cronwarden_shared::alert_kind::AlertKind::Test,
                job: None,
                severity: cronwarden_shared::status::Severity::Info,
                summary:
                    "TEST: this is a test alert sent by `cronwarden alerts test`; no action needed"
                        .into(),
                opened_at: Timestamp::now(),
                resolved_at: None,
                host: alerts::hostname(),
                details: serde_json::json!({ "test": true }),
            };
            let (n, results) = self.sinks.test(&notice);
            let (bound, names) = (self.sinks.test_bound(), self.sinks.names());
            // Collected off the loop: a slow sink delays only this reply.
            tokio::task::spawn_blocking(move || {
                let deadline = std::time::Instant::now() + bound;
                let mut out = serde_json::Map::new();
                for _ in 0..n {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    match results.recv_timeout(left) {
                        Ok((name, r)) => {
                            out.insert(
                                name,
                                match r {
                                    Ok(()) => serde_json::json!({ "ok": true }),
                                    Err(e) => serde_json::json!({ "ok": false, "error": e }),
                                },
                            );
                        }
                        Err(_) => break,
                    }
                }
                // A sink too busy to answer in time is a failure to show,
                // not a line to leave out.
                for name in names {
                    out.entry(name).or_insert_with(|| {
                        serde_json::json!({ "ok": false, "error": format!(
                            "no result within {}s: the sink is busy with earlier notices (see its queue in the status)",
                            bound.as_secs()
                        ) })
                    });
                }
                let all_ok = out.len() == n && out.values().all(|v| v["ok"] == true);
                let _ = reply.send(ControlReply {
                    status: 200,
                    body: serde_json::json!({ "ok": all_ok, "sinks": out, "configured": n }),
                });
            });
            return;
        }
        if op == ControlOp::Reload {
            let _ = reply.send(match self.reload("reload request") {
                Ok(jobs) => ControlReply::ok(
                    serde_json::json!({ "ok": true, "op": "reload", "jobs": jobs }),
                ),
                Err(e) => ControlReply::error(422, e),
            });
            return;
        }
        let up = self.model.borrow().worker.hello;
        let Some(w) = self.worker.as_ref().filter(|_| up) else {
            let _ = reply.send(ControlReply::error(
                503,
                "the worker is not running right now (restarting); try again",
            ));
            return;
        };
        let request = Some(self.next_request);
        let cmd = match &op {
            ControlOp::Trigger(job) => Command::Trigger {
                job: job.clone(),
                request,
            },
            ControlOp::Pause(job) => Command::Pause {
                job: job.clone(),
                request,
            },
            ControlOp::Resume(job) => Command::Resume {
                job: job.clone(),
                request,
            },
            ControlOp::Reload | ControlOp::AlertTest => unreachable!("handled above"),
        };
        if w.commands.try_send(cmd).is_err() {
            let _ = reply.send(ControlReply::error(
                503,
                "the worker's command queue is full; try again",
            ));
            return;
        }
        // Replies never come for requests to a worker that died: drop them
        // then (their callers get "went away") and bound the map anyway.
        self.pending.retain(|_, (_, r)| !r.is_closed());
        self.pending.insert(self.next_request, (op, reply));
        self.next_request += 1;
    }

    /// Asks the worker to stop its jobs (within their kill grace) and exit;
    /// kills whatever is left after a bound.
    async fn shutdown(&mut self, sigchld: &mut tokio::signal::unix::Signal) {
        self.stopping = true;
        self.restart_at = None;
        let Some(w) = &self.worker else { return };
        let pid = w.pid;
        let _ = w.commands.try_send(Command::Shutdown);
        spawn::signal(pid, Signal::SIGTERM);
        let grace = self
            .config()
            .jobs
            .iter()
            .map(|j| j.kill_grace)
            .max()
            .unwrap_or_default();
        let until = Instant::now() + grace + Duration::from_secs(10);
        while self.worker.is_some() {
            tokio::select! {
                _ = sigchld.recv() => self.reap(),
                line = next_line(&mut self.worker) => self.on_line(line),
                _ = tokio::time::sleep_until(until) => {
                    tracing::error!(pid, "worker did not stop in time; killing it and its jobs");
                    spawn::signal(pid, Signal::SIGKILL);
                    for g in self.model.borrow().running_groups() {
                        spawn::signal_group(g, Signal::SIGKILL);
                    }
                    // Reap it before we go, without ever blocking unbounded
                    // (a process in D state may not die at once).
                    for _ in 0..100 {
                        if !matches!(waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG)), Ok(WaitStatus::StillAlive)) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    self.worker = None;
                }
            }
        }
        self.reap();
    }
}

/// The socket a config names, for the CLI.
pub fn socket_of(config_path: &Path) -> Result<PathBuf, ConfigErrors> {
    Config::load(config_path).map(|c| c.socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_budget_holds_back_a_flood_and_says_how_much() {
        let mut b = LogBudget::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        let admitted: Vec<_> = (0..1000).map(|_| b.admit(t0)).collect();
        assert_eq!(admitted.iter().filter(|a| a.is_some()).count(), 3);
        assert_eq!(b.admit(t0 + Duration::from_secs(61)), Some(997));
        assert_eq!(b.admit(t0 + Duration::from_secs(61)), Some(0));
    }

    #[test]
    fn backoff_is_immediate_then_exponential_then_capped_and_resets() {
        let mut b = Backoff::default();
        let short = Duration::from_millis(10);
        assert_eq!(b.next_delay(short), Duration::ZERO);
        assert_eq!(b.next_delay(short), Duration::from_millis(100));
        assert_eq!(b.next_delay(short), Duration::from_millis(200));
        for _ in 0..20 {
            b.next_delay(short);
        }
        assert_eq!(b.next_delay(short), Duration::from_secs(30));
        assert_eq!(b.next_delay(Duration::from_secs(120)), Duration::ZERO);
    }
}
