//! The job detectors: late, misarmed, an overlap streak, a timed-out or
//! lost run, failing and zero-output streaks, and a run the supervisor
//! kills for outliving its bound.

use super::*;

#[test]
fn a_job_is_late_after_late_after_and_resolved_when_its_fire_is_seen() {
    let mut s = Sim::new();
    s.up(10);
    // Due 10:01:00; late_after 30s: late after 10:01:30. The loop judges
    // every second.
    for t in 1..=89 {
        s.at(secs(t as f64)).beat(t + 1);
        s.evaluate();
    }
    s.at(secs(90.0)).beat(91);
    assert_eq!(found(&s.judge()), []);
    s.at(secs(90.001)).beat(92);
    let j = s.judge();
    assert_eq!(
        found(&j),
        [(AlertKind::JobLate, Some("a"), State::Degraded, true)]
    );
    assert!(summary(&j, AlertKind::JobLate).contains("due at 2026-12-03T10:01:00Z"));
    assert_eq!(s.m.status(s.now(), s.wall()).jobs[0].state, JobState::Late);
    // Without a worker nothing is late: nothing could have fired it.
    s.gone();
    assert!(!kinds(&s.judge()).contains(&AlertKind::JobLate));
    s.up(11).fire(1, "2026-12-03T10:01:00Z", 500);
    assert!(!kinds(&s.judge()).contains(&AlertKind::JobLate));
}

#[test]
fn a_job_armed_for_another_time_for_3s_is_misarmed_until_rearmed() {
    let mut s = Sim::new();
    s.up(10);
    let armed = |at: &str| Event::Schedule {
        jobs: vec![Armed {
            job: "a".into(),
            next_fire_at: Some(ts(at)),
            paused: false,
        }],
    };
    s.apply(armed("2026-12-03T10:05:00Z"));
    s.evaluate();
    s.at(secs(3.0)).beat(2);
    assert_eq!(notices(&s.evaluate()), []);
    s.at(secs(3.001));
    let e = s.evaluate();
    assert_eq!(
        notices(&e),
        [("opened".into(), AlertKind::JobMisarmed, Some("a".into()))]
    );
    s.apply(armed("2026-12-03T10:01:00Z"));
    let e = s.evaluate();
    assert_eq!(
        notices(&e),
        [("resolved".into(), AlertKind::JobMisarmed, Some("a".into()))]
    );
}

#[test]
fn an_overlap_streak_says_what_the_busy_run_does_and_ends_with_the_next_fire() {
    let mut s = Sim::new();
    s.up(10).fire(1, "2026-12-03T10:01:00Z", 4711);
    s.skip_overlap(2, "2026-12-03T10:02:00Z", 1);
    assert!(looks_at_busy_runs(&s.m).is_empty());
    s.at(secs(125.0)).beat(2);
    s.skip_overlap(3, "2026-12-03T10:03:00Z", 1);
    let j = s.judge();
    assert_eq!(
        found(&j),
        [(
            AlertKind::JobOverlapStreak,
            Some("a"),
            State::Degraded,
            true
        )]
    );
    assert!(summary(&j, AlertKind::JobOverlapStreak).contains("not looked at yet"));
    // The loop looks in /proc and hands the look in.
    let looks = looks_at_busy_runs(&s.m);
    assert_eq!(looks.len(), 1);
    assert_eq!((looks[0].job.as_str(), looks[0].run.run_id), ("a", 1));
    let snap = Snapshot {
        run_id: 1,
        pid: 4711,
        taken_at: s.wall(),
        running_ms: 125_000,
        processes: vec![ProcInfo {
            pid: 4711,
            ppid: 10,
            state: "D".into(),
            wchan: "nfs_wait_bit_killable".into(),
            cpu_ms: 3,
            command: "rsync".into(),
        }],
        pipe_holders: vec![(4712, "sleep".into())],
        last_line: None,
        last_output_at: None,
    };
    s.m.looked(&looks[0], snap);
    let text = summary(&s.judge(), AlertKind::JobOverlapStreak);
    assert!(
        text.contains("2 fires in a row skipped")
            && text.contains("run 1 has been running for 2m 5s")
            && text.contains("rsync 4711 in state D, wchan nfs_wait_bit_killable")
            && text.contains("held open by sleep 4712"),
        "{text}"
    );
    assert_eq!(
        s.m.status(s.now(), s.wall()).jobs[0].state,
        JobState::Wedged
    );
    s.finish(1, Outcome::Success, 10)
        .fire(4, "2026-12-03T10:04:00Z", 4800);
    assert!(!kinds(&s.judge()).contains(&AlertKind::JobOverlapStreak));
}

#[test]
fn a_timed_out_run_is_alerted_with_what_it_was_seen_doing_until_the_next_run() {
    let mut s = Sim::new();
    s.up(10).fire(1, "2026-12-03T10:01:00Z", 4711);
    // Looked at from 1s before its 5s timeout until 1s after its 1s grace.
    s.at(secs(3.9)).beat(2);
    assert_eq!(looks_near_timeout(&s.m, s.wall(), secs(1.0)), []);
    s.at(secs(4.0)).beat(3);
    let looks = looks_near_timeout(&s.m, s.wall(), secs(1.0));
    assert_eq!(looks.len(), 1);
    let snap = Snapshot {
        run_id: 1,
        pid: 4711,
        taken_at: s.wall(),
        running_ms: 4000,
        processes: vec![ProcInfo {
            pid: 4711,
            ppid: 10,
            state: "S".into(),
            wchan: String::new(),
            cpu_ms: 0,
            command: "sleep".into(),
        }],
        pipe_holders: vec![],
        last_line: Some("still working".into()),
        last_output_at: None,
    };
    s.m.looked(&looks[0], snap);
    s.at(secs(7.1)).beat(4);
    assert_eq!(looks_near_timeout(&s.m, s.wall(), secs(1.0)), []);
    s.finish(1, Outcome::Timeout, 5);
    let e = s.evaluate();
    assert_eq!(
        notices(&e),
        [("opened".into(), AlertKind::JobTimeout, Some("a".into()))]
    );
    let j = s.judge();
    let c = &j.conditions[0];
    assert_eq!(c.details["processes"][0]["pid"], 4711);
    assert_eq!(c.details["last_line"], "still working");
    assert!(c.summary.contains("sleep 4711 in state S"), "{}", c.summary);
    s.finish(2, Outcome::Success, 5);
    assert_eq!(
        notices(&s.evaluate()),
        [("resolved".into(), AlertKind::JobTimeout, Some("a".into()))]
    );
}

#[test]
fn a_lost_run_is_critical_until_the_next_run_ends() {
    let mut s = Sim::new();
    s.up(10).finish(1, Outcome::Lost, 5);
    let j = s.judge();
    assert_eq!(
        found(&j),
        [(AlertKind::JobLost, Some("a"), State::Degraded, true)]
    );
    assert_eq!(
        j.conditions[0].severity,
        cronwarden_shared::status::Severity::Critical
    );
    s.finish(2, Outcome::Success, 5);
    assert_eq!(found(&s.judge()), []);
}

#[test]
fn a_failing_streak_opens_at_alert_after_failures_and_resolves_on_success() {
    let mut s = Sim::new();
    s.up(10);
    s.finish(1, Outcome::Failed, 5)
        .finish(2, Outcome::Failed, 5);
    assert_eq!(found(&s.judge()), []);
    s.finish(3, Outcome::Failed, 5);
    let j = s.judge();
    assert_eq!(
        found(&j),
        [(AlertKind::JobFailing, Some("a"), State::Degraded, true)]
    );
    assert!(summary(&j, AlertKind::JobFailing)
        .contains("failed 3 time(s) in a row (last: exit code 1)"));
    assert_eq!(
        s.m.status(s.now(), s.wall()).jobs[0].state,
        JobState::Failing
    );
    s.finish(4, Outcome::Success, 5);
    assert_eq!(found(&s.judge()), []);
}

#[test]
fn a_zero_output_streak_opens_at_its_limit_and_resolves_with_output() {
    let mut s = Sim::new();
    s.up(10);
    s.finish(1, Outcome::Success, 0);
    assert_eq!(found(&s.judge()), []);
    s.finish(2, Outcome::Success, 0);
    let j = s.judge();
    assert_eq!(
        found(&j),
        [(
            AlertKind::JobZeroOutputStreak,
            Some("a"),
            State::Degraded,
            true
        )]
    );
    assert!(summary(&j, AlertKind::JobZeroOutputStreak).contains("in 2 consecutive runs"));
    s.finish(3, Outcome::Success, 1);
    assert_eq!(found(&s.judge()), []);
}

#[test]
fn a_run_outliving_timeout_grace_and_margin_is_killed_once() {
    let mut s = Sim::new();
    s.up(10).fire(1, "2026-12-03T10:01:00Z", 4711);
    // 5s timeout + 1s grace + 10s margin.
    s.at(secs(16.0)).beat(2);
    assert_eq!(s.evaluate().actions, []);
    s.at(secs(16.001)).beat(3);
    assert_eq!(
        s.evaluate().actions,
        [Action::KillRun {
            job: "a".into(),
            run_id: 1,
            pgid: 4711
        }]
    );
    s.at(secs(17.0)).beat(4);
    assert_eq!(s.evaluate().actions, []);
}

/// A worker that dies after starting a run and before reporting it: the run
/// is found among its orphans, its group is to be killed, and the `lost`
/// record the next worker's recovery sends gets an alert that says what
/// the run was doing. A kept leftover of a run that ended is neither, even
/// when runs ended out of order (the last record is not the newest run).
#[test]
fn an_unreported_run_of_a_dead_worker_is_killed_and_its_loss_described() {
    use std::os::unix::process::CommandExt;

    use crate::run_groups::Reparented;
    let mut sleeper = std::process::Command::new("sleep")
        .arg("30")
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = sleeper.id();
    let mut s = Sim::new();
    s.up(10)
        .finish(2, Outcome::Success, 5)
        .finish(1, Outcome::Success, 5);
    let orphans = [
        Reparented {
            job: "a".into(),
            run_id: 2,
            pgid: 4711,
            start_ticks: 1,
            running_ms: 9000,
        },
        Reparented {
            job: "a".into(),
            run_id: 3,
            pgid,
            start_ticks: 2,
            running_ms: 1500,
        },
    ];
    let (now, wall) = (s.now(), s.wall());
    let groups =
        s.m.worker_gone_at("was killed by signal 9".into(), true, &orphans, now, wall);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_eq!(groups, [pgid], "only the unreported run is killed");
    s.up(11).finish(3, Outcome::Lost, 0);
    let j = s.judge();
    let lost = j
        .conditions
        .iter()
        .find(|c| c.kind == AlertKind::JobLost)
        .expect("job_lost");
    assert_eq!(lost.details["run_id"], 3);
    assert_eq!(
        lost.details["processes"][0]["pid"], pgid,
        "{}",
        lost.details
    );
    assert!(lost.summary.contains("after 1500ms"), "{}", lost.summary);
}
