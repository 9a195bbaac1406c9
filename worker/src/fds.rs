//! The worker's inherited descriptors. Every `unsafe` of the worker lives
//! here.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};

/// Takes ownership of an inherited descriptor and marks it close-on-exec so
/// that no job inherits it (the event pipe and the lock must never leak
/// into a job: a job holding the lock would keep a second scheduler out
/// after cronwarden is gone).
pub fn adopt(fd: RawFd) -> std::io::Result<OwnedFd> {
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(std::io::Error::from)?;
    // SAFETY: the supervisor passes these descriptor numbers on the command
    // line for descriptors it placed there with dup2; F_SETFD above succeeded,
    // so the descriptor is open, and nothing else in this process owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
