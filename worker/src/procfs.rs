//! Reading /proc about a run's processes: who is in a process group, and
//! who holds a pipe. Blocking reads: callers run them off the loop.

use std::path::Path;

/// (process group, session) from the text of /proc/PID/stat.
pub(crate) fn group_and_session(stat: &str) -> Option<(i32, i32)> {
    // The name (field 2) may hold spaces and parentheses: fields resume
    // after its last ')'. Then: state, ppid, pgrp, session.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(2);
    Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
}

/// Whether `pid` is a zombie (dead, not yet reaped); `false` when gone.
pub(crate) fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.get(s.rfind(')')? + 1..)?;
            rest.split_whitespace().next().map(|st| st == "Z")
        })
        .unwrap_or(false)
}

/// A process's start time (clock ticks since boot), field 22 of its stat.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    use std::io::Read;
    // One read into a buffer (no size lookup, no second read): it is made
    // at every start (issue 18). The line is 52 numbers and a name of at
    // most 64 bytes, which need not be UTF-8.
    let mut buf = [0u8; 2048];
    let mut f = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let n = f.read(&mut buf).ok()?;
    start_time_in(&String::from_utf8_lossy(&buf[..n]))
}

fn start_time_in(stat: &str) -> Option<u64> {
    // After the name: field 3 (state) is the first; 22 is the 20th.
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
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
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| group_and_session(&s))
                .is_some_and(|(g, _)| g == pgid as i32)
        })
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
    fn reads_group_and_session_past_an_odd_name() {
        let stat = "4242 (a) b (c)) S 1 4240 4239 0 -1 4194560 0 0";
        assert_eq!(group_and_session(stat), Some((4240, 4239)));
        assert_eq!(group_and_session("garbage"), None);
    }

    #[test]
    fn reads_the_start_time() {
        let stat = "4242 (a b) S 1 4240 4239 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(start_time_in(stat), Some(987_654));
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
    fn reads_pipe_inodes() {
        assert_eq!(pipe_inode(Path::new("pipe:[123]")), Some(123));
        assert_eq!(pipe_inode(Path::new("socket:[123]")), None);
        assert_eq!(pipe_inode(Path::new("/dev/null")), None);
    }
}
