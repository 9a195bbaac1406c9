//! A start's outcome on its way from the spawner thread to its run, and
//! what becomes of it if the run never takes it: a start that panics after
//! making the run's cgroup, or a run whose future is dropped while its
//! start is in flight (the worker stopping), would otherwise leave the
//! cgroup behind and the job's process running, tracked by nobody.

use nix::sys::signal::Signal;

use super::Group;
use crate::{cgroup::RunCgroup, child::Child, error::WorkerError};

/// The started process and its leader's start time, or why it did not
/// start.
pub(super) type Outcome = Result<(Child, Option<u64>), WorkerError>;

/// The run's cgroup (if one was made) and its process. Dropped before the
/// run [took](Started::take) it, it kills the process group (the runner's
/// identity-checked kill) and empties and removes the cgroup.
pub(super) struct Started {
    cgroup: Option<RunCgroup>,
    child: Option<Outcome>,
}

impl Started {
    /// A start that has made its cgroup (or not) and no process yet: from
    /// here a panic removes the cgroup.
    pub(super) fn new(cgroup: Option<RunCgroup>) -> Started {
        Started {
            cgroup,
            child: None,
        }
    }

    /// A start that failed before anything was made.
    pub(super) fn failed(e: WorkerError) -> Started {
        Started {
            cgroup: None,
            child: Some(Err(e)),
        }
    }

    pub(super) fn cgroup(&self) -> Option<&RunCgroup> {
        self.cgroup.as_ref()
    }

    pub(super) fn set(&mut self, outcome: Outcome) {
        self.child = Some(outcome);
    }

    /// The run takes what was started: from here it is the run's to end
    /// (`None` for the outcome: the start never said, an error for it).
    pub(super) fn take(mut self) -> (Option<RunCgroup>, Option<Outcome>) {
        (self.cgroup.take(), self.child.take())
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Some(Ok((child, leader_start))) = self.child.take() {
            let pgid = child.id();
            tracing::warn!(
                pgid,
                "a job's process started for a run that is gone (the worker is stopping): killing its process group"
            );
            Group { pgid, leader_start }.signal(Signal::SIGKILL);
            // Reaped whenever it exits (see `child::PidfdChild`, and
            // tokio's orphan reaping).
            drop(child);
        }
        let Some(cg) = self.cgroup.take() else {
            return;
        };
        // Whatever is in it is nobody's run.
        cg.kill();
        match tokio::runtime::Handle::try_current() {
            // Emptied (bounded) and removed off this thread, as at a
            // run's end.
            Ok(rt) => drop(rt.spawn(async move {
                cg.finish(false).await;
            })),
            Err(_) => tracing::warn!(
                cgroup = %cg.path().display(),
                "a run's cgroup left behind by a start that did not finish: the next start sweeps it"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// The members of process group `pgid` not yet dead (zombies are).
    fn live_members(pgid: u32) -> Vec<u32> {
        crate::procfs::group_members(pgid)
            .into_iter()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| Some(s[s.rfind(')')? + 2..].starts_with('Z')))
                    == Some(false)
            })
            .collect()
    }

    /// A job's group (a shell and a grandchild) started for a run, as the
    /// spawner thread hands it over.
    fn started_group() -> (Started, u32) {
        let child = tokio::process::Command::new("sh")
            .args(["-c", "sleep 30 & exec sleep 30"])
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .unwrap();
        let pgid = child.id().unwrap();
        let mut started = Started::new(None);
        started.set(Ok((Child::Tokio(child), crate::procfs::start_time(pgid))));
        (started, pgid)
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A start the run took is the run's: left alone. One whose run is
    /// gone has its whole group killed, not left running untracked.
    #[tokio::test]
    async fn a_start_whose_run_is_gone_kills_its_group() {
        let (taken, kept) = started_group();
        let (_, child) = taken.take();
        let (gone, pgid) = started_group();
        wait_for("both shells' grandchildren", || {
            live_members(pgid).len() == 2 && live_members(kept).len() == 2
        });
        drop(gone);
        wait_for("the dropped start's group killed", || {
            live_members(pgid).is_empty()
        });
        assert_eq!(live_members(kept).len(), 2, "the taken start was killed");
        let (mut child, leader_start) = child.unwrap().unwrap();
        Group {
            pgid: kept,
            leader_start,
        }
        .signal(Signal::SIGKILL);
        child.wait().await.unwrap();
    }

    /// A start that panics after making the run's cgroup removes it.
    #[tokio::test]
    async fn a_start_that_panics_removes_its_cgroup() {
        let dir = tempfile::tempdir().unwrap();
        let Some((h, cg)) = crate::cgroup::Hierarchy::setup(dir.path(), true)
            .ok()
            .and_then(|h| {
                let cg = h.create_run(1, &Default::default()).ok()?;
                Some((h, cg))
            })
        else {
            cronwarden_shared::test_skip::skip("no writable cgroup2 hierarchy");
            return;
        };
        let path = cg.path().to_path_buf();
        let panicked = std::panic::catch_unwind(move || {
            let _started = Started::new(Some(cg));
            panic!("a start that panics");
        });
        assert!(panicked.is_err());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while path.exists() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} still there",
                path.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        h.remove_instance();
    }
}
