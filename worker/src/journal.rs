//! The write journal: what the plan decided to store, committed in one
//! transaction per flush, and held in memory while the store fails.
//!
//! Invariants: writes reach the store in the order they were planned (a
//! claim moves `next_run_at` from T to T', and the next claim of that job
//! expects T'); a failed batch is kept whole and retried before the next
//! one, so the records of a period when the disk was full or read-only
//! reach the store once it recovers; at most [`MAX_HELD_WRITES`] are held,
//! the oldest dropped first and counted. A failing store never stops
//! scheduling: it is reported as `store_error` in the heartbeat.

use cronwarden_shared::{
    stats::{Histogram, STORE_WRITE_BUCKETS},
    store::{Store, Write},
};

use crate::error::WorkerError;

/// At most this many failed store writes are held in memory for retry
/// (each at most a run record with its two 4 KiB tails: under 100 MiB).
const MAX_HELD_WRITES: usize = 10_000;

pub(crate) struct Journal {
    /// Planned since the last flush.
    pending: Vec<Write>,
    /// Writes that failed, oldest first, retried before each new batch.
    held: Vec<Write>,
    /// Held writes dropped because the bound was reached.
    dropped: u64,
    /// The last store error, while writes keep failing.
    error: Option<String>,
    /// Store write latency, sent with every heartbeat for the metrics.
    latency: Histogram,
}

impl Journal {
    pub fn new() -> Journal {
        Journal {
            pending: vec![],
            held: vec![],
            dropped: 0,
            error: None,
            latency: Histogram::new(STORE_WRITE_BUCKETS),
        }
    }

    pub fn extend(&mut self, writes: impl IntoIterator<Item = Write>) {
        self.pending.extend(writes);
    }

    /// Why writes are failing, while they are.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Reports a store failure outside a flush (a failed reconcile).
    pub fn set_error(&mut self, error: String) {
        self.error = Some(error);
    }

    pub fn latency(&self) -> &Histogram {
        &self.latency
    }

    /// Commits the held writes, then the pending ones, in one transaction.
    /// The `store::apply` fail point makes every attempt fail.
    pub fn flush(&mut self, store: &mut Store) {
        self.flush_with(|batch| {
            if fail::eval("store::apply", |_| ()).is_some() {
                return Err(WorkerError::InjectedStoreFault);
            }
            Ok(store.apply(batch)?)
        });
    }

    /// [`Journal::flush`] against any store: `apply` returns `Ok(false)`
    /// when it refused a claim (and wrote nothing).
    fn flush_with(&mut self, mut apply: impl FnMut(&[Write]) -> Result<bool, WorkerError>) {
        if self.pending.is_empty() && self.held.is_empty() {
            return;
        }
        let mut batch = std::mem::take(&mut self.held);
        let retried = batch.len();
        batch.append(&mut self.pending);
        let started = std::time::Instant::now();
        let mut result = apply(&batch);
        if let Ok(false) = result {
            // With the state lock held this means a bug or a hand edit:
            // keep the records, drop the claims, continue from memory.
            tracing::error!("store refused a claim (next_run_at moved underneath us); writing the records without it and continuing from memory");
            batch.retain(|w| !matches!(w, Write::Claim { .. }));
            result = apply(&batch);
        }
        self.latency
            .observe(STORE_WRITE_BUCKETS, started.elapsed().as_secs_f64());
        match result {
            Ok(_) => {
                if self.error.take().is_some() {
                    tracing::info!(
                        retried,
                        dropped = self.dropped,
                        "store writes succeed again; the writes held in memory are stored"
                    );
                }
            }
            Err(e) => {
                self.held = batch;
                let excess = self.held.len().saturating_sub(MAX_HELD_WRITES);
                if excess > 0 {
                    // Bounded memory: the oldest go first, and are counted.
                    self.held.drain(..excess);
                    self.dropped += excess as u64;
                }
                let msg = format!(
                    "{e}; {} write(s) held in memory and retried every turn{}",
                    self.held.len(),
                    match self.dropped {
                        0 => String::new(),
                        n => format!(", {n} dropped beyond the bound of {MAX_HELD_WRITES}"),
                    }
                );
                if self.error.is_none() {
                    tracing::error!("store write failed: {msg}");
                }
                self.error = Some(msg);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paused(job: &str) -> Write {
        Write::Paused {
            job: job.into(),
            paused: true,
        }
    }

    fn jobs_of(batch: &[Write]) -> Vec<String> {
        batch
            .iter()
            .map(|w| match w {
                Write::Paused { job, .. } => job.clone(),
                other => panic!("unexpected write {other:?}"),
            })
            .collect()
    }

    #[test]
    fn failed_writes_are_retried_first_and_in_order() {
        let mut j = Journal::new();
        j.extend([paused("a"), paused("b")]);
        j.flush_with(|_| Err(WorkerError::InjectedStoreFault));
        let err = j.error().unwrap().to_string();
        assert!(err.contains("2 write(s) held in memory"), "{err}");

        j.extend([paused("c")]);
        let mut seen = vec![];
        j.flush_with(|batch| {
            seen = jobs_of(batch);
            Ok(true)
        });
        assert_eq!(seen, ["a", "b", "c"]);
        assert_eq!(j.error(), None);
        // Nothing is written twice.
        let mut calls = 0;
        j.flush_with(|_| {
            calls += 1;
            Ok(true)
        });
        assert_eq!(calls, 0);
    }

    /// A claim refused by the store (next_run_at moved underneath us)
    /// costs the claims, never the records.
    #[test]
    fn a_refused_claim_keeps_the_records() {
        let mut j = Journal::new();
        let claim = Write::Claim {
            job: "a".into(),
            from: None,
            to: None,
            last_scheduled_at: None,
        };
        j.extend([claim, paused("a")]);
        let mut batches = vec![];
        j.flush_with(|batch| {
            batches.push(batch.len());
            Ok(batches.len() > 1)
        });
        assert_eq!(batches, [2, 1]);
        assert_eq!(j.error(), None);
    }

    #[test]
    fn held_writes_are_bounded_and_the_oldest_dropped() {
        let mut j = Journal::new();
        j.extend((0..MAX_HELD_WRITES + 5).map(|i| paused(&i.to_string())));
        j.flush_with(|_| Err(WorkerError::InjectedStoreFault));
        let err = j.error().unwrap().to_string();
        assert!(
            err.contains(&format!("{MAX_HELD_WRITES} write(s) held"))
                && err.contains("5 dropped beyond the bound"),
            "{err}"
        );
        let mut first = None;
        j.flush_with(|batch| {
            first = jobs_of(&batch[..1]).pop();
            Ok(true)
        });
        assert_eq!(first.as_deref(), Some("5"));
    }
}
