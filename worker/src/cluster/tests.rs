//! The loop's side of claiming, without a database: what a flush keeps
//! back, and what each answer makes of the run.

use std::sync::Arc;

use super::{
    thread::{beat_at, differing, BEAT_AFTER_FIRE, BEAT_CLEARANCE},
    *,
};

pub(super) fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).unwrap()
}

pub(super) fn job(overlap: &str) -> Arc<cronwarden_shared::config::JobSpec> {
    let cfg = Config::parse(
        std::path::Path::new("/x.toml"),
        &format!("[[job]]\nname = \"j\"\nschedule = \"* * * * * *\"\ncommand = [\"true\"]\noverlap = \"{overlap}\"\n"),
    )
    .unwrap();
    cfg.jobs[0].clone()
}

/// A cluster whose claim thread is the test: its requests come out of the
/// returned receiver.
pub(super) fn cluster() -> (
    Cluster,
    std_mpsc::Receiver<Request>,
    mpsc::UnboundedReceiver<Answer>,
) {
    let (tx, rx) = std_mpsc::channel();
    let (answers, answers_rx) = mpsc::unbounded_channel();
    let (_, exited) = std_mpsc::channel();
    let c = Cluster {
        tx,
        answers,
        exited,
        held: BTreeMap::new(),
        missed: BTreeMap::new(),
        missed_done: BTreeSet::new(),
        released: BTreeSet::new(),
        won: BTreeSet::new(),
        hashes: BTreeMap::new(),
        next_fire: None,
        ahead: BTreeMap::new(),
        ahead_won: BTreeSet::new(),
        ahead_released: BTreeSet::new(),
        trust_ahead_for: Duration::from_secs(15),
        host: "here".into(),
    };
    (c, rx, answers_rx)
}

/// A planned run of `covers` (empty: manual), as the plan leaves it in
/// the effects: its `running` record among the writes, and its spawn.
pub(super) fn planned(fx: &mut Effects, id: u64, covers: Vec<Timestamp>, overlap: &str) {
    let trigger = match covers.len() {
        0 => Trigger::Manual,
        1 => Trigger::Schedule,
        _ => Trigger::Catchup,
    };
    let record = RunRecord::new(id, "j", covers, trigger, Outcome::Running);
    fx.writes.push(Write::Insert(record.clone()));
    fx.spawns.push(Spawn {
        record,
        job: job(overlap),
        next_fire_at: Some(t(100)),
        delay: Duration::ZERO,
    });
}

pub(super) fn inserts(fx: &Effects) -> Vec<(u64, Outcome, Option<SkipReason>, Vec<Timestamp>)> {
    fx.writes
        .iter()
        .filter_map(|w| match w {
            Write::Insert(r) => Some((r.id, r.outcome, r.skip_reason, r.covers.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_scheduled_run_waits_for_its_claim_and_a_manual_one_does_not() {
    let (mut c, rx, _) = cluster();
    let mut fx = Effects::default();
    planned(&mut fx, 1, vec![t(1)], "skip");
    planned(&mut fx, 2, vec![], "skip");
    c.hold(&mut fx);
    // The manual run and its record go through; the scheduled one waits.
    assert_eq!(
        fx.spawns.iter().map(|s| s.record.id).collect::<Vec<_>>(),
        [2]
    );
    assert_eq!(inserts(&fx).iter().map(|i| i.0).collect::<Vec<_>>(), [2]);
    match rx.try_recv() {
        Ok(Request::Claim(claim, _)) => {
            assert_eq!(
                (claim.run_id, claim.covers, claim.exclusive),
                (1, vec![t(1)], true)
            );
        }
        _ => panic!("no claim sent"),
    }
    assert!(rx.try_recv().is_err(), "one claim per run");
}

#[test]
fn a_won_claim_starts_the_run_for_the_times_it_won_and_its_end_is_recorded() {
    let (mut c, rx, _) = cluster();
    let mut fx = Effects::default();
    planned(&mut fx, 7, vec![t(1), t(2), t(3)], "allow");
    c.hold(&mut fx);
    let _ = rx.try_recv();
    let mut fx = Effects::default();
    let answer = Answer::Claim {
        ahead: false,
        run_id: 7,
        result: Ok(ClaimOutcome::Won(vec![t(3)])),
    };
    assert_eq!(c.resolve(answer, t(4), &mut fx), None);
    assert_eq!(
        inserts(&fx),
        [(7, Outcome::Running, None, vec![t(3)])],
        "the record stands for the won time only"
    );
    assert_eq!(fx.spawns[0].record.trigger, Trigger::Schedule);
    // The next flush lets it through, once.
    c.hold(&mut fx);
    assert_eq!(fx.spawns.len(), 1);
    assert!(rx.try_recv().is_err());
    let mut done = fx.spawns[0].record.clone();
    done.outcome = Outcome::Success;
    c.finished(&done);
    assert!(matches!(
        rx.try_recv(),
        Ok(Request::Finish {
            run_id: 7,
            outcome: "success"
        })
    ));
    // A run that was never claimed has no end to record.
    c.finished(&RunRecord::new(
        9,
        "j",
        vec![],
        Trigger::Manual,
        Outcome::Success,
    ));
    assert!(rx.try_recv().is_err());
}

#[test]
fn a_fire_a_peer_won_leaves_no_record_here_and_a_failed_claim_is_a_skip() {
    let (mut c, rx, _) = cluster();
    let mut fx = Effects::default();
    planned(&mut fx, 1, vec![t(1)], "allow");
    planned(&mut fx, 2, vec![t(2)], "allow");
    planned(&mut fx, 3, vec![t(3)], "allow");
    c.hold(&mut fx);
    while rx.try_recv().is_ok() {}
    let mut fx = Effects::default();
    let taken = Answer::Claim {
        ahead: false,
        run_id: 1,
        result: Ok(ClaimOutcome::Taken { host: "b".into() }),
    };
    assert_eq!(c.resolve(taken, t(5), &mut fx), Some(("j".into(), 1)));
    assert!(fx.writes.is_empty() && fx.spawns.is_empty());
    assert!(matches!(
        fx.events.as_slice(),
        [Event::Skip {
            reason: SkipReason::Peer,
            run_id: 1,
            ..
        }]
    ));
    let mut fx = Effects::default();
    let failed = Answer::Claim {
        ahead: false,
        run_id: 2,
        result: Err("connection refused".into()),
    };
    assert_eq!(c.resolve(failed, t(5), &mut fx), Some(("j".into(), 2)));
    assert_eq!(
        inserts(&fx),
        [(
            2,
            Outcome::Skipped,
            Some(SkipReason::StoreUnavailable),
            vec![t(2)]
        )]
    );
    assert!(fx.spawns.is_empty());
    // A run live on a peer: skipped (overlap) here, reported as the peer's
    // fire, so only the host running it judges its overlap.
    let mut fx = Effects::default();
    planned(&mut fx, 5, vec![t(4)], "skip");
    c.hold(&mut fx);
    while rx.try_recv().is_ok() {}
    let mut fx = Effects::default();
    let busy = Answer::Claim {
        ahead: false,
        run_id: 5,
        result: Ok(ClaimOutcome::Busy {
            host: "b".into(),
            run_id: 2,
        }),
    };
    assert!(c.resolve(busy, t(5), &mut fx).is_some());
    assert_eq!(
        inserts(&fx),
        [(5, Outcome::Skipped, Some(SkipReason::Overlap), vec![t(4)])]
    );
    assert!(matches!(
        fx.events.as_slice(),
        [Event::Skip {
            reason: SkipReason::Peer,
            ..
        }]
    ));
    // Stopping: what still waits is recorded worker_down, and released.
    let mut fx = Effects::default();
    assert_eq!(c.abandon(t(6), &mut fx), [("j".to_string(), 3)]);
    assert_eq!(
        inserts(&fx),
        [(
            3,
            Outcome::Skipped,
            Some(SkipReason::WorkerDown),
            vec![t(3)]
        )]
    );
    // Its row ends skipped in the ledger, should its claim win (the
    // thread takes this after the claim).
    assert!(matches!(
        rx.try_recv(),
        Ok(Request::SkipClaimed {
            run_id: 3,
            reason: "worker_down"
        })
    ));
    // An answer for a run given up: a won claim is ended in the ledger.
    let late = Answer::Claim {
        ahead: false,
        run_id: 3,
        result: Ok(ClaimOutcome::Won(vec![t(3)])),
    };
    assert_eq!(c.resolve(late, t(7), &mut Effects::default()), None);
    assert!(matches!(
        rx.try_recv(),
        Ok(Request::Finish { run_id: 3, .. })
    ));
}

#[test]
fn a_claim_the_thread_cannot_take_fails_closed() {
    let (mut c, rx, mut answers) = cluster();
    drop(rx);
    let mut fx = Effects::default();
    planned(&mut fx, 4, vec![t(1)], "allow");
    c.hold(&mut fx);
    assert!(fx.spawns.is_empty());
    let answer = answers.try_recv().expect("an answer at once");
    assert!(matches!(&answer, Answer::Claim { result: Err(_), .. }));
    let mut fx = Effects::default();
    assert!(c.resolve(answer, t(2), &mut fx).is_some());
    assert!(fx.spawns.is_empty());
}

/// The thread's report of the ledger goes to the supervisor as is, and
/// touches no run.
#[test]
fn a_health_report_is_passed_to_the_supervisor() {
    let (mut c, _rx, _answers) = cluster();
    let h = cronwarden_shared::wire::ClusterHealth {
        host: "h1".into(),
        skew_ms: Some(2500),
        skew_bound_ms: 2000,
        differs: vec![],
        peers: vec![],
    };
    let mut fx = Effects::default();
    assert!(c
        .resolve(Answer::Health(h.clone()), t(2), &mut fx)
        .is_none());
    assert_eq!(fx.events, [Event::Cluster(h)]);
    assert!(fx.spawns.is_empty() && fx.writes.is_empty());
}

fn peer_skips(fx: &Effects) -> Vec<Timestamp> {
    fx.events
        .iter()
        .filter_map(|e| match e {
            Event::Skip {
                reason: SkipReason::Peer,
                scheduled_at,
                ..
            } => Some(*scheduled_at),
            _ => None,
        })
        .collect()
}

/// A catch-up run whose covered times were partly won by a peer: it runs
/// once for the times won here, and the supervisor hears that the others
/// are the peer's (its expectation must not wait for them here).
#[test]
fn a_partly_won_catch_up_runs_once_and_reports_the_peers_times() {
    let (mut c, rx, _) = cluster();
    let mut fx = Effects::default();
    planned(&mut fx, 8, vec![t(1), t(2), t(3)], "allow");
    c.hold(&mut fx);
    let _ = rx.try_recv();
    let mut fx = Effects::default();
    let answer = Answer::Claim {
        ahead: false,
        run_id: 8,
        result: Ok(ClaimOutcome::Won(vec![t(1), t(3)])),
    };
    assert_eq!(c.resolve(answer, t(4), &mut fx), None);
    assert_eq!(peer_skips(&fx), [t(2)]);
    assert_eq!(
        inserts(&fx),
        [(8, Outcome::Running, None, vec![t(1), t(3)])]
    );
    assert_eq!(fx.spawns.len(), 1);
    assert_eq!(fx.spawns[0].record.trigger, Trigger::Catchup);
    // Wholly won: nothing is a peer's.
    let mut fx = Effects::default();
    planned(&mut fx, 9, vec![t(5), t(6)], "allow");
    c.hold(&mut fx);
    let mut fx = Effects::default();
    let answer = Answer::Claim {
        ahead: false,
        run_id: 9,
        result: Ok(ClaimOutcome::Won(vec![t(5), t(6)])),
    };
    c.resolve(answer, t(7), &mut fx);
    assert!(peer_skips(&fx).is_empty());
    // Wholly taken: every covered time is reported, not just the last.
    let mut fx = Effects::default();
    planned(&mut fx, 10, vec![t(8), t(9)], "allow");
    c.hold(&mut fx);
    let mut fx = Effects::default();
    let answer = Answer::Claim {
        ahead: false,
        run_id: 10,
        result: Ok(ClaimOutcome::Taken { host: "b".into() }),
    };
    assert!(c.resolve(answer, t(10), &mut fx).is_some());
    assert_eq!(peer_skips(&fx), [t(8), t(9)]);
    assert!(fx.writes.is_empty() && fx.spawns.is_empty());
}

/// A job differs when the majority of live hosts holds another hash; a
/// job no live host published yet differs from nothing.
#[test]
fn a_definition_differs_only_from_a_majority_that_exists() {
    let defs = vec![
        ("a".to_string(), "1".to_string()),
        ("b".to_string(), "2".to_string()),
        ("c".to_string(), "3".to_string()),
    ];
    let majority = BTreeMap::from([
        ("a".to_string(), "1".to_string()),
        ("b".to_string(), "9".to_string()),
    ]);
    assert_eq!(
        differing(&defs, &majority),
        BTreeMap::from([("b".to_string(), ("2".to_string(), "9".to_string()))])
    );
}

/// A `misfire` skip as the plan leaves it in the effects.
fn missed(fx: &mut Effects, id: u64, at: Timestamp, reason: SkipReason) {
    let mut rec = RunRecord::new(id, "j", vec![at], Trigger::Schedule, Outcome::Skipped);
    rec.skip_reason = Some(reason);
    fx.writes.push(Write::Insert(rec));
    fx.events.push(Event::Skip {
        job: "j".into(),
        run_id: id,
        scheduled_at: at,
        reason,
        busy_run_id: None,
        next_fire_at: Some(t(100)),
    });
}

fn skip_reasons(fx: &Effects) -> Vec<(Timestamp, SkipReason)> {
    fx.events
        .iter()
        .filter_map(|e| match e {
            Event::Skip {
                scheduled_at,
                reason,
                ..
            } => Some((*scheduled_at, *reason)),
            _ => None,
        })
        .collect()
}

/// A fire this host missed (down, restarted) is reported as a misfire
/// only once the ledger says no peer has it: a peer's fire is reported to
/// the supervisor as the peer's and its record is removed here.
#[test]
fn a_missed_fire_a_peer_ran_is_not_a_misfire_here() {
    let (mut c, rx, _) = cluster();
    let mut fx = Effects::default();
    missed(&mut fx, 1, t(1), SkipReason::Misfire);
    missed(&mut fx, 2, t(2), SkipReason::Misfire);
    missed(&mut fx, 3, t(3), SkipReason::Paused);
    c.hold(&mut fx);
    // Every record is stored at once; only the paused skip's event, this
    // host's alone, passes.
    assert_eq!(
        inserts(&fx).iter().map(|i| i.0).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(skip_reasons(&fx), [(t(3), SkipReason::Paused)]);
    match rx.try_recv() {
        Ok(Request::Missed(fires)) => assert_eq!(
            fires,
            [(1, "j".to_string(), t(1)), (2, "j".to_string(), t(2))]
        ),
        _ => panic!("the ledger was not asked"),
    }
    let mut fx = Effects::default();
    let answer = Answer::Missed(vec![(1, Some("b".into())), (2, None)]);
    assert_eq!(c.resolve(answer, t(5), &mut fx), None);
    assert!(
        matches!(fx.writes[..], [Write::Forget { run_id: 1 }]),
        "the peer's fire's record is removed, the misfire's stays: {:?}",
        fx.writes
    );
    // The flush that follows lets the answered misfire's event through,
    // rather than ask the ledger again (and again).
    c.hold(&mut fx);
    assert!(rx.try_recv().is_err(), "the ledger was asked again");
    assert_eq!(
        skip_reasons(&fx),
        [(t(1), SkipReason::Peer), (t(2), SkipReason::Misfire)]
    );
    // Stopping before the ledger answered: reported as misfires.
    let mut fx = Effects::default();
    missed(&mut fx, 4, t(4), SkipReason::Misfire);
    c.hold(&mut fx);
    assert!(fx.events.is_empty());
    let mut fx = Effects::default();
    assert!(c.abandon(t(6), &mut fx).is_empty());
    c.hold(&mut fx);
    assert!(fx.writes.is_empty(), "{:?}", fx.writes);
    assert_eq!(
        skip_reasons(&fx),
        [(t(4), SkipReason::Misfire)],
        "the stopping worker's last flush reports them"
    );
}

/// A misfire's record goes to the store in the flush that moves its job's
/// cursor past it, while the ledger is still asked: a worker killed before
/// the answer (whose replacement goes on from the moved cursor) leaves
/// the fire recorded, not recorded nowhere.
#[test]
fn a_misfire_is_stored_with_the_cursor_that_passes_it() {
    let (mut c, _rx, _) = cluster();
    let mut fx = Effects::default();
    fx.writes.push(Write::Claim {
        job: "j".into(),
        from: Some(t(1)),
        to: Some(t(3)),
        last_scheduled_at: Some(t(2)),
        rearm: None,
    });
    missed(&mut fx, 1, t(1), SkipReason::Misfire);
    missed(&mut fx, 2, t(2), SkipReason::Misfire);
    c.hold(&mut fx);
    assert!(matches!(fx.writes[0], Write::Claim { .. }));
    assert_eq!(
        inserts(&fx),
        [
            (1, Outcome::Skipped, Some(SkipReason::Misfire), vec![t(1)]),
            (2, Outcome::Skipped, Some(SkipReason::Misfire), vec![t(2)]),
        ],
        "the records left with the cursor's move"
    );
    assert!(
        fx.events.is_empty(),
        "reported only once the ledger answers"
    );
}

/// A worker that replaced a dead one asks the ledger to record the
/// predecessor's runs lost, all but those still alive; an alive one's
/// end (lost, once it is gone) reaches the ledger like a run it won.
#[test]
fn a_replacement_worker_hands_its_predecessors_runs_to_the_ledger() {
    let (mut c, rx, _) = cluster();
    c.take_over(500, vec![42]);
    match rx.try_recv() {
        Ok(Request::TakeOver { below, alive }) => assert_eq!((below, alive), (500, vec![42])),
        _ => panic!("no take-over sent"),
    }
    let gone = RunRecord::new(42, "j", vec![t(1)], Trigger::Schedule, Outcome::Lost);
    c.finished(&gone);
    assert!(matches!(
        rx.try_recv(),
        Ok(Request::Finish {
            run_id: 42,
            outcome: "lost"
        })
    ));
}

/// Whether a beat begun at `begins` keeps clear of the claims of a fire
/// at `fire`: not within the clearance before the claim ahead or the
/// instant, nor between either and the claim's arrival.
fn clear_of(begins: Instant, fire: Instant) -> bool {
    [fire - AHEAD, fire]
        .into_iter()
        .all(|sent| begins + BEAT_CLEARANCE <= sent || begins >= sent + BEAT_AFTER_FIRE)
}

/// A beat due just before a fire's claim ahead or its instant (or at
/// either) waits until just after that claim; one due well before or
/// after runs on time; and however the fires follow one another, a beat
/// is never held back longer than the clearance and the margin after a
/// fire together.
#[test]
fn a_beat_keeps_clear_of_the_next_fire_within_a_bound() {
    let base = Instant::now();
    let ms = |n: u64| base + Duration::from_millis(n);
    let fire = ms(1000);
    let sent = fire - AHEAD;
    // No fire armed, or one far off either way: on time.
    assert_eq!(beat_at(ms(500), base, None), ms(500));
    assert_eq!(beat_at(ms(500), base, Some(fire)), ms(500));
    assert_eq!(beat_at(ms(1100), base, Some(fire)), ms(1100));
    // Between the claim ahead (and its arrival) and the clearance before
    // the instant: on time.
    let between = sent + BEAT_AFTER_FIRE;
    assert_eq!(beat_at(between, base, Some(fire)), between);
    // Within the clearance before the instant, or at the instant before
    // its claim came: just after the instant.
    for due in [
        1000 - BEAT_CLEARANCE.as_millis() as u64 + 1,
        990,
        1000,
        1010,
    ] {
        assert_eq!(
            beat_at(ms(due), base, Some(fire)),
            fire + BEAT_AFTER_FIRE,
            "{due}"
        );
    }
    // Likewise for the claim ahead: just after it is sent.
    for before in [
        BEAT_CLEARANCE - Duration::from_millis(1),
        Duration::from_millis(10),
    ] {
        assert_eq!(
            beat_at(sent - before, base, Some(fire)),
            sent + BEAT_AFTER_FIRE
        );
    }
    for after in [Duration::ZERO, Duration::from_millis(10)] {
        assert_eq!(
            beat_at(sent + after, base, Some(fire)),
            sent + BEAT_AFTER_FIRE
        );
    }
    // Overdue (the thread was busy with a claim until `now`): judged from
    // `now`, so a beat due well before the fire but free only within the
    // clearance waits for the fire; one overdue past the bound runs at once.
    assert_eq!(
        beat_at(ms(950), ms(975), Some(fire)),
        fire + BEAT_AFTER_FIRE
    );
    // ... but no longer than its bound from when it was due.
    assert_eq!(
        beat_at(ms(920), ms(975), Some(fire)),
        ms(920) + BEAT_CLEARANCE + BEAT_AFTER_FIRE
    );
    assert!(beat_at(ms(800), ms(900), Some(fire)) <= ms(900));
    assert!(beat_at(ms(900), ms(980), Some(fire)) <= ms(980));
    for due in 800..1100 {
        for now in (due..due + 200).step_by(7) {
            let at = beat_at(ms(due), ms(now), Some(fire));
            // Held back no longer than the bound from when it was due (at
            // once if the thread was free only later).
            assert!(
                at <= ms(now).max(ms(due) + BEAT_CLEARANCE + BEAT_AFTER_FIRE),
                "{due} {now}"
            );
            // Begun at `at` or at once: never within the clearance before
            // a claim of the fire, nor between it and its arrival, unless
            // the bound forced it.
            let begins = at.max(ms(now));
            assert!(
                clear_of(begins, fire) || begins >= ms(due) + BEAT_CLEARANCE + BEAT_AFTER_FIRE,
                "{due} {now}"
            );
        }
    }
    // The oracle of the bound: every due instant and every next fire
    // around it (its claim ahead around it too), 1 ms apart.
    for due in 900..1100 {
        for f in 800..1300 {
            let at = beat_at(ms(due), base, Some(ms(f)));
            assert!(at >= ms(due), "{due} {f}");
            assert!(
                at <= ms(due) + BEAT_CLEARANCE + BEAT_AFTER_FIRE,
                "{due} {f}"
            );
            assert!(clear_of(at, ms(f)), "{due} {f}");
        }
    }
}

/// The thread hears of the next fire only when it moves by more than a
/// millisecond (the loop recomputes it at every flush), and of its end.
#[test]
fn the_next_fire_is_told_to_the_thread_when_it_moves() {
    let (mut c, rx, _) = cluster();
    let soon = Timestamp::now() + jiff::SignedDuration::from_secs(10);
    c.next_fire(Some(soon));
    assert!(matches!(rx.try_recv(), Ok(Request::NextFire(Some(_)))));
    c.next_fire(Some(soon));
    assert!(rx.try_recv().is_err(), "the same fire is not told twice");
    c.next_fire(Some(soon + jiff::SignedDuration::from_secs(1)));
    assert!(matches!(rx.try_recv(), Ok(Request::NextFire(Some(_)))));
    c.next_fire(None);
    assert!(matches!(rx.try_recv(), Ok(Request::NextFire(None))));
    // The farthest fire there can be is no panic (whether the monotonic
    // clock can hold it is the platform's).
    c.next_fire(Some(Timestamp::MAX));
    c.next_fire(Some(Timestamp::MIN));
    assert!(matches!(rx.try_recv(), Ok(Request::NextFire(_))));
}
