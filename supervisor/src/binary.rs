//! Whether the executable this supervisor runs was replaced on disk.
//!
//! An upgrade replaces the file (`install`, a package manager: a new
//! inode under the same path). The running supervisor keeps its old code,
//! but every worker it starts from then on execs the path, so it runs the
//! new binary under the old supervisor until the service is restarted. The
//! status says so ([`cronwarden_shared::status::SupervisorInfo`]'s
//! `binary_replaced`), so an operator knows a restart is due.
//!
//! The loop stats the path once a tick ([`Watch::look`]); the comparison
//! ([`judge`]) is pure.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// What identifies the file's contents well enough: a replacement is a
/// new inode (or the same inode rewritten, a new mtime).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    pub dev: u64,
    pub ino: u64,
    pub mtime_ns: i128,
}

impl Identity {
    fn of(path: &Path) -> std::io::Result<Identity> {
        let m = std::fs::metadata(path)?;
        Ok(Identity {
            dev: m.dev(),
            ino: m.ino(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }
}

/// The executable as it was when the supervisor started.
#[derive(Debug)]
pub(crate) struct Watch {
    path: PathBuf,
    at_start: Identity,
}

impl Watch {
    /// Watches `exe` (the path `/proc/self/exe` named at start); `None`
    /// when it cannot be read now (then there is nothing to compare with).
    pub(crate) fn start(exe: &Path) -> Option<Watch> {
        let at_start = Identity::of(exe).ok()?;
        Some(Watch {
            path: exe.to_path_buf(),
            at_start,
        })
    }

    /// What changed since start, in words; `None` when nothing did.
    pub(crate) fn look(&self) -> Option<String> {
        judge(&self.path, self.at_start, Identity::of(&self.path).ok())
    }
}

/// What changed between the executable at start and `now` (`None`: the
/// path is gone), for the status.
pub(crate) fn judge(path: &Path, at_start: Identity, now: Option<Identity>) -> Option<String> {
    let path = path.display();
    match now {
        None => Some(format!(
            "{path} was removed since this supervisor started; \
             restart the service before its worker next restarts"
        )),
        Some(now) if now == at_start => None,
        Some(_) => Some(format!(
            "{path} was replaced since this supervisor started: it runs the old \
             version, and a worker restarted now runs the new one; restart the service"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: Identity = Identity {
        dev: 1,
        ino: 10,
        mtime_ns: 5,
    };

    #[test]
    fn only_a_changed_or_missing_file_is_reported() {
        let p = Path::new("/usr/bin/cronwarden");
        assert_eq!(judge(p, START, Some(START)), None);
        let new_inode = Identity { ino: 11, ..START };
        assert!(judge(p, START, Some(new_inode))
            .unwrap()
            .contains("/usr/bin/cronwarden was replaced"));
        let rewritten = Identity {
            mtime_ns: 6,
            ..START
        };
        assert!(judge(p, START, Some(rewritten)).is_some());
        assert!(judge(p, START, None).unwrap().contains("was removed"));
    }

    #[test]
    fn a_replaced_file_is_seen() {
        let d = tempfile::tempdir().unwrap();
        let exe = d.path().join("cronwarden");
        std::fs::write(&exe, "old").unwrap();
        let w = Watch::start(&exe).unwrap();
        assert_eq!(w.look(), None);
        // As `install` does: a new file renamed over the old path.
        let new = d.path().join("cronwarden.new");
        std::fs::write(&new, "new").unwrap();
        std::fs::rename(&new, &exe).unwrap();
        assert!(w.look().is_some());
    }
}
