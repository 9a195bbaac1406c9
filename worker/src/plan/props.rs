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

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    time::Duration,
};

use cronwarden_shared::{
    config::Config,
    status::Outcome,
    store::{Store, Write},
};
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;

use super::{wanted_rows, Effects, Plan, Spawn};
use crate::{clock::Clocks, error::WorkerError, journal::Journal};

/// 2030-01-01T00:00:00Z, a whole minute.
const T0: i64 = 1_893_456_000;

/// (name, period in seconds, extra config).
const JOBS: &[(&str, i64, &str)] = &[
    ("skip", 3, "overlap = \"skip\"\nmisfire_grace = \"5s\""),
    ("queue", 5, "overlap = \"queue\"\nmisfire_grace = \"1h\""),
    ("allow", 2, "overlap = \"allow\"\nmisfire_grace = \"10s\""),
];

#[derive(Debug, Clone)]
enum Step {
    /// Time passes (seconds), one loop turn per second.
    Tick(u8),
    /// The oldest run in flight ends.
    FinishOldest,
    /// Every run in flight ends.
    FinishAll,
    StoreFails,
    StoreRecovers,
    /// A reload without the `queue` job, or with it again: its queued
    /// fire (if any) is recorded `removed`, its run goes on; added back,
    /// it is armed from now.
    Reload,
    /// The worker is killed; a new one starts this many seconds later,
    /// on a store that works again (a store failing at start stops the
    /// real worker before it plans anything).
    Die(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (1u8..=4).prop_map(Step::Tick),
        2 => Just(Step::FinishOldest),
        1 => Just(Step::FinishAll),
        1 => Just(Step::StoreFails),
        1 => Just(Step::StoreRecovers),
        1 => (0u8..=40).prop_map(Step::Die),
        1 => Just(Step::Reload),
    ]
}

/// The config: every job of [`JOBS`], without `queue` unless `with_queue`.
fn config(with_queue: bool) -> Config {
    let toml: String = JOBS
        .iter()
        .filter(|(name, _, _)| with_queue || *name != "queue")
        .map(|(name, period, extra)| {
            format!("[[job]]\nname = \"{name}\"\nschedule = \"*/{period} * * * * *\"\nshell = \"true\"\n{extra}\n")
        })
        .collect();
    Config::parse(Path::new("/nonexistent/cronwarden.toml"), &toml).unwrap()
}

fn ts(secs_after_t0: i64) -> Timestamp {
    Timestamp::from_second(T0 + secs_after_t0).unwrap()
}

struct World {
    config: Config,
    store: Store,
    _dir: tempfile::TempDir,
    plan: Plan,
    journal: Journal,
    failing: bool,
    clocks: Clocks,
    children: Vec<Spawn>,
    /// Every (job, fire time) spawned, with the run id, in order.
    executed: Vec<(String, Timestamp, u64)>,
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
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let mut w = World {
            config: config(true),
            store,
            _dir: dir,
            plan: Plan::new(1, 0),
            journal: Journal::new(),
            failing: false,
            clocks: Clocks {
                wall: ts(0),
                mono: Duration::from_secs(1000),
                boot: Duration::from_secs(1000),
            },
            children: vec![],
            executed: vec![],
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

    /// A worker starts as `scheduler::run` starts one: lost runs
    /// recovered, ids above every reservation, the config reconciled.
    fn start(&mut self) {
        self.store.recover_lost().unwrap();
        let first = self.store.first_free_run_id().unwrap();
        let reserved = super::reserve_at_start(first);
        self.store
            .apply(&[Write::ReserveIds { upto: reserved }])
            .unwrap();
        self.plan = Plan::new(first, reserved);
        // As `takeover::take_over` with no supervisor to hand anything over.
        let killed = self.store.mark_worker_live().unwrap();
        self.plan.in_doubt_through = killed.then_some(self.clocks.wall);
        self.starts += 1;
        self.journal = Journal::new();
        let rows = self
            .store
            .reconcile(&wanted_rows(&self.config, self.clocks.wall))
            .unwrap();
        let mut fx = Effects::default();
        self.plan
            .configure(&self.config, rows, self.clocks.wall, &mut fx);
        self.carry_out(fx);
        self.turn();
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
        self.journal.extend(fx.writes);
        let (store, failing) = (&mut self.store, self.failing);
        self.journal.flush(&mut |batch: &[Write], check: bool| {
            if failing {
                return Err(WorkerError::InjectedStoreFault);
            }
            crate::journal::Apply::apply(&mut *store, batch, check)
        });
        for s in fx.spawns {
            if s.record.may_repeat {
                self.flagged
                    .insert(s.record.id, (self.starts, s.record.job.clone()));
            }
            for t in &s.record.covers {
                self.executed.push((s.record.job.clone(), *t, s.record.id));
            }
            self.children.push(s);
        }
    }

    fn turn(&mut self) {
        let mut fx = Effects::default();
        self.plan.observe_clocks(self.clocks, &mut fx);
        self.plan.fire_due(self.clocks.wall, &mut fx);
        self.carry_out(fx);
    }

    fn tick(&mut self, secs: u8) {
        for _ in 0..secs {
            self.clocks.wall += SignedDuration::from_secs(1);
            self.clocks.mono += Duration::from_secs(1);
            self.clocks.boot += Duration::from_secs(1);
            self.turn();
        }
    }

    fn finish(&mut self, i: usize) {
        let mut record = self.children.remove(i).record;
        record.finished_at = Some(self.clocks.wall);
        record.outcome = Outcome::Success;
        let mut fx = Effects::default();
        self.plan.finished(record, self.clocks.wall, &mut fx);
        self.carry_out(fx);
    }

    fn die(&mut self, down: u8) {
        let held: Vec<Write> = self.journal.uncommitted().cloned().collect();
        if !held.is_empty() {
            // What the store has durably claimed: anything at or after its
            // cursor may be fired again by the next worker.
            let cursors: BTreeMap<String, Option<Timestamp>> = self
                .store
                .jobs()
                .unwrap()
                .into_iter()
                .map(|r| (r.name, r.next_run_at))
                .collect();
            for (job, t, _) in &self.executed {
                if cursors.get(job).copied().flatten().is_some_and(|c| *t >= c) {
                    self.may_repeat.insert((job.clone(), *t));
                }
            }
            // Up to the restart: fires of the downtime too, for a job
            // whose row the held writes were to create or remove.
            let restart = self.clocks.wall + SignedDuration::from_secs(down.into());
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
        self.children.clear();
        self.failing = false;
        self.clocks.wall += SignedDuration::from_secs(down.into());
        self.clocks.mono += Duration::from_secs(down.into());
        self.clocks.boot += Duration::from_secs(down.into());
        self.start();
    }

    /// A reload, reconciled with the store as the loop does it.
    fn reload(&mut self) {
        let now = self.clocks.wall.as_second() - T0;
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
        self.config = config(with_queue);
        // As the loop: with the store failing, from the config alone.
        let wanted = wanted_rows(&self.config, self.clocks.wall);
        // As the loop: held writes first, then reconcile only if none
        // are left.
        self.carry_out(Effects::default());
        let mut fx = Effects::default();
        let rows = if self.failing || self.journal.held() > 0 {
            fx.writes = self.plan.unreconciled_writes(&wanted);
            wanted
        } else {
            self.store.reconcile(&wanted).unwrap()
        };
        self.plan
            .configure(&self.config, rows, self.clocks.wall, &mut fx);
        self.carry_out(fx);
    }

    fn step(&mut self, s: &Step) {
        match s {
            Step::Reload => self.reload(),
            Step::Tick(n) => self.tick(*n),
            Step::FinishOldest if !self.children.is_empty() => self.finish(0),
            Step::FinishOldest => {}
            Step::FinishAll => {
                while !self.children.is_empty() {
                    self.finish(0);
                }
            }
            Step::StoreFails => self.failing = true,
            Step::StoreRecovers => self.failing = false,
            Step::Die(down) => self.die(*down),
        }
    }

    /// The store recovers and every run ends; time passes until nothing
    /// is in flight or held.
    fn quiesce(&mut self) {
        self.failing = false;
        for _ in 0..100 {
            while !self.children.is_empty() {
                self.finish(0);
            }
            if self.journal.held() == 0 {
                return;
            }
            self.tick(1);
        }
        panic!("did not quiesce: {} writes held", self.journal.held());
    }

    fn check(&self) {
        let end = self.clocks.wall;
        let records = {
            let mut all = vec![];
            for (name, _, _) in JOBS {
                all.extend(self.store.runs(name, u32::MAX).unwrap());
            }
            all
        };
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
        for (job, t, id) in &self.executed {
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
        steps in proptest::collection::vec(step(), 1..80)
    ) {
        let mut w = World::new();
        for s in &steps {
            w.step(s);
        }
        w.quiesce();
        w.check();
    }
}
