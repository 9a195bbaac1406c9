//! Exactly once, as a property: random sequences of time passing, runs
//! ending, store failures and recoveries, and worker deaths (kill -9: the
//! plan, the journal and every run in flight gone; a restart is a new plan
//! built from what the store holds, as `scheduler::run` builds it), run
//! against the pure plan, the real journal and a real store.
//!
//! The oracle is independent of the schedule code: every job fires on
//! whole seconds divisible by its period (`*/N` in the seconds field, N
//! dividing 60), so its fire times are enumerated by brute force.
//!
//! Asserted at the end (after the store recovers and every run ends):
//! - every fire time is covered by exactly one stored record (a run, a
//!   coalesced catch-up, a skip or a lost run), and the stored cursor is
//!   past the last one: nothing missed, nothing recorded twice;
//! - no run id was ever given to two different runs or skips;
//! - a fire time ran (was spawned) twice only after a death while the
//!   journal held writes (a double fault: store failing, then the worker
//!   killed), only if it was not yet durably claimed, and every run after
//!   its first is marked `may_repeat` (no supervisor keeps a copy here,
//!   so every restart after a kill is in doubt), at most one per job per
//!   start;
//! - every run that was spawned has a stored record, unless its record
//!   was among the writes held at such a death;
//! - nothing is left `running`.

use std::collections::{BTreeMap, BTreeSet};

use cronwarden_shared::{status::Outcome, store::Write};
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;

use super::{
    props_world::{config, step, ts, Shell, Worker, JOBS, T0},
    wanted_rows, Effects,
};

struct World {
    w: Worker,
    /// Every id handed out, with what it stood for (job, covers).
    ids: BTreeMap<u64, (String, Vec<Timestamp>)>,
    /// Fire times that may have run twice: not durably claimed when the
    /// worker died holding writes.
    may_repeat: BTreeSet<(String, Timestamp)>,
    /// Runs whose records were held (lost) when the worker died.
    unrecorded: BTreeSet<u64>,
    /// Fire times not durably claimed when the worker died holding
    /// writes: if the job is gone from the config by the restart, nobody
    /// fires them again, and they may have no record; if its removal was
    /// among the lost writes, the next worker may fire them although the
    /// job was removed meanwhile (the double fault the supervisor's copy
    /// of held writes is for).
    may_lack: BTreeSet<(String, Timestamp)>,
    /// When `queue` was (re)configured and removed, in seconds after T0:
    /// it is due in `(added, removed]` for each pair (`None`: still in).
    queue_spans: Vec<(i64, Option<i64>)>,
    /// Workers started so far, and the runs spawned marked `may_repeat`
    /// by (worker, job).
    starts: u32,
    flagged: BTreeMap<u64, (u32, String)>,
}

impl World {
    fn new() -> World {
        let mut w = World {
            w: Worker::new(),
            ids: BTreeMap::new(),
            may_repeat: BTreeSet::new(),
            unrecorded: BTreeSet::new(),
            may_lack: BTreeSet::new(),
            queue_spans: vec![(0, None)],
            starts: 0,
            flagged: BTreeMap::new(),
        };
        w.start();
        w
    }
}

impl Shell for World {
    fn worker(&mut self) -> &mut Worker {
        &mut self.w
    }

    /// No supervisor keeps a copy here: every restart after a kill is in
    /// doubt.
    fn take_over(&mut self) -> bool {
        self.starts += 1;
        false
    }

    /// What the loop does with effects: journal (commit or hold), then
    /// spawns. Events and stops are the supervisor's and the runner's.
    fn carry_out(&mut self, fx: Effects) {
        for w in &fx.writes {
            if let Write::Insert(r) | Write::Finish(r) = w {
                let what = (r.job.clone(), r.covers.clone());
                let before = self.ids.entry(r.id).or_insert_with(|| what.clone());
                assert_eq!(*before, what, "run id {} used for two records", r.id);
            }
        }
        self.w.commit(fx.writes);
        for s in fx.spawns {
            if s.record.may_repeat {
                self.flagged
                    .insert(s.record.id, (self.starts, s.record.job.clone()));
            }
            self.w.spawned(s);
        }
    }

    fn before_death(&mut self, down: u8) {
        let held: Vec<Write> = self.w.journal.uncommitted().cloned().collect();
        if held.is_empty() {
            return;
        }
        // What the store has durably claimed: anything at or after its
        // cursor may be fired again by the next worker.
        let cursors: BTreeMap<String, Option<Timestamp>> = self
            .w
            .store
            .jobs()
            .unwrap()
            .into_iter()
            .map(|r| (r.name, r.next_run_at))
            .collect();
        for (job, t, _) in &self.w.executed {
            if cursors.get(job).copied().flatten().is_some_and(|c| *t >= c) {
                self.may_repeat.insert((job.clone(), *t));
            }
        }
        // Up to the restart: fires of the downtime too, for a job
        // whose row the held writes were to create or remove.
        let restart = self.w.clocks.wall + SignedDuration::from_secs(down.into());
        for (job, _, _) in JOBS {
            let mut t = match cursors.get(*job) {
                Some(Some(c)) => *c,
                Some(None) => continue,
                None => ts(0),
            };
            while t <= restart {
                self.may_lack.insert((job.to_string(), t));
                t += SignedDuration::from_secs(1);
            }
        }
        for w in &held {
            if let Write::Insert(r) | Write::Finish(r) = w {
                self.unrecorded.insert(r.id);
            }
        }
    }

    /// A reload, reconciled with the store as the loop does it.
    fn reload(&mut self) {
        let now = self.w.clocks.wall.as_second() - T0;
        let with_queue = match self.queue_spans.last_mut() {
            Some((_, end @ None)) => {
                *end = Some(now);
                false
            }
            _ => {
                self.queue_spans.push((now, None));
                true
            }
        };
        self.w.config = config(with_queue);
        // As the loop: with the store failing, from the config alone.
        let wanted = wanted_rows(&self.w.config, self.w.clocks.wall);
        // As the loop: held writes first, then reconcile only if none
        // are left.
        self.carry_out(Effects::default());
        let mut fx = Effects::default();
        let rows = if self.w.failing || self.w.journal.held() > 0 {
            fx.writes = self.w.plan.unreconciled_writes(&wanted);
            wanted
        } else {
            self.w.store.reconcile(&wanted).unwrap()
        };
        self.w
            .plan
            .configure(&self.w.config, rows, self.w.clocks.wall, &mut fx);
        self.carry_out(fx);
    }
}

impl World {
    fn check(&self) {
        let end = self.w.clocks.wall;
        let records = self.w.records();
        assert!(
            records.iter().all(|r| r.outcome != Outcome::Running),
            "a record left running"
        );
        let stored_ids: BTreeSet<u64> = records.iter().map(|r| r.id).collect();
        let end_s = end.as_second() - T0;
        for (name, period, _) in JOBS {
            // Brute force: every whole second after T0 divisible by the
            // period, while the job was configured.
            let spans = if *name == "queue" {
                self.queue_spans.clone()
            } else {
                vec![(0, None)]
            };
            let configured = |s: i64| spans.iter().any(|(a, r)| s > *a && s <= r.unwrap_or(end_s));
            let expected: Vec<Timestamp> = (1..=end_s)
                .filter(|s| s % period == 0 && configured(*s))
                .map(ts)
                .collect();
            let mut covered: Vec<Timestamp> = records
                .iter()
                .filter(|r| r.job == *name)
                .flat_map(|r| r.covers.clone())
                .collect();
            covered.sort();
            let mut unique = covered.clone();
            unique.dedup();
            assert_eq!(unique, covered, "job {name}: a fire recorded twice");
            // (A job removed and added back while the store failed, then a
            // death: the next worker only knows the stale stored row.)
            let not_due: Vec<&Timestamp> = covered
                .iter()
                .filter(|t| {
                    !expected.contains(t) && !self.may_lack.contains(&(name.to_string(), **t))
                })
                .collect();
            assert!(
                not_due.is_empty(),
                "job {name}: records of fires not due: {not_due:?}"
            );
            let missing: Vec<&Timestamp> = expected
                .iter()
                .filter(|t| {
                    !covered.contains(t) && !self.may_lack.contains(&(name.to_string(), **t))
                })
                .collect();
            assert!(
                missing.is_empty(),
                "job {name}: fires without a record at {end}: {missing:?}"
            );
            let cursor = self
                .w
                .store
                .jobs()
                .unwrap()
                .into_iter()
                .find(|r| r.name == *name)
                .and_then(|r| r.next_run_at);
            let next = (end_s / period + 1) * period;
            let armed = spans.last().is_some_and(|(_, r)| r.is_none());
            assert_eq!(cursor, armed.then(|| ts(next)), "job {name}: stored cursor");
        }
        let mut runs: BTreeMap<(String, Timestamp), u32> = BTreeMap::new();
        for (job, t, id) in &self.w.executed {
            let n = runs.entry((job.clone(), *t)).or_default();
            *n += 1;
            assert!(
                *n == 1 || self.flagged.contains_key(id),
                "run {id} repeats {job} at {t} without saying it may repeat"
            );
            assert!(
                stored_ids.contains(id) || self.unrecorded.contains(id),
                "run {id} of {job} ran but has no record"
            );
        }
        for (key, n) in runs {
            assert!(
                n == 1 || self.may_repeat.contains(&key),
                "{key:?} ran {n} times without a double fault"
            );
        }
        let mut per_start: BTreeMap<&(u32, String), u32> = BTreeMap::new();
        for (id, key) in &self.flagged {
            let n = per_start.entry(key).or_default();
            *n += 1;
            assert_eq!(*n, 1, "run {id}: a second may_repeat run of {key:?}");
            let stored = records.iter().find(|r| r.id == *id);
            assert!(
                stored.is_none_or(|r| r.may_repeat),
                "run {id}: may_repeat not stored"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_fire_ends_in_exactly_one_record_through_faults_and_deaths(
        steps in proptest::collection::vec(step(true), 1..80)
    ) {
        let mut w = World::new();
        for s in &steps {
            w.step(s);
        }
        w.quiesce();
        w.check();
    }
}
