//! Containment (issue 15): nothing a job starts outlives its run, and
//! every run says what it cost. Escapees by `setsid`, double fork and a
//! daemonising script, at run end and at timeout, with a cgroup per run
//! (where this machine has a writable cgroup2 hierarchy) and with the
//! process-group fallback; a crash of both processes with leftovers
//! running; CPU accounting; a fork bomb under `limit_nproc`.

use std::{fs, path::PathBuf, time::Duration};

use serde_json::Value;

use crate::util::{alive, kill, read_pids, skip, wait_until, Env};

const LONG: Duration = Duration::from_secs(60);
/// How long a killed escapee may take to be gone.
const GONE: Duration = Duration::from_secs(20);

/// Our cgroup in a writable cgroup2 hierarchy, if there is one: the
/// worker's runs get cgroups there.
fn writable_cgroup2() -> Option<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let (mount, root) = mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2").then_some(())?;
        let f: Vec<&str> = left.split_whitespace().collect();
        Some((PathBuf::from(f.get(4)?), f.get(3)?.to_string()))
    })?;
    let own = fs::read_to_string("/proc/self/cgroup").ok()?;
    let own = own.lines().find_map(|l| l.strip_prefix("0::"))?.to_string();
    let rel = own.strip_prefix(root.trim_end_matches('/'))?;
    let dir = mount.join(rel.trim_start_matches('/'));
    let probe = dir.join(format!("cw-probe-{}", std::process::id()));
    fs::create_dir(&probe).ok()?;
    fs::remove_dir(&probe).ok()?;
    Some(dir)
}

/// Whether the test can run with cgroups; says why not (skipped) if not.
fn cgroups_or_skip() -> bool {
    if writable_cgroup2().is_none() {
        skip("no writable cgroup2 hierarchy here");
        return false;
    }
    true
}

/// The environment that forces the process-group fallback.
const NO_CGROUPS: &[(&str, &str)] = &[("CRONWARDEN_NO_CGROUPS", "1")];

/// A job body that starts three escapees, each writing its pid to a file
/// in `dir` before it turns into `sleep`: one by `setsid` (keeping the
/// job's stdout open), one by double fork (still in the job's process
/// group), one by a daemonising script (fork, setsid, fork again, output
/// to /dev/null). Then the main process waits for the pid files and either
/// exits or (with `then_hang`) sleeps on until its timeout.
fn escapees(dir: &std::path::Path, then_hang: bool) -> String {
    let d = dir.display();
    fs::write(
        dir.join("daemonise.sh"),
        format!(
            "cd /\nsetsid sh -c 'sh -c \"echo \\$\\$ > {d}/daemon.pid; exec sleep 300\" &' </dev/null >/dev/null 2>&1 &\n"
        ),
    )
    .unwrap();
    let tail = if then_hang { "sleep 300" } else { "exit 0" };
    format!(
        "setsid sh -c 'echo $$ > {d}/setsid.pid; exec sleep 300' & \
         ( sh -c 'echo $$ > {d}/double.pid; exec sleep 300' & ) ; \
         sh {d}/daemonise.sh; \
         while [ ! -s {d}/setsid.pid ] || [ ! -s {d}/double.pid ] || [ ! -s {d}/daemon.pid ]; do sleep 0.05; done; \
         {tail}"
    )
}

const ESCAPEE_FILES: [&str; 3] = ["setsid.pid", "double.pid", "daemon.pid"];

/// The escapees' pids, once all three wrote them.
fn escapee_pids(env: &Env) -> Vec<u32> {
    wait_until("the escapees wrote their pids", LONG, || {
        let pids: Vec<u32> = ESCAPEE_FILES
            .iter()
            .filter_map(|f| read_pids(&env.path(f)).first().copied())
            .collect();
        (pids.len() == 3).then_some(pids)
    })
}

/// Kills whatever escaped anyway, so a failing test leaves no sleeps.
struct Reap(Vec<u32>);
impl Drop for Reap {
    fn drop(&mut self) {
        for p in &self.0 {
            if alive(*p) {
                kill(*p, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

/// `runs JOB --json`: the job's records, newest first or as the CLI lists.
fn runs_json(env: &Env, job: &str) -> Vec<Value> {
    let out = env.cmd(&[
        "runs",
        job,
        "--json",
        "--config",
        env.config.to_str().unwrap(),
    ]);
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| match v {
            Value::Array(a) => Some(a),
            Value::Object(mut o) => o.remove("runs").and_then(|r| r.as_array().cloned()),
            _ => None,
        })
        .unwrap_or_default()
}

/// The first finished record of `job`.
fn finished_run(env: &Env, job: &str) -> Value {
    wait_until(&format!("a finished run of {job}"), LONG, || {
        runs_json(env, job)
            .into_iter()
            .find(|r| r["outcome"] != "running" && r["outcome"] != "skipped")
    })
}

fn trigger(env: &Env, job: &str) {
    let out = env.cmd(&["trigger", job, "--config", env.config.to_str().unwrap()]);
    assert!(out.status.success(), "trigger {job}: {out:?}");
}

fn all_gone(pids: &[u32], when: &str) {
    wait_until(&format!("every escapee gone {when}"), GONE, || {
        pids.iter().all(|p| !alive(*p)).then_some(())
    });
}

fn job_config(name: &str, body: &str, extra: &str) -> String {
    format!(
        "[[job]]\nname = \"{name}\"\nschedule = \"@yearly\"\nkill_grace = \"1s\"\n{extra}\nshell = {body:?}\n"
    )
}

/// At the run's end, every escapee is killed and counted; the one still
/// holding the output is named.
fn escapees_killed_at_run_end(vars: &[(&str, &str)], with_cgroup: bool) {
    let env = Env::new("");
    env.write_config(&job_config("esc", &escapees(env.dir.path(), false), ""));
    let _sup = env.start_with(vars);
    env.wait_ok(LONG);
    trigger(&env, "esc");
    let pids = escapee_pids(&env);
    let _reap = Reap(pids.clone());
    let run = finished_run(&env, "esc");
    if with_cgroup {
        all_gone(&pids, "at the run's end");
        assert_eq!(run["outcome"], "success", "{run}");
        assert!(
            run["leftovers_killed"].as_u64().is_some_and(|n| n >= 3),
            "the record counts the leftovers killed: {run}"
        );
        assert!(
            run["output_holder"]
                .as_str()
                .is_some_and(|h| h.contains("sleep")),
            "the process holding the output is named: {run}"
        );
        assert!(run["cgroup"].is_string(), "{run}");
        assert!(run["cpu_usec"].is_u64(), "{run}");
    } else {
        // Without cgroups: the process group reaches the double-forked
        // one; the others are found as the pipe's holder (setsid) and as
        // orphans of a finished run reparented to the supervisor.
        all_gone(&pids, "at the run's end, without cgroups");
        assert!(
            run["output_holder"]
                .as_str()
                .is_some_and(|h| h.contains("sleep")),
            "the process holding the output is named: {run}"
        );
        assert!(
            run["leftovers_killed"].as_u64().is_some_and(|n| n >= 1),
            "{run}"
        );
        assert!(run["cpu_usec"].is_null(), "{run}");
    }
}

#[test]
fn escapees_are_killed_at_run_end_with_a_cgroup() {
    if !cgroups_or_skip() {
        return;
    }
    escapees_killed_at_run_end(&[], true);
}

#[test]
fn the_process_group_fallback_kills_what_stays_in_the_group() {
    escapees_killed_at_run_end(NO_CGROUPS, false);
}

/// At timeout, the escapees die with the run's cgroup; without cgroups,
/// with its process group, as the holder of its output pipe, or as its
/// orphans reparented to the supervisor.
fn escapees_killed_at_timeout(vars: &[(&str, &str)], with_cgroup: bool) {
    let env = Env::new("");
    env.write_config(&job_config(
        "hang",
        &escapees(env.dir.path(), true),
        "timeout = \"3s\"",
    ));
    let _sup = env.start_with(vars);
    env.wait_ok(LONG);
    trigger(&env, "hang");
    let pids = escapee_pids(&env);
    let _reap = Reap(pids.clone());
    let run = finished_run(&env, "hang");
    assert_eq!(run["outcome"], "timeout", "{run}");
    if with_cgroup {
        all_gone(&pids, "at the timeout");
    } else {
        all_gone(&pids, "after the timeout, without cgroups");
    }
}

#[test]
fn escapees_are_killed_at_timeout_with_a_cgroup() {
    if !cgroups_or_skip() {
        return;
    }
    escapees_killed_at_timeout(&[], true);
}

#[test]
fn the_process_group_fallback_kills_the_group_at_timeout() {
    escapees_killed_at_timeout(NO_CGROUPS, false);
}

#[test]
fn leftovers_keep_lets_them_run_on() {
    if !cgroups_or_skip() {
        return;
    }
    let env = Env::new("");
    env.write_config(&job_config(
        "keep",
        &escapees(env.dir.path(), false),
        "leftovers = \"keep\"",
    ));
    let mut sup = env.start();
    env.wait_ok(LONG);
    trigger(&env, "keep");
    let pids = escapee_pids(&env);
    let _reap = Reap(pids.clone());
    let run = finished_run(&env, "keep");
    assert_eq!(run["outcome"], "success", "{run}");
    assert!(run.get("leftovers_killed").is_none(), "{run}");
    // The daemonised one (it holds no output, so the drain's group kill
    // cannot reach it either) runs on.
    assert!(alive(pids[2]), "a kept leftover still runs: {run}");
    // The next generation sweeps them before it fires anything.
    assert_eq!(sup.stop(LONG), 0);
    let _sup = env.start();
    env.wait_ok(LONG);
    all_gone(&pids, "after the next start");
}

/// kill -9 of the supervisor and the worker with leftovers running: the
/// next start kills them before it fires anything, records the lost run
/// with what was killed, and the next fire of an `overlap = "skip"` job
/// never runs beside the old run.
#[test]
fn a_new_generation_kills_what_a_crashed_one_left() {
    if !cgroups_or_skip() {
        return;
    }
    new_generation_kills(&[]);
}

/// The same without cgroups: the run's process group and its leader's
/// start time were stored while it ran.
#[test]
fn a_new_generation_kills_a_crashed_ones_process_group_without_cgroups() {
    new_generation_kills(NO_CGROUPS);
}

/// An old run that does not die at the next start (forced here: the
/// worker is told it "survives" a dozen polls, ~4 s) keeps its job busy:
/// with `overlap = "skip"` the fires meanwhile are skipped for overlap,
/// not started beside it; once it is gone its lost record comes, and the
/// job runs again.
#[test]
fn an_old_run_still_alive_keeps_its_job_busy() {
    let env = Env::new("");
    let d = env.dir.path().display();
    env.write_config(&format!(
        "[[job]]\nname = \"stay\"\nschedule = \"* * * * * *\"\noverlap = \"skip\"\n\
         shell = \"echo $$ >> {d}/pids.txt; exec sleep 300\"\n"
    ));
    let mut sup = env.start_with(NO_CGROUPS);
    let first = wait_until("the first run started", LONG, || {
        read_pids(&env.path("pids.txt")).first().copied()
    });
    let _reap = Reap(vec![first]);
    let status = env.wait_ok(LONG);
    let worker = status["worker"]["pid"].as_u64().unwrap() as u32;
    kill(sup.pid(), nix::sys::signal::Signal::SIGSTOP);
    kill(worker, nix::sys::signal::Signal::SIGSTOP);
    kill(sup.pid(), nix::sys::signal::Signal::SIGKILL);
    kill(worker, nix::sys::signal::Signal::SIGKILL);
    let _ = sup.child.wait();
    wait_until("the worker gone", GONE, || (!alive(worker)).then_some(()));
    let vars = [NO_CGROUPS[0], ("FAILPOINTS", "sweep::survives=return(12)")];
    let _sup = env.start_with(&vars);
    let skipped = wait_until(
        "a fire skipped while the old run holds the job",
        LONG,
        || {
            runs_json(&env, "stay")
                .into_iter()
                .find(|r| r["outcome"] == "skipped")
        },
    );
    assert_eq!(skipped["skip_reason"], "overlap", "{skipped}");
    let lost = wait_until("the old run recorded lost once gone", LONG, || {
        runs_json(&env, "stay")
            .into_iter()
            .find(|r| r["outcome"] == "lost" && !r["leftovers_killed"].is_null())
    });
    assert!(lost["leftovers_killed"].as_u64() >= Some(1), "{lost}");
    let second = wait_until("the job running again", LONG, || {
        read_pids(&env.path("pids.txt")).get(1).copied()
    });
    let _reap2 = Reap(vec![second]);
}

fn new_generation_kills(vars: &[(&str, &str)]) {
    let env = Env::new("");
    let d = env.dir.path().display();
    // Each run appends its pid and stays; the old run still alive (not a
    // zombie: a killed orphan may wait to be reaped) when a new one starts
    // would show in `overlap.txt`.
    let body = format!(
        "for p in $(cat {d}/pids.txt 2>/dev/null); do \
           s=$(cut -d')' -f2 /proc/$p/stat 2>/dev/null | cut -c2); \
           [ -n \"$s\" ] && [ \"$s\" != Z ] && echo $p >> {d}/overlap.txt; done; \
         echo $$ >> {d}/pids.txt; exec sleep 300"
    );
    env.write_config(&format!(
        "[[job]]\nname = \"stay\"\nschedule = \"* * * * * *\"\noverlap = \"skip\"\nshell = {body:?}\n"
    ));
    let mut sup = env.start_with(vars);
    let first = wait_until("the first run started", LONG, || {
        read_pids(&env.path("pids.txt")).first().copied()
    });
    let _reap = Reap(vec![first]);
    let status = env.wait_ok(LONG);
    let worker = status["worker"]["pid"].as_u64().unwrap() as u32;
    // Both stopped first, so that neither sees the other die and stops
    // the run itself: a crash of both at once.
    kill(sup.pid(), nix::sys::signal::Signal::SIGSTOP);
    kill(worker, nix::sys::signal::Signal::SIGSTOP);
    kill(sup.pid(), nix::sys::signal::Signal::SIGKILL);
    kill(worker, nix::sys::signal::Signal::SIGKILL);
    let _ = sup.child.wait();
    wait_until("the worker gone", GONE, || (!alive(worker)).then_some(()));
    assert!(alive(first), "the run survived the crash (the premise)");
    let _sup = env.start_with(vars);
    all_gone(&[first], "after the next start");
    let second = wait_until("a run of the new generation", LONG, || {
        read_pids(&env.path("pids.txt")).get(1).copied()
    });
    let _reap2 = Reap(vec![second]);
    assert!(
        env.lines("overlap.txt").is_empty(),
        "a new run started while an old one was alive: {:?}",
        env.lines("overlap.txt")
    );
    let lost = wait_until(
        "the crashed run recorded lost, with what was killed",
        LONG,
        || {
            runs_json(&env, "stay")
                .into_iter()
                .find(|r| r["outcome"] == "lost" && !r["leftovers_killed"].is_null())
        },
    );
    assert!(
        lost["leftovers_killed"].as_u64() >= Some(1),
        "the lost record counts the leftover killed: {lost}"
    );
    let log = fs::read_to_string(env.path("supervisor.log")).unwrap_or_default();
    assert!(
        log.contains("killed what an earlier generation's run left running"),
        "the log says what was killed: {log}"
    );
}

/// A job burning about 1 s of CPU records 0.5 s to 3 s (CPU time, not
/// wall time: a loaded machine does not change it much).
#[test]
fn cpu_time_is_recorded() {
    if !cgroups_or_skip() {
        return;
    }
    let env = Env::new("");
    env.write_config(&job_config(
        "burn",
        "perl -e 'while ((times)[0] < 1) { for (1 .. 100000) {} }'",
        "",
    ));
    let _sup = env.start();
    env.wait_ok(LONG);
    trigger(&env, "burn");
    let run = finished_run(&env, "burn");
    assert_eq!(run["outcome"], "success", "{run}");
    let usec = run["cpu_usec"].as_u64().expect("cpu_usec recorded");
    assert!(
        (500_000..=3_000_000).contains(&usec),
        "about 1 s of CPU recorded, got {usec} µs: {run}"
    );
    assert!(
        run["memory_peak"].is_null() || run["memory_peak"].is_u64(),
        "{run}"
    );
    let text = env.cmd(&["runs", "burn", "--config", env.config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("CPU") && text.contains("LEFTOVERS KILLED"),
        "{text}"
    );
}

/// A bounded fork bomb (200 sleeps) as `nobody` under `limit_nproc = 20`:
/// the forks beyond the limit fail, the run is recorded with what it left
/// killed, and cronwarden stays healthy and keeps firing.
#[test]
fn a_fork_bomb_under_limit_nproc_is_bounded() {
    if !nix::unistd::Uid::effective().is_root() {
        skip("limit_nproc needs another user to bind (RLIMIT_NPROC binds no root)");
        return;
    }
    if !cgroups_or_skip() {
        return;
    }
    let env = Env::new("");
    env.write_config(&format!(
        "{}\n[[job]]\nname = \"tick\"\nschedule = \"* * * * * *\"\nshell = \"true\"\n",
        job_config(
            "bomb",
            "i=0; while [ $i -lt 200 ]; do sleep 300 & i=$((i+1)); done; exit 0",
            "user = \"nobody\"\nlimit_nproc = 20\nworking_dir = \"/\"",
        )
    ));
    let _sup = env.start();
    env.wait_ok(LONG);
    trigger(&env, "bomb");
    let run = finished_run(&env, "bomb");
    let killed = run["leftovers_killed"].as_u64().unwrap_or(0);
    assert!(
        (1..=20).contains(&killed),
        "at most limit_nproc processes were left, and killed: {run}"
    );
    assert!(
        !run["stderr_tail"].as_str().unwrap_or_default().is_empty(),
        "the failed forks are in the record: {run}"
    );
    // Healthy: the same worker answers, and the other job still fires.
    let (_, status) = env.status();
    let status = status.expect("status answers after the bomb");
    assert_eq!(status["worker"]["restarts"], 0, "{status}");
    let after = runs_json(&env, "tick").len();
    wait_until("the other job still fires", LONG, || {
        (runs_json(&env, "tick").len() > after + 1).then_some(())
    });
}

/// Removes a test's cgroup subtree, deepest first (bounded retries: a
/// killed process may take a moment to leave).
struct Subtree(PathBuf);
impl Drop for Subtree {
    fn drop(&mut self) {
        for _ in 0..100 {
            let mut dirs: Vec<PathBuf> = vec![];
            let mut stack = vec![self.0.clone()];
            while let Some(d) = stack.pop() {
                if let Ok(rd) = fs::read_dir(&d) {
                    stack.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
                }
                dirs.push(d);
            }
            for d in dirs.iter().rev() {
                let _ = fs::remove_dir(d);
            }
            if !self.0.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The `0::` line of a process's /proc/PID/cgroup.
fn cgroup_of(pid: &str) -> String {
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_default()
        .to_string()
}

/// Given a cgroup of its own (as systemd's `Delegate=yes` gives one),
/// cronwarden moves itself into a leaf `supervisor/` so that its cgroup
/// holds no process (a cgroup with processes cannot hand controllers to
/// children), and its runs live beside that leaf.
#[test]
fn in_a_cgroup_of_its_own_the_supervisor_moves_to_a_leaf_and_runs_live_beside_it() {
    let Some(own) = writable_cgroup2() else {
        skip("no writable cgroup2 hierarchy here");
        return;
    };
    let name = format!("cw-delegated-{}", std::process::id());
    let given = own.join(&name);
    fs::create_dir(&given).unwrap();
    let _cleanup = Subtree(given.clone());
    let env = Env::new("");
    let d = env.dir.path().display();
    env.write_config(&format!(
        "[[job]]\nname = \"where\"\nschedule = \"* * * * * *\"\n\
         shell = \"grep ^0:: /proc/self/cgroup > {d}/cg.tmp && mv {d}/cg.tmp {d}/cg.txt\"\n"
    ));
    // Started inside the given cgroup, as systemd starts a service.
    let log = env.path("supervisor.log");
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && exec {} run --config {}",
            given.display(),
            crate::util::BIN,
            env.config.display()
        ))
        .env("CRONWARDEN_LOG", "info")
        .current_dir(env.dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut sup = crate::util::Supervisor { child, log };
    let run = wait_until("a run reporting its cgroup", LONG, || {
        fs::read_to_string(env.path("cg.txt"))
            .ok()
            .filter(|s| !s.is_empty())
    });
    let status = env.wait_ok(LONG);
    let worker = status["worker"]["pid"].as_u64().unwrap().to_string();
    let leaf = format!("/{name}/supervisor");
    assert!(
        cgroup_of(&sup.pid().to_string()).ends_with(&leaf),
        "supervisor in {}",
        cgroup_of(&sup.pid().to_string())
    );
    assert!(
        cgroup_of(&worker).ends_with(&leaf),
        "worker in {}",
        cgroup_of(&worker)
    );
    assert!(
        run.contains(&format!("/{name}/cronwarden-")) && run.contains("/run-"),
        "a run lives beside the leaf, not under it: {run}"
    );
    assert_eq!(
        fs::read_to_string(given.join("cgroup.procs")).unwrap(),
        "",
        "the given cgroup holds no process"
    );
    assert_eq!(sup.stop(LONG), 0, "{}", sup.log());
}

/// A finished run's cgroup is removed soon after its end (its removal
/// waits for the starts in flight, a second at most), its cost is still
/// recorded, and the instance directory goes at a clean stop: nothing is
/// left in the host's cgroup tree.
#[test]
fn run_cgroups_are_removed_after_their_runs_and_the_instance_at_stop() {
    if !cgroups_or_skip() {
        return;
    }
    let env = Env::new("");
    env.write_config(&job_config("quick", "true", ""));
    let mut sup = env.start();
    env.wait_ok(LONG);
    trigger(&env, "quick");
    let run = finished_run(&env, "quick");
    assert_eq!(run["outcome"], "success", "{run}");
    assert!(run["cpu_usec"].is_u64(), "the cost is recorded: {run}");
    let cg = PathBuf::from(run["cgroup"].as_str().expect("the run had a cgroup"));
    wait_until("the finished run's cgroup removed", GONE, || {
        (!cg.exists()).then_some(())
    });
    let instance = cg.parent().expect("the instance directory").to_path_buf();
    assert!(
        instance.exists(),
        "the instance lives while cronwarden runs"
    );
    assert_eq!(sup.stop(LONG), 0, "{}", sup.log());
    assert!(
        !instance.exists(),
        "the instance directory is removed at a clean stop: {}",
        instance.display()
    );
}
