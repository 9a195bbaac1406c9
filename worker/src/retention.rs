//! Retention: pruning each job's records beyond its `retention`.
//!
//! A sweep runs at most every [`PRUNE_EVERY`], over at most [`PRUNE_JOBS`]
//! jobs that got records since they were last pruned (runs and skips
//! alike: a paused or always-overlapping job only ever skips). Each prune
//! deletes a bounded number of rows, so a sweep stays short however many
//! jobs there are; the jobs wait in a queue, so each gets its turn within
//! a few sweeps. A (new) config marks only the jobs the store holds more
//! records of than their retention, found by one scan.

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    time::Duration,
};

use cronwarden_shared::config::Config;
use cronwarden_shared::status::Outcome;
use cronwarden_shared::store::{Store, Write};
use tokio::time::Instant;

const PRUNE_EVERY: Duration = Duration::from_secs(1);
const PRUNE_JOBS: usize = 8;

pub(crate) struct Pruner {
    /// Jobs with records written since their last prune, oldest first,
    /// and the same as a set.
    queue: VecDeque<String>,
    queued: BTreeSet<String>,
    next: Instant,
}

impl Pruner {
    pub fn new(now: Instant) -> Pruner {
        Pruner {
            queue: VecDeque::new(),
            queued: BTreeSet::new(),
            next: now,
        }
    }

    pub fn mark(&mut self, job: &str) {
        if self.queued.insert(job.to_string()) {
            self.queue.push_back(job.to_string());
        }
    }

    /// Marks the jobs of `config` with more records than their retention
    /// (one lowered since the records were written), found by one scan of
    /// the store rather than by a prune of every job: a prune per job made
    /// 100 idle jobs keep a just started worker in SQLite for 13 s (issue
    /// 18). Every job when the store cannot say.
    pub fn mark_over_retention(&mut self, store: &Store, config: &Config) {
        let keep: HashMap<&str, u32> = config
            .jobs
            .iter()
            .map(|j| (j.name.as_str(), j.retention))
            .collect();
        match store.jobs_over_retention(|job| keep.get(job).copied()) {
            Ok(over) => over.iter().for_each(|job| self.mark(job)),
            Err(e) => {
                tracing::debug!("{e}: every job's records will be pruned");
                config.jobs.iter().for_each(|j| self.mark(&j.name));
            }
        }
    }

    /// Marks the jobs that get a finished record or a skip from `writes`.
    pub fn mark_written(&mut self, writes: &[Write]) {
        for w in writes {
            match w {
                Write::Finish(r) => self.mark(&r.job),
                Write::Insert(r) if r.outcome == Outcome::Skipped => self.mark(&r.job),
                _ => {}
            }
        }
    }

    /// Prunes the next few jobs when a sweep is due. `retention` says how
    /// many records a job keeps (`None`: it left the config, and its
    /// history stays whole); `store_failing` quiets errors already reported.
    pub fn sweep(
        &mut self,
        now: Instant,
        store: &mut Store,
        retention: impl Fn(&str) -> Option<u32>,
        store_failing: bool,
    ) {
        if now < self.next {
            return;
        }
        self.next = now + PRUNE_EVERY;
        for _ in 0..PRUNE_JOBS {
            let Some(name) = self.queue.pop_front() else {
                break;
            };
            self.queued.remove(&name);
            let Some(keep) = retention(&name) else {
                continue;
            };
            match store.prune(&name, keep) {
                Ok(n) if n > 0 => {
                    tracing::debug!(job = %name, pruned = n, keep, "old records pruned")
                }
                Ok(_) => {}
                Err(e) if store_failing => tracing::debug!("{e}"),
                Err(e) => tracing::warn!("{e}"),
            }
        }
    }
}
