//! The detectors with `jitter` and `retries` (issue 17), on the fake
//! clock of the parent module: a jittered fire is late only `late_after`
//! past its start, and a failed run that will be retried is no failure of
//! its fire yet.

use super::*;

#[test]
fn a_jittered_job_is_late_only_after_its_start_plus_late_after() {
    let mut s = Sim::new();
    // Due 10:01:00, starting 60 s later; late_after 30 s: late after
    // 10:02:30, 150 s after the clock's start.
    Arc::make_mut(&mut s.m.jobs.get_mut("a").unwrap().spec).jitter_offset = Duration::from_secs(60);
    s.up(10);
    for t in 1..=149 {
        s.at(secs(t as f64)).beat(t + 1);
        s.evaluate();
    }
    s.at(secs(150.0)).beat(151);
    assert_eq!(found(&s.judge()), []);
    s.at(secs(150.001)).beat(152);
    let j = s.judge();
    assert_eq!(
        found(&j),
        [(AlertKind::JobLate, Some("a"), State::Degraded, true)]
    );
    // The summary names the fire's nominal time.
    assert!(summary(&j, AlertKind::JobLate).contains("due at 2026-12-03T10:01:00Z"));
}

#[test]
fn failures_that_are_retried_count_once_per_fire() {
    let mut s = Sim::new();
    Arc::make_mut(&mut s.m.jobs.get_mut("a").unwrap().spec)
        .retry
        .retries = 1;
    s.up(10);
    let finish = |s: &mut Sim, id: u64, trigger: Trigger, outcome: Outcome| {
        let mut run = RunRecord::new(id, "a", vec![], trigger, outcome);
        run.exit_code = Some(i32::from(outcome != Outcome::Success));
        run.stdout_bytes = 5;
        s.apply(Event::Finish { run });
    };
    // Three fires, each failing twice (its run and its one retry): a
    // streak of 3 fires, which alerts at alert_after_failures = 3; the
    // six failed runs alone would have alerted after the third.
    for fire in 0..2 {
        finish(&mut s, 10 * fire + 1, Trigger::Schedule, Outcome::Failed);
        finish(&mut s, 10 * fire + 2, Trigger::Retry, Outcome::Failed);
    }
    finish(&mut s, 21, Trigger::Schedule, Outcome::Failed);
    assert_eq!(found(&s.judge()), [], "a fire whose retry is pending");
    assert_eq!(s.m.jobs["a"].streaks.failures, 2);
    finish(&mut s, 22, Trigger::Retry, Outcome::Timeout);
    assert_eq!(
        found(&s.judge()),
        [(AlertKind::JobTimeout, Some("a"), State::Degraded, true),]
    );
    assert_eq!(s.m.jobs["a"].streaks.failures, 3);
    // A fire that fails and then succeeds on its retry ends the streak.
    finish(&mut s, 31, Trigger::Schedule, Outcome::Failed);
    finish(&mut s, 32, Trigger::Retry, Outcome::Success);
    assert_eq!(found(&s.judge()), []);
    assert_eq!(s.m.jobs["a"].streaks.failures, 0);
}
