//! The `clock_jumped` condition: news that the wall clock was stepped or
//! the host suspended, shown for [`CLOCK_JUMP_NEWS`] after the supervisor
//! read the worker's report of it. Informational: every age the judgement
//! measures is on the monotonic clock, so a jump degrades nothing; but an
//! operator reading a status, or a record's odd `started_at`, should see
//! that the clock moved, by how much, which way and when.

use std::time::Duration;

use cronwarden_shared::{
    alert_kind::AlertKind,
    status::{ClockJump, ClockJumpKind, Severity, State},
    timefmt::human_duration,
};
use serde_json::json;
use tokio::time::Instant;

use super::worker::condition;
use crate::alerts::Condition;

/// How long a clock jump stays in the status.
pub(crate) const CLOCK_JUMP_NEWS: Duration = Duration::from_secs(600);

/// The latest jump, while it is news.
pub(super) fn recent(last: Option<&(ClockJump, Instant)>, now: Instant) -> Option<Condition> {
    let (j, seen) = last?;
    if now.saturating_duration_since(*seen) >= CLOCK_JUMP_NEWS {
        return None;
    }
    // To the nearest second: a step of 2 h is measured as 7,199,998 ms
    // or 7,200,003 ms (the clocks are read one after the other), and
    // should read "2h" either way.
    let secs = j.jump_ms.unsigned_abs().saturating_add(500) / 1000;
    let size = human_duration(Duration::from_secs(secs));
    let direction = if j.jump_ms < 0 { "backward" } else { "forward" };
    let what = match j.kind {
        ClockJumpKind::Step => format!("the wall clock was stepped {direction} by {size}"),
        ClockJumpKind::Suspend => format!("the host was suspended for {size}"),
    };
    let due = if j.fires_due > 0 {
        format!(
            "; {} scheduled time(s) of {} job(s) passed over, accounted per each job's misfire policy",
            j.fires_due, j.jobs_due
        )
    } else {
        String::new()
    };
    Some(condition(
        AlertKind::ClockJumped,
        Severity::Info,
        State::Ok,
        format!(
            "{what} (noticed at {}){due}; runs and lateness are measured on the monotonic clock",
            j.at
        ),
        json!({
            "at": j.at,
            "jump_ms": j.jump_ms,
            "direction": direction,
            "kind": j.kind.as_str(),
            "jobs_due": j.jobs_due,
            "fires_due": j.fires_due,
        }),
        true,
    ))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use cronwarden_shared::{
        config::Config,
        status::{Outcome, RunRecord, State, Trigger},
        wire::Event,
    };
    use jiff::Timestamp;

    use super::*;
    use crate::model::{Model, REBASE_WINDOW};

    fn jump(jump_ms: i64, kind: ClockJumpKind) -> Event {
        Event::ClockJump(ClockJump {
            at: "2026-12-03T12:00:00Z".parse().unwrap(),
            jump_ms,
            jobs_due: 1,
            fires_due: 7200,
            kind,
        })
    }

    fn model() -> Model {
        let config = Config::parse(
            Path::new("/x/cronwarden.toml"),
            "[[job]]\nname = \"a\"\nschedule = \"@every 1h\"\nshell = \"true\"\n",
        )
        .unwrap();
        Model::for_test(config)
    }

    #[test]
    fn a_step_is_news_for_ten_minutes_and_changes_no_state() {
        let mut m = model();
        let t0 = Instant::now();
        let wall: Timestamp = "2026-12-03T12:00:00Z".parse().unwrap();
        m.apply(jump(7_200_000, ClockJumpKind::Step), t0);
        let e = m.evaluate(t0, wall);
        let c: Vec<_> = e
            .notices
            .iter()
            .filter(|n| n.kind == AlertKind::ClockJumped)
            .collect();
        assert_eq!(c.len(), 1, "{:?}", e.notices);
        assert_eq!(c[0].event, "opened");
        assert_eq!(c[0].severity, Severity::Info);
        assert!(
            c[0].summary
                .starts_with("the wall clock was stepped forward by 2h"),
            "{}",
            c[0].summary
        );
        assert!(c[0].summary.contains("7200 scheduled time(s) of 1 job(s)"));
        assert_eq!(c[0].details["direction"], "forward");
        assert_eq!(c[0].details["kind"], "step");
        assert_eq!(c[0].details["jump_ms"], 7_200_000);
        // Informational: not a reason, not degraded; but listed.
        let s = m.status(t0 + Duration::from_secs(599), wall);
        // (No worker runs in this model: that is its only reason.)
        assert_eq!(s.reasons, ["no worker is running"]);
        assert!(s.alerts.iter().any(|a| a.kind == AlertKind::ClockJumped));
        assert_eq!(s.clock_jumps.len(), 1);
        // Measured on the monotonic clock from when it was read: a later
        // wall clock says nothing about it.
        let later = m.evaluate(t0 + CLOCK_JUMP_NEWS, wall);
        assert!(later
            .notices
            .iter()
            .any(|n| n.kind == AlertKind::ClockJumped && n.event == "resolved"));
        assert!(!later
            .status
            .alerts
            .iter()
            .any(|a| a.kind == AlertKind::ClockJumped));
    }

    #[test]
    fn backward_steps_and_suspends_say_so() {
        let t0 = Instant::now();
        let back: ClockJump = match jump(-600_000, ClockJumpKind::Step) {
            Event::ClockJump(j) => ClockJump { fires_due: 0, ..j },
            _ => unreachable!(),
        };
        let c = recent(Some(&(back, t0)), t0).unwrap();
        assert_eq!(c.state, State::Ok);
        assert!(
            c.summary
                .starts_with("the wall clock was stepped backward by 10m 0s (noticed at 2026-12-03T12:00:00Z); runs"),
            "{}",
            c.summary
        );
        assert_eq!(c.details["direction"], "backward");
        let Event::ClockJump(sus) = jump(3_600_000, ClockJumpKind::Suspend) else {
            unreachable!()
        };
        let c = recent(Some(&(sus, t0)), t0 + Duration::from_secs(60)).unwrap();
        assert!(
            c.summary.starts_with("the host was suspended for 1h"),
            "{}",
            c.summary
        );
        assert_eq!(c.details["kind"], "suspend");
        assert!(recent(None, t0).is_none());
    }

    fn per_second() -> Model {
        let config = Config::parse(
            Path::new("/x/cronwarden.toml"),
            "[[job]]\nname = \"s\"\nschedule = \"* * * * * *\"\nshell = \"true\"\n\
             [[job]]\nname = \"d\"\nschedule = \"0 10 * * *\"\nshell = \"true\"\n",
        )
        .unwrap();
        let mut m = Model::for_test(config);
        m.jobs.get_mut("s").unwrap().expected_next = Some(ts("2026-12-03T12:00:06Z"));
        m.jobs.get_mut("d").unwrap().expected_next = Some(ts("2026-12-04T10:00:00Z"));
        m
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn report(m: &mut Model, s: &str, d: &str, now: Instant) {
        let armed = |job: &str, t: &str| cronwarden_shared::wire::Armed {
            job: job.into(),
            next_fire_at: Some(ts(t)),
            paused: false,
        };
        m.apply(
            Event::Schedule {
                jobs: vec![armed("s", s), armed("d", d)],
            },
            now,
        );
    }

    fn back_10_minutes() -> Event {
        Event::ClockJump(ClockJump {
            at: ts("2026-12-03T11:50:00Z"),
            jump_ms: -600_000,
            jobs_due: 0,
            fires_due: 0,
            kind: ClockJumpKind::Step,
        })
    }

    /// Issue 13, reproduction 4: after a backward step a per-second job
    /// fires on the new clock; our expectation follows the worker's arming
    /// there instead of sitting 10 minutes ahead (a false misarmed), while
    /// a fixed-time job keeps its next fire.
    #[test]
    fn a_backward_step_rebases_expectations_on_the_workers_arming() {
        let mut m = per_second();
        let t0 = Instant::now();
        m.apply(back_10_minutes(), t0);
        report(&mut m, "2026-12-03T11:50:01Z", "2026-12-04T10:00:00Z", t0);
        assert_eq!(m.jobs["s"].expected_next, Some(ts("2026-12-03T11:50:01Z")));
        assert_eq!(m.jobs["d"].expected_next, Some(ts("2026-12-04T10:00:00Z")));
        // Once: a later report does not move it back again.
        report(&mut m, "2026-12-03T11:40:00Z", "2026-12-04T10:00:00Z", t0);
        assert_eq!(m.jobs["s"].expected_next, Some(ts("2026-12-03T11:50:01Z")));
    }

    #[test]
    fn no_rebase_without_a_backward_step_nor_to_a_time_the_new_clock_cannot_produce() {
        let t0 = Instant::now();
        // No step: an earlier arming stays a disagreement.
        let mut m = per_second();
        report(&mut m, "2026-12-03T11:50:01Z", "2026-12-04T10:00:00Z", t0);
        assert_eq!(m.jobs["s"].expected_next, Some(ts("2026-12-03T12:00:06Z")));
        // A forward step re-bases nothing either.
        let mut m = per_second();
        m.apply(jump(600_000, ClockJumpKind::Step), t0);
        report(&mut m, "2026-12-03T11:50:01Z", "2026-12-04T10:00:00Z", t0);
        assert_eq!(m.jobs["s"].expected_next, Some(ts("2026-12-03T12:00:06Z")));
        // An arming before the new clock's first fire (a worker armed an
        // hour back) is not the schedule on the new clock.
        let mut m = per_second();
        m.apply(back_10_minutes(), t0);
        report(&mut m, "2026-12-03T10:50:00Z", "2026-12-03T10:00:00Z", t0);
        assert_eq!(m.jobs["s"].expected_next, Some(ts("2026-12-03T12:00:06Z")));
        assert_eq!(m.jobs["d"].expected_next, Some(ts("2026-12-04T10:00:00Z")));
    }

    /// A fire line of the pass before the step, written once its process
    /// had started (after the step's report), moves our expectation back
    /// onto that pass; the schedule asked for again re-bases it, for
    /// REBASE_WINDOW after the step, not later.
    #[test]
    fn a_fire_line_of_the_pass_before_a_step_back_is_undone_by_the_next_report() {
        let mut m = per_second();
        let t0 = Instant::now();
        m.apply(back_10_minutes(), t0);
        report(&mut m, "2026-12-03T11:50:01Z", "2026-12-04T10:00:00Z", t0);
        m.worker.armed_report_requested = true;
        m.apply(
            fire("s", 7, "2026-12-03T12:00:06Z", "2026-12-03T12:00:07Z"),
            t0,
        );
        assert_eq!(m.jobs["s"].expected_next, Some(ts("2026-12-03T12:00:07Z")));
        // Asked for again if the digests now disagree.
        assert!(!m.worker.armed_report_requested);
        let later = t0 + Duration::from_secs(1);
        report(
            &mut m,
            "2026-12-03T11:50:02Z",
            "2026-12-04T10:00:00Z",
            later,
        );
        assert_eq!(m.jobs["s"].expected_next, Some(ts("2026-12-03T11:50:02Z")));
        // Its finish, its times accounted at its fire, moves nothing.
        let run = RunRecord::new(
            7,
            "s",
            vec![ts("2026-12-03T12:00:06Z")],
            Trigger::Schedule,
            Outcome::Success,
        );
        m.apply(Event::Finish { run }, later);
        assert_eq!(m.jobs["s"].expected_next, Some(ts("2026-12-03T11:50:02Z")));
        // Past the window, an arming before ours is a disagreement again.
        let past_window = t0 + REBASE_WINDOW + Duration::from_secs(1);
        m.apply(
            fire("s", 8, "2026-12-03T12:00:07Z", "2026-12-03T12:00:08Z"),
            past_window,
        );
        report(
            &mut m,
            "2026-12-03T11:51:02Z",
            "2026-12-04T10:00:00Z",
            past_window,
        );
        assert_eq!(m.jobs["s"].expected_next, Some(ts("2026-12-03T12:00:08Z")));
    }

    /// An `@every` job keeps the cadence anchored in the worker's store:
    /// stepped back to 11:50:00.5, its first fire on the new clock may be
    /// 11:50:01, sooner than a fresh cadence (a whole period on) would put
    /// it; that arming is adopted.
    #[test]
    fn an_every_job_is_rebased_on_its_cadence_after_a_step_back() {
        let config = Config::parse(
            Path::new("/x/cronwarden.toml"),
            "[[job]]\nname = \"e\"\nschedule = \"@every 3s\"\nshell = \"true\"\n",
        )
        .unwrap();
        let mut m = Model::for_test(config);
        m.jobs.get_mut("e").unwrap().expected_next = Some(ts("2026-12-03T12:00:06Z"));
        let t0 = Instant::now();
        m.apply(
            Event::ClockJump(ClockJump {
                at: ts("2026-12-03T11:50:00.5Z"),
                jump_ms: -600_000,
                jobs_due: 0,
                fires_due: 0,
                kind: ClockJumpKind::Step,
            }),
            t0,
        );
        m.apply(
            Event::Schedule {
                jobs: vec![cronwarden_shared::wire::Armed {
                    job: "e".into(),
                    next_fire_at: Some(ts("2026-12-03T11:50:01Z")),
                    paused: false,
                }],
            },
            t0,
        );
        assert_eq!(m.jobs["e"].expected_next, Some(ts("2026-12-03T11:50:01Z")));
    }

    /// The clock was stepped back while no worker ran: the new worker
    /// (started at 11:50:00 by our clock) arms on the new clock and has no
    /// earlier reading to report a jump against; its first schedule
    /// re-bases us. An arming in the past is not adopted.
    #[test]
    fn a_new_worker_started_on_a_clock_stepped_back_rebases_us() {
        let t0 = Instant::now();
        let started = ts("2026-12-03T11:50:00Z");
        let mut m = per_second();
        m.worker_spawned_at(2, t0, started);
        report(&mut m, "2026-12-03T11:50:01Z", "2026-12-04T10:00:00Z", t0);
        assert_eq!(m.jobs["s"].expected_next, Some(ts("2026-12-03T11:50:01Z")));
        let mut m = per_second();
        m.worker_spawned_at(2, t0, started);
        report(&mut m, "2026-12-03T11:40:00Z", "2026-12-04T10:00:00Z", t0);
        assert_eq!(m.jobs["s"].expected_next, Some(ts("2026-12-03T12:00:06Z")));
    }

    fn fire(job: &str, run_id: u64, at: &str, next: &str) -> Event {
        Event::Fire {
            job: job.into(),
            run_id,
            scheduled_at: Some(ts(at)),
            covers: vec![ts(at)],
            trigger: Trigger::Schedule,
            pid: 4000 + run_id as u32,
            pipes: vec![],
            started_at: ts(at),
            next_fire_at: Some(ts(next)),
        }
    }

    #[test]
    fn a_newer_jump_restarts_the_news() {
        let mut m = model();
        let t0 = Instant::now();
        m.apply(jump(5_000, ClockJumpKind::Step), t0);
        let later = t0 + Duration::from_secs(500);
        m.apply(jump(-5_000, ClockJumpKind::Step), later);
        let c = recent(m.last_clock_jump.as_ref(), t0 + CLOCK_JUMP_NEWS).unwrap();
        assert_eq!(c.details["direction"], "backward");
        assert!(recent(m.last_clock_jump.as_ref(), later + CLOCK_JUMP_NEWS).is_none());
    }
}
