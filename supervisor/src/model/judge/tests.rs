//! Every detector opening and resolving, driven step by step against a
//! fake clock (a monotonic offset from one `Instant`, and a wall clock
//! that starts at a fixed `Timestamp`), with no sleeps and no processes:
//! events are applied as the worker would send them, and each expectation
//! (thresholds, instants, kinds) is written out by hand from the config
//! below rather than computed by the code under test.

use std::{path::Path, sync::Arc, time::Duration};

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

    /// A healthy worker's heartbeat and the loop's judgement every second
    /// up to `to` (not at it): a longer gap between judgements is the
    /// supervisor's own pause, which some detectors discount.
    fn tick_to(&mut self, to: Duration) -> &mut Self {
        while self.elapsed + Duration::from_secs(1) < to {
            let next = self.elapsed + Duration::from_secs(1);
            let seq = self.m.worker.seq.unwrap_or(0) + 1;
            self.at(next).beat(seq).evaluate();
        }
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
            .worker_gone_at("exited with code 1".into(), true, &[], now, wall);
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
pub(super) fn notices(e: &Evaluation) -> Vec<(String, AlertKind, Option<String>)> {
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
    assert_eq!(s.m.jobs["a"].last_forensics, Some(Box::new(found)));
}

/// The job detectors.
mod jobs;

/// Wall-clock steps, restarts and the supervisor's pauses.
mod time;

/// The armed cross-check under load; a replacement's arming.
mod armed;

mod sched;
