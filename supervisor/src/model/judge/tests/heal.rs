//! Detection leads to healing: a job misarmed for longer than
//! `MISARMED_AFTER` is re-armed once per episode; still misarmed
//! `REARM_WAIT` after that, the worker is replaced. A clock jump re-bases
//! our expectations on the worker's arming as of the jump.

use cronwarden_shared::status::{ClockJump, ClockJumpKind};

use super::*;

fn armed(at: &str) -> Event {
    Event::Schedule {
        jobs: vec![Armed {
            job: "a".into(),
            next_fire_at: Some(ts(at)),
            paused: false,
        }],
    }
}

fn rearms(e: &Evaluation) -> usize {
    e.actions
        .iter()
        .filter(|a| matches!(a, Action::Rearm { job } if job == "a"))
        .count()
}

fn replaced(e: &Evaluation) -> Option<Replace> {
    e.actions.iter().find_map(|a| match a {
        Action::ReplaceWorker { pid: 10, why } => Some(*why),
        _ => None,
    })
}

#[test]
fn a_misarmed_job_is_rearmed_once_then_its_worker_replaced_if_it_persists() {
    let mut s = Sim::new();
    s.up(10);
    s.apply(armed("2026-12-03T10:05:00Z"));
    s.evaluate();
    s.at(secs(3.0)).beat(2);
    assert_eq!(rearms(&s.evaluate()), 0);
    s.at(secs(3.001));
    let e = s.evaluate();
    assert_eq!(rearms(&e), 1);
    assert_eq!(replaced(&e), None);
    // Asked once per episode, and the worker has 10 s to heal it.
    for t in [4.0, 8.0, 13.001] {
        s.tick_to(secs(t));
        s.at(secs(t)).beat(t as u64);
        let e = s.evaluate();
        assert_eq!((rearms(&e), replaced(&e)), (0, None), "at {t}s");
    }
    s.at(secs(13.002)).beat(14);
    let e = s.evaluate();
    assert_eq!(replaced(&e), Some(Replace::Misarmed { for_: secs(13.002) }));
    assert!(Replace::Misarmed { for_: secs(13.0) }
        .because()
        .contains("disagreed with the schedule for 13s"));
    // Decided once: the worker is being replaced.
    s.at(secs(14.0));
    assert_eq!(replaced(&s.evaluate()), None);
}

#[test]
fn a_rearm_that_heals_ends_the_episode() {
    let mut s = Sim::new();
    s.up(10);
    s.apply(armed("2026-12-03T10:05:00Z"));
    s.evaluate();
    s.tick_to(secs(3.5));
    s.at(secs(3.5)).beat(3);
    assert_eq!(rearms(&s.evaluate()), 1);
    // The worker re-armed it from its schedule.
    s.at(secs(4.0)).apply(armed("2026-12-03T10:01:00Z"));
    s.evaluate();
    assert_eq!(s.m.jobs["a"].rearm_sent, None);
    s.tick_to(secs(20.0));
    s.at(secs(20.0)).beat(3);
    let e = s.evaluate();
    assert_eq!((rearms(&e), replaced(&e)), (0, None));
    // A new disagreement is a new episode: re-armed again, not replaced.
    s.apply(armed("2026-12-03T10:07:00Z"));
    s.evaluate();
    s.tick_to(secs(23.5));
    s.at(secs(23.5));
    let e = s.evaluate();
    assert_eq!((rearms(&e), replaced(&e)), (1, None));
}

/// The wall clock steps back 10 minutes; the worker reports the jump and
/// its arming on the new clock (a second pass): our expectation follows,
/// so nothing is misarmed, re-armed or replaced.
#[test]
fn a_step_back_rebases_the_expectation_on_the_workers_arming() {
    let mut s = Sim::with(
        "[watchdog]\nheartbeat_interval = \"1s\"\nstall_after = \"4s\"\n\
         [[job]]\nname = \"a\"\nschedule = \"* * * * * *\"\nshell = \"true\"\n",
    );
    s.up(10);
    s.apply(armed("2026-12-03T10:00:01Z"));
    s.at(secs(0.5)).evaluate();
    s.step_wall(jiff::SignedDuration::from_mins(-10));
    s.apply(Event::ClockJump(ClockJump {
        at: ts("2026-12-03T09:50:00.5Z"),
        jump_ms: -600_000,
        jobs_due: 0,
        fires_due: 0,
        kind: ClockJumpKind::Step,
    }));
    s.apply(armed("2026-12-03T09:50:01Z"));
    assert_eq!(
        s.m.jobs["a"].expected_next,
        Some(ts("2026-12-03T09:50:01Z"))
    );
    // A worker arming a day ahead at the jump is not believed.
    let mut t = Sim::new();
    t.up(10);
    t.apply(Event::ClockJump(ClockJump {
        at: ts("2026-12-03T10:00:00Z"),
        jump_ms: -600_000,
        jobs_due: 0,
        fires_due: 0,
        kind: ClockJumpKind::Step,
    }));
    t.apply(armed("2026-12-04T10:01:00Z"));
    assert_eq!(
        t.m.jobs["a"].expected_next,
        Some(ts("2026-12-03T10:01:00Z"))
    );
    for i in 1..=15u64 {
        s.at(secs(0.5 + i as f64)).beat(i + 1);
        let e = s.evaluate();
        assert_eq!((rearms(&e), replaced(&e)), (0, None), "at {i}s");
        assert!(!kinds(&s.judge()).contains(&AlertKind::JobMisarmed));
    }
}
