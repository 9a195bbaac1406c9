//! The supervisor, worker and jobs end to end: real processes, signals,
//! pipes and the status socket.

use std::{
    fs,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::util::{alive, job, kill, processes, read_pids, wait_until, Env};

const LONG: Duration = Duration::from_secs(30);

fn worker_pid(s: &Value) -> u32 {
    s["worker"]["pid"].as_u64().expect("worker pid") as u32
}

fn last_run_id(s: &Value, name: &str) -> Option<u64> {
    job(s, name)["last_run"]["id"].as_u64()
}

/// The demo config as shipped, with its state moved into the test dir.
#[test]
fn demo_fires_reports_ok_and_stops_cleanly() {
    let demo =
        fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo.toml")).unwrap();
    let body: String = demo
        .lines()
        .filter(|l| !l.starts_with("state_dir"))
        .collect::<Vec<_>>()
        .join("\n");
    // Plus a long runner, to see that shutdown stops running jobs too.
    let env = Env::new(&body);
    let extra = format!(
        "\n[[job]]\nname = \"long\"\nschedule = \"* * * * * *\"\noverlap_alert_after = 1000\nshell = \"echo $$ >> {}; exec sleep 300\"\nkill_grace = \"2s\"\n",
        env.path("long.pids").display()
    );
    fs::write(
        &env.config,
        fs::read_to_string(&env.config).unwrap() + &extra,
    )
    .unwrap();
    let mut sup = env.start();

    let first = env.wait_ok(LONG);
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(env.state_dir().join("cronwarden.sock"))
            .unwrap()
            .permissions()
            .mode()
    };
    assert_eq!(mode & 0o777, 0o660, "socket mode {mode:o}");
    let wpid = worker_pid(&first);
    let cmdline = fs::read(format!("/proc/{wpid}/cmdline")).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("worker"),
        "pid {wpid} is not our worker"
    );
    assert_eq!(first["supervisor"]["pid"].as_u64(), Some(sup.pid() as u64));

    // The `hello` job fires every 5s: see two distinct runs succeed.
    let mut seen = std::collections::BTreeSet::new();
    wait_until("two runs of the demo's hello job", LONG, || {
        let (code, s) = env.status();
        let s = s?;
        let last = &job(&s, "hello")["last_run"];
        if last["outcome"] == "success" && last["stdout_bytes"].as_u64() > Some(0) {
            seen.insert(last["id"].as_u64()?);
        }
        (seen.len() >= 2 && code == 0 && s["state"] == "ok" && worker_pid(&s) == wpid).then_some(())
    });
    let long_pids = wait_until("the long job running", LONG, || {
        Some(read_pids(&env.path("long.pids"))).filter(|p| !p.is_empty())
    });

    assert_eq!(sup.stop(LONG), 0, "{}", sup.log());
    assert!(!alive(wpid), "worker {wpid} survived shutdown");
    for p in long_pids {
        assert!(!alive(p), "job process {p} survived shutdown");
    }
    assert!(
        !env.state_dir().join("cronwarden.sock").exists(),
        "socket left behind"
    );
    let (code, _) = env.status();
    assert_eq!(code, 3, "status with no supervisor must be unknown");
}

/// A run that ignores SIGTERM and leaves a grandchild holding stdout: it
/// ends as `timeout` within timeout + kill_grace + margin, nothing of its
/// group survives, and the job's next fire runs.
#[test]
fn timeout_kills_the_whole_group_and_the_next_fire_runs() {
    let env = Env::new("");
    let d = env.dir.path().display().to_string();
    env.write_config(&format!(
        r#"[[job]]
name = "hang"
schedule = "@every 4s"
timeout = "1s"
kill_grace = "1s"
shell = "trap '' TERM; echo $$ >> {d}/main.pids; sh -c 'echo $$ >> {d}/grand.pids; exec sleep 300' & sleep 300"
"#
    ));
    let _sup = env.start();
    env.wait_ok(LONG);
    let run = wait_until("a timed-out run", LONG, || {
        let s = env.status().1?;
        let last = job(&s, "hang")["last_run"].clone();
        (last["outcome"] == "timeout").then_some(last)
    });
    let took = run["duration_ms"].as_u64().unwrap();
    assert!(
        (1000..1000 + 1000 + 5000).contains(&took),
        "run took {took}ms: {run}"
    );
    assert!(
        run["error"].as_str().unwrap_or("").contains("timed out"),
        "{run}"
    );
    let group: Vec<u32> = read_pids(&env.path("main.pids"))
        .into_iter()
        .take(1)
        .chain(read_pids(&env.path("grand.pids")).into_iter().take(1))
        .collect();
    assert_eq!(
        group.len(),
        2,
        "expected the job and its grandchild to have started"
    );
    wait_until("every process of the timed-out group gone", LONG, || {
        group.iter().all(|p| !alive(*p)).then_some(())
    });
    // Not only the two it wrote down: no live process at all is left in
    // the job's process group (its pgid is the main process's pid).
    let pgid = group[0];
    wait_until("no live process in the job's process group", LONG, || {
        let left = processes_in_group(pgid);
        left.is_empty().then_some(()).or_else(|| {
            println!("still in group {pgid}: {left:?}");
            None
        })
    });
    // The busy flag was released: the next fire starts a new run.
    wait_until("the next fire of the job", LONG, || {
        (read_pids(&env.path("main.pids")).len() >= 2).then_some(())
    });
}

/// Live (not zombie) processes whose process group is `pgid`, from /proc.
fn processes_in_group(pgid: u32) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|p| p.pgrp == pgid && p.state != "Z" && p.state != "X")
        .map(|p| p.pid)
        .collect()
}

/// A job whose main process exits while a grandchild keeps stdout open does
/// not hang the runner: the run ends, and the grandchild is killed. (The
/// main process waits for the grandchild's pid file: runs' leftovers are
/// killed at once now, and on a loaded machine one could die before
/// writing it.)
#[test]
fn grandchild_holding_the_pipe_does_not_hang_the_run() {
    let env = Env::new("");
    let d = env.dir.path().display().to_string();
    env.write_config(&format!(
        r#"[[job]]
name = "leaky"
schedule = "@every 2s"
overlap = "skip"
shell = "sh -c 'echo $$ >> {d}/grand.pids; exec sleep 300' & while [ ! -s {d}/grand.pids ]; do sleep 0.01; done; echo started"
"#
    ));
    let _sup = env.start();
    let run = wait_until("a finished leaky run", LONG, || {
        let s = env.status().1?;
        let last = job(&s, "leaky")["last_run"].clone();
        last["finished_at"].is_string().then_some(last)
    });
    assert_eq!(run["outcome"], "success", "{run}");
    assert_eq!(run["stdout_bytes"], 8, "{run}");
    assert!(run["duration_ms"].as_u64().unwrap() < 10_000, "{run}");
    let grand = read_pids(&env.path("grand.pids"))[0];
    wait_until("the leftover grandchild killed", LONG, || {
        (!alive(grand)).then_some(())
    });
}

#[test]
fn worker_killed_is_replaced_and_firing_resumes() {
    let env =
        Env::new("[[job]]\nname = \"tick\"\nschedule = \"* * * * * *\"\nshell = \"echo tick\"\n");
    let _sup = env.start();
    let s = env.wait_ok(LONG);
    let old = worker_pid(&s);
    let before = wait_until("a first run", LONG, || {
        last_run_id(&env.status().1?, "tick")
    });
    kill(old, Signal::SIGKILL);
    let s = wait_until("a new worker, ok", LONG, || {
        let s = env.status().1?;
        (s["state"] == "ok" && s["worker"]["pid"].as_u64().is_some_and(|p| p as u32 != old))
            .then_some(s)
    });
    assert!(s["worker"]["restarts"].as_u64().unwrap() >= 1, "{s}");
    wait_until("a run by the new worker", LONG, || {
        last_run_id(&env.status().1?, "tick").filter(|id| *id > before)
    });
}

#[test]
fn stopped_worker_is_detected_replaced_and_firing_resumes() {
    let env = Env::new(
        "[watchdog]\nheartbeat_interval = \"250ms\"\nstall_after = \"2s\"\n\
         [[job]]\nname = \"tick\"\nschedule = \"* * * * * *\"\nshell = \"echo tick\"\n",
    );
    // Each worker starts slowly after its hello (as with a long store
    // recovery), so the replacement is visibly up before it has proven
    // any progress.
    let _sup = env.start_with(&[("FAILPOINTS", "worker::after_hello=return(400)")]);
    let old = worker_pid(&env.wait_ok(LONG));
    kill(old, Signal::SIGSTOP);
    let stopped = Instant::now();
    let s = wait_until("status no longer ok", LONG, || {
        env.status().1.filter(|s| s["state"] != "ok")
    });
    let detected = stopped.elapsed();
    println!(
        "SIGSTOP -> status {:?} after {detected:?}: {}",
        s["state"], s["reasons"]
    );
    assert!(
        detected < Duration::from_secs(2) + Duration::from_secs(5),
        "detection took {detected:?}"
    );
    // `stalled` holds from the stall declaration until the replacement's
    // first heartbeat, its hello included (started is not progress), with
    // the worker_stalled alert open: polled straight over the socket.
    let mut first_stalled = None;
    let s = wait_until("stalled while the replacement has said hello", LONG, || {
        let s = env.status_fast()?;
        if s["state"] != "stalled" {
            let new = s["worker"]["pid"].as_u64().is_some_and(|p| p as u32 != old);
            assert!(
                !(new && s["worker"]["heartbeat_seq"].is_null() && first_stalled.is_some()),
                "not stalled before the replacement's first heartbeat: {s}"
            );
            return None;
        }
        first_stalled.get_or_insert_with(|| (stopped.elapsed(), s["reasons"].clone()));
        assert!(
            s["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["kind"] == "worker_stalled"),
            "stalled without a worker_stalled alert: {s}"
        );
        let new = s["worker"]["pid"].as_u64().is_some_and(|p| p as u32 != old);
        (new && s["worker"]["heartbeat_age_ms"].is_u64() && s["worker"]["heartbeat_seq"].is_null())
            .then_some(s)
    });
    let (stalled_after, why) = first_stalled.unwrap();
    println!("SIGSTOP -> status \"stalled\" after {stalled_after:?}: {why}");
    println!(
        "SIGSTOP -> still stalled after the replacement's hello: {}",
        s["reasons"]
    );
    assert!(
        stalled_after < Duration::from_secs(2) + Duration::from_secs(5),
        "stall declared after {stalled_after:?}"
    );
    let s = wait_until("a replacement worker, ok", LONG, || {
        let s = env.status().1?;
        (s["state"] == "ok" && s["worker"]["pid"].as_u64().is_some_and(|p| p as u32 != old))
            .then_some(s)
    });
    println!("SIGSTOP -> replaced and ok after {:?}", stopped.elapsed());
    assert!(!alive(old), "the stalled worker {old} was not killed");
    let before = last_run_id(&s, "tick").unwrap_or(0);
    wait_until("a run by the replacement", LONG, || {
        last_run_id(&env.status().1?, "tick").filter(|id| *id > before)
    });
}

#[test]
fn second_run_is_refused_naming_the_holder_and_silent_holder_is_unknown() {
    let env = Env::new("[[job]]\nname = \"a\"\nschedule = \"@daily\"\ncommand = [\"true\"]\n");
    let (code, _) = env.status();
    assert_eq!(code, 3, "status with no supervisor");
    let sup = env.start();
    env.wait_ok(LONG);
    let out = env.cmd(&["run", "--config", env.config.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        err.contains(&format!("pid {}", sup.pid())),
        "refusal does not name the holder: {err}"
    );

    // A supervisor that holds the lock but does not answer: unknown (3),
    // naming the holder.
    kill(sup.pid(), Signal::SIGSTOP);
    let out = env.cmd(&["status", "--config", env.config.to_str().unwrap()]);
    kill(sup.pid(), Signal::SIGCONT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains(&format!("held by pid {}", sup.pid())), "{err}");
}

/// Jobs inherit neither the event pipe, nor the lock, nor anything leaked
/// into cronwarden by its own parent, and get the variables that say what
/// they stand for.
#[test]
fn jobs_inherit_no_cronwarden_descriptors_and_get_their_run_env() {
    let env = Env::new(
        "[[job]]\nname = \"probe\"\nschedule = \"* * * * * *\"\nenv = { GREETING = \"hi\" }\n\
         shell = \"ls -l /proc/$$/fd; env | grep -E '^(CRONWARDEN_|GREETING)' | sort\"\n",
    );
    let _sup = env.start();
    // The listing comes back as the run's captured stdout.
    let (text, run) = wait_until("the probe job's output", LONG, || {
        let s = env.status().1?;
        let run = job(&s, "probe")["last_run"].clone();
        run["stdout_tail"]
            .as_str()
            .map(|t| (t.to_string(), run.clone()))
    });
    let fds: Vec<(u32, String)> = text
        .lines()
        .filter_map(|l| l.split_once(" -> "))
        .map(|(left, target)| {
            (
                left.rsplit(' ').next().unwrap().parse().unwrap(),
                target.to_string(),
            )
        })
        .collect();
    let std_targets: Vec<&String> = fds
        .iter()
        .filter(|(fd, _)| *fd <= 2)
        .map(|(_, t)| t)
        .collect();
    for (fd, target) in &fds {
        // Beyond 0-2 the shell may keep its own copies of those and of
        // /dev/null; nothing else may be open in a job.
        assert!(
            *fd <= 2 || std_targets.contains(&target) || target == "/dev/null",
            "a job inherited descriptor {fd} -> {target}:\n{text}"
        );
    }
    assert!(
        !text.contains("cronwarden.lock"),
        "a job inherited the lock:\n{text}"
    );
    assert!(text.contains("CRONWARDEN_JOB=probe"), "{text}");
    assert!(text.contains("CRONWARDEN_TRIGGER=schedule"), "{text}");
    assert!(text.contains("CRONWARDEN_SCHEDULED_FOR=20"), "{text}");
    // The run id is the id of the run's own record; COVERS its one time.
    let var = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
            .to_string()
    };
    assert_eq!(var("CRONWARDEN_RUN_ID"), run["id"].to_string(), "{run}");
    let covers: Vec<jiff::Timestamp> = var("CRONWARDEN_COVERS")
        .split(' ')
        .map(|t| t.parse().unwrap())
        .collect();
    let recorded: Vec<jiff::Timestamp> = run["covers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(covers, recorded, "{run}");
    assert_eq!(
        var("CRONWARDEN_SCHEDULED_FOR")
            .parse::<jiff::Timestamp>()
            .ok(),
        recorded.first().copied(),
        "{run}"
    );
    assert!(text.contains("GREETING=hi"), "{text}");
}

/// kill -9 of the supervisor: the worker notices (parent-death signal, EOF
/// on its command pipe), stops its jobs and exits; the lock is free again.
#[test]
fn supervisor_killed_takes_worker_and_jobs_with_it() {
    let env = Env::new("");
    let d = env.dir.path().display().to_string();
    env.write_config(&format!(
        "[[job]]\nname = \"long\"\nschedule = \"* * * * * *\"\nkill_grace = \"1s\"\nshell = \"echo $$ >> {d}/long.pids; exec sleep 300\"\n"
    ));
    let mut sup = env.start();
    let wpid = worker_pid(&env.wait_ok(LONG));
    let job_pid = wait_until("the long job running", LONG, || {
        read_pids(&env.path("long.pids")).first().copied()
    });
    kill(sup.pid(), Signal::SIGKILL);
    let _ = sup.child.wait();
    wait_until(
        "worker and job gone after the supervisor died",
        LONG,
        || (!alive(wpid) && !alive(job_pid)).then_some(()),
    );
    // The worker stopped the run in order (parent-death SIGTERM) and
    // recorded it; nothing is left `running`.
    let first = env.rows("long").into_iter().next().unwrap();
    assert_eq!(first.outcome, "killed", "{first:?}");
    assert!(
        first
            .error
            .as_deref()
            .unwrap_or("")
            .contains("shutting down"),
        "{first:?}"
    );
    assert!(
        env.rows("long").iter().all(|r| r.outcome != "running"),
        "{:#?}",
        env.rows("long")
    );
    // The lock died with them: a new supervisor can start on the same state.
    let _again = env.start();
    wait_until("a new supervisor with a worker", LONG, || {
        env.status()
            .1
            .filter(|s| s["worker"]["heartbeat_age_ms"].is_u64())
            .map(|_| ())
    });
}

/// `--log-format json`: every line the supervisor and its worker write to
/// stderr is a JSON object with a level and a message.
#[test]
fn log_format_json_writes_json_lines() {
    let env =
        Env::new("[[job]]\nname = \"tick\"\nschedule = \"* * * * * *\"\nshell = \"echo tick\"\n");
    let mut sup = env.start_args(&[], &["--log-format", "json"]);
    env.wait_ok(LONG);
    wait_until("a run logged", LONG, || {
        sup.log().contains("started").then_some(())
    });
    assert_eq!(sup.stop(LONG), 0);
    let log = sup.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "{log}");
    for line in &lines {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(
            ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"]
                .contains(&v["level"].as_str().unwrap_or("")),
            "no level: {line}"
        );
        assert!(v["message"].is_string(), "no message: {line}");
    }
    for want in ["supervisor started", "worker started", "supervisor stopped"] {
        assert!(
            lines.iter().any(|l| l.contains(want)),
            "no {want:?} line in:\n{log}"
        );
    }
}
