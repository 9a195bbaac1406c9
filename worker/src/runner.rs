//! One run of one job.
//!
//! The job is started in its own process group (pgid = its pid), so every
//! signal goes to the whole group: a timeout or a kill reaches the shell's
//! grandchildren too. Invariants:
//!
//! - every run ends in exactly one [`RunRecord`], whatever happens;
//! - a timeout sends SIGTERM to the group, then SIGKILL after `kill_grace`,
//!   and the run ends even if the process cannot be reaped (it is then
//!   recorded `lost`): the caller's busy flag is always released;
//! - when the main process exits but a grandchild still holds the output
//!   pipes, output is drained for [`DRAIN`] at most, then the group is
//!   killed: a leftover grandchild never hangs the runner;
//! - what a start made and its run never took (the start panicked, or the
//!   run's future was dropped) is undone: its group killed, its cgroup
//!   removed (`started.rs`).

use std::{
    cell::Cell,
    ffi::{OsStr, OsString},
    os::fd::{AsRawFd, RawFd},
    process::Stdio,
    rc::Rc,
    sync::{Arc, OnceLock},
    time::Duration,
};

use cronwarden_shared::{
    account::{self, Credentials},
    config::{JobSpec, Leftovers},
    status::{Outcome, RunRecord},
    wire::OutputStream,
};
use jiff::Timestamp;
use nix::{sys::signal::Signal, unistd::Pid};
use tokio::{process::Command, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::{
    cgroup::{Hierarchy, RunCgroup},
    child::{self, Child, PidfdChild},
    error::WorkerError,
    events::EventTx,
    output::{self, capture, Captured},
    output_log, procfs,
    spawner::{not_committed, Gate, Hold},
    sys,
};

mod announce;
mod started;
use announce::{announce, pipe_inodes};
use started::Started;

/// How long output is drained after the main process exits.
pub(crate) const DRAIN: Duration = Duration::from_secs(2);
/// How long a SIGKILLed group may take to be reaped before the run is `lost`.
pub(crate) const REAP_BOUND: Duration = Duration::from_secs(5);

/// What to run and what it stands for.
#[derive(Debug, Clone)]
pub(crate) struct RunRequest {
    /// The run's one record, as the plan inserted it (`running`, with its
    /// id, what it covers and `started_at`): the runner completes it.
    pub record: RunRecord,
    pub job: Arc<JobSpec>,
    /// The job's next armed fire, reported with the fire event.
    pub next_fire_at: Option<Timestamp>,
    /// Where the run's output progress is kept for the heartbeat.
    pub progress: crate::output::SharedProgress,
    /// Where the run's whole output goes (`keep_output`), if anywhere.
    pub output_dir: Option<std::path::PathBuf>,
    /// Where the run's cgroup is made; `None`: process group only.
    pub cgroups: Option<Arc<Hierarchy>>,
    /// Where a run without a cgroup sends its record once started, with
    /// its process group and the leader's start time, to be stored while
    /// it runs (a new generation kills it after a crash).
    pub started_tx: Option<tokio::sync::mpsc::UnboundedSender<RunRecord>>,
    /// A run planned ahead of its instant: its start (prepared, its
    /// record committed) waits on its spawner thread until then.
    pub not_before: Option<std::time::Instant>,
}

/// Why a run was stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// `overlap = replace`, or a manual kill: recorded `killed`.
    Killed,
    /// The worker is shutting down: recorded `killed` too.
    Shutdown,
    /// `cronwarden kill`, by the socket peer with this uid (when known).
    Operator(Option<u32>),
}

/// Asks a run to stop, remembering the first reason given.
#[derive(Debug, Clone, Default)]
pub(crate) struct StopHandle {
    token: CancellationToken,
    reason: Rc<Cell<Option<StopReason>>>,
}

impl StopHandle {
    pub fn stop(&self, reason: StopReason) {
        if self.reason.get().is_none() {
            self.reason.set(Some(reason));
        }
        self.token.cancel();
    }
}

/// The run's process group: its id (the leader's pid) and the leader's
/// start time, read while the leader was surely ours (not yet reaped).
#[derive(Debug, Clone, Copy)]
struct Group {
    pgid: u32,
    leader_start: Option<u64>,
}

impl Group {
    /// Signals the group unless its number now belongs to someone else.
    /// While the leader is unreaped, or any member lives, the number cannot
    /// be reused; once all are gone it can, and a process found at that pid
    /// with another start time is a stranger: the group is left alone.
    fn signal(&self, sig: Signal) {
        if self.pgid <= 1 {
            return;
        }
        if let (Some(then), Some(now)) = (self.leader_start, procfs::start_time(self.pgid)) {
            if then != now {
                tracing::debug!(pgid = self.pgid, "not signalling: the pid was reused");
                return;
            }
        }
        // ESRCH (group already gone) is the normal case after a clean exit.
        let _ = nix::sys::signal::killpg(Pid::from_raw(self.pgid as i32), sig);
    }

    /// Whether the group still has members, and is still ours.
    fn alive(&self) -> bool {
        let reused = matches!(
            (self.leader_start, procfs::start_time(self.pgid)),
            (Some(then), Some(now)) if then != now
        );
        !reused && nix::sys::signal::killpg(Pid::from_raw(self.pgid as i32), None).is_ok()
    }
}

/// The search path of a job that does not inherit cronwarden's environment
/// (systemd's default for services).
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Who the worker runs as, looked up once: the identity of every job
/// without `user`.
fn worker_account() -> Option<&'static Credentials> {
    static ME: OnceLock<Option<Credentials>> = OnceLock::new();
    ME.get_or_init(|| account::current().ok()).as_ref()
}

/// The job's environment, and who its process runs as. By default the
/// environment is clean: PATH, HOME, USER, LOGNAME and SHELL (as cron
/// sets them), the job's `env`, and the CRONWARDEN_* variables; nothing of
/// cronwarden's own environment (tokens, NOTIFY_SOCKET) leaks into a job
/// unless it says `inherit_env = true`. Returns (start from an empty
/// environment?, the variables to set in order, the job's own account).
fn environment(job: &JobSpec, record: &RunRecord) -> Result<JobEnv, WorkerError> {
    let switch = job.user.is_some() || job.group.is_some();
    let creds = if switch {
        Some(
            account::resolve(job.user.as_deref(), job.group.as_deref())
                .map_err(WorkerError::Credentials)?,
        )
    } else {
        None
    };
    let who = creds.as_ref().or_else(|| worker_account());
    let mut vars: Vec<(OsString, OsString)> = vec![];
    let mut set = |k: &str, v: &OsStr| vars.push((k.into(), v.into()));
    if !job.inherit_env {
        set("PATH", DEFAULT_PATH.as_ref());
        set("SHELL", "/bin/sh".as_ref());
    }
    if let Some(c) = who.filter(|_| switch || !job.inherit_env) {
        set("HOME", c.home.as_ref());
        set("USER", c.user.as_ref());
        set("LOGNAME", c.user.as_ref());
    }
    for (k, v) in job.env.iter() {
        set(k, v.as_ref());
    }
    for (k, v) in env_for(job, record) {
        set(&k, v.as_ref());
    }
    Ok(JobEnv {
        clear: !job.inherit_env,
        vars,
        creds,
    })
}

struct JobEnv {
    clear: bool,
    vars: Vec<(OsString, OsString)>,
    creds: Option<Credentials>,
}

/// What the job's process is switched to between fork (or clone) and exec.
fn setup_for(
    job: &JobSpec,
    creds: Option<Credentials>,
    cgroup_procs: Option<RawFd>,
) -> sys::ChildSetup {
    let limits = &job.limits;
    sys::ChildSetup {
        limits: [
            (sys::LimitKind::NoFile, limits.nofile),
            (sys::LimitKind::AddressSpace, limits.address_space),
            (sys::LimitKind::Cpu, limits.cpu_seconds),
            (sys::LimitKind::Procs, limits.nproc),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect(),
        nice: job.nice,
        credentials: creds.map(|c| (c.uid, c.gid, c.groups)),
        cgroup_procs,
    }
}

fn env_for(job: &JobSpec, r: &RunRecord) -> Vec<(String, String)> {
    let fmt = |t: &Timestamp| t.to_string();
    vec![
        ("CRONWARDEN_JOB".into(), job.name.clone()),
        ("CRONWARDEN_RUN_ID".into(), r.id.to_string()),
        (
            "CRONWARDEN_SCHEDULED_FOR".into(),
            r.scheduled_at.as_ref().map(fmt).unwrap_or_default(),
        ),
        ("CRONWARDEN_TRIGGER".into(), r.trigger.as_str().into()),
        (
            "CRONWARDEN_COVERS".into(),
            r.covers.iter().map(fmt).collect::<Vec<_>>().join(" "),
        ),
    ]
}

/// Runs the job to its end and returns its record: the request's record,
/// completed (same id, same `started_at`). `stop` asks the run to end
/// early (SIGTERM, then SIGKILL after the job's kill grace).
/// `begun`: its start, if already handed over ([`begin`]); else it is
/// handed over now.
pub(crate) async fn run(
    req: RunRequest,
    events: EventTx,
    stop: StopHandle,
    begun: Option<Begun>,
) -> RunRecord {
    let mut record = req.record.clone();
    let Begun(begun, started) = begun.unwrap_or_else(|| begin(&req));
    let (cgroup, child) = begun.await;
    record.contain.cgroup = cgroup.as_ref().map(|c| c.path().display().to_string());
    let (mut child, leader_start) = match child {
        Ok(child) => child,
        Err(e) => {
            if let Some(cg) = cgroup {
                cg.finish(false).await;
            }
            record.outcome = Outcome::Failed;
            record.error = Some(e.to_string());
            // Not before its start: a start planned ahead can fail before
            // its instant.
            record.finished_at = record.started_at.max(Some(Timestamp::now()));
            record.duration_ms = Some(started.elapsed().as_millis() as u64);
            tracing::warn!(job = %req.job.name, run = record.id, "{e}");
            return record;
        }
    };
    let pid = child.id();
    let group = Group {
        pgid: pid,
        leader_start,
    };
    if cgroup.is_none() && pid != 0 {
        record.contain.pgid = Some(pid);
        record.contain.leader_start = group.leader_start;
        if let Some(tx) = &req.started_tx {
            let _ = tx.send(record.clone());
        }
    }
    let (stdout_pipe, stderr_pipe) = (child.take_stdout(), child.take_stderr());
    let pipes = pipe_inodes([stdout_pipe.as_ref(), stderr_pipe.as_ref()]);
    announce(&req, pid, &pipes, &events);
    let (out_file, err_file) = match &req.output_dir {
        Some(dir) => output::open_files(dir, record.id).await,
        None => (None, None),
    };
    let tap = |stream| {
        Some(output_log::Tap {
            job: req.job.name.clone(),
            run_id: record.id,
            stream,
            log: req.job.log_output,
            events: events.clone(),
        })
    };
    let (out_tap, err_tap) = (tap(OutputStream::Stdout), tap(OutputStream::Stderr));
    let mut out_task = stdout_pipe.map(|s| {
        let progress = req.progress.clone();
        tokio::task::spawn_local(capture(s, progress, out_file, output::FILE_MAX, out_tap))
    });
    let mut err_task = stderr_pipe.map(|s| {
        let progress = req.progress.clone();
        tokio::task::spawn_local(capture(s, progress, err_file, output::FILE_MAX, err_tap))
    });
    let (status, ended_by) =
        wait(&req.job, &mut child, group, cgroup.as_ref(), &stop, started).await;
    let emptied = end_leftovers(
        &req.job,
        group,
        cgroup.as_ref(),
        &pipes,
        ended_by.is_some(),
        &mut record,
    )
    .await;
    let (stdout, stderr) = drain(group, &pipes, &mut out_task, &mut err_task, &mut record).await;
    output_log::run_ended(record.id);

    record.finished_at = Some(Timestamp::now());
    record.duration_ms = Some(started.elapsed().as_millis() as u64);
    record.stdout_bytes = stdout.bytes;
    record.stderr_bytes = stderr.bytes;
    record.stdout_tail = stdout.tail();
    record.stderr_tail = stderr.tail();
    judge(&mut record, &req.job, pid, status, ended_by, &stop);
    if let Some(cg) = cgroup {
        let keep = req.job.leftovers == Leftovers::Keep && ended_by.is_none();
        (record.contain.cpu_usec, record.contain.memory_peak) = if keep {
            // Its leftovers live on in it: the figures so far, and the
            // cgroup stays (the next start sweeps it).
            (cg.cpu_usec(), cg.memory_peak())
        } else {
            cg.finish(emptied).await
        };
    }
    tracing::info!(
        job = %req.job.name, run = record.id, outcome = record.outcome.as_str(),
        exit_code = record.exit_code, signal = record.signal, duration_ms = record.duration_ms,
        stdout_bytes = record.stdout_bytes, stderr_bytes = record.stderr_bytes, "finished"
    );
    if let (Some(dir), Some(keep)) = (req.output_dir.clone(), req.job.keep_output) {
        // Off the loop: a directory listing and a few unlinks.
        let job = req.job.name.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = output::prune_files(&dir, keep as usize) {
                tracing::warn!(job, dir = %dir.display(), "cannot prune output files: {e}");
            }
        });
    }
    record
}

/// A start handed to a spawner thread, and when: once done, the run's
/// cgroup (if one was made), and its process with the leader's start
/// time, or why it could not start. The run's age (its timeout, its
/// duration) counts from the hand-over, not from when the loop first polls
/// its task.
pub(crate) struct Begun(
    std::pin::Pin<Box<dyn std::future::Future<Output = (Option<RunCgroup>, started::Outcome)>>>,
    Instant,
);

impl Begun {
    /// The run's age counts from now: its start was held at its gate
    /// until now.
    pub(crate) fn aged_from_now(self) -> Begun {
        Begun(self.0, self.1.max(Instant::now()))
    }
}

/// Starts the job's process, in its own process group (and its cgroup,
/// before it execs), with its output piped to us: all of it on a spawner
/// thread, handed over at once, so the loop only hands the start over and
/// the start goes on while the loop does the rest of its turn (issue 18).
/// What a start made and its run never took (the start panicked, or the
/// [`Begun`] was dropped) is undone ([`Started`]).
pub(crate) fn begin(req: &RunRequest) -> Begun {
    begin_gated(req, None)
}

/// [`begin`], before the run's record is committed: the start waits at
/// `gate`, before its clone, for the loop to say the record is.
pub(crate) fn begin_gated(req: &RunRequest, gate: Option<Gate>) -> Begun {
    // Its age counts from its start, not from a hand-over ahead of it.
    let at = req
        .not_before
        .map_or_else(Instant::now, |t| Instant::from_std(t).max(Instant::now()));
    let (job, record, hierarchy) = (req.job.clone(), req.record.clone(), req.cgroups.clone());
    let hold = Hold {
        gate,
        not_before: req.not_before,
    };
    let started = crate::spawner::off_loop(move || {
        let mut started = Started::new(hierarchy.and_then(|h| make_cgroup(&h, &job, record.id)));
        let child = start_here(&job, &record, started.cgroup(), &hold).map(|child| {
            // Read now, while the leader is surely ours (not yet reaped),
            // unless the clone told it.
            let leader_start = child
                .start_ticks()
                .or_else(|| procfs::start_time(child.id()));
            (child, leader_start)
        });
        started.set(child);
        started
    });
    let job = req.job.clone();
    Begun(
        Box::pin(async move {
            // Named only on failure: argv is built (allocated) per call.
            let spawn_error = |source| WorkerError::Spawn {
                program: job.command.argv()[0].clone(),
                source,
            };
            let (cgroup, child) = started
                .await
                .unwrap_or_else(|e| Started::failed(spawn_error(e)))
                .take();
            let child = child.unwrap_or_else(|| {
                Err(spawn_error(std::io::Error::other(
                    "the start ended without an outcome",
                )))
            });
            (cgroup, child)
        }),
        at,
    )
}

/// The run's cgroup, or `None` (process group only) when it cannot be
/// made: a warning, never a failed run.
fn make_cgroup(h: &Hierarchy, job: &JobSpec, id: u64) -> Option<RunCgroup> {
    match h.create_run(id, &job.limits) {
        Ok(cg) => Some(cg),
        Err(e) => {
            tracing::warn!(job = %job.name, run = id, "{e}; the run is held by its process group only");
            None
        }
    }
}

/// [`start`]'s work, on the spawner thread (in the runtime's context).
fn start_here(
    job: &JobSpec,
    record: &RunRecord,
    cgroup: Option<&RunCgroup>,
    hold: &Hold,
) -> Result<Child, WorkerError> {
    let argv = job.command.argv();
    let spawn_error = |source| WorkerError::Spawn {
        program: argv[0].clone(),
        source,
    };
    let injected = fail::eval("runner::spawn", |arg| {
        std::io::Error::from_raw_os_error(match arg.as_deref() {
            Some("EMFILE") => libc::EMFILE,
            _ => libc::EAGAIN,
        })
    });
    if let Some(e) = injected {
        return Err(spawn_error(e));
    }
    let env = environment(job, record)?;
    if let Some(cg) = cgroup {
        match clone_into(job, &argv, &env, cg, hold) {
            Ok(Some(child)) => return Ok(child),
            Ok(None) => {}
            Err(e) => return Err(spawn_error(e)),
        }
    }
    // The fallback places the child in its cgroup itself, between fork and
    // exec: it writes "0" to this (close-on-exec) descriptor.
    let procs = match cgroup.map(RunCgroup::open_procs).transpose() {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(job = %job.name, run = record.id, "{e}; the run is held by its process group only");
            None
        }
    };
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    if let Some(dir) = &job.working_dir {
        cmd.current_dir(dir);
    }
    if env.clear {
        cmd.env_clear();
    }
    cmd.envs(env.vars.iter().map(|(k, v)| (k, v)));
    // A pre_exec (only for jobs with user, group, nice or limits, or a
    // cgroup to join) forces fork+exec; every other job keeps std's
    // posix_spawn (vfork-style), several times cheaper per job. Descriptors
    // a job must not inherit are close-on-exec already: the worker marks
    // everything it inherited at start (sys::cloexec_inherited) and opens
    // nothing without O_CLOEXEC.
    setup_for(job, env.creds, procs.as_ref().map(|p| p.as_raw_fd())).apply(&mut cmd);
    if !hold.through() {
        return Err(spawn_error(not_committed()));
    }
    let child = cmd.spawn();
    drop(procs);
    child.map(Child::Tokio).map_err(spawn_error)
}

/// Starts the job straight inside its cgroup with clone3; `None` when this
/// kernel or cgroup cannot (said once), for the fork path to do it.
fn clone_into(
    job: &JobSpec,
    argv: &[String],
    env: &JobEnv,
    cgroup: &RunCgroup,
    hold: &Hold,
) -> std::io::Result<Option<Child>> {
    let setup = setup_for(job, env.creds.clone(), None);
    let Some(exec) = child::exec_for(
        argv,
        env.clear,
        &env.vars,
        job.working_dir.as_deref(),
        setup,
    ) else {
        // A NUL byte in an argument or variable: the fork path says so.
        return Ok(None);
    };
    let (out_r, err_r, stdio) = child::stdio()?;
    if !hold.through() {
        return Err(not_committed());
    }
    let cloned = sys::spawn_into_cgroup(&exec, cgroup.dir_fd(), stdio.raw());
    // The child's ends, closed here so EOF comes when the job's are.
    drop(stdio);
    match cloned {
        sys::Cloned::Started {
            pid,
            pidfd,
            start_ticks,
        } => Ok(Some(Child::Pidfd(PidfdChild::new(
            pid,
            pidfd,
            start_ticks,
            out_r,
            err_r,
        )?))),
        sys::Cloned::Failed(e) => Err(e),
        sys::Cloned::Unsupported(e) => {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                tracing::info!(
                    cgroup = %cgroup.path().display(),
                    "cannot start jobs inside their cgroup with clone3 ({e}); each moves itself there before exec instead"
                );
            });
            Ok(None)
        }
    }
}

/// Waits for the main process, or for its timeout or a stop, then
/// escalates: SIGTERM to the group, SIGKILL after the grace, and gives up
/// after [`REAP_BOUND`] (no status: the run is lost). Returns the status
/// and, if the run was ended from outside, how.
async fn wait(
    job: &JobSpec,
    child: &mut Child,
    group: Group,
    cgroup: Option<&RunCgroup>,
    stop: &StopHandle,
    started: Instant,
) -> (Option<std::process::ExitStatus>, Option<Outcome>) {
    // Fault injection: a runner that never enforces the timeout, to test
    // the supervisor's second line.
    let ignore_timeout = fail::eval("runner::no_timeout", |_| ()).is_some();
    let deadline = job.timeout.filter(|_| !ignore_timeout).map(|t| started + t);
    let ended_by = tokio::select! {
        st = child.wait() => return (st.ok(), None),
        _ = sleep_until_opt(deadline) => Outcome::Timeout,
        _ = stop.token.cancelled() => Outcome::Killed,
    };
    group.signal(Signal::SIGTERM);
    if let Some(cg) = cgroup {
        // Escapees (setsid, double fork) are out of the group but not out
        // of the cgroup: they get their SIGTERM too.
        cg.signal_members(Signal::SIGTERM, group.pgid);
    }
    let st = tokio::select! {
        st = child.wait() => st.ok(),
        _ = tokio::time::sleep(job.kill_grace) => None,
    };
    let st = match st {
        Some(st) => Some(st),
        None => {
            group.signal(Signal::SIGKILL);
            if let Some(cg) = cgroup {
                cg.kill();
            }
            tokio::time::timeout(REAP_BOUND, child.wait())
                .await
                .ok()
                .and_then(Result::ok)
        }
    };
    (st, Some(ended_by))
}

/// Ends what the run left behind once its main process is gone: every
/// process still in its cgroup (without one: in its process group), unless
/// the job says `leftovers = "keep"` and was not stopped from outside.
/// Counts them and names the one holding the output open. Whether the
/// run's cgroup was found empty (then nothing is left to wait for).
async fn end_leftovers(
    job: &JobSpec,
    group: Group,
    cgroup: Option<&RunCgroup>,
    pipes: &[u64],
    stopped: bool,
    record: &mut RunRecord,
) -> bool {
    if (job.leftovers == Leftovers::Keep && !stopped) || group.pgid == 0 {
        return false;
    }
    let pgid = group.pgid;
    let left = match cgroup {
        // The common end: one read says it is empty (issue 18).
        Some(cg) if !cg.populated() => return true,
        Some(cg) => cg.pids(),
        // Nothing left in the group: no need to scan /proc.
        None if !group.alive() => vec![],
        // A scan of /proc: off the loop.
        None => tokio::task::spawn_blocking(move || procfs::group_members(pgid))
            .await
            .unwrap_or_default(),
    };
    if left.is_empty() {
        return false;
    }
    let (holder_pids, holder_pipes) = (left.clone(), pipes.to_vec());
    record.contain.output_holder =
        tokio::task::spawn_blocking(move || procfs::pipe_holder(&holder_pids, &holder_pipes))
            .await
            .ok()
            .flatten();
    match cgroup {
        Some(cg) => cg.kill(),
        None => group.signal(Signal::SIGKILL),
    }
    record.contain.leftovers_killed = Some(left.len() as u32);
    tracing::info!(job = %job.name, run = record.id, leftovers = left.len(), "killed what the run left behind");
    false
}

/// Drains output for a bounded time; a grandchild that keeps the pipe
/// open is killed with its group rather than holding the run, and so is
/// whoever else holds it (a `setsid` escapee is out of the group: it is
/// found by the pipe's inode in every process's descriptors, named in the
/// record, and killed through a pidfd).
async fn drain(
    group: Group,
    pipes: &[u64],
    out_task: &mut Option<tokio::task::JoinHandle<Captured>>,
    err_task: &mut Option<tokio::task::JoinHandle<Captured>>,
    record: &mut RunRecord,
) -> (Captured, Captured) {
    let drain_until = Instant::now() + DRAIN;
    let mut stdout = collect(out_task, drain_until).await;
    let mut stderr = collect(err_task, drain_until).await;
    if stdout.is_none() || stderr.is_none() {
        group.signal(Signal::SIGKILL);
        let pipes = pipes.to_vec();
        let holders = tokio::task::spawn_blocking(move || procfs::kill_pipe_holders(&pipes))
            .await
            .unwrap_or_default();
        if record.contain.output_holder.is_none() {
            record.contain.output_holder = holders.into_iter().next();
        }
        let until = Instant::now() + Duration::from_secs(1);
        if stdout.is_none() {
            stdout = collect(out_task, until).await;
        }
        if stderr.is_none() {
            stderr = collect(err_task, until).await;
        }
        if record.error.is_none() {
            record.error = Some(format!(
                "output still held open {}s after the job's main process exited; killed its process group and the pipe's holders",
                DRAIN.as_secs()
            ));
        }
    }
    for t in [out_task.take(), err_task.take()].into_iter().flatten() {
        t.abort();
    }
    (stdout.unwrap_or_default(), stderr.unwrap_or_default())
}

/// The run's outcome, exit code, signal and error, from how it ended.
fn judge(
    record: &mut RunRecord,
    job: &JobSpec,
    pid: u32,
    status: Option<std::process::ExitStatus>,
    ended_by: Option<Outcome>,
    stop: &StopHandle,
) {
    match status {
        Some(st) => {
            use std::os::unix::process::ExitStatusExt;
            record.exit_code = st.code();
            record.signal = st.signal();
            record.outcome = match ended_by {
                Some(o) => o,
                None if st.success() => Outcome::Success,
                None => Outcome::Failed,
            };
        }
        None => {
            // Not reaped even after SIGKILL (uninterruptible sleep, or a kill
            // that failed): release the run anyway and say so.
            record.outcome = Outcome::Lost;
            record.error = Some(format!(
                "process {pid} could not be reaped {}s after SIGKILL; the run is abandoned",
                REAP_BOUND.as_secs()
            ));
        }
    }
    match (ended_by, record.outcome) {
        (Some(Outcome::Timeout), Outcome::Timeout) => {
            record.error = Some(format!(
                "timed out after {}",
                humantime_short(job.timeout.unwrap_or_default())
            ));
        }
        (Some(Outcome::Killed), Outcome::Killed) => {
            record.error = Some(match stop.reason.get().unwrap_or(StopReason::Killed) {
                StopReason::Killed => "killed: replaced by a newer run".into(),
                StopReason::Shutdown => "killed: cronwarden is shutting down".into(),
                StopReason::Operator(Some(uid)) => format!("killed by operator (uid {uid})"),
                StopReason::Operator(None) => "killed by operator".into(),
            });
        }
        _ => {}
    }
}

fn humantime_short(d: Duration) -> String {
    cronwarden_shared::timefmt::human_duration(d)
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn collect(
    task: &mut Option<tokio::task::JoinHandle<Captured>>,
    until: Instant,
) -> Option<Captured> {
    let handle = task.as_mut()?;
    match tokio::time::timeout_at(until, handle).await {
        Ok(Ok(c)) => {
            *task = None;
            Some(c)
        }
        Ok(Err(_)) => {
            *task = None;
            Some(Captured::default())
        }
        Err(_) => None,
    }
}
