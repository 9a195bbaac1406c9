//! A reload that changes `store`, `host` or `lease` takes effect without
//! the operator restarting anything: the supervisor restarts the worker
//! on the new ledger (its claim thread connects once) and reconnects its
//! alert ownership.

use super::{database, worker_pid, LONG};
use crate::util::{wait_until, wait_until_or, Env};

/// A host whose per-second job always fails (so `job_failing`, an alert
/// of the job's fires shared across hosts, opens) on ledger `url`.
fn config(url: &str, host: &str) -> String {
    format!(
        "store = {url:?}\nhost = {host:?}\nlease = \"3s\"\n\
         [[job]]\nname = \"flaky\"\nschedule = \"* * * * * *\"\noverlap = \"allow\"\n\
         shell = \"false\"\n"
    )
}

/// Fire rows `host` claimed in the ledger `db`.
fn claimed_by(db: &mut postgres::Client, host: &str) -> i64 {
    db.query_one("SELECT count(*) FROM cw_fires WHERE host = $1", &[&host])
        .map(|r| r.get(0))
        .unwrap_or(0)
}

/// The host owning the open `job_failing` alert of `flaky` in ledger `db`.
fn alert_owner(db: &mut postgres::Client) -> Option<String> {
    db.query_opt(
        "SELECT host FROM cw_alerts WHERE kind = 'job_failing' AND job = 'flaky'",
        &[],
    )
    .ok()
    .flatten()
    .map(|r| r.get(0))
}

/// The owner the host's status names for its open `job_failing` alert.
fn status_owner(env: &Env) -> Option<String> {
    let s = env.status().1?;
    s["alerts"]
        .as_array()?
        .iter()
        .find(|a| a["kind"] == "job_failing" && a["job"] == "flaky")?["owner"]
        .as_str()
        .map(String::from)
}

/// Writes `body` as the config and has the running instance reload it;
/// the reload must be accepted.
fn reload(env: &Env, body: &str) {
    env.write_config(body);
    let out = env.cmd(&["reload", "-c", env.config.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_reload_to_another_store_and_host_moves_the_claims_and_the_alert_ownership() {
    let Some((pg, url)) = database() else {
        return;
    };
    pg.client("postgres")
        .batch_execute("CREATE DATABASE cw2")
        .unwrap();
    let url2 = pg.url("cw2");
    let (mut old_db, mut new_db) = (pg.client("cw"), pg.client("cw2"));

    let env = Env::new(&config(&url, "h0"));
    let _sup = env.start();
    let first_worker = worker_pid(&env);
    wait_until("h0 claims fires and owns the alert in cw", LONG, || {
        (claimed_by(&mut old_db, "h0") > 0
            && alert_owner(&mut old_db).as_deref() == Some("h0")
            && status_owner(&env).as_deref() == Some("h0"))
        .then_some(())
    });

    // The operator moves the host to another database under another name.
    reload(&env, &config(&url2, "h1"));
    wait_until_or(
        "h1 claims fires and owns the alert in cw2",
        LONG,
        || {
            (claimed_by(&mut new_db, "h1") > 0
                && alert_owner(&mut new_db).as_deref() == Some("h1")
                && status_owner(&env).as_deref() == Some("h1"))
            .then_some(())
        },
        || format!("status: {:?}", env.status().1),
    );
    // A new worker took over (its claim thread is connected to cw2) ...
    assert_ne!(worker_pid(&env), first_worker);
    // ... and no claim goes to the old ledger any more: while three more
    // fires are claimed in cw2, cw gains none.
    let (before_old, before_new) = (claimed_by(&mut old_db, "h0"), claimed_by(&mut new_db, "h1"));
    wait_until("three more claims in cw2", LONG, || {
        (claimed_by(&mut new_db, "h1") >= before_new + 3).then_some(())
    });
    assert_eq!(claimed_by(&mut old_db, "h0"), before_old);
    assert_eq!(claimed_by(&mut old_db, "h1"), 0);
}

/// A run that ignores SIGTERM for longer than `stall_after` while its
/// worker stops for a reload's restart: the stop is planned, so the
/// silent worker is not judged stalled (no `worker_stalled` alert, no
/// kill that would record its run lost); the run is stopped within its
/// kill grace and recorded killed, and the new worker starts once the old
/// one has exited.
#[test]
fn a_run_slow_to_stop_holds_a_reload_restart_without_a_stall() {
    let Some((_pg, url)) = database() else {
        return;
    };
    let config = |lease: &str| {
        format!(
            "store = {url:?}\nhost = \"h0\"\nlease = {lease:?}\n\
             [watchdog]\nheartbeat_interval = \"250ms\"\nstall_after = \"2s\"\n\
             [[job]]\nname = \"stubborn\"\nschedule = \"* * * * * *\"\n\
             kill_grace = \"4s\"\nshell = \"trap '' TERM; sleep 30\"\n"
        )
    };
    let env = Env::new(&config("3s"));
    let _sup = env.start();
    let first_worker = worker_pid(&env);
    let run = wait_until("a stubborn run in progress", LONG, || {
        env.rows("stubborn")
            .into_iter()
            .find(|r| r.outcome == "running")
            .map(|r| r.id)
    });

    reload(&env, &config("4s"));
    wait_until_or(
        "a new worker after the old one stopped its run",
        LONG,
        || (worker_pid(&env) != first_worker).then_some(()),
        || format!("status: {:?}", env.status().1),
    );
    let row = env
        .rows("stubborn")
        .into_iter()
        .find(|r| r.id == run)
        .unwrap();
    assert_eq!(row.outcome, "killed", "{row:?}");
    let stalls: i64 = env
        .db()
        .query_row(
            "SELECT count(*) FROM alerts WHERE kind = 'worker_stalled'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stalls, 0, "the planned stop was judged a stall");
}
