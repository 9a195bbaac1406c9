//! Claims ahead of the fire's instant (`ahead.rs`), without a database.

use super::tests::{cluster, inserts, job, planned, t};
use super::*;
use crate::plan::AheadFire;

/// Claims `j`'s fire at `t(1)` ahead under run 7; returns the claim sent.
fn claim_ahead(c: &mut Cluster, rx: &std_mpsc::Receiver<Request>, overlap: &str) -> Claim {
    c.ahead(vec![AheadFire {
        job: job(overlap),
        at: t(1),
        run_id: 7,
    }]);
    match rx.try_recv() {
        Ok(Request::Claim(claim, _)) => claim,
        _ => panic!("no claim sent ahead"),
    }
}

fn ahead_answer(result: Result<ClaimOutcome, String>) -> Answer {
    Answer::Claim {
        run_id: 7,
        result,
        ahead: true,
    }
}

#[test]
fn a_fire_won_ahead_starts_at_its_instant_without_a_claim_round_trip() {
    let (mut c, rx, _) = cluster();
    let claim = claim_ahead(&mut c, &rx, "allow");
    assert!(claim.ahead);
    assert_eq!(claim.covers, [t(1)]);
    // Won before the instant: nothing happens yet.
    let mut fx = Effects::default();
    let won = ahead_answer(Ok(ClaimOutcome::Won(vec![t(1)])));
    assert_eq!(c.resolve(won, t(0), &mut fx), None);
    assert!(fx.writes.is_empty() && fx.spawns.is_empty() && fx.events.is_empty());
    // At the instant the plan starts it under the same id: it passes the
    // flush at once, with its record, and nothing is asked of the ledger.
    let mut fx = Effects::default();
    planned(&mut fx, 7, vec![t(1)], "allow");
    c.hold(&mut fx);
    assert_eq!(fx.spawns.len(), 1);
    assert_eq!(inserts(&fx), [(7, Outcome::Running, None, vec![t(1)])]);
    assert!(rx.try_recv().is_err(), "no claim at the instant");
    // Its end is the ledger's as any run's.
    let mut done = fx.spawns[0].record.clone();
    done.outcome = Outcome::Success;
    c.finished(&done);
    assert!(matches!(
        rx.try_recv(),
        Ok(Request::Finish { run_id: 7, .. })
    ));
}

#[test]
fn a_claim_ahead_unanswered_at_the_instant_is_waited_for_and_a_failed_one_claimed_again() {
    let (mut c, rx, _) = cluster();
    claim_ahead(&mut c, &rx, "allow");
    let mut fx = Effects::default();
    planned(&mut fx, 7, vec![t(1)], "allow");
    c.hold(&mut fx);
    assert!(fx.spawns.is_empty(), "held for its claim");
    assert!(rx.try_recv().is_err(), "the claim ahead is its claim");
    // The answer (won) starts it.
    let mut fx = Effects::default();
    let won = ahead_answer(Ok(ClaimOutcome::Won(vec![t(1)])));
    assert_eq!(c.resolve(won, t(1), &mut fx), None);
    assert_eq!(fx.spawns.len(), 1);
    // A claim ahead that failed is claimed again at the instant, as any.
    let (mut c, rx, _) = cluster();
    claim_ahead(&mut c, &rx, "allow");
    let failed = ahead_answer(Err("connection reset".into()));
    assert_eq!(c.resolve(failed, t(0), &mut Effects::default()), None);
    let mut fx = Effects::default();
    planned(&mut fx, 7, vec![t(1)], "allow");
    c.hold(&mut fx);
    assert!(fx.spawns.is_empty());
    assert!(matches!(rx.try_recv(), Ok(Request::Claim(c, _)) if !c.ahead && c.run_id == 7));
}

#[test]
fn a_claim_ahead_finding_a_peers_live_run_records_nothing_and_claims_at_the_instant() {
    let (mut c, rx, _) = cluster();
    let claim = claim_ahead(&mut c, &rx, "skip");
    assert!(claim.exclusive && claim.ahead);
    let busy = ClaimOutcome::Busy {
        host: "b".into(),
        run_id: 2,
    };
    let mut fx = Effects::default();
    assert_eq!(
        c.resolve(ahead_answer(Ok(busy.clone())), t(0), &mut fx),
        None
    );
    assert!(
        fx.writes.is_empty() && fx.events.is_empty(),
        "no skip ahead"
    );
    // At the instant: claimed as without a claim ahead, and that claim's
    // answer is judged as today.
    let mut fx = Effects::default();
    planned(&mut fx, 7, vec![t(1)], "skip");
    c.hold(&mut fx);
    assert!(fx.spawns.is_empty());
    assert!(matches!(rx.try_recv(), Ok(Request::Claim(c, _)) if !c.ahead && c.run_id == 7));
    let mut fx = Effects::default();
    let answer = Answer::Claim {
        run_id: 7,
        result: Ok(busy),
        ahead: false,
    };
    assert!(c.resolve(answer, t(1), &mut fx).is_some());
    assert_eq!(
        inserts(&fx),
        [(7, Outcome::Skipped, Some(SkipReason::Overlap), vec![t(1)])]
    );
    assert!(rx.try_recv().is_err(), "no row of this host to end");
}

/// The plan's skip of `j`'s fire at `t(1)` under run 7, in a flush.
fn skipped_at_instant(c: &mut Cluster, reason: SkipReason) {
    let mut fx = Effects::default();
    let mut rec = RunRecord::new(7, "j", vec![t(1)], Trigger::Schedule, Outcome::Skipped);
    rec.skip_reason = Some(reason);
    fx.writes.push(Write::Insert(rec));
    c.hold(&mut fx);
}

#[test]
fn a_fire_claimed_ahead_and_not_started_ends_as_one_skip_in_the_ledger() {
    // Won, then paused within the lead: its row ends skipped `paused`.
    let (mut c, rx, _) = cluster();
    claim_ahead(&mut c, &rx, "allow");
    let won = || ahead_answer(Ok(ClaimOutcome::Won(vec![t(1)])));
    c.resolve(won(), t(0), &mut Effects::default());
    skipped_at_instant(&mut c, SkipReason::Paused);
    ends_skipped(&rx, "paused");
    assert!(rx.try_recv().is_err(), "once");
    // Removed by a reload before its claim was answered: ended when the
    // answer says it won.
    let (mut c, rx, _) = cluster();
    claim_ahead(&mut c, &rx, "allow");
    skipped_at_instant(&mut c, SkipReason::Removed);
    assert!(rx.try_recv().is_err());
    c.resolve(won(), t(0), &mut Effects::default());
    ends_skipped(&rx, "removed");
    // A claim ahead that failed (it may have committed: the connection
    // broke after the commit), then paused: its row, if any, ends too.
    let (mut c, rx, _) = cluster();
    claim_ahead(&mut c, &rx, "allow");
    let failed = ahead_answer(Err("connection reset".into()));
    c.resolve(failed, t(0), &mut Effects::default());
    skipped_at_instant(&mut c, SkipReason::Paused);
    ends_skipped(&rx, "paused");
    assert!(rx.try_recv().is_err(), "once");
    // A peer's fire, skipped here: nothing of this host's to end.
    let (mut c, rx, _) = cluster();
    claim_ahead(&mut c, &rx, "allow");
    skipped_at_instant(&mut c, SkipReason::Paused);
    let taken = ahead_answer(Ok(ClaimOutcome::Taken { host: "b".into() }));
    c.resolve(taken, t(0), &mut Effects::default());
    assert!(rx.try_recv().is_err());
    // The worker stops with a fire claimed ahead: ended `worker_down`.
    let (mut c, rx, _) = cluster();
    claim_ahead(&mut c, &rx, "allow");
    c.resolve(won(), t(0), &mut Effects::default());
    assert!(c.abandon(t(0), &mut Effects::default()).is_empty());
    ends_skipped(&rx, "worker_down");
    // Removed by a reload, then the worker stops before the answer: the
    // row ends as the local record did, `removed`, once.
    let (mut c, rx, _) = cluster();
    claim_ahead(&mut c, &rx, "allow");
    skipped_at_instant(&mut c, SkipReason::Removed);
    assert!(c.abandon(t(0), &mut Effects::default()).is_empty());
    ends_skipped(&rx, "removed");
    c.resolve(won(), t(0), &mut Effects::default());
    assert!(rx.try_recv().is_err(), "once");
}

#[test]
fn a_fire_this_hosts_previous_worker_claimed_ahead_is_recorded_here() {
    let (mut c, rx, _) = cluster();
    let mut fx = Effects::default();
    planned(&mut fx, 3, vec![t(1)], "allow");
    c.hold(&mut fx);
    let _ = rx.try_recv();
    let mut fx = Effects::default();
    let taken = Answer::Claim {
        run_id: 3,
        result: Ok(ClaimOutcome::Taken {
            host: "here".into(),
        }),
        ahead: false,
    };
    assert!(c.resolve(taken, t(1), &mut fx).is_some());
    assert_eq!(
        inserts(&fx),
        [(
            3,
            Outcome::Skipped,
            Some(SkipReason::WorkerDown),
            vec![t(1)]
        )]
    );
}

#[test]
fn a_released_claim_ahead_removes_its_row_and_its_late_answer_does_nothing() {
    // Won, then released: the row is removed.
    let (mut c, rx, _) = cluster();
    claim_ahead(&mut c, &rx, "allow");
    let won = ahead_answer(Ok(ClaimOutcome::Won(vec![t(1)])));
    assert_eq!(c.resolve(won, t(0), &mut Effects::default()), None);
    c.release_ahead(vec![7]);
    assert!(matches!(rx.try_recv(), Ok(Request::Release { run_id: 7 })));
    // Released before its answer: the removal follows the claim, and the
    // answer changes nothing here (no skip, no second request).
    let (mut c, rx, _) = cluster();
    claim_ahead(&mut c, &rx, "allow");
    c.release_ahead(vec![7]);
    assert!(matches!(rx.try_recv(), Ok(Request::Release { run_id: 7 })));
    let mut fx = Effects::default();
    let won = ahead_answer(Ok(ClaimOutcome::Won(vec![t(1)])));
    assert_eq!(c.resolve(won, t(0), &mut fx), None);
    assert!(fx.writes.is_empty() && fx.spawns.is_empty() && fx.events.is_empty());
    assert!(rx.try_recv().is_err(), "{:?}", c.ahead_won);
    // The fire, claimed at its instant under a new id, is claimed as any.
    let mut fx = Effects::default();
    planned(&mut fx, 8, vec![t(1)], "allow");
    c.hold(&mut fx);
    assert!(fx.spawns.is_empty());
    assert!(matches!(rx.try_recv(), Ok(Request::Claim(c, _)) if !c.ahead && c.run_id == 8));
}

#[test]
fn a_win_ahead_older_than_half_the_lease_is_claimed_again_at_the_instant() {
    let (mut c, rx, _) = cluster();
    claim_ahead(&mut c, &rx, "allow");
    let won = ahead_answer(Ok(ClaimOutcome::Won(vec![t(1)])));
    assert_eq!(c.resolve(won, t(0), &mut Effects::default()), None);
    // The worker was stopped (SIGSTOP) past half its lease since the win.
    let Some(Ahead {
        state: AheadState::Answered(_),
        ..
    }) = c.ahead.get(&7)
    else {
        panic!("the win is kept");
    };
    sent_long_ago(&mut c);
    let mut fx = Effects::default();
    planned(&mut fx, 7, vec![t(1)], "allow");
    c.hold(&mut fx);
    assert!(fx.spawns.is_empty(), "not started on an old win");
    assert!(matches!(rx.try_recv(), Ok(Request::Claim(c, _)) if !c.ahead && c.run_id == 7));
    // A peer recorded the row lost meanwhile: the claim again finds it
    // this host's and not running; the fire is skipped, not run, and the
    // row ends skipped as the local record does.
    let mut fx = Effects::default();
    let answer = Answer::Claim {
        run_id: 7,
        result: Ok(ClaimOutcome::Taken {
            host: "here".into(),
        }),
        ahead: false,
    };
    assert!(c.resolve(answer, t(1), &mut fx).is_some());
    assert!(fx.spawns.is_empty());
    assert_eq!(
        inserts(&fx),
        [(
            7,
            Outcome::Skipped,
            Some(SkipReason::WorkerDown),
            vec![t(1)]
        )]
    );
    assert!(matches!(
        rx.try_recv(),
        Ok(Request::SkipClaimed { run_id: 7, .. })
    ));
    // A recent win starts at once (the claim again only when it is old).
    let (mut c, rx, _) = cluster();
    claim_ahead(&mut c, &rx, "allow");
    let won = ahead_answer(Ok(ClaimOutcome::Won(vec![t(1)])));
    assert_eq!(c.resolve(won, t(0), &mut Effects::default()), None);
    let mut fx = Effects::default();
    planned(&mut fx, 7, vec![t(1)], "allow");
    c.hold(&mut fx);
    assert_eq!(fx.spawns.len(), 1);
}

/// Run 7's claim ahead was sent just over half the lease ago (boot time).
fn sent_long_ago(c: &mut Cluster) {
    let long_ago = crate::clock::boot_time()
        .checked_sub(c.trust_ahead_for + Duration::from_millis(1))
        .expect("the machine has been up longer than half the lease");
    c.ahead.get_mut(&7).expect("claimed ahead").sent = long_ago;
}

/// The age of a win ahead counts from when its claim was sent, not from
/// when the loop read its answer: a worker frozen (or a machine suspended)
/// between the claim's commit and the read gets a win whose row's lease
/// may have run out, read as new.
#[test]
fn a_win_ahead_read_long_after_its_claim_was_sent_is_claimed_again() {
    // Sent, frozen past half the lease, then the win is read: before the
    // instant ...
    let (mut c, rx, _) = cluster();
    claim_ahead(&mut c, &rx, "allow");
    sent_long_ago(&mut c);
    let won = || ahead_answer(Ok(ClaimOutcome::Won(vec![t(1)])));
    assert_eq!(c.resolve(won(), t(0), &mut Effects::default()), None);
    let mut fx = Effects::default();
    planned(&mut fx, 7, vec![t(1)], "allow");
    c.hold(&mut fx);
    assert!(fx.spawns.is_empty(), "not started on an old win");
    assert!(matches!(rx.try_recv(), Ok(Request::Claim(c, _)) if !c.ahead && c.run_id == 7));
    // ... or after it, the run held for the answer.
    let (mut c, rx, _) = cluster();
    claim_ahead(&mut c, &rx, "allow");
    sent_long_ago(&mut c);
    let mut fx = Effects::default();
    planned(&mut fx, 7, vec![t(1)], "allow");
    c.hold(&mut fx);
    assert!(rx.try_recv().is_err(), "the claim ahead is on its way");
    let mut fx = Effects::default();
    assert_eq!(c.resolve(won(), t(1), &mut fx), None);
    assert!(fx.spawns.is_empty(), "not started on an old win");
    assert!(matches!(rx.try_recv(), Ok(Request::Claim(c, _)) if !c.ahead && c.run_id == 7));
    // Sent just now, read at once: it starts.
    let (mut c, rx, _) = cluster();
    claim_ahead(&mut c, &rx, "allow");
    let mut fx = Effects::default();
    planned(&mut fx, 7, vec![t(1)], "allow");
    c.hold(&mut fx);
    let mut fx = Effects::default();
    assert_eq!(c.resolve(won(), t(1), &mut fx), None);
    assert_eq!(fx.spawns.len(), 1);
}

/// A config of the one job `j` of [`job`], with `overlap`.
fn config(overlap: &str) -> Config {
    Config::parse(
        std::path::Path::new("/x.toml"),
        &format!("[[job]]\nname = \"j\"\nschedule = \"* * * * * *\"\ncommand = [\"true\"]\noverlap = \"{overlap}\"\n"),
    )
    .unwrap()
}

#[test]
fn a_fire_whose_job_a_reload_changed_since_its_claim_ahead_is_claimed_again() {
    // Won ahead under `allow`; reloaded to `skip` in the window.
    let (mut c, rx, _) = cluster();
    c.configure(&config("allow"));
    assert!(matches!(rx.try_recv(), Ok(Request::Defs(_))));
    claim_ahead(&mut c, &rx, "allow");
    let won = ahead_answer(Ok(ClaimOutcome::Won(vec![t(1)])));
    assert_eq!(c.resolve(won, t(0), &mut Effects::default()), None);
    c.configure(&config("skip"));
    assert!(matches!(rx.try_recv(), Ok(Request::Defs(_))));
    let mut fx = Effects::default();
    planned(&mut fx, 7, vec![t(1)], "skip");
    c.hold(&mut fx);
    assert!(fx.spawns.is_empty(), "not started on the old claim");
    let Ok(Request::Claim(claim, _)) = rx.try_recv() else {
        panic!("claimed again at the instant");
    };
    assert!(!claim.ahead && claim.exclusive && claim.run_id == 7);
    // Its answer is judged as any: a peer's live run makes it a skip, and
    // the row won ahead ends skipped too.
    let busy = Answer::Claim {
        run_id: 7,
        result: Ok(ClaimOutcome::Busy {
            host: "b".into(),
            run_id: 2,
        }),
        ahead: false,
    };
    let mut fx = Effects::default();
    assert!(c.resolve(busy, t(1), &mut fx).is_some());
    assert_eq!(
        inserts(&fx),
        [(7, Outcome::Skipped, Some(SkipReason::Overlap), vec![t(1)])]
    );
    ends_skipped(&rx, "overlap");
    // Changed while the claim ahead is on its way: its answer sends the
    // claim again instead of starting the run.
    let (mut c, rx, _) = cluster();
    c.configure(&config("allow"));
    let _ = rx.try_recv();
    claim_ahead(&mut c, &rx, "allow");
    c.configure(&config("skip"));
    let _ = rx.try_recv();
    let mut fx = Effects::default();
    planned(&mut fx, 7, vec![t(1)], "skip");
    c.hold(&mut fx);
    assert!(rx.try_recv().is_err(), "the claim ahead is on its way");
    let mut fx = Effects::default();
    let won = ahead_answer(Ok(ClaimOutcome::Won(vec![t(1)])));
    assert_eq!(c.resolve(won, t(1), &mut fx), None);
    assert!(fx.spawns.is_empty());
    assert!(matches!(rx.try_recv(), Ok(Request::Claim(c, _)) if !c.ahead && c.exclusive));
    // A reload that keeps the definition keeps the win.
    let (mut c, rx, _) = cluster();
    c.configure(&config("allow"));
    let _ = rx.try_recv();
    claim_ahead(&mut c, &rx, "allow");
    let won = ahead_answer(Ok(ClaimOutcome::Won(vec![t(1)])));
    assert_eq!(c.resolve(won, t(0), &mut Effects::default()), None);
    c.configure(&config("allow"));
    let mut fx = Effects::default();
    planned(&mut fx, 7, vec![t(1)], "allow");
    c.hold(&mut fx);
    assert_eq!(fx.spawns.len(), 1);
}

/// The next request ends run 7's row claimed ahead skipped `reason`.
fn ends_skipped(rx: &std::sync::mpsc::Receiver<Request>, reason: &str) {
    let got = rx.try_recv();
    assert!(
        matches!(got, Ok(Request::SkipClaimed { run_id: 7, reason: r }) if r == reason),
        "expected run 7's row ended skipped {reason}"
    );
}

/// A reload that takes a fire claimed ahead off the schedule and one that
/// puts it back, within the window: the plan keeps the fire's id (see
/// `plan/tests/ahead.rs`), and the ledger's one row stays that id's: the
/// definition changed meanwhile, so it is claimed again at the instant
/// under that id (idempotent: its own row, won again), never ended skipped
/// nor claimed under another id.
#[test]
fn a_fire_reloaded_away_and_back_keeps_its_one_row_in_the_ledger() {
    let (mut c, rx, _) = cluster();
    c.configure(&config("allow"));
    let _ = rx.try_recv();
    claim_ahead(&mut c, &rx, "allow");
    let won = || Ok(ClaimOutcome::Won(vec![t(1)]));
    assert_eq!(
        c.resolve(ahead_answer(won()), t(0), &mut Effects::default()),
        None
    );
    let away = Config::parse(
        std::path::Path::new("/x.toml"),
        "[[job]]\nname = \"j\"\nschedule = \"*/7 * * * * *\"\ncommand = [\"true\"]\noverlap = \"allow\"\n",
    )
    .unwrap();
    c.configure(&away);
    c.configure(&config("allow"));
    while let Ok(Request::Defs(_)) = rx.try_recv() {}
    let mut fx = Effects::default();
    planned(&mut fx, 7, vec![t(1)], "allow");
    c.hold(&mut fx);
    assert!(
        matches!(rx.try_recv(), Ok(Request::Claim(c, _)) if !c.ahead && c.run_id == 7),
        "claimed again under its id"
    );
    let mut fx = Effects::default();
    let answer = Answer::Claim {
        run_id: 7,
        result: won(),
        ahead: false,
    };
    assert_eq!(c.resolve(answer, t(1), &mut fx), None);
    assert_eq!(inserts(&fx), [(7, Outcome::Running, None, vec![t(1)])]);
    assert!(rx.try_recv().is_err(), "its row is not ended");
}
