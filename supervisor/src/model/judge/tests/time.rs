//! Time: wall-clock steps both ways between the worker's lines, a
//! restart's lateness counted from what the new worker accounts, and the
//! supervisor's own pause discounted from lateness.

use super::*;

#[test]
fn a_forward_wall_clock_step_of_2h_kills_no_run_with_a_1h_timeout() {
    let mut s = Sim::new();
    s.up(10).fire(1, "2026-12-03T10:01:00Z", 4711);
    // Job `a`: timeout 5s, kill_grace 1s, margin 10s: killed 16s after we
    // saw it start, by the monotonic clock, whatever the wall clock says.
    s.step_wall(jiff::SignedDuration::from_hours(2));
    s.at(secs(1.0)).beat(2);
    assert_eq!(s.evaluate().actions, []);
    s.at(secs(15.9)).beat(3);
    assert_eq!(s.evaluate().actions, []);
    s.at(secs(16.1)).beat(4);
    assert_eq!(
        s.evaluate().actions,
        [Action::KillRun {
            job: "a".into(),
            run_id: 1,
            pgid: 4711
        }]
    );
}

#[test]
fn a_backward_wall_clock_step_does_not_spare_a_run_its_bound() {
    let mut s = Sim::new();
    s.up(10).fire(1, "2026-12-03T10:01:00Z", 4711);
    s.step_wall(-jiff::SignedDuration::from_hours(1));
    s.at(secs(16.1)).beat(2);
    assert_eq!(
        s.evaluate().actions,
        [Action::KillRun {
            job: "a".into(),
            run_id: 1,
            pgid: 4711
        }]
    );
}

#[test]
fn a_wall_clock_step_between_a_good_turn_and_its_heartbeat_is_not_failing() {
    let mut s = Sim::new();
    s.up(10);
    s.at(secs(1.0));
    let before_step = s.wall();
    s.step_wall(jiff::SignedDuration::from_hours(2));
    // The turn was stamped just before the step, its heartbeat just after:
    // by the worker's wall clock the turn is 2h old; it is 1s at most.
    s.beat_with(2, Some(before_step), None, None);
    assert_eq!(found(&s.judge()), []);
    assert!(s.m.worker.last_good_turn.unwrap() >= s.t0);
    // The same stamp again 4.5s later: now older than stall_after (4s).
    s.at(secs(5.5)).beat_with(3, Some(before_step), None, None);
    assert_eq!(
        kinds(&s.judge()),
        [AlertKind::WorkerFailing],
        "a good turn that stopped coming is still seen"
    );
}

#[test]
fn a_forward_wall_clock_step_makes_nothing_late_at_once() {
    let mut s = Sim::new();
    s.up(10);
    s.at(secs(1.0)).beat(2);
    s.evaluate();
    // +2h: `a` (due 10:01:00) is due by 1h59m by the wall clock, but only
    // the 1s since the previous judgement is believed.
    s.step_wall(jiff::SignedDuration::from_hours(2));
    s.at(secs(2.0)).beat(3);
    assert!(notices(&s.evaluate()).is_empty());
    // Never accounted: late 30s (late_after) after t=1s, on our clock.
    s.at(secs(30.9)).beat(4);
    assert!(notices(&s.evaluate()).is_empty());
    s.at(secs(31.1)).beat(5);
    assert_eq!(
        notices(&s.evaluate()),
        [("opened".into(), AlertKind::JobLate, Some("a".into()))]
    );
}

const EVERY: &str = r#"
[[job]]
name = "e"
schedule = "@every 5s"
shell = "true"
late_after = "2s"
"#;

/// A restarted cronwarden: the new worker arms an `@every` job at the fire
/// its predecessor's store left 10s in the past.
fn restarted_every() -> Sim {
    let mut s = Sim::with(EVERY);
    s.spawn(10);
    s.apply(Event::Schedule {
        jobs: vec![Armed {
            job: "e".into(),
            next_fire_at: Some(ts("2026-12-03T09:59:50Z")),
            paused: false,
        }],
    });
    s.evaluate();
    s.at(secs(0.5)).hello(10).beat(1);
    s
}

#[test]
fn a_restart_is_not_late_for_the_time_nobody_was_there() {
    let mut s = restarted_every();
    assert!(notices(&s.evaluate()).is_empty());
    // The new worker accounts the missed fires in its first turn: one
    // catch-up run covering all three.
    let covers = vec![
        ts("2026-12-03T09:59:50Z"),
        ts("2026-12-03T09:59:55Z"),
        ts("2026-12-03T10:00:00Z"),
    ];
    s.at(secs(0.6)).apply(Event::Fire {
        job: "e".into(),
        run_id: 1,
        scheduled_at: Some(ts("2026-12-03T10:00:00Z")),
        covers,
        trigger: Trigger::Catchup,
        pid: 600,
        pipes: vec![],
        started_at: ts("2026-12-03T10:00:00.6Z"),
        next_fire_at: Some(ts("2026-12-03T10:00:05Z")),
    });
    for t in [1.0, 2.0, 3.0, 4.9] {
        s.at(secs(t)).beat(2);
        assert!(notices(&s.evaluate()).is_empty(), "at {t}s");
    }
}

#[test]
fn a_restarted_worker_that_accounts_nothing_is_late_after_late_after_from_its_hello() {
    let mut s = restarted_every();
    s.at(secs(2.4)).beat(2);
    assert!(notices(&s.evaluate()).is_empty());
    // Hello at 0.5s + late_after 2s.
    s.at(secs(2.6)).beat(3);
    assert_eq!(
        notices(&s.evaluate()),
        [("opened".into(), AlertKind::JobLate, Some("e".into()))]
    );
}

#[test]
fn a_supervisor_pause_is_discounted_from_lateness() {
    let mut s = Sim::new();
    s.up(10);
    s.at(secs(50.0)).beat(2);
    s.evaluate();
    // The supervisor stops for 45s (SIGSTOP, an overloaded host). `a` came
    // due at 60s; the worker fired it, but that line was queued behind the
    // pause. First judgement after the gap, lines not read yet: it has
    // been due for 35s by the wall clock, believed for 2s only.
    // (Its heartbeats are queued too: the stall is the loop's to discount,
    // by reading them first; only lateness is judged here.)
    s.at(secs(95.0));
    assert!(!kinds(&s.judge()).contains(&AlertKind::JobLate));
    s.evaluate();
    s.at(secs(95.1)).beat(3);
    s.evaluate();
    // Still never fired: late 30s after it was first judged due, less 2s.
    s.at(secs(122.9)).beat(4);
    assert!(notices(&s.evaluate()).is_empty());
    s.at(secs(123.1)).beat(5);
    assert_eq!(
        notices(&s.evaluate()),
        [("opened".into(), AlertKind::JobLate, Some("a".into()))]
    );
}
