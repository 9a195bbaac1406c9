//! Exactly once with the supervisor's copy, as a property (issue 14):
//! random sequences of time passing, runs ending, store failures and
//! recoveries and worker deaths, run against the pure plan, the real
//! journal, a real store and the supervisor's real copy
//! (`cronwarden_shared::held_copy`), wired as the shell wires them: a
//! run's claim is copied before its spawn while the store fails
//! (`claimed`), every fire, skip, queued fire, finish and heartbeat is
//! observed, and a new worker adopts the copy before it plans.
//!
//! Unlike `plan::props` (the worker alone, where a death while writes are
//! held may repeat fires), nothing is excused: the oracle is a brute-force
//! list of every whole second divisible by a job's period, and at the end
//! - every fire time is covered by exactly one stored record;
//! - no fire time was spawned twice;
//! - every spawned run has its stored record, none left `running`.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    time::Duration,
};

use cronwarden_shared::{
    config::Config,
    held_copy::HeldCopy,
    stats::WorkerStats,
    status::Outcome,
    store::{Store, Write},
    wire::{Command, Event},
};
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;

use crate::{
    clock::Clocks,
    error::WorkerError,
    journal::Journal,
    plan::{reserve_at_start, wanted_rows, Effects, Plan, Spawn},
};

/// 2030-01-01T00:00:00Z, a whole minute.
const T0: i64 = 1_893_456_000;

const JOBS: &[(&str, i64, &str)] = &[
    ("skip", 3, "overlap = \"skip\"\nmisfire_grace = \"5s\""),
    ("queue", 5, "overlap = \"queue\"\nmisfire_grace = \"1h\""),
    ("allow", 2, "overlap = \"allow\"\nmisfire_grace = \"10s\""),
];

#[derive(Debug, Clone)]
enum Step {
    Tick(u8),
    FinishOldest,
    FinishAll,
    StoreFails,
    StoreRecovers,
    /// kill -9 of the worker; the next one starts this many seconds later
    /// (once the store works: the real one waits for it).
    Die(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (1u8..=4).prop_map(Step::Tick),
        2 => Just(Step::FinishOldest),
        1 => Just(Step::FinishAll),
        2 => Just(Step::StoreFails),
        1 => Just(Step::StoreRecovers),
        1 => (0u8..=40).prop_map(Step::Die),
    ]
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
    copy: HeldCopy,
    failing: bool,
    clocks: Clocks,
    children: Vec<Spawn>,
    /// Every (job, fire time) spawned, with the run id.
    executed: Vec<(String, Timestamp, u64)>,
}

impl World {
    fn new() -> World {
        let toml: String = JOBS
            .iter()
            .map(|(name, period, extra)| {
                format!("[[job]]\nname = \"{name}\"\nschedule = \"*/{period} * * * * *\"\nshell = \"true\"\n{extra}\n")
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let mut w = World {
            config: Config::parse(Path::new("/nonexistent/cronwarden.toml"), &toml).unwrap(),
            store: Store::open(&dir.path().join("state.db")).unwrap(),
            _dir: dir,
            plan: Plan::new(1, 0),
            journal: Journal::new(),
            copy: HeldCopy::default(),
            failing: false,
            clocks: Clocks {
                wall: ts(0),
                mono: Duration::from_secs(1000),
                boot: Duration::from_secs(1000),
            },
            children: vec![],
            executed: vec![],
        };
        w.start();
        w
    }

    /// A worker starts as `takeover::take_over` and `scheduler::run`
    /// start one: the supervisor's copy adopted first, then lost runs
    /// recovered, ids reserved, the config reconciled.
    fn start(&mut self) {
        for cmd in self.copy.adopt_commands() {
            if let Command::Adopt { records, cursors } = cmd {
                self.store.adopt(&records, &cursors).unwrap();
            }
        }
        self.store.recover_lost().unwrap();
        let first = self.store.first_free_run_id().unwrap();
        let reserved = reserve_at_start(first);
        self.store
            .apply(&[Write::ReserveIds { upto: reserved }])
            .unwrap();
        self.plan = Plan::new(first, reserved);
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

    /// As `Scheduler::flush` and `Scheduler::spawn`: commit or hold, send
    /// the events, copy a claim the store did not commit before the
    /// spawn, then the fire event.
    fn carry_out(&mut self, fx: Effects) {
        self.journal.extend(fx.writes);
        let (store, failing) = (&mut self.store, self.failing);
        self.journal.flush(&mut |batch: &[Write], check: bool| {
            if failing {
                return Err(WorkerError::InjectedStoreFault);
            }
            crate::journal::Apply::apply(&mut *store, batch, check)
        });
        for ev in &fx.events {
            self.copy.observe(ev);
        }
        for s in fx.spawns {
            if self.journal.error().is_some() {
                self.copy.observe(&Event::Claimed {
                    run: s.record.clone(),
                    next_fire_at: s.next_fire_at,
                });
            }
            let r = &s.record;
            self.copy.observe(&Event::Fire {
                job: r.job.clone(),
                run_id: r.id,
                scheduled_at: r.scheduled_at,
                covers: r.covers.clone(),
                trigger: r.trigger,
                pid: 1,
                pipes: vec![],
                started_at: r.started_at.unwrap_or(self.clocks.wall),
                next_fire_at: s.next_fire_at,
            });
            for t in &r.covers {
                self.executed.push((r.job.clone(), *t, r.id));
            }
            self.children.push(s);
        }
    }

    fn turn(&mut self) {
        let mut fx = Effects::default();
        self.plan.observe_clocks(self.clocks, &mut fx);
        self.plan.fire_due(self.clocks.wall, &mut fx);
        self.carry_out(fx);
        self.copy.observe(&Event::Heartbeat {
            seq: 0,
            at: self.clocks.wall,
            last_good_turn_at: None,
            running: 0,
            store_error: self.journal.error().map(str::to_string),
            armed: None,
            progress: vec![],
            stats: Some(WorkerStats {
                writes_held: self.journal.held() as u64,
                ..Default::default()
            }),
        });
    }

    fn pass(&mut self, secs: u8) {
        for _ in 0..secs {
            self.clocks.wall += SignedDuration::from_secs(1);
            self.clocks.mono += Duration::from_secs(1);
            self.clocks.boot += Duration::from_secs(1);
            self.turn();
        }
    }

    /// A run ends: the runner sends its finish, the loop records it.
    fn finish(&mut self, i: usize) {
        let mut record = self.children.remove(i).record;
        record.finished_at = Some(self.clocks.wall);
        record.outcome = Outcome::Success;
        self.copy.observe(&Event::Finish {
            run: record.clone(),
        });
        let mut fx = Effects::default();
        self.plan.finished(record, self.clocks.wall, &mut fx);
        self.carry_out(fx);
    }

    fn die(&mut self, down: u8) {
        // The children of a killed worker go on, unobserved: their
        // records are the lost runs the next worker recovers.
        self.children.clear();
        self.failing = false;
        self.clocks.wall += SignedDuration::from_secs(down.into());
        self.clocks.mono += Duration::from_secs(down.into());
        self.clocks.boot += Duration::from_secs(down.into());
        self.start();
    }

    fn step(&mut self, s: &Step) {
        match s {
            Step::Tick(n) => self.pass(*n),
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

    fn quiesce(&mut self) {
        self.failing = false;
        for _ in 0..100 {
            while !self.children.is_empty() {
                self.finish(0);
            }
            if self.journal.held() == 0 {
                return;
            }
            self.pass(1);
        }
        panic!("did not quiesce: {} writes held", self.journal.held());
    }

    fn check(&self) {
        let end_s = self.clocks.wall.as_second() - T0;
        let mut records = vec![];
        for (name, _, _) in JOBS {
            records.extend(self.store.runs(name, u32::MAX).unwrap());
        }
        assert!(
            records.iter().all(|r| r.outcome != Outcome::Running),
            "a record left running"
        );
        for (name, period, _) in JOBS {
            let expected: Vec<Timestamp> =
                (1..=end_s).filter(|s| s % period == 0).map(ts).collect();
            let mut covered: Vec<Timestamp> = records
                .iter()
                .filter(|r| r.job == *name)
                .flat_map(|r| r.covers.clone())
                .collect();
            covered.sort();
            assert_eq!(covered, expected, "job {name}: records per fire time");
        }
        let stored: BTreeSet<u64> = records.iter().map(|r| r.id).collect();
        let mut runs: BTreeMap<(&str, Timestamp), Vec<u64>> = BTreeMap::new();
        for (job, t, id) in &self.executed {
            runs.entry((job.as_str(), *t)).or_default().push(*id);
            assert!(
                stored.contains(id),
                "run {id} of {job} ran but has no record"
            );
        }
        let twice: Vec<_> = runs.iter().filter(|(_, ids)| ids.len() > 1).collect();
        assert!(twice.is_empty(), "fires that ran twice: {twice:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn with_the_supervisors_copy_every_fire_runs_and_is_recorded_exactly_once(
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
