//! Telling the supervisor a run started: its `fire` line, with what the
//! supervisor needs to find the run's processes later.

use std::os::fd::{AsFd, AsRawFd};

use cronwarden_shared::wire::Event;
use jiff::Timestamp;

use super::RunRequest;
use crate::{child, events::EventTx};

/// The inodes of the run's output pipes: who holds them holds the run.
pub(super) fn pipe_inodes(pipes: [Option<&child::Pipe>; 2]) -> Vec<u64> {
    pipes
        .into_iter()
        .flatten()
        .filter_map(|p| nix::sys::stat::fstat(p.as_fd().as_raw_fd()).ok())
        .map(|st| st.st_ino)
        .collect()
}

/// Tells the supervisor the run started, with what it needs to find the
/// run's processes later (its group, and the inodes of its output pipes).
pub(super) fn announce(req: &RunRequest, pid: u32, pipes: &[u64], events: &EventTx) {
    if fail::eval("runner::unannounced", |_| ()).is_some() {
        // As if the worker died between starting the run and saying so.
        return;
    }
    let r = &req.record;
    let pipes = pipes.to_vec();
    events.send(Event::Fire {
        job: req.job.name.clone(),
        run_id: r.id,
        scheduled_at: r.scheduled_at,
        covers: r.covers.clone(),
        trigger: r.trigger,
        pid,
        pipes,
        started_at: r.started_at.unwrap_or_else(Timestamp::now),
        next_fire_at: req.next_fire_at,
    });
    tracing::info!(job = %req.job.name, run = r.id, pid, trigger = r.trigger.as_str(), "started");
}
