//! What an earlier generation left running is killed before this one
//! fires anything (issue 15: a crashed cronwarden's runs ran on beside the
//! next fire of their job): the run cgroups left in this instance's
//! directory, and, without cgroups, the stored process groups of the runs
//! recorded lost, each only if its leader is still the same process.

use std::sync::Arc;

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
