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

/// Marks every descriptor from 3 up close-on-exec, once, at worker start:
/// so a job gets exactly stdin, stdout and stderr even when cronwarden was
/// started with descriptors leaked by its own parent (everything the worker
/// opens later is close-on-exec already).
pub fn cloexec_inherited() {
    // SAFETY: only raw syscalls on descriptor numbers.
    unsafe { cloexec_from_3() }
}

/// # Safety
/// Async-signal-safe (raw syscalls only, no allocation, no locks).
unsafe fn cloexec_from_3() {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range takes plain integers; with CLOSE_RANGE_CLOEXEC it
    // closes nothing, it only sets the flag.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if r != 0 {
        // Kernels before 5.11: set the flag one descriptor at a time.
        let max = match unsafe { libc::sysconf(libc::_SC_OPEN_MAX) } {
            n if n > 0 => n.min(65_536) as i32,
            _ => 4096,
        };
        for fd in 3..max {
            // SAFETY: fcntl on a descriptor that may not exist just fails.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
}
