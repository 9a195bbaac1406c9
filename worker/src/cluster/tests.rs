//! The loop's side of claiming, without a database: what a flush keeps
//! back, and what each answer makes of the run.

use std::sync::Arc;

use super::*;

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).unwrap()
}

fn job(overlap: &str) -> Arc<cronwarden_shared::config::JobSpec> {
    let cfg = Config::parse(
        std::path::Path::new("/x.toml"),
        &format!("[[job]]\nname = \"j\"\nschedule = \"* * * * * *\"\ncommand = [\"true\"]\noverlap = \"{overlap}\"\n"),
    )
    .unwrap();
    Arc::new(cfg.jobs[0].clone())
}

/// A cluster whose claim thread is the test: its requests come out of the
/// returned receiver.
fn cluster() -> (
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
        released: BTreeSet::new(),
        won: BTreeSet::new(),
        hashes: BTreeMap::new(),
    };
    (c, rx, answers_rx)
}

/// A planned run of `covers` (empty: manual), as the plan leaves it in
/// the effects: its `running` record among the writes, and its spawn.
fn planned(fx: &mut Effects, id: u64, covers: Vec<Timestamp>, overlap: &str) {
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

fn inserts(fx: &Effects) -> Vec<(u64, Outcome, Option<SkipReason>, Vec<Timestamp>)> {
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
    // An answer for a run given up: a won claim is ended in the ledger.
    let late = Answer::Claim {
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
