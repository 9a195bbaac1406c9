//! The write journal: what the plan decided to store, committed in one
//! transaction per flush, and held in memory while the store fails.
//!
//! Invariants:
//! - writes reach the store in the order they were planned, one
//!   transaction per flush; a failed batch is kept and retried before the
//!   next one, so the records of a period when the disk was full or
//!   read-only reach the store once it recovers;
//! - a claim is never dropped: held claims coalesce per job (the latest
//!   `to` supersedes, the oldest `from` stays, so the compare-and-set still
//!   matches the stored row), as do pause flags (the latest wins), run-id
//!   reservations (the highest wins) and a run's records (its finish
//!   supersedes its start). So what is held is bounded by the number of
//!   jobs plus the records, and the claim chain survives any outage;
//! - at most [`MAX_HELD_RECORDS`] run records are held; beyond, the oldest
//!   records are dropped and counted ([`Journal::records_dropped`], sent
//!   with every heartbeat and named in `store_error`): a loss the
//!   supervisor alerts on;
//! - a claim the store refuses (its row moved underneath us: a hand edit,
//!   a restored backup) is written over it: memory wins, and the chain of
//!   claims goes on instead of being refused every turn.
//!
//! A failing store never stops scheduling: it is reported as `store_error`
//! in the heartbeat. The loop flushes through the [`Writer`] thread
//! ([`Journal::flush_through`]): a batch not committed within the loop's
//! bound stays in flight, counted as held, and one in flight too long is
//! reported as `store_error` (a slow or locked store).

use std::collections::HashMap;

use cronwarden_shared::{
    stats::{Histogram, STORE_WRITE_BUCKETS},
    store::{Store, Write},
};

use std::time::Duration;

use crate::{error::WorkerError, writer::Writer};

/// At most this many run records are held in memory for retry (each at
/// most a run record with its two 4 KiB tails: under 100 MiB). Claims and
/// other per-job writes are not counted: they coalesce.
pub(crate) const MAX_HELD_RECORDS: usize = 10_000;

/// What a store does with a batch: `Ok(false)` when it refused a claim
/// (and wrote nothing); with `check = false` it never refuses.
pub(crate) trait Apply {
    fn apply(&mut self, batch: &[Write], check: bool) -> Result<bool, WorkerError>;
}

impl Apply for Store {
    /// The `store::apply` fail point makes every attempt fail.
    fn apply(&mut self, batch: &[Write], check: bool) -> Result<bool, WorkerError> {
        if fail::eval("store::apply", |_| ()).is_some() {
            return Err(WorkerError::InjectedStoreFault);
        }
        if check {
            Ok(Store::apply(self, batch)?)
        } else {
            Ok(Store::apply_overriding(self, batch).map(|()| true)?)
        }
    }
}

impl<F: FnMut(&[Write], bool) -> Result<bool, WorkerError>> Apply for F {
    fn apply(&mut self, batch: &[Write], check: bool) -> Result<bool, WorkerError> {
        self(batch, check)
    }
}

pub(crate) struct Journal {
    /// Planned since the last flush.
    pending: Vec<Write>,
    /// Writes that failed, coalesced, oldest first, retried before each
    /// new batch.
    held: Vec<Write>,
    /// Held records dropped because the bound was reached.
    dropped: u64,
    /// The bound: [`MAX_HELD_RECORDS`], or the
    /// `journal::max_held_records=return(N)` fail point's N.
    max_records: usize,
    /// The last store error, while writes keep failing.
    error: Option<String>,
    /// Store write latency, sent with every heartbeat for the metrics.
    latency: Histogram,
    /// The batch handed to the [`Writer`], its outcome not known yet, and
    /// since when.
    in_flight: Vec<Write>,
    in_flight_since: Option<std::time::Instant>,
}

impl Journal {
    pub fn new() -> Journal {
        Journal {
            pending: vec![],
            held: vec![],
            dropped: 0,
            max_records: fail::eval("journal::max_held_records", |arg| {
                arg.and_then(|a| a.parse().ok())
            })
            .flatten()
            .unwrap_or(MAX_HELD_RECORDS),
            error: None,
            latency: Histogram::new(STORE_WRITE_BUCKETS),
            in_flight: vec![],
            in_flight_since: None,
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

    /// Run records dropped beyond the bound since the worker started.
    pub fn records_dropped(&self) -> u64 {
        self.dropped
    }

    /// Writes not durable right now: held for retry, or handed to the
    /// writer and not confirmed.
    pub fn held(&self) -> usize {
        self.held.len() + self.in_flight.len()
    }

    /// Everything planned is committed (nothing pending, held or in flight).
    pub fn settled(&self) -> bool {
        self.pending.is_empty() && self.held() == 0
    }

    /// As [`Journal::flush`], through the writer thread: collects the
    /// outcome of the batch in flight, then hands over the next (held,
    /// then pending), waiting at most `wait` for each. A batch still in
    /// flight after that is held (not durable) until its outcome comes;
    /// one in flight for longer than `slow_after` is reported as
    /// `store_error`. `between` is done once the next batch is handed
    /// over (or none can be) and before waiting for its outcome: what the
    /// loop does while the writer commits.
    pub fn flush_through<T>(
        &mut self,
        writer: &mut Writer,
        wait: Duration,
        slow_after: Duration,
        between: impl FnOnce() -> T,
    ) -> T {
        if writer.busy() {
            match writer.outcome(wait) {
                Some(outcome) => self.settle(outcome),
                None => {
                    let since = self
                        .in_flight_since
                        .map(|s| s.elapsed())
                        .unwrap_or_default();
                    if since >= slow_after {
                        self.error = Some(format!(
                            "a store write has not completed for {} ms (the store is slow or locked); {} write(s) held in memory",
                            since.as_millis(),
                            self.held() + self.pending.len()
                        ));
                    }
                    return between();
                }
            }
        }
        if self.pending.is_empty() && self.held.is_empty() {
            return between();
        }
        let mut batch = std::mem::take(&mut self.held);
        batch.append(&mut self.pending);
        if let Err(e) = writer.send(batch.clone()) {
            self.in_flight = batch;
            self.settle(Err(e.to_string()));
            return between();
        }
        self.in_flight = batch;
        self.in_flight_since = Some(std::time::Instant::now());
        let t = between();
        if let Some(outcome) = writer.outcome(wait) {
            self.settle(outcome);
        }
        t
    }

    /// The outcome of the batch in flight.
    fn settle(&mut self, outcome: crate::writer::Outcome) {
        let batch = std::mem::take(&mut self.in_flight);
        if let Some(since) = self.in_flight_since.take() {
            self.latency
                .observe(STORE_WRITE_BUCKETS, since.elapsed().as_secs_f64());
        }
        match outcome {
            Ok(()) if self.held.is_empty() => {
                if self.error.take().is_some() {
                    tracing::info!(
                        retried = batch.len(),
                        dropped = self.dropped,
                        "store writes succeed again; the writes held in memory are stored"
                    );
                }
            }
            Ok(()) => {}
            Err(e) => self.failed(batch, e),
        }
    }

    /// The writes not yet committed (held, then pending), for tests.
    #[cfg(test)]
    pub fn uncommitted(&self) -> impl Iterator<Item = &Write> {
        self.held.iter().chain(&self.pending)
    }

    /// Commits the held writes, then the pending ones, in one transaction.
    pub fn flush(&mut self, store: &mut impl Apply) {
        if self.pending.is_empty() && self.held.is_empty() {
            return;
        }
        let mut batch = std::mem::take(&mut self.held);
        let retried = batch.len();
        batch.append(&mut self.pending);
        let started = std::time::Instant::now();
        let mut result = store.apply(&batch, true);
        if let Ok(false) = result {
            // With the state lock held this means a hand edit or a
            // restored backup: memory wins, so the chain of claims goes on
            // (refusing them again every turn would lose them all).
            tracing::error!("store refused a claim (next_run_at moved underneath us); writing the claims over it and continuing from memory");
            result = store.apply(&batch, false);
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
            Err(e) => self.failed(batch, e.to_string()),
        }
    }

    /// A batch that was not committed: held (before anything held since),
    /// and the error reported.
    fn failed(&mut self, mut batch: Vec<Write>, e: String) {
        batch.append(&mut self.held);
        self.hold(batch);
        let msg = format!(
            "{e}; {} write(s) held in memory and retried every turn{}",
            self.held.len(),
            match self.dropped {
                0 => String::new(),
                n => format!(
                    ", {n} run record(s) dropped beyond the bound of {}",
                    self.max_records
                ),
            }
        );
        if self.error.is_none() {
            tracing::error!("store write failed: {msg}");
        }
        self.error = Some(msg);
    }

    /// Keeps a failed batch, coalesced, within the bound.
    fn hold(&mut self, batch: Vec<Write>) {
        let mut held = coalesce(batch);
        let records = held.iter().filter(|w| is_record(w)).count();
        let mut excess = records.saturating_sub(self.max_records);
        if excess > 0 {
            // Bounded memory: the oldest records go first, and are counted;
            // claims, pause flags and reservations always stay.
            tracing::error!(
                dropped = excess,
                "the store has failed too long: dropping the oldest held run records"
            );
            self.dropped += excess as u64;
            held.retain(|w| {
                if excess > 0 && is_record(w) {
                    excess -= 1;
                    false
                } else {
                    true
                }
            });
        }
        self.held = held;
    }
}

fn is_record(w: &Write) -> bool {
    matches!(w, Write::Insert(_) | Write::Finish(_))
}

/// Merges the writes of a batch that supersede one another, keeping each
/// merged write at its first position:
/// - claims of one job: `from` of the first, `to` and a new schedule
///   (`rearm`) of the latest, the latest `last_scheduled_at` known;
/// - pause flags of one job: the latest;
/// - records of one run id: the latest (a finish replaces the start, a
///   removal the skip it removes);
/// - run-id reservations: the highest;
/// - a job's row rewritten or removed is kept in place, and claims after
///   it start a new merge (they follow the rewritten row).
fn coalesce(batch: Vec<Write>) -> Vec<Write> {
    #[derive(Hash, PartialEq, Eq)]
    enum Key {
        Claim(String),
        Paused(String),
        Run(u64),
        Reserve,
        Reboot(String),
    }
    let mut out: Vec<Write> = Vec::with_capacity(batch.len());
    let mut at: HashMap<Key, usize> = HashMap::new();
    for w in batch {
        let key = match &w {
            Write::UpsertJob(row) => {
                // A job's row rewritten or removed: a later claim follows
                // it, it must not merge into a claim before it.
                at.remove(&Key::Claim(row.name.clone()));
                out.push(w);
                continue;
            }
            Write::RemoveJob { job } => {
                at.remove(&Key::Claim(job.clone()));
                out.push(w);
                continue;
            }
            Write::Claim { job, .. } => Key::Claim(job.clone()),
            Write::Paused { job, .. } => Key::Paused(job.clone()),
            Write::Insert(r) | Write::Finish(r) => Key::Run(r.id),
            Write::Forget { run_id } => Key::Run(*run_id),
            Write::ReserveIds { .. } => Key::Reserve,
            Write::RebootFired { job, .. } => Key::Reboot(job.clone()),
        };
        let Some(&i) = at.get(&key) else {
            at.insert(key, out.len());
            out.push(w);
            continue;
        };
        match (&mut out[i], w) {
            (
                Write::Claim {
                    to,
                    last_scheduled_at,
                    rearm,
                    ..
                },
                Write::Claim {
                    to: new_to,
                    last_scheduled_at: new_last,
                    rearm: new_rearm,
                    ..
                },
            ) => {
                *to = new_to;
                if new_rearm.is_some() {
                    // The anchor of the old schedule means nothing now.
                    *last_scheduled_at = new_last;
                    *rearm = new_rearm;
                } else if new_last.is_some() {
                    *last_scheduled_at = new_last;
                }
            }
            (Write::ReserveIds { upto }, Write::ReserveIds { upto: new }) => {
                *upto = (*upto).max(new);
            }
            (slot, w) => *slot = w,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use cronwarden_shared::status::{Outcome, RunRecord, Trigger};
    use jiff::Timestamp;

    use super::*;

    fn paused(job: &str) -> Write {
        Write::Paused {
            job: job.into(),
            paused: true,
        }
    }

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(1_893_456_000 + s).unwrap()
    }

    fn claim(job: &str, from: i64, to: i64) -> Write {
        Write::Claim {
            job: job.into(),
            from: Some(ts(from)),
            to: Some(ts(to)),
            last_scheduled_at: Some(ts(from)),
            rearm: None,
        }
    }

    fn record(id: u64, outcome: Outcome) -> Write {
        let r = RunRecord::new(id, "a", vec![ts(id as i64)], Trigger::Schedule, outcome);
        match outcome {
            Outcome::Running => Write::Insert(r),
            _ => Write::Finish(r),
        }
    }

    fn failing(_: &[Write], _: bool) -> Result<bool, WorkerError> {
        Err(WorkerError::InjectedStoreFault)
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
        j.flush(&mut failing);
        let err = j.error().unwrap().to_string();
        assert!(err.contains("2 write(s) held in memory"), "{err}");

        j.extend([paused("c")]);
        let mut seen = vec![];
        j.flush(&mut |batch: &[Write], _| {
            seen = jobs_of(batch);
            Ok(true)
        });
        assert_eq!(seen, ["a", "b", "c"]);
        assert_eq!(j.error(), None);
        // Nothing is written twice.
        let mut calls = 0;
        j.flush(&mut |_: &[Write], _| {
            calls += 1;
            Ok(true)
        });
        assert_eq!(calls, 0);
    }

    /// A claim refused by the store (next_run_at moved underneath us) is
    /// written over it, with its records: the chain of claims goes on.
    #[test]
    fn a_refused_claim_is_written_over_the_row() {
        let mut j = Journal::new();
        j.extend([claim("a", 0, 1), paused("a")]);
        let mut calls = vec![];
        j.flush(&mut |batch: &[Write], check: bool| {
            calls.push((batch.len(), check));
            Ok(!check)
        });
        assert_eq!(calls, [(2, true), (2, false)]);
        assert_eq!(j.error(), None);
        assert_eq!(j.held(), 0);
    }

    /// Issue 14: with the store failing long enough, the oldest held writes
    /// were dropped, claims included, and every later claim was refused.
    #[test]
    fn held_claims_coalesce_per_job_and_are_never_dropped() {
        let mut j = Journal::new();
        // Two jobs fire every second for longer than the bound holds.
        let n = MAX_HELD_RECORDS as i64 + 500;
        for t in 0..n {
            j.extend([
                claim("a", t, t + 1),
                record(2 * t as u64 + 1, Outcome::Success),
                claim("b", t, t + 1),
                record(2 * t as u64 + 2, Outcome::Success),
            ]);
            // A flush per 100 s of fires (re-coalescing 10,000 held
            // writes every second is slow in a debug build).
            if t % 100 == 99 || t == n - 1 {
                j.flush(&mut failing);
            }
        }
        let held: Vec<&Write> = j.uncommitted().collect();
        let claims: Vec<_> = held
            .iter()
            .filter_map(|w| match w {
                Write::Claim { job, from, to, .. } => Some((job.clone(), *from, *to)),
                _ => None,
            })
            .collect();
        assert_eq!(
            claims,
            [
                ("a".to_string(), Some(ts(0)), Some(ts(n))),
                ("b".to_string(), Some(ts(0)), Some(ts(n))),
            ]
        );
        let records = held.iter().filter(|w| is_record(w)).count();
        assert_eq!(records, MAX_HELD_RECORDS);
        assert_eq!(j.records_dropped(), 2 * n as u64 - MAX_HELD_RECORDS as u64);
        let err = j.error().unwrap();
        assert!(
            err.contains("run record(s) dropped beyond the bound"),
            "{err}"
        );

        // The newest records are the ones kept.
        let first_id = held.iter().find_map(|w| match w {
            Write::Finish(r) => Some(r.id),
            _ => None,
        });
        assert_eq!(first_id, Some(j.records_dropped() + 1));

        // Recovery: one transaction with both claims, accepted as is.
        let mut batch = vec![];
        j.flush(&mut |b: &[Write], check: bool| {
            assert!(check);
            batch = b.to_vec();
            Ok(true)
        });
        assert_eq!(batch.len(), MAX_HELD_RECORDS + 2);
        assert_eq!(j.error(), None);
    }

    #[test]
    fn a_finish_supersedes_its_start_and_pause_flags_coalesce() {
        let mut j = Journal::new();
        j.extend([record(1, Outcome::Running), paused("a")]);
        j.flush(&mut failing);
        j.extend([
            Write::Paused {
                job: "a".into(),
                paused: false,
            },
            record(1, Outcome::Success),
            Write::ReserveIds { upto: 10 },
            Write::ReserveIds { upto: 20 },
        ]);
        j.flush(&mut failing);
        let held: Vec<&Write> = j.uncommitted().collect();
        assert_eq!(held.len(), 3, "{held:?}");
        assert!(matches!(held[0], Write::Finish(r) if r.outcome == Outcome::Success));
        assert!(matches!(held[1], Write::Paused { paused: false, .. }));
        assert!(matches!(held[2], Write::ReserveIds { upto: 20 }));
    }

    /// A job removed and added back while the store fails: its row's
    /// removal and rewrite stay, in order, and a claim after them does not
    /// merge into one before them (it follows the rewritten row).
    #[test]
    fn claims_do_not_merge_across_a_rewritten_row() {
        let row = cronwarden_shared::store::JobRow {
            name: "a".into(),
            schedule: "* * * * * *".into(),
            timezone: "UTC".into(),
            next_run_at: Some(ts(10)),
            last_scheduled_at: None,
            paused: false,
        };
        let mut j = Journal::new();
        j.extend([
            claim("a", 0, 1),
            Write::RemoveJob { job: "a".into() },
            Write::UpsertJob(row),
            claim("a", 10, 11),
            claim("a", 11, 12),
        ]);
        j.flush(&mut failing);
        let held: Vec<String> = j
            .uncommitted()
            .map(|w| match w {
                Write::Claim { from, to, .. } => format!("claim {from:?}->{to:?}"),
                Write::RemoveJob { .. } => "remove".into(),
                Write::UpsertJob(_) => "upsert".into(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            held,
            [
                format!("claim {:?}->{:?}", Some(ts(0)), Some(ts(1))),
                "remove".into(),
                "upsert".into(),
                format!("claim {:?}->{:?}", Some(ts(10)), Some(ts(12))),
            ]
        );
    }
}
