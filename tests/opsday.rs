//! Issue 16, the operator's day, end to end through one real instance:
//! every JSON log line of starts, failures, skips, a refused reload, a
//! stalled worker replaced and a Ctrl-C parses, with numbers as numbers
//! and no Rust Debug text; the worker logs the signal the operator sent;
//! an executable replaced on disk (an upgrade) shows in the status.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::util::{kill, wait_until, Env, Supervisor, BIN};

const LONG: Duration = Duration::from_secs(60);

/// Fields that are numbers whenever a line carries them.
const NUMERIC: &[&str] = &[
    "pid",
    "run",
    "run_id",
    "jobs",
    "exit_code",
    "signal",
    "duration_ms",
    "stdout_bytes",
    "stderr_bytes",
    "busy_run",
    "expected",
    "lost_runs",
    "jump_ms",
    "jobs_due",
    "fires_due",
    "gap_ms",
    "suspended_ms",
    "attempt",
    "held",
    "pruned",
    "keep",
];

const CONFIG: &str = "[watchdog]\nheartbeat_interval = \"200ms\"\nstall_after = \"2s\"\n\
    [[job]]\nname = \"fails\"\nschedule = \"@every 1s\"\nshell = \"echo out; exit 3\"\n\
    [[job]]\nname = \"slow\"\nschedule = \"@every 1s\"\nshell = \"sleep 3\"\n";

/// The binary at a path of the test's own, so that it can be replaced
/// there: a hard link when the file systems allow, else a copy.
fn own_binary(env: &Env) -> PathBuf {
    let exe = env.path("cronwarden");
    if fs::hard_link(BIN, &exe).is_err() {
        fs::copy(BIN, &exe).unwrap();
    }
    exe
}

fn start(env: &Env, exe: &Path) -> Supervisor {
    let log = env.path("supervisor.log");
    let child = Command::new(exe)
        .env("CRONWARDEN_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .args(["run", "--log-format", "json", "--config"])
        .arg(&env.config)
        .current_dir(env.dir.path())
        .stdin(Stdio::null())
        .stdout(fs::File::create(env.path("supervisor.out")).unwrap())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Supervisor { child, log }
}

fn worker_pid(env: &Env) -> Option<u64> {
    env.status().1?["worker"]["pid"].as_u64()
}

/// The parsed lines whose message contains `what`.
fn lines_with(log: &str, what: &str) -> Vec<Value> {
    log.lines()
        .filter(|l| l.contains(what))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Every line one flat JSON object; numeric fields numbers (or null);
/// no value, message included, in Rust's Debug notation.
fn assert_clean_json(log: &str) {
    for line in log.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {line}"));
        assert!(!obj.contains_key("fields"), "nested fields: {line}");
        for (k, val) in obj {
            if NUMERIC.contains(&k.as_str()) {
                assert!(
                    val.is_number() || val.is_null(),
                    "{k} is not a number: {line}"
                );
            }
            if let Some(s) = val.as_str() {
                for debug in ["Some(", "None", "Duration", "Exited(", "Signaled("] {
                    assert!(!s.contains(debug), "Debug text {debug:?} in {k}: {line}");
                }
                assert!(s != "Step" && s != "Overlap", "Debug enum in {k}: {line}");
            }
        }
    }
}

#[test]
fn an_operators_day_logs_clean_json_and_says_what_happened() {
    let env = Env::new(CONFIG);
    let config = env.config.to_str().unwrap().to_string();
    let exe = own_binary(&env);
    let mut sup = start(&env, &exe);
    env.wait_ok(LONG);
    wait_until("a failure and a skip while busy", LONG, || {
        let log = sup.log();
        (!lines_with(&log, "\"job\":\"fails\"").is_empty()
            && log.contains("\"exit_code\":3")
            && log.contains("fire skipped"))
        .then_some(())
    });

    // A refused reload.
    env.write_config(&CONFIG.replace(
        "@every 1s\"\nshell = \"sleep",
        "61 * * * *\"\nshell = \"sleep",
    ));
    let out = env.cmd(&["reload", "--config", &config]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("the refusal logged", LONG, || {
        sup.log().contains("configuration refused").then_some(())
    });
    env.write_config(CONFIG);

    // A stalled worker, replaced.
    let stalled = wait_until("a worker", LONG, || worker_pid(&env));
    kill(stalled as u32, Signal::SIGSTOP);
    let replacement = wait_until("the stalled worker replaced", LONG, || {
        worker_pid(&env).filter(|p| *p != stalled)
    });
    wait_until("the replacement says hello", LONG, || {
        lines_with(&sup.log(), "worker ready")
            .iter()
            .any(|l| l["pid"].as_u64() == Some(replacement))
            .then_some(())
    });

    // An upgrade: the executable replaced on disk shows in the status.
    let (_, s) = env.status();
    assert!(s.unwrap()["supervisor"].get("binary_replaced").is_none());
    let new = env.path("cronwarden.new");
    fs::write(&new, "#!/bin/sh\nexit 1\n").unwrap();
    fs::rename(&new, &exe).unwrap();
    let said = wait_until("the status says the binary was replaced", LONG, || {
        let (_, s) = env.status();
        s?["supervisor"]["binary_replaced"]
            .as_str()
            .map(str::to_string)
    });
    assert!(said.contains(&*exe.to_string_lossy()), "{said}");
    let human = env.cmd(&["status", "--config", &config]);
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(human.contains("binary: "), "{human}");

    // Ctrl-C: the supervisor and its worker both log SIGINT.
    kill(sup.pid(), Signal::SIGINT);
    let code = wait_until("the supervisor exits", LONG, || {
        sup.child.try_wait().unwrap()
    });
    assert_eq!(code.code(), Some(0));
    let log = sup.log();
    let stopping: Vec<_> = lines_with(&log, "stopping jobs");
    assert!(
        stopping
            .iter()
            .any(|l| l["message"] == "SIGINT: stopping jobs"),
        "{log}"
    );
    assert!(
        stopping
            .iter()
            .all(|l| l["message"] != "SIGTERM: stopping jobs"),
        "{log}"
    );

    assert_clean_json(&log);
    // The lines the issue named carry their numbers.
    let skipped = lines_with(&log, "fire skipped");
    assert!(
        skipped
            .iter()
            .any(|l| l["reason"] == "overlap" && l["busy_run"].is_u64()),
        "{skipped:?}"
    );
    let stall = lines_with(&log, "worker stalled");
    assert!(
        stall.iter().any(|l| l["pid"].as_u64() == Some(stalled)),
        "{log}"
    );
    let ended = lines_with(&log, "restarting in");
    assert!(ended.iter().any(|l| l["lost_runs"].is_u64()), "{log}");
}

/// A job removed from the config keeps its records, and `audit` audits
/// them against the former schedule it is given.
#[test]
fn a_removed_job_is_audited_against_its_former_schedule() {
    let gone = "[[job]]\nname = \"gone\"\nschedule = \"* * * * * *\"\nshell = \"true\"\n";
    // A name that must be escaped in the request's path.
    let wide = "[[job]]\nname = \"备份 🚀\"\nschedule = \"* * * * * *\"\nshell = \"true\"\n";
    let stays = "[[job]]\nname = \"stays\"\nschedule = \"@yearly\"\nshell = \"true\"\n";
    let env = Env::new(&format!("{gone}{stays}{wide}"));
    let config = env.config.to_str().unwrap().to_string();
    let _sup = env.start();
    env.wait_ok(LONG);
    wait_until("three runs of the job", LONG, || {
        (env.rows("gone").len() >= 3).then_some(())
    });
    wait_until(
        "a run of the job with a wide name, through the socket",
        LONG,
        || {
            let out = env.cmd(&["runs", "备份 🚀", "--json", "--config", &config]);
            let runs: Value = serde_json::from_slice(&out.stdout).ok()?;
            (!runs.as_array()?.is_empty()).then_some(())
        },
    );
    env.write_config(stays);
    let out = env.cmd(&["reload", "--config", &config]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Without a schedule: refused, saying how.
    let out = env.cmd(&["audit", "gone", "--config", &config]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("--schedule"), "{err}");

    // With it, over the window its records cover: one record a second.
    let runs = env.cmd(&["runs", "gone", "--json", "--config", &config]);
    let runs: Value = serde_json::from_slice(&runs.stdout).unwrap();
    let mut covered: Vec<String> = runs
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["covers"].as_array().unwrap().clone())
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    covered.sort_by_key(|c| c.parse::<jiff::Timestamp>().unwrap());
    let (from, to) = (covered[0].clone(), covered[covered.len() - 1].clone());
    let out = env.cmd(&[
        "audit",
        "gone",
        "--schedule",
        "* * * * * *",
        "--timezone",
        "UTC",
        "--from",
        &from,
        "--to",
        &to,
        "--json",
        "--config",
        &config,
    ]);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(report["job"], "gone", "{report}");
    assert_eq!(
        report["expected"].as_u64(),
        Some(covered.len() as u64),
        "{report}"
    );
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(out.status.code(), Some(0), "{report}");
    // A bad schedule is refused naming the parameter.
    let out = env.cmd(&[
        "audit",
        "gone",
        "--schedule",
        "61 * * * *",
        "--config",
        &config,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("schedule: ") && err.contains("minute field"),
        "{err}"
    );
}

/// Whether this host lets us make a private mount namespace.
fn namespaces_work() -> bool {
    Command::new("unshare")
        .args(["-rm", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// With the default `state_dir` and no `socket`, the supervisor binds
/// `/run/cronwarden/cronwarden.sock` when `/run/cronwarden` exists (the
/// unit's RuntimeDirectory=), else `<state_dir>/cronwarden.sock`. Run in a
/// private mount namespace with test directories over `/run` and
/// `/var/lib`; the socket is reached from outside through the directory
/// mounted there.
#[test]
fn the_default_socket_is_in_the_runtime_directory_when_it_exists() {
    if !namespaces_work() {
        return crate::util::skip("no private mount namespace (unshare -rm) for /run");
    }
    for runtime_dir in [true, false] {
        let env = Env::new("");
        // No state_dir: the defaults are what is tested.
        fs::write(
            &env.config,
            "[[job]]\nname = \"a\"\nschedule = \"@yearly\"\nshell = \"true\"\n",
        )
        .unwrap();
        let (run, lib) = (env.path("run"), env.path("lib"));
        fs::create_dir_all(&lib).unwrap();
        fs::create_dir_all(&run).unwrap();
        if runtime_dir {
            fs::create_dir(run.join("cronwarden")).unwrap();
        }
        let child = Command::new("unshare")
            .args([
                "-rm",
                "sh",
                "-c",
                "mount --bind \"$0\" /run && mount --bind \"$1\" /var/lib && shift && exec \"$@\"",
            ])
            .arg(&run)
            .arg(&lib)
            .arg(BIN)
            .args(["run", "--config"])
            .arg(&env.config)
            .env_remove("CRONWARDEN_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(env.path("supervisor.log")).unwrap())
            .spawn()
            .unwrap();
        let sup = Supervisor {
            child,
            log: env.path("supervisor.log"),
        };
        let (bound, not) = if runtime_dir {
            (
                run.join("cronwarden/cronwarden.sock"),
                lib.join("cronwarden/cronwarden.sock"),
            )
        } else {
            (
                lib.join("cronwarden/cronwarden.sock"),
                run.join("cronwarden/cronwarden.sock"),
            )
        };
        let status = wait_until("the supervisor answers on its socket", LONG, || {
            let out = env.cmd(&["status", "--json", "--socket", bound.to_str().unwrap()]);
            serde_json::from_slice::<Value>(&out.stdout)
                .ok()
                .filter(|s| s["worker"]["pid"].is_u64())
        });
        assert_eq!(status["jobs"][0]["name"], "a", "{status}\n{}", sup.log());
        assert!(!not.exists(), "a socket at {} too", not.display());
        drop(sup);
    }
}
