//! Which process is which. A pid names a process only until that process
//! is reaped; then the kernel may hand the number to anyone. A pid together
//! with the process's start time (field 22 of `/proc/<pid>/stat`, clock
//! ticks since boot) names one process for the life of the machine.
//!
//! Both roles record a process's [`ProcIdentity`] when they first see it
//! and check it again right before signalling the process or the group it
//! leads ([`signal`], [`signal_group`]), so a number reused by an unrelated
//! process since is never signalled. The check and the signal are two
//! system calls; between them the process could only be replaced if it
//! were reaped in that instant, which its reaper (the caller's own loop,
//! for the supervisor's worker and orphans, and the runner for its runs)
//! does not do while it signals.
//!
//! I/O: reads `/proc/<pid>/stat`; sends signals.

use std::fmt;

use nix::{sys::signal::Signal, unistd::Pid};

/// What `/proc/<pid>/stat` says about a process, as far as identity goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// The one-letter state (`R`, `S`, `Z`, …).
    pub state: char,
    pub ppid: u32,
    pub pgrp: u32,
    /// When it started, in clock ticks since boot.
    pub start_ticks: u64,
}

/// Reads `/proc/<pid>/stat`; `None` when there is no such process (or it
/// cannot be read). One read into a buffer (no size lookup, no second
/// read): the worker reads it at every start (issue 18). The line is 52
/// numbers and a name of at most 64 bytes, which need not be UTF-8.
pub fn stat(pid: u32) -> Option<Stat> {
    use std::io::Read;
    let mut buf = [0u8; 2048];
    let mut f = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let n = f.read(&mut buf).ok()?;
    parse_stat(&String::from_utf8_lossy(&buf[..n]))
}

/// Parses a `/proc/<pid>/stat` line. The fields are counted after the last
/// `)`: the command name in between may hold spaces and parentheses.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = text.rsplit_once(')')?.1;
    // Fields 3 (state) onward; field 22 (starttime) is the 20th of them.
    let f: Vec<&str> = rest.split_whitespace().take(20).collect();
    if f.len() < 20 {
        return None;
    }
    Some(Stat {
        state: f[0].chars().next()?,
        ppid: f[1].parse().ok()?,
        pgrp: f[2].parse().ok()?,
        start_ticks: f[19].parse().ok()?,
    })
}

/// One process: its pid and when it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcIdentity {
    pub pid: u32,
    pub start_ticks: u64,
}

/// What became of a recorded process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Still there (perhaps a zombie), as it was.
    Same(Stat),
    /// No process has its pid.
    Gone,
    /// Another process has its pid now.
    Reused,
}

impl ProcIdentity {
    /// The identity of the process that has `pid` now.
    pub fn of(pid: u32) -> Option<ProcIdentity> {
        stat(pid).map(|s| ProcIdentity {
            pid,
            start_ticks: s.start_ticks,
        })
    }

    /// Whether the process is still the one recorded.
    pub fn check(&self) -> Check {
        match stat(self.pid) {
            None => Check::Gone,
            Some(s) if s.start_ticks == self.start_ticks => Check::Same(s),
            Some(_) => Check::Reused,
        }
    }
}

/// Why a signal was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotSent {
    /// The process has ended (and been reaped).
    Gone,
    /// Its pid belongs to another process now.
    Reused,
    /// It no longer leads the group it led (it moved to another).
    NotLeader,
    /// The kernel refused the signal (`errno`).
    Refused(i32),
}

impl fmt::Display for NotSent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotSent::Gone => f.write_str("it has ended"),
            NotSent::Reused => f.write_str("its pid now belongs to another process"),
            NotSent::NotLeader => f.write_str("it no longer leads its process group"),
            NotSent::Refused(errno) => write!(
                f,
                "the kernel refused the signal: {}",
                std::io::Error::from_raw_os_error(*errno)
            ),
        }
    }
}

/// Sends `sig` to `id` if it is still that process.
pub fn signal(id: &ProcIdentity, sig: Signal) -> Result<(), NotSent> {
    match id.check() {
        Check::Gone => Err(NotSent::Gone),
        Check::Reused => Err(NotSent::Reused),
        Check::Same(_) => nix::sys::signal::kill(Pid::from_raw(id.pid as i32), sig)
            .map_err(|e| NotSent::Refused(e as i32)),
    }
}

/// Sends `sig` to the process group `leader` leads, if `leader` is still
/// that process and still leads it. A group's id is its leader's pid, and
/// the kernel gives no process that number while the group has a member,
/// so a leader that is still there (even a zombie) vouches for its group.
pub fn signal_group(leader: &ProcIdentity, sig: Signal) -> Result<(), NotSent> {
    match leader.check() {
        Check::Gone => Err(NotSent::Gone),
        Check::Reused => Err(NotSent::Reused),
        Check::Same(s) if s.pgrp != leader.pid => Err(NotSent::NotLeader),
        Check::Same(_) => nix::sys::signal::killpg(Pid::from_raw(leader.pid as i32), sig)
            .map_err(|e| NotSent::Refused(e as i32)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn a_stat_line_is_read_after_the_last_parenthesis() {
        let line =
            "4242 (a (b) c) S 17 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 1 2 3";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                state: 'S',
                ppid: 17,
                pgrp: 4242,
                start_ticks: 987654
            })
        );
        assert_eq!(parse_stat("4242 (x) S 1 2"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn a_process_keeps_its_identity_until_it_is_reaped() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let id = ProcIdentity::of(child.id()).unwrap();
        assert!(matches!(id.check(), Check::Same(s) if s.pgrp == id.pid));
        // Another start time under the same pid is another process.
        let other = ProcIdentity {
            start_ticks: id.start_ticks + 1,
            ..id
        };
        assert_eq!(other.check(), Check::Reused);
        assert_eq!(signal_group(&other, Signal::SIGKILL), Err(NotSent::Reused));
        assert_eq!(signal(&other, Signal::SIGKILL), Err(NotSent::Reused));
        assert!(matches!(id.check(), Check::Same(_)), "still alive");
        // The real one is signalled; a zombie is still itself.
        assert_eq!(signal_group(&id, Signal::SIGKILL), Ok(()));
        child.wait().unwrap();
        assert_eq!(id.check(), Check::Gone);
        assert_eq!(signal(&id, Signal::SIGKILL), Err(NotSent::Gone));
    }

    #[test]
    fn a_process_that_leads_no_group_is_not_signalled_as_a_group() {
        // This test process is a member of a group it does not lead (the
        // harness's) in general; if it does lead one, there is nothing to
        // check here.
        let me = ProcIdentity::of(std::process::id()).unwrap();
        if stat(me.pid).unwrap().pgrp != me.pid {
            assert_eq!(signal_group(&me, Signal::SIGCONT), Err(NotSent::NotLeader));
        }
    }
}
