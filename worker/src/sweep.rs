//! What an earlier generation left running is killed before this one
//! fires anything (issue 15: a crashed cronwarden's runs ran on beside the
//! next fire of their job): the run cgroups left in this instance's
//! directory, and, without cgroups, the stored process groups of the runs
//! recorded lost, each only if its leader is still the same process.

use std::{sync::Arc, time::Duration};

use cronwarden_shared::{config::Config, status::RunRecord};

use crate::cgroup::Hierarchy;

/// Kills the process groups of runs a dead worker left without a cgroup,
/// each only if its leader is still the process that started it. Returns
/// (run id, processes killed). Off the loop.
pub(crate) async fn kill_lost_groups(lost: &[RunRecord]) -> Vec<(u64, usize)> {
    let groups: Vec<(u64, u32, u64)> = lost
        .iter()
        .filter_map(|r| Some((r.id, r.contain.pgid?, r.contain.leader_start?)))
        .collect();
    if groups.is_empty() {
        return vec![];
    }
    tokio::task::spawn_blocking(move || {
        groups
            .into_iter()
            .map(|(id, pgid, start)| (id, crate::procfs::kill_group_if_same(pgid, start)))
            .filter(|(_, n)| *n > 0)
            .inspect(|(run, n)| {
                tracing::warn!(
                    run,
                    processes = n,
                    "killed what an earlier generation's run left running"
                )
            })
            .collect()
    })
    .await
    .unwrap_or_default()
}

/// Finds where runs get cgroups (or says once why they do not), and kills
/// and removes the run cgroups an earlier generation left. Off the loop,
/// bounded by [`crate::cgroup::EMPTY_BOUND`].
pub(crate) async fn contain_setup(config: &Config) -> (Option<Arc<Hierarchy>>, Vec<(u64, usize)>) {
    let (state_dir, enabled) = (config.state_dir.clone(), config.cgroups);
    let found = tokio::task::spawn_blocking(move || {
        let h = Hierarchy::setup(&state_dir, enabled)?;
        let swept = h.sweep();
        Ok::<_, crate::cgroup::CgroupError>((h, swept))
    })
    .await;
    match found {
        Ok(Ok((h, swept))) => {
            tracing::info!(cgroup = %h.instance().display(), "runs get a cgroup each");
            for (run, n) in &swept {
                tracing::warn!(
                    run,
                    processes = n,
                    "killed what an earlier generation's run left running"
                );
            }
            (Some(Arc::new(h)), swept)
        }
        Ok(Err(e)) => {
            tracing::warn!("{e}: runs are held by their process groups only");
            (None, vec![])
        }
        Err(e) => {
            tracing::warn!("cgroup set-up did not finish: {e}");
            (None, vec![])
        }
    }
}

/// Where an earlier generation's run lives, to tell when it is over.
#[derive(Debug, Clone)]
pub(crate) enum Held {
    Cgroup(std::path::PathBuf),
    Group { pgid: u32, leader_start: u64 },
}

impl Held {
    fn of(r: &RunRecord) -> Option<Held> {
        match (&r.contain.cgroup, r.contain.pgid, r.contain.leader_start) {
            (Some(cg), _, _) => Some(Held::Cgroup(cg.into())),
            (None, Some(pgid), Some(leader_start)) => Some(Held::Group { pgid, leader_start }),
            _ => None,
        }
    }

    /// Whether any of its processes still runs (zombies do not count).
    pub(crate) fn alive(&self) -> bool {
        match self {
            Held::Cgroup(path) => crate::cgroup::populated(path),
            Held::Group { pgid, leader_start } => {
                let leader = crate::procfs::start_time(*pgid);
                // The number now leads someone else's group: ours is over.
                if leader.is_some_and(|t| t != *leader_start) {
                    return false;
                }
                crate::procfs::group_members(*pgid)
                    .into_iter()
                    .any(|p| !crate::procfs::is_zombie(p))
            }
        }
    }
}

/// The lost runs whose processes are still there after the kill at start
/// (they die within milliseconds of SIGKILL, unless stuck in the kernel).
/// Off the loop.
pub(crate) async fn survivors(lost: &[RunRecord]) -> Vec<(u64, Held)> {
    let held: Vec<(u64, Held)> = lost
        .iter()
        .filter_map(|r| Some((r.id, Held::of(r)?)))
        .collect();
    if held.is_empty() {
        return vec![];
    }
    tokio::task::spawn_blocking(move || {
        held.into_iter()
            .filter(|(_, h)| h.alive() || fail::eval("sweep::survives", |_| ()).is_some())
            .collect()
    })
    .await
    .unwrap_or_default()
}

/// Sends `lost`'s record (to the supervisor and to the loop, which frees
/// its job) once its processes are gone, polling: quickly at first, since
/// a SIGKILLed process is normally gone within milliseconds, then every
/// [`HELD_POLL_MAX`]. Until then its job counts it as running.
pub(crate) fn release_when_gone(
    lost: RunRecord,
    held: Held,
    events: crate::events::EventTx,
    done: tokio::sync::mpsc::UnboundedSender<RunRecord>,
) {
    tracing::error!(
        job = %lost.job, run = lost.id,
        "an earlier generation's run is still running after SIGKILL: its job counts it as running until it is gone"
    );
    // Fault injection: the run "survives" for this many polls.
    let mut forced = fail::eval("sweep::survives", |arg| {
        arg.and_then(|a| a.parse::<u32>().ok()).unwrap_or(10)
    })
    .unwrap_or(0);
    tokio::task::spawn_local(async move {
        let mut pause = Duration::from_millis(10);
        loop {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(HELD_POLL_MAX);
            if forced > 0 {
                forced -= 1;
                continue;
            }
            let h = held.clone();
            if !tokio::task::spawn_blocking(move || h.alive())
                .await
                .unwrap_or(false)
            {
                break;
            }
        }
        tracing::warn!(job = %lost.job, run = lost.id, "an earlier generation's run is over at last");
        events.send(cronwarden_shared::wire::Event::Finish { run: lost.clone() });
        let _ = done.send(lost);
    });
}

/// The slowest poll of a held run.
const HELD_POLL_MAX: Duration = Duration::from_millis(500);
