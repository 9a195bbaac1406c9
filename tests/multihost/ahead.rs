//! Claims ahead of the fire's instant (issue 19), end to end: the order of
//! the flush that serves them (expire, release, drop stale, hold), on the
//! path where it matters: a claim ahead released because the wall clock
//! stepped back within the window must have ended its row in the ledger
//! before the fire, due again, is claimed at its instant, so that the fire
//! ends in one record here and one row in the ledger.

use std::{
    fs,
    time::{Duration, Instant},
};

use super::{database, LONG};
use crate::util::{unix, wait_until, wait_until_or, Env};

/// The newest fire row of `tick` in the ledger: (its time, its run id).
fn newest(db: &mut postgres::Client) -> Option<(i64, i64)> {
    db.query_opt(
        "SELECT extract(epoch from scheduled_for)::bigint, run_id FROM cw_fires
         WHERE job = 'tick' ORDER BY scheduled_for DESC LIMIT 1",
        &[],
    )
    .ok()
    .flatten()
    .map(|r| (r.get(0), r.get(1)))
}

/// Fire `at`'s rows in the ledger: (host, run id, state, outcome).
fn rows_of(db: &mut postgres::Client, at: i64) -> Vec<(String, i64, String, Option<String>)> {
    db.query(
        "SELECT host, run_id, state, outcome FROM cw_fires
         WHERE job = 'tick' AND scheduled_for = to_timestamp($1::bigint)",
        &[&at],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect()
}

/// The wall clock (the worker's, through its test-only fail point) steps
/// back 3 s just after a fire's claim ahead committed, before its instant:
/// the worker sees the step and releases the claim (its row ends skipped
/// `worker_down` in the ledger at once); when the fire comes due on the
/// new clock it is claimed at its instant under a new id, answered taken
/// by this host, and recorded skipped `worker_down` here. One record, one
/// row; the released id is nobody's record.
///
/// The step must land within the ~100 ms between the claim's commit and
/// the instant: the test writes it as soon as the row appears. A step that
/// lands after the fire started (a loaded machine) leaves that fire run
/// (and repeated by the step, as a step back repeats its span): the next
/// fire is tried, a bounded number of times.
#[test]
fn a_claim_ahead_released_by_a_step_back_ends_in_one_record_and_one_row() {
    let Some((pg, url)) = database() else {
        return;
    };
    // Every 4 s: a step back of 3 s brings no earlier fire back.
    let env = Env::new(&format!(
        "store = {url:?}\nhost = \"h0\"\nlease = \"10s\"\n\
         [[job]]\nname = \"tick\"\nschedule = \"*/4 * * * * *\"\noverlap = \"allow\"\n\
         shell = \"true\"\n"
    ));
    let offset = env.path("offset");
    fs::write(&offset, "0").unwrap();
    let fp = format!("worker::clock_offset=return({})", offset.display());
    let sup = env.start_with(&[("FAILPOINTS", fp.as_str())]);
    env.wait_ok(LONG);
    let mut db = pg.client("cw");
    let mut last = wait_until("a first fire in the ledger", LONG, || newest(&mut db)).0;
    let mut stepped = 0;
    let mut missed = vec![];
    let (at, released) = loop {
        assert!(
            missed.len() < 6,
            "no step landed between a claim ahead and its fire; fires run before the step: {missed:?}\n{}",
            sup.log()
        );
        // The next fire's claim ahead: polled closely, the window is short.
        let deadline = Instant::now() + LONG;
        let (at, run) = loop {
            if let Some(row) = newest(&mut db).filter(|r| r.0 > last) {
                break row;
            }
            assert!(Instant::now() < deadline, "no next claim in the ledger");
            std::thread::sleep(Duration::from_millis(1));
        };
        stepped -= 3;
        fs::write(&offset, stepped.to_string()).unwrap();
        last = at;
        let state = wait_until("the fire's row settled", LONG, || {
            let rows = rows_of(&mut db, at);
            rows.iter()
                .all(|r| r.2 != "running")
                .then(|| rows.first().map(|r| (r.2.clone(), r.3.clone())))
                .flatten()
        });
        match state {
            (s, Some(o)) if s == "skipped" && o == "worker_down" => break (at, run),
            _ => missed.push((at, state)),
        }
    };
    // The fire comes due on the new clock (3 s on), and the next after it:
    // the worker is past the fire.
    wait_until_or(
        "the fire after the released one recorded",
        LONG,
        || {
            let rows = env.rows("tick");
            rows.iter()
                .any(|r| r.covers.iter().any(|c| unix(c) > at))
                .then_some(())
        },
        || format!("records: {:?}\n{}", env.rows("tick"), sup.log()),
    );
    let rows = env.rows("tick");
    let of_it: Vec<_> = rows
        .iter()
        .filter(|r| r.covers.iter().any(|c| unix(c) == at))
        .collect();
    assert_eq!(of_it.len(), 1, "one record of the fire here: {rows:?}");
    let rec = of_it[0];
    assert_eq!(
        (rec.outcome.as_str(), rec.skip_reason.as_deref()),
        ("skipped", Some("worker_down")),
        "{rec:?}"
    );
    assert_ne!(rec.id, released, "claimed again under a new id");
    assert!(
        rows.iter().all(|r| r.id != released),
        "the released id is nobody's record: {rows:?}"
    );
    assert_eq!(
        rows_of(&mut db, at),
        [(
            "h0".to_string(),
            released,
            "skipped".to_string(),
            Some("worker_down".to_string())
        )],
        "one row of the fire in the ledger, the released claim's"
    );
}
