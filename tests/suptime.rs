//! Issue 13: the supervisor under time. A clock jump is news in the status
//! and changes nothing else; a paused supervisor punishes no one; and no
//! process is signalled unless it is still the one the supervisor meant.

use std::{
    fs,
    os::unix::process::CommandExt,
    process::{Command, Stdio},
    time::Duration,
};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::util::{alive, job, kill, proc_stat, skip, wait_until, Env};

const LONG: Duration = Duration::from_secs(60);

fn config_arg(env: &Env) -> String {
    env.config.to_str().unwrap().to_string()
}

fn alert<'a>(s: &'a Value, kind: &str) -> Option<&'a Value> {
    s["alerts"].as_array()?.iter().find(|a| a["kind"] == kind)
}

/// Starts a run of `name` by hand and returns its pid once the status
/// shows it running.
fn trigger_and_wait_running(env: &Env, name: &str) -> u64 {
    let out = env.cmd(&["trigger", name, "--config", &config_arg(env)]);
    assert!(out.status.success(), "{out:?}");
    wait_until("the run in the status", LONG, || {
        let s = env.status().1?;
        job(&s, name)["running"][0]["pid"].as_u64()
    })
}

/// Issue 13, reproduction 3 and "clock steps are events": the worker's wall
/// clock steps 2h forward while a run with a 1h timeout runs, then back.
/// The status shows each jump (size, direction, when) as an info alert,
/// stays `ok`, and the run is left alone.
#[test]
fn a_clock_step_is_news_in_the_status_and_kills_no_run() {
    let env = Env::new(
        "[[job]]\nname = \"long\"\nschedule = \"0 0 1 1 *\"\ntimeout = \"1h\"\nshell = \"sleep 300\"\n",
    );
    let offset = env.path("offset");
    fs::write(&offset, "0").unwrap();
    let fp = format!("worker::clock_offset=return({})", offset.display());
    let sup = env.start_with(&[("FAILPOINTS", fp.as_str())]);
    env.wait_ok(LONG);
    let run = trigger_and_wait_running(&env, "long") as u32;

    fs::write(&offset, "7200").unwrap();
    let s = wait_until("the forward jump as an alert", LONG, || {
        env.status()
            .1
            .filter(|s| alert(s, "clock_jumped").is_some())
    });
    let a = alert(&s, "clock_jumped").unwrap();
    assert_eq!(a["severity"], "info", "{s}");
    // The alert says it for people; `clock_jumps` has it for programs.
    let jump = &s["clock_jumps"][0];
    assert_eq!(jump["kind"], "step", "{s}");
    let ms = jump["jump_ms"].as_i64().unwrap();
    assert!((7_190_000..=7_210_000).contains(&ms), "{s}");
    let at = jump["at"].as_str().unwrap();
    assert!(a["summary"].as_str().unwrap().contains(at), "{s}");
    assert!(
        a["summary"]
            .as_str()
            .unwrap()
            .starts_with("the wall clock was stepped forward by 2h"),
        "{s}"
    );
    // News, not trouble: the state stays ok and the run runs on.
    assert_eq!(s["state"], "ok", "{s}");
    let text = env.cmd(&["status", "--config", &config_arg(&env)]);
    assert_eq!(text.status.code(), Some(0), "{text:?}");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("clock_jumped"), "{text}");
    assert!(text.contains("stepped forward by 2h"), "{text}");

    fs::write(&offset, "0").unwrap();
    let s = wait_until("the backward jump as the alert", LONG, || {
        env.status().1.filter(|s| {
            alert(s, "clock_jumped").is_some_and(|a| {
                a["summary"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("the wall clock was stepped backward by 2h"))
            })
        })
    });
    assert_eq!(s["state"], "ok", "{s}");
    // Both jumps are listed, newest last.
    let jumps = s["clock_jumps"].as_array().unwrap();
    assert!(jumps.len() >= 2, "{s}");
    assert!(
        jumps.last().unwrap()["jump_ms"].as_i64() < Some(-7_000_000),
        "{s}"
    );
    assert!(alive(run), "the run was killed");
    assert_eq!(
        job(&s, "long")["running"][0]["pid"].as_u64(),
        Some(run as u64),
        "{s}"
    );
    let log = sup.log();
    assert!(!log.contains("outlived"), "{log}");
}

/// Issue 13, reproduction 5 and "identity before every signal": while the
/// supervisor is stopped, a run finishes, its pid is handed to an
/// unrelated process, and the worker is killed. On SIGCONT the supervisor
/// reads the dead worker's last lines before judging it: the run is not
/// lost, and the process that now has the run's pid is not signalled.
#[test]
fn a_run_that_ended_while_the_supervisor_was_stopped_is_neither_lost_nor_signalled() {
    if fs::write(NS_LAST_PID, fs::read(NS_LAST_PID).unwrap_or_default()).is_err() {
        skip("cannot write /proc/sys/kernel/ns_last_pid (not root): cannot reuse a pid");
        return;
    }
    let env = Env::new(
        "[watchdog]\nstall_after = \"3s\"\n\
         [[job]]\nname = \"short\"\nschedule = \"0 0 1 1 *\"\nshell = \"exec sleep 2\"\n",
    );
    let sup = env.start();
    let s = env.wait_ok(LONG);
    let worker = s["worker"]["pid"].as_u64().unwrap() as u32;
    let run = trigger_and_wait_running(&env, "short") as u32;
    kill(sup.pid(), Signal::SIGSTOP);
    // The worker reaps its run and writes its finish line into the pipe.
    wait_until("the run ended and was reaped", LONG, || {
        proc_stat(run).is_none().then_some(())
    });
    // Hand the run's pid to an unrelated process (its own group, as the
    // run's was), where the kernel lets us choose.
    let mut decoy = reuse_pid(run);
    kill(worker, Signal::SIGKILL);
    wait_until("the worker dead", LONG, || (!alive(worker)).then_some(()));
    // Longer than stall_after: the pause itself is the reproduction.
    std::thread::sleep(Duration::from_secs(5));
    kill(sup.pid(), Signal::SIGCONT);

    let s = wait_until("a new worker", LONG, || {
        env.status().1.filter(|s| {
            s["worker"]["pid"]
                .as_u64()
                .is_some_and(|p| p != worker as u64)
        })
    });
    assert_eq!(job(&s, "short")["last_run"]["outcome"], "success", "{s}");
    let log = sup.log();
    assert!(!log.contains("run lost"), "{log}");
    let signalled = decoy.try_wait().unwrap();
    let _ = decoy.kill();
    let _ = decoy.wait();
    assert!(
        signalled.is_none(),
        "the process that got the run's pid was signalled:\n{log}"
    );
}

const NS_LAST_PID: &str = "/proc/sys/kernel/ns_last_pid";

/// Starts `sleep 60` in a group of its own with pid `pid` (the kernel's
/// next pid is chosen through `ns_last_pid`).
fn reuse_pid(pid: u32) -> std::process::Child {
    for _ in 0..20 {
        fs::write(NS_LAST_PID, (pid - 1).to_string()).unwrap();
        let mut child = Command::new("sleep")
            .arg("60")
            .process_group(0)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        if child.id() == pid {
            return child;
        }
        // Another process took it first; try again.
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("could not give pid {pid} to a decoy in 20 tries");
}

/// Issue 13, reproduction 5: SIGSTOP the supervisor 20 s, then SIGCONT,
/// with a run in flight across the pause. The worker is not killed as
/// stalled, no job is late, and the run is not lost.
#[test]
fn a_supervisor_stopped_for_20s_punishes_no_one() {
    let env = Env::new("");
    let d = env.dir.path().display().to_string();
    env.write_config(&format!(
        "[watchdog]\nstall_after = \"3s\"\nlate_after = \"2s\"\n\
         [[job]]\nname = \"sec\"\nschedule = \"* * * * * *\"\nshell = \"echo x >> {d}/sec\"\n\
         [[job]]\nname = \"every\"\nschedule = \"@every 2s\"\nshell = \"echo x >> {d}/every\"\n\
         [[job]]\nname = \"across\"\nschedule = \"0 0 1 1 *\"\nshell = \"sleep 25\"\n"
    ));
    let sup = env.start();
    let s = env.wait_ok(LONG);
    let worker = s["worker"]["pid"].as_u64().unwrap();
    let run = trigger_and_wait_running(&env, "across") as u32;
    kill(sup.pid(), Signal::SIGSTOP);
    std::thread::sleep(Duration::from_secs(20));
    kill(sup.pid(), Signal::SIGCONT);
    let runs = env.lines("sec").len();
    wait_until("sec ran twice more after the pause", LONG, || {
        (env.lines("sec").len() >= runs + 2).then_some(())
    });
    let s = env.wait_ok(LONG);
    assert_eq!(s["worker"]["pid"].as_u64(), Some(worker), "{s}");
    assert!(alive(run), "the run in flight was killed");
    let s = wait_until("the run across the pause finished", LONG, || {
        env.status()
            .1
            .filter(|s| job(s, "across")["last_run"]["outcome"].is_string())
    });
    assert_eq!(job(&s, "across")["last_run"]["outcome"], "success", "{s}");
    let out = env.cmd(&["alerts", "--all", "--json", "--config", &config_arg(&env)]);
    assert!(out.status.success(), "{out:?}");
    let history = String::from_utf8_lossy(&out.stdout);
    assert!(
        serde_json::from_str::<Value>(&history).is_ok_and(|h| h.is_array()),
        "{history}"
    );
    for bad in ["worker_stalled", "job_late", "job_lost", "worker_restarted"] {
        assert!(!history.contains(bad), "{bad}: {history}");
    }
    let log = sup.log();
    for bad in ["stalled", "is late", "run lost"] {
        assert!(!log.contains(bad), "{bad}:\n{log}");
    }
}
