//! The supervisor's second copy of the worker's writes not yet confirmed
//! stored (issue 14). The worker holds its writes in memory while the
//! store fails; a worker that dies then would take them along. The
//! supervisor hears every fire, skip, queued fire and finish anyway, so it
//! keeps what each stood for (the run's record and the job's next fire)
//! until the worker's heartbeats confirm that everything is stored, and
//! hands what it kept to the next worker (`adopt` commands, before its
//! `configure`), which writes it when it takes the store over.
//!
//! Invariants:
//! - a record is dropped only once two heartbeats in a row said nothing
//!   is held and the store is not failing, and only if it came before the
//!   first of them (a finish is sent before its write is committed, so one
//!   clean heartbeat alone proves nothing about it);
//! - at most [`MAX_KEPT_RECORDS`] records are kept (the oldest go first,
//!   counted in [`HeldCopy::dropped`]); cursors are one per job;
//! - what is kept survives handing it over: a new worker that dies before
//!   it stored the adoption gets the same copy again. Adopting is
//!   idempotent (see `cronwarden_shared::store` adoption).

use std::collections::BTreeMap;

use crate::{
    status::{Outcome, RunRecord, Trigger},
    wire::{AdoptedCursor, Command, Event, MAX_COMMAND_LINE},
};
use jiff::Timestamp;

/// At most this many records are kept: as many as the worker's journal
/// holds (each at most a record with its two 4 KiB tails: under 100 MiB).
pub const MAX_KEPT_RECORDS: usize = 10_000;

#[derive(Debug, Default)]
pub struct HeldCopy {
    /// By run id: the latest record heard of and the heartbeat count when
    /// it came (0: before the first heartbeat).
    records: BTreeMap<u64, (RunRecord, u64)>,
    /// By job: the next fire as of the latest fire or skip, and when.
    cursors: BTreeMap<String, (Timestamp, u64)>,
    beats: u64,
    /// The previous heartbeat said every write was stored.
    last_clean: bool,
    /// Records dropped beyond the bound.
    pub dropped: u64,
}

impl HeldCopy {
    /// Keeps what one event from the worker says it wrote, or forgets what
    /// a heartbeat confirms stored.
    pub fn observe(&mut self, ev: &Event) {
        match ev {
            Event::Fire {
                job,
                run_id,
                scheduled_at,
                covers,
                trigger,
                started_at,
                next_fire_at,
                ..
            } => {
                let mut r =
                    RunRecord::new(*run_id, job, covers.clone(), *trigger, Outcome::Running);
                r.scheduled_at = *scheduled_at;
                r.started_at = Some(*started_at);
                self.record(r);
                self.cursor(job, *next_fire_at);
            }
            Event::Queued {
                job,
                run_id,
                covers,
                next_fire_at,
            } => {
                let trigger = match covers.len() {
                    0 => Trigger::Manual,
                    1 => Trigger::Schedule,
                    _ => Trigger::Catchup,
                };
                let r = RunRecord::new(*run_id, job, covers.clone(), trigger, Outcome::Running);
                self.record(r);
                self.cursor(job, *next_fire_at);
            }
            Event::Skip {
                job,
                run_id,
                scheduled_at,
                reason,
                busy_run_id,
                next_fire_at,
            } => {
                let mut r = RunRecord::new(
                    *run_id,
                    job,
                    vec![*scheduled_at],
                    Trigger::Schedule,
                    Outcome::Skipped,
                );
                r.skip_reason = Some(*reason);
                r.error = busy_run_id.map(|b| format!("run {b} was still running"));
                self.record(r);
                self.cursor(job, *next_fire_at);
            }
            Event::Finish { run } => self.record(run.clone()),
            Event::Claimed { run, next_fire_at } => {
                self.record(run.clone());
                self.cursor(&run.job, *next_fire_at);
            }
            // After a (re)configuration: the armed fires replace what the
            // old schedule had claimed (a cursor only moves forward when
            // adopted, so a stale later one would delay the new schedule).
            Event::Schedule { jobs } => {
                self.cursors.clear();
                for j in jobs {
                    self.cursor(&j.job, j.next_fire_at);
                }
            }
            Event::Heartbeat {
                store_error, stats, ..
            } => {
                let clean =
                    store_error.is_none() && stats.as_ref().is_some_and(|s| s.writes_held == 0);
                self.heartbeat(clean);
            }
            _ => {}
        }
    }

    fn record(&mut self, r: RunRecord) {
        self.records.insert(r.id, (r, self.beats));
        while self.records.len() > MAX_KEPT_RECORDS {
            // Run ids grow: the first is the oldest.
            self.records.pop_first();
            self.dropped += 1;
        }
    }

    fn cursor(&mut self, job: &str, next: Option<Timestamp>) {
        if let Some(next) = next {
            self.cursors.insert(job.to_string(), (next, self.beats));
        }
    }

    fn heartbeat(&mut self, clean: bool) {
        self.beats += 1;
        if clean && self.last_clean {
            // Came before the previous (clean) heartbeat: stored.
            let since = self.beats - 1;
            self.records.retain(|_, (_, at)| *at >= since);
            self.cursors.retain(|_, (_, at)| *at >= since);
        }
        self.last_clean = clean;
    }

    /// Records kept right now.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.cursors.is_empty()
    }

    /// What a new worker must adopt: `adopt` commands, each within the
    /// command line bound. Kept until confirmed stored. A supervisor that
    /// watched an earlier worker sends one even when it holds nothing: the
    /// new worker then knows nothing its predecessor ran is unaccounted,
    /// whereas with no `adopt` at all (this supervisor is new too) it marks
    /// its first catch-ups `may_repeat` if that worker was killed.
    pub fn adopt_commands(&self) -> Vec<Command> {
        if self.records.is_empty() && self.cursors.is_empty() {
            if self.beats == 0 {
                return vec![];
            }
            return vec![Command::Adopt {
                records: vec![],
                cursors: vec![],
            }];
        }
        let budget = MAX_COMMAND_LINE / 4;
        let cursors = self
            .cursors
            .iter()
            .map(|(job, (next, _))| AdoptedCursor {
                job: job.clone(),
                next_fire_at: *next,
            })
            .collect();
        let mut out = vec![Command::Adopt {
            records: vec![],
            cursors,
        }];
        let mut size = 0;
        for (r, _) in self.records.values() {
            let n = serde_json::to_vec(r).map_or(budget, |v| v.len());
            if size + n > budget {
                out.push(Command::Adopt {
                    records: vec![],
                    cursors: vec![],
                });
                size = 0;
            }
            size += n;
            if let Some(Command::Adopt { records, .. }) = out.last_mut() {
                records.push(r.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::stats::WorkerStats;

    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(1_893_456_000 + s).unwrap()
    }

    fn fire(id: u64) -> Event {
        Event::Fire {
            job: "a".into(),
            run_id: id,
            scheduled_at: Some(ts(id as i64)),
            covers: vec![ts(id as i64)],
            trigger: Trigger::Schedule,
            pid: 1,
            pipes: vec![],
            started_at: ts(id as i64),
            next_fire_at: Some(ts(id as i64 + 1)),
        }
    }

    fn beat(store_error: Option<&str>, held: u64) -> Event {
        Event::Heartbeat {
            seq: 1,
            at: ts(0),
            last_good_turn_at: None,
            running: 0,
            store_error: store_error.map(str::to_string),
            armed: None,
            progress: vec![],
            stats: Some(WorkerStats {
                writes_held: held,
                ..Default::default()
            }),
        }
    }

    fn adopted(c: &HeldCopy) -> (Vec<u64>, Vec<(String, Timestamp)>) {
        let mut ids = vec![];
        let mut cur = vec![];
        for cmd in c.adopt_commands() {
            let Command::Adopt { records, cursors } = cmd else {
                panic!("not an adopt command");
            };
            ids.extend(records.iter().map(|r| r.id));
            cur.extend(cursors.into_iter().map(|c| (c.job, c.next_fire_at)));
        }
        (ids, cur)
    }

    #[test]
    fn kept_until_two_clean_heartbeats_and_handed_over_whole() {
        let mut c = HeldCopy::default();
        c.observe(&fire(1));
        c.observe(&beat(Some("disk full"), 2));
        c.observe(&fire(2));
        let mut finish = RunRecord::new(1, "a", vec![ts(1)], Trigger::Schedule, Outcome::Success);
        finish.started_at = Some(ts(1));
        c.observe(&Event::Finish { run: finish });
        c.observe(&beat(Some("disk full"), 3));
        assert_eq!(adopted(&c), (vec![1, 2], vec![("a".into(), ts(3))]));
        let Command::Adopt { records, .. } = &c.adopt_commands()[0] else {
            panic!("not an adopt command")
        };
        assert_eq!(
            records[0].outcome,
            Outcome::Success,
            "the finish supersedes"
        );
        // Handing over keeps the copy.
        assert_eq!(c.len(), 2);
        // One clean heartbeat proves nothing about a finish sent before it.
        c.observe(&beat(None, 0));
        assert_eq!(c.len(), 2);
        c.observe(&fire(3));
        c.observe(&beat(None, 0));
        // Only the fire after the first clean heartbeat is kept.
        assert_eq!(adopted(&c), (vec![3], vec![("a".into(), ts(4))]));
        c.observe(&beat(None, 0));
        assert_eq!(adopted(&c), (vec![], vec![]));
        // Still one (empty) adopt: this supervisor watched the worker.
        assert_eq!(c.adopt_commands().len(), 1);
        assert!(HeldCopy::default().adopt_commands().is_empty());
    }

    #[test]
    fn bounded_with_the_oldest_dropped_and_counted() {
        let mut c = HeldCopy::default();
        for id in 1..=MAX_KEPT_RECORDS as u64 + 7 {
            c.observe(&fire(id));
        }
        assert_eq!(c.len(), MAX_KEPT_RECORDS);
        assert_eq!(c.dropped, 7);
        let (ids, _) = adopted(&c);
        assert_eq!(ids.first(), Some(&8));
        // Every command is within the line bound.
        for cmd in c.adopt_commands() {
            assert!(serde_json::to_vec(&cmd).unwrap().len() < MAX_COMMAND_LINE);
        }
    }
}
