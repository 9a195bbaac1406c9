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

use cronwarden_shared::proc_identity::{self, ProcIdentity};
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

    /// A run's `finish` line was read: its group is no longer to be signalled.
    pub(crate) fn finished(&mut self, run_id: u64) {
        self.by_pgid.retain(|_, (id, _)| *id != run_id);
    }

    /// Every run of the worker is over (it exited and its runs were killed).
    pub(crate) fn clear(&mut self) {
        self.by_pgid.clear();
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
