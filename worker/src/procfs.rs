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
    fn reads_pipe_inodes() {
        assert_eq!(pipe_inode(Path::new("pipe:[123]")), Some(123));
        assert_eq!(pipe_inode(Path::new("socket:[123]")), None);
        assert_eq!(pipe_inode(Path::new("/dev/null")), None);
    }
}
