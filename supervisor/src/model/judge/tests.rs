//! Every detector opening and resolving, driven step by step against a
//! fake clock (a monotonic offset from one `Instant`, and a wall clock
//! that starts at a fixed `Timestamp`), with no sleeps and no processes:
//! events are applied as the worker would send them, and each expectation
//! (thresholds, instants, kinds) is written out by hand from the config
//! below rather than computed by the code under test.

use std::{path::Path, time::Duration};

use cronwarden_shared::{
    alert_kind::AlertKind,
    config::Config,
    status::{JobState, Outcome, RunRecord, SinkHealth, SkipReason, State, Trigger},
    wire::{Armed, ArmedDigest, Event},
};
use jiff::Timestamp;
use tokio::time::Instant;

use super::{judge, looks_at_busy_runs, looks_near_timeout, Action, Clocks, Judgement, Replace};
use crate::{
    forensics::{ProcInfo, Snapshot},
    model::{Evaluation, Model},
};

/// Re-arming and replacing a worker that misarms a job.
mod heal;

/// heartbeat 1s: overdue after 2.1s; stalled after 4s (10s before hello);
/// replaced for failing after 20s. Job `a` fires at second 0 of every
/// minute, is late 30s after, is killed by us 5s + 1s + 10s after its
/// start; it alerts after 2 overlap skips, 3 failures, 2 silent runs.
const CONFIG: &str = r#"
[watchdog]
heartbeat_interval = "1s"
stall_after = "4s"
failing_restart_after = "20s"

[[job]]
name = "a"
schedule = "0 * * * * *"
shell = "true"
timeout = "5s"
kill_grace = "1s"
late_after = "30s"
overlap_alert_after = 2
alert_after_failures = 3
zero_output_alert_after = 2

[[job]]
name = "b"
schedule = "@daily"
shell = "true"
"#;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// The model and a fake clock.
struct Sim {
    m: Model,
    t0: Instant,
    w0: Timestamp,
    elapsed: Duration,
    /// The sum of the wall clock's steps so far.
    stepped: jiff::SignedDuration,
}

impl Sim {
    fn new() -> Sim {
        let config = Config::parse(Path::new("/x/cronwarden.toml"), CONFIG).unwrap();
        let mut m = Model::for_test(config);
        // Our expectations as of the fake wall clock's start, 10:00:00.
        m.jobs.get_mut("a").unwrap().expected_next = Some(ts("2026-12-03T10:01:00Z"));
        m.jobs.get_mut("b").unwrap().expected_next = Some(ts("2026-12-04T00:00:00Z"));
        Sim {
            m,
            t0: Instant::now(),
            w0: ts("2026-12-03T10:00:00Z"),
            elapsed: Duration::ZERO,
            stepped: jiff::SignedDuration::ZERO,
        }
    }

    /// A model of `config` (TOML), with its clocks at 10:00:00.
    fn with(config: &str) -> Sim {
        let config = Config::parse(Path::new("/x/cronwarden.toml"), config).unwrap();
        let mut m = Model::for_test(config);
        // Our expectations as of the fake wall clock's start (the model
        // computed them from the real one).
        for j in m.jobs.values_mut() {
            j.expected_next = match j.spec.schedule.every() {
                Some(_) => None,
                None => j.spec.schedule.next_after(ts("2026-12-03T10:00:00Z"), None),
            };
        }
        Sim {
            m,
            t0: Instant::now(),
            w0: ts("2026-12-03T10:00:00Z"),
            elapsed: Duration::ZERO,
            stepped: jiff::SignedDuration::ZERO,
        }
    }

    fn now(&self) -> Instant {
        self.t0 + self.elapsed
    }

    fn wall(&self) -> Timestamp {
        self.w0 + self.elapsed + self.stepped
    }

    /// Steps the wall clock (an NTP step, `date -s`); the monotonic clock
    /// does not move.
    fn step_wall(&mut self, by: jiff::SignedDuration) -> &mut Self {
        self.stepped += by;
        self
    }

    fn clocks(&self) -> Clocks {
        Clocks {
            now: self.now(),
            wall: self.wall(),
        }
    }

    /// Moves both clocks to `at` after the start.
    fn at(&mut self, at: Duration) -> &mut Self {
        assert!(at >= self.elapsed, "the fake clock only moves forward");
        self.elapsed = at;
        self
    }

    fn apply(&mut self, ev: Event) -> &mut Self {
        let now = self.now();
        self.m.apply(ev, now);
        self
    }

    fn spawn(&mut self, pid: u32) -> &mut Self {
        let (now, wall) = (self.now(), self.wall());
        self.m.worker_spawned_at(pid, now, wall);
        self
    }

    fn gone(&mut self) -> &mut Self {
        let (now, wall) = (self.now(), self.wall());
        let groups = self
            .m
            .worker_gone_at("exited with code 1".into(), true, now, wall);
        assert!(groups.is_empty(), "no run was in flight");
        self
    }

    fn hello(&mut self, pid: u32) -> &mut Self {
        let wall = self.wall();
        self.apply(Event::Hello {
            pid,
            version: "test".into(),
            started_at: wall,
        })
    }

    fn beat_with(
        &mut self,
        seq: u64,
        good: Option<Timestamp>,
        store_error: Option<&str>,
        armed: Option<ArmedDigest>,
    ) -> &mut Self {
        let wall = self.wall();
        self.apply(Event::Heartbeat {
            seq,
            at: wall,
            last_good_turn_at: good,
            running: 0,
            store_error: store_error.map(str::to_string),
            armed,
            progress: vec![],
            stats: None,
        })
    }

    /// A healthy heartbeat: its last turn was good just now.
    fn beat(&mut self, seq: u64) -> &mut Self {
        let wall = self.wall();
        self.beat_with(seq, Some(wall), None, None)
    }

    /// A worker that started, said hello and beat once, now.
    fn up(&mut self, pid: u32) -> &mut Self {
        self.spawn(pid).hello(pid).beat(1)
    }

    fn judge(&self) -> Judgement {
        judge(&self.m, self.clocks())
    }

    /// Judges and adopts, as the loop does (and as if it acted).
    fn evaluate(&mut self) -> Evaluation {
        let (now, wall) = (self.now(), self.wall());
        self.m.evaluate(now, wall)
    }

    fn fire(&mut self, run_id: u64, scheduled: &str, pid: u32) -> &mut Self {
        let (wall, at) = (self.wall(), ts(scheduled));
        self.apply(Event::Fire {
            job: "a".into(),
            run_id,
            scheduled_at: Some(at),
            covers: vec![at],
            trigger: Trigger::Schedule,
            pid,
            pipes: vec![],
            started_at: wall,
            next_fire_at: Some(at + secs(60.0)),
        })
    }

    fn skip_overlap(&mut self, run_id: u64, scheduled: &str, busy: u64) -> &mut Self {
        let at = ts(scheduled);
        self.apply(Event::Skip {
            job: "a".into(),
            run_id,
            scheduled_at: at,
            reason: SkipReason::Overlap,
            busy_run_id: Some(busy),
            next_fire_at: Some(at + secs(60.0)),
        })
    }

    /// A finished run of `a` with this outcome and this much output.
    fn finish(&mut self, run_id: u64, outcome: Outcome, bytes: u64) -> &mut Self {
        let wall = self.wall();
        let mut run = RunRecord::new(run_id, "a", vec![], Trigger::Manual, outcome);
        run.started_at = Some(wall);
        run.finished_at = Some(wall);
        run.exit_code = Some(if outcome == Outcome::Success { 0 } else { 1 });
        run.stdout_bytes = bytes;
        self.apply(Event::Finish { run })
    }
}

/// (kind, job, state, alerted) of every condition.
fn found(j: &Judgement) -> Vec<(AlertKind, Option<&str>, State, bool)> {
    j.conditions
        .iter()
        .map(|c| (c.kind, c.job.as_deref(), c.state, c.alert))
        .collect()
}

fn kinds(j: &Judgement) -> Vec<AlertKind> {
    j.conditions.iter().map(|c| c.kind).collect()
}

fn summary(j: &Judgement, kind: AlertKind) -> String {
    j.conditions
        .iter()
        .find(|c| c.kind == kind)
        .unwrap_or_else(|| panic!("no {kind:?} in {:?}", j.conditions))
        .summary
        .clone()
}

/// The notices of one evaluation, as (event, kind, job).
fn notices(e: &Evaluation) -> Vec<(String, AlertKind, Option<String>)> {
    e.notices
        .iter()
        .map(|n| (n.event.clone(), n.kind, n.job.clone()))
        .collect()
}

#[test]
fn no_worker_is_down_starting_is_down_and_neither_is_alerted() {
    let mut s = Sim::new();
    assert_eq!(
        found(&s.judge()),
        [(AlertKind::WorkerDown, None, State::Down, false)]
    );
    s.spawn(10);
    let j = s.judge();
    assert_eq!(
        found(&j),
        [(AlertKind::WorkerDown, None, State::Down, false)]
    );
    assert!(summary(&j, AlertKind::WorkerDown).contains("worker 10 is starting"));
    s.hello(10);
    assert_eq!(found(&s.judge()), []);
    assert_eq!(s.m.status(s.now(), s.wall()).state, State::Ok);
}

#[test]
fn a_silent_worker_is_stalled_at_stall_after_and_replaced_once() {
    let mut s = Sim::new();
    s.up(10);
    let wd = s.m.config.watchdog.clone();
    assert_eq!(
        super::stall_deadline(&s.m.worker, &wd),
        Some(s.t0 + secs(4.0))
    );
    // Overdue (2.1s) but not stalled yet: a warning, not an alert.
    s.at(secs(3.999));
    let j = s.judge();
    assert_eq!(
        found(&j),
        [(
            AlertKind::WorkerHeartbeatOverdue,
            None,
            State::Degraded,
            false
        )]
    );
    assert_eq!(j.actions, []);
    s.at(secs(4.0));
    let e = s.evaluate();
    assert_eq!(
        notices(&e),
        [("opened".into(), AlertKind::WorkerStalled, None)]
    );
    assert_eq!(e.status.state, State::Stalled);
    assert_eq!(
        e.actions,
        [Action::ReplaceWorker {
            pid: 10,
            why: Replace::Stalled {
                allowance: secs(4.0)
            }
        }]
    );
    // Acted on: no second kill, no timer, still stalled while it dies.
    assert_eq!(super::stall_deadline(&s.m.worker, &wd), None);
    s.at(secs(4.5));
    let e = s.evaluate();
    assert_eq!(e.actions, []);
    assert_eq!(e.status.state, State::Stalled);
    // Gone, replaced, hello: still stalled (no alert resolves).
    s.gone();
    assert_eq!(
        found(&s.judge()),
        [(AlertKind::WorkerStalled, None, State::Stalled, true)]
    );
    s.spawn(11).hello(11);
    let e = s.evaluate();
    assert_eq!(
        notices(&e),
        [("opened".into(), AlertKind::WorkerRestarted, None)]
    );
    assert!(summary(&s.judge(), AlertKind::WorkerStalled).contains("replaced a stalled worker"));
    // A late line from the stalled worker would prove nothing; the
    // replacement's first heartbeat does.
    s.beat(1);
    let e = s.evaluate();
    assert!(notices(&e).contains(&("resolved".into(), AlertKind::WorkerStalled, None)));
    assert!(!kinds(&s.judge()).contains(&AlertKind::WorkerStalled));
}

#[test]
fn a_worker_that_never_says_hello_is_stalled_after_the_start_allowance() {
    let mut s = Sim::new();
    s.spawn(10);
    let wd = s.m.config.watchdog.clone();
    assert_eq!(
        super::stall_deadline(&s.m.worker, &wd),
        Some(s.t0 + secs(10.0))
    );
    s.at(secs(9.999));
    let j = s.judge();
    assert_eq!(
        found(&j),
        [(AlertKind::WorkerDown, None, State::Down, false)]
    );
    assert_eq!(j.actions, []);
    s.at(secs(10.0));
    let j = s.judge();
    assert_eq!(
        found(&j),
        [(AlertKind::WorkerStalled, None, State::Stalled, true)]
    );
    assert_eq!(
        j.actions,
        [Action::ReplaceWorker {
            pid: 10,
            why: Replace::Stalled {
                allowance: secs(10.0)
            }
        }]
    );
}

#[test]
fn heartbeat_overdue_opens_after_two_missed_beats_and_resolves_with_a_beat() {
    let mut s = Sim::new();
    s.up(10);
    s.at(secs(2.1));
    assert_eq!(found(&s.judge()), []);
    s.at(secs(2.101));
    assert_eq!(
        found(&s.judge()),
        [(
            AlertKind::WorkerHeartbeatOverdue,
            None,
            State::Degraded,
            false
        )]
    );
    s.beat(2);
    assert_eq!(found(&s.judge()), []);
}

#[test]
fn a_worker_without_a_good_turn_is_failing_and_replaced_after_failing_restart_after() {
    let mut s = Sim::new();
    s.spawn(10).hello(10).beat_with(1, None, None, None);
    let j = s.judge();
    assert_eq!(
        found(&j),
        [(AlertKind::WorkerFailing, None, State::Degraded, true)]
    );
    assert!(summary(&j, AlertKind::WorkerFailing).contains("none of its loop turns"));
    // Heartbeats keep coming, turns keep failing: replaced once 20s have
    // passed since it started.
    for t in 1..=20 {
        s.at(secs(t as f64)).beat_with(t + 1, None, None, None);
        assert_eq!(s.judge().actions, [], "at {t}s");
    }
    s.at(secs(20.5)).beat_with(22, None, None, None);
    let e = s.evaluate();
    assert_eq!(
        e.actions,
        [Action::ReplaceWorker {
            pid: 10,
            why: Replace::Failing {
                failing_for: secs(20.5)
            }
        }]
    );
    s.at(secs(21.0));
    assert_eq!(s.evaluate().actions, []);
}

#[test]
fn an_old_good_turn_is_failing_and_a_fresh_one_resolves_it() {
    let mut s = Sim::new();
    s.up(10);
    s.at(secs(10.0));
    // Its last good turn was 3s ago: within stall_after (4s).
    let three_ago = s.wall() - secs(3.0);
    s.beat_with(2, Some(three_ago), None, None);
    assert_eq!(found(&s.judge()), []);
    // Two seconds on, the same good turn is reported again: 5s old.
    s.at(secs(12.0));
    s.beat_with(3, Some(three_ago), None, None);
    let e = s.evaluate();
    assert_eq!(
        notices(&e),
        [("opened".into(), AlertKind::WorkerFailing, None)]
    );
    s.beat(4);
    assert_eq!(
        notices(&s.evaluate()),
        [("resolved".into(), AlertKind::WorkerFailing, None)]
    );
}

#[test]
fn five_exits_within_a_minute_are_a_crash_loop_until_a_worker_settles() {
    let mut s = Sim::new();
    for (i, pid) in (10..15).enumerate() {
        s.at(secs(i as f64)).spawn(pid).gone();
    }
    s.at(secs(5.0)).spawn(15);
    assert!(kinds(&s.judge()).contains(&AlertKind::WorkerCrashLoop));
    assert_eq!(s.m.status(s.now(), s.wall()).state, State::Down);
    s.hello(15).beat(1);
    // Up 14.9s: not settled yet.
    s.at(secs(19.9)).beat(2);
    assert!(kinds(&s.judge()).contains(&AlertKind::WorkerCrashLoop));
    s.at(secs(20.0)).beat(3);
    assert!(!kinds(&s.judge()).contains(&AlertKind::WorkerCrashLoop));
}

#[test]
fn a_restart_is_news_for_a_minute() {
    let mut s = Sim::new();
    s.up(10).gone().up(11);
    let j = s.judge();
    assert_eq!(
        found(&j),
        [(AlertKind::WorkerRestarted, None, State::Ok, true)]
    );
    assert!(summary(&j, AlertKind::WorkerRestarted).contains("exited with code 1"));
    assert_eq!(s.m.status(s.now(), s.wall()).state, State::Ok);
    s.at(secs(59.0)).beat(2);
    assert_eq!(kinds(&s.judge()), [AlertKind::WorkerRestarted]);
    s.at(secs(60.0)).beat(3);
    assert!(!kinds(&s.judge()).contains(&AlertKind::WorkerRestarted));
}

#[test]
fn store_errors_open_and_resolve_with_the_heartbeat() {
    let mut s = Sim::new();
    s.up(10);
    let wall = s.wall();
    s.beat_with(2, Some(wall), Some("disk I/O error"), None);
    let j = s.judge();
    assert_eq!(
        found(&j),
        [(AlertKind::StoreError, None, State::Degraded, true)]
    );
    assert!(summary(&j, AlertKind::StoreError).contains("disk I/O error"));
    s.beat(3);
    assert_eq!(found(&s.judge()), []);
}

#[test]
fn a_refused_reload_is_degraded_until_one_succeeds() {
    let mut s = Sim::new();
    s.up(10);
    s.m.reload_error = Some((s.wall(), "job.x: bad schedule\nsecond line".into()));
    let j = s.judge();
    assert_eq!(
        found(&j),
        [(AlertKind::ConfigReloadFailed, None, State::Degraded, true)]
    );
    let text = summary(&j, AlertKind::ConfigReloadFailed);
    // Every error, and the instant to the second.
    assert!(text.contains("job.x: bad schedule; second line"), "{text}");
    let at = s.wall().round(jiff::Unit::Second).unwrap().to_string();
    assert!(text.contains(&format!("reload at {at} was")), "{text}");
    // Bounded: a thousand errors do not make a thousand-line alert.
    let many: Vec<String> = (0..1000).map(|i| format!("error {i}")).collect();
    s.m.reload_error = Some((s.wall(), many.join("\n")));
    let text = summary(&s.judge(), AlertKind::ConfigReloadFailed);
    assert!(text.contains("error 19; and 980 more"), "{text}");
    assert!(!text.contains("error 20;"), "{text}");
    s.m.reload_error = None;
    assert_eq!(found(&s.judge()), []);
}

#[test]
fn a_sink_failing_twice_in_a_row_is_alerted() {
    let mut s = Sim::new();
    s.up(10);
    let sink = |failures| SinkHealth {
        name: "pager".into(),
        last_error: Some("connection refused".into()),
        consecutive_failures: failures,
        ..SinkHealth::default()
    };
    s.m.sinks = vec![sink(1)];
    assert_eq!(found(&s.judge()), []);
    s.m.sinks = vec![sink(2)];
    let j = s.judge();
    assert_eq!(
        found(&j),
        [(AlertKind::AlertDeliveryFailed, None, State::Degraded, true)]
    );
    assert!(summary(&j, AlertKind::AlertDeliveryFailed).contains("pager: connection refused"));
    s.m.sinks = vec![sink(0)];
    assert_eq!(found(&s.judge()), []);
}

#[test]
fn an_armed_digest_disagreeing_for_3s_is_misarmed_and_the_schedule_is_asked_for_once() {
    let mut s = Sim::new();
    s.up(10);
    let ours = ArmedDigest::of([
        ("a", Some(ts("2026-12-03T10:01:00Z"))),
        ("b", Some(ts("2026-12-04T00:00:00Z"))),
    ]);
    let theirs = ArmedDigest {
        jobs: 2,
        digest: ours.digest ^ 1,
    };
    let beat = |s: &mut Sim, seq, armed| {
        let wall = s.wall();
        s.beat_with(seq, Some(wall), None, Some(armed));
    };
    beat(&mut s, 2, ours);
    assert_eq!(s.evaluate().actions, []);
    beat(&mut s, 3, theirs);
    assert_eq!(s.evaluate().actions, [Action::AskArmedSchedule]);
    s.at(secs(1.0));
    beat(&mut s, 4, theirs);
    assert_eq!(s.evaluate().actions, []);
    s.at(secs(3.0));
    beat(&mut s, 5, theirs);
    assert!(!kinds(&s.judge()).contains(&AlertKind::WorkerMisarmed));
    // Judged only as heartbeats keep showing it.
    s.at(secs(3.001));
    assert!(!kinds(&s.judge()).contains(&AlertKind::WorkerMisarmed));
    beat(&mut s, 6, theirs);
    let e = s.evaluate();
    assert_eq!(
        notices(&e),
        [("opened".into(), AlertKind::WorkerMisarmed, None)]
    );
    // Same job count; the worker has reported no arming of either job.
    assert!(summary(&s.judge(), AlertKind::WorkerMisarmed)
        .contains("differs from the config's for: a, b"));
    beat(&mut s, 7, ours);
    let e = s.evaluate();
    assert_eq!(
        notices(&e),
        [("resolved".into(), AlertKind::WorkerMisarmed, None)]
    );
    // A new episode asks again.
    s.at(secs(5.0));
    beat(&mut s, 8, theirs);
    assert_eq!(s.evaluate().actions, [Action::AskArmedSchedule]);
}

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

#[test]
fn the_status_judges_without_changing_anything() {
    let mut s = Sim::new();
    s.up(10);
    let theirs = ArmedDigest { jobs: 2, digest: 1 };
    let wall = s.wall();
    s.beat_with(2, Some(wall), None, Some(theirs));
    s.at(secs(3.5));
    let wall = s.wall();
    s.beat_with(3, Some(wall), None, Some(theirs));
    // The disagreement was observed at the heartbeat (t=0) and is judged
    // by the status too; but only an adopted judgement remembers that the
    // schedule was asked for.
    let first = s.m.status(s.now(), s.wall());
    assert_eq!(first, s.m.status(s.now(), s.wall()));
    assert_eq!(s.m.worker.armed_mismatch_since, Some(s.t0));
    assert!(!s.m.worker.armed_report_requested);
    assert!(first.reasons.iter().any(|r| r.contains("armed")));
}

#[test]
fn an_evaluation_status_agrees_with_its_alerts() {
    let mut s = Sim::new();
    s.up(10).finish(1, Outcome::Lost, 5);
    let e = s.evaluate();
    assert_eq!(e.status.state, State::Degraded);
    assert_eq!(e.status.alerts.len(), 1);
    assert_eq!(e.status.alerts[0].kind, AlertKind::JobLost);
}

#[test]
fn the_stall_timer_and_the_stall_judgement_are_one_instant() {
    // Before and after hello, on either side of the deadline: the loop's
    // timer (stall_deadline) has passed exactly when the judgement
    // replaces the worker.
    for hello in [false, true] {
        let mut s = Sim::new();
        s.spawn(10);
        if hello {
            s.hello(10);
        }
        let wd = s.m.config.watchdog.clone();
        let deadline = super::stall_deadline(&s.m.worker, &wd).unwrap();
        for ms in (0..12_000)
            .step_by(250)
            .chain([3_999, 4_000, 9_999, 10_000])
        {
            let at = secs(ms as f64 / 1000.0);
            let now = s.t0 + at;
            let clocks = Clocks {
                now,
                wall: s.w0 + at,
            };
            let replaced = judge(&s.m, clocks)
                .actions
                .iter()
                .any(|a| matches!(a, Action::ReplaceWorker { .. }));
            assert_eq!(replaced, now >= deadline, "hello {hello}, at {ms}ms");
        }
    }
}

#[test]
fn a_ghost_or_missing_job_is_named_as_such() {
    let mut s = Sim::new();
    s.up(10);
    let theirs = ArmedDigest { jobs: 3, digest: 7 };
    let wall = s.wall();
    s.beat_with(2, Some(wall), None, Some(theirs));
    s.evaluate();
    s.at(secs(3.5));
    let wall = s.wall();
    s.beat_with(3, Some(wall), None, Some(theirs));
    let text = summary(&s.judge(), AlertKind::WorkerMisarmed);
    assert!(
        text.contains("the worker has 3 jobs armed but the config has 2"),
        "{text}"
    );
}

#[test]
fn a_look_that_finds_nothing_keeps_the_one_that_found_the_run() {
    let mut s = Sim::new();
    s.up(10).fire(1, "2026-12-03T10:01:00Z", 4711);
    s.at(secs(4.5)).beat(2);
    let look = looks_near_timeout(&s.m, s.wall(), secs(1.0)).remove(0);
    let snap = |pids: &[u32]| Snapshot {
        run_id: 1,
        pid: 4711,
        taken_at: s.wall(),
        running_ms: 4500,
        processes: pids
            .iter()
            .map(|p| ProcInfo {
                pid: *p,
                ppid: 1,
                state: "S".into(),
                wchan: String::new(),
                cpu_ms: 0,
                command: "sleep".into(),
            })
            .collect(),
        pipe_holders: vec![],
        last_line: None,
        last_output_at: None,
    };
    let (found, empty) = (snap(&[4711]), snap(&[]));
    s.m.looked(&look, found.clone());
    // The kill came first: the group is gone by the next look.
    s.m.looked(&look, empty);
    assert_eq!(s.m.jobs["a"].snapshots.get(&1), Some(&found));
    s.finish(1, Outcome::Timeout, 0);
    assert_eq!(s.m.jobs["a"].last_forensics, Some(found));
}

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

/// `n` per-second jobs, `j00`..: a fake worker arms each for the next
/// second, takes each second's fires in one turn, heartbeats at the end of
/// the turn with the digest of its own arming, and writes each fire's line
/// after the heartbeat, some of them as late as `lag` of the next turns.
/// Returns the misarmed notices seen, evaluating after every heartbeat
/// (the loop's tick, phase-locked with the fires: the worst case), and
/// after every fire line too if `every_line`.
fn per_second_jobs_under_load(n: usize, seconds: u64, lag: u64, every_line: bool) -> Vec<String> {
    let mut config = String::new();
    for i in 0..n {
        config.push_str(&format!(
            "[[job]]\nname = \"j{i:02}\"\nschedule = \"* * * * * *\"\nshell = \"true\"\n"
        ));
    }
    let mut s = Sim::with(&config);
    let names: Vec<String> = (0..n).map(|i| format!("j{i:02}")).collect();
    let second = |k: u64| ts("2026-12-03T10:00:00Z") + secs(k as f64);
    s.spawn(10).hello(10);
    s.apply(Event::Schedule {
        jobs: names
            .iter()
            .map(|n| Armed {
                job: n.clone(),
                next_fire_at: Some(second(1)),
                paused: false,
            })
            .collect(),
    });
    let mut seen = vec![];
    let mut note = |e: Evaluation| {
        for (ev, kind, job) in notices(&e) {
            if matches!(kind, AlertKind::WorkerMisarmed | AlertKind::JobMisarmed) {
                seen.push(format!("{ev} {kind:?} {job:?}"));
            }
        }
    };
    // Lines written but not yet read: (second it becomes readable, line).
    let mut pending: Vec<(u64, Event)> = vec![];
    let mut run_id = 0;
    for k in 1..=seconds {
        // The turn at second k (+1ms), its heartbeat (+2ms): every job is
        // now armed for k+1.
        s.at(secs(k as f64 + 0.002));
        let digest = ArmedDigest::of(names.iter().map(|n| (n.as_str(), Some(second(k + 1)))));
        let wall = s.wall();
        s.beat_with(k, Some(wall), None, Some(digest));
        note(s.evaluate());
        for (i, name) in names.iter().enumerate() {
            run_id += 1;
            let at = second(k);
            pending.push((
                k + ((i as u64 + k) % (lag + 1)),
                Event::Fire {
                    job: name.clone(),
                    run_id,
                    scheduled_at: Some(at),
                    covers: vec![at],
                    trigger: Trigger::Schedule,
                    pid: 1000 + run_id as u32,
                    pipes: vec![],
                    started_at: at,
                    next_fire_at: Some(second(k + 1)),
                },
            ));
        }
        // The fire lines readable by now (after the heartbeat), one by one.
        s.at(secs(k as f64 + 0.5));
        let (now, later): (Vec<_>, Vec<_>) = pending.drain(..).partition(|(at, _)| *at <= k);
        pending = later;
        for (_, ev) in now {
            s.apply(ev);
            if every_line {
                note(s.evaluate());
            }
        }
    }
    seen
}

#[test]
fn one_per_second_job_is_never_misarmed_when_its_fire_line_follows_the_heartbeat() {
    assert_eq!(
        per_second_jobs_under_load(1, 60, 0, false),
        Vec::<String>::new()
    );
    // Every other second, the fire line comes after the next turn's heartbeat.
    assert_eq!(
        per_second_jobs_under_load(1, 60, 1, true),
        Vec::<String>::new()
    );
}

#[test]
fn fifty_per_second_jobs_are_never_misarmed_with_fire_lines_up_to_two_turns_late() {
    assert_eq!(
        per_second_jobs_under_load(50, 80, 2, true),
        Vec::<String>::new()
    );
    assert_eq!(
        per_second_jobs_under_load(50, 80, 0, false),
        Vec::<String>::new()
    );
}

#[test]
fn fires_taken_but_never_reported_are_misarmed_after_the_unreported_bound() {
    let mut s = Sim::with(
        "[[job]]\nname = \"fine\"\nschedule = \"* * * * * *\"\nshell = \"true\"\n\
         [[job]]\nname = \"victim\"\nschedule = \"* * * * * *\"\nshell = \"true\"\n",
    );
    let second = |k: u64| ts("2026-12-03T10:00:00Z") + secs(k as f64);
    s.spawn(10).hello(10);
    s.apply(Event::Schedule {
        jobs: ["fine", "victim"]
            .map(|n| Armed {
                job: n.into(),
                next_fire_at: Some(second(1)),
                paused: false,
            })
            .to_vec(),
    });
    let mut opened_at = None;
    for k in 1..=20u64 {
        s.at(secs(k as f64 + 0.002));
        let digest = ArmedDigest::of([
            ("fine", Some(second(k + 1))),
            ("victim", Some(second(k + 1))),
        ]);
        let wall = s.wall();
        s.beat_with(k, Some(wall), None, Some(digest));
        // Only `fine`'s fire is ever reported.
        s.apply(Event::Fire {
            job: "fine".into(),
            run_id: k,
            scheduled_at: Some(second(k)),
            covers: vec![second(k)],
            trigger: Trigger::Schedule,
            pid: 1000 + k as u32,
            pipes: vec![],
            started_at: second(k),
            next_fire_at: Some(second(k + 1)),
        });
        let e = s.evaluate();
        if notices(&e).contains(&("opened".into(), AlertKind::WorkerMisarmed, None)) {
            opened_at = Some(k);
            let c = summary(&s.judge(), AlertKind::WorkerMisarmed);
            assert!(c.contains("victim (due at 2026-12-03T10:00:01Z)"), "{c}");
            assert!(!c.contains("fine"), "{c}");
        }
    }
    // Taken at the heartbeat of second 1 (t = 1.002s); reported after more
    // than 10s: at the evaluation of second 12 (t = 12.002s), not before.
    assert_eq!(opened_at, Some(12));
}

#[test]
fn a_fire_line_overtaken_by_a_later_skip_does_not_move_the_arming_back() {
    let mut s = Sim::new();
    s.up(10);
    // The fire of 10:01:00 is taken (armed 10:02:00) but its process is
    // slow to start; the turn at 10:02:00 skips for overlap (armed
    // 10:03:00), and only then the fire line comes, armed 10:02:00.
    s.at(secs(120.0)).skip_overlap(2, "2026-12-03T10:02:00Z", 1);
    s.fire(1, "2026-12-03T10:01:00Z", 4711);
    assert_eq!(s.m.jobs["a"].next_fire_at, Some(ts("2026-12-03T10:03:00Z")));
    s.evaluate();
    s.at(secs(124.0)).beat(2);
    assert!(!kinds(&s.judge()).contains(&AlertKind::JobMisarmed));
}

/// A replacement worker arms `a` from the store's cursor, which its
/// predecessor moved past fires whose lines died with it.
fn replaced_worker_arming(at: &str) -> Sim {
    let mut s = Sim::new();
    s.up(10);
    // 10:01 and 10:02 were taken by worker 10, their lines lost.
    s.at(secs(150.0));
    let (now, wall) = (s.now(), s.wall());
    s.m.worker_gone_at("was killed by signal 9".into(), true, now, wall);
    s.spawn(11);
    s.apply(Event::Schedule {
        jobs: vec![Armed {
            job: "a".into(),
            next_fire_at: Some(ts(at)),
            paused: false,
        }],
    });
    s.hello(11).beat(1);
    s
}

#[test]
fn a_replacement_expects_from_the_arming_its_predecessor_left() {
    // Started at 10:02:30: the schedule's next fire is 10:03:00.
    let mut s = replaced_worker_arming("2026-12-03T10:03:00Z");
    assert_eq!(
        s.m.jobs["a"].expected_next,
        Some(ts("2026-12-03T10:03:00Z"))
    );
    s.evaluate();
    s.at(secs(175.0)).beat(2);
    let e = s.evaluate();
    assert!(
        !notices(&e)
            .iter()
            .any(|(_, k, _)| matches!(k, AlertKind::JobLate | AlertKind::JobMisarmed)),
        "{:?}",
        notices(&e)
    );
}

#[test]
fn a_replacement_armed_a_day_ahead_is_still_misarmed_and_late() {
    let mut s = replaced_worker_arming("2026-12-04T10:03:00Z");
    // Our expectation stays 10:01:00, which it never fires.
    assert_eq!(
        s.m.jobs["a"].expected_next,
        Some(ts("2026-12-03T10:01:00Z"))
    );
    s.evaluate();
    s.at(secs(154.0)).beat(2);
    let e = s.evaluate();
    assert!(notices(&e).contains(&("opened".into(), AlertKind::JobMisarmed, Some("a".into()))));
    // Late 30s (late_after) after its hello, at 150s.
    s.at(secs(180.1)).beat(3);
    assert!(kinds(&s.judge()).contains(&AlertKind::JobLate));
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

mod sched;
