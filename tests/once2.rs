//! Exactly once through store faults (issue 14), continued: the per-job
//! choice between running and holding a fire the store cannot commit.
//! Checked, as in `once.rs`, from the jobs' own stamps.

use std::{collections::BTreeSet, time::Duration};

use crate::{
    once::{
        assert_ran_once, stamping_job, stamps, stop_and_account, ticking, wait_new_worker,
        wait_recorded_after, QUICK_WATCHDOG,
    },
    util::{assert_accounted, now_unix, unix, wait_until, Env},
};

const LONG: Duration = Duration::from_secs(60);

/// `on_store_failure = "hold"`: while the store cannot commit, the job's
/// fires do not run; they are recorded skipped (`store_unavailable`) once
/// it writes again. A job with the default (`run`) runs through it. Both
/// have one record per fire and every run that ran has its own.
#[test]
fn a_held_job_skips_while_the_store_fails_and_a_running_one_runs() {
    let env = Env::new("");
    let stamp_file = env.path("stamps");
    let config = QUICK_WATCHDOG.to_string()
        + &stamping_job("runs", "* * * * * *", &stamp_file, "", "true")
        + &stamping_job(
            "holds",
            "* * * * * *",
            &stamp_file,
            "on_store_failure = \"hold\"",
            "true",
        );
    env.write_config(&config);
    // Every store write of the worker's journal fails at first.
    let mut sup = env.start_with(&[("FAILPOINTS", "store::apply=25*return")]);
    wait_until("the store recovers", LONG, || {
        sup.log()
            .contains("store writes succeed again")
            .then_some(())
    });
    let recovered = now_unix();
    wait_until("fires after the recovery are recorded", LONG, || {
        ["runs", "holds"]
            .iter()
            .all(|j| {
                env.rows(j).iter().any(|r| {
                    r.scheduled_at
                        .as_deref()
                        .is_some_and(|s| unix(s) > recovered + 1)
                })
            })
            .then_some(())
    });
    assert_eq!(sup.stop(LONG), 0);
    let stopped = now_unix();

    let stamped = stamps(&stamp_file);
    assert_ran_once(&stamped);
    let held = env.rows("holds");
    let unavailable: Vec<i64> = held
        .iter()
        .filter(|r| r.skip_reason.as_deref() == Some("store_unavailable"))
        .flat_map(|r| r.covers.iter().map(|c| unix(c)))
        .collect();
    assert!(
        !unavailable.is_empty(),
        "no fire of the held job was skipped store_unavailable: {held:#?}"
    );
    let ran: BTreeSet<i64> = stamped
        .iter()
        .filter(|s| s.job == "holds")
        .flat_map(|s| s.covers.iter().copied())
        .collect();
    for t in &unavailable {
        assert!(!ran.contains(t), "held fire {t} ran anyway");
    }
    // The running job ran in the same seconds.
    let ran_through: BTreeSet<i64> = stamped
        .iter()
        .filter(|s| s.job == "runs")
        .flat_map(|s| s.covers.iter().copied())
        .collect();
    assert!(
        unavailable.iter().any(|t| ran_through.contains(t)),
        "the default job did not run while the store failed"
    );
    for job in ["runs", "holds"] {
        let rows = env.rows(job);
        let first = rows
            .iter()
            .filter_map(|r| r.scheduled_at.as_deref().map(unix))
            .min()
            .unwrap();
        let (from, to) = (first - 1, stopped - 1);
        let expected: Vec<i64> = (from + 1..to).collect();
        assert_accounted(&rows, &expected, from, to, job);
        let ids: BTreeSet<i64> = rows.iter().map(|r| r.id).collect();
        for s in stamped.iter().filter(|s| s.job == job) {
            assert!(ids.contains(&s.id), "{job}: run {} has no record", s.id);
        }
    }
}

/// kill -9 of the worker and then of its supervisor (frozen first, so it
/// cannot start another worker in between): nobody keeps the worker's
/// writes.
fn kill_both(sup: crate::util::Supervisor, worker: u32) {
    use nix::sys::signal::Signal;
    crate::util::kill(sup.pid(), Signal::SIGSTOP);
    crate::util::kill(worker, Signal::SIGKILL);
    crate::util::kill(sup.pid(), Signal::SIGKILL);
    wait_until("both dead", LONG, || {
        (!crate::util::alive(worker)).then_some(())
    });
    drop(sup);
}

/// Issue 14, the double fault: the store fails (every write of the
/// worker's journal refused), the job runs anyway, then both processes
/// are killed (-9), so nobody holds what the store never got. A new start
/// on a store that works again catches the missed fires up in one run
/// per job, and that run says it may repeat fires (`may_repeat`): from
/// the jobs' own stamps, every fire that ran twice ran again only inside
/// it; every fire has exactly one record, and `audit` agrees. A later
/// kill -9 of the worker alone (its supervisor alive and holding nothing)
/// marks nothing.
#[test]
fn a_double_fault_repeats_fires_only_in_one_catch_up_that_says_so() {
    use nix::sys::signal::Signal;
    let (env, stamp_file) = ticking("true");
    let config_path = env.config.to_str().unwrap().to_string();
    let sup = env.start_with(&[("FAILPOINTS", "store::apply=return")]);
    let worker = wait_until("a worker", LONG, || {
        env.status()
            .1
            .and_then(|s| s["worker"]["pid"].as_u64())
            .map(|p| p as u32)
    });
    wait_until("three runs while the store fails", LONG, || {
        (stamps(&stamp_file).len() >= 3).then_some(())
    });
    assert!(
        env.rows("tick").is_empty(),
        "the store took writes it should have refused"
    );
    kill_both(sup, worker);
    let killed_at = now_unix();
    let ran_before = stamps(&stamp_file).len();

    let mut sup = env.start();
    env.wait_ok(LONG);
    let catch_up = wait_until("the catch-up recorded", LONG, || {
        env.rows("tick")
            .into_iter()
            .find(|r| r.trigger == "catchup")
    });
    let flagged = |env: &Env| -> Vec<i64> {
        let db = env.db();
        let mut st = db
            .prepare("SELECT id FROM runs WHERE job = 'tick' AND may_repeat = 1 ORDER BY id")
            .unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(
        flagged(&env),
        vec![catch_up.id],
        "exactly the catch-up may repeat"
    );
    let json = env.cmd(&["runs", "tick", "--json", "-c", &config_path]);
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let marked: Vec<i64> = json
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["may_repeat"] == true)
        .filter_map(|r| r["id"].as_i64())
        .collect();
    assert_eq!(marked, vec![catch_up.id], "runs --json: {json}");
    let table = env.cmd(&["runs", "tick", "-c", &config_path]);
    assert!(
        String::from_utf8_lossy(&table.stdout).contains("catchup (may repeat)"),
        "{}",
        String::from_utf8_lossy(&table.stdout)
    );

    // The worker alone dies now: its supervisor watched it and holds
    // nothing, so the next catch-up (if any) is not in doubt.
    let worker = env.wait_ok(LONG)["worker"]["pid"].as_u64().unwrap() as u32;
    crate::util::kill(worker, Signal::SIGKILL);
    wait_new_worker(&env, worker);
    let later = now_unix();
    wait_until("fires after the restarts are recorded", LONG, || {
        env.rows("tick")
            .iter()
            .any(|r| r.covers.iter().any(|c| unix(c) > later + 1))
            .then_some(())
    });
    // cronwarden's own audit agrees, from the first fire to the last
    // surely recorded.
    let first = env
        .rows("tick")
        .iter()
        .flat_map(|r| r.covers.iter().map(|c| unix(c)))
        .min()
        .unwrap();
    let window = |t: i64| jiff::Timestamp::from_second(t).unwrap().to_string();
    let out = env.cmd(&[
        "audit",
        "tick",
        "-c",
        &config_path,
        "--from",
        &window(first),
        "--to",
        &window(later),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "audit: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("may repeat: run(s) {} (", catch_up.id)),
        "audit names the catch-up in doubt: {text}"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("may repeat: run(s) {} (", catch_up.id)),
        "audit names the catch-up in doubt: {text}"
    );
    assert_eq!(sup.stop(LONG), 0);
    let stopped = now_unix();
    assert_eq!(flagged(&env), vec![catch_up.id], "a second run in doubt");

    let rows = env.rows("tick");
    let (from, to) = (first - 1, stopped - 1);
    let expected: Vec<i64> = (from + 1..to).collect();
    assert_accounted(&rows, &expected, from, to, "tick");
    // From the stamps: a fire ran twice only as the dead worker's run and
    // then inside the catch-up; nothing else repeated, and every run of
    // the new supervisor's workers has its record.
    let stamped = stamps(&stamp_file);
    let mut runs_of = std::collections::BTreeMap::<i64, Vec<i64>>::new();
    for s in &stamped {
        for c in &s.covers {
            runs_of.entry(*c).or_default().push(s.id);
        }
    }
    let repeated: Vec<(&i64, &Vec<i64>)> =
        runs_of.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(
        !repeated.is_empty() && ran_before >= 3,
        "the catch-up repeated nothing: the test did not make a double fault"
    );
    for (t, ids) in &repeated {
        assert_eq!(
            ids[1..],
            [catch_up.id],
            "fire {t} ran again outside the one catch-up that may repeat: {ids:?}"
        );
        assert!(**t <= killed_at, "fire {t} after the kill repeated");
    }
    let recorded: BTreeSet<i64> = rows.iter().map(|r| r.id).collect();
    for s in &stamped[ran_before..] {
        assert!(recorded.contains(&s.id), "run {} has no record", s.id);
    }
}

/// Issue 14: a start whose commit is slow goes on once its claim's copy
/// is in the supervisor's pipe. Every commit takes 400 ms here (past the
/// loop's 50 ms wait), the runs' `fire` lines are never sent (so only the
/// claim's copy can stand for a run in flight), and the worker is killed
/// (-9) just after a run stamped, while its commit still waits: nothing
/// runs twice, every run that ran has its one record (under its own id),
/// and every fire is accounted.
#[test]
fn a_run_started_on_its_claims_copy_then_kill_9_is_recorded_once() {
    let (env, stamp_file) = ticking("sleep 2");
    let mut sup = env.start_with(&[(
        "FAILPOINTS",
        "store::apply=sleep(400);runner::unannounced=return",
    )]);
    let pid = env.wait_ok(LONG)["worker"]["pid"].as_u64().unwrap() as u32;
    let first = wait_until("a few runs recorded", LONG, || {
        let rows = env.rows("tick");
        (rows.len() >= 2).then(|| unix(rows[0].scheduled_at.as_deref().unwrap()))
    });
    let before = stamps(&stamp_file).len();
    wait_until("a new run", LONG, || {
        (stamps(&stamp_file).len() > before).then_some(())
    });
    crate::util::kill(pid, nix::sys::signal::Signal::SIGKILL);
    let killed = now_unix();
    wait_new_worker(&env, pid);
    wait_recorded_after(
        &env,
        "tick",
        killed + 1,
        "fires after the kill are recorded",
    );
    let (rows, stamped) = stop_and_account(&env, &mut sup, first, &stamp_file);
    for s in &stamped {
        let r = rows.iter().find(|r| r.id == s.id);
        let r = r.unwrap_or_else(|| panic!("run {} ran and has no record: {s:?}", s.id));
        let covers: Vec<i64> = r.covers.iter().map(|c| unix(c)).collect();
        assert_eq!(covers, s.covers, "record {} is another run's: {r:?}", r.id);
    }
}

/// A supervisor stopped moments after its start, while its worker is still
/// taking over the store (held there by a fail point); then a supervisor
/// started again: the two logs, once the second worker took up its jobs
/// (the second supervisor stopped too).
fn stop_during_a_take_over_then_start(env: &crate::util::Env) -> (String, String) {
    let mut sup = env.start_with(&[("FAILPOINTS", "store::take_over=sleep(3000)")]);
    wait_until("the worker's hello", LONG, || {
        sup.log().contains("worker ready").then_some(())
    });
    assert_eq!(sup.stop(LONG), 0, "{}", sup.log());
    let stopped = sup.log();
    assert!(
        stopped.contains("SIGTERM while taking over the store"),
        "the stop did not come during the take-over:\n{stopped}"
    );
    let mut sup = env.start();
    wait_until("the next worker started", LONG, || {
        sup.log().contains("worker started jobs").then_some(())
    });
    let log = sup.log();
    assert_eq!(sup.stop(LONG), 0, "{log}");
    (stopped, log)
}

/// A worker stopped while it takes over the store scheduled nothing, so the
/// next start has nothing in doubt (no warning that the previous worker was
/// killed, no catch-up recorded `may_repeat`).
#[test]
fn a_worker_stopped_while_taking_over_the_store_leaves_nothing_in_doubt() {
    let (env, _stamps) = ticking("true");
    let (_, log) = stop_during_a_take_over_then_start(&env);
    assert!(
        !log.contains("the previous worker was killed"),
        "a stop taken for a kill:\n{log}"
    );
}

/// The same stop, when the worker stopped during its take-over followed a
/// killed one whose writes nobody kept: the doubt it inherited is handed
/// on, and the next worker still says its predecessor was killed.
#[test]
fn a_stop_during_the_take_over_hands_on_the_doubt_it_inherited() {
    let (env, _stamps) = ticking("true");
    let sup = env.start();
    let worker = env.wait_ok(LONG)["worker"]["pid"].as_u64().unwrap() as u32;
    wait_until("the worker took up its jobs", LONG, || {
        sup.log().contains("worker started jobs").then_some(())
    });
    kill_both(sup, worker);
    let (stopped, log) = stop_during_a_take_over_then_start(&env);
    assert!(
        log.contains("the previous worker was killed"),
        "the doubt of a kill was dropped by a stop in between:\n{stopped}\n{log}"
    );
}
