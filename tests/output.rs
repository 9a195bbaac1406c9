//! Issue 16, a job's output and the kill switch: each output line in
//! cronwarden's log (text and JSON, tagged with job, run id and stream;
//! `log_output = false` keeps a job's lines out), `cronwarden logs` for a
//! stored run and `-f` for a running one, and `cronwarden kill`, refused
//! to a user who may not make control calls.
//!
//! Jobs that must be caught mid-run wait for a file the test creates, so
//! "while it runs" is a state the test controls, not a duration.

use std::{
    fs,
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Output, Stdio},
    sync::mpsc,
    time::Duration,
};

use serde_json::Value;

use crate::util::{alive, skip, wait_until, Env, BIN};

const LONG: Duration = Duration::from_secs(60);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The CLI against the test's config.
fn cli(env: &Env, args: &[&str]) -> Output {
    let mut a = args.to_vec();
    a.extend(["--config", env.config.to_str().unwrap()]);
    env.cmd(&a)
}

fn trigger(env: &Env, job: &str) -> u64 {
    let out = cli(env, &["trigger", job]);
    assert!(out.status.success(), "trigger {job}: {}", text(&out.stderr));
    let said = text(&out.stdout);
    said.trim()
        .rsplit(' ')
        .next()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("trigger says its run id: {said}"))
}

/// The run record of `job`'s run `id`, once it has finished.
fn finished(env: &Env, job: &str, id: u64) -> Value {
    wait_until(&format!("run {id} of {job} finished"), LONG, || {
        let out = cli(env, &["runs", job, "--json"]);
        let runs: Vec<Value> = serde_json::from_slice(&out.stdout).ok()?;
        runs.into_iter()
            .find(|r| r["id"] == id && r["outcome"] != "running")
    })
}

/// The supervisor's log once it holds `needle`.
fn log_with(sup: &crate::util::Supervisor, needle: &str) -> String {
    wait_until(&format!("{needle:?} in the log"), LONG, || {
        Some(sup.log()).filter(|l| l.contains(needle))
    })
}

const TALKERS: &str = r#"
[[job]]
name = "talk"
schedule = "@yearly"
shell = "echo \"out of run $CRONWARDEN_RUN_ID\"; echo \"err of run $CRONWARDEN_RUN_ID\" >&2"

[[job]]
name = "quiet"
schedule = "@yearly"
log_output = false
shell = "echo quiet-secret-line"
"#;

#[test]
fn output_lines_are_in_the_text_log_tagged_and_log_output_false_keeps_them_out() {
    let env = Env::new(TALKERS);
    let sup = env.start();
    env.wait_ok(LONG);
    let quiet = trigger(&env, "quiet");
    finished(&env, "quiet", quiet);
    let id = trigger(&env, "talk");
    let log = log_with(&sup, &format!("err of run {id}"));
    let line = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle:?} in the log:\n{log}"))
            .to_string()
    };
    let out = line(&format!("out of run {id}"));
    assert!(
        out.contains(&format!(
            "INFO out of run {id} job=talk run_id={id} stream=\"stdout\""
        )),
        "stdout line tagged with job, run and stream: {out}"
    );
    let err = line(&format!("err of run {id}"));
    assert!(
        err.contains(&format!(
            "INFO err of run {id} job=talk run_id={id} stream=\"stderr\""
        )),
        "stderr line tagged as stderr: {err}"
    );
    finished(&env, "talk", id);
    // The quiet run finished before talk started, and its "finished" line
    // is in the log: its output line would have come before.
    let log = log_with(&sup, "finished job=quiet");
    assert!(
        !log.contains("quiet-secret-line"),
        "log_output = false keeps the job's lines out of the log:\n{log}"
    );
    let out = cli(&env, &["logs", "quiet"]);
    assert_eq!(
        text(&out.stdout),
        "quiet-secret-line\n",
        "but its output is still stored"
    );
}

#[test]
fn output_lines_in_the_json_log_parse_and_carry_job_run_id_and_stream() {
    let env = Env::new(TALKERS);
    let sup = env.start_args(&[], &["--log-format", "json"]);
    env.wait_ok(LONG);
    let id = trigger(&env, "talk");
    let needle = format!("err of run {id}");
    wait_until("both output lines in the JSON log", LONG, || {
        let log = sup.log();
        (log.contains(&needle) && log.contains(&format!("out of run {id}"))).then_some(())
    });
    let lines: Vec<Value> = sup
        .log()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l}")))
        .collect();
    for (stream, message) in [
        ("stdout", format!("out of run {id}")),
        ("stderr", format!("err of run {id}")),
    ] {
        let l = lines
            .iter()
            .find(|l| l["message"] == message.as_str())
            .unwrap_or_else(|| panic!("{message:?} as a message"));
        assert_eq!(l["job"], "talk", "{l}");
        assert_eq!(l["run_id"], id, "run_id is a number: {l}");
        assert_eq!(l["stream"], stream, "{l}");
    }
}

#[test]
fn logs_prints_the_last_or_a_named_runs_output_stdout_and_stderr_apart() {
    let env = Env::new(&format!(
        "{TALKERS}\n[[job]]\nname = \"big\"\nschedule = \"@yearly\"\nkeep_output = 2\n\
         shell = \"seq 1 20000\"\n"
    ));
    let _sup = env.start();
    env.wait_ok(LONG);
    let first = trigger(&env, "talk");
    finished(&env, "talk", first);
    let second = trigger(&env, "talk");
    finished(&env, "talk", second);

    let out = cli(&env, &["logs", "talk"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("out of run {second}\n"));
    assert_eq!(text(&out.stderr), format!("err of run {second}\n"));
    let out = cli(&env, &["logs", "talk", &first.to_string()]);
    assert_eq!(text(&out.stdout), format!("out of run {first}\n"));
    assert_eq!(text(&out.stderr), format!("err of run {first}\n"));

    let out = cli(&env, &["logs", "talk", "999999"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("job \"talk\" has no run 999999"),
        "{}",
        text(&out.stderr)
    );
    let out = cli(&env, &["logs", "big"]);
    assert_eq!(out.status.code(), Some(1), "no run yet");

    // keep_output: the whole output, not the 4 KiB tail.
    let big = trigger(&env, "big");
    finished(&env, "big", big);
    let out = cli(&env, &["logs", "big"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let want: String = (1..=20000).map(|n| format!("{n}\n")).collect();
    assert!(
        text(&out.stdout) == want,
        "the whole output from the keep_output file ({} bytes printed)",
        out.stdout.len()
    );
}

#[test]
fn a_flood_of_output_is_bounded_by_the_budget_which_says_what_it_held_back() {
    let env =
        Env::new("[[job]]\nname = \"flood\"\nschedule = \"@yearly\"\nshell = \"seq 1 5000\"\n");
    let sup = env.start();
    env.wait_ok(LONG);
    let id = trigger(&env, "flood");
    let run = finished(&env, "flood", id);
    let digits: u64 = (1..=5000u64).map(|n| n.to_string().len() as u64 + 1).sum();
    assert_eq!(run["stdout_bytes"], digits, "the record counts every byte");
    // The held-back count is logged before the run's "finished" line.
    let log = log_with(&sup, &format!("finished job=flood run={id} "));
    let tag = format!("job=flood run_id={id}");
    let logged = log
        .lines()
        .filter(|l| l.contains(&format!("{tag} stream=\"stdout\"")))
        .count() as u64;
    let held: u64 = log
        .lines()
        .filter(|l| l.contains("held back by the output log budget") && l.contains(&tag))
        .map(|l| {
            let n = l.rsplit("held_back=").next().unwrap_or_default();
            n.trim()
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("a count: {l}"))
        })
        .sum();
    assert!(held > 0 && logged > 0, "logged {logged}, held back {held}");
    assert_eq!(
        logged + held,
        5000,
        "every line is either logged or counted as held back"
    );
}

/// A job that writes `first`, waits for the file `go`, then writes
/// `second` on stdout and `third` on stderr.
fn gated(dir: &Path) -> String {
    format!(
        "[[job]]\nname = \"gated\"\nschedule = \"@yearly\"\n\
         shell = \"echo first; while [ ! -e {go} ]; do sleep 0.05; done; echo second; echo third >&2\"\n",
        go = dir.join("go").display()
    )
}

#[test]
fn logs_follow_prints_lines_as_they_come_and_ends_with_the_run() {
    let env = Env::new("");
    env.write_config(&gated(env.dir.path()));
    let _sup = env.start();
    env.wait_ok(LONG);
    let id = trigger(&env, "gated");
    let mut follower = Command::new(BIN)
        .args([
            "logs",
            "-f",
            "gated",
            "--config",
            env.config.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                return;
            }
        }
    });
    assert_eq!(
        rx.recv_timeout(LONG)
            .expect("the first line, while the run waits"),
        "first"
    );
    assert!(
        follower.try_wait().unwrap().is_none(),
        "the follower goes on while the run runs"
    );
    fs::write(env.path("go"), "").unwrap();
    assert_eq!(rx.recv_timeout(LONG).expect("the second line"), "second");
    let status = wait_until("the follower ends with the run", LONG, || {
        follower.try_wait().unwrap()
    });
    let mut err = String::new();
    std::io::Read::read_to_string(&mut follower.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{err}");
    assert_eq!(err, "third\n", "stderr lines on stderr");
    assert_eq!(finished(&env, "gated", id)["outcome"], "success");
}

const SLEEPY: &str = r#"
[[job]]
name = "sleepy"
schedule = "@yearly"
kill_grace = "2s"
shell = "sleep 300 & echo $! > PIDFILE; wait"
"#;

fn sleepy(env: &Env) -> String {
    SLEEPY.replace("PIDFILE", &env.path("child.pid").display().to_string())
}

/// The pid the job's background child wrote, once it has.
fn child_pid(env: &Env) -> u32 {
    wait_until("the job's child wrote its pid", LONG, || {
        fs::read_to_string(env.path("child.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    })
}

#[test]
fn kill_ends_a_running_run_and_its_group_recorded_by_operator() {
    let env = Env::new("");
    env.write_config(&sleepy(&env));
    let _sup = env.start();
    env.wait_ok(LONG);
    let id = trigger(&env, "sleepy");
    let child = child_pid(&env);
    assert!(alive(child));
    let mut follower = Command::new(BIN)
        .args([
            "logs",
            "-f",
            "sleepy",
            "--config",
            env.config.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let out = cli(&env, &["kill", "sleepy"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("stopping run {id}")),
        "{}",
        text(&out.stdout)
    );
    let run = finished(&env, "sleepy", id);
    assert_eq!(run["outcome"], "killed");
    let uid = nix::unistd::Uid::effective().as_raw();
    assert_eq!(
        run["error"],
        format!("killed by operator (uid {uid})"),
        "{run}"
    );
    wait_until("the run's whole group is gone", LONG, || {
        (!alive(child)).then_some(())
    });
    let followed = wait_until("a follower of the killed run ends", LONG, || {
        follower.try_wait().unwrap()
    });
    assert!(followed.success());

    let out = cli(&env, &["kill", "sleepy"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("job \"sleepy\" has no run in progress"),
        "{}",
        text(&out.stderr)
    );
    let out = cli(&env, &["kill", "sleepy", &id.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!("run {id} of job \"sleepy\" is not running")),
        "{}",
        text(&out.stderr)
    );
    let out = cli(&env, &["kill", "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no job named \"nosuch\""));
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// The binary, where uid 65534 may run it (as hardening.rs does).
fn binary_for_others(env: &Env) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let bin = env.path("cronwarden");
    if fs::hard_link(BIN, &bin).is_err() {
        fs::copy(BIN, &bin).unwrap();
    }
    bin
}

fn as_nobody(bin: &Path, args: &[&str]) -> Output {
    use std::os::unix::process::CommandExt;
    Command::new(bin)
        .args(args)
        .uid(65534)
        .gid(65534)
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn kill_is_refused_to_a_user_who_may_not_make_control_calls() {
    if !is_root() {
        skip("acting as another uid needs root");
        return;
    }
    let Some(nogroup) = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(65534))
        .ok()
        .flatten()
    else {
        skip("no group 65534 on this machine");
        return;
    };
    let env = Env::new("");
    env.write_config(&format!(
        "socket_group = {:?}\n{}",
        nogroup.name,
        sleepy(&env)
    ));
    let bin = binary_for_others(&env);
    let sup = env.start();
    env.wait_ok(LONG);
    let id = trigger(&env, "sleepy");
    let child = child_pid(&env);
    let config = env.config.to_str().unwrap();
    let out = as_nobody(&bin, &["kill", "sleepy", "--config", config]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("uid 65534 may not make control calls"),
        "the refusal says why: {}",
        text(&out.stderr)
    );
    assert!(sup.log().contains("refused POST /v1/jobs/sleepy/kill"));
    // A read is not a control call: the refused user may still read.
    let out = as_nobody(&bin, &["logs", "sleepy", "--config", config]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(alive(child), "the refused kill did nothing");
    let out = cli(&env, &["kill", "sleepy", &id.to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(finished(&env, "sleepy", id)["outcome"], "killed");
}
