//! The supervisor's loop: the one task that owns the model and acts on it.
//!
//! It reads the worker's event lines into the model, re-evaluates the
//! conditions (every second, and after the lines that finish a run), opens
//! and resolves alerts, replaces a worker that died, stalled or keeps
//! failing, kills runs a worker left behind, reloads the config, and answers
//! the control calls the socket forwards to it. It never runs a job and
//! never blocks on one: every wait in it has a bound, and timers are served
//! before event lines so a flooding worker cannot starve the watchdog.
//!
//! No one else touches the model: after it changes, the loop publishes an
//! immutable [`Snapshot`] for the socket (see [`crate::snapshot`] for when),
//! so readers never compute and never wait for the loop.

use std::{collections::HashMap, path::PathBuf, sync::Arc, time::Duration};

use cronwarden_shared::{
    alarm::Alarm,
    alert_kind::AlertKind,
    config::{Config, Source},
    status::{AlertNotice, Severity, State, StatusReport},
    timefmt::human_duration,
    wire::{decode_event, BadLine, Command, Event, Frame},
    VERSION,
};
use jiff::Timestamp;
use nix::sys::signal::Signal;
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::{mpsc, oneshot, watch},
    time::Instant,
};

use crate::{
    alerts, binary,
    control::{ControlOp, ControlReply, ControlRequest},
    follow, forensics, lock,
    log_budget::LogBudget,
    metrics,
    model::{self, Model},
    notify, pings, reaper,
    run_groups::RunGroups,
    server, sinks,
    snapshot::Snapshot,
    spawn,
    worker_conn::{next_line, Backoff, WorkerConn},
    SupervisorError,
};

mod control_ops;
mod shared_alerts;
mod wake;
mod worker_start;

/// The longest a finished run's conditions wait while event lines keep
/// coming (see `on_line`).
const EVALUATE_WITHIN: Duration = Duration::from_millis(100);
/// The most often event lines alone republish the snapshot: computing it
/// walks every job, so a burst of lines must not compute it per line, and
/// what a line changed is visible within this (or within the time the
/// last snapshot took, if longer: see `publish`).
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// What `run` prepared for the loop: the model, the sinks and the means
/// to start workers.
pub(crate) struct Prepared {
    pub(crate) model: Model,
    pub(crate) recorder: alerts::Recorder,
    pub(crate) notifier: notify::Notifier,
    pub(crate) sinks: sinks::Sinks,
    pub(crate) reaper: reaper::Reaper,
    /// The text of the config in force, sent whole to each worker.
    pub(crate) source: Source,
    pub(crate) exe: PathBuf,
    pub(crate) lock: lock::Lock,
    pub(crate) log_json: bool,
    pub(crate) log_files: Option<(PathBuf, u32)>,
    pub(crate) host_beat: Option<pings::HostBeat>,
}

pub(crate) struct Supervisor {
    reaper: reaper::Reaper,
    sinks: sinks::Sinks,
    notifier: notify::Notifier,
    /// Owned by the loop alone: nothing else holds it, readers get
    /// snapshots.
    model: Model,
    /// Where the snapshots for the socket are published.
    snapshots: watch::Sender<Arc<Snapshot>>,
    /// When the snapshot is due because event lines changed the model.
    publish_at: Option<Instant>,
    /// The instant the last snapshot describes.
    published_at: Instant,
    /// The earliest event lines may ask for the next one.
    lines_publish_after: Instant,
    recorder: alerts::Recorder,
    /// The text of the config in force, sent whole to each worker.
    source: Source,
    exe: PathBuf,
    /// The executable as it was at start: a replaced one shows in status.
    binary: Option<binary::Watch>,
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
    /// Set while the worker stops to be replaced at once: a reload
    /// changed the shared ledger it claims on.
    replacing: Option<worker_start::Replacing>,
    next_request: u64,
    /// Control calls waiting for the worker's reply, by request id.
    pending: HashMap<u64, (ControlOp, oneshot::Sender<ControlReply>)>,
    /// Set when a finish (or hello) was applied and conditions have not
    /// been re-evaluated since: when that became due.
    evaluate_since: Option<Instant>,
    /// Whether start-up's pages were released since the last hello (at the
    /// worker's first heartbeat).
    startup_shed: bool,
    /// Rate limit of the log lines about malformed event lines.
    bad_line_log: LogBudget,
    /// Who leads each run's process group, checked before it is signalled.
    run_groups: RunGroups,
    /// The newest output lines of recent runs, for `logs -f`.
    follow: follow::Rings,
    /// Several hosts: who delivers the alerts of the job's fires.
    shared_alerts: Option<shared_alerts::SharedAlerts>,
}

/// The notice `cronwarden alerts test` sends through every sink.
fn test_notice() -> AlertNotice {
    AlertNotice {
        event: "opened".into(),
        kind: AlertKind::Test,
        job: None,
        severity: Severity::Info,
        summary: "TEST: this is a test alert sent by `cronwarden alerts test`; no action needed"
            .into(),
        opened_at: Timestamp::now(),
        resolved_at: None,
        host: alerts::hostname(),
        details: serde_json::json!({ "test": true }),
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
    pub(crate) fn new(p: Prepared) -> Supervisor {
        let now = Instant::now();
        let first = Snapshot::of(&p.model, now, Timestamp::now());
        let shared_alerts = shared_alerts::SharedAlerts::start(&p.model.config, &p.model.alerts);
        Supervisor {
            shared_alerts,
            model: p.model,
            snapshots: watch::Sender::new(Arc::new(first)),
            publish_at: None,
            published_at: now,
            lines_publish_after: now,
            recorder: p.recorder,
            notifier: p.notifier,
            sinks: p.sinks,
            reaper: p.reaper,
            source: p.source,
            binary: binary::Watch::start(&p.exe),
            exe: p.exe,
            lock: p.lock,
            log_json: p.log_json,
            log_files: p.log_files,
            job_pings: pings::JobPings::new(),
            host_beat: p.host_beat,
            worker: None,
            backoff: Backoff::default(),
            // The first worker starts at once.
            restart_at: Some(Instant::now()),
            stopping: false,
            replacing: None,
            next_request: 1,
            pending: HashMap::new(),
            run_groups: RunGroups::default(),
            evaluate_since: None,
            startup_shed: false,
            bad_line_log: LogBudget::new(10, Duration::from_secs(60)),
            follow: follow::Rings::default(),
        }
    }

    fn config(&self) -> Arc<Config> {
        self.model.config.clone()
    }

    /// Evaluates now and publishes that evaluation for the socket: the
    /// state, the conditions and the alerts a reader sees come from one
    /// judgement, so a status can never say `stalled` with no alert, or
    /// `degraded` by a refused reload before its alert is open.
    fn publish(&mut self) {
        let now = Instant::now();
        // On the way out, or while the worker stops to be replaced, nothing
        // is judged for good (no alert opens or resolves, no action is
        // taken): the snapshot only shows the wind-down.
        let snapshot = if self.stopping || self.replacing.is_some() {
            Snapshot::of(&self.model, now, Timestamp::now())
        } else {
            let status = self.evaluate();
            Snapshot::published(&self.model, status)
        };
        self.snapshots.send_replace(Arc::new(snapshot));
        // Counted from the end, and at least as long as this one took: with
        // ten thousand jobs on a slow host a snapshot can take longer than
        // PUBLISH_EVERY, and lines must still be read (heartbeats among
        // them) between two snapshots they asked for.
        let done = Instant::now();
        self.lines_publish_after = done + PUBLISH_EVERY.max(done - now);
        self.published_at = now;
        self.publish_at = None;
    }

    /// Asks for a snapshot soon: at once if the last one is old enough, else
    /// `PUBLISH_EVERY` after it (longer if it was slow).
    fn publish_soon(&mut self) {
        if self.publish_at.is_none() {
            self.publish_at = Some(self.lines_publish_after.max(Instant::now()));
        }
    }

    /// When the next snapshot is due without an event: the one asked for by
    /// `publish_soon`, or the instant the heartbeat turns overdue (the state
    /// leaves `ok` then, and a status read must not wait for the tick).
    fn publish_deadline(&self) -> Option<Instant> {
        let m = &self.model;
        let overdue = m
            .worker
            .last_heartbeat
            .map(|t| {
                t + model::judge::overdue_after(m.config.watchdog.heartbeat_interval)
                    + Duration::from_millis(1)
            })
            .filter(|at| *at > self.published_at);
        self.publish_at.into_iter().chain(overdue).min()
    }

    pub(crate) async fn main_loop(mut self) -> Result<(), SupervisorError> {
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
        let server = server::spawn(
            listener,
            server::Shared {
                snapshots: self.snapshots.subscribe(),
                control: control_tx,
            },
        )
        .map_err(|source| server::ServerError::Bind {
            path: config.socket.clone(),
            source,
        })?;
        let metrics_tcp = metrics_listener.map(|l| {
            tracing::info!(
                addr = l.local_addr().ok().map(|a| a.to_string()),
                "serving /metrics over TCP"
            );
            tokio::task::spawn_local(metrics::serve_tcp(l, self.snapshots.subscribe()))
        });
        let mut sigchld = sig(SignalKind::child(), "SIGCHLD handler")?;
        // The loop's one timer: a single wake-up at each deadline (see
        // `Alarm`), where tokio's wheel woke an idle supervisor two or three
        // times a second.
        let mut alarm = Alarm::new().map_err(|source| SupervisorError::Io {
            what: "the loop's timer (timerfd)",
            source,
        })?;
        let mut sigterm = sig(SignalKind::terminate(), "SIGTERM handler")?;
        let mut sigint = sig(SignalKind::interrupt(), "SIGINT handler")?;
        let mut sighup = sig(SignalKind::hangup(), "SIGHUP handler")?;
        tracing::info!(
            pid = std::process::id(), version = VERSION, config = %config.path.display(),
            socket = %config.socket.display(), jobs = config.jobs.len(), "supervisor started"
        );
        // Conditions are re-evaluated every second (and after the lines
        // that finish a run), on the heartbeat's wake-up when it comes
        // (see `wake`).
        let mut tick = wake::Tick::first(Instant::now());
        // systemd's watchdog is fed from this loop, so it sees the loop itself.
        let mut watchdog =
            tokio::time::interval(self.notifier.watchdog.unwrap_or(Duration::from_secs(3600)));
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut clocks = LoopClocks::read();
        // The signal that stops us is passed on to the worker, so its log
        // names what the operator sent (Ctrl-C is SIGINT, not SIGTERM).
        let stop_with = loop {
            let stall_at = self.stall_deadline();
            let publish_at = self.publish_deadline();
            let replace_by = self.replacing.as_ref().and_then(|r| r.until);
            let wake_at = wake::earliest([
                stall_at,
                self.restart_at,
                replace_by,
                publish_at,
                Some(tick.timer()),
            ]);
            // Biased, in this order. Timers are ready only when due, so they
            // go before the event lines: a worker flooding lines can never
            // starve the stall check, the tick or systemd's watchdog ping.
            // The deferred evaluation goes after the lines, so that the
            // lines already queued are read first (see `on_line`).
            tokio::select! {
                biased;
                _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); break Signal::SIGTERM; }
                _ = sigint.recv() => { tracing::info!("SIGINT: shutting down"); break Signal::SIGINT; }
                _ = sighup.recv() => { let _ = self.reload("SIGHUP"); self.publish(); }
                // A worker that exited left its last lines (runs that
                // finished) in the pipe: they are read before it is judged
                // gone, or finished runs would count as lost and their
                // groups be signalled.
                _ = sigchld.recv() => { self.drain_lines().await; self.reap() }
                // One timer (see `wake`); what is due is done in this
                // order, one per turn, the tick's work below.
                () = alarm.sleep_until(wake_at) => {
                    let now = Instant::now();
                    if stall_at.is_some_and(|t| t <= now) {
                        // Every timer first catches up with a gap in the loop.
                        self.catch_up(&mut clocks).await;
                        self.on_stall();
                    } else if self.restart_at.is_some_and(|t| t <= now) {
                        self.start_worker();
                        self.publish_soon();
                    } else if replace_by.is_some_and(|t| t <= now) {
                        self.replacement_overdue();
                    } else if publish_at.is_some_and(|t| t <= now) && !tick.due(now) {
                        self.catch_up(&mut clocks).await;
                        self.publish();
                    }
                }
                _ = watchdog.tick(), if self.notifier.watchdog.is_some() => self.notifier.watchdog_ping(),
                Some(req) = control_rx.recv() => self.control(req),
                line = next_line(&mut self.worker) => self.on_line(line),
                Some(a) = shared_alerts::next_answer(&mut self.shared_alerts) => self.on_owner_answer(a),
                // Not sooner than the last snapshot allows: in a burst the
                // pipe empties between every two lines, and a snapshot per
                // finished run walked every job each time (issue 18).
                _ = std::future::ready(()), if self.evaluate_since.is_some()
                    && Instant::now() >= self.lines_publish_after => self.publish(),
            }
            if tick.due(Instant::now()) {
                self.catch_up(&mut clocks).await;
                self.on_tick();
                self.publish();
                tick.done(Instant::now());
            }
        };
        self.notifier.stopping();
        self.shutdown(&mut sigchld, stop_with).await;
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
        if w.killed_because.is_some() || self.replacing.is_some() {
            return None;
        }
        let m = &self.model;
        // The judgement's own deadline: `on_stall` evaluates, and the
        // judgement replaces the worker once this instant has come.
        model::judge::stall_deadline(&m.worker, &m.config.watchdog)
    }

    /// A gap in our own loop (SIGSTOP, a starved host, a suspend): the
    /// worker went on writing meanwhile. Its queued lines are read before
    /// the timer that woke us is judged, so its silence and its lateness
    /// are measured from what it did, not from our absence (the judgement
    /// itself believes at most `GAP_CREDIT` of a fire's wall-clock age).
    async fn catch_up(&mut self, clocks: &mut LoopClocks) {
        let (gap, suspended) = clocks.turn();
        if gap > LOOP_GAP || suspended > Duration::ZERO {
            tracing::warn!(
                gap_ms = gap.as_millis() as u64,
                suspended_ms = suspended.as_millis() as u64,
                "the supervisor's loop did not turn for {} (host suspended {}); reading the worker's queued lines before judging",
                human_duration(gap),
                human_duration(suspended)
            );
            self.drain_lines().await;
        }
    }

    /// Reads the event lines already queued, at most [`DRAIN_MAX`], without
    /// waiting for more.
    async fn drain_lines(&mut self) {
        // Let the runtime's driver see the pipe's readiness first.
        tokio::task::yield_now().await;
        for _ in 0..DRAIN_MAX {
            tokio::select! {
                biased;
                line = next_line(&mut self.worker) => self.on_line(line),
                _ = std::future::ready(()) => break,
            }
        }
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
                    // The lines before the reply (the paused flag, the
                    // run) are published first: a status read right after
                    // the answer sees them.
                    self.publish();
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
            Ok(Event::Output {
                job,
                run_id,
                stream,
                line,
                held_back,
            }) => {
                // Kept for followers only: the worker logged it already,
                // and nothing in the model depends on it.
                self.follow.push(&job, run_id, stream, line, held_back);
            }
            Ok(ev) => {
                let finished = matches!(ev, Event::Finish { .. });
                // A new worker is news at once: the status shows it up
                // without waiting for the burst throttle below.
                let hello = matches!(ev, Event::Hello { .. });
                match &ev {
                    Event::Fire { run_id, pid, .. } => {
                        let worker = self.worker.as_ref().map(|w| w.pid);
                        self.run_groups.fired(*run_id, *pid, worker);
                    }
                    Event::Finish { run } => {
                        self.run_groups.finished(run.id);
                        if run.contain.cgroup.is_none() {
                            let worker = self.worker.as_ref().map(|w| w.pid);
                            self.run_groups.kill_orphans(&self.config(), worker);
                        }
                    }
                    _ => {}
                }
                if matches!(ev, Event::Hello { .. }) {
                    self.notifier.ready();
                    self.startup_shed = false;
                }
                if matches!(ev, Event::Heartbeat { .. })
                    && !std::mem::replace(&mut self.startup_shed, true)
                {
                    // A worker's first heartbeat ends its start-up, and ours:
                    // the pages only that used leave (issue 18). < 1 ms.
                    let shed = cronwarden_shared::footprint::shed_startup_pages();
                    tracing::debug!(?shed, "start-up pages released");
                }
                self.model.apply(ev, Instant::now());
                self.send_pings();
                if hello {
                    self.publish();
                } else if finished {
                    // Outcome-driven alerts (timeout, lost, streaks) open
                    // and resolve with the run that causes them, but not
                    // once per line: evaluating walks every job, and 1,000
                    // runs finishing together made that quadratic, eating
                    // the CPU their successors needed to start. It runs as
                    // soon as no more lines are waiting and the last
                    // snapshot is PUBLISH_EVERY old (a run finishing alone
                    // is judged at once; a burst's ends, every 100 ms), and
                    // at the latest EVALUATE_WITHIN after the first finish
                    // of a burst.
                    let since = *self.evaluate_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= EVALUATE_WITHIN {
                        self.publish();
                    }
                }
                self.publish_soon();
            }
            Err(e) => {
                self.bad_line(e, shown);
                self.publish_soon();
            }
        }
    }

    /// Counts a dropped event line and logs it within a budget: a worker
    /// spewing junk must not turn into gigabytes of log.
    fn bad_line(&mut self, e: BadLine, shown: String) {
        let count = {
            let m = &mut self.model;
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
        self.owners_tick();
        // One stat a second: an upgrade that replaced our executable.
        if let Some(b) = &self.binary {
            let replaced = b.look();
            if replaced != self.model.supervisor.binary_replaced {
                if let Some(what) = &replaced {
                    tracing::warn!("{what}");
                }
                self.model.supervisor.binary_replaced = replaced;
            }
        }
        // A look at runs nearing their timeout, at most a tick before it,
        // while their processes are still there to be seen.
        {
            let m = &mut self.model;
            let wall = Timestamp::now();
            for look in model::judge::looks_near_timeout(m, wall, Duration::from_secs(1)) {
                let snap = forensics::Snapshot::take(&look.run, m.worker.pid, wall);
                m.looked(&look, snap);
            }
        }
    }

    /// Job pings for the runs the model saw start and end.
    fn send_pings(&mut self) {
        let (config, events) = {
            let m = &mut self.model;
            (m.config.clone(), std::mem::take(&mut m.run_events))
        };
        if !events.is_empty() {
            self.job_pings.dispatch(&config, events);
        }
    }

    /// Opens and resolves alerts; every notice is logged and recorded.
    fn evaluate(&mut self) -> StatusReport {
        self.evaluate_since = None;
        self.send_pings();
        let health = self.sinks.health();
        let (evaluation, line) = {
            let m = &mut self.model;
            m.sinks = health;
            let (now, wall) = (Instant::now(), Timestamp::now());
            // Forensics are read here, on the loop, and judged as
            // observations: the judgement itself never reads /proc.
            for look in model::judge::looks_at_busy_runs(m) {
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
        let actions = if self.stopping || self.replacing.is_some() {
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
                            "worker stalled: no heartbeat for {}; killing and replacing it",
                            human_duration(allowance)
                        ),
                        model::judge::Replace::Failing { failing_for } => tracing::error!(
                            pid,
                            "worker alive but failing for {}; replacing it",
                            human_duration(failing_for)
                        ),
                        model::judge::Replace::Misarmed { for_ } => tracing::error!(
                            pid,
                            misarmed_ms = for_.as_millis() as u64,
                            "worker still misarms a job after it was told to re-arm it; replacing it"
                        ),
                    }
                    w.killed_because = Some(why.because());
                    spawn::signal(pid, Signal::SIGKILL);
                }
                model::judge::Action::KillRun { job, run_id, pgid } => {
                    tracing::error!(job, run = run_id, pgid, "run outlived its timeout + kill_grace + 10s and the worker did not end it; killing its process group");
                    let parents = [
                        self.worker.as_ref().map_or(0, |w| w.pid),
                        std::process::id(),
                    ];
                    self.run_groups.kill(pgid, &parents);
                }
                model::judge::Action::Rearm { job } => {
                    tracing::warn!(
                        job,
                        "the worker's arming of the job disagrees with its schedule; telling it to re-arm the job"
                    );
                    if let Some(w) = self.worker.as_ref() {
                        let _ = w.commands.try_send(Command::Rearm { job });
                    }
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
        for n in &evaluation.notices {
            alerts::log(n);
            self.recorder.record(n.clone());
        }
        self.deliver(evaluation.notices);
        let mut status = evaluation.status;
        self.annotate_owners(&mut status);
        status
    }

    fn on_stall(&mut self) {
        // The stall deadline has come: the judgement declares the worker
        // stalled and the evaluation kills it, alerting and publishing now,
        // not at the next tick: detection time is what counts.
        self.publish();
    }
}

/// A timer this long after the previous one is a gap in the loop itself:
/// the tick alone comes every second.
const LOOP_GAP: Duration = Duration::from_secs(3);
/// At most this many queued lines are read after a gap before judging
/// (a 64 KiB pipe holds far fewer; the rest is read as usual).
const DRAIN_MAX: usize = 10_000;

/// The loop's own clocks: the monotonic one (which stands still while the
/// host is suspended) and boot time (which does not), to tell a pause of
/// this process from a suspend of the host.
struct LoopClocks {
    mono: Instant,
    boot: Option<Duration>,
}

impl LoopClocks {
    fn boot() -> Option<Duration> {
        let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).ok()?;
        Some(Duration::new(
            u64::try_from(t.tv_sec()).ok()?,
            u32::try_from(t.tv_nsec()).ok()?,
        ))
    }

    fn read() -> LoopClocks {
        LoopClocks {
            mono: Instant::now(),
            boot: Self::boot(),
        }
    }

    /// A new turn: how long since the previous one on the monotonic clock,
    /// and how long the host was suspended in between (boot time ran on,
    /// the monotonic clock did not; zero below a second of difference).
    fn turn(&mut self) -> (Duration, Duration) {
        let next = LoopClocks::read();
        let gap = next.mono.saturating_duration_since(self.mono);
        let suspended = match (self.boot, next.boot) {
            (Some(a), Some(b)) => b.saturating_sub(a).saturating_sub(gap),
            _ => Duration::ZERO,
        };
        *self = next;
        let suspended = if suspended > Duration::from_secs(1) {
            suspended
        } else {
            Duration::ZERO
        };
        (gap, suspended)
    }
}
