//! The world both exactly-once properties run in (`plan::props`: the
//! worker alone; `once_props`: with the supervisor's copy of held writes):
//! the pure plan, the real journal and a real store, driven as the shell
//! drives them, through random steps of time passing, runs ending, store
//! failures and recoveries, reloads and worker deaths.
//!
//! Every job fires on whole seconds divisible by its period (`*/N` in the
//! seconds field, N dividing 60), so the oracles enumerate fire times by
//! brute force, independently of the schedule code.

use std::{path::Path, time::Duration};

use cronwarden_shared::{
    config::Config,
    status::{Outcome, RunRecord},
    store::{Store, Write},
};
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;

use super::{reserve_at_start, wanted_rows, Effects, Plan, Spawn};
use crate::{clock::Clocks, error::WorkerError, journal::Journal};

/// 2030-01-01T00:00:00Z, a whole minute.
pub(crate) const T0: i64 = 1_893_456_000;

/// (name, period in seconds, extra config).
pub(crate) const JOBS: &[(&str, i64, &str)] = &[
    ("skip", 3, "overlap = \"skip\"\nmisfire_grace = \"5s\""),
    ("queue", 5, "overlap = \"queue\"\nmisfire_grace = \"1h\""),
    ("allow", 2, "overlap = \"allow\"\nmisfire_grace = \"10s\""),
];

pub(crate) fn ts(secs_after_t0: i64) -> Timestamp {
    Timestamp::from_second(T0 + secs_after_t0).unwrap()
}

/// The config: every job of [`JOBS`], without `queue` unless `with_queue`.
pub(crate) fn config(with_queue: bool) -> Config {
    let toml: String = JOBS
        .iter()
        .filter(|(name, _, _)| with_queue || *name != "queue")
        .map(|(name, period, extra)| {
            format!("[[job]]\nname = \"{name}\"\nschedule = \"*/{period} * * * * *\"\nshell = \"true\"\n{extra}\n")
        })
        .collect();
    Config::parse(Path::new("/nonexistent/cronwarden.toml"), &toml).unwrap()
}

#[derive(Debug, Clone)]
pub(crate) enum Step {
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

/// Random steps; `Reload` only `with_reload`.
pub(crate) fn step(with_reload: bool) -> BoxedStrategy<Step> {
    let common = prop_oneof![
        6 => (1u8..=4).prop_map(Step::Tick),
        2 => Just(Step::FinishOldest),
        1 => Just(Step::FinishAll),
        1 => Just(Step::StoreFails),
        1 => Just(Step::StoreRecovers),
        1 => (0u8..=40).prop_map(Step::Die),
    ];
    if with_reload {
        prop_oneof![12 => common, 1 => Just(Step::Reload)].boxed()
    } else {
        common.boxed()
    }
}

/// The worker's side: what a kill -9 takes away (plan, journal, runs in
/// flight) and what survives it (the store), with every fire spawned.
pub(crate) struct Worker {
    pub config: Config,
    pub store: Store,
    _dir: tempfile::TempDir,
    pub plan: Plan,
    pub journal: Journal,
    pub failing: bool,
    pub clocks: Clocks,
    /// Runs spawned and not yet finished: the fake children.
    pub children: Vec<Spawn>,
    /// Every (job, fire time) spawned, with the run id, in order.
    pub executed: Vec<(String, Timestamp, u64)>,
}

impl Worker {
    pub fn new() -> Worker {
        let dir = tempfile::tempdir().unwrap();
        Worker {
            config: config(true),
            store: Store::open(&dir.path().join("state.db")).unwrap(),
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
        }
    }

    /// A worker starts as `takeover::take_over` and `scheduler::run`
    /// start one (after any adoption): lost runs recovered, ids above
    /// every reservation, marked live (in doubt if its predecessor was
    /// killed and nobody `witnessed` it), the config reconciled. The
    /// configure's effects are the caller's to carry out.
    pub fn start(&mut self, witnessed: bool) -> Effects {
        self.store.recover_lost().unwrap();
        let first = self.store.first_free_run_id().unwrap();
        let reserved = reserve_at_start(first);
        self.store
            .apply(&[Write::ReserveIds { upto: reserved }])
            .unwrap();
        self.plan = Plan::new(first, reserved);
        let killed = self.store.mark_worker_live().unwrap();
        self.plan.in_doubt_through = (killed && !witnessed).then_some(self.clocks.wall);
        self.journal = Journal::new();
        let rows = self
            .store
            .reconcile(&wanted_rows(&self.config, self.clocks.wall))
            .unwrap();
        let mut fx = Effects::default();
        self.plan
            .configure(&self.config, rows, self.clocks.wall, &mut fx);
        fx
    }

    /// As the journal in the loop: commit, or hold while the store fails.
    pub fn commit(&mut self, writes: Vec<Write>) {
        self.journal.extend(writes);
        let (store, failing) = (&mut self.store, self.failing);
        self.journal.flush(&mut |batch: &[Write], check: bool| {
            if failing {
                return Err(WorkerError::InjectedStoreFault);
            }
            crate::journal::Apply::apply(&mut *store, batch, check)
        });
    }

    /// A run starts: noted as executed for each time it covers.
    pub fn spawned(&mut self, s: Spawn) {
        for t in &s.record.covers {
            self.executed.push((s.record.job.clone(), *t, s.record.id));
        }
        self.children.push(s);
    }

    /// One loop turn at the current clocks: its effects.
    pub fn turn(&mut self) -> Effects {
        let mut fx = Effects::default();
        self.plan.observe_clocks(self.clocks, &mut fx);
        self.plan.fire_due(self.clocks.wall, &mut fx);
        self.plan.check_starts();
        fx
    }

    pub fn advance(&mut self, secs: u64) {
        self.clocks.wall += SignedDuration::from_secs(secs as i64);
        self.clocks.mono += Duration::from_secs(secs);
        self.clocks.boot += Duration::from_secs(secs);
    }

    /// The `i`th run in flight ends, successfully: its final record.
    pub fn end(&mut self, i: usize) -> RunRecord {
        let mut record = self.children.remove(i).record;
        record.finished_at = Some(self.clocks.wall);
        record.outcome = Outcome::Success;
        record
    }

    /// Every stored record of every job.
    pub fn records(&self) -> Vec<RunRecord> {
        let mut all = vec![];
        for (name, _, _) in JOBS {
            all.extend(self.store.runs(name, u32::MAX).unwrap());
        }
        all
    }
}

/// A world around a [`Worker`]: what it does with effects, and what it
/// notes around a finish, a death and a reload. The steps are common.
pub(crate) trait Shell {
    fn worker(&mut self) -> &mut Worker;
    /// Commit (or hold), then whatever else the world does with effects.
    fn carry_out(&mut self, fx: Effects);
    /// After each loop turn (a heartbeat).
    fn after_turn(&mut self) {}
    /// A finished run's record, before the loop gets it.
    fn on_finish(&mut self, _record: &RunRecord) {}
    /// Just before a kill -9 that restarts `down` seconds later.
    fn before_death(&mut self, _down: u8) {}
    /// Whether the new worker hears from a supervisor that watched the
    /// old one (adopting what it kept happens here too).
    fn take_over(&mut self) -> bool {
        false
    }
    fn reload(&mut self) {}

    fn start(&mut self) {
        let witnessed = self.take_over();
        let fx = self.worker().start(witnessed);
        self.carry_out(fx);
        self.turn();
    }

    fn turn(&mut self) {
        let fx = self.worker().turn();
        self.carry_out(fx);
        self.after_turn();
    }

    fn tick(&mut self, secs: u8) {
        for _ in 0..secs {
            self.worker().advance(1);
            self.turn();
        }
    }

    fn finish(&mut self, i: usize) {
        let record = self.worker().end(i);
        self.on_finish(&record);
        let w = self.worker();
        let mut fx = Effects::default();
        w.plan.finished(record, w.clocks.wall, &mut fx);
        self.carry_out(fx);
    }

    /// kill -9: the children of a killed worker go on, unobserved (their
    /// records are the lost runs the next worker recovers).
    fn die(&mut self, down: u8) {
        self.before_death(down);
        let w = self.worker();
        w.children.clear();
        w.failing = false;
        w.advance(down.into());
        self.start();
    }

    fn step(&mut self, s: &Step) {
        match s {
            Step::Reload => self.reload(),
            Step::Tick(n) => self.tick(*n),
            Step::FinishOldest if !self.worker().children.is_empty() => self.finish(0),
            Step::FinishOldest => {}
            Step::FinishAll => {
                while !self.worker().children.is_empty() {
                    self.finish(0);
                }
            }
            Step::StoreFails => self.worker().failing = true,
            Step::StoreRecovers => self.worker().failing = false,
            Step::Die(down) => self.die(*down),
        }
    }

    /// The store recovers and every run ends; time passes until nothing
    /// is in flight or held.
    fn quiesce(&mut self) {
        self.worker().failing = false;
        for _ in 0..100 {
            while !self.worker().children.is_empty() {
                self.finish(0);
            }
            if self.worker().journal.held() == 0 {
                return;
            }
            self.tick(1);
        }
        panic!(
            "did not quiesce: {} writes held",
            self.worker().journal.held()
        );
    }
}
