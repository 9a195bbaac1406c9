//! The heartbeat: what the worker tells the supervisor every interval
//! (the loop's progress, runs' output progress, the store's state, its
//! measurements), and, at the first, the end of start-up.

use cronwarden_shared::{
    stats::WorkerStats,
    wire::{ArmedDigest, Event, RunProgress},
};
use tokio::time::Instant;

use super::Scheduler;

impl Scheduler {
    pub(super) fn heartbeat(&mut self) {
        let ids: Vec<u64> = self.plan.running().collect();
        let mut progress: Vec<RunProgress> = ids
            .iter()
            .filter_map(|id| Some((*id, self.running.get(id)?)))
            .map(|(run_id, r)| {
                let p = r.progress.borrow();
                RunProgress {
                    run_id,
                    bytes: p.bytes,
                    last_output_at: p.last_output_at,
                    last_line: p.last_line.clone(),
                }
            })
            .collect();
        progress.sort_by_key(|p| p.run_id);
        progress.truncate(100);
        let store_error = self.store_error();
        self.events.send(Event::Heartbeat {
            seq: self.seq,
            at: self.armed_at(),
            last_good_turn_at: self.last_good_turn,
            running: ids.len() as u32,
            store_error,
            armed: Some(ArmedDigest::of(self.plan.armed())),
            progress,
            stats: Some(WorkerStats {
                store_write_seconds: self.journal.latency().clone(),
                log_lines_dropped: cronwarden_shared::stats::log_lines_dropped(),
                records_dropped: self.journal.records_dropped(),
                writes_held: self.journal.held() as u64,
            }),
        });
        self.next_heartbeat = Instant::now() + self.heartbeat_interval;
        if !std::mem::replace(&mut self.startup_shed, true) {
            // The first heartbeat ends start-up (take-over, first turn and
            // first schedule): the pages only that used leave (issue 18).
            let shed = cronwarden_shared::footprint::shed_startup_pages();
            tracing::debug!(?shed, "start-up pages released");
        }
    }
}
