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
//!   killed: a leftover grandchild never hangs the runner.

use std::{
    cell::Cell,
    os::fd::{AsFd, AsRawFd},
    process::Stdio,
    rc::Rc,
    sync::{Arc, OnceLock},
    time::Duration,
};

use cronwarden_shared::{
    account::{self, Credentials},
    config::JobSpec,
    status::{Outcome, RunRecord, Trigger},
    wire::Event,
};
use jiff::Timestamp;
use nix::{sys::signal::Signal, unistd::Pid};
use tokio::{process::Command, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::{
    events::EventTx,
    output::{self, capture, Captured},
    sys,
};

/// How long output is drained after the main process exits.
pub const DRAIN: Duration = Duration::from_secs(2);
/// How long a SIGKILLed group may take to be reaped before the run is `lost`.
pub const REAP_BOUND: Duration = Duration::from_secs(5);

/// What to run and what it stands for.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub run_id: u64,
    pub job: Arc<JobSpec>,
    pub scheduled_at: Option<Timestamp>,
    pub covers: Vec<Timestamp>,
    pub trigger: Trigger,
    /// The job's next armed fire, reported with the fire event.
    pub next_fire_at: Option<Timestamp>,
    /// Where the run's output progress is kept for the heartbeat.
    pub progress: crate::output::SharedProgress,
    /// Where the run's whole output goes (`keep_output`), if anywhere.
    pub output_dir: Option<std::path::PathBuf>,
}

/// Why a run was stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `overlap = replace`, or a manual kill: recorded `killed`.
    Killed,
    /// The worker is shutting down: recorded `killed` too.
    Shutdown,
}

/// Asks a run to stop, remembering the first reason given.
#[derive(Debug, Clone, Default)]
pub struct StopHandle {
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

fn signal_group(pgid: u32, sig: Signal) {
    // ESRCH (group already gone) is the normal case after a clean exit.
    let _ = nix::sys::signal::killpg(Pid::from_raw(pgid as i32), sig);
}

/// The search path of a job that does not inherit cronwarden's environment
/// (systemd's default for services).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Who the worker runs as, looked up once: the identity of every job
/// without `user`.
fn worker_account() -> Option<&'static Credentials> {
    static ME: OnceLock<Option<Credentials>> = OnceLock::new();
    ME.get_or_init(|| account::current().ok()).as_ref()
}

/// The job's environment, and what its process is switched to. By default
/// the environment is clean: PATH, HOME, USER, LOGNAME and SHELL (as cron
/// sets them), the job's `env`, and the CRONWARDEN_* variables; nothing of
/// cronwarden's own environment (tokens, NOTIFY_SOCKET) leaks into a job
/// unless it says `inherit_env = true`.
fn process_for(req: &RunRequest, cmd: &mut Command) -> Result<(), String> {
    let job = &req.job;
    let switch = job.user.is_some() || job.group.is_some();
    let creds = if switch {
        Some(
            account::resolve(job.user.as_deref(), job.group.as_deref())
                .map_err(|e| format!("cannot run as the configured user/group: {e}"))?,
        )
    } else {
        None
    };
    let who = creds.as_ref().or_else(|| worker_account());
    if !job.inherit_env {
        cmd.env_clear()
            .env("PATH", DEFAULT_PATH)
            .env("SHELL", "/bin/sh");
    }
    if let Some(c) = who.filter(|_| switch || !job.inherit_env) {
        cmd.env("HOME", &c.home)
            .env("USER", &c.user)
            .env("LOGNAME", &c.user);
    }
    cmd.envs(job.env.iter()).envs(env_for(req));
    let limits = &job.limits;
    let setup = sys::ChildSetup {
        limits: [
            (sys::LimitKind::NoFile, limits.nofile),
            (sys::LimitKind::AddressSpace, limits.address_space),
            (sys::LimitKind::Cpu, limits.cpu_seconds),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect(),
        nice: job.nice,
        credentials: creds.map(|c| (c.uid, c.gid, c.groups)),
    };
    setup.apply(cmd);
    Ok(())
}

fn env_for(req: &RunRequest) -> Vec<(String, String)> {
    let fmt = |t: &Timestamp| t.to_string();
    vec![
        ("CRONWARDEN_JOB".into(), req.job.name.clone()),
        ("CRONWARDEN_RUN_ID".into(), req.run_id.to_string()),
        (
            "CRONWARDEN_SCHEDULED_FOR".into(),
            req.scheduled_at.as_ref().map(fmt).unwrap_or_default(),
        ),
        ("CRONWARDEN_TRIGGER".into(), req.trigger.as_str().into()),
        (
            "CRONWARDEN_COVERS".into(),
            req.covers.iter().map(fmt).collect::<Vec<_>>().join(" "),
        ),
    ]
}

/// Runs the job to its end and returns its record. `stop` asks the run to
/// end early (SIGTERM, then SIGKILL after the job's kill grace).
pub async fn run(req: RunRequest, events: EventTx, stop: StopHandle) -> RunRecord {
    let started_at = Timestamp::now();
    let started = Instant::now();
    let argv = req.job.command.argv();
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    if let Some(dir) = &req.job.working_dir {
        cmd.current_dir(dir);
    }
    // A pre_exec (only for jobs with user, group, nice or limits) forces
    // fork+exec; every other job keeps std's posix_spawn (vfork-style),
    // several times cheaper per job. Descriptors a job must not inherit are
    // close-on-exec already: the worker marks everything it inherited at
    // start (sys::cloexec_inherited) and opens nothing without O_CLOEXEC.
    let prepared = process_for(&req, &mut cmd);
    let mut record = RunRecord::new(
        req.run_id,
        &req.job.name,
        req.covers.clone(),
        req.trigger,
        Outcome::Failed,
    );
    record.started_at = Some(started_at);
    let injected = fail::eval("runner::spawn", |arg| {
        std::io::Error::from_raw_os_error(match arg.as_deref() {
            Some("EMFILE") => libc::EMFILE,
            _ => libc::EAGAIN,
        })
    });
    let spawned = match (prepared, injected) {
        (Err(e), _) => Err(e),
        (Ok(()), Some(e)) => Err(format!("cannot start {:?}: {e}", argv[0])),
        (Ok(()), None) => spawn_off_loop(cmd)
            .await
            .map_err(|e| format!("cannot start {:?}: {e}", argv[0])),
    };
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            record.error = Some(e);
            record.finished_at = Some(Timestamp::now());
            record.duration_ms = Some(started.elapsed().as_millis() as u64);
            tracing::warn!(job = %req.job.name, run = req.run_id, "{}", record.error.as_deref().unwrap_or_default());
            return record;
        }
    };
    let pid = child.id().unwrap_or(0);
    let pipes: Vec<u64> = [
        child.stdout.as_ref().map(|p| p.as_fd().as_raw_fd()),
        child.stderr.as_ref().map(|p| p.as_fd().as_raw_fd()),
    ]
    .into_iter()
    .flatten()
    .filter_map(|fd| nix::sys::stat::fstat(fd).ok().map(|st| st.st_ino))
    .collect();
    events.send(Event::Fire {
        job: req.job.name.clone(),
        run_id: req.run_id,
        scheduled_at: req.scheduled_at,
        covers: req.covers.clone(),
        trigger: req.trigger,
        pid,
        pipes,
        started_at,
        next_fire_at: req.next_fire_at,
    });
    tracing::info!(job = %req.job.name, run = req.run_id, pid, trigger = req.trigger.as_str(), "started");

    let (out_file, err_file) = match &req.output_dir {
        Some(dir) => output::open_files(dir, req.run_id).await,
        None => (None, None),
    };
    let mut out_task = child.stdout.take().map(|s| {
        tokio::task::spawn_local(capture(s, req.progress.clone(), out_file, output::FILE_MAX))
    });
    let mut err_task = child.stderr.take().map(|s| {
        tokio::task::spawn_local(capture(s, req.progress.clone(), err_file, output::FILE_MAX))
    });

    // Fault injection: a runner that never enforces the timeout, to test
    // the supervisor's second line.
    let ignore_timeout = fail::eval("runner::no_timeout", |_| ()).is_some();
    let deadline = req
        .job
        .timeout
        .filter(|_| !ignore_timeout)
        .map(|t| started + t);
    let mut ended_by: Option<Outcome> = None;
    let status = tokio::select! {
        st = child.wait() => st.ok(),
        _ = sleep_until_opt(deadline) => { ended_by = Some(Outcome::Timeout); None }
        _ = stop.token.cancelled() => { ended_by = Some(Outcome::Killed); None }
    };
    let status = match status {
        Some(st) => Some(st),
        None => {
            // Escalate: SIGTERM to the group, SIGKILL after the grace.
            signal_group(pid, Signal::SIGTERM);
            let st = tokio::select! {
                st = child.wait() => st.ok(),
                _ = tokio::time::sleep(req.job.kill_grace) => None,
            };
            match st {
                Some(st) => Some(st),
                None => {
                    signal_group(pid, Signal::SIGKILL);
                    tokio::time::timeout(REAP_BOUND, child.wait())
                        .await
                        .ok()
                        .and_then(Result::ok)
                }
            }
        }
    };

    // Drain output for a bounded time; a grandchild that keeps the pipe
    // open is killed with its group rather than holding the run.
    let drain_until = Instant::now() + DRAIN;
    let mut stdout = collect(&mut out_task, drain_until).await;
    let mut stderr = collect(&mut err_task, drain_until).await;
    if stdout.is_none() || stderr.is_none() {
        signal_group(pid, Signal::SIGKILL);
        let until = Instant::now() + Duration::from_secs(1);
        if stdout.is_none() {
            stdout = collect(&mut out_task, until).await;
        }
        if stderr.is_none() {
            stderr = collect(&mut err_task, until).await;
        }
        if record.error.is_none() {
            record.error = Some(format!(
                "output still held open {}s after the job's main process exited; killed its process group",
                DRAIN.as_secs()
            ));
        }
    }
    for t in [out_task, err_task].into_iter().flatten() {
        t.abort();
    }
    let stdout = stdout.unwrap_or_default();
    let stderr = stderr.unwrap_or_default();

    record.finished_at = Some(Timestamp::now());
    record.duration_ms = Some(started.elapsed().as_millis() as u64);
    record.stdout_bytes = stdout.bytes;
    record.stderr_bytes = stderr.bytes;
    record.stdout_tail = stdout.tail();
    record.stderr_tail = stderr.tail();
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
                humantime_short(req.job.timeout.unwrap_or_default())
            ));
        }
        (Some(Outcome::Killed), Outcome::Killed) => {
            record.error = Some(match stop.reason.get().unwrap_or(StopReason::Killed) {
                StopReason::Killed => "killed: replaced by a newer run".into(),
                StopReason::Shutdown => "killed: cronwarden is shutting down".into(),
            });
        }
        _ => {}
    }
    tracing::info!(
        job = %req.job.name, run = req.run_id, outcome = record.outcome.as_str(),
        exit_code = ?record.exit_code, signal = ?record.signal, duration_ms = record.duration_ms,
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

/// At most this many spawns are under way at once.
const PARALLEL_SPAWNS: usize = 4;

/// Spawns on the blocking pool, a few at a time. posix_spawn suspends the
/// calling thread until the child has exec'd (vfork): on the loop's thread
/// that made a burst of N jobs start one after another, each waiting for
/// the previous exec, and held the loop (and its heartbeat) meanwhile.
/// Spawned elsewhere, the execs overlap and the loop stays free. The child
/// is registered with this runtime's reactor all the same (blocking-pool
/// threads run in the runtime's context).
async fn spawn_off_loop(mut cmd: Command) -> std::io::Result<tokio::process::Child> {
    static SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(PARALLEL_SPAWNS);
    let _slot = SLOTS.acquire().await.map_err(std::io::Error::other)?;
    tokio::task::spawn_blocking(move || cmd.spawn())
        .await
        .map_err(std::io::Error::other)?
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
