//! Wedge detection and self-healing, end to end: fail points compiled into
//! the test build of the real binary, real signals, real processes.

use std::{
    fs,
    os::unix::net::UnixDatagram,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;

use crate::util::{alive, job, kill, processes, read_pids, wait_until, Env};

const LONG: Duration = Duration::from_secs(40);

fn has_alert(env: &Env, kind: &str, job: Option<&str>) -> bool {
    env.open_alerts()
        .iter()
        .any(|(k, j)| k == kind && j.as_deref() == job)
}

#[test]
fn a_loop_that_panics_every_turn_is_alive_but_failing_not_ok() {
    let env = Env::new(
        "[watchdog]\nheartbeat_interval = \"200ms\"\nstall_after = \"1s\"\nfailing_restart_after = \"1h\"\n\
         [[job]]\nname = \"a\"\nschedule = \"* * * * * *\"\nshell = \"true\"\n",
    );
    let _sup = env.start_with(&[("FAILPOINTS", "worker::turn=panic")]);
    let s = wait_until("worker_failing reported", LONG, || {
        env.status()
            .1
            .filter(|s| s["reasons"].to_string().contains("alive but failing"))
    });
    assert_eq!(s["state"], "degraded", "{s}");
    // Heartbeats keep coming: it is failing, not stalled.
    assert!(
        s["worker"]["heartbeat_age_ms"].as_u64().unwrap() < 1000,
        "{s}"
    );
    wait_until("the worker_failing alert", LONG, || {
        has_alert(&env, "worker_failing", None).then_some(())
    });
    let log = fs::read_to_string(env.path("supervisor.log")).unwrap();
    assert!(
        log.contains("scheduler turn panicked"),
        "the panic was not logged at ERROR:\n{log}"
    );
}

/// A worker that silently stops firing one job while others fire: that job
/// turns late (by the supervisor's own schedule computation), only that job.
#[test]
fn silently_dropped_fires_make_only_that_job_late() {
    let env = Env::new(
        "[watchdog]\nlate_after = \"2s\"\n\
         [[job]]\nname = \"victim\"\nschedule = \"* * * * * *\"\nshell = \"echo v\"\n\
         [[job]]\nname = \"healthy\"\nschedule = \"* * * * * *\"\nshell = \"echo h\"\n",
    );
    let _sup = env.start_with(&[("FAILPOINTS", "worker::drop_fire=return(victim)")]);
    let started = Instant::now();
    let s = wait_until("victim late", LONG, || {
        env.status()
            .1
            .filter(|s| job(s, "victim")["state"] == "late")
    });
    println!("victim late after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(2 + 1 + 10));
    assert_ne!(job(&s, "healthy")["state"], "late", "{s}");
    assert!(
        job(&s, "healthy")["last_run"]["outcome"] == "success",
        "{s}"
    );
    wait_until("job_late alert for victim only", LONG, || {
        (has_alert(&env, "job_late", Some("victim"))
            && !has_alert(&env, "job_late", Some("healthy")))
        .then_some(())
    });
}

/// The 35-hour busy flag: a run that ignores SIGTERM and leaves a grandchild
/// on the pipe. Overlap skips raise a streak alert that says what the run
/// is doing; the timeout clears the busy flag and the next fire runs.
#[test]
fn hung_run_raises_overlap_streak_then_timeout_clears_it() {
    let env = Env::new("");
    let d = env.dir.path().display().to_string();
    env.write_config(&format!(
        r#"[[job]]
name = "stuck"
schedule = "* * * * * *"
overlap = "skip"
overlap_alert_after = 2
timeout = "5s"
kill_grace = "1s"
shell = "trap '' TERM; echo $$ >> {d}/runs; echo working on it; sh -c 'exec sleep 300' & sleep 300"
"#
    ));
    let _sup = env.start();
    let s = wait_until("the overlap streak alert", LONG, || {
        env.status().1.filter(|s| {
            s["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["kind"] == "job_overlap_streak")
        })
    });
    assert_eq!(job(&s, "stuck")["state"], "wedged", "{s}");
    let alert = s["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "job_overlap_streak")
        .unwrap()
        .clone();
    let summary = alert["summary"].as_str().unwrap();
    assert!(
        summary.contains("has been running for") && summary.contains("in state"),
        "{summary}"
    );
    assert!(
        summary.contains("its output is held open by") && summary.contains("sleep"),
        "{summary}"
    );
    assert!(
        summary.contains("last output \"working on it\""),
        "{summary}"
    );
    // The timeout kills the group and releases the busy flag: a new run starts.
    wait_until("a timed-out run", LONG, || {
        env.status()
            .1
            .filter(|s| job(s, "stuck")["last_run"]["outcome"] == "timeout")
    });
    wait_until("the next run started", LONG, || {
        (read_pids(&env.path("runs")).len() >= 2).then_some(())
    });
    wait_until("the overlap streak resolved", LONG, || {
        (!has_alert(&env, "job_overlap_streak", Some("stuck"))).then_some(())
    });
}

#[test]
fn zero_output_and_failure_streaks_open_and_resolve() {
    let env = Env::new("");
    let good = env.path("good");
    env.write_config(&format!(
        "[[job]]\nname = \"quiet\"\nschedule = \"* * * * * *\"\nzero_output_alert_after = 2\nalert_after_failures = 2\n\
         shell = \"test -f {g} && echo fine\"\n",
        g = good.display()
    ));
    let _sup = env.start();
    wait_until("both streak alerts open", LONG, || {
        (has_alert(&env, "job_zero_output_streak", Some("quiet"))
            && has_alert(&env, "job_failing", Some("quiet")))
        .then_some(())
    });
    fs::write(&good, "").unwrap();
    wait_until("both resolved after a good run", LONG, || {
        (!has_alert(&env, "job_zero_output_streak", Some("quiet"))
            && !has_alert(&env, "job_failing", Some("quiet")))
        .then_some(())
    });
    // History keeps both, resolved.
    let resolved: i64 = env
        .db()
        .query_row(
            "SELECT count(*) FROM alerts WHERE job = 'quiet' AND resolved_at IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(resolved, 2);
}

#[test]
fn crash_loop_is_down_and_alerted_then_recovers() {
    let env = Env::new("[[job]]\nname = \"a\"\nschedule = \"* * * * * *\"\nshell = \"true\"\n");
    let _sup = env.start();
    let mut pid = env.wait_ok(LONG)["worker"]["pid"].as_u64().unwrap() as u32;
    for _ in 0..5 {
        kill(pid, Signal::SIGKILL);
        pid = wait_until("a replacement worker", LONG, || {
            let s = env.status().1?;
            let p = s["worker"]["pid"].as_u64()? as u32;
            (p != pid).then_some(p)
        });
    }
    let s = wait_until("down with a crash-loop alert", LONG, || {
        env.status().1.filter(|s| {
            s["state"] == "down" && s["alerts"].to_string().contains("worker_crash_loop")
        })
    });
    assert!(s["worker"]["restarts"].as_u64().unwrap() >= 5);
    // Left alone, the worker stays up and the crash loop ends.
    wait_until("recovered", Duration::from_secs(60), || {
        env.status().1.filter(|s| s["state"] == "ok")
    });
}

fn zombies_of(pid: u32) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|p| p.state == "Z" && p.ppid == pid)
        .map(|p| p.pid)
        .collect()
}

#[test]
fn killed_worker_leaves_no_job_running_and_no_zombie() {
    killed_worker_with_a_run_in_flight(&[]);
}

/// The worker dies after starting a run and before its `fire` line: the
/// supervisor never heard of the run, yet finds it among the dead worker's
/// orphans, kills it, and its `job_lost` alert still says what it was
/// doing.
#[test]
fn a_run_the_dead_worker_never_reported_is_killed_and_described() {
    killed_worker_with_a_run_in_flight(&[("FAILPOINTS", "runner::unannounced=return")]);
}

fn killed_worker_with_a_run_in_flight(vars: &[(&str, &str)]) {
    let env = Env::new("");
    let d = env.dir.path().display().to_string();
    env.write_config(&format!(
        "[[job]]\nname = \"long\"\nschedule = \"* * * * * *\"\noverlap_alert_after = 1000\n\
         shell = \"echo $$ >> {d}/pids; sh -c 'echo $$ >> {d}/pids; exec sleep 300' & exec sleep 300\"\n"
    ));
    let sup = env.start_with(vars);
    let wpid = env.wait_ok(LONG)["worker"]["pid"].as_u64().unwrap() as u32;
    let pids = wait_until("job and grandchild running", LONG, || {
        Some(read_pids(&env.path("pids"))).filter(|p| p.len() >= 2)
    });
    if !vars.is_empty() {
        // The status cannot show what it was never told.
        let (_, s) = env.status();
        let running = s.as_ref().map(|s| job(s, "long")["running"].clone());
        assert!(
            running
                .as_ref()
                .and_then(|r| r.as_array())
                .is_none_or(|r| r.is_empty()),
            "the unannounced run is in the status: {running:?}"
        );
    }
    kill(wpid, Signal::SIGKILL);
    wait_until("every job process gone", LONG, || {
        pids.iter().all(|p| !alive(*p)).then_some(())
    });
    wait_until("the run recorded lost", LONG, || {
        env.rows("long").into_iter().find(|r| r.outcome == "lost")
    });
    // The job_lost alert says what was running when the worker died.
    let details: serde_json::Value = wait_until("the job_lost alert recorded", LONG, || {
        env.db()
            .query_row(
                "SELECT details FROM alerts WHERE kind = 'job_lost' AND job = 'long'",
                [],
                |r| r.get::<_, String>(0),
            )
            .ok()
            .and_then(|d| serde_json::from_str(&d).ok())
    });
    let seen: Vec<u64> = details["processes"]
        .as_array()
        .unwrap_or_else(|| panic!("no processes in {details}"))
        .iter()
        .filter_map(|p| p["pid"].as_u64())
        .collect();
    assert!(
        pids.iter().all(|p| seen.contains(&(*p as u64))),
        "job {pids:?} and grandchild not in the job_lost alert: {details}"
    );
    wait_until("no zombie under the supervisor", LONG, || {
        zombies_of(sup.pid()).is_empty().then_some(())
    });
}

/// systemd's notify protocol on a test socket: READY after hello, WATCHDOG
/// pings at half of WATCHDOG_USEC, STATUS, STOPPING on shutdown, in order.
#[test]
fn sd_notify_ready_watchdog_status_stopping() {
    let env = Env::new("[[job]]\nname = \"a\"\nschedule = \"@daily\"\nshell = \"true\"\n");
    let sock_path = env.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut sup = env.start_with(&[
        ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
        ("WATCHDOG_USEC", "400000"),
    ]);
    let mut got: Vec<String> = vec![];
    let mut buf = [0u8; 4096];
    while got.iter().filter(|m| m.contains("WATCHDOG=1")).count() < 3 {
        let n = sock.recv(&mut buf).expect("a notify message in time");
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert_eq!(sup.stop(LONG), 0);
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    while let Ok(n) = sock.recv(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let pos = |m: &str| {
        got.iter()
            .position(|g| g.contains(m))
            .unwrap_or_else(|| panic!("no {m} in {got:?}"))
    };
    assert!(
        got.iter()
            .any(|g| g.contains("STATUS=ok: 1 jobs, 0 open alerts, worker ")),
        "{got:?}"
    );
    assert!(
        pos("READY=1") < got.iter().rposition(|g| g.contains("WATCHDOG=1")).unwrap(),
        "{got:?}"
    );
    assert_eq!(
        pos("STOPPING=1"),
        got.len() - 1,
        "STOPPING=1 must come last: {got:?}"
    );
}

/// The worker stops firing a job but keeps it armed further on: the armed
/// digest in its heartbeat disagrees with the supervisor's own computation,
/// and that is reported before the fire is even late.
#[test]
fn armed_digest_disagreement_is_reported_before_anything_is_late() {
    let env = Env::new(
        "[watchdog]\nlate_after = \"1h\"\n\
         [[job]]\nname = \"victim\"\nschedule = \"* * * * * *\"\nshell = \"true\"\n\
         [[job]]\nname = \"fine\"\nschedule = \"* * * * * *\"\nshell = \"true\"\n",
    );
    let _sup = env.start_with(&[("FAILPOINTS", "worker::drop_fire=return(victim)")]);
    let s = wait_until("worker_misarmed", LONG, || {
        env.status()
            .1
            .filter(|s| s["alerts"].to_string().contains("worker_misarmed"))
    });
    let alert = s["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "worker_misarmed")
        .unwrap()
        .clone();
    assert!(
        alert["summary"].as_str().unwrap().contains("victim"),
        "{alert}"
    );
    assert!(
        !alert["summary"].as_str().unwrap().contains("fine"),
        "{alert}"
    );
    assert!(!s["alerts"].to_string().contains("job_late"), "{s}");
}

/// If the worker never ends a run past its timeout, the supervisor kills
/// the run's process group itself.
#[test]
fn supervisor_kills_a_run_the_worker_let_outlive_its_timeout() {
    let env = Env::new("");
    let d = env.dir.path().display().to_string();
    env.write_config(&format!(
        "[[job]]\nname = \"forever\"\nschedule = \"@every 1h\"\ntimeout = \"1s\"\nkill_grace = \"1s\"\n\
         shell = \"echo $$ > {d}/pid; exec sleep 300\"\n"
    ));
    let sup = env.start_with(&[("FAILPOINTS", "runner::no_timeout=return")]);
    env.wait_ok(LONG);
    let out = env.cmd(&["trigger", "forever", "-c", env.config.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid = wait_until("the run started", LONG, || {
        read_pids(&env.path("pid")).first().copied()
    });
    let started = Instant::now();
    wait_until("the run's group killed by the supervisor", LONG, || {
        (!alive(pid)).then_some(())
    });
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(10),
        "killed after {took:?}: before timeout + kill_grace + 10s?"
    );
    assert!(sup.log().contains("outlived its timeout"), "{}", sup.log());
}

/// A loop that fails every turn is replaced after `failing_restart_after`
/// (2s here), with the reason in the status.
#[test]
fn a_loop_failing_every_turn_is_replaced_after_failing_restart_after() {
    let env = Env::new(
        "[watchdog]\nheartbeat_interval = \"200ms\"\nstall_after = \"1s\"\nfailing_restart_after = \"2s\"\n\
         [[job]]\nname = \"a\"\nschedule = \"* * * * * *\"\nshell = \"true\"\n",
    );
    let _sup = env.start_with(&[("FAILPOINTS", "worker::turn=panic")]);
    let started = |s: &serde_json::Value| -> Option<jiff::Timestamp> {
        s["worker"]["started_at"].as_str()?.parse().ok()
    };
    let (first, first_at) = wait_until("a failing worker heartbeating", LONG, || {
        let s = env.status_fast()?;
        let pid = s["worker"]["pid"].as_u64()?;
        s["worker"]["heartbeat_seq"]
            .is_u64()
            .then(|| (pid, started(&s)))
    });
    let s = wait_until("a replacement worker", LONG, || {
        env.status_fast()
            .filter(|s| s["worker"]["pid"].as_u64().is_some_and(|p| p != first))
    });
    let took = Duration::try_from(started(&s).unwrap().duration_since(first_at.unwrap())).unwrap();
    println!("failing worker {first} replaced {took:?} after it started");
    // The supervisor checks once a second.
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(2 + 1 + 3),
        "replaced after {took:?}, failing_restart_after 2s"
    );
    assert!(s.to_string().contains("failing every loop turn"), "{s}");
}

/// A panic while a command is carried out is caught: the caller gets an
/// error, the worker lives on (same pid) and is ok again at its next turn.
#[test]
fn a_panic_in_command_handling_is_caught_and_answered() {
    let env = Env::new("[[job]]\nname = \"a\"\nschedule = \"@daily\"\nshell = \"true\"\n");
    let sup = env.start_with(&[("FAILPOINTS", "worker::command=panic")]);
    let pid = env.wait_ok(LONG)["worker"]["pid"].as_u64().unwrap();
    let out = env.cmd(&["pause", "a", "-c", env.config.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("panicked"), "{err}");
    let s = env.wait_ok(LONG);
    assert_eq!(s["worker"]["pid"].as_u64(), Some(pid), "{s}");
    assert_eq!(s["worker"]["restarts"], 0, "{s}");
    assert!(
        sup.log().contains("scheduler command panicked"),
        "{}",
        sup.log()
    );
}

/// The job_timeout alert says what the run was doing before it was killed:
/// its processes with their states, who held its output, its last line.
/// The run ignores SIGTERM and leaves a grandchild on stdout.
#[test]
fn timeout_alert_carries_the_runs_processes() {
    let env = Env::new("");
    let d = env.dir.path().display().to_string();
    env.write_config(&format!(
        r#"[[job]]
name = "stubborn"
schedule = "@every 1h"
timeout = "1s"
kill_grace = "2s"
shell = "trap '' TERM; echo $$ >> {d}/main.pids; echo still working; sh -c 'exec sleep 300' & sleep 300"
"#
    ));
    let _sup = env.start();
    env.wait_ok(LONG);
    let out = env.cmd(&["trigger", "stubborn", "-c", env.config.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let details: serde_json::Value = wait_until("the job_timeout alert recorded", LONG, || {
        env.db()
            .query_row(
                "SELECT details FROM alerts WHERE kind = 'job_timeout' AND job = 'stubborn'",
                [],
                |r| r.get::<_, String>(0),
            )
            .ok()
            .and_then(|d| serde_json::from_str(&d).ok())
    });
    let main = read_pids(&env.path("main.pids"))[0];
    let procs = details["processes"]
        .as_array()
        .expect("processes in details");
    assert!(procs.len() >= 2, "the run and its grandchild: {details}");
    let main_proc = procs
        .iter()
        .find(|p| p["pid"] == main)
        .unwrap_or_else(|| panic!("the run's main process {main} is not in {details}"));
    assert!(
        ["S", "R", "D"].contains(&main_proc["state"].as_str().unwrap()),
        "{details}"
    );
    assert!(procs.iter().any(|p| p["command"] == "sleep"), "{details}");
    assert!(
        !details["pipe_holders"].as_array().unwrap().is_empty(),
        "{details}"
    );
    assert_eq!(details["last_line"], "still working", "{details}");
    let summary = env
        .status()
        .1
        .and_then(|s| {
            s["alerts"]
                .as_array()?
                .iter()
                .find(|a| a["kind"] == "job_timeout")
                .map(|a| a["summary"].as_str().unwrap_or_default().to_string())
        })
        .unwrap_or_default();
    assert!(summary.contains("in state"), "{summary}");
}
