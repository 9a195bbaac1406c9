//! Fires decided ahead of their time (the loop's lead, issue 18): the
//! loop's turn `LEAD` before an instant fires for that instant, and what
//! happens between that turn and the instant must neither start a run
//! before its time nor account the instant twice.

use cronwarden_shared::status::{Outcome, Trigger};
use jiff::{SignedDuration, Timestamp};

use super::{job, ts, Sim};
use crate::plan::Effects;

impl Sim {
    /// The loop's turn `ms` milliseconds before `at`, firing for `at`.
    fn lead_turn(&mut self, at: Timestamp, ms: i64) {
        self.clocks.wall = at - SignedDuration::from_millis(ms);
        let mut fx = Effects::default();
        self.plan.fire_due(at, &mut fx);
        self.apply(fx);
    }
}

/// A fire queued (ahead of its time) behind a run that ends before that
/// time starts at its time, not when the run ended.
#[test]
fn a_queued_fire_whose_run_ends_inside_the_lead_starts_at_its_time() {
    let mut sim = Sim::new(&job("j", "*/10 * * * * *", "overlap = \"queue\""));
    sim.run_until(10);
    let first = sim.child_of("j")[0];
    sim.lead_turn(ts(20), 5);
    let queued = sim.records("j").pop().unwrap();
    assert_eq!(queued.covers, vec![ts(20)]);
    sim.clocks.wall = ts(20) - SignedDuration::from_millis(3);
    sim.finish(first, Outcome::Success);
    let started = sim
        .children
        .iter()
        .find(|c| c.record.id == queued.id)
        .expect("the queued fire started");
    assert_eq!(started.record.started_at, Some(ts(20)));
    assert_eq!(started.record.trigger, Trigger::Schedule);
}

/// A reload that changes the schedule between the turn that took a fire
/// ahead and the fire's time: the new schedule, which has that time too,
/// does not fire it again.
#[test]
fn a_schedule_changed_inside_the_lead_does_not_fire_the_taken_time_again() {
    let mut sim = Sim::new(&job("j", "*/10 * * * * *", ""));
    sim.run_quick_until(15);
    sim.lead_turn(ts(20), 5);
    sim.clocks.wall = ts(20) - SignedDuration::from_millis(3);
    sim.configure(&job("j", "*/5 * * * * *", ""));
    sim.run_quick_until(26);
    assert_eq!(sim.covered("j"), [ts(10), ts(20), ts(25)]);
}

/// Beyond the lead, a queued fire's time ahead of the clock is a clock
/// stepped back: the fire starts when the run before it ends.
#[test]
fn a_queued_fire_after_a_backward_step_starts_when_the_run_before_ends() {
    let mut sim = Sim::new(&job("j", "*/10 * * * * *", "overlap = \"queue\""));
    sim.run_until(10);
    let first = sim.child_of("j")[0];
    sim.run_until(20);
    sim.step_wall(-3600);
    sim.finish(first, Outcome::Success);
    let started = sim.children.first().expect("the queued fire started");
    assert_eq!(started.record.covers, vec![ts(20)]);
    assert_eq!(started.record.started_at, Some(ts(20 - 3600)));
}

/// A worker restarted with a changed schedule after the clock was set back
/// an hour: its stored last fire, an hour ahead, is no fire decided ahead,
/// and the new schedule fires on the new clock.
#[test]
fn a_schedule_changed_after_a_backward_step_fires_on_the_new_clock() {
    let mut sim = Sim::new(&job("j", "*/10 * * * * *", ""));
    sim.run_quick_until(21);
    sim.clocks.wall -= SignedDuration::from_secs(3600);
    sim.restart_after(0, &job("j", "*/5 * * * * *", ""));
    sim.run_quick_until(21 - 3600 + 10);
    let covered = sim.covered("j");
    assert!(
        covered.contains(&ts(25 - 3600)) && covered.contains(&ts(30 - 3600)),
        "silent on the new clock: {covered:?}"
    );
}
