//! Retention: pruning each job's records beyond its `retention`.
//!
//! A sweep runs at most every [`PRUNE_EVERY`], over at most [`PRUNE_JOBS`]
//! jobs that got records since they were last pruned (runs and skips
//! alike: a paused or always-overlapping job only ever skips). Each prune
//! deletes a bounded number of rows, so a sweep stays short however many
//! jobs there are; the jobs wait in a queue, so each gets its turn within
//! a few sweeps. A (new) config marks only the jobs new to the plan or
//! whose retention it lowered, and of those only the ones the store holds
//! more records of than they keep, found by one bounded scan.

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
/// The most records (by the highest run id) scanned on the loop to find
/// the jobs over their retention: about a fifth of a second of index.
const SCAN_MAX_RECORDS: u64 = 1_000_000;

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

    /// Marks the jobs of `config` whose history may exceed their retention:
    /// those new to the plan (at start, every job) and those whose
    /// retention a reload lowered (`before`: the retention the plan had,
    /// `None` for a new job). A job whose retention stayed or grew needs
    /// no prune. The candidates are checked by one scan of the store's
    /// `(job, id)` index (a prune of every job made 100 idle jobs keep a
    /// just started worker in SQLite for 13 s, issue 18), but only while
    /// the store holds at most [`SCAN_MAX_RECORDS`]: the scan runs on the
    /// loop. Beyond that, or when the store cannot say (it is down), every
    /// candidate is marked and pruned over the sweeps.
    pub fn mark_over_retention(
        &mut self,
        store: &Store,
        store_down: bool,
        config: &Config,
        before: impl Fn(&str) -> Option<u32>,
    ) {
        let candidates: HashMap<&str, u32> = config
            .jobs
            .iter()
            .filter(|j| before(&j.name).is_none_or(|b| j.retention < b))
            .map(|j| (j.name.as_str(), j.retention))
            .collect();
        if candidates.is_empty() {
            return;
        }
        let scanned = match store.max_run_id() {
            Ok(n) if !store_down && n <= SCAN_MAX_RECORDS => {
                store.jobs_over_retention(|job| candidates.get(job).copied())
            }
            Ok(n) => {
                tracing::debug!(
                    records = n,
                    store_down,
                    "{} jobs may exceed their retention: each is pruned in turn",
                    candidates.len()
                );
                Ok(candidates.keys().map(|j| j.to_string()).collect())
            }
            Err(e) => Err(e),
        };
        match scanned {
            Ok(over) => over.iter().for_each(|job| self.mark(job)),
            Err(e) => {
                tracing::debug!("{e}: every candidate's records will be pruned");
                candidates.keys().for_each(|j| self.mark(j));
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
