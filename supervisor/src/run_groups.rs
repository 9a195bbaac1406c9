//! The identity of each run's process group leader, as the supervisor saw
//! it when the run's `fire` line was read, so that the loop never signals
//! a group that is no longer the run's (see
//! [`cronwarden_shared::proc_identity`]).
//!
//! A `fire` line may be read long after the run started (the supervisor
//! was paused, the host starved it): the pid is only taken as the run's
//! leader if it is then a child of the worker leading its own group;
//! otherwise the run's leader is left unidentified and [`RunGroups::kill`]
//! falls back to the group's members being children of ours.
//!
//! I/O: reads `/proc`; sends signals.

use std::collections::HashMap;

use cronwarden_shared::{
    config::{Config, Leftovers},
    proc_identity::{self, ProcIdentity},
};
use nix::sys::signal::Signal;

use crate::spawn;

/// Runs in flight by process group id: the run and its leader's identity.
#[derive(Debug, Default)]
pub(crate) struct RunGroups {
    by_pgid: HashMap<u32, (u64, Option<ProcIdentity>)>,
}

/// A bound on what is remembered: a worker reports at most its runs in
/// flight, but a misbehaving one must not grow the supervisor.
const MAX_RUNS: usize = 100_000;

impl RunGroups {
    /// A run's `fire` line was read: its leader `pid`, started by `worker`.
    pub(crate) fn fired(&mut self, run_id: u64, pid: u32, worker: Option<u32>) {
        if self.by_pgid.len() >= MAX_RUNS && !self.by_pgid.contains_key(&pid) {
            return;
        }
        let leader = proc_identity::stat(pid)
            .filter(|s| s.pgrp == pid && Some(s.ppid) == worker)
            .map(|s| ProcIdentity {
                pid,
                start_ticks: s.start_ticks,
            });
        if leader.is_none() {
            tracing::debug!(
                run = run_id,
                pid,
                "run's process was gone (or not the worker's) when its fire line was read"
            );
        }
        self.by_pgid.insert(pid, (run_id, leader));
    }

    /// Runs found among a dead worker's orphans, each group signalled
    /// only by its leader's identity (as read then), never by membership.
    pub(crate) fn adopt(&mut self, reparented: &[Reparented]) {
        for r in reparented {
            if self.by_pgid.len() >= MAX_RUNS {
                return;
            }
            let leader = ProcIdentity {
                pid: r.pgid,
                start_ticks: r.start_ticks,
            };
            self.by_pgid
                .entry(r.pgid)
                .or_insert((r.run_id, Some(leader)));
        }
    }

    /// A run's `finish` line was read: its group is no longer to be signalled.
    pub(crate) fn finished(&mut self, run_id: u64) {
        self.by_pgid.retain(|_, (id, _)| *id != run_id);
    }

    /// Every run of the worker is over (it exited and its runs were killed).
    pub(crate) fn clear(&mut self) {
        self.by_pgid.clear();
    }

    /// Without cgroups, what escaped a run's process group (`setsid`, a
    /// daemonising script) is reparented to us, the subreaper, when its
    /// parent exits: kills each such child of ours whose environment says
    /// it belongs to a run no longer in flight (CRONWARDEN_RUN_ID, which
    /// every job process inherits) of a job not `leftovers = "keep"`. Each
    /// through a pidfd, after reading who it is. Returns how many.
    pub(crate) fn kill_orphans(&self, config: &Config, worker: Option<u32>) -> usize {
        let in_flight: Vec<u64> = self.by_pgid.values().map(|(id, _)| *id).collect();
        let mut killed = 0;
        for pid in our_children().into_iter().filter(|p| Some(*p) != worker) {
            let belongs = || {
                let Some((job, run)) = run_of(pid) else {
                    return false;
                };
                let keep = config
                    .jobs
                    .iter()
                    .any(|j| j.name == job && j.leftovers == Leftovers::Keep);
                !keep && !in_flight.contains(&run)
            };
            if spawn::kill_pinned(pid, belongs) {
                tracing::info!(
                    pid,
                    "killed a process a finished run left behind (reparented to the supervisor)"
                );
                killed += 1;
            }
        }
        killed
    }

    /// SIGKILLs group `pgid` if it is still the run's: by its leader's
    /// identity, else (leader ended or never identified) by its members
    /// being children of `parents`. Says whether it signalled.
    pub(crate) fn kill(&self, pgid: u32, parents: &[u32]) -> bool {
        let (run, leader) = match self.by_pgid.get(&pgid) {
            Some((run, leader)) => (Some(*run), leader.as_ref()),
            None => (None, None),
        };
        spawn::signal_run_group(run, pgid, leader, parents, Signal::SIGKILL)
    }
}

/// A run found among our children, reparented from a worker that died:
/// the job and run its environment names, the group that child leads (its
/// pid), when it started, and how long ago.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reparented {
    pub job: String,
    pub run_id: u64,
    pub pgid: u32,
    pub start_ticks: u64,
    pub running_ms: u64,
}

/// A bound on the children whose environment is read on the loop when a
/// worker dies; what is beyond it is left to the next worker's recovery.
const MAX_REPARENTED: usize = 1024;

/// The runs among our children: after a worker died, its runs are ours
/// (we are the subreaper), including any it started and died before
/// reporting. Only a child that leads its own group counts, as a run's
/// leader does: the environment and the group of any other are the job's
/// to choose, and the group it joined need not be a run's.
pub(crate) fn reparented_runs() -> Vec<Reparented> {
    let mut out = vec![];
    for pid in our_children().into_iter().take(MAX_REPARENTED) {
        let (Some((job, run_id)), Some(s)) = (run_of(pid), proc_identity::stat(pid)) else {
            continue;
        };
        if s.pgrp == pid {
            out.push(Reparented {
                job,
                run_id,
                pgid: pid,
                start_ticks: s.start_ticks,
                running_ms: crate::forensics::age_ms(s.start_ticks),
            });
        }
    }
    out
}

/// Our children (every thread's: an orphan is reparented to one of them).
fn our_children() -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return vec![];
    };
    let mut pids: Vec<u32> = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// (job, run id) from a process's environment, if it is a job's.
fn run_of(pid: u32) -> Option<(String, u64)> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    run_in_environ(&env)
}

fn run_in_environ(env: &[u8]) -> Option<(String, u64)> {
    let var = |name: &[u8]| {
        env.split(|b| *b == 0)
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix(b"="))
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    Some((
        var(b"CRONWARDEN_JOB")?,
        var(b"CRONWARDEN_RUN_ID")?.parse().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jobs_run_is_read_from_its_environment() {
        let env =
            b"PATH=/bin\0CRONWARDEN_JOB=nightly\0CRONWARDEN_RUN_ID=42\0X=CRONWARDEN_RUN_ID=7\0";
        assert_eq!(run_in_environ(env), Some(("nightly".into(), 42)));
        assert_eq!(run_in_environ(b"PATH=/bin\0CRONWARDEN_RUN_ID=42\0"), None);
        assert_eq!(
            run_in_environ(b"CRONWARDEN_JOB=a\0CRONWARDEN_RUN_ID=x\0"),
            None
        );
        assert!(our_children().is_empty() || our_children().iter().all(|p| *p > 0));
    }

    /// After a worker's death, a child of ours counts as a run only if it
    /// leads its own group: a job's process that joined another group (or
    /// set the variables itself) never makes us signal that group.
    #[test]
    fn only_a_child_leading_its_own_group_counts_as_a_run() {
        use std::os::unix::process::CommandExt;
        let spawn = |run: &str, own_group: bool| {
            let mut c = std::process::Command::new("sleep");
            c.arg("30")
                .env("CRONWARDEN_JOB", "j")
                .env("CRONWARDEN_RUN_ID", run);
            if own_group {
                c.process_group(0);
            }
            c.spawn().unwrap()
        };
        let mut leader = spawn("990001", true);
        let mut member = spawn("990002", false);
        // Before its exec a child's environment is still ours: wait
        // (bounded) until both run `sleep`.
        let execed = |pid: u32| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !(execed(leader.id()) && execed(member.id())) {
            assert!(std::time::Instant::now() < deadline, "never exec'd");
            std::thread::yield_now();
        }
        let found: Vec<Reparented> = reparented_runs()
            .into_iter()
            .filter(|r| r.job == "j" && (990001..=990002).contains(&r.run_id))
            .collect();
        for c in [&mut leader, &mut member] {
            let _ = c.kill();
            let _ = c.wait();
        }
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].run_id, found[0].pgid), (990001, leader.id()));
    }
}
