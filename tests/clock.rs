//! Time in the worker and healing (issue 13, items 3, 4 and 13): the
//! wall clock of both processes stepped while they run, and a stored next
//! fire off its schedule at start.
//!
//! The steps are made with libfaketime (Debian package `faketime`),
//! preloaded into the supervisor (and so into the worker and the jobs)
//! with the monotonic and boot clocks left real: its offset is read from
//! a file the test rewrites, as an NTP step or `date -s` would move the
//! machine's clock. Without libfaketime those tests are skipped.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::util::*;

const LONG: Duration = Duration::from_secs(60);

/// Where Debian puts libfaketime (`/usr/lib/<triplet>/faketime/`).
fn libfaketime() -> Option<PathBuf> {
    fs::read_dir("/usr/lib")
        .ok()?
        .flatten()
        .map(|e| e.path().join("faketime/libfaketime.so.1"))
        .chain([PathBuf::from("/usr/lib/faketime/libfaketime.so.1")])
        .find(|p| p.exists())
}

/// The environment that preloads libfaketime with its offset (seconds,
/// signed) read from `offset`, re-read at most a second later after each
/// change; the monotonic clocks stay real.
fn faketime_vars(lib: &Path, offset: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("LD_PRELOAD", lib.display().to_string()),
        ("FAKETIME_TIMESTAMP_FILE", offset.display().to_string()),
        ("FAKETIME_CACHE_DURATION", "1".into()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".into()),
    ]
}

/// Starts the supervisor under libfaketime at offset 0; `None` (the test
/// is skipped) without libfaketime.
fn start_faked(env: &Env) -> Option<(Supervisor, PathBuf)> {
    let Some(lib) = libfaketime() else {
        skip("libfaketime is not installed (Debian package faketime)");
        return None;
    };
    let offset = env.path("faketime-offset");
    fs::write(&offset, "+0\n").unwrap();
    let vars = faketime_vars(&lib, &offset);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Some((env.start_with(&vars), offset))
}

/// The status once it shows a clock jump for which `pick` holds.
fn wait_for_jump(env: &Env, what: &str, pick: impl Fn(i64) -> bool) -> serde_json::Value {
    wait_until(what, LONG, || {
        env.status().1.filter(|s| {
            s["clock_jumps"]
                .as_array()
                .is_some_and(|j| j.iter().any(|j| j["jump_ms"].as_i64().is_some_and(&pick)))
        })
    })
}

fn alert_kinds(status: &serde_json::Value) -> Vec<String> {
    status["alerts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|a| a["kind"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Item 3: the wall clock of both processes steps 2 h ahead while a job
/// with `timeout = "1h"` runs. The run is not killed (its age is on the
/// monotonic clock), it ends on its own as a success, and no
/// `job_failing` or `job_timeout` opens.
///
/// The supervisor itself must be seen judging on the stepped clock: the
/// worker reporting the jump proves only that the worker saw it (each
/// process re-reads the offset on its own). A test alert is dated by the
/// supervisor's wall clock; once one reads two hours ahead of the real
/// clock, every judgement after it that measured a run's age by wall
/// clock would find the run 2 h old, past 1h + kill_grace + 10s, and
/// SIGKILL it (as before the fix). Several seconds of judgements are
/// watched from then on.
#[test]
fn a_forward_step_leaves_a_running_job_alone() {
    let env = Env::new("");
    let d = env.dir.path().display().to_string();
    let notices = env.path("notices");
    env.write_config(&format!(
        "[[job]]\nname = \"long\"\nschedule = \"@every 1h\"\ntimeout = \"1h\"\nkill_grace = \"1s\"\n\
         alert_after_failures = 1\n\
         shell = \"echo $$ > {d}/pid; while [ ! -e {d}/done ]; do sleep 0.1; done\"\n\
         [[alert]]\nkind = \"exec\"\ncommand = [\"sh\", \"-c\", \"cat >> {n}; echo >> {n}\"]\n",
        n = notices.display()
    ));
    let Some((_sup, offset)) = start_faked(&env) else {
        return;
    };
    env.wait_ok(LONG);
    let out = env.cmd(&["trigger", "long", "-c", env.config.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid = wait_until("the run started", LONG, || {
        read_pids(&env.path("pid")).first().copied()
    });
    let worker = env.status().1.unwrap()["worker"]["pid"].clone();

    fs::write(&offset, "+7200\n").unwrap();
    wait_for_jump(&env, "the +2h step in the status", |ms| ms > 7_000_000);
    wait_until(
        "a test alert dated by the supervisor's stepped clock",
        LONG,
        || {
            let out = env.cmd(&["alerts", "test", "-c", env.config.to_str().unwrap()]);
            assert_eq!(out.status.code(), Some(0), "{out:?}");
            let stepped = fs::read_to_string(&notices)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|n| n["kind"] == "test")
                .filter_map(|n| n["opened_at"].as_str()?.parse::<jiff::Timestamp>().ok())
                .any(|t| {
                    t.duration_since(jiff::Timestamp::now())
                        > jiff::SignedDuration::from_secs(7_000)
                });
            (stepped || {
                std::thread::sleep(Duration::from_millis(300));
                false
            })
            .then_some(())
        },
    );
    // The supervisor judges every second; under the old rule the run was
    // SIGKILLed at the first judgement after the step. Watch several
    // seconds of judgements on the stepped clock: the run lives on,
    // nothing fails.
    let watched = std::time::Instant::now();
    let mut seen = 0;
    wait_until("ten statuses over 5 s after the step", LONG, || {
        let s = env.status().1?;
        assert!(alive(pid), "the run was killed after the step: {s}");
        let kinds = alert_kinds(&s);
        assert!(
            !kinds
                .iter()
                .any(|k| k == "job_failing" || k == "job_timeout"),
            "{s}"
        );
        assert_eq!(
            job(&s, "long")["running"].as_array().map(Vec::len),
            Some(1),
            "{s}"
        );
        seen += 1;
        std::thread::sleep(Duration::from_millis(300));
        (seen >= 10 && watched.elapsed() > Duration::from_secs(5)).then_some(())
    });
    fs::write(env.path("done"), "").unwrap();
    let rows = wait_until("the run's record completed", LONG, || {
        let rows = env.rows("long");
        rows.iter()
            .any(|r| r.trigger == "manual" && r.finished_at.is_some())
            .then_some(rows)
    });
    let run = rows.iter().find(|r| r.trigger == "manual").unwrap();
    assert_eq!(run.outcome, "success", "{run:?}");
    let s = env.status().1.unwrap();
    assert!(
        !alert_kinds(&s)
            .iter()
            .any(|k| k == "job_failing" || k == "job_timeout" || k == "job_lost"),
        "{s}"
    );
    assert_eq!(s["worker"]["pid"], worker, "the worker was replaced: {s}");
}

/// Item 4: the wall clock of both processes steps 10 minutes back. A
/// per-second job keeps firing every second on the new clock (it is not
/// silenced for 10 minutes), the status shows the jump, and nothing is
/// alerted: no `job_late`, no misarming, no worker replaced.
#[test]
fn a_backward_step_keeps_a_per_second_job_firing() {
    let env = Env::new("[[job]]\nname = \"tick\"\nschedule = \"* * * * * *\"\nshell = \"true\"\n");
    let Some((_sup, offset)) = start_faked(&env) else {
        return;
    };
    env.wait_ok(LONG);
    let before = wait_until("a few fires", LONG, || {
        let rows = env.rows("tick");
        (rows.len() >= 3).then_some(rows)
    });
    let worker = env.status().1.unwrap()["worker"]["pid"].clone();
    let last_before = before
        .iter()
        .filter_map(|r| r.scheduled_at.as_deref().map(unix))
        .max()
        .unwrap();

    fs::write(&offset, "-600\n").unwrap();
    let s = wait_for_jump(&env, "the -10 min step in the status", |ms| ms < -590_000);
    let jump = s["clock_jumps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["jump_ms"].as_i64() < Some(-590_000))
        .unwrap()
        .clone();
    assert_eq!(jump["kind"], "step", "{s}");
    // Fires on the new clock: scheduled about 10 minutes before the last
    // one before the step. Five of them, a second apart.
    let after = wait_until("five fires on the stepped-back clock", LONG, || {
        // By covers: a loaded host may coalesce two seconds into one run.
        let mut times: Vec<i64> = env
            .rows("tick")
            .iter()
            .flat_map(|r| r.covers.iter().map(|c| unix(c)))
            .filter(|t| *t < last_before - 500)
            .collect();
        times.sort();
        times.dedup();
        (times.len() >= 5).then_some(times)
    });
    assert!(
        after.windows(2).all(|w| w[1] - w[0] == 1),
        "not every second: {after:?}"
    );
    let s = env.status().1.unwrap();
    let next = job(&s, "tick")["next_fire_at"].as_str().map(unix).unwrap();
    assert!(
        next < last_before - 500,
        "armed {next}, still on the old clock (last fire before the step {last_before}): {s}"
    );
    for kind in [
        "job_late",
        "job_misarmed",
        "worker_misarmed",
        "worker_restarted",
    ] {
        assert!(!alert_kinds(&s).iter().any(|k| k == kind), "{kind}: {s}");
    }
    assert_eq!(s["worker"]["pid"], worker, "the worker was replaced: {s}");
}

/// Item 13: a job's stored next fire a day ahead of its schedule (as a
/// backward step while cronwarden was stopped would leave it). At start
/// the worker corrects it to the fire after the last accounted one and
/// says so in its log; the fires passed over are accounted (by a catch-up
/// when there are several), and the job fires on schedule again.
#[test]
fn a_stored_next_fire_a_day_ahead_is_corrected_at_start() {
    let env = Env::new("[[job]]\nname = \"tick\"\nschedule = \"* * * * * *\"\nshell = \"true\"\n");
    let mut sup = env.start();
    env.wait_ok(LONG);
    wait_until("a few fires", LONG, || {
        (env.rows("tick").len() >= 3).then_some(())
    });
    assert_eq!(sup.stop(LONG), 0);
    let last: String = env
        .db()
        .query_row(
            "SELECT last_scheduled_at FROM jobs WHERE name = 'tick'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let ahead = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24);
    {
        let db = rusqlite::Connection::open(env.state_dir().join("cronwarden.db")).unwrap();
        let n = db
            .execute(
                "UPDATE jobs SET next_run_at = ?1 WHERE name = 'tick'",
                [ahead.strftime("%Y-%m-%dT%H:%M:%S.%9fZ").to_string()],
            )
            .unwrap();
        assert_eq!(n, 1);
    }
    let restarted = now_unix();
    let sup = env.start();
    let rows = wait_until("scheduled fires after the restart", LONG, || {
        let rows = env.rows("tick");
        let fresh = rows
            .iter()
            .filter(|r| r.trigger == "schedule")
            .filter(|r| r.scheduled_at.as_deref().map(unix) > Some(restarted + 1))
            .count();
        (fresh >= 3).then_some(rows)
    });
    // Every second from the last accounted fire on is accounted exactly
    // once: the downtime's by a catch-up (or its own run), then on
    // schedule; none is passed over as the stored fire would have.
    let last = unix(&last);
    let mut count = std::collections::BTreeMap::<i64, u32>::new();
    for r in &rows {
        for c in &r.covers {
            *count.entry(unix(c)).or_default() += 1;
        }
    }
    for t in (last + 1)..=(restarted + 2) {
        assert_eq!(count.get(&t), Some(&1), "second {t}: {rows:#?}");
    }
    let log = sup.log();
    assert!(
        log.contains("corrected") && log.contains("tick"),
        "the correction is not in the log:\n{log}"
    );
    let s = env.wait_ok(LONG);
    assert!(!alert_kinds(&s).iter().any(|k| k == "job_misarmed"), "{s}");
}

/// Detection leads to healing: a running worker arms a job a day too far
/// (fault injection). The supervisor's armed cross-check finds it
/// (`job_misarmed`), tells the worker to re-arm the job, and the job fires
/// on schedule again from the same worker; the fires the wrong arming
/// passed over are accounted by the misfire rules, each exactly once.
#[test]
fn a_misarmed_job_is_rearmed_and_fires_again() {
    let env = Env::new(
        "[[job]]\nname = \"victim\"\nschedule = \"* * * * * *\"\nshell = \"true\"\n\
         [[job]]\nname = \"fine\"\nschedule = \"* * * * * *\"\nshell = \"true\"\n",
    );
    let sup = env.start_with(&[("FAILPOINTS", "worker::misarm=return(victim)")]);
    env.wait_ok(LONG);
    let worker = env.status().1.unwrap()["worker"]["pid"].clone();
    wait_until(
        "the supervisor tells the worker to re-arm the job",
        LONG,
        || {
            let log = sup.log();
            (log.contains("telling it to re-arm the job") && log.contains("victim")).then_some(())
        },
    );
    let healed_at = now_unix();
    wait_until("the job firing again on schedule", LONG, || {
        env.rows("victim")
            .iter()
            .filter(|r| r.trigger == "schedule")
            .filter(|r| r.scheduled_at.as_deref().map(unix) > Some(healed_at + 1))
            .nth(2)
            .map(|_| ())
    });
    let s = env.wait_ok(LONG);
    assert_eq!(s["worker"]["pid"], worker, "the worker was replaced: {s}");
    assert!(!alert_kinds(&s).iter().any(|k| k == "job_misarmed"), "{s}");
    // Every second from the first fire to now is accounted exactly once.
    let rows = env.rows("victim");
    let mut count = std::collections::BTreeMap::<i64, u32>::new();
    for r in &rows {
        for c in &r.covers {
            *count.entry(unix(c)).or_default() += 1;
        }
    }
    let first = *count.keys().next().unwrap();
    for t in first..=(healed_at + 2) {
        assert_eq!(count.get(&t), Some(&1), "second {t}: {rows:#?}");
    }
}
