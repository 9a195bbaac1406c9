//! Hostile inputs and faults: failing disks, other users on the socket,
//! privilege drops, output floods, spawn failures. Real binary, real
//! processes; where a test needs root and it is absent, it says so and
//! returns.

use std::{fs, time::Duration};

use crate::util::{assert_accounted, skip, unix, wait_until, Env};

const LONG: Duration = Duration::from_secs(60);

/// A per-second job with fast heartbeats, for the store-failure tests.
const TICKING: &str = r#"
[watchdog]
heartbeat_interval = "200ms"
stall_after = "3s"
[[job]]
name = "tick"
schedule = "* * * * * *"
shell = "echo tick"
"#;

/// (opened_at, resolved_at) of every `kind` alert in the store's history
/// (none while the store does not exist yet).
fn alert_history(env: &Env, kind: &str) -> Vec<(String, Option<String>)> {
    let read = || -> rusqlite::Result<Vec<(String, Option<String>)>> {
        let db = rusqlite::Connection::open_with_flags(
            env.state_dir().join("cronwarden.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        let mut st =
            db.prepare("SELECT opened_at, resolved_at FROM alerts WHERE kind = ?1 ORDER BY id")?;
        let rows = st.query_map([kind], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    };
    read().unwrap_or_default()
}

/// A store that fails for a while (fail point: the worker's next 15 store
/// writes fail) loses nothing: runs go on, `store_error` opens and
/// resolves, the worker is not replaced for it, and afterwards every fire
/// of the failing period has its record.
#[test]
fn failing_store_writes_are_held_and_stored_when_it_recovers() {
    let env = Env::new(TICKING);
    let mut sup = env.start_with(&[("FAILPOINTS", "store::apply=15*return")]);
    let (opened, resolved) = wait_until("store_error opened and resolved", LONG, || {
        alert_history(&env, "store_error")
            .into_iter()
            .find_map(|(o, r)| Some((o, r?)))
    });
    let status = env.wait_ok(LONG);
    assert_eq!(
        status["worker"]["restarts"], 0,
        "a failing store must not get the worker replaced: {status}"
    );
    // Fires keep coming after the recovery; then stop and read the ledger.
    let after = unix(&resolved) + 2;
    wait_until("a fire after the recovery is recorded", LONG, || {
        env.rows("tick")
            .iter()
            .any(|r| r.scheduled_at.as_deref().is_some_and(|s| unix(s) > after))
            .then_some(())
    });
    assert_eq!(sup.stop(LONG), 0);
    let log = sup.log();
    assert!(
        log.contains("held in memory"),
        "the log says writes are held: {log}"
    );
    let (from, to) = (unix(&opened) - 1, after);
    assert!(
        to - from >= 2,
        "the failing period spans fires: {opened} .. {resolved}"
    );
    let rows = env.rows("tick");
    let expected: Vec<i64> = (from + 1..to).collect();
    assert_accounted(&rows, &expected, from, to, "tick");
    // They ran while the store was failing: their records are real runs.
    for r in rows.iter().filter(|r| {
        r.scheduled_at
            .as_deref()
            .is_some_and(|s| (from..to).contains(&unix(s)))
    }) {
        assert_eq!(
            r.outcome, "success",
            "a fire of the failing period ran: {r:?}"
        );
    }
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// The newest record of `job` whose run has finished, with its stdout tail.
fn finished_run(env: &Env, job: &str) -> Option<(String, i64, String)> {
    let db = env.db();
    db.query_row(
        "SELECT outcome, stdout_bytes, stdout_tail FROM runs WHERE job = ?1 AND finished_at IS NOT NULL ORDER BY id DESC LIMIT 1",
        [job],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .ok()
}

fn trigger_and_wait(env: &Env, job: &str, limit: Duration) -> (String, i64, String) {
    let out = env.cmd(&["trigger", job, "--config", env.config.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "trigger {job}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(&format!("{job}'s run finished"), limit, || {
        finished_run(env, job)
    })
}

/// A job gets a clean environment (PATH, HOME, USER, LOGNAME, SHELL, its
/// own `env`, CRONWARDEN_*), never cronwarden's own unless it opts in with
/// `inherit_env`; `nice` and the resource limits are in force when it runs.
#[test]
fn jobs_get_a_clean_environment_their_niceness_and_limits() {
    let env = Env::new(
        r#"
[[job]]
name = "clean"
schedule = "@yearly"
shell = "env | grep -v ^API_TOKEN=; echo token_len=${#API_TOKEN}; echo nice=$(nice); echo nofile=$(ulimit -n) cpu=$(ulimit -t) as=$(ulimit -v)"
env = { FOO = "bar", API_TOKEN = "s3cr3t-job-env-value" }
nice = 7
limit_nofile = 123
limit_cpu = "30s"
limit_as = "2G"

[[job]]
name = "inherits"
schedule = "@yearly"
shell = "env"
inherit_env = true
"#,
    );
    let sup = env.start_with(&[
        ("CW_TEST_SECRET", "from-the-supervisor"),
        ("CRONWARDEN_LOG", "debug"),
    ]);
    env.wait_ok(LONG);
    let (outcome, _, out) = trigger_and_wait(&env, "clean", LONG);
    // The job sees its env; nothing else does: not the log (at debug
    // level), not the status.
    assert!(out.contains("token_len=20"), "{out}");
    let (_, status) = env.status();
    let status = status.unwrap().to_string();
    assert!(!status.contains("s3cr3t"), "a job env value in the status");
    assert!(!sup.log().contains("s3cr3t"), "a job env value in the log");
    assert_eq!(outcome, "success", "{out}");
    let vars: Vec<&str> = out.lines().filter(|l| l.contains('=')).collect();
    assert!(
        !out.contains("CW_TEST_SECRET"),
        "cronwarden's environment leaked into a job: {out}"
    );
    assert!(vars.contains(&"FOO=bar"), "{out}");
    assert!(
        vars.contains(&"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        "{out}"
    );
    assert!(vars.contains(&"SHELL=/bin/sh"), "{out}");
    let me = nix::unistd::User::from_uid(nix::unistd::Uid::effective())
        .unwrap()
        .unwrap();
    assert!(
        vars.contains(&format!("USER={}", me.name).as_str()),
        "{out}"
    );
    assert!(
        vars.contains(&format!("LOGNAME={}", me.name).as_str()),
        "{out}"
    );
    assert!(
        vars.contains(&format!("HOME={}", me.dir.display()).as_str()),
        "{out}"
    );
    assert!(vars.contains(&"CRONWARDEN_JOB=clean"), "{out}");
    assert!(vars.contains(&"CRONWARDEN_TRIGGER=manual"), "{out}");
    assert!(out.contains("nice=7"), "{out}");
    assert!(
        out.contains("nofile=123 cpu=30 as=2097152"),
        "limits in force: {out}"
    );
    // Nothing else: every variable is one of the documented ones.
    for v in &vars {
        let name = v.split('=').next().unwrap();
        assert!(
            [
                "PATH",
                "HOME",
                "USER",
                "LOGNAME",
                "SHELL",
                "FOO",
                "API_TOKEN",
                "PWD"
            ]
            .contains(&name)
                || name.starts_with("CRONWARDEN_")
                || v.starts_with("nice=")
                || v.starts_with("token_len=")
                || v.starts_with("nofile="),
            "unexpected variable {v:?} in a clean environment"
        );
    }
    let (_, _, out) = trigger_and_wait(&env, "inherits", LONG);
    assert!(
        out.contains("CW_TEST_SECRET=from-the-supervisor"),
        "inherit_env passes cronwarden's environment: {out}"
    );
}

/// Creates a system user with a supplementary group, once per machine.
fn test_user() -> Option<(nix::unistd::User, u32)> {
    let run = |args: &[&str]| {
        std::process::Command::new(args[0])
            .args(&args[1..])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if nix::unistd::User::from_name("cwtest")
        .ok()
        .flatten()
        .is_none()
    {
        run(&["groupadd", "--system", "cwtestx"]);
        run(&[
            "useradd",
            "--system",
            "--no-create-home",
            "--user-group",
            "--groups",
            "cwtestx",
            "--home-dir",
            "/nonexistent-cwtest",
            "cwtest",
        ]);
    }
    let user = nix::unistd::User::from_name("cwtest").ok().flatten()?;
    let extra = nix::unistd::Group::from_name("cwtestx").ok().flatten()?;
    Some((user, extra.gid.as_raw()))
}

/// `user =` drops privileges before exec: the job runs with the user's
/// uid, primary group and supplementary groups, and its HOME and USER.
#[test]
fn user_jobs_run_with_that_users_ids_and_groups() {
    if !is_root() {
        skip("switching users needs root");
        return;
    }
    let Some((user, extra_gid)) = test_user() else {
        skip("could not create the test user (no useradd/groupadd?)");
        return;
    };
    let env = Env::new(
        r#"
[[job]]
name = "as-user"
schedule = "@yearly"
shell = "echo uid=$(id -u) gid=$(id -g) groups=$(id -G); echo HOME=$HOME USER=$USER"
user = "cwtest"
"#,
    );
    let _sup = env.start();
    env.wait_ok(LONG);
    let (outcome, _, out) = trigger_and_wait(&env, "as-user", LONG);
    assert_eq!(outcome, "success", "{out}");
    let line = out.lines().next().unwrap_or_default();
    assert!(
        line.starts_with(&format!("uid={} gid={} groups=", user.uid, user.gid)),
        "{out}"
    );
    let groups: Vec<u32> = line
        .split("groups=")
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|g| g.parse().ok())
        .collect();
    assert!(
        groups.contains(&extra_gid),
        "supplementary group set: {out}"
    );
    assert!(!groups.contains(&0), "root's groups are gone: {out}");
    assert!(
        out.contains(&format!("HOME={} USER=cwtest", user.dir.display())),
        "{out}"
    );
}

/// The binary, reachable by an unprivileged user: a link (or copy) inside
/// the test directory, which is opened to others for the test.
fn binary_for_others(env: &Env) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let bin = env.path("cronwarden");
    if fs::hard_link(crate::util::BIN, &bin).is_err() {
        fs::copy(crate::util::BIN, &bin).unwrap();
    }
    bin
}

// std's uid() clears the supplementary groups when started by root.
fn as_nobody(bin: &std::path::Path, args: &[&str]) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    std::process::Command::new(bin)
        .args(args)
        .uid(65534)
        .gid(65534)
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// Anyone who can reach the socket may read; control calls are for root,
/// cronwarden's own user and `control_group`. The socket and the state
/// directory belong to `socket_group`, 0660 and 0750.
#[test]
fn control_calls_from_another_uid_are_refused_reads_are_not() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
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
    let body = |control: &str| {
        format!(
            "socket_group = {:?}\n{control}\n[[job]]\nname = \"tick\"\nschedule = \"@yearly\"\nshell = \"true\"\n",
            nogroup.name
        )
    };
    let env = Env::new(&body(""));
    let bin = binary_for_others(&env);
    let mut sup = env.start();
    env.wait_ok(LONG);
    let sock = env.state_dir().join("cronwarden.sock");
    let (dir_meta, sock_meta) = (
        fs::metadata(env.state_dir()).unwrap(),
        fs::metadata(&sock).unwrap(),
    );
    assert_eq!(dir_meta.permissions().mode() & 0o777, 0o750);
    assert_eq!(sock_meta.permissions().mode() & 0o777, 0o660);
    assert_eq!((dir_meta.gid(), sock_meta.gid()), (65534, 65534));
    let config = env.config.to_str().unwrap();

    let read = as_nobody(&bin, &["status", "--json", "--config", config]);
    let status: serde_json::Value = serde_json::from_slice(&read.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&read.stderr)));
    assert_eq!(
        status["state"], "ok",
        "reads are open to the socket's group"
    );
    assert_eq!(read.status.code(), Some(0));

    for args in [
        vec!["trigger", "tick"],
        vec!["pause", "tick"],
        vec!["reload"],
    ] {
        let mut a = args.clone();
        a.extend(["--config", config]);
        let out = as_nobody(&bin, &a);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{args:?} by uid 65534 must be refused"
        );
        assert!(
            err.contains("uid 65534 may not make control calls"),
            "{args:?}: the refusal says why: {err}"
        );
    }
    assert!(
        sup.log().contains("refused POST /v1/jobs/tick/trigger"),
        "refusals are logged: {}",
        sup.log()
    );
    let (_, s) = env.status();
    assert_eq!(
        crate::util::job(&s.unwrap(), "tick")["paused"],
        false,
        "the refused pause did nothing"
    );

    // control_group lets the group in, after a reload by root.
    env.write_config(&body(&format!("control_group = {:?}", nogroup.name)));
    let out = env.cmd(&["reload", "--config", config]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = as_nobody(&bin, &["trigger", "tick", "--config", config]);
    assert!(
        out.status.success(),
        "a control_group member may trigger: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sup.stop(LONG), 0);
}

/// Without root, `user =` is refused when the config is checked, naming
/// the job and the key.
#[test]
fn switching_users_without_root_is_a_config_error() {
    if !is_root() {
        // Run as a normal user, this is the situation under test.
        let env = Env::new(
            "[[job]]\nname = \"j\"\nschedule = \"@daily\"\nshell = \"true\"\nuser = \"root\"\n",
        );
        let out = env.cmd(&["check", "--config", env.config.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr)
            .contains("key \"user\": running a job as 0:0 needs root"));
        return;
    }
    let env = Env::new(
        "[[job]]\nname = \"j\"\nschedule = \"@daily\"\nshell = \"true\"\nuser = \"root\"\n",
    );
    let bin = binary_for_others(&env);
    let out = as_nobody(&bin, &["check", "--config", env.config.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("job \"j\": key \"user\": running a job as 0:0 needs root; cronwarden runs as uid 65534"),
        "{err}"
    );
}

/// VmHWM (peak resident memory) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// A job writing 2 GiB to stdout costs the worker counters and a tail: its
/// peak memory stays under 64 MiB, the run succeeds with the exact byte
/// count, and the worker is not stalled by it.
#[test]
fn a_job_writing_2_gib_keeps_the_worker_small() {
    const BYTES: i64 = 2 << 30;
    let env = Env::new(&format!(
        "[[job]]\nname = \"flood\"\nschedule = \"@yearly\"\ntimeout = \"5m\"\nshell = \"head -c {BYTES} /dev/zero; echo done\"\n"
    ));
    let _sup = env.start();
    let status = env.wait_ok(LONG);
    let worker = status["worker"]["pid"].as_u64().unwrap() as u32;
    let before = peak_rss_kib(worker).unwrap();
    let started = std::time::Instant::now();
    let (outcome, bytes, tail) = trigger_and_wait(&env, "flood", Duration::from_secs(300));
    let took = started.elapsed();
    let peak = peak_rss_kib(worker).unwrap();
    eprintln!(
        "2 GiB through the runner in {took:?}; worker peak RSS {before} KiB before, {peak} KiB after"
    );
    assert_eq!(outcome, "success");
    assert_eq!(bytes, BYTES + 5, "every byte counted");
    assert!(
        tail.ends_with("done\n") && tail.len() <= 4096,
        "only the tail is kept"
    );
    assert!(
        peak < 64 * 1024,
        "worker peak RSS {peak} KiB exceeds 64 MiB"
    );
    let status = env.wait_ok(LONG);
    assert_eq!(
        status["worker"]["pid"], worker,
        "the worker was not replaced"
    );
}

/// A spawn that fails for want of descriptors (fail point: the first spawn
/// fails with EMFILE, as it would at the limit) is a failed run with the
/// reason; the worker goes on, `job_failing` opens, and resolves when the
/// next run succeeds.
#[test]
fn a_spawn_failure_is_a_failed_run_with_the_reason_and_an_alert() {
    let env = Env::new("[[job]]\nname = \"tick\"\nschedule = \"* * * * * *\"\nshell = \"true\"\n");
    let _sup = env.start_with(&[("FAILPOINTS", "runner::spawn=1*return(EMFILE)")]);
    env.wait_ok(LONG);
    let failed = wait_until("the failed spawn is recorded", LONG, || {
        env.rows("tick").into_iter().find(|r| r.outcome == "failed")
    });
    let error = failed.error.clone().unwrap_or_default();
    assert!(
        error.contains("cannot start") && error.contains("Too many open files"),
        "the record says why: {error}"
    );
    let (opened, resolved) = wait_until("job_failing opened and resolved", LONG, || {
        alert_history(&env, "job_failing")
            .into_iter()
            .find_map(|(o, r)| Some((o, r?)))
    });
    assert!(opened <= resolved);
    wait_until("later runs succeed", LONG, || {
        env.rows("tick")
            .iter()
            .any(|r| r.id > failed.id && r.outcome == "success")
            .then_some(())
    });
    let status = env.wait_ok(LONG);
    assert_eq!(status["worker"]["restarts"], 0);
}

/// Unmounts (lazily) on drop, so a failing test leaves no mount behind.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// The same with a real full disk: the state directory on a 2 MiB tmpfs,
/// filled up while a per-second job runs, then freed.
#[test]
fn a_full_disk_loses_no_record() {
    if !is_root() {
        skip("mounting a tmpfs needs root");
        return;
    }
    let env = Env::new(TICKING);
    fs::create_dir_all(env.state_dir()).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(env.state_dir())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        skip("cannot mount a tmpfs here");
        return;
    }
    let _mount = Mount(env.state_dir());
    let mut sup = env.start();
    env.wait_ok(LONG);
    wait_until("a few runs recorded", LONG, || {
        (env.rows("tick").len() >= 2).then_some(())
    });
    // Fill the file system to the last byte.
    let filler = env.state_dir().join("filler");
    {
        use std::io::Write;
        let mut f = fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.write_all(&[0u8; 512]);
        let _ = f.sync_all();
    }
    let open_kinds =
        |env: &Env| -> Vec<String> { env.open_alerts().into_iter().map(|(k, _)| k).collect() };
    wait_until("store_error opens on the full disk", LONG, || {
        open_kinds(&env)
            .contains(&"store_error".to_string())
            .then_some(())
    });
    let full_since = crate::util::now_unix();
    // Fires go on while the disk is full.
    wait_until("three more seconds pass", LONG, || {
        (crate::util::now_unix() >= full_since + 3).then_some(())
    });
    fs::remove_file(&filler).unwrap();
    wait_until("store_error resolves once space is back", LONG, || {
        (!open_kinds(&env).contains(&"store_error".to_string())).then_some(())
    });
    let freed = crate::util::now_unix();
    assert_eq!(sup.stop(LONG), 0);
    let rows = env.rows("tick");
    let (from, to) = (full_since - 1, freed);
    let expected: Vec<i64> = (from + 1..to).collect();
    assert_accounted(&rows, &expected, from, to, "tick");
    let integrity: String = env
        .db()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
}

/// A config of 10,000 jobs (1.7 MiB of TOML, more than one event line
/// may hold) reaches the worker whole: the status is ok with every job.
#[test]
fn a_ten_thousand_job_config_starts() {
    let body: String = (0..10_000)
        .map(|i| {
            format!(
                "[[job]]\nname = \"job-{i:05}\"\nschedule = \"@yearly\"\n\
                 shell = \"/usr/local/bin/some-report --section {i} --output /var/tmp/reports/section-{i}.csv --quiet --retries 3 --timeout 120\"\n"
            )
        })
        .collect();
    assert!(body.len() > 1 << 20, "{} bytes", body.len());
    let env = Env::new(&body);
    let _sup = env.start();
    let status = env.wait_ok(Duration::from_secs(120));
    let jobs = status["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 10_000);
    assert!(
        jobs.iter().all(|j| j["next_fire_at"].is_string()),
        "every job armed"
    );
    assert_eq!(status["worker"]["restarts"], 0);
}
