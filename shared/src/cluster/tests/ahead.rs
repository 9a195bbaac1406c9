//! Claims ahead (a fire claimed before its instant, under the run id its
//! record will have), against the same real PostgreSQL as the rest.

use jiff::Timestamp;

use super::*;

/// The row of `job`'s fire at `at`: (host, run id, state, outcome).
fn row(l: &mut Ledger, job: &str, at: Timestamp) -> Option<(String, i64, String, Option<String>)> {
    l.client()
        .query_opt(
            &format!(
                "SELECT host, run_id, state, outcome FROM cw_fires WHERE job = $1 AND scheduled_for = {}",
                ts(2)
            ),
            &[&job, &at.as_microsecond()],
        )
        .unwrap()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
}

#[test]
fn two_hosts_claiming_a_fire_ahead_one_wins_and_claiming_again_is_idempotent() {
    let Some(db) = TestDb::new("ahead") else {
        return;
    };
    let a = db.ledger("a", LEASE);
    let b = db.ledger("b", LEASE);
    let ahead = |run_id| Claim {
        ahead: true,
        ..claim("j", run_id, vec![t(1)])
    };
    // Both hosts claim the same fire ahead, racing: one wins it.
    let barrier = Arc::new(Barrier::new(2));
    let racers: Vec<_> = [(a, 1u64), (b, 9u64)]
        .into_iter()
        .map(|(mut l, id)| {
            let (barrier, c) = (barrier.clone(), ahead(id));
            std::thread::spawn(move || {
                barrier.wait();
                let outcome = l.claim(&c).unwrap();
                (l, outcome)
            })
        })
        .collect();
    let mut done: Vec<(Ledger, ClaimOutcome)> =
        racers.into_iter().map(|h| h.join().unwrap()).collect();
    let won: Vec<usize> = (0..2)
        .filter(|&i| matches!(done[i].1, ClaimOutcome::Won(_)))
        .collect();
    assert_eq!(
        won.len(),
        1,
        "{:?}",
        done.iter().map(|d| &d.1).collect::<Vec<_>>()
    );
    let (w, l) = (won[0], 1 - won[0]);
    let (winner_host, winner_id) = (["a", "b"][w], [1u64, 9][w]);
    assert_eq!(
        done[l].1,
        ClaimOutcome::Taken {
            host: winner_host.into()
        }
    );
    // At the instant the winner (unsure of its claim ahead) claims again
    // under the same run id: won again, one row; the loser: still taken.
    let again = claim("j", winner_id, vec![t(1)]);
    assert_eq!(
        done[w].0.claim(&again).unwrap(),
        ClaimOutcome::Won(vec![t(1)])
    );
    let loser_id = [1u64, 9][l];
    assert!(matches!(
        done[l].0.claim(&claim("j", loser_id, vec![t(1)])).unwrap(),
        ClaimOutcome::Taken { .. }
    ));
    assert_eq!(
        row(&mut done[w].0, "j", t(1)),
        Some((winner_host.into(), winner_id as i64, "running".into(), None))
    );
    // Another run id of the same host does not win the row.
    assert!(matches!(
        done[w].0.claim(&claim("j", 77, vec![t(1)])).unwrap(),
        ClaimOutcome::Taken { .. }
    ));
}

#[test]
fn a_claim_ahead_finding_a_peers_live_run_records_no_skip() {
    let Some(db) = TestDb::new("ahead_busy") else {
        return;
    };
    let mut a = db.ledger("a", LEASE);
    let mut b = db.ledger("b", LEASE);
    let exclusive = |run_id, at, ahead| Claim {
        exclusive: true,
        ahead,
        ..claim("j", run_id, vec![at])
    };
    assert!(matches!(
        a.claim(&exclusive(1, t(1), false)).unwrap(),
        ClaimOutcome::Won(_)
    ));
    let busy = ClaimOutcome::Busy {
        host: "a".into(),
        run_id: 1,
    };
    // Ahead: busy, and nothing recorded (overlap is judged at the instant).
    assert_eq!(b.claim(&exclusive(5, t(2), true)).unwrap(), busy);
    assert_eq!(row(&mut b, "j", t(2)), None);
    // At the instant, still busy: recorded skipped as without a claim ahead.
    assert_eq!(b.claim(&exclusive(5, t(2), false)).unwrap(), busy);
    assert_eq!(
        row(&mut b, "j", t(2)),
        Some(("b".into(), 5, "skipped".into(), Some("overlap".into())))
    );
}

#[test]
fn a_fire_claimed_ahead_and_not_started_ends_skipped() {
    let Some(db) = TestDb::new("ahead_skip") else {
        return;
    };
    let mut a = db.ledger("a", LEASE);
    let c = Claim {
        ahead: true,
        ..claim("j", 3, vec![t(1)])
    };
    assert!(matches!(a.claim(&c).unwrap(), ClaimOutcome::Won(_)));
    assert_eq!(a.skip_claimed(3, "paused").unwrap(), 1);
    assert_eq!(
        row(&mut a, "j", t(1)),
        Some(("a".into(), 3, "skipped".into(), Some("paused".into())))
    );
    // A claim that had not won ends nothing.
    assert_eq!(a.skip_claimed(4, "paused").unwrap(), 0);
}

#[test]
fn a_losing_claim_takes_no_lock_on_the_winners_row() {
    let Some(db) = TestDb::new("nolock") else {
        return;
    };
    let mut a = db.ledger("a", LEASE);
    let mut b = db.ledger("b", LEASE);
    won(&mut a, "j", 1, vec![t(1)]);
    // The winner's row locked (as a beat renewing its lease does): a
    // loser's claim does not wait for it, it is answered at once.
    let mut holder = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
    let mut tx = holder.transaction().unwrap();
    tx.execute("SELECT 1 FROM cw_fires WHERE job = 'j' FOR UPDATE", &[])
        .unwrap();
    b.client()
        .batch_execute("SET statement_timeout = '3s'")
        .unwrap();
    assert_eq!(
        b.claim(&claim("j", 5, vec![t(1)])).unwrap(),
        ClaimOutcome::Taken { host: "a".into() }
    );
    // Nor does the winner claiming its fire again (idempotent, a read).
    a.client()
        .batch_execute("SET statement_timeout = '3s'")
        .unwrap();
    assert_eq!(
        a.claim(&claim("j", 1, vec![t(1)])).unwrap(),
        ClaimOutcome::Won(vec![t(1)])
    );
    tx.rollback().unwrap();
}

#[test]
fn a_burst_holding_one_fire_twice_does_not_fail() {
    let Some(db) = TestDb::new("dup") else {
        return;
    };
    let mut a = db.ledger("a", LEASE);
    // The same fire twice (a claim ahead and its claim at the instant in
    // one burst, under one run id), beside another fire.
    let burst = [
        claim("j", 1, vec![t(1)]),
        claim("k", 2, vec![t(1)]),
        claim("j", 1, vec![t(1)]),
    ];
    let out = a.claim_many(&burst[..2]).unwrap();
    assert_eq!(out.len(), 2);
    let out = a.claim_many(&burst).unwrap();
    assert_eq!(out.len(), 3, "{out:?}");
    assert_eq!(
        row(&mut a, "j", t(1)),
        Some(("a".into(), 1, "running".into(), None))
    );
    // Two run ids of one fire in one burst: the first inserted wins the
    // row, and the burst still commits.
    let fresh = [claim("m", 7, vec![t(2)]), claim("m", 8, vec![t(2)])];
    let out = a.claim_many(&fresh).unwrap();
    assert_eq!(
        out.iter()
            .filter(|o| matches!(o, ClaimOutcome::Won(_)))
            .count(),
        1,
        "{out:?}"
    );
}

#[test]
fn a_released_claim_ahead_ends_skipped_and_stays_the_fires_one_record() {
    let Some(db) = TestDb::new("release") else {
        return;
    };
    let mut a = db.ledger("a", LEASE);
    let mut b = db.ledger("b", LEASE);
    won(&mut a, "j", 3, vec![t(1)]);
    // Only this host's own running row of that run is ended.
    assert_eq!(b.release_claimed(3).unwrap(), 0);
    assert_eq!(a.release_claimed(4).unwrap(), 0);
    assert_eq!(a.release_claimed(3).unwrap(), 1);
    assert_eq!(
        row(&mut a, "j", t(1)),
        Some(("a".into(), 3, "skipped".into(), Some("worker_down".into())))
    );
    // The fire keeps that one record: a peer's claim (its claim ahead
    // was answered taken already) and this host's own claim again at the
    // instant are both taken.
    assert_eq!(
        b.claim(&claim("j", 5, vec![t(1)])).unwrap(),
        ClaimOutcome::Taken { host: "a".into() }
    );
    assert_eq!(
        a.claim(&claim("j", 6, vec![t(1)])).unwrap(),
        ClaimOutcome::Taken { host: "a".into() }
    );
    won(&mut b, "j", 7, vec![t(2)]);
    // A row that ran is not ended.
    assert_eq!(b.finish(7, "success").unwrap(), 1);
    assert_eq!(b.release_claimed(7).unwrap(), 0);
}

/// Run 3 won `j`'s fire, then `change` happened to its row while this
/// host was stopped: claimed again by the same run, it is not won.
fn claiming_again_after(tag: &str, change: &str) {
    let Some(db) = TestDb::new(tag) else {
        return;
    };
    let mut a = db.ledger("a", LEASE);
    won(&mut a, "j", 3, vec![t(1)]);
    a.client().execute(change, &[]).unwrap();
    assert_eq!(
        a.claim(&claim("j", 3, vec![t(1)])).unwrap(),
        ClaimOutcome::Taken { host: "a".into() }
    );
}

#[test]
fn claiming_again_a_row_whose_lease_ran_out_does_not_win_it() {
    // Stopped past its lease; no peer recorded it lost yet.
    claiming_again_after(
        "again_expired",
        "UPDATE cw_fires SET lease_until = now() - interval '1 second'",
    );
}

#[test]
fn claiming_again_a_row_recorded_lost_does_not_win_it() {
    // A peer recorded it lost while this host was stopped past its lease.
    claiming_again_after(
        "again_lost",
        "UPDATE cw_fires SET state = 'lost', lease_until = NULL",
    );
}
