//! The worker's side of the shared ledger, end to end: what a host records
//! of fires a peer ran, a replacement worker's predecessor's runs, job
//! definitions compared without waiting for a fire, and the clock skew
//! alert.

use std::fs;

use nix::sys::signal::Signal;

use super::{database, worker_pid, LONG};
use crate::util::{kill, now_unix, unix, wait_until, wait_until_or, Env};

/// A host whose one job never fires during a test (its next fire is
/// months away): whatever it shows came without a fire.
fn idle_host(name: &str, url: &str, command: &str) -> Env {
    Env::new(&format!(
        "store = {url:?}\nhost = {name:?}\nlease = \"3s\"\n\
         [[job]]\nname = \"yearly\"\nschedule = \"0 0 1 1 *\"\nshell = {command:?}\n"
    ))
}

fn has_alert(env: &Env, kind: &str) -> bool {
    env.open_alerts().iter().any(|(k, _)| k == kind)
}

/// A host whose definition of a job differs from the one the other host
/// held first alerts on it within a beat of its start, though the job
/// does not fire for months; a reload to the common definition resolves
/// it, again without a fire.
#[test]
fn a_differing_definition_is_alerted_at_start_and_resolved_by_a_reload_without_a_fire() {
    let Some((pg, url)) = database() else {
        return;
    };
    let first = idle_host("h0", &url, "true");
    let _first_sup = first.start();
    first.wait_ok(LONG);
    // h0's definition is in the ledger first: it is the one held longest
    // (two hosts, one each: the older one is the majority).
    let mut db = pg.client("cw");
    wait_until("h0's definition published", LONG, || {
        db.query_opt("SELECT 1 FROM cw_job_defs WHERE host = 'h0'", &[])
            .ok()
            .flatten()
            .map(|_| ())
    });
    let odd = idle_host("h1", &url, "false");
    let _odd_sup = odd.start();
    wait_until("h1 alerts on its differing definition", LONG, || {
        odd.open_alerts()
            .iter()
            .any(|(k, j)| k == "job_definition_differs" && j.as_deref() == Some("yearly"))
            .then_some(())
    });
    assert!(!has_alert(&first, "job_definition_differs"));
    // The operator aligns h1's job with h0's and reloads.
    odd.write_config(&format!(
        "store = {url:?}\nhost = \"h1\"\nlease = \"3s\"\n\
         [[job]]\nname = \"yearly\"\nschedule = \"0 0 1 1 *\"\nshell = \"true\"\n"
    ));
    let out = odd.cmd(&["reload", "-c", odd.config.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("h1's alert resolved by the reload", LONG, || {
        (!has_alert(&odd, "job_definition_differs")).then_some(())
    });
}

/// Two hosts on one machine share one clock, so no real skew can be made
/// between them: the worker's test hook (`CRONWARDEN_TEST_CLOCK_OFFSET_FILE`,
/// read by the skew measurement only, in test builds only) adds an offset
/// to this host's clock reading. Above 2 s the supervisor opens
/// `cluster_clock_skew` (status degraded); once the offset is gone it
/// resolves, with the same supervisor and worker.
#[test]
fn a_clock_off_the_databases_by_more_than_2s_is_alerted_until_it_is_back() {
    let Some((_pg, url)) = database() else {
        return;
    };
    let env = idle_host("h0", &url, "true");
    let offset = env.path("clock-offset-ms");
    fs::write(&offset, "3000").unwrap();
    let _sup = env.start_with(&[(
        "CRONWARDEN_TEST_CLOCK_OFFSET_FILE",
        offset.to_str().unwrap(),
    )]);
    let status = wait_until("the skew alert", LONG, || {
        let s = env.status().1?;
        s["alerts"]
            .as_array()?
            .iter()
            .any(|a| a["kind"] == "cluster_clock_skew")
            .then_some(s)
    });
    assert_eq!(status["state"], "degraded", "{status}");
    let worker = status["worker"]["pid"].as_u64();
    fs::write(&offset, "0").unwrap();
    let status = wait_until("the skew alert resolved", LONG, || {
        let s = env.status().1?;
        (!s["alerts"]
            .as_array()?
            .iter()
            .any(|a| a["kind"] == "cluster_clock_skew"))
        .then_some(s)
    });
    assert_eq!(status["worker"]["pid"].as_u64(), worker, "the same worker");
    // Within the bound is no alert at all.
    fs::write(&offset, "-1500").unwrap();
    wait_until("a skew of 1.5 s measured", LONG, || {
        let s = env.status().1?;
        let me = s["peers"].as_array()?.iter().find(|p| p["host"] == "h0")?;
        (me["skew_ms"].as_i64()? <= -1000).then_some(())
    });
    assert!(!has_alert(&env, "cluster_clock_skew"));
}

/// A worker killed with runs in flight is replaced by its supervisor; the
/// new worker records the old one's run `lost` in the ledger at once, by
/// this host, long before its lease (5 minutes) could run out and with no
/// peer to record it.
#[test]
fn a_replacement_worker_records_its_predecessors_run_lost_in_the_ledger() {
    let Some((pg, url)) = database() else {
        return;
    };
    let env = Env::new(&format!(
        "store = {url:?}\nhost = \"h0\"\nlease = \"300s\"\n\
         [[job]]\nname = \"long\"\nschedule = \"* * * * * *\"\noverlap = \"skip\"\n\
         shell = \"sleep 120\"\n"
    ));
    let _sup = env.start();
    let worker = worker_pid(&env);
    let mut db = pg.client("cw");
    let run: i64 = wait_until("a run in flight in the ledger", LONG, || {
        db.query_opt(
            "SELECT run_id FROM cw_fires WHERE host = 'h0' AND state = 'running'",
            &[],
        )
        .ok()
        .flatten()
        .map(|r| r.get(0))
    });
    kill(worker, Signal::SIGKILL);
    let (state, lost_by): (String, Option<String>) =
        wait_until("the killed worker's run recorded lost", LONG, || {
            let r = db
                .query_one(
                    "SELECT state, lost_by FROM cw_fires WHERE host = 'h0' AND run_id = $1",
                    &[&run],
                )
                .ok()?;
            let state: String = r.get(0);
            (state != "running").then(|| (state, r.get(1)))
        });
    assert_eq!((state.as_str(), lost_by.as_deref()), ("lost", Some("h0")));
    // The replacement runs the job again (the lost run no longer holds it).
    wait_until("a new run in flight", LONG, || {
        db.query_opt(
            "SELECT run_id FROM cw_fires WHERE host = 'h0' AND state = 'running' AND run_id > $1",
            &[&run],
        )
        .ok()
        .flatten()
        .map(|_| ())
    });
}

/// A host back from downtime does not record as misfires the fires a
/// peer ran meanwhile: the ledger is asked first, and they are the peer's.
#[test]
fn a_host_back_from_downtime_records_no_misfire_for_fires_a_peer_ran() {
    let Some((pg, url)) = database() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let stamps = dir.path().join("stamps");
    // A grace of 1 s: the fires of the downtime are stale at the restart.
    let config = |name: &str| {
        format!(
            "store = {url:?}\nhost = {name:?}\nlease = \"3s\"\n\
             [[job]]\nname = \"tick\"\nschedule = \"* * * * * *\"\noverlap = \"allow\"\n\
             misfire_grace = \"1s\"\nshell = 'echo \"$PWD $CRONWARDEN_JOB $CRONWARDEN_RUN_ID $CRONWARDEN_COVERS\" >> {}'\n",
            stamps.display()
        )
    };
    let (a, b) = (Env::new(&config("a")), Env::new(&config("b")));
    let _a_sup = a.start();
    let mut b_sup = b.start();
    a.wait_ok(LONG);
    b.wait_ok(LONG);
    // Up means scheduling: a worker stopped while it still takes over its
    // store never armed the job, and has no downtime to account.
    wait_until("b's worker taking up its jobs", LONG, || {
        b_sup.log().contains("worker started jobs").then_some(())
    });
    assert_eq!(b_sup.stop(LONG), 0, "{}", b_sup.log());
    let stopped = now_unix();
    let mut db = pg.client("cw");
    // a runs the fires of b's downtime (5 s of them).
    wait_until("a runs the fires while b is down", LONG, || {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM cw_fires WHERE host = 'a'
                 AND scheduled_for > to_timestamp($1::bigint)",
                &[&(stopped + 1)],
            )
            .ok()?
            .get(0);
        (n >= 5).then_some(())
    });
    let b_sup = b.start();
    wait_until_or(
        "b finding a missed fire a ran",
        LONG,
        || {
            b_sup
                .log()
                .contains("a fire missed here was claimed by another host")
                .then_some(())
        },
        || format!("b's log:\n{}", b_sup.log()),
    );
    b.wait_ok(LONG);
    // b records its misfires at once (a worker killed before the ledger
    // answers loses none) and removes each a ran once the ledger says so:
    // none may be left.
    // The last look, for the message on timeout.
    let last = std::cell::RefCell::new((Vec::new(), Vec::new()));
    let mut no_misfire_of_a = || {
        let held_by_a: Vec<i64> = db
            .query(
                "SELECT extract(epoch from scheduled_for)::bigint FROM cw_fires WHERE host = 'a'",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let misfires: Vec<i64> = b
            .rows("tick")
            .iter()
            .filter(|r| r.skip_reason.as_deref() == Some("misfire"))
            .filter_map(|r| r.scheduled_at.as_deref().map(unix))
            .collect();
        let wrong: Vec<i64> = misfires
            .iter()
            .copied()
            .filter(|t| held_by_a.contains(t))
            .collect();
        (wrong, misfires)
    };
    wait_until_or(
        "b keeping no misfire of a fire a ran",
        LONG,
        || {
            let found = no_misfire_of_a();
            let done = found.0.is_empty();
            *last.borrow_mut() = found;
            done.then_some(())
        },
        || {
            let (wrong, misfires) = last.take();
            format!(
                "b kept misfires of fires a ran: {wrong:?} (b's misfires {misfires:?}); b's log:\n{}",
                b_sup.log()
            )
        },
    );
    // Nothing of it ran twice either.
    let text = fs::read_to_string(&stamps).unwrap_or_default();
    let mut covered: Vec<&str> = text
        .lines()
        .flat_map(|l| l.split_whitespace().skip(3))
        .collect();
    let n = covered.len();
    covered.sort();
    covered.dedup();
    assert_eq!(covered.len(), n, "a fire ran twice:\n{text}");
}
