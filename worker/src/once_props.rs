//! Exactly once with the supervisor's copy, as a property (issue 14):
//! random sequences of time passing, runs ending, store failures and
//! recoveries and worker deaths, run against the pure plan, the real
//! journal, a real store and the supervisor's real copy
//! (`cronwarden_shared::held_copy`), wired as the shell wires them: a
//! run's claim is copied before its spawn while the store fails
//! (`claimed`), every fire, skip, queued fire, finish and heartbeat is
//! observed, and a new worker adopts the copy before it plans. The world
//! and its steps are `plan::props_world`'s, shared with `plan::props`.
//!
//! Unlike `plan::props` (the worker alone, where a death while writes are
//! held may repeat fires), nothing is excused: the oracle is a brute-force
//! list of every whole second divisible by a job's period, and at the end
//! - every fire time is covered by exactly one stored record;
//! - no fire time was spawned twice;
//! - every spawned run has its stored record, none left `running`.

use std::collections::{BTreeMap, BTreeSet};

use cronwarden_shared::{
    held_copy::HeldCopy,
    stats::WorkerStats,
    status::{Outcome, RunRecord},
    wire::{Command, Event},
};
use jiff::Timestamp;
use proptest::prelude::*;

use crate::plan::{
    props_world::{step, ts, Shell, Worker, JOBS, T0},
    Effects,
};

struct World {
    w: Worker,
    copy: HeldCopy,
}

impl Shell for World {
    fn worker(&mut self) -> &mut Worker {
        &mut self.w
    }

    /// As `takeover::take_over`: the supervisor's copy adopted first.
    fn take_over(&mut self) -> bool {
        let adopt = self.copy.adopt_commands();
        for cmd in &adopt {
            if let Command::Adopt { records, cursors } = cmd {
                self.w.store.adopt(records, cursors).unwrap();
            }
        }
        !adopt.is_empty()
    }

    /// As `Scheduler::flush` and `Scheduler::spawn`: commit or hold, send
    /// the events, copy a claim the store did not commit before the
    /// spawn, then the fire event.
    fn carry_out(&mut self, fx: Effects) {
        self.w.commit(fx.writes);
        for ev in &fx.events {
            self.copy.observe(ev);
        }
        for s in fx.spawns {
            if self.w.journal.error().is_some() {
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
                started_at: r.started_at.unwrap_or(self.w.clocks.wall),
                next_fire_at: s.next_fire_at,
            });
            self.w.spawned(s);
        }
    }

    fn after_turn(&mut self) {
        self.copy.observe(&Event::Heartbeat {
            seq: 0,
            at: self.w.clocks.wall,
            last_good_turn_at: None,
            running: 0,
            store_error: self.w.journal.error().map(str::to_string),
            armed: None,
            progress: vec![],
            stats: Some(WorkerStats {
                writes_held: self.w.journal.held() as u64,
                ..Default::default()
            }),
        });
    }

    /// The runner sends its finish before the loop records it.
    fn on_finish(&mut self, record: &RunRecord) {
        self.copy.observe(&Event::Finish {
            run: record.clone(),
        });
    }
}

impl World {
    fn check(&self) {
        let end_s = self.w.clocks.wall.as_second() - T0;
        let records = self.w.records();
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
        for (job, t, id) in &self.w.executed {
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
        steps in proptest::collection::vec(step(false), 1..80)
    ) {
        let mut w = World { w: Worker::new(), copy: HeldCopy::default() };
        w.start();
        for s in &steps {
            w.step(s);
        }
        w.quiesce();
        w.check();
    }
}
