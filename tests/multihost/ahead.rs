//! Claims ahead of the fire's instant (issue 19), end to end: the flush
//! that serves them runs expire, release, drop stale, hold, in that order.
//! A claim ahead released because the wall clock stepped back within the
//! window must have ended its row in the ledger before the fire, due again,
//! is claimed at its instant; a fire a reload took off the schedule within
//! the window is recorded `removed` by the drop, which the hold that
//! follows must see to end the row alike. Either way the fire ends in one
//! record here and one row in the ledger.
//!
//! Each acts within the ~100 ms between a claim's commit and the fire's
//! instant: as soon as the row appears. One that lands after the fire
//! started (a loaded machine) leaves that fire run: the next fire is
//! tried, a bounded number of times.

use std::{
    fs,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;

use super::{database, LONG};
use crate::util::{kill, unix, wait_until, wait_until_or, Env, Row, Supervisor};

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

/// Runs `act` as soon as the claim ahead of `tick`'s next fire (after
/// `last`) is in the ledger, and waits for that fire's row to settle; until
/// one settles as `want` (state, outcome), at most 6 fires. Returns that
/// fire's time and the run id its claim ahead was made with.
fn in_the_window(
    db: &mut postgres::Client,
    sup: &Supervisor,
    want: (&str, &str),
    mut act: impl FnMut(),
) -> (i64, i64) {
    let mut last = wait_until("a first fire in the ledger", LONG, || newest(db)).0;
    let mut missed = vec![];
    loop {
        assert!(
            missed.len() < 6,
            "never within the window between a claim ahead and its fire; rows: {missed:?}\n{}",
            sup.log()
        );
        // Polled closely: the window is short.
        let deadline = Instant::now() + LONG;
        let (at, run) = loop {
            if let Some(row) = newest(db).filter(|r| r.0 > last) {
                break row;
            }
            assert!(Instant::now() < deadline, "no next claim in the ledger");
            std::thread::sleep(Duration::from_millis(1));
        };
        act();
        last = at;
        let state = wait_until("the fire's row settled", LONG, || {
            let rows = rows_of(db, at);
            rows.iter()
                .all(|r| r.2 != "running")
                .then(|| rows.first().map(|r| (r.2.clone(), r.3.clone())))
                .flatten()
        });
        if state.0 == want.0 && state.1.as_deref() == Some(want.1) {
            return (at, run);
        }
        missed.push((at, state));
    }
}

/// The wall clock (the worker's, through its test-only fail point) steps
/// back 3 s just after a fire's claim ahead committed, before its instant:
/// the worker sees the step and releases the claim (its row ends skipped
/// `worker_down` in the ledger at once); when the fire comes due on the
/// new clock it is claimed at its instant under a new id, answered taken
/// by this host, and recorded skipped `worker_down` here. One record, one
/// row; the released id is nobody's record. (A step that lands after the
/// fire started repeats that fire, as a step back repeats its span: not
/// the fire looked at.)
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
    let mut stepped = 0;
    let (at, released) = in_the_window(&mut db, &sup, ("skipped", "worker_down"), || {
        stepped -= 3;
        fs::write(&offset, stepped.to_string()).unwrap();
    });
    // The fire comes due on the new clock (3 s on), and the next after it.
    let (rec, rows) = the_one_record(&env, &sup, at);
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

/// Once the worker is past the fire at `at` (a later fire of `tick` is
/// recorded): the fire's one record here (asserted one), and every record.
fn the_one_record(env: &Env, sup: &Supervisor, at: i64) -> (Row, Vec<Row>) {
    wait_until_or(
        "a fire after it recorded",
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
    let of_it: Vec<&Row> = rows
        .iter()
        .filter(|r| r.covers.iter().any(|c| unix(c) == at))
        .collect();
    assert_eq!(of_it.len(), 1, "one record of the fire here: {rows:?}");
    (of_it[0].clone(), rows)
}

/// `tick` every 4 s at `phase` seconds past a multiple of 4.
fn ticking(url: &str, phase: u8) -> String {
    let seconds: Vec<String> = (phase..60).step_by(4).map(|s| s.to_string()).collect();
    format!(
        "store = {url:?}\nhost = \"h0\"\nlease = \"10s\"\n\
         [[job]]\nname = \"tick\"\nschedule = \"{} * * * * *\"\noverlap = \"allow\"\n\
         shell = \"true\"\n",
        seconds.join(",")
    )
}

/// A reload (SIGHUP) just after a fire's claim ahead committed moves the
/// job off that fire (its seconds shift by 2): at the fire's instant the
/// plan records it skipped `removed`, under the id it was claimed with, and
/// the row, won ahead, ends skipped `removed` in the ledger (the drop's
/// skip is in the flush the hold then sees; held before it, the row would
/// stay running, its lease renewed). Each try moves the schedule again.
#[test]
fn a_fire_a_reload_takes_off_the_schedule_in_the_window_ends_in_one_record_and_one_row() {
    let Some((pg, url)) = database() else {
        return;
    };
    let env = Env::new(&ticking(&url, 0));
    let sup = env.start();
    env.wait_ok(LONG);
    let mut db = pg.client("cw");
    let mut phase = 0;
    let (at, run) = in_the_window(&mut db, &sup, ("skipped", "removed"), || {
        phase = 2 - phase;
        env.write_config(&ticking(&url, phase));
        kill(sup.pid(), Signal::SIGHUP);
    });
    let (rec, _) = the_one_record(&env, &sup, at);
    assert_eq!(
        (rec.id, rec.outcome.as_str(), rec.skip_reason.as_deref()),
        (run, "skipped", Some("removed")),
        "recorded under the id it was claimed with: {rec:?}"
    );
    assert_eq!(
        rows_of(&mut db, at),
        [(
            "h0".to_string(),
            run,
            "skipped".to_string(),
            Some("removed".to_string())
        )],
        "one row of the fire in the ledger"
    );
}
