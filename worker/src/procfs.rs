//! Reading /proc about a run's processes: who is in a process group, and
//! who holds a pipe. Blocking reads: callers run them off the loop.

use std::path::Path;

use cronwarden_shared::proc_identity;

/// Whether `pid` is a zombie (dead, not yet reaped); `false` when gone.
pub(crate) fn is_zombie(pid: u32) -> bool {
    proc_identity::stat(pid).is_some_and(|s| s.state == 'Z')
}

/// A process's start time (clock ticks since boot), field 22 of its stat.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    proc_identity::stat(pid).map(|s| s.start_ticks)
}

/// Kills process group `pgid` if its leader is still the process that
/// started at `leader_start` (a reused pid is never signalled; a group
/// whose leader is gone cannot be told apart, and is left). Returns how
/// many processes were in it.
pub(crate) fn kill_group_if_same(pgid: u32, leader_start: u64) -> usize {
    if pgid <= 1 || start_time(pgid) != Some(leader_start) {
        return 0;
    }
    let members = group_members(pgid).len();
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    members
}

/// Every live process in process group `pgid`.
pub(crate) fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| proc_identity::stat(pid).is_some_and(|s| s.pgrp == pgid))
        .collect()
}

/// The first of `pids` that holds one of the pipes (by inode), as
/// `PID (name)`.
pub(crate) fn pipe_holder(pids: &[u32], pipes: &[u64]) -> Option<String> {
    if pipes.is_empty() {
        return None;
    }
    pids.iter().copied().find_map(|pid| {
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .ok()
                .and_then(|t| pipe_inode(&t))
                .is_some_and(|ino| pipes.contains(&ino))
        });
        holds.then(|| {
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            format!("{pid} ({})", name.trim())
        })
    })
}

/// Kills every process on the host that holds one of `pipes` (by inode),
/// each through a pidfd taken before its descriptors are read, so the
/// process found holding the pipe is the one signalled. Returns them as
/// `PID (name)`. A scan of all of /proc: off the loop.
pub(crate) fn kill_pipe_holders(pipes: &[u64]) -> Vec<String> {
    if pipes.is_empty() {
        return vec![];
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    let me = std::process::id();
    let pids: Vec<u32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| *p != me)
        .collect();
    let mut killed = vec![];
    for pid in pids {
        let Ok(pidfd) = crate::sys::pidfd_open(pid) else {
            continue;
        };
        if let Some(name) = pipe_holder(&[pid], pipes) {
            use std::os::fd::AsFd;
            if crate::sys::pidfd_signal(pidfd.as_fd(), nix::sys::signal::Signal::SIGKILL).is_ok() {
                killed.push(name);
            }
        }
    }
    killed
}

/// The inode of a descriptor's `pipe:[INODE]` link target.
fn pipe_inode(target: &Path) -> Option<u64> {
    target
        .to_str()?
        .strip_prefix("pipe:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_start_time() {
        // Ours, against field 22 read another way.
        let raw = std::fs::read(format!("/proc/{}/stat", std::process::id())).unwrap();
        let close = raw.iter().rposition(|b| *b == b')').unwrap();
        let field22: u64 = std::str::from_utf8(&raw[close + 2..])
            .unwrap()
            .split(' ')
            .nth(19)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(start_time(std::process::id()), Some(field22));
    }

    #[test]
    fn a_group_holds_its_leader_and_its_members_only() {
        use std::os::unix::process::CommandExt;
        let mut leader = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = leader.id();
        let mut member = std::process::Command::new("sleep")
            .arg("30")
            .process_group(pgid as i32)
            .spawn()
            .unwrap();
        let mut found = group_members(pgid);
        found.sort_unstable();
        let mut want = vec![pgid, member.id()];
        want.sort_unstable();
        for p in [&mut leader, &mut member] {
            p.kill().unwrap();
            p.wait().unwrap();
        }
        assert_eq!(found, want);
    }

    #[test]
    fn a_killed_unreaped_child_is_a_zombie_until_reaped() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(!is_zombie(pid), "a live process is no zombie");
        child.kill().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !is_zombie(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "never became a zombie"
            );
            std::thread::yield_now();
        }
        child.wait().unwrap();
        assert!(!is_zombie(pid), "a reaped process is gone");
    }

    #[test]
    fn reads_pipe_inodes() {
        assert_eq!(pipe_inode(Path::new("pipe:[123]")), Some(123));
        assert_eq!(pipe_inode(Path::new("socket:[123]")), None);
        assert_eq!(pipe_inode(Path::new("/dev/null")), None);
    }
}
