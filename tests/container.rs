//! cronwarden as a container's PID 1 (what `Containerfile` relies on): the
//! supervisor started as PID 1 of a new PID namespace (`unshare --pid
//! --fork --mount-proc`, as a container runtime does, without an image)
//! reaps every orphan its jobs leave (no zombie accumulates, no init shim
//! needed) and stops on SIGTERM (PID 1 gets no default signal actions: a
//! process that installs no handler would ignore it).

use std::{
    fs,
    process::{Command, Stdio},
    time::Duration,
};

use nix::sys::signal::Signal;

use crate::util::*;

const LONG: Duration = Duration::from_secs(60);

#[test]
fn as_pid_1_it_reaps_orphans_and_stops_on_sigterm() {
    const NAME: &str = "as_pid_1_it_reaps_orphans_and_stops_on_sigterm";
    if !nix::unistd::Uid::effective().is_root() {
        return skip(&format!("{NAME}: needs root for a PID namespace"));
    }
    let probe = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        return skip(&format!(
            "{NAME}: unshare --pid --fork --mount-proc does not work here"
        ));
    }
    let env = Env::new("");
    let d = env.dir.path().display().to_string();
    // Every second a job leaves a background child behind and exits: the
    // child is orphaned at once and outlives its run by a moment
    // (`leftovers = "keep"`: by default cronwarden kills what a run leaves).
    env.write_config(&format!(
        "[[job]]\nname = \"leaver\"\nschedule = \"* * * * * *\"\nleftovers = \"keep\"\n\
         shell = \"(sleep 0.2; echo $$ >> {d}/orphans) & echo started\"\n"
    ));
    let mut child = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--"])
        .arg(BIN)
        .args(["run", "--config", env.config.to_str().unwrap()])
        .current_dir(env.dir.path())
        .env("CRONWARDEN_LOG", "info")
        .stdin(Stdio::null())
        .stdout(fs::File::create(env.path("pid1.out")).unwrap())
        .stderr(fs::File::create(env.path("pid1.log")).unwrap())
        .spawn()
        .unwrap();
    let unshare = child.id();
    // The supervisor: unshare's only child, PID 1 inside the namespace.
    let pid1 = wait_until("the supervisor started as PID 1", LONG, || {
        processes()
            .into_iter()
            .find(|p| p.ppid == unshare)
            .map(|p| p.pid)
    });
    let nspid = fs::read_to_string(format!("/proc/{pid1}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:").map(str::to_string))
        .unwrap();
    assert!(
        nspid.split_whitespace().last() == Some("1"),
        "NSpid {nspid}"
    );
    env.wait_ok(LONG);
    wait_until("ten orphans came and went", LONG, || {
        (env.lines("orphans").len() >= 10).then_some(())
    });
    // Orphans are reparented to PID 1, which reaps them: at any moment at
    // most the few that just exited wait, never an accumulating pile.
    let zombies = || {
        processes()
            .into_iter()
            .filter(|p| p.state == "Z" && p.ppid == pid1)
            .count()
    };
    wait_until("no zombie under PID 1", LONG, || {
        (zombies() == 0).then_some(())
    });
    kill(pid1, Signal::SIGTERM);
    let status = wait_until("PID 1 stopped on SIGTERM", LONG, || {
        child.try_wait().unwrap()
    });
    assert!(
        status.success(),
        "exit {status:?}: {}",
        fs::read_to_string(env.path("pid1.log")).unwrap_or_default()
    );
    assert!(!alive(pid1));
}
