//! What a wedged run is doing, as `/proc` shows it: every process of its
//! group with its state (R/S/D/Z…), kernel wait channel and CPU time, so an
//! alert says "hung in D state (wchan nfs_wait_bit_killable)" rather than
//! just "skipped".

use std::fs;

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcInfo {
    pub pid: u32,
    pub ppid: u32,
    pub state: String,
    pub wchan: String,
    pub cpu_ms: u64,
    pub command: String,
}

pub(crate) fn ticks_per_second() -> u64 {
    // SAFETY: sysconf takes an integer and touches no memory of ours.
    match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        n if n > 0 => n as u64,
        _ => 100,
    }
}

/// Parses `/proc/<pid>/stat` into (ppid, state, pgid, cpu ticks, comm).
fn stat(pid: u32) -> Option<(u32, String, u32, u64, String)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s[open + 1..close].to_string();
    let f: Vec<&str> = s[close + 2..].split_whitespace().collect();
    // Fields after comm: state(0) ppid(1) pgrp(2) ... utime(11) stime(12).
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some((
        f.get(1)?.parse().ok()?,
        f.first()?.to_string(),
        f.get(2)?.parse().ok()?,
        ticks,
        comm,
    ))
}

/// How long ago a process that started `start_ticks` after boot (its
/// `/proc/<pid>/stat` starttime) started, in milliseconds; 0 if unknown.
pub fn age_ms(start_ticks: u64) -> u64 {
    let Ok(now) = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME) else {
        return 0;
    };
    let now_ms = now.tv_sec() as u64 * 1000 + now.tv_nsec() as u64 / 1_000_000;
    now_ms.saturating_sub(start_ticks * 1000 / ticks_per_second())
}

/// Every live process whose process group is `pgid`, bounded to 64.
pub fn process_group(pgid: u32) -> Vec<ProcInfo> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return vec![];
    };
    let hz = ticks_per_second();
    let mut out = vec![];
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Some((ppid, state, pg, ticks, comm)) = stat(pid) else {
            continue;
        };
        if pg != pgid {
            continue;
        }
        let wchan = fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
        out.push(ProcInfo {
            pid,
            ppid,
            state,
            wchan: if wchan == "0" { String::new() } else { wchan },
            cpu_ms: ticks * 1000 / hz,
            command: comm,
        });
        if out.len() >= 64 {
            break;
        }
    }
    out.sort_by_key(|p| p.pid);
    out
}

/// Processes (other than `except`) holding any of the pipes `inodes` open:
/// who keeps a finished job's output open. Bounded to 4096 processes.
pub fn pipe_holders(inodes: &[u64], except: Option<u32>) -> Vec<(u32, String)> {
    if inodes.is_empty() {
        return vec![];
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("pipe:[{i}]")).collect();
    let Ok(dir) = fs::read_dir("/proc") else {
        return vec![];
    };
    let mut out = vec![];
    for entry in dir.flatten().take(4096) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if Some(pid) == except {
            continue;
        }
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            fs::read_link(fd.path())
                .is_ok_and(|t| wanted.iter().any(|w| t.as_os_str() == w.as_str()))
        });
        if holds {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            out.push((pid, comm.trim().to_string()));
        }
    }
    out
}

/// One line for a person: "sleep 4711 in state S (wchan hrtimer_nanosleep)".
pub fn describe(procs: &[ProcInfo]) -> String {
    if procs.is_empty() {
        return "no process of its group is left".into();
    }
    let parts: Vec<String> = procs
        .iter()
        .take(4)
        .map(|p| {
            let wchan = if p.wchan.is_empty() {
                String::new()
            } else {
                format!(", wchan {}", p.wchan)
            };
            format!(
                "{} {} in state {}{wchan}, {}ms CPU",
                p.command, p.pid, p.state, p.cpu_ms
            )
        })
        .collect();
    let more = if procs.len() > 4 {
        format!(" (+{} more)", procs.len() - 4)
    } else {
        String::new()
    };
    format!("{}{more}", parts.join("; "))
}

/// What a run was doing at one moment: taken by the supervisor while the
/// run is still there (it nears or passes its timeout, or its worker just
/// died), because by the time its `timeout` or `lost` record arrives its
/// processes have been killed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    pub run_id: u64,
    pub pid: u32,
    pub taken_at: jiff::Timestamp,
    pub running_ms: u64,
    pub processes: Vec<ProcInfo>,
    pub pipe_holders: Vec<(u32, String)>,
    pub last_line: Option<String>,
    pub last_output_at: Option<jiff::Timestamp>,
}

impl Snapshot {
    /// Looks at a run in flight now; `worker` is left out of the pipe
    /// holders (it reads the pipes).
    pub fn take(
        r: &cronwarden_shared::status::RunningInfo,
        worker: Option<u32>,
        now: jiff::Timestamp,
    ) -> Snapshot {
        Snapshot {
            run_id: r.run_id,
            pid: r.pid,
            taken_at: now,
            running_ms: now.duration_since(r.started_at).as_millis().max(0) as u64,
            processes: process_group(r.pid),
            pipe_holders: pipe_holders(&r.pipes, worker),
            last_line: r.last_line.clone(),
            last_output_at: r.last_output_at,
        }
    }

    /// Looks at the group `pgid` of a run known only from its processes
    /// (its worker died before reporting it): no pipes, no output seen.
    pub fn of_group(run_id: u64, pgid: u32, running_ms: u64, now: jiff::Timestamp) -> Snapshot {
        Snapshot {
            run_id,
            pid: pgid,
            taken_at: now,
            running_ms,
            processes: process_group(pgid),
            pipe_holders: vec![],
            last_line: None,
            last_output_at: None,
        }
    }

    /// One line for a person: the processes, who holds the output, the
    /// last output line.
    pub fn describe(&self) -> String {
        let held = if self.pipe_holders.is_empty() {
            String::new()
        } else {
            let hs: Vec<String> = self
                .pipe_holders
                .iter()
                .map(|(p, c)| format!("{c} {p}"))
                .collect();
            format!("; its output held open by {}", hs.join(", "))
        };
        let last = match &self.last_line {
            Some(line) => format!("; last output {line:?}"),
            None => "; no output".into(),
        };
        format!(
            "{} after {}ms: {}{held}{last}",
            self.taken_at,
            self.running_ms,
            describe(&self.processes)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_sleeping_group() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id();
        // Between fork and exec the child is still a copy of this test
        // binary, and right after exec it may be paging `sleep` in (state
        // D): wait (bounded) until the group shows it asleep.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let procs = loop {
            let procs = process_group(pid);
            let asleep = procs.len() == 1 && procs[0].command == "sleep" && procs[0].state == "S";
            if asleep || std::time::Instant::now() >= deadline {
                break procs;
            }
            std::thread::yield_now();
        };
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(procs.len(), 1, "{procs:?}");
        assert_eq!(procs[0].command, "sleep");
        assert_eq!(procs[0].state, "S", "{procs:?}");
        assert!(describe(&procs).contains(&format!("sleep {pid} in state")));
    }
}
