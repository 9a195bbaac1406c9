//! The socket's edge (issue 13, items 8-12): a reader cannot exhaust the
//! supervisor with one audit nor starve root's control calls; every verb
//! works on any name the config accepts; after kill -9 the lock's real
//! holder is named and `run` waits for it; and an instance never takes, or
//! answers for, another instance's socket.

use std::{
    fs,
    io::Read,
    os::unix::net::UnixStream,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use nix::sys::signal::Signal;

use crate::util::{alive, job, kill, skip, wait_until, Env};

const LONG: Duration = Duration::from_secs(60);

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The resident set of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// A name with a space, `?`, `#`, `%` and non-ASCII letters works in
/// every verb that names a job, and names that would escape a path or
/// fool a terminal are refused by the config.
#[test]
fn every_verb_works_on_a_name_with_spaces_marks_and_letters() {
    let name = "nightly a?b#c%20d é☃";
    let env = Env::new(&format!(
        "[[job]]\nname = {}\nschedule = \"@yearly\"\nshell = \"true\"\nkeep_output = 2\n",
        toml_str(name)
    ));
    let _sup = env.start();
    env.wait_ok(LONG);
    let config = env.config.to_str().unwrap();
    let verb = |v: &str| {
        let out = env.cmd(&[v, name, "--config", config]);
        assert!(
            out.status.success() && !text(&out).contains("no job named"),
            "`{v}` on {name}: {}",
            text(&out)
        );
        out
    };
    verb("trigger");
    wait_until("the triggered run recorded", LONG, || {
        let out = env.cmd(&["runs", name, "--json", "--config", config]);
        let runs: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (runs.as_array()?.len() == 1).then_some(())
    });
    verb("runs");
    verb("pause");
    let (_, s) = env.status();
    assert_eq!(
        job(&s.unwrap(), name)["paused"],
        true,
        "pause reached {name}"
    );
    verb("resume");
    let (_, s) = env.status();
    assert_eq!(
        job(&s.unwrap(), name)["paused"],
        false,
        "resume reached {name}"
    );
    let audit = env.cmd(&["audit", name, "--config", config]);
    assert!(
        matches!(audit.status.code(), Some(0 | 1)) && !text(&audit).contains("no job named"),
        "audit on {name}: {}",
        text(&audit)
    );
    // The output directory is the job's own, inside the state directory.
    let out_dir = env.state_dir().join("output").join(name);
    wait_until("the kept output", LONG, || out_dir.is_dir().then_some(()));

    for bad in ["..", ".", "a/b", "-x", "a\u{202E}b", "a\u{7}b"] {
        let other = Env::new(&format!(
            "[[job]]\nname = {}\nschedule = \"@yearly\"\nshell = \"true\"\nkeep_output = 1\n",
            toml_str(bad)
        ));
        let out = other.cmd(&["check", "--config", other.config.to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{bad:?} accepted: {}",
            text(&out)
        );
        assert!(
            text(&out).contains("key \"name\""),
            "{bad:?}: {}",
            text(&out)
        );
    }
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.into()).to_string()
}

/// A 30-year audit of a per-second job is refused with an error naming the
/// limit and the request's fields, and the supervisor does not grow.
#[test]
fn a_thirty_year_audit_is_refused_and_the_supervisor_stays_small() {
    let env = Env::new("[[job]]\nname = \"tick\"\nschedule = \"* * * * * *\"\nshell = \"true\"\n");
    let sup = env.start();
    env.wait_ok(LONG);
    let before = rss_kib(sup.pid());
    let config = env.config.to_str().unwrap();
    for _ in 0..3 {
        let out = env.cmd(&[
            "audit",
            "tick",
            "--from",
            "1996-01-01T00:00:00Z",
            "--to",
            "2026-01-01T00:00:00Z",
            "--config",
            config,
        ]);
        let said = text(&out);
        assert_eq!(out.status.code(), Some(1), "{said}");
        assert!(
            said.contains("100000") && said.contains("from") && said.contains("to"),
            "the refusal names the limit and the fields: {said}"
        );
    }
    let after = rss_kib(sup.pid());
    // Generous: the unbounded audit grew it by about a gigabyte.
    assert!(
        after < before + 64 * 1024,
        "supervisor RSS grew from {before} KiB to {after} KiB"
    );
    // An ordinary audit still works.
    let out = env.cmd(&["audit", "tick", "--config", config]);
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}", text(&out));
}

/// Connections of a reader (uid 65534) that fill every reader slot, and
/// reconnect as soon as they are cut, do not make root's control calls fail.
#[test]
fn readers_holding_every_slot_do_not_starve_control_calls() {
    use std::os::unix::fs::PermissionsExt;
    if !is_root() {
        skip("connecting as another uid needs root");
        return;
    }
    let env = Env::new("[[job]]\nname = \"tick\"\nschedule = \"@yearly\"\nshell = \"true\"\n");
    // The reader must reach the socket: the test directory is 0700.
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let _sup = env.start();
    env.wait_ok(LONG);
    let sock = env.state_dir().join("cronwarden.sock");
    let stop = Arc::new(AtomicBool::new(false));
    let saturated = Arc::new(AtomicBool::new(false));
    let holder = {
        let (stop, saturated) = (stop.clone(), saturated.clone());
        std::thread::spawn(move || hold_as_reader(&sock, 300, &stop, &saturated))
    };
    wait_until("the reader filling every reader slot (a 503)", LONG, || {
        saturated.load(Ordering::Relaxed).then_some(())
    });
    let config = env.config.to_str().unwrap();
    let mut failed = vec![];
    for i in 0..10 {
        for op in ["pause", "resume"] {
            let out = env.cmd(&[op, "tick", "--config", config]);
            if !out.status.success() {
                failed.push(format!("{op} #{i}: {}", text(&out)));
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    holder.join().unwrap();
    assert!(failed.is_empty(), "control calls failed: {failed:#?}");
}

/// Keeps `n` connections open to `sock` as uid 65534 (this thread only:
/// the raw syscall changes one thread's credentials), reconnecting each
/// that is closed, until `stop`. Sets `saturated` on a 503.
fn hold_as_reader(sock: &std::path::Path, n: usize, stop: &AtomicBool, saturated: &AtomicBool) {
    let keep = u32::MAX as libc::c_long;
    // SAFETY: a raw setresuid changes this thread's effective uid only; it
    // is the thread's last act that needs it, and the thread ends after.
    let r = unsafe { libc::syscall(libc::SYS_setresuid, keep, 65534 as libc::c_long, keep) };
    assert_eq!(r, 0, "setresuid: {}", std::io::Error::last_os_error());
    let connect = || {
        let s = UnixStream::connect(sock).ok()?;
        s.set_nonblocking(true).ok()?;
        Some(s)
    };
    let mut conns: Vec<Option<UnixStream>> = (0..n).map(|_| connect()).collect();
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        for c in conns.iter_mut() {
            let closed = match c {
                None => true,
                Some(s) => match s.read(&mut buf) {
                    Ok(0) => true,
                    Ok(k) => {
                        if buf[..k].starts_with(b"HTTP/1.1 503") {
                            saturated.store(true, Ordering::Relaxed);
                        }
                        true
                    }
                    Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                },
            };
            if closed {
                *c = connect();
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// After kill -9 of the supervisor, while its worker stops a run that
/// ignores SIGTERM, `status` names the worker as the lock's holder, and a
/// new `run` waits for it (saying so) instead of failing at once.
#[test]
fn after_kill_9_the_real_lock_holder_is_named_and_run_waits_for_it() {
    let env = Env::new(
        "[[job]]\nname = \"stubborn\"\nschedule = \"@yearly\"\n\
         shell = \"trap '' TERM; sleep 300\"\nkill_grace = \"20s\"\n",
    );
    let mut sup = env.start();
    let s = env.wait_ok(LONG);
    let worker = s["worker"]["pid"].as_u64().unwrap() as u32;
    let config = env.config.to_str().unwrap();
    let out = env.cmd(&["trigger", "stubborn", "--config", config]);
    assert!(out.status.success(), "{}", text(&out));
    wait_until("the run started", LONG, || {
        let (_, s) = env.status();
        (job(&s?, "stubborn")["running"].as_array()?.len() == 1).then_some(())
    });
    let dead = sup.pid();
    kill(dead, Signal::SIGKILL);
    sup.child.wait().unwrap();
    // The worker outlives its supervisor while it stops the run.
    assert!(alive(worker), "the worker went at once; nothing to test");
    let out = env.cmd(&["status", "--config", config]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(3), "{said}");
    assert!(
        said.contains(&format!("held by pid {worker}"))
            && said.contains(&format!("cronwarden pid {dead}")),
        "status names worker {worker}, left over from {dead}: {said}"
    );
    let next = env.start();
    wait_until("the new run saying that it waits", LONG, || {
        next.log().contains("waiting up to").then_some(())
    });
    let s = env.wait_ok(LONG);
    assert_eq!(s["supervisor"]["pid"].as_u64(), Some(next.pid() as u64));
    assert!(!alive(worker), "the old worker is gone");
}

/// A second instance configured with the first's socket path refuses to
/// start (the first stopped or not) naming the first's pid, and a client
/// of a config whose instance is not the one answering says so, exit 3,
/// and changes nothing.
#[test]
fn another_instances_socket_is_never_taken_nor_believed() {
    let first = Env::new("[[job]]\nname = \"tick\"\nschedule = \"@yearly\"\nshell = \"true\"\n");
    let sup = first.start();
    first.wait_ok(LONG);
    let sock = first.state_dir().join("cronwarden.sock");
    let second = Env::new(&format!(
        "socket = {}\n[[job]]\nname = \"tick\"\nschedule = \"@yearly\"\nshell = \"true\"\n",
        toml_str(sock.to_str().unwrap())
    ));
    for stopped in [false, true] {
        if stopped {
            kill(sup.pid(), Signal::SIGSTOP);
        }
        let mut other = second.start();
        let code = wait_until("the second instance to exit", LONG, || {
            other.child.try_wait().unwrap()
        });
        if stopped {
            kill(sup.pid(), Signal::SIGCONT);
        }
        let log = other.log();
        assert_eq!(code.code(), Some(1), "stopped={stopped}: {log}");
        assert!(
            log.contains("served by another live process")
                && log.contains(&format!("pid {}", sup.pid())),
            "stopped={stopped}: the refusal names the first instance: {log}"
        );
        let (code, s) = first.status();
        assert_eq!(code, 0, "the first instance keeps its socket");
        assert_eq!(
            s.unwrap()["supervisor"]["pid"].as_u64(),
            Some(sup.pid() as u64)
        );
    }
    // The second config's clients reach the first instance: not theirs.
    let config = second.config.to_str().unwrap();
    for args in [vec!["status"], vec!["jobs"], vec!["pause", "tick"]] {
        let mut a = args.clone();
        a.extend(["--config", config]);
        let out = second.cmd(&a);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", text(&out));
        assert!(
            text(&out).contains("another cronwarden instance"),
            "{args:?}: {}",
            text(&out)
        );
    }
    let (_, s) = first.status();
    assert_eq!(
        job(&s.unwrap(), "tick")["paused"],
        false,
        "the refused pause did nothing"
    );
}
