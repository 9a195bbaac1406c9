//! Issue 16, "the operator's day", the parts in the binary crate: where
//! the config and socket are found, the liveness probe, `import` keeping
//! cron's meaning, the systemd unit's reload and man page, and the log
//! formats (flat JSON, journald priorities).
//!
//! The system config `/etc/cronwarden.toml` and the runtime socket
//! `/run/cronwarden/cronwarden.sock` are fixed paths, and the binary has no
//! test-only override of them: the tests that need them run the CLI in a
//! private mount namespace (`unshare`) where a test directory is
//! bind-mounted over `/etc` or `/run`, and skip where namespaces are not
//! available.

use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::Path,
    process::{Command, Output, Stdio},
    time::Duration,
};

use serde_json::Value;

use crate::util::{self, wait_until, Env, BIN};

const LONG: Duration = Duration::from_secs(40);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The CLI with a clean view of the config variable (the developer's own
/// `CRONWARDEN_CONFIG` must not leak into a test).
fn cli(env: &Env, vars: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(BIN)
        .env_remove("CRONWARDEN_CONFIG")
        .envs(vars.iter().copied())
        .args(args)
        .current_dir(env.dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap()
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

/// Runs the CLI in a private mount namespace with `over` bind-mounted on
/// `target` (`/etc` or `/run`): the host's own files are untouched.
fn cli_with_mount(over: &Path, target: &str, vars: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new("unshare")
        .args([
            "-rm",
            "sh",
            "-c",
            "mount --bind \"$0\" \"$1\" && shift && exec \"$@\"",
        ])
        .arg(over)
        .arg(target)
        .arg(BIN)
        .args(args)
        .env_remove("CRONWARDEN_CONFIG")
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn one_job(name: &str) -> String {
    format!("[[job]]\nname = \"{name}\"\nschedule = \"@yearly\"\nshell = \"true\"\n")
}

/// `check` says which file it read: the flag's over the variable's, the
/// variable's over `/etc/cronwarden.toml`, which is read when neither is
/// given.
#[test]
fn config_discovery_flag_beats_env_beats_etc() {
    let flag = Env::new(&one_job("from-flag"));
    let var = Env::new(&one_job("from-env"));
    let (flag_path, var_path) = (flag.config.to_str().unwrap(), var.config.to_str().unwrap());
    let out = cli(
        &flag,
        &[("CRONWARDEN_CONFIG", var_path)],
        &["check", "--config", flag_path],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("from-flag"),
        "{}",
        text(&out.stdout)
    );
    let out = cli(&flag, &[("CRONWARDEN_CONFIG", var_path)], &["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with(&format!("{var_path}: ok")));
    assert!(text(&out.stdout).contains("from-env"));

    if !namespaces_work() {
        return util::skip("no private mount namespace (unshare -rm) for /etc");
    }
    let etc = Env::new("");
    fs::write(etc.path("cronwarden.toml"), one_job("from-etc")).unwrap();
    let etc_dir = etc.dir.path();
    let out = cli_with_mount(etc_dir, "/etc", &[], &["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("/etc/cronwarden.toml: ok, 1 job(s)"),
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stdout).contains("from-etc"));
    let out = cli_with_mount(
        etc_dir,
        "/etc",
        &[("CRONWARDEN_CONFIG", var_path)],
        &["check"],
    );
    assert!(
        text(&out.stdout).contains("from-env"),
        "{}",
        text(&out.stdout)
    );
}

/// No config anywhere: `run`, `check` and a client each say where they
/// looked, in order, and how to point elsewhere.
#[test]
fn config_discovery_error_says_where_it_looked() {
    let env = Env::new("");
    let missing = env.path("missing.toml");
    let missing = missing.to_str().unwrap();
    let out = cli(&env, &[("CRONWARDEN_CONFIG", missing)], &["jobs"]);
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("$CRONWARDEN_CONFIG={missing}")),
        "{err}"
    );
    assert!(err.contains("--config: not given"), "{err}");
    assert!(err.contains("--socket PATH"), "{err}");
    let out = cli(&env, &[], &["run", "--config", missing]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("--config {missing}: No such file")),
        "{err}"
    );
    assert!(err.contains("CRONWARDEN_CONFIG=FILE"), "{err}");

    if !namespaces_work() {
        return util::skip("no private mount namespace (unshare -rm) for /etc");
    }
    // An empty /etc: nothing to read at all.
    let empty = Env::new("");
    let empty_etc = empty.path("etc");
    fs::create_dir(&empty_etc).unwrap();
    for cmd in ["run", "check"] {
        let out = cli_with_mount(&empty_etc, "/etc", &[], &[cmd]);
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = text(&out.stderr);
        for want in [
            "looked in this order:\n  --config: not given\n  $CRONWARDEN_CONFIG: not set\n  /etc/cronwarden.toml (the default): No such file",
            "point elsewhere with --config FILE or the environment variable CRONWARDEN_CONFIG=FILE",
        ] {
            assert!(err.contains(want), "{cmd}: {err}");
        }
    }
    let out = cli_with_mount(&empty_etc, "/etc", &[], &["status"]);
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(
        err.contains("/run/cronwarden/cronwarden.sock: no such socket"),
        "{err}"
    );
}

/// A client that can read no config finds the supervisor through the
/// standard runtime socket `/run/cronwarden/cronwarden.sock`.
#[test]
fn client_without_config_uses_the_runtime_socket() {
    if !namespaces_work() {
        return util::skip("no private mount namespace (unshare -rm) for /run");
    }
    let env = Env::new(&one_job("via-run"));
    let _sup = env.start();
    env.wait_ok(LONG);
    // /run/cronwarden/cronwarden.sock, as a link to the test's socket.
    let run = env.path("run");
    fs::create_dir_all(run.join("cronwarden")).unwrap();
    std::os::unix::fs::symlink(
        env.state_dir().join("cronwarden.sock"),
        run.join("cronwarden/cronwarden.sock"),
    )
    .unwrap();
    // /etc has no cronwarden.toml here (and if the host has one, the
    // namespace's /etc is a test directory without it).
    let etc = env.path("etc");
    fs::create_dir(&etc).unwrap();
    let script = format!(
        "mount --bind {:?} /etc && mount --bind {:?} /run && exec {:?} jobs",
        etc, run, BIN
    );
    let out = Command::new("unshare")
        .args(["-rm", "sh", "-c", &script])
        .env_remove("CRONWARDEN_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("via-run"),
        "{}",
        text(&out.stdout)
    );
}

fn probe(env: &Env) -> i32 {
    cli(
        env,
        &[],
        &[
            "status",
            "--probe",
            "--config",
            env.config.to_str().unwrap(),
        ],
    )
    .status
    .code()
    .unwrap_or(-1)
}

/// A failing job makes `status` exit 1 but leaves the probe at 0; a
/// worker that stalls again and again (stopped each time, past
/// `stall_after`) makes the probe fail.
#[test]
fn probe_ignores_failing_jobs_and_fails_on_a_stalling_worker() {
    let env = Env::new(
        "[watchdog]\nheartbeat_interval = \"100ms\"\nstall_after = \"600ms\"\n\
         [[job]]\nname = \"broken\"\nschedule = \"@every 1s\"\nshell = \"exit 3\"\n",
    );
    let _sup = env.start();
    wait_until("job_failing open", LONG, || {
        env.open_alerts()
            .iter()
            .any(|(k, _)| k == "job_failing")
            .then_some(())
    });
    assert_eq!(env.status().0, 1, "status: degraded by the failing job");
    assert_eq!(probe(&env), 0, "the probe does not judge jobs");
    // Stop every worker the supervisor starts: each stalls, is replaced,
    // and the replacements stall too, until a crash loop.
    // The probe that said "not live" is the one whose words are checked: a
    // second call could find a replacement that is, for a moment, live.
    let out = wait_until("probe non-zero", Duration::from_secs(90), || {
        if let Some(pid) = env.status_fast().and_then(|s| s["worker"]["pid"].as_u64()) {
            util::kill(pid as u32, nix::sys::signal::Signal::SIGSTOP);
        }
        let out = cli(
            &env,
            &[],
            &[
                "status",
                "--probe",
                "--config",
                env.config.to_str().unwrap(),
            ],
        );
        (out.status.code() != Some(0)).then_some(out)
    });
    assert_eq!(out.status.code(), Some(2), "not live");
    assert!(
        text(&out.stdout).starts_with("not live: "),
        "{}",
        text(&out.stdout)
    );
}

fn import(env: &Env, crontab: &str, extra: &[&str]) -> (String, Output) {
    let tab = env.path("crontab");
    fs::write(&tab, crontab).unwrap();
    let mut args = vec!["import", "--tz", "UTC", tab.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = cli(env, &[], &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let toml = text(&out.stdout);
    let file = env.path("imported.toml");
    fs::write(&file, &toml).unwrap();
    let check = cli(env, &[], &["check", "--config", file.to_str().unwrap()]);
    assert_eq!(
        check.status.code(),
        Some(0),
        "{toml}\n{}",
        text(&check.stderr)
    );
    (toml, check)
}

const CRONTAB: &str = "@hourly /usr/local/bin/sync\n30 2 * * * /usr/local/bin/backup --full\n";

/// By default an imported job runs as under cron (no timeout, overlapping
/// allowed); the file says so per job and names the safer choice; `check`
/// explains it rather than warning.
#[test]
fn import_keeps_crons_meaning_by_default() {
    let env = Env::new("");
    let (toml, check) = import(&env, CRONTAB, &[]);
    let doc: toml::Table = toml.parse().unwrap();
    let jobs = doc["job"].as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    for job in jobs {
        assert_eq!(job["timeout"].as_str(), Some("none"), "{toml}");
        assert_eq!(job["overlap"].as_str(), Some("allow"), "{toml}");
    }
    assert_eq!(
        toml.matches("# as under cron; safer: timeout = \"1h\"")
            .count(),
        2,
        "{toml}"
    );
    assert_eq!(
        toml.matches("# as under cron; safer: overlap = \"skip\"")
            .count(),
        2,
        "{toml}"
    );
    let (stdout, stderr) = (text(&check.stdout), text(&check.stderr));
    assert!(!stderr.contains("warning"), "{stderr}");
    assert!(stdout.contains("ok, 2 job(s)\n"), "{stdout}");
    assert_eq!(
        stdout
            .matches("  as under cron: no time limit, runs may overlap (safer: timeout = \"1h\", overlap = \"skip\")")
            .count(),
        2,
        "{stdout}"
    );
}

/// `--safe-defaults`: cronwarden's limits, each job naming cron's choice;
/// the hourly job's timeout stays below its period, so `check` has
/// nothing to warn of.
#[test]
fn import_safe_defaults_opt_in() {
    let env = Env::new("");
    let (toml, check) = import(&env, CRONTAB, &["--safe-defaults"]);
    let doc: toml::Table = toml.parse().unwrap();
    let jobs = doc["job"].as_array().unwrap();
    assert_eq!(jobs[0]["schedule"].as_str(), Some("@hourly"));
    assert_eq!(jobs[0]["timeout"].as_str(), Some("59m"), "{toml}");
    assert_eq!(jobs[1]["timeout"].as_str(), Some("1h"), "{toml}");
    for job in jobs {
        assert_eq!(job["overlap"].as_str(), Some("skip"), "{toml}");
    }
    assert_eq!(
        toml.matches("cron's behaviour: timeout = \"none\"").count(),
        2,
        "{toml}"
    );
    let (stdout, stderr) = (text(&check.stdout), text(&check.stderr));
    assert!(!stderr.contains("warning"), "{stderr}");
    assert!(!stdout.contains("as under cron"), "{stdout}");
}

/// The unit's ExecReload, run as written (binary and config paths swapped
/// for the test's), exits non-zero when the supervisor refuses the config,
/// so `systemctl reload` fails; and 0 when it takes it.
#[test]
fn systemd_exec_reload_fails_on_a_broken_config() {
    let unit = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/cronwarden.service"
    ))
    .unwrap();
    let reload = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecReload="))
        .expect("an ExecReload= line");
    let argv: Vec<&str> = reload.split_whitespace().collect();
    assert_eq!(argv[0], "/usr/bin/cronwarden", "{reload}");
    let env = Env::new(&one_job("a"));
    let config = env.config.to_str().unwrap();
    let args: Vec<&str> = argv[1..]
        .iter()
        .map(|a| {
            if *a == "/etc/cronwarden.toml" {
                config
            } else {
                a
            }
        })
        .collect();
    let _sup = env.start();
    env.wait_ok(LONG);
    let ok = cli(&env, &[], &args);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    env.write_config("[[job]]\nname = \"a\"\nschedule = \"61 * * * *\"\nshell = \"true\"\n");
    let refused = cli(&env, &[], &args);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stdout));
    let err = text(&refused.stderr);
    assert!(err.contains("schedule"), "the refusal names the key: {err}");
    // The unit names the man page that `cronwarden man` prints.
    assert!(
        unit.contains("\nDocumentation=man:cronwarden(1)\n"),
        "{unit}"
    );
    assert!(unit.contains("\nRuntimeDirectory=cronwarden\n"), "{unit}");
    let man = cli(&env, &[], &["man"]);
    assert_eq!(man.status.code(), Some(0));
    let page = text(&man.stdout);
    assert!(
        page.starts_with(".ie \\n(.g .ds Aq") || page.contains(".TH cronwarden 1"),
        "{page}"
    );
    assert!(page.contains("cronwarden\\-status"), "{page}");
}

/// Starts a supervisor whose job fails and whose log is `json` or text,
/// with extra environment; returns when a failed run was logged.
fn logging_env(args: &[&str], vars: &[(&str, &str)]) -> (Env, util::Supervisor) {
    let env = Env::new(
        "[[job]]\nname = \"noisy\"\nschedule = \"@every 1s\"\nshell = \"echo out; exit 3\"\n",
    );
    // The file exists before the start (Env::start_args truncates it, same
    // inode), so that JOURNAL_STREAM can name it.
    fs::File::create(env.path("supervisor.log")).unwrap();
    let sup = env.start_args(vars, args);
    wait_until("a failed run and its alert in the log", LONG, || {
        let log = sup.log();
        (log.contains("finished") && log.contains("job_failing")).then_some(())
    });
    (env, sup)
}

/// `--log-format json`: every line is one JSON object, its fields flat
/// beside `message` (no `fields` object), the numeric ones numbers.
#[test]
fn json_log_lines_parse_with_flat_typed_fields() {
    let (_env, sup) = logging_env(&["--log-format", "json"], &[]);
    let log = sup.log();
    let mut numeric_seen = 0;
    for line in log.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}\n{log}"));
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {line}"));
        assert!(!obj.contains_key("fields"), "nested fields: {line}");
        assert!(obj["message"].is_string(), "{line}");
        for (k, val) in obj {
            if [
                "pid",
                "run",
                "jobs",
                "duration_ms",
                "stdout_bytes",
                "stderr_bytes",
            ]
            .contains(&k.as_str())
            {
                assert!(val.is_u64(), "{k} is not a number: {line}");
                numeric_seen += 1;
            }
            if let Some(s) = val.as_str() {
                assert!(
                    !(s.starts_with("Some(") || s == "None"),
                    "Debug text in {k}: {line}"
                );
            }
        }
    }
    assert!(numeric_seen >= 4, "{log}");
    let finished = log
        .lines()
        .find(|l| l.contains("\"message\":\"finished\""))
        .unwrap();
    let v: Value = serde_json::from_str(finished).unwrap();
    assert_eq!(v["job"], "noisy", "{finished}");
    // A run that exited has a numeric exit code and no signal field.
    assert!(v["exit_code"].is_i64(), "{finished}");
    assert!(v.get("signal").is_none(), "{finished}");
}

/// Under journald (JOURNAL_STREAM naming stderr's device and inode) every
/// line starts with its syslog priority: `<6>` info, `<4>` the warning of
/// the alert, in both the supervisor's and the worker's lines.
#[test]
fn journald_lines_carry_their_priority() {
    for format in ["text", "json"] {
        // The stream's identity is known only once the file exists: make
        // the env, create its log file, then start with the variable.
        let env =
            Env::new("[[job]]\nname = \"noisy\"\nschedule = \"@every 1s\"\nshell = \"exit 3\"\n");
        let file = fs::File::create(env.path("supervisor.log")).unwrap();
        let m = file.metadata().unwrap();
        let stream = format!("{}:{}", m.dev(), m.ino());
        let sup = env.start_args(&[("JOURNAL_STREAM", &stream)], &["--log-format", format]);
        let log = wait_until("an alert and a worker line in the log", LONG, || {
            let log = sup.log();
            (log.contains("job_failing") && log.contains("worker started")).then_some(log)
        });
        for line in log.lines() {
            let prio = line.get(..3).unwrap_or_default();
            assert!(
                ["<3>", "<4>", "<6>", "<7>"].contains(&prio),
                "{format}: no priority: {line}"
            );
            if format == "json" {
                serde_json::from_str::<Value>(&line[3..]).unwrap();
            }
        }
        assert!(
            log.lines()
                .any(|l| l.starts_with("<4>") && l.contains("job_failing")),
            "{format}: {log}"
        );
        assert!(
            log.lines()
                .any(|l| l.starts_with("<6>") && l.contains("supervisor started")),
            "{format}: {log}"
        );
        // With the variable naming another stream: no prefixes.
        drop(sup);
    }
    let (_env, sup) = logging_env(&[], &[("JOURNAL_STREAM", "1:1")]);
    assert!(!sup.log().contains("<6>"), "{}", sup.log());
}

/// The shipped demo, which the README has a new user run first, passes
/// `check` without a warning about itself.
#[test]
fn shipped_demo_checks_without_warnings() {
    let env = Env::new("");
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo.toml");
    let out = cli(&env, &[], &["check", "--config", demo]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "", "check warned about the demo");
    assert!(
        text(&out.stdout).contains(": ok, 3 job(s)\n"),
        "{}",
        text(&out.stdout)
    );
}

/// Positional arguments and `--limit`, `-n`, `--config` say what they are;
/// `--log-format` is offered where it applies (`run`) and nowhere else.
#[test]
fn help_describes_every_argument_and_log_format_only_on_run() {
    let env = Env::new("");
    let help = |args: &[&str]| {
        let out = cli(&env, &[], args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        text(&out.stdout)
    };
    let runs = help(&["runs", "--help"]);
    assert!(runs.contains("<JOB>  The job's name"), "{runs}");
    assert!(runs.contains("How many records to show"), "{runs}");
    assert!(runs.contains("CRONWARDEN_CONFIG"), "{runs}");
    assert!(!runs.contains("--log-format"), "{runs}");
    let next = help(&["next", "--help"]);
    assert!(next.contains("How many fires to print"), "{next}");
    let completions = help(&["completions", "--help"]);
    assert!(
        completions.contains("The shell to write the script for"),
        "{completions}"
    );
    for cmd in ["status", "check", "jobs", "import", "next"] {
        assert!(!help(&[cmd, "--help"]).contains("--log-format"), "{cmd}");
    }
    assert!(!help(&["--help"]).contains("--log-format"));
    assert!(help(&["run", "--help"]).contains("--log-format"));
}
