//! Against a real PostgreSQL (`CRONWARDEN_TEST_PG`, default the local
//! server's `test` database as root): each test makes its own database and
//! drops it after. Without a reachable server the tests say they are
//! skipped and pass.

use std::{
    sync::{Arc, Barrier},
    time::{Duration, Instant},
};

use jiff::Timestamp;

use super::*;

const DEFAULT_URL: &str = "postgres://root@127.0.0.1:5432/test";

/// A database of its own, dropped when the test ends.
pub(crate) struct TestDb {
    admin: String,
    name: String,
    pub url: String,
}

impl TestDb {
    /// `None` (the test is skipped) when no server answers.
    pub(crate) fn new(tag: &str) -> Option<TestDb> {
        let admin = std::env::var("CRONWARDEN_TEST_PG").unwrap_or_else(|_| DEFAULT_URL.into());
        let mut pg: postgres::Config = admin.parse().ok()?;
        pg.connect_timeout(Duration::from_secs(3));
        let mut c = match pg.connect(postgres::NoTls) {
            Ok(c) => c,
            Err(e) => {
                skip(tag, &format!("no PostgreSQL at {admin}: {e}"));
                return None;
            }
        };
        let name = format!("cw_unit_{tag}_{}", std::process::id());
        // Two statements: CREATE DATABASE cannot share a transaction.
        for sql in [
            format!("DROP DATABASE IF EXISTS {name}"),
            format!("CREATE DATABASE {name}"),
        ] {
            if let Err(e) = c.batch_execute(&sql) {
                skip(tag, &format!("cannot {sql} at {admin}: {e}"));
                return None;
            }
        }
        let (base, _) = admin.rsplit_once('/')?;
        let url = format!("{base}/{name}");
        Some(TestDb { admin, name, url })
    }

    pub(crate) fn config(&self, host: &str, lease: Duration) -> ClusterConfig {
        ClusterConfig {
            url: self.url.clone(),
            host: host.into(),
            lease,
        }
    }

    pub(crate) fn ledger(&self, host: &str, lease: Duration) -> Ledger {
        Ledger::connect(&self.config(host, lease)).expect("connect to the test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

fn skip(tag: &str, why: &str) {
    crate::test_skip::skip(&format!("{why} (cluster::{tag})"));
}

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).unwrap()
}

fn claim(job: &str, run_id: u64, covers: Vec<Timestamp>) -> Claim {
    Claim {
        job: job.into(),
        run_id,
        covers,
        hash: "h".into(),
        exclusive: false,
        ahead: false,
    }
}

/// `l` claims and wins the fires.
fn won(l: &mut Ledger, job: &str, run_id: u64, covers: Vec<Timestamp>) {
    let outcome = l.claim(&claim(job, run_id, covers)).unwrap();
    assert!(matches!(outcome, ClaimOutcome::Won(_)), "{outcome:?}");
}

/// Runs `each` on `hosts` threads, host `h` with its own connection as
/// `h{h}`, started together; gathers what they return.
fn race<T: Send + 'static>(
    db: &TestDb,
    hosts: usize,
    each: impl Fn(usize, &mut Ledger) -> Vec<T> + Send + Sync + 'static,
) -> Vec<T> {
    let barrier = Arc::new(Barrier::new(hosts));
    let each = Arc::new(each);
    let handles: Vec<_> = (0..hosts)
        .map(|h| {
            let mut l = db.ledger(&format!("h{h}"), LEASE);
            let (barrier, each) = (barrier.clone(), each.clone());
            std::thread::spawn(move || {
                barrier.wait();
                each(h, &mut l)
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

const LEASE: Duration = Duration::from_secs(30);

/// Beats (in `f`) until a lease runs out on the database's clock, which
/// only time can do: `f` is asked again every 100 ms, for 30 s at most.
fn until_lapsed<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn migrations_run_once_and_a_newer_schema_is_refused() {
    let Some(db) = TestDb::new("migrate") else {
        return;
    };
    let mut a = db.ledger("a", LEASE);
    // A second host connecting finds the schema current.
    assert_eq!(schema::migrate(a.client()).unwrap(), schema::latest());
    a.client()
        .execute("INSERT INTO cw_schema_version (version) VALUES (9999)", &[])
        .unwrap();
    let e = Ledger::connect(&db.config("b", LEASE))
        .err()
        .expect("refused");
    assert!(e.to_string().contains("9999"), "{e}");
}

#[test]
fn hosts_racing_for_the_same_fires_each_win_a_fire_once() {
    let Some(db) = TestDb::new("race") else {
        return;
    };
    const HOSTS: usize = 4;
    const FIRES: i64 = 60;
    let mut all: Vec<Timestamp> = race(&db, HOSTS, |_, l| {
        let mut won = vec![];
        for f in 0..FIRES {
            // Catch-up runs cover several times: every third claim
            // covers its fire and the one before.
            let covers = if f % 3 == 0 && f > 0 {
                vec![t(f - 1), t(f)]
            } else {
                vec![t(f)]
            };
            match l.claim(&claim("j", f as u64 + 1, covers)).unwrap() {
                ClaimOutcome::Won(times) => won.extend(times),
                ClaimOutcome::Taken { host } => assert!(host.starts_with('h')),
                other => panic!("unexpected {other:?}"),
            }
        }
        won
    });
    all.sort();
    // The oracle: every fire time, once.
    let expected: Vec<Timestamp> = (0..FIRES).map(t).collect();
    assert_eq!(all, expected);
    let mut l = db.ledger("check", LEASE);
    let rows: i64 = l
        .client()
        .query_one("SELECT count(*) FROM cw_fires WHERE state = 'running'", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, FIRES);
}

#[test]
fn a_silent_hosts_run_is_lost_once_its_lease_runs_out_and_a_renewed_one_is_not() {
    let Some(db) = TestDb::new("lease") else {
        return;
    };
    let lease = Duration::from_secs(1);
    let mut a = db.ledger("a", lease);
    let mut b = db.ledger("b", lease);
    assert_eq!(
        a.claim(&claim("j", 7, vec![t(1)])).unwrap(),
        ClaimOutcome::Won(vec![t(1)])
    );
    assert_eq!(
        b.claim(&claim("j", 3, vec![t(2)])).unwrap(),
        ClaimOutcome::Won(vec![t(2)])
    );
    let lost = until_lapsed("a's run lost", || {
        // b keeps renewing its run; a is silent.
        let beat = b.beat(&[3], "test").unwrap();
        (!beat.lost.is_empty()).then_some(beat.lost)
    });
    assert_eq!(lost, vec![("j".to_string(), t(1), "a".to_string(), 7)]);
    // The lost fire is never claimed again.
    assert_eq!(
        b.claim(&claim("j", 4, vec![t(1)])).unwrap(),
        ClaimOutcome::Taken { host: "a".into() }
    );
    // a comes back and finishes: the ledger says it ran, once.
    assert_eq!(a.finish(7, "success").unwrap(), 1);
    assert_eq!(b.finish(3, "success").unwrap(), 1);
    let states: Vec<(String, Option<String>)> = a
        .client()
        .query(
            "SELECT state, lost_by FROM cw_fires ORDER BY scheduled_for",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        states,
        vec![
            ("finished".to_string(), Some("b".to_string())),
            ("finished".to_string(), None)
        ]
    );
}

#[test]
fn an_exclusive_job_live_on_a_peer_is_skipped_in_the_ledger() {
    let Some(db) = TestDb::new("busy") else {
        return;
    };
    let mut a = db.ledger("a", LEASE);
    let mut b = db.ledger("b", LEASE);
    let mut c1 = claim("j", 1, vec![t(1)]);
    c1.exclusive = true;
    assert!(matches!(a.claim(&c1).unwrap(), ClaimOutcome::Won(_)));
    let mut c2 = claim("j", 5, vec![t(2)]);
    c2.exclusive = true;
    assert_eq!(
        b.claim(&c2).unwrap(),
        ClaimOutcome::Busy {
            host: "a".into(),
            run_id: 1
        }
    );
    // Once a's run ended the next fire runs wherever it is claimed.
    a.finish(1, "success").unwrap();
    let mut c3 = claim("j", 6, vec![t(3)]);
    c3.exclusive = true;
    assert!(matches!(b.claim(&c3).unwrap(), ClaimOutcome::Won(_)));
    let skipped: i64 = a
        .client()
        .query_one(
            "SELECT count(*) FROM cw_fires WHERE state = 'skipped' AND outcome = 'overlap'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(skipped, 1);
}

#[test]
fn a_host_whose_definition_differs_from_the_majority_does_not_claim() {
    let Some(db) = TestDb::new("defs") else {
        return;
    };
    let mut ls: Vec<Ledger> = ["a", "b", "c"]
        .iter()
        .map(|h| db.ledger(h, LEASE))
        .collect();
    for (l, hash) in ls.iter_mut().zip(["h", "h", "other"]) {
        l.beat(&[], "test").unwrap();
        l.publish_defs(&[("j".into(), hash.into())]).unwrap();
    }
    let mut odd = claim("j", 1, vec![t(1)]);
    odd.hash = "other".into();
    assert_eq!(
        ls[2].claim(&odd).unwrap(),
        ClaimOutcome::Differs { theirs: "h".into() }
    );
    assert!(matches!(
        ls[0].claim(&claim("j", 1, vec![t(1)])).unwrap(),
        ClaimOutcome::Won(_)
    ));
    let peers = ls[0].peers().unwrap();
    let claimed: Vec<(String, u64, bool)> = peers
        .iter()
        .map(|p| (p.host.clone(), p.claimed_last_hour, p.alive))
        .collect();
    assert_eq!(
        claimed,
        vec![
            ("a".into(), 1, true),
            ("b".into(), 0, true),
            ("c".into(), 0, true)
        ]
    );
}

#[test]
fn one_host_owns_an_alert_while_it_lives() {
    let Some(db) = TestDb::new("alerts") else {
        return;
    };
    let mut a = db.ledger("a", LEASE);
    let mut b = db.ledger("b", LEASE);
    a.beat(&[], "test").unwrap();
    b.beat(&[], "test").unwrap();
    assert_eq!(a.own_alert("late", "j").unwrap(), "a");
    assert_eq!(
        b.own_alert("late", "j").unwrap(),
        "a",
        "a lives: b sees it own it"
    );
    assert_eq!(a.own_alert("late", "j").unwrap(), "a");
    // Closing is the owner's alone.
    b.close_alert("late", "j").unwrap();
    assert_eq!(b.own_alert("late", "j").unwrap(), "a");
    a.close_alert("late", "j").unwrap();
    assert_eq!(
        b.own_alert("late", "j").unwrap(),
        "b",
        "a peer takes it over"
    );
    assert_eq!(a.own_alert("late", "j").unwrap(), "b");
    // b falls silent past the lease: a takes it over.
    b.client()
        .execute(
            "UPDATE cw_peers SET last_seen = now() - interval '1 hour' WHERE host = 'b'",
            &[],
        )
        .unwrap();
    assert_eq!(
        a.own_alert("late", "j").unwrap(),
        "a",
        "a dead owner loses it"
    );
}

#[test]
fn definition_hashes_ignore_the_hosts_jitter_offset_only() {
    let cfg = crate::config::Config::parse(
        std::path::Path::new("/x.toml"),
        "[[job]]\nname = \"a\"\nschedule = \"* * * * *\"\ncommand = [\"true\"]\njitter = \"30s\"\n",
    )
    .unwrap();
    let job: &crate::config::JobSpec = &cfg.jobs[0];
    let mut other_host = job.clone();
    other_host.jitter_offset += Duration::from_secs(1);
    assert_eq!(definition_hash(job), definition_hash(&other_host));
    let mut changed = job.clone();
    changed.command = crate::config::JobCommand::Argv(vec!["false".into()]);
    assert_ne!(definition_hash(job), definition_hash(&changed));
}

/// The definition check without a claim: the majority of live hosts per
/// job, ties to the definition held longest; a silent host's vote lapses.
#[test]
fn the_majority_definition_of_each_job_is_known_without_a_claim() {
    let Some(db) = TestDb::new("majority") else {
        return;
    };
    let lease = Duration::from_secs(2);
    let mut ls: Vec<Ledger> = ["a", "b", "c"]
        .iter()
        .map(|h| db.ledger(h, lease))
        .collect();
    for (l, hashes) in ls.iter_mut().zip([["1", "x"], ["1", "y"], ["2", "y"]]) {
        l.beat(&[], "test").unwrap();
        let defs = [
            ("j".into(), hashes[0].into()),
            ("k".into(), hashes[1].into()),
        ];
        l.publish_defs(&defs).unwrap();
    }
    let jobs = ["j".to_string(), "k".to_string(), "none".to_string()];
    let m = ls[2].majority_defs(&jobs).unwrap();
    assert_eq!(
        m.into_iter().collect::<Vec<_>>(),
        [("j".into(), "1".into()), ("k".into(), "y".into())]
    );
    // a and b go silent past the lease: c's definition is the majority.
    until_lapsed("a and b lapsed: c's definition the majority", || {
        ls[2].beat(&[], "test").unwrap();
        let m = ls[2].majority_defs(&jobs).unwrap();
        (m.get("j").map(String::as_str) == Some("2")).then_some(())
    });
}

/// Before a host records a fire it missed, it asks who holds it: the
/// host that claimed (or skipped) it, or nobody.
#[test]
fn the_holder_of_each_missed_fire_is_read_in_one_query() {
    let Some(db) = TestDb::new("holders") else {
        return;
    };
    let mut a = db.ledger("a", LEASE);
    let mut b = db.ledger("b", LEASE);
    won(&mut a, "j", 1, vec![t(1), t(2)]);
    won(&mut b, "k", 1, vec![t(1)]);
    let asked = [
        ("j".to_string(), t(2)),
        ("j".to_string(), t(3)),
        ("k".to_string(), t(1)),
        ("j".to_string(), t(1)),
    ];
    assert_eq!(
        b.holders(&asked).unwrap(),
        [Some("a".into()), None, Some("b".into()), Some("a".into())]
    );
    assert!(b.holders(&[]).unwrap().is_empty());
}

/// A replacement worker on a host records its predecessor's runs lost at
/// once (not when their lease runs out), except a run that outlived its
/// worker: its lease is renewed until it ends, then it is lost too.
#[test]
fn a_replacement_worker_records_its_predecessors_runs_lost_but_not_a_live_one() {
    let Some(db) = TestDb::new("predecessor") else {
        return;
    };
    let mut a = db.ledger("a", LEASE);
    let mut b = db.ledger("b", LEASE);
    for (id, at) in [(1, 1), (2, 2), (3, 3)] {
        won(&mut a, "j", id, vec![t(at)]);
    }
    won(&mut b, "j", 1, vec![t(4)]);
    // a's new worker starts at run 3 (its own); run 2 still lives.
    let mut a2 = db.ledger("a", LEASE);
    let lost = a2.lose_predecessors(3, &[2]).unwrap();
    assert_eq!(lost, [("j".to_string(), t(1), 1)]);
    let state = |l: &mut Ledger| -> Vec<(String, String, Option<String>)> {
        l.client()
            .query(
                "SELECT host, state, lost_by FROM cw_fires ORDER BY scheduled_for",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    };
    let running = |h: &str| (h.to_string(), "running".to_string(), None);
    assert_eq!(
        state(&mut a2),
        [
            ("a".into(), "lost".into(), Some("a".into())),
            running("a"),
            running("a"),
            running("b")
        ]
    );
    // The live one ends (gone after the kill): lost, by this host.
    assert_eq!(a2.finish(2, "lost").unwrap(), 1);
    assert_eq!(
        state(&mut a2)[1],
        ("a".into(), "lost".into(), Some("a".into()))
    );
}

/// A burst of claims in one statement: each fire is won or lost on its
/// own (a time a peer holds never aborts the others'), a job whose
/// definition differs is refused alone, and answers keep the claims' order.
#[test]
fn a_burst_of_claims_is_one_statement_with_per_fire_outcomes() {
    let Some(db) = TestDb::new("burst") else {
        return;
    };
    let mut a = db.ledger("a", LEASE);
    let mut b = db.ledger("b", LEASE);
    for l in [&mut a, &mut b] {
        l.beat(&[], "test").unwrap();
        l.publish_defs(&[("d".into(), "h".into())]).unwrap();
    }
    won(&mut b, "k", 1, vec![t(1)]);
    won(&mut b, "c", 2, vec![t(2)]);
    let mut odd = claim("d", 13, vec![t(1)]);
    odd.hash = "other".into();
    let burst = [
        claim("j", 10, vec![t(1)]),
        claim("k", 11, vec![t(1)]),
        claim("c", 12, vec![t(1), t(2), t(3)]),
        odd,
    ];
    assert_eq!(
        a.claim_many(&burst).unwrap(),
        [
            ClaimOutcome::Won(vec![t(1)]),
            ClaimOutcome::Taken { host: "b".into() },
            ClaimOutcome::Won(vec![t(1), t(3)]),
            ClaimOutcome::Differs { theirs: "h".into() },
        ]
    );
    let cursors: Vec<(String, i64)> = a
        .client()
        .query(
            "SELECT job, extract(epoch from last_scheduled)::bigint FROM cw_cursors ORDER BY job",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let at = |s: i64| t(s).as_second();
    assert_eq!(
        cursors,
        [
            ("c".into(), at(3)),
            ("j".into(), at(1)),
            ("k".into(), at(1))
        ]
    );
    assert!(a.claim_many(&[]).unwrap().is_empty());
}

/// Exclusive jobs in bursts: the jobs are locked in one order on every
/// host (hosts listing them in opposite orders never deadlock), no fire
/// is won twice, and a fire of a job live on another host is
/// `Busy` (recorded skipped) while the rest of the burst goes through.
#[test]
fn bursts_of_exclusive_claims_on_racing_hosts_never_deadlock_nor_win_a_fire_twice() {
    let Some(db) = TestDb::new("xburst") else {
        return;
    };
    const HOSTS: usize = 3;
    const JOBS: usize = 12;
    const FIRES: i64 = 8;
    let mut all: Vec<(String, Timestamp)> = race(&db, HOSTS, |h, l| {
        let mut won = vec![];
        for f in 0..FIRES {
            let mut burst: Vec<Claim> = (0..JOBS)
                .map(|j| {
                    let mut c = claim(&format!("x{j}"), (f as u64) * 100 + j as u64, vec![t(f)]);
                    c.exclusive = true;
                    c
                })
                .collect();
            if h % 2 == 1 {
                burst.reverse();
            }
            let outcomes = l.claim_many(&burst).expect("no claim error (deadlock)");
            for (c, o) in burst.iter().zip(outcomes) {
                match o {
                    ClaimOutcome::Won(times) => {
                        won.extend(times.into_iter().map(|t| (c.job.clone(), t)));
                        // The run ends at once: the next fire is free.
                        l.finish(c.run_id, "success").unwrap();
                    }
                    ClaimOutcome::Taken { .. } | ClaimOutcome::Busy { .. } => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        won
    });
    all.sort();
    let n = all.len();
    all.dedup();
    assert_eq!(all.len(), n, "a fire won twice");
    // A live run elsewhere makes the fire Busy, the others still go.
    let mut a = db.ledger("a", LEASE);
    let mut b = db.ledger("b", LEASE);
    let mut live = claim("y", 1, vec![t(50)]);
    live.exclusive = true;
    assert!(matches!(b.claim(&live).unwrap(), ClaimOutcome::Won(_)));
    let mut next = claim("y", 7, vec![t(51)]);
    next.exclusive = true;
    assert_eq!(
        a.claim_many(&[next, claim("z", 8, vec![t(51)])]).unwrap(),
        [
            ClaimOutcome::Busy {
                host: "b".into(),
                run_id: 1
            },
            ClaimOutcome::Won(vec![t(51)])
        ]
    );
}

mod ahead;
