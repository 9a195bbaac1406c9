//! Time moving oddly, through the whole plan and a real store: wall-clock
//! steps both ways, a stored next fire off its schedule at start, and the
//! supervisor's request to re-arm a job. Expected fire times are written
//! out by hand or enumerated second by second, never computed by the
//! schedule code under test.

use std::{collections::BTreeMap, time::Duration};

use cronwarden_shared::{
    status::{ClockJumpKind, Outcome, SkipReason, Trigger},
    store::Write,
    wire::{Command, Event},
};
use jiff::Timestamp;
use proptest::prelude::*;

use super::{every, job, ts, Sim, T0};

impl Sim {
    /// Time passes normally (both clocks) straight to T0 + `to`, in one
    /// turn: what a loop asleep until the next fire sees.
    fn pass_to(&mut self, to: i64) {
        let by = ts(to).duration_since(self.clocks.wall);
        let secs = Duration::try_from(by).expect("time passes forward");
        self.clocks.wall = ts(to);
        self.clocks.mono += secs;
        self.clocks.boot += secs;
        self.turn();
    }

    fn finish_all(&mut self) {
        let ids: Vec<u64> = self.children.iter().map(|c| c.record.id).collect();
        for id in ids {
            self.finish(id, Outcome::Success);
        }
    }

    /// The armed fire of each `schedule` event, in order.
    fn armed_reports(&self, job: &str) -> Vec<Option<Timestamp>> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Schedule { jobs } => {
                    jobs.iter().find(|a| a.job == job).map(|a| a.next_fire_at)
                }
                _ => None,
            })
            .collect()
    }
}

/// Stepped back 10 minutes, a per-second job keeps firing every second on
/// the new clock (the span's seconds come a second time, as in a fold's
/// second pass), and the jump and the new arming are reported.
#[test]
fn a_per_second_job_keeps_firing_after_a_step_back() {
    let mut sim = Sim::new(&job("j", "* * * * * *", ""));
    sim.run_quick_until(620);
    sim.step_wall(-600);
    assert!(sim.events.iter().any(|e| matches!(e,
        Event::ClockJump(j) if j.kind == ClockJumpKind::Step && j.jump_ms == -600_000)));
    assert_eq!(sim.armed_reports("j").last(), Some(&Some(ts(21))));
    sim.run_quick_until(40);
    let mut expected = every(1, 1, 620);
    expected.extend(every(1, 21, 40));
    expected.sort();
    assert_eq!(sim.covered("j"), expected);
    assert!(sim.skips("j").is_empty(), "{:?}", sim.skips("j"));
    // Each fire of the second pass is a run of its own, not a catch-up.
    assert!(sim
        .records("j")
        .iter()
        .all(|r| r.trigger == Trigger::Schedule));
}

/// The same step for an every-minute job over three minutes: the minutes
/// stepped back over come again, then the schedule goes on.
#[test]
fn a_schedule_repeating_within_the_span_stepped_back_keeps_its_cadence() {
    let mut sim = Sim::new(&job("j", "* * * * *", ""));
    sim.run_quick_until(300);
    sim.step_wall(-180);
    sim.run_quick_until(480);
    let mut expected = every(60, 60, 300);
    expected.extend(every(60, 180, 480));
    expected.sort();
    assert_eq!(sim.covered("j"), expected);
}

/// A daily 12:00 job fired at 12:00; at 12:03 the clock steps back to
/// 11:55: 12:00 does not run a second time; the next day's does.
#[test]
fn a_fixed_time_fire_already_recorded_is_not_run_twice() {
    let noon = 12 * 3600;
    let mut sim = Sim::new(&job("daily", "0 0 12 * * *", ""));
    sim.pass_to(noon);
    sim.finish_all();
    sim.pass_to(noon + 180);
    sim.step_wall(-480);
    assert_eq!(sim.clocks.wall, ts(noon - 300));
    sim.pass_to(noon);
    sim.pass_to(noon + 3600);
    assert_eq!(sim.covered("daily"), [ts(noon)]);
    assert!(sim.children.is_empty());
    sim.pass_to(noon + 86_400);
    assert_eq!(sim.covered("daily"), [ts(noon), ts(noon + 86_400)]);
}

/// A forward step of two hours while a run is in progress: the run is
/// left alone (no stop is asked), and the fires the step passed over are
/// accounted by the job's policies (here a catch-up within the grace
/// would overlap the busy run: `overlap = skip` records each skipped).
#[test]
fn a_forward_step_leaves_runs_alone_and_accounts_what_it_skipped() {
    let mut sim = Sim::new(&job(
        "long",
        "*/10 * * * *",
        "timeout = \"1h\"\noverlap = \"skip\"\nmisfire_grace = \"30m\"",
    ));
    sim.pass_to(600);
    let run = sim.child_of("long");
    assert_eq!(run.len(), 1);
    sim.step_wall(7200);
    assert!(sim.stops.is_empty(), "runs were stopped: {:?}", sim.stops);
    assert_eq!(sim.child_of("long"), run);
    // Passed over: 20 min … 2 h 10 min; more than 30 min old: misfire;
    // the rest coalesced into one fire, skipped as the run is still busy.
    let skips = sim.skips("long");
    let misfires: Vec<_> = skips
        .iter()
        .filter(|(_, r)| *r == SkipReason::Misfire)
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(misfires, every(600, 1200, 5400));
    let overlap: Vec<_> = skips
        .iter()
        .filter(|(_, r)| *r == SkipReason::Overlap)
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(overlap, every(600, 6000, 7800));
    sim.finish(run[0], Outcome::Success);
    assert_eq!(sim.covered("long"), every(600, 600, 7800));
}

/// A stored next fire a day ahead (as a backward step while cronwarden
/// was stopped would leave it): at start it is corrected to the fire
/// after the last accounted one; the fires between are accounted (one
/// catch-up within the grace) and the job fires on schedule again.
#[test]
fn a_stored_next_fire_off_its_schedule_is_corrected_at_start() {
    let toml = job("j", "* * * * * *", "");
    let mut sim = Sim::new(&toml);
    sim.run_quick_until(10);
    sim.store
        .apply_overriding(&[Write::Claim {
            job: "j".into(),
            from: None,
            to: Some(ts(86_400 + 15)),
            last_scheduled_at: None,
            rearm: None,
        }])
        .unwrap();
    sim.restart_after(5, &toml);
    assert_eq!(sim.armed_reports("j").last(), Some(&Some(ts(11))));
    sim.finish_all();
    sim.run_quick_until(20);
    assert_eq!(sim.covered("j"), every(1, 1, 20));
    let catchup = sim
        .records("j")
        .into_iter()
        .find(|r| r.trigger == Trigger::Catchup)
        .expect("a catch-up");
    assert_eq!(catchup.covers, every(1, 11, 15));
    let stored: Option<Timestamp> = sim
        .store
        .jobs()
        .unwrap()
        .into_iter()
        .find(|r| r.name == "j")
        .and_then(|r| r.next_run_at);
    assert_eq!(stored, Some(ts(21)));
}

/// The supervisor asks to re-arm a job whose arming went off: it is armed
/// from its schedule, the fires the bad arming passed over are accounted
/// by the misfire rules, and its schedule is reported. A job armed right
/// is left as it is (and its schedule reported too).
#[test]
fn rearm_arms_from_the_schedule_and_accounts_what_was_passed_over() {
    let toml =
        job("off", "* * * * * *", "misfire_grace = \"3s\"") + &job("fine", "* * * * * *", "");
    let mut sim = Sim::new(&toml);
    sim.run_quick_until(10);
    // The worker's arming goes wrong (and its claim with it): a day ahead.
    sim.plan.arm("off", Some(ts(86_400)));
    sim.store
        .apply_overriding(&[Write::Claim {
            job: "off".into(),
            from: None,
            to: Some(ts(86_400)),
            last_scheduled_at: None,
            rearm: None,
        }])
        .unwrap();
    sim.run_quick_until(20);
    sim.command(Command::Rearm { job: "off".into() });
    assert_eq!(sim.armed_reports("off").last(), Some(&Some(ts(11))));
    sim.command(Command::Rearm { job: "fine".into() });
    assert_eq!(sim.armed_reports("fine").last(), Some(&Some(ts(21))));
    sim.run_quick_until(25);
    assert_eq!(sim.covered("off"), every(1, 1, 25));
    let misfires: Vec<_> = sim.skips("off").into_iter().map(|(t, _)| t).collect();
    // Dispatched at the next turn (at 21): more than 3 s old up to 17.
    assert_eq!(misfires, every(1, 11, 17));
    assert_eq!(sim.covered("fine"), every(1, 1, 25));
    // A job that is not there is answered, not a panic.
    sim.command(Command::Rearm {
        job: "ghost".into(),
    });
    assert!(sim.events.iter().any(|e| matches!(e,
        Event::CommandFailed { command, error } if command == "rearm" && error.contains("ghost"))));
}

#[derive(Debug, Clone)]
enum Move {
    /// Seconds pass, one turn each.
    Tick(u8),
    /// The wall clock is set this many seconds ahead or back (beyond the
    /// 2 s a jump needs) between two turns.
    Step(i16),
}

fn moves() -> impl Strategy<Value = Vec<Move>> {
    let step = prop_oneof![(-900i16..=-3), (3i16..=900)];
    proptest::collection::vec(
        prop_oneof![
            3 => (1u8..=30).prop_map(Move::Tick),
            1 => step.prop_map(Move::Step),
        ],
        1..12,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Against a brute-force oracle of the rule, second by second: each
    /// fire of a `*/N` job is recorded once per pass of the clock over
    /// it. Forward, every multiple of N the clock passes is recorded (by
    /// a run, a catch-up or a misfire skip); a backward step starts a
    /// second pass over the span stepped back if N repeats in it (two
    /// multiples or more between the new time and the last accounted
    /// fire), else nothing before the next fire after the last accounted
    /// one is recorded again.
    #[test]
    fn steps_both_ways_record_each_pass_once(
        period in prop::sample::select(vec![1i64, 2, 5, 10, 30]),
        moves in moves(),
    ) {
        let toml = job("j", &format!("*/{period} * * * * *"), "overlap = \"allow\"\nmisfire_grace = \"10s\"");
        let mut sim = Sim::new(&toml);
        let on = |s: i64| s.rem_euclid(period) == 0;
        // The oracle: the wall clock now, the last accounted fire, and how
        // often each second should have been recorded.
        let (mut wall, mut last): (i64, Option<i64>) = (0, None);
        let mut expected: BTreeMap<i64, u32> = BTreeMap::new();
        for m in moves {
            match m {
                Move::Tick(n) => {
                    for _ in 0..n {
                        wall += 1;
                        if on(wall) && last.is_none_or(|l| wall > l) {
                            *expected.entry(wall).or_default() += 1;
                            last = Some(wall);
                        }
                        sim.run_quick_until(wall);
                    }
                }
                Move::Step(by) => {
                    let to = wall + i64::from(by);
                    if by > 0 {
                        for s in (wall + 1)..=to {
                            if on(s) && last.is_none_or(|l| s > l) {
                                *expected.entry(s).or_default() += 1;
                                last = Some(s);
                            }
                        }
                    } else if let Some(l) = last {
                        let repeats = ((to + 1)..=l).filter(|s| on(*s)).count() >= 2;
                        if repeats {
                            // The second pass: accounted again from `to`.
                            last = Some(to - to.rem_euclid(period));
                        }
                    }
                    wall = to;
                    sim.step_wall(i64::from(by));
                    sim.finish_all();
                }
            }
        }
        let mut got: BTreeMap<i64, u32> = BTreeMap::new();
        for t in sim.covered("j") {
            *got.entry(t.as_second() - T0).or_default() += 1;
        }
        prop_assert_eq!(got, expected);
        // A fire not yet accounted is never armed past: the next armed is
        // the first multiple after the last accounted fire (or now).
        let armed = sim.plan.jobs["j"].next.unwrap().as_second() - T0;
        let from = last.unwrap_or(wall);
        prop_assert_eq!(armed, ((from + 1)..).find(|s| on(*s)).unwrap());
    }
}
