//! The single-instance lock: `flock` on `<state_dir>/cronwarden.lock`.
//!
//! The supervisor takes it and the worker inherits the descriptor, so no
//! second scheduler can start on the same state while either is alive. The
//! file holds the holder's pid, version, socket and start time as JSON, so
//! a refused `run` (and `status`) can name the holder.
//!
//! The file names the supervisor that took the lock, but the descriptor
//! is shared with its worker: after the supervisor dies (kill -9), the
//! worker holds the lock while it stops its jobs. So a refusal checks that
//! the recorded holder is still alive and otherwise names the processes
//! that have the lock file open ([`open_by`]), and `run` waits a bounded
//! time for such an exiting generation ([`acquire_waiting`]).

use std::{
    fs::{File, OpenOptions},
    io::{Read, Seek, Write},
    os::{fd::AsFd, unix::fs::OpenOptionsExt},
    path::{Path, PathBuf},
};

use jiff::Timestamp;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

/// Who holds the lock, as written in the lock file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub version: String,
    pub socket: PathBuf,
    pub started_at: Timestamp,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot open lock file {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another cronwarden (pid {pid}, started {started_at}) already runs on {path}; stop it first or use another state_dir", pid = holder.pid, started_at = holder.started_at)]
    Held { path: PathBuf, holder: Holder },
    #[error("the lock {path} is held by {} left over from cronwarden pid {pid}, which has exited (its worker stops its jobs, then exits); stop {} or wait", pids_text(.pids), pids_text(.pids), pid = recorded.pid)]
    HeldByLeftover {
        path: PathBuf,
        recorded: Holder,
        pids: Vec<u32>,
    },
    #[error("another process holds the lock {path} (holder unknown: {detail})")]
    HeldUnknown { path: PathBuf, detail: String },
    #[error("cannot write lock file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The held lock; dropping it releases it (unless a worker still holds the
/// inherited descriptor).
pub struct Lock {
    file: Flock<File>,
    pub path: PathBuf,
}

impl Lock {
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }
}

fn pids_text(pids: &[u32]) -> String {
    match pids {
        [] => "a process that cannot be identified (not visible to this user)".into(),
        [p] => format!("pid {p}"),
        ps => format!(
            "pids {}",
            ps.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Whether `pid` is a live process (a zombie is not: it holds nothing).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which may hold ')' itself.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// When `pid` started, from `/proc` (boot time plus its start in clock
/// ticks), to the second; `None` when it cannot be read.
fn process_start(pid: u32) -> Option<Timestamp> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22 (starttime); fields counted after the command name's ')'.
    let ticks: i64 = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()?;
    let boot: i64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let hz = i64::try_from(crate::forensics::ticks_per_second())
        .ok()?
        .max(1);
    Timestamp::from_second(boot.checked_add(ticks / hz)?).ok()
}

/// Whether the lock file's `holder` still runs: its pid lives and started
/// no later than the holder says it did (a recycled pid started later).
pub fn holder_alive(holder: &Holder) -> bool {
    alive(holder.pid)
        && process_start(holder.pid)
            .is_none_or(|started| started <= holder.started_at + jiff::SignedDuration::from_secs(2))
}

/// The processes other than this one that have `path` open: who really
/// holds the lock when its recorded holder has died. Only processes this
/// user may inspect are seen; the scan is bounded by the process table.
pub fn open_by(path: &Path) -> Vec<u32> {
    let Ok(target) = std::fs::canonicalize(path) else {
        return vec![];
    };
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    let mut pids: Vec<u32> = procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.flatten()
                    .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == target))
            })
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// Who holds the lock, for a refusal: the recorded holder when it lives,
/// else the processes that have the file open.
fn refusal(path: &Path) -> LockError {
    match read_holder(path) {
        Ok(holder) if holder_alive(&holder) => LockError::Held {
            path: path.into(),
            holder,
        },
        Ok(recorded) => LockError::HeldByLeftover {
            path: path.into(),
            recorded,
            pids: open_by(path),
        },
        Err(detail) => LockError::HeldUnknown {
            path: path.into(),
            detail,
        },
    }
}

/// [`acquire`], but when the lock is held by what is left of a dead
/// supervisor (its worker stopping its jobs), waits up to `wait` for it to
/// go, calling `waiting` once first so the wait is logged. A live holder is
/// refused at once: another supervisor does not go away by itself.
pub fn acquire_waiting(
    path: &Path,
    holder: &Holder,
    wait: std::time::Duration,
    waiting: impl FnOnce(&LockError),
) -> Result<Lock, LockError> {
    let deadline = std::time::Instant::now() + wait;
    let mut waiting = Some(waiting);
    loop {
        match acquire(path, holder) {
            Err(e @ LockError::HeldByLeftover { .. }) if std::time::Instant::now() < deadline => {
                if let Some(f) = waiting.take() {
                    f(&e);
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

/// Reads the lock file's holder without taking the lock.
pub fn read_holder(path: &Path) -> Result<Holder, String> {
    let mut s = String::new();
    File::open(path)
        .and_then(|mut f| f.read_to_string(&mut s))
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&s).map_err(|e| format!("unreadable lock file: {e}"))
}

/// Whether some process holds the lock right now.
pub fn is_held(path: &Path) -> bool {
    let Ok(f) = File::open(path) else {
        return false;
    };
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(_guard) => false,
        Err((_, errno)) => errno == nix::errno::Errno::EWOULDBLOCK,
    }
}

/// Takes the lock or says who holds it.
pub fn acquire(path: &Path, holder: &Holder) -> Result<Lock, LockError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o640)
        .open(path)
        .map_err(|source| LockError::Open {
            path: path.into(),
            source,
        })?;
    let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(f) => f,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Err(refusal(path)),
        Err((_, e)) => {
            return Err(LockError::Open {
                path: path.into(),
                source: e.into(),
            });
        }
    };
    let body = serde_json::to_vec(holder).expect("holder serializes");
    let write = (|| {
        file.set_len(0)?;
        file.rewind()?;
        file.write_all(&body)?;
        file.write_all(b"\n")?;
        file.sync_data()
    })();
    write.map_err(|source| LockError::Write {
        path: path.into(),
        source,
    })?;
    Ok(Lock {
        file,
        path: path.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cronwarden.lock");
        let holder = Holder {
            pid: std::process::id(),
            version: "0.1.0".into(),
            socket: dir.path().join("s.sock"),
            started_at: Timestamp::now(),
        };
        let lock = acquire(&path, &holder).unwrap();
        assert!(is_held(&path));
        match acquire(&path, &holder) {
            Err(LockError::Held { holder: h, .. }) => assert_eq!(h.pid, std::process::id()),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("second acquire succeeded"),
        }
        drop(lock);
        assert!(!is_held(&path));
        acquire(&path, &holder).unwrap();
    }

    #[test]
    fn a_recycled_pid_is_not_taken_for_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cronwarden.lock");
        let mut holder = Holder {
            pid: std::process::id(),
            version: "0.1.0".into(),
            socket: dir.path().join("s.sock"),
            started_at: Timestamp::now(),
        };
        assert!(holder_alive(&holder));
        // This pid, but a holder that started long before this process.
        holder.started_at = "2001-01-01T00:00:00Z".parse().unwrap();
        assert!(!holder_alive(&holder));
        let _lock = acquire(&path, &holder).unwrap();
        assert!(matches!(
            acquire(&path, &holder),
            Err(LockError::HeldByLeftover { .. })
        ));
    }

    #[test]
    fn a_lock_left_to_a_child_of_a_dead_holder_names_the_child() {
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cronwarden.lock");
        // A pid that has exited: a child, reaped.
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        gone.wait().unwrap();
        let holder = Holder {
            pid: gone.id(),
            version: "0.1.0".into(),
            socket: dir.path().join("s.sock"),
            started_at: Timestamp::now(),
        };
        let lock = acquire(&path, &holder).unwrap();
        // The lock's descriptor goes to a child (as to a worker), then
        // this process lets go of its own copy.
        let fd = lock.as_fd().as_raw_fd();
        let mut child = unsafe {
            use std::os::unix::process::CommandExt;
            std::process::Command::new("sleep")
                .arg("30")
                .pre_exec(move || {
                    let flags = libc::fcntl(fd, libc::F_GETFD);
                    libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
                    Ok(())
                })
                .spawn()
                .unwrap()
        };
        // As a kill -9 does: this copy closes without an unlock (dropping
        // the `Flock` would unlock the description the child shares).
        std::mem::forget(lock);
        // SAFETY: `fd` is ours and, the `Flock` forgotten, closed once.
        unsafe { libc::close(fd) };
        assert!(is_held(&path), "the child holds it");
        match acquire(&path, &holder) {
            Err(e @ LockError::HeldByLeftover { .. }) => {
                let LockError::HeldByLeftover { pids, .. } = &e else {
                    unreachable!()
                };
                assert_eq!(pids, &[child.id()]);
                assert!(
                    e.to_string().contains(&format!("pid {}", child.id())),
                    "{e}"
                );
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("acquired a held lock"),
        }
        // `run` waits for such a leftover: the child goes, the lock is free.
        let killer = std::thread::spawn(move || {
            child.kill().unwrap();
            child.wait().unwrap();
        });
        acquire_waiting(&path, &holder, std::time::Duration::from_secs(60), |_| {}).unwrap();
        killer.join().unwrap();
    }
}
