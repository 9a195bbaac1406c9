//! Fires claimed ahead of their instant (several hosts, `plan/ahead.rs`):
//! which are, and that the plan's record of each carries the id it was
//! claimed under, whatever the plan makes of it at its instant.

use super::*;

impl Sim {
    /// The loop's claim ahead at `ms` milliseconds before T0 + `secs`.
    fn claim_ahead(&mut self, secs: i64, ms: i64) -> Vec<(String, Timestamp, u64)> {
        self.clocks.wall = ts(secs) - SignedDuration::from_millis(ms);
        let mut fx = Effects::default();
        let fires = self.plan.claim_ahead(ts(secs), &mut fx);
        self.apply(fx);
        fires
            .into_iter()
            .map(|f| (f.job.name.clone(), f.at, f.run_id))
            .collect()
    }

    /// The loop's flush in cluster mode: fires claimed ahead that left
    /// the schedule are recorded.
    fn drop_stale_ahead(&mut self) {
        let mut fx = Effects::default();
        self.plan
            .drop_stale_ahead(self.clocks.wall, crate::cluster::RELEASE_AFTER, &mut fx);
        self.apply(fx);
    }
}

#[test]
fn a_fire_claimed_ahead_runs_under_the_id_it_was_claimed_with() {
    let mut sim = Sim::new(&job("j", "*/10 * * * * *", ""));
    let ahead = sim.claim_ahead(10, 100);
    let [(name, at, id)] = ahead.as_slice() else {
        panic!("{ahead:?}");
    };
    assert_eq!((name.as_str(), *at), ("j", ts(10)));
    assert!(sim.claim_ahead(10, 50).is_empty(), "claimed once");
    // Nothing starts before its instant.
    sim.turn();
    assert!(sim.children.is_empty());
    sim.run_until(10);
    assert_eq!(sim.child_of("j"), [*id]);
    assert_eq!(sim.records("j")[0].covers, [ts(10)]);
}

#[test]
fn a_fire_the_plan_would_not_start_is_not_claimed_ahead() {
    let toml = [
        job("paused", "*/10 * * * * *", ""),
        job("busy", "*/10 * * * * *", "overlap = \"skip\""),
        job("allowed", "*/10 * * * * *", "overlap = \"allow\""),
    ]
    .concat();
    let mut sim = Sim::new(&toml);
    sim.command(Command::Pause {
        job: "paused".into(),
        request: None,
    });
    sim.run_until(10);
    let ahead: Vec<String> = sim.claim_ahead(20, 100).into_iter().map(|f| f.0).collect();
    // `busy` and `allowed` still run from T0 + 10: only `allowed` may
    // start a second run.
    assert_eq!(ahead, ["allowed"]);
}

#[test]
fn a_fire_claimed_ahead_and_paused_in_the_window_is_skipped_under_its_id() {
    let mut sim = Sim::new(&job("j", "*/10 * * * * *", ""));
    let id = sim.claim_ahead(10, 100)[0].2;
    sim.command(Command::Pause {
        job: "j".into(),
        request: None,
    });
    sim.run_until(10);
    assert!(sim.children.is_empty());
    let records = sim.records("j");
    assert_eq!(records.len(), 1);
    assert_eq!(
        (records[0].id, records[0].skip_reason),
        (id, Some(SkipReason::Paused))
    );
}

#[test]
fn a_fire_claimed_ahead_whose_job_a_reload_removes_is_recorded_removed_once() {
    let mut sim = Sim::new(&[job("j", "*/10 * * * * *", ""), job("k", "0 0 * * * *", "")].concat());
    let id = sim.claim_ahead(10, 100)[0].2;
    sim.configure(&job("k", "0 0 * * * *", ""));
    sim.drop_stale_ahead();
    // Judged at the fire's instant, as any skip (a reload may put it back
    // before then).
    assert!(sim.records("j").is_empty());
    // The loop wakes for that instant, even once it passed after the
    // judgement (while the rest of the turn ran).
    sim.clocks.wall = ts(10) + SignedDuration::from_millis(5);
    assert_eq!(sim.plan.earliest_ahead_unjudged(), Some(ts(10)));
    sim.clocks.wall = ts(10);
    sim.drop_stale_ahead();
    sim.drop_stale_ahead();
    assert_eq!(sim.plan.earliest_ahead_unjudged(), None, "judged: no spin");
    let records = sim.records("j");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(
        (
            records[0].id,
            records[0].skip_reason,
            records[0].covers.clone()
        ),
        (id, Some(SkipReason::Removed), vec![ts(10)])
    );
    assert!(sim.events.iter().any(|e| matches!(e,
        Event::Skip { job, reason: SkipReason::Removed, run_id, .. } if job == "j" && *run_id == id)));
    sim.run_until(20);
    assert_eq!(sim.records("j").len(), 1);
    // The worker stops before the instant: recorded then (the next worker
    // would never see the fire due).
    let mut sim = Sim::new(&[job("j", "*/10 * * * * *", ""), job("k", "0 0 * * * *", "")].concat());
    let id = sim.claim_ahead(10, 100)[0].2;
    sim.configure(&job("k", "0 0 * * * *", ""));
    sim.drop_stale_ahead();
    assert!(sim.records("j").is_empty());
    let mut fx = Effects::default();
    sim.plan.drop_stale_ahead_now(sim.clocks.wall, &mut fx);
    sim.apply(fx);
    let records = sim.records("j");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(
        (records[0].id, records[0].skip_reason),
        (id, Some(SkipReason::Removed))
    );
    // A reload that keeps the job and its fire keeps the claim.
    let mut sim = Sim::new(&job("j", "*/10 * * * * *", ""));
    let id = sim.claim_ahead(10, 100)[0].2;
    sim.configure(&job("j", "*/10 * * * * *", ""));
    sim.drop_stale_ahead();
    sim.run_until(10);
    assert_eq!(sim.child_of("j"), [id]);
}

/// A fire a reload took off the schedule within the window, and the wall
/// clock stepped back: not released (never due, it would get no record
/// here), but recorded `removed` once its claim is older than the release
/// bound.
#[test]
fn a_fire_reloaded_away_is_recorded_removed_when_the_wall_clock_steps_back() {
    let mut sim = Sim::new(&[job("j", "*/10 * * * * *", ""), job("k", "0 0 * * * *", "")].concat());
    let id = sim.claim_ahead(10, 100)[0].2;
    sim.configure(&job("k", "0 0 * * * *", ""));
    sim.step_wall(-3600);
    assert!(sim.plan.take_released_ahead().is_empty());
    sim.drop_stale_ahead();
    assert!(sim.records("j").is_empty(), "young yet");
    if let Some(c) = sim.plan.last_clocks.as_mut() {
        c.mono += crate::cluster::RELEASE_AFTER + Duration::from_millis(1);
    }
    sim.plan.expire_ahead(crate::cluster::RELEASE_AFTER);
    assert!(sim.plan.take_released_ahead().is_empty());
    sim.drop_stale_ahead();
    let records = sim.records("j");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(
        (records[0].id, records[0].skip_reason),
        (id, Some(SkipReason::Removed))
    );
}

#[test]
fn a_fire_claimed_ahead_is_released_when_the_wall_clock_steps_back() {
    let mut sim = Sim::new(&job("j", "*/10 * * * * *", ""));
    let id = sim.claim_ahead(10, 100)[0].2;
    assert!(sim.plan.take_released_ahead().is_empty());
    // An hour back in the window: the fire's instant is an hour off now.
    sim.step_wall(-3600);
    assert_eq!(sim.plan.take_released_ahead(), [id]);
    sim.drop_stale_ahead();
    // Through the fire's instant again: it fires then, under another id.
    sim.run_until(10);
    let records = sim.records("j");
    assert!(!records.is_empty(), "the job fired again after the step");
    assert!(
        records.iter().all(|r| r.id != id),
        "the released id is nobody's record"
    );
}

#[test]
fn a_fire_claimed_ahead_and_not_due_in_time_is_released_and_claimed_at_its_instant() {
    let mut sim = Sim::new(&job("j", "*/10 * * * * *", ""));
    let id = sim.claim_ahead(10, 100)[0].2;
    sim.plan.expire_ahead(crate::cluster::RELEASE_AFTER);
    assert!(sim.plan.take_released_ahead().is_empty(), "young yet");
    // The loop turns late on the monotonic clock, the fire not due yet
    // on the wall clock (stepped back by less than a clock jump).
    if let Some(c) = sim.plan.last_clocks.as_mut() {
        c.mono += crate::cluster::RELEASE_AFTER + Duration::from_millis(1);
    }
    sim.plan.expire_ahead(crate::cluster::RELEASE_AFTER);
    assert_eq!(sim.plan.take_released_ahead(), [id]);
    assert!(
        sim.claim_ahead(10, 50).is_empty(),
        "not claimed ahead again"
    );
    sim.run_until(10);
    let started = sim.child_of("j");
    assert_eq!(started.len(), 1);
    assert_ne!(started[0], id, "claimed at its instant under a new id");
    assert!(sim.plan.take_released_ahead().is_empty());
}

/// A reload that takes a fire claimed ahead off the schedule and a second
/// that puts it back, both within the window: the fire ends in one record,
/// under the id it was claimed with (the ledger's row is that id's: two
/// ids would be two claims of one fire, the second answered taken).
#[test]
fn a_fire_reloaded_away_and_back_within_the_window_ends_in_one_record() {
    let mut sim = Sim::new(&job("j", "*/10 * * * * *", ""));
    let id = sim.claim_ahead(10, 100)[0].2;
    // Away: `*/7` next fires at 14, past the claimed fire at 10.
    sim.configure(&job("j", "*/7 * * * * *", ""));
    sim.drop_stale_ahead();
    sim.clocks.wall = ts(10) - SignedDuration::from_millis(50);
    sim.configure(&job("j", "*/10 * * * * *", ""));
    sim.drop_stale_ahead();
    assert!(
        sim.claim_ahead(10, 40).is_empty(),
        "claimed ahead once: its claim stands"
    );
    sim.run_until(10);
    sim.drop_stale_ahead();
    let records = sim.records("j");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(
        (records[0].id, records[0].covers.clone()),
        (id, vec![ts(10)])
    );
    assert_eq!(sim.child_of("j"), [id]);
}
