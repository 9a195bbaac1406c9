//! Every fire accounted for, continued: the store itself, end to end: a
//! kill -9 during bursts of fires, a corrupt file, retention, and `audit`
//! on a broken ledger.

use std::{fs, time::Duration};

use nix::sys::signal::Signal;

use crate::{
    ledger::{config_path, sleep_until_unix, worker_pid, LONG},
    util::{assert_accounted, every_nth_second, kill, now_unix, unix, wait_until, Env},
};

/// kill -9 of the worker during bursts of fires: the store stays intact and
/// complete.
#[test]
fn store_survives_kill_9_during_bursts() {
    let mut body = String::new();
    for i in 0..25 {
        body.push_str(&format!(
            "[[job]]\nname = \"j{i}\"\nschedule = \"* * * * * *\"\nshell = \"echo {i}\"\n"
        ));
    }
    let env = Env::new(&body);
    let _sup = env.start();
    let mut pid = worker_pid(&env);
    let from = now_unix();
    for round in 0..3 {
        sleep_until_unix(from + 2 + round * 2);
        kill(pid, Signal::SIGKILL);
        pid = wait_until("a new worker", LONG, || {
            let s = env.status().1?;
            let p = s["worker"]["pid"].as_u64()? as u32;
            (s["state"] == "ok" && p != pid).then_some(p)
        });
    }
    let to = now_unix() + 2;
    sleep_until_unix(to + 2);
    let check: String = env
        .db()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    for i in 0..25 {
        let name = format!("j{i}");
        assert_accounted(
            &env.rows(&name),
            &every_nth_second(from, to, 1),
            from,
            to,
            &name,
        );
    }
}

#[test]
fn a_corrupt_store_stops_run_with_the_file_named_and_untouched() {
    let env = Env::new("[[job]]\nname = \"a\"\nschedule = \"@daily\"\ncommand = [\"true\"]\n");
    fs::create_dir_all(env.state_dir()).unwrap();
    let db = env.state_dir().join("cronwarden.db");
    let junk = b"SQLite format 3\0 but not really; a truncated copy\n".repeat(64);
    fs::write(&db, &junk).unwrap();
    let out = env.cmd(&["run", "-c", &config_path(&env)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(db.to_str().unwrap()), "{err}");
    assert!(err.contains("move it aside"), "{err}");
    assert_eq!(fs::read(&db).unwrap(), junk, "the store file was modified");
}

/// Retention holds for every job that gets records, skips included: a
/// paused job only ever skips, and its records are pruned like a running
/// job's, a few jobs per second, never all at once.
#[test]
fn retention_prunes_every_job_skips_included() {
    let env = Env::new(
        "[[job]]\nname = \"paused\"\nschedule = \"* * * * * *\"\nretention = 5\nshell = \"true\"\n\
         [[job]]\nname = \"runs\"\nschedule = \"* * * * * *\"\nretention = 5\nshell = \"true\"\n",
    );
    let _sup = env.start();
    env.wait_ok(LONG);
    let out = env.cmd(&["pause", "paused", "-c", &config_path(&env)]);
    assert_eq!(out.status.code(), Some(0));
    let start = now_unix();
    // One sweep a second: a few seconds of records beyond the retention at
    // most (and a run in flight); without pruning they grow without bound.
    let bound = 5 + 4;
    let pruned = |name: &str| {
        let rows = env.rows(name);
        let oldest = rows.first()?.scheduled_at.as_deref().map(unix)?;
        (oldest > start + 8).then_some(rows)
    };
    wait_until("both jobs pruned past their first records", LONG, || {
        Some(()).filter(|_| pruned("paused").is_some() && pruned("runs").is_some())
    });
    let until = now_unix() + 4;
    while now_unix() < until {
        for name in ["paused", "runs"] {
            let rows = env.rows(name);
            assert!(
                rows.len() <= bound,
                "{name}: {} records kept, retention 5: {rows:#?}",
                rows.len()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let paused = env.rows("paused");
    assert!(
        paused
            .iter()
            .rev()
            .take(3)
            .all(|r| r.skip_reason.as_deref() == Some("paused")),
        "{paused:#?}"
    );
    assert!(
        env.rows("runs").iter().any(|r| r.outcome == "success"),
        "{:#?}",
        env.rows("runs")
    );
}

/// `cronwarden audit` exits 1 when the ledger is broken (a record gone).
#[test]
fn audit_exits_1_on_a_broken_ledger() {
    let env = Env::new("[[job]]\nname = \"j\"\nschedule = \"* * * * * *\"\nshell = \"true\"\n");
    let _sup = env.start();
    env.wait_ok(LONG);
    let from = now_unix();
    sleep_until_unix(from + 5);
    let window = |t: i64| jiff::Timestamp::from_second(t).unwrap().to_string();
    let audit = || {
        env.cmd(&[
            "audit",
            "j",
            "-c",
            &config_path(&env),
            "--from",
            &window(from + 1),
            "--to",
            &window(from + 4),
        ])
    };
    let out = audit();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let victim = window(from + 2).replace('Z', "");
    let db = rusqlite::Connection::open(env.state_dir().join("cronwarden.db")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    let n = db
        .execute(
            "DELETE FROM runs WHERE job = 'j' AND scheduled_at LIKE ?1 || '%'",
            [&victim],
        )
        .unwrap();
    assert_eq!(n, 1, "no record at {victim}");
    drop(db);
    let out = audit();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.to_lowercase().contains("missing"), "{text}");
}

/// A retention lowered by a reload prunes a job's history even when the job
/// writes no new record (its new schedule fires next year): the worker
/// looks up which jobs hold more records than they now keep.
#[test]
fn lowered_retention_prunes_a_quiet_jobs_history() {
    let job = |schedule: &str, keep: u32| {
        format!("[[job]]\nname = \"quiet\"\nschedule = \"{schedule}\"\nretention = {keep}\nshell = \"true\"\n")
    };
    let env = Env::new(&job("* * * * * *", 50));
    let _sup = env.start();
    env.wait_ok(LONG);
    wait_until("8 records of the job", LONG, || {
        (env.rows("quiet").len() >= 8).then_some(())
    });
    env.write_config(&job("0 0 1 1 *", 3));
    let out = env.cmd(&["reload", "--config", &config_path(&env)]);
    assert_eq!(out.status.code(), Some(0));
    wait_until("the history pruned to the new retention", LONG, || {
        (env.rows("quiet").len() <= 3).then_some(())
    });
}
