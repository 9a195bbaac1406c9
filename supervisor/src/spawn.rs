//! Starting the worker, and the process-wide settings that make the
//! supervisor its reaper. Every `unsafe` of the supervisor lives here.
//!
//! Reaping has one owner: the supervisor's SIGCHLD loop (`waitpid(-1)`).
//! The worker is spawned with `std::process` (never `tokio::process`, whose
//! own reaper would race the catch-all `waitpid(-1)` for the worker's exit
//! status). As a child subreaper the supervisor also inherits the jobs
//! orphaned by a dead worker and reaps them in the same loop.

use std::{
    os::{
        fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::process::CommandExt,
    },
    path::Path,
    process::{Command, Stdio},
};

use cronwarden_shared::proc_identity::{self, NotSent, ProcIdentity};
use nix::unistd::Pid;

/// The descriptor numbers the worker finds its pipes on.
pub const WORKER_EVENTS_FD: i32 = 3;
pub const WORKER_LOCK_FD: i32 = 4;

/// Makes this process the reaper of its orphaned descendants.
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer flag and
    // touches no memory of ours.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A started worker: its pid and the supervisor's ends of its pipes.
pub struct Spawned {
    pub pid: u32,
    pub events: OwnedFd,
    pub commands: OwnedFd,
}

/// Starts `exe worker ...` with the event pipe's write end on fd 3 and the
/// lock on fd 4, in its own process group (a terminal's Ctrl-C reaches only
/// the supervisor, which then stops the worker in order), with a
/// parent-death signal so it never outlives the supervisor.
pub fn spawn_worker(
    exe: &Path,
    lock: BorrowedFd<'_>,
    first_run_id: u64,
    log_json: bool,
    log_files: Option<(&Path, u32)>,
) -> std::io::Result<Spawned> {
    let (ev_read, ev_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let ev_write_raw = ev_write.as_raw_fd();
    let lock_raw = lock.as_raw_fd();
    let parent = std::process::id() as i32;
    let mut cmd = Command::new(exe);
    cmd.arg("worker")
        .arg("--events-fd")
        .arg(WORKER_EVENTS_FD.to_string())
        .arg("--lock-fd")
        .arg(WORKER_LOCK_FD.to_string())
        .arg("--first-run-id")
        .arg(first_run_id.to_string())
        .arg("--log-format")
        .arg(if log_json { "json" } else { "text" })
        .args(log_files.into_iter().flat_map(|(dir, keep)| {
            [
                std::ffi::OsString::from("--log-dir"),
                dir.as_os_str().to_owned(),
                "--log-retention".into(),
                keep.to_string().into(),
            ]
        }))
        // systemd talks to the supervisor only; the worker and jobs must
        // not answer on its behalf.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .process_group(0);
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (fcntl, dup2, prctl, getppid, kill via libc); it
    // allocates nothing and takes no locks.
    unsafe {
        cmd.pre_exec(move || {
            // Either source may itself be fd 3 or 4 (the lock is often fd
            // 3), so copy both out of the way first; the temporaries are
            // close-on-exec and vanish at exec. dup2 onto the fixed numbers
            // clears close-on-exec for those copies only.
            let ev = libc::fcntl(ev_write_raw, libc::F_DUPFD_CLOEXEC, 10);
            let lk = libc::fcntl(lock_raw, libc::F_DUPFD_CLOEXEC, 10);
            if ev < 0
                || lk < 0
                || libc::dup2(ev, WORKER_EVENTS_FD) < 0
                || libc::dup2(lk, WORKER_LOCK_FD) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The supervisor may have died between fork and prctl.
            if libc::getppid() != parent {
                libc::kill(libc::getpid(), libc::SIGTERM);
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    drop(ev_write);
    let stdin = child.stdin.take().expect("stdin is piped");
    // The Child is dropped without waiting: the SIGCHLD loop reaps it.
    Ok(Spawned {
        pid: child.id(),
        events: ev_read,
        commands: OwnedFd::from(stdin),
    })
}

/// Sends `sig` to a process; ESRCH (already gone) is not an error here.
/// Only for the worker, our own child: its pid cannot be reused before
/// this loop reaps it, and the loop forgets it when it does.
pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), sig);
}

/// SIGKILLs `pid` through a pidfd, only if `still_it` (asked after the
/// pidfd pins the process) says it is the process meant: a pid reused
/// meanwhile is never signalled. Says whether it signalled.
pub fn kill_pinned(pid: u32, still_it: impl FnOnce() -> bool) -> bool {
    // SAFETY: plain system calls with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return false;
    }
    // SAFETY: the kernel returned a new descriptor, ours alone.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    if !still_it() {
        return false;
    }
    // SAFETY: a plain system call; a null siginfo means "as kill(2)".
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    r == 0
}

/// Sends `sig` to the process group `leader` leads, if it is still that
/// process (see [`proc_identity::signal_group`]); logs why not otherwise.
pub fn signal_identified_group(leader: &ProcIdentity, sig: nix::sys::signal::Signal) -> bool {
    match proc_identity::signal_group(leader, sig) {
        Ok(()) => true,
        Err(why) => {
            tracing::warn!(
                pgid = leader.pid,
                "not signalling process group {}: {why}",
                leader.pid
            );
            false
        }
    }
}

/// Whether process group `pgid` is still one of ours: some process of the
/// group is a child of one of `parents` (the worker that ran the job, or
/// this supervisor, which inherits a dead worker's orphans). A group id
/// the kernel reused for someone else's process has no such member.
pub fn group_is_ours(pgid: u32, parents: &[u32]) -> bool {
    let ours = |pid: u32| {
        proc_identity::stat(pid).is_some_and(|s| s.pgrp == pgid && parents.contains(&s.ppid))
    };
    // The leader first (the common case); else any member left.
    ours(pgid)
        || std::fs::read_dir("/proc").is_ok_and(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .any(ours)
        })
}

/// Sends `sig` to the process group of run `run_id`, whose leader is
/// `pgid`, only if it is still that run's: by its leader's identity when
/// the supervisor recorded it (`leader`), and, when the leader has ended
/// or was never identified, by its members being children of `parents`
/// (see [`group_is_ours`]). Says whether it signalled. Never signals a
/// process or group the kernel has given to someone else since.
pub fn signal_run_group(
    run_id: Option<u64>,
    pgid: u32,
    leader: Option<&ProcIdentity>,
    parents: &[u32],
    sig: nix::sys::signal::Signal,
) -> bool {
    let run = run_id.map(|r| format!("run {r}")).unwrap_or("a run".into());
    if let Some(leader) = leader.filter(|l| l.pid == pgid) {
        match proc_identity::signal_group(leader, sig) {
            Ok(()) => return true,
            // The leader has ended; members may be left in the group.
            Err(NotSent::Gone) => {}
            Err(why) => {
                tracing::warn!(
                    pgid,
                    "not signalling process group {pgid}: it is no longer {run}'s: its leader {pid}: {why}",
                    pid = leader.pid
                );
                return false;
            }
        }
    }
    if !group_is_ours(pgid, parents) {
        tracing::warn!(
            pgid,
            "not signalling process group {pgid}: it is no longer {run}'s (it ended, or its id was reused)"
        );
        return false;
    }
    signal_group(pgid, sig);
    true
}

/// Sends `sig` to a process group, unchecked: for [`signal_run_group`]
/// once the group is known to be the run's.
fn signal_group(pgid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::killpg(Pid::from_raw(pgid as i32), sig);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_ours_only_with_a_member_whose_parent_is_ours() {
        // This test process leads no group of its own in general, but its
        // own group has it as a member, with its parent as ppid.
        let me = std::process::id();
        let s = proc_identity::stat(me).unwrap();
        let (ppid, pgrp) = (s.ppid, s.pgrp);
        assert!(group_is_ours(pgrp, &[ppid]));
        assert!(!group_is_ours(pgrp, &[me.wrapping_add(1_000_000)]));
        // No process has this group id.
        assert!(!group_is_ours(u32::MAX - 7, &[ppid]));
    }
}
