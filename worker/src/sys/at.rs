//! Files opened and directories made relative to a directory held open:
//! a run's cgroup files through its directory, its cgroup through the
//! instance's, so cgroupfs is not walked from `/` each time (issue 18:
//! each walk of the five or six components costs as much as the open
//! itself, and a run's start and end opened four such paths).

use std::{
    fs::File,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

use nix::{fcntl::OFlag, sys::stat::Mode};

/// `name` (one component, no `/`) in `dir`, opened with `flags`,
/// close-on-exec.
pub(crate) fn open_at(dir: BorrowedFd<'_>, name: &str, flags: OFlag) -> std::io::Result<File> {
    debug_assert!(!name.contains('/'), "{name}: not one component");
    let fd = nix::fcntl::openat(
        Some(dir.as_raw_fd()),
        name,
        flags | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: openat returned a new descriptor, owned by nobody else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Makes directory `name` (one component) in `dir`, mode 0755.
pub(crate) fn mkdir_at(dir: BorrowedFd<'_>, name: &str) -> std::io::Result<()> {
    debug_assert!(!name.contains('/'), "{name}: not one component");
    Ok(nix::sys::stat::mkdirat(
        Some(dir.as_raw_fd()),
        name,
        Mode::from_bits_truncate(0o755),
    )?)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    #[test]
    fn opens_and_makes_relative_to_the_directory_held() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = File::open(tmp.path()).unwrap();
        let dir = std::os::fd::AsFd::as_fd(&dir);
        mkdir_at(dir, "sub").unwrap();
        assert!(tmp.path().join("sub").is_dir());
        let e = mkdir_at(dir, "sub").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        let sub = open_at(dir, "sub", OFlag::O_RDONLY | OFlag::O_DIRECTORY).unwrap();
        let sub = std::os::fd::AsFd::as_fd(&sub);
        std::fs::write(tmp.path().join("sub/g"), "x").unwrap();
        let mut text = String::new();
        open_at(sub, "g", OFlag::O_RDONLY)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "x");
        open_at(sub, "g", OFlag::O_WRONLY)
            .unwrap()
            .write_all(b"y")
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("sub/g")).unwrap(),
            "y"
        );
        let e = open_at(sub, "missing", OFlag::O_RDONLY).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        let flags = nix::fcntl::fcntl(
            open_at(sub, "g", OFlag::O_RDONLY).unwrap().as_raw_fd(),
            nix::fcntl::FcntlArg::F_GETFD,
        )
        .unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0, "not close-on-exec");
    }
}
