//! The plan driven step by step, in the manner of watchexec's supervisor
//! `job/test.rs`: a fake clock (advanced by hand, no sleeps) and fake
//! children (a spawned run exists only as its record until the test
//! feeds "run finished"). The plan's writes go to a real store in a
//! temporary directory, so what is asserted is what `cronwarden runs`
//! shows; expected fire times are written out by hand, never computed by
//! the schedule code under test.

use std::{path::Path, time::Duration};

use cronwarden_shared::{
    config::Config,
    status::{ClockJumpKind, Outcome, RunRecord, SkipReason, Trigger},
    store::{Store, Write},
    wire::{Command, Event},
};
use jiff::{SignedDuration, Timestamp};

use super::{wanted_rows, Effects, Plan, Spawn};
use crate::{clock::Clocks, runner::StopReason};

/// Fires claimed ahead (several hosts).
mod ahead;
/// Clock steps, stored fires off their schedule, re-arming on request.
mod clock;
/// Fires decided ahead of their time (the loop's lead).
mod lead;

/// 2030-01-01T00:00:00Z: a whole minute, far from any DST question (UTC).
const T0: i64 = 1_893_456_000;

fn ts(secs_after_t0: i64) -> Timestamp {
    Timestamp::from_second(T0 + secs_after_t0).unwrap()
}

/// Every `step` seconds from `from` to `to` (both included), after T0.
fn every(step: i64, from: i64, to: i64) -> Vec<Timestamp> {
    (from..=to).step_by(step as usize).map(ts).collect()
}

struct Sim {
    plan: Plan,
    store: Store,
    _dir: tempfile::TempDir,
    clocks: Clocks,
    /// Runs spawned and not yet finished: the fake children.
    children: Vec<Spawn>,
    /// Every event and stop request, in order.
    events: Vec<Event>,
    stops: Vec<(u64, StopReason)>,
}

fn config(toml: &str) -> Config {
    Config::parse(Path::new("/nonexistent/cronwarden.toml"), toml)
        .unwrap_or_else(|e| panic!("test config refused: {e}"))
}

impl Sim {
    /// A fresh worker at T0 on an empty store.
    fn new(toml: &str) -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let mut sim = Sim {
            plan: Plan::new(1, 0),
            store,
            _dir: dir,
            clocks: Clocks {
                wall: ts(0),
                mono: Duration::from_secs(1000),
                boot: Duration::from_secs(1000),
            },
            children: vec![],
            events: vec![],
            stops: vec![],
        };
        sim.configure(toml);
        sim.turn();
        sim
    }

    /// The worker dies (its runs with it) and a new one starts `down` seconds
    /// later on the same store, with `toml`.
    fn restart_after(&mut self, down: i64, toml: &str) {
        self.children.clear();
        self.clocks.wall += SignedDuration::from_secs(down);
        self.clocks.mono += Duration::from_secs(down as u64);
        self.clocks.boot += Duration::from_secs(down as u64);
        self.store.recover_lost().unwrap();
        let first = self.store.first_free_run_id().unwrap();
        let reserved = super::reserve_at_start(first);
        self.store
            .apply(&[Write::ReserveIds { upto: reserved }])
            .unwrap();
        self.plan = Plan::new(first, reserved);
        self.configure(toml);
        self.turn();
    }

    /// A configure or reload, reconciled by the real store as the loop does.
    fn configure(&mut self, toml: &str) {
        let config = config(toml);
        let rows = self
            .store
            .reconcile(&wanted_rows(&config, self.clocks.wall))
            .unwrap();
        let mut fx = Effects::default();
        self.plan
            .configure(&config, rows, self.clocks.wall, &mut fx);
        self.apply(fx);
    }

    fn apply(&mut self, fx: Effects) {
        self.plan.check_starts();
        assert!(
            self.store.apply(&fx.writes).unwrap(),
            "a claim did not follow the stored next fire: {:?}",
            fx.writes
        );
        self.events.extend(fx.events);
        self.stops.extend(fx.stops);
        self.children.extend(fx.spawns);
    }

    /// One loop turn at the current clocks.
    fn turn(&mut self) {
        let mut fx = Effects::default();
        self.plan.observe_clocks(self.clocks, &mut fx);
        self.plan.fire_due(self.clocks.wall, &mut fx);
        self.apply(fx);
    }

    /// Time passes normally, one turn per second, up to T0 + `to`.
    fn run_until(&mut self, to: i64) {
        while self.clocks.wall < ts(to) {
            self.clocks.wall += SignedDuration::from_secs(1);
            self.clocks.mono += Duration::from_secs(1);
            self.clocks.boot += Duration::from_secs(1);
            self.turn();
        }
    }

    /// As [`Sim::run_until`], every run ending within the second it started.
    fn run_quick_until(&mut self, to: i64) {
        while self.clocks.wall < ts(to) {
            self.run_until((self.clocks.wall.as_second() - T0) + 1);
            for id in self
                .children
                .iter()
                .map(|c| c.record.id)
                .collect::<Vec<_>>()
            {
                self.finish(id, Outcome::Success);
            }
        }
    }

    /// The wall clock is set `by` seconds ahead (or back), and a turn
    /// follows at once (no time passes on the monotonic clocks).
    fn step_wall(&mut self, by: i64) {
        self.clocks.wall += SignedDuration::from_secs(by);
        self.turn();
    }

    fn command(&mut self, cmd: Command) {
        let mut fx = Effects::default();
        self.plan.command(cmd, self.clocks.wall, &mut fx);
        self.apply(fx);
    }

    /// The fake child of `run_id` exits with `outcome`: the record the
    /// runner would hand back is the spawned one, completed.
    fn finish(&mut self, run_id: u64, outcome: Outcome) {
        let i = self
            .children
            .iter()
            .position(|c| c.record.id == run_id)
            .unwrap_or_else(|| panic!("run {run_id} is not running"));
        let mut record = self.children.remove(i).record;
        record.finished_at = Some(self.clocks.wall);
        record.outcome = outcome;
        record.exit_code = (outcome == Outcome::Success).then_some(0);
        let mut fx = Effects::default();
        self.plan.finished(record, self.clocks.wall, &mut fx);
        self.apply(fx);
    }

    fn child_of(&self, job: &str) -> Vec<u64> {
        self.children
            .iter()
            .filter(|c| c.record.job == job)
            .map(|c| c.record.id)
            .collect()
    }

    /// The job's records as the store holds them, oldest first.
    fn records(&self, job: &str) -> Vec<RunRecord> {
        let mut r = self.store.runs(job, 100_000).unwrap();
        r.reverse();
        r
    }

    /// Every covered fire time of the job's records, sorted.
    fn covered(&self, job: &str) -> Vec<Timestamp> {
        let mut c: Vec<_> = self
            .records(job)
            .iter()
            .flat_map(|r| r.covers.clone())
            .collect();
        c.sort();
        c
    }

    fn skips(&self, job: &str) -> Vec<(Timestamp, SkipReason)> {
        self.records(job)
            .iter()
            .filter_map(|r| Some((r.scheduled_at?, r.skip_reason?)))
            .collect()
    }

    /// The replies to requests, in order: (request, ok, error, run id).
    fn replies(&self) -> Vec<(u64, bool, Option<String>, Option<u64>)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Reply {
                    request,
                    ok,
                    error,
                    run_id,
                } => Some((*request, *ok, error.clone(), *run_id)),
                _ => None,
            })
            .collect()
    }
}

fn job(name: &str, schedule: &str, extra: &str) -> String {
    format!("[[job]]\nname = \"{name}\"\nschedule = \"{schedule}\"\nshell = \"true\"\n{extra}\n")
}

/// The central invariant over a long, busy stretch: with runs that outlast
/// their interval (so overlap decides), every scheduled time of every job
/// is covered by exactly one record.
#[test]
fn every_due_fire_ends_in_exactly_one_record() {
    let toml = [
        job("skip", "*/10 * * * * *", "overlap = \"skip\""),
        job("queue", "*/10 * * * * *", "overlap = \"queue\""),
        job("replace", "*/10 * * * * *", "overlap = \"replace\""),
        job("allow", "*/10 * * * * *", "overlap = \"allow\""),
    ]
    .concat();
    let mut sim = Sim::new(&toml);
    for t in 1..=600 {
        sim.run_until(t);
        // Each run takes 25 s; a replaced one ends when asked to.
        let now = sim.clocks.wall;
        let done: Vec<u64> = sim
            .children
            .iter()
            .filter(|c| {
                let started = c.record.started_at.unwrap();
                now.duration_since(started) >= SignedDuration::from_secs(25)
                    || sim.stops.iter().any(|(id, _)| *id == c.record.id)
            })
            .map(|c| c.record.id)
            .collect();
        for id in done {
            let killed = sim.stops.iter().any(|(s, _)| *s == id);
            sim.finish(
                id,
                if killed {
                    Outcome::Killed
                } else {
                    Outcome::Success
                },
            );
        }
    }
    // Let the last runs end and the queue drain, without new fires
    // counted: everything up to T0+600 must be accounted for.
    let expected = every(10, 10, 600);
    for name in ["skip", "queue", "replace", "allow"] {
        let covered: Vec<_> = sim
            .covered(name)
            .into_iter()
            .filter(|t| *t <= ts(600))
            .collect();
        assert_eq!(covered, expected, "{name}: {:#?}", sim.records(name));
        // No record is left in flight for nothing: a `running` one is a
        // run in progress, or the one fire waiting in the queue.
        let live: Vec<u64> = sim.child_of(name);
        let in_flight: Vec<_> = sim
            .records(name)
            .into_iter()
            .filter(|r| r.outcome == Outcome::Running && !live.contains(&r.id))
            .collect();
        assert!(
            in_flight.len() <= usize::from(name == "queue")
                && in_flight.iter().all(|r| r.started_at.is_none()),
            "{name}: {in_flight:#?}"
        );
    }
    // And each policy did what it says.
    assert!(sim
        .skips("skip")
        .iter()
        .all(|(_, r)| *r == SkipReason::Overlap));
    assert!(!sim.skips("skip").is_empty());
    assert!(sim.skips("replace").is_empty() && sim.skips("allow").is_empty());
}

#[test]
fn overlap_skip_records_the_busy_run() {
    let mut sim = Sim::new(&job("j", "*/10 * * * * *", "overlap = \"skip\""));
    sim.run_until(10);
    let [busy] = sim.child_of("j")[..] else {
        panic!("one run expected")
    };
    sim.run_until(20);
    assert_eq!(sim.child_of("j"), [busy], "no second run while busy");
    let skipped = sim.records("j").pop().unwrap();
    assert_eq!(skipped.outcome, Outcome::Skipped);
    assert_eq!(skipped.skip_reason, Some(SkipReason::Overlap));
    assert_eq!(skipped.scheduled_at, Some(ts(20)));
    assert_eq!(
        skipped.error.as_deref(),
        Some(&*format!("run {busy} was still running"))
    );
    assert!(sim.events.iter().any(|e| matches!(e,
        Event::Skip { busy_run_id: Some(b), scheduled_at, next_fire_at, .. }
            if *b == busy && *scheduled_at == ts(20) && *next_fire_at == Some(ts(30)))));
    // Released: the next fire runs.
    sim.finish(busy, Outcome::Success);
    sim.run_until(30);
    assert_eq!(sim.child_of("j").len(), 1);
}

#[test]
fn overlap_queue_keeps_one_fire_and_starts_it_when_the_run_ends() {
    let mut sim = Sim::new(&job("j", "*/10 * * * * *", "overlap = \"queue\""));
    sim.run_until(10);
    let first = sim.child_of("j")[0];
    sim.run_until(20);
    // Queued: recorded in flight, not started.
    assert_eq!(sim.child_of("j"), [first]);
    let queued = sim.records("j").pop().unwrap();
    assert_eq!(
        (queued.outcome, queued.started_at, queued.covers.clone()),
        (Outcome::Running, None, vec![ts(20)])
    );
    sim.run_until(30);
    // A second fire while one waits: skipped, not queued.
    assert_eq!(sim.skips("j"), [(ts(30), SkipReason::Overlap)]);
    sim.run_until(35);
    sim.finish(first, Outcome::Success);
    // The queued fire starts now, under the id it was queued with.
    assert_eq!(sim.child_of("j"), [queued.id]);
    let started = sim
        .records("j")
        .into_iter()
        .find(|r| r.id == queued.id)
        .unwrap();
    assert_eq!(started.started_at, Some(ts(35)));
    assert_eq!(started.trigger, Trigger::Schedule);
}

#[test]
fn overlap_replace_stops_the_running_one_and_starts_anew() {
    let mut sim = Sim::new(&job("j", "*/10 * * * * *", "overlap = \"replace\""));
    sim.run_until(10);
    let old = sim.child_of("j")[0];
    sim.run_until(20);
    assert_eq!(sim.stops, [(old, StopReason::Killed)]);
    let new: Vec<_> = sim
        .child_of("j")
        .into_iter()
        .filter(|id| *id != old)
        .collect();
    assert_eq!(new.len(), 1, "the new run starts at once");
    assert!(sim.skips("j").is_empty());
}

#[test]
fn overlap_allow_runs_side_by_side() {
    let mut sim = Sim::new(&job("j", "*/10 * * * * *", "overlap = \"allow\""));
    sim.run_until(30);
    assert_eq!(sim.child_of("j").len(), 3);
    assert!(sim.stops.is_empty() && sim.skips("j").is_empty());
}

/// A run is one record from start to finish: the id and `started_at` the
/// plan gave it are the ones stored when it ends.
#[test]
fn a_run_keeps_one_record_from_start_to_finish() {
    let mut sim = Sim::new(&job("j", "*/10 * * * * *", ""));
    sim.run_until(10);
    let id = sim.child_of("j")[0];
    let at_start = sim.records("j");
    assert_eq!(at_start.len(), 1);
    assert_eq!(
        (at_start[0].outcome, at_start[0].started_at),
        (Outcome::Running, Some(ts(10)))
    );
    sim.run_until(13);
    sim.finish(id, Outcome::Success);
    let at_end = sim.records("j");
    assert_eq!(at_end.len(), 1);
    assert_eq!(at_end[0].id, id);
    assert_eq!(at_end[0].started_at, Some(ts(10)));
    assert_eq!(at_end[0].finished_at, Some(ts(13)));
    assert_eq!(at_end[0].outcome, Outcome::Success);
}

/// Downtime: fires younger than the misfire grace are coalesced into one
/// catch-up run covering them all; older ones are skipped as `misfire`.
/// The boundary is inclusive: a fire exactly `grace` old still runs.
#[test]
fn missed_fires_are_coalesced_within_the_grace_and_skipped_beyond() {
    let toml = job("j", "*/10 * * * *", "misfire_grace = \"1h\"");
    let mut sim = Sim::new(&toml);
    // Down from T0 to T0+2h: the fires at 10, 20, … 120 min are missed.
    sim.restart_after(7200, &toml);
    let expected_skips: Vec<_> = every(600, 600, 3000)
        .into_iter()
        .map(|t| (t, SkipReason::Misfire))
        .collect();
    assert_eq!(sim.skips("j"), expected_skips);
    let runs: Vec<_> = sim
        .records("j")
        .into_iter()
        .filter(|r| r.skip_reason.is_none())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0].trigger, Trigger::Catchup);
    assert_eq!(runs[0].covers, every(600, 3600, 7200));
    assert_eq!(runs[0].scheduled_at, Some(ts(7200)));
    // And the next fire is the next one on the schedule, not a repeat.
    sim.finish(runs[0].id, Outcome::Success);
    sim.run_until(7800);
    assert_eq!(sim.covered("j"), every(600, 600, 7800));
}

#[test]
fn pause_skips_with_reason_paused_and_resume_fires_again() {
    let mut sim = Sim::new(&job("j", "*/10 * * * * *", ""));
    sim.command(Command::Pause {
        job: "j".into(),
        request: Some(7),
    });
    assert_eq!(sim.replies(), [(7, true, None, None)]);
    assert!(sim.events.iter().any(|e| matches!(e,
        Event::Schedule { jobs } if jobs.iter().any(|a| a.job == "j" && a.paused))));
    sim.run_until(25);
    assert!(sim.children.is_empty());
    assert_eq!(
        sim.skips("j"),
        [(ts(10), SkipReason::Paused), (ts(20), SkipReason::Paused)]
    );
    // The pause is stored: a restarted worker stays paused.
    assert!(sim.store.jobs().unwrap()[0].paused);
    sim.command(Command::Resume {
        job: "j".into(),
        request: None,
    });
    sim.run_until(30);
    assert_eq!(sim.child_of("j").len(), 1);
    assert_eq!(sim.covered("j"), every(10, 10, 30));
    // An unknown job is an error, answered.
    sim.command(Command::Pause {
        job: "nope".into(),
        request: Some(8),
    });
    let (_, ok, error, _) = sim.replies().pop().unwrap();
    assert!(!ok && error.unwrap().contains("no job named \"nope\""));
}

#[test]
fn trigger_runs_now_and_is_refused_while_a_run_is_busy() {
    let toml = job("j", "0 0 1 1 *", "") + &job("both", "0 0 1 1 *", "overlap = \"allow\"");
    let mut sim = Sim::new(&toml);
    sim.run_until(5);
    sim.command(Command::Trigger {
        job: "j".into(),
        request: Some(1),
    });
    let [id] = sim.child_of("j")[..] else {
        panic!("a manual run expected")
    };
    assert_eq!(sim.replies(), [(1, true, None, Some(id))]);
    let rec = &sim.records("j")[0];
    assert_eq!(
        (
            rec.trigger,
            rec.covers.clone(),
            rec.scheduled_at,
            rec.started_at
        ),
        (Trigger::Manual, vec![], None, Some(ts(5)))
    );
    sim.command(Command::Trigger {
        job: "j".into(),
        request: Some(2),
    });
    let (_, ok, error, run) = sim.replies().pop().unwrap();
    assert!(!ok && run.is_none());
    assert!(
        error.as_deref().unwrap().contains("is still running"),
        "{error:?}"
    );
    assert_eq!(sim.child_of("j"), [id], "nothing started");
    // `overlap = allow` lets a manual run start beside a busy one.
    for request in [3, 4] {
        sim.command(Command::Trigger {
            job: "both".into(),
            request: Some(request),
        });
    }
    assert_eq!(sim.child_of("both").len(), 2);
}

#[test]
fn reload_removing_a_job_ends_its_fires_but_not_its_run() {
    let a = job("a", "*/10 * * * * *", "");
    let b = job("b", "*/10 * * * * *", "");
    let mut sim = Sim::new(&(a.clone() + &b));
    sim.run_until(10);
    let b_run = sim.child_of("b")[0];
    sim.configure(&a);
    assert!(sim.stops.is_empty(), "a removed job's run is not killed");
    sim.run_until(40);
    assert_eq!(sim.covered("b"), [ts(10)], "b never fires again");
    assert_eq!(sim.covered("a"), every(10, 10, 40));
    // Its run still ends in its record.
    sim.finish(b_run, Outcome::Success);
    assert_eq!(sim.records("b")[0].outcome, Outcome::Success);
    assert!(sim.store.jobs().unwrap().iter().all(|r| r.name != "b"));
}

#[test]
fn reload_changing_a_schedule_rearms_the_job_from_now() {
    let mut sim = Sim::new(&job("j", "*/10 * * * * *", ""));
    sim.run_until(15);
    sim.configure(&job("j", "*/7 * * * * *", ""));
    sim.run_until(35);
    // 10 under the old schedule; then 21, 28, 35 (0, 7, 14 … in each
    // minute); the old 20 and 30 never fire.
    assert_eq!(sim.covered("j"), [ts(10), ts(21), ts(28), ts(35)]);
}

/// The wall clock set forward 30 minutes while one second passed: the
/// jump is reported as a step, and the fires it skipped over go through
/// the misfire rules (coalesced within the grace, skipped beyond).
#[test]
fn a_forward_clock_step_is_reported_and_its_fires_handled_as_misfires() {
    let mut sim = Sim::new(&job("j", "* * * * *", "misfire_grace = \"10m\""));
    sim.step_wall(1800);
    let jump = sim
        .events
        .iter()
        .find_map(|e| match e {
            Event::ClockJump(j) => Some(j.clone()),
            _ => None,
        })
        .expect("a clock_jump event");
    assert_eq!(jump.kind, ClockJumpKind::Step);
    assert_eq!(jump.jump_ms, 1_800_000);
    assert_eq!((jump.jobs_due, jump.fires_due), (1, 30));
    // Now T0+30min: the fires at 1…19 min are older than 10 min; the one
    // at 20 min is exactly that old and still runs.
    let expected_skips: Vec<_> = every(60, 60, 1140)
        .into_iter()
        .map(|t| (t, SkipReason::Misfire))
        .collect();
    assert_eq!(sim.skips("j"), expected_skips);
    let run = sim.records("j").pop().unwrap();
    assert_eq!(run.trigger, Trigger::Catchup);
    assert_eq!(run.covers, every(60, 1200, 1800));
}

/// Several jobs with catch-up runs after a forward step start spread out
/// (at most 50 ms apart), not all in the same millisecond.
#[test]
fn catch_up_runs_after_a_forward_step_are_spread() {
    let toml = job("a", "* * * * *", "") + &job("b", "* * * * *", "");
    let mut sim = Sim::new(&toml);
    sim.step_wall(300);
    let mut delays: Vec<_> = sim.children.iter().map(|c| c.delay).collect();
    delays.sort();
    assert_eq!(delays, [Duration::ZERO, Duration::from_millis(50)]);
    // Each run's one record starts when the run is to start.
    let mut starts: Vec<_> = ["a", "b"]
        .iter()
        .map(|j| sim.records(j)[0].started_at.unwrap())
        .collect();
    starts.sort();
    assert_eq!(starts, [ts(300), ts(300) + SignedDuration::from_millis(50)]);
}

/// At shutdown every run is asked to stop, and a fire still queued is
/// recorded `worker_down` rather than left in flight.
#[test]
fn shutdown_stops_runs_and_records_queued_fires_as_worker_down() {
    let mut sim = Sim::new(&job("j", "*/10 * * * * *", "overlap = \"queue\""));
    sim.run_until(20);
    let running = sim.child_of("j")[0];
    let mut fx = Effects::default();
    let n = sim.plan.shutdown(sim.clocks.wall, &mut fx);
    sim.apply(fx);
    assert_eq!(n, 1);
    assert_eq!(sim.stops, [(running, StopReason::Shutdown)]);
    assert_eq!(sim.skips("j"), [(ts(20), SkipReason::WorkerDown)]);
}

/// Issue 14 item 4: a queued fire of a job a reload removes stayed
/// `running` forever, then became `lost` ("the worker died while the run
/// was in flight"). It is a skip, reason `removed`, at once.
#[test]
fn reload_removing_a_job_records_its_queued_fire_as_removed() {
    let a = job("a", "*/10 * * * * *", "");
    let q = job("q", "*/10 * * * * *", "overlap = \"queue\"");
    let mut sim = Sim::new(&(a.clone() + &q));
    sim.run_until(20);
    let busy = sim.child_of("q")[0];
    let queued = sim.records("q").pop().unwrap();
    assert_eq!(queued.outcome, Outcome::Running);
    sim.configure(&a);
    let rec = sim
        .records("q")
        .into_iter()
        .find(|r| r.id == queued.id)
        .unwrap();
    assert_eq!(
        (rec.outcome, rec.skip_reason, rec.covers.clone()),
        (Outcome::Skipped, Some(SkipReason::Removed), vec![ts(20)])
    );
    assert!(rec.error.unwrap().contains(&format!("run {busy}")));
    assert!(sim.events.iter().any(|e| matches!(e,
        Event::Skip { run_id, reason: SkipReason::Removed, .. } if *run_id == queued.id)));
    // The busy run still finishes, and nothing queued starts after it.
    sim.finish(busy, Outcome::Success);
    assert!(sim.child_of("q").is_empty());
    // A restart finds nothing in flight to call lost.
    let lost = sim.store.recover_lost().unwrap();
    assert!(lost.iter().all(|r| r.job != "q"), "{lost:?}");
}

/// Issue 14 item 7: a schedule changed across downtime dropped the fires
/// the old schedule missed. They are accounted under the old schedule
/// (here within the grace: one catch-up run), then the new one is armed.
#[test]
fn a_schedule_change_across_downtime_accounts_the_old_schedules_fires() {
    let mut sim = Sim::new(&job("j", "*/10 * * * * *", "misfire_grace = \"1m\""));
    sim.run_quick_until(15);
    // Down from 15 to 45; it comes back with another schedule.
    sim.restart_after(30, &job("j", "*/7 * * * * *", "misfire_grace = \"1m\""));
    let catchup = sim.records("j").pop().unwrap();
    assert_eq!(catchup.covers, [ts(20), ts(30), ts(40)]);
    assert_eq!(catchup.trigger, Trigger::Catchup);
    let row = sim.store.jobs().unwrap().pop().unwrap();
    assert_eq!(row.schedule, "*/7 * * * * *");
    assert_eq!(row.next_run_at, Some(ts(49)));
    for id in sim.child_of("j") {
        sim.finish(id, Outcome::Success);
    }
    sim.run_quick_until(60);
    assert_eq!(
        sim.covered("j"),
        [ts(10), ts(20), ts(30), ts(40), ts(49), ts(56), ts(60)]
    );
}

/// The same beyond the grace: each missed old fire is a misfire skip, and
/// a zone change counts as a schedule change.
#[test]
fn a_zone_change_across_downtime_skips_old_fires_beyond_the_grace() {
    let mut sim = Sim::new(&job("j", "*/10 * * * * *", "misfire_grace = \"5s\""));
    sim.run_quick_until(5);
    sim.restart_after(
        30,
        &job(
            "j",
            "*/10 * * * * *",
            "misfire_grace = \"5s\"\ntimezone = \"Europe/Berlin\"",
        ),
    );
    assert_eq!(
        sim.skips("j"),
        [(ts(10), SkipReason::Misfire), (ts(20), SkipReason::Misfire)]
    );
    // 30 is within the grace at 35: one run.
    assert_eq!(sim.records("j").pop().unwrap().covers, [ts(30)]);
    assert_eq!(sim.store.jobs().unwrap()[0].timezone, "Europe/Berlin");
}

/// Issue 14 item 1: after writes that never reached the store and a
/// worker death, the next worker reused a run id. Ids come from a
/// reservation committed with (or before) the records that use them.
#[test]
fn a_restarted_worker_never_reuses_an_id_its_predecessor_handed_out() {
    let mut sim = Sim::new(&job("j", "*/10 * * * * *", ""));
    sim.run_quick_until(10);
    // The next fires are planned but their writes never reach the store.
    let mut lost_ids = vec![];
    for t in [20, 30] {
        sim.clocks.wall = ts(t);
        let mut fx = Effects::default();
        sim.plan.fire_due(sim.clocks.wall, &mut fx);
        lost_ids.extend(fx.writes.iter().filter_map(|w| match w {
            Write::Insert(r) => Some(r.id),
            _ => None,
        }));
    }
    assert_eq!(lost_ids.len(), 2, "a run and an overlap skip");
    sim.restart_after(1, &job("j", "*/10 * * * * *", ""));
    let first = sim.store.first_free_run_id().unwrap();
    assert!(
        lost_ids.iter().all(|id| *id < first),
        "{lost_ids:?} vs {first}"
    );
    sim.run_quick_until(60);
    let records = sim.records("j");
    assert!(records.len() > 2);
    assert!(records.iter().all(|r| !lost_ids.contains(&r.id)));
}

/// A removed job's run in progress is still the worker's: a shutdown
/// stops it (else its record stays `running`, then `lost` "the worker died
/// while the run was in flight"), and its record is written when it ends.
#[test]
fn a_removed_jobs_run_is_stopped_at_shutdown_and_recorded() {
    let a = job("a", "*/10 * * * * *", "");
    let b = job("b", "*/10 * * * * *", "");
    let mut sim = Sim::new(&(a.clone() + &b));
    sim.run_until(10);
    let b_run = sim.child_of("b")[0];
    sim.configure(&a);
    assert!(sim.plan.running().any(|id| id == b_run));
    let mut fx = Effects::default();
    sim.plan.shutdown(sim.clocks.wall, &mut fx);
    assert!(fx
        .stops
        .iter()
        .any(|(id, r)| *id == b_run && *r == StopReason::Shutdown));
    sim.apply(fx);
    sim.finish(b_run, Outcome::Killed);
    assert!(sim.plan.running().all(|id| id != b_run));
    assert_eq!(sim.records("b")[0].outcome, Outcome::Killed);
}

/// A store recreated under a running worker gets the plan back: rows and
/// armed fires, the id reservation, the queued fire's record.
#[test]
fn restore_writes_the_plan_back_into_an_empty_store() {
    let mut sim = Sim::new(&job("q", "*/10 * * * * *", "overlap = \"queue\""));
    sim.run_until(20);
    let queued = sim.records("q").pop().unwrap();
    let (rows, writes) = sim.plan.restore();
    let dir = tempfile::tempdir().unwrap();
    let mut fresh = Store::open(&dir.path().join("new.db")).unwrap();
    fresh.reconcile(&rows).unwrap();
    fresh.apply_overriding(&writes).unwrap();
    let row = fresh.jobs().unwrap().pop().unwrap();
    assert_eq!(row.next_run_at, Some(ts(30)));
    assert_eq!(row.schedule, "*/10 * * * * *");
    let rec = fresh.runs("q", 10).unwrap();
    assert_eq!(rec.len(), 1);
    assert_eq!((rec[0].id, rec[0].outcome), (queued.id, Outcome::Running));
    assert!(fresh.first_free_run_id().unwrap() > super::RESERVE_AHEAD);
}
