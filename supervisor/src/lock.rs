//! The single-instance lock: `flock` on `<state_dir>/cronwarden.lock`.
//!
//! The supervisor takes it and the worker inherits the descriptor, so no
//! second scheduler can start on the same state while either is alive. The
//! file holds the holder's pid, version, socket and start time as JSON, so
//! a refused `run` (and `status`) can name the holder.

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
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            return Err(match read_holder(path) {
                Ok(holder) => LockError::Held {
                    path: path.into(),
                    holder,
                },
                Err(detail) => LockError::HeldUnknown {
                    path: path.into(),
                    detail,
                },
            })
        }
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
            pid: 4242,
            version: "0.1.0".into(),
            socket: dir.path().join("s.sock"),
            started_at: Timestamp::now(),
        };
        let lock = acquire(&path, &holder).unwrap();
        assert!(is_held(&path));
        match acquire(&path, &holder) {
            Err(LockError::Held { holder: h, .. }) => assert_eq!(h.pid, 4242),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("second acquire succeeded"),
        }
        drop(lock);
        assert!(!is_held(&path));
        acquire(&path, &holder).unwrap();
    }
}
