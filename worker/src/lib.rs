//! The scheduler worker: `cronwarden worker`, started only by the supervisor.
//!
//! A pure core and an imperative shell:
//!
//! - [`plan`]: every scheduling decision (fire, coalesce, skip with a
//!   reason, queue, replace, pause, trigger, reload, clock jumps) as a pure
//!   state machine: clocks and inputs in; store writes, events, spawns and
//!   stops out. It reads no clock, touches no store, spawns nothing. One
//!   rule (`plan::arming`) says where a job is armed after a backward
//!   clock step, for a stored next fire off its schedule, and when the
//!   supervisor asks to re-arm a job;
//! - [`scheduler`]: the loop around it: reads the clocks, feeds the plan,
//!   carries out its effects, and writes the heartbeat after each turn (so
//!   a heartbeat proves progress, not just a live thread); it takes the
//!   store over at start off the loop, retried with backoff, and watches
//!   the store file's identity (deleted or replaced: reported critical,
//!   reopened, what it holds written back); its first heartbeat ends
//!   start-up, whose pages it then hands back (`footprint`);
//! - [`takeover`]: taking the store over at start, off the loop and
//!   retried with backoff, heartbeating with the cause meanwhile; it first
//!   writes what the supervisor kept of a dead predecessor's held writes
//!   (`adopt` commands);
//! - [`clock`]: reading the wall, monotonic and boot clocks, and telling a
//!   wall-clock step from a suspend;
//! - [`boot_id`]: which boot this is, for `@reboot` jobs;
//! - [`journal`]: the store writes of a turn, committed in one transaction,
//!   held and retried while the store fails (claims coalesce per job and
//!   are never dropped; only records beyond the bound are, counted in the
//!   heartbeat's stats);
//! - [`writer`]: the thread (with its own connection) that commits the
//!   journal's batches, so the loop waits on SQLite at most 50 ms a turn;
//! - [`retention`]: pruning old records, a few jobs per sweep; a config
//!   marks only the jobs the store holds more records of than they keep;
//! - [`runner`]: one run of one job, in its own process group (and its
//!   cgroup), under a timeout that escalates SIGTERM → SIGKILL
//!   (`cgroup.kill`) and never hangs on a pipe; it kills what the run left
//!   behind and completes the run record the plan made;
//! - [`output`]: byte counts and a bounded tail of a job's output;
//! - [`output_log`]: a job's output lines into cronwarden's log and to the
//!   supervisor (for `logs -f`), within one budget per worker;
//! - [`kill`]: which runs an operator's `kill` ends;
//! - [`events`]: the NDJSON event pipe to the supervisor;
//! - [`error`]: the worker's error type, naming the descriptor, path or
//!   program at fault;
//! - [`cgroup`]: a cgroup v2 per run where one can be made: placing the
//!   job in it before exec, `cgroup.kill`, CPU and peak memory, limits,
//!   and the sweep of what an earlier generation left;
//! - [`sweep`]: at start, killing what an earlier generation left running
//!   (its run cgroups; without cgroups, the stored process groups of runs
//!   recorded lost), before anything fires;
//! - [`spawner`]: the threads (two per core) that start jobs' processes,
//!   the one that reads what finished runs cost, and the one that removes
//!   their cgroups once no start is in flight (bounded):
//!   the loop hands each start over, a burst's starts run in parallel;
//! - [`procfs`]: reading /proc about a run's processes (its process group
//!   without cgroups, who holds its output pipe);
//! - [`sys`]: raw system calls: the inherited descriptors, what a job may
//!   inherit, and the set-up of a job between fork and exec (credentials,
//!   niceness, limits); the only `unsafe` in this crate.
//!
//! The worker exits when its supervisor goes away: EOF on stdin, a broken
//! event pipe, or the parent-death signal the supervisor arranged.
//!
//! Fault injection (feature `failpoints`, on only in test builds): the
//! `FAILPOINTS` environment variable, e.g. `worker::turn=panic` (every loop
//! turn panics), `worker::drop_fire=return(JOB)` (JOB's fires are silently
//! dropped), `worker::misarm=return(JOB)` (JOB's next claim arms it a day
//! too far, once), `store::apply=return` (store writes fail),
//! `runner::no_timeout=return` (runs are never timed out by the worker),
//! `runner::spawn=return(EMFILE)` (a job's spawn fails with EMFILE; any
//! other argument: EAGAIN), `runner::unannounced=return` (runs start but
//! their `fire` line is never sent, as if the worker died in between),
//! `worker::after_hello=return(MS)` (a slow start between hello and the
//! first loop turn), `store::take_over=sleep(MS)` (the store's take-over,
//! on its blocking thread, still in flight for MS),
//! `journal::max_held_records=return(N)` (the journal holds at most N run
//! records while the store fails, instead of 10,000),
//! `worker::junk_events=return` (malformed lines on the event pipe, once,
//! right after the hello), `worker::boot_id=return(PATH)` (the boot id is
//! read from PATH, to stage a new boot).

mod boot_id;
mod cgroup;
mod child;
mod clock;
mod cluster;
mod error;
mod events;
mod journal;
mod kill;
#[cfg(test)]
mod once_props;
mod output;
mod output_log;
mod plan;
mod procfs;
mod retention;
mod runner;
mod scheduler;
mod spawner;
mod sweep;
mod sys;
mod takeover;
mod writer;

use std::process::ExitCode;

pub use cgroup::probe as probe_cgroups;

/// How the supervisor started this worker.
#[derive(Debug, Clone)]
pub struct WorkerArgs {
    /// The inherited write end of the event pipe.
    pub events_fd: i32,
    /// The inherited lock descriptor, kept open (and so locked) while the
    /// worker lives; made close-on-exec so jobs never inherit it.
    pub lock_fd: Option<i32>,
    /// Run ids start here, so ids stay unique across worker restarts.
    pub first_run_id: u64,
}

/// Runs the worker until shutdown.
pub fn main(args: WorkerArgs) -> ExitCode {
    sys::cloexec_inherited();
    let _failpoints = fail::FailScenario::setup();
    if cfg!(feature = "failpoints") {
        tracing::warn!("this build has fail points compiled in (FAILPOINTS); it is for tests only");
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("worker: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(scheduler::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("worker: {e}");
            ExitCode::from(1)
        }
    }
}
