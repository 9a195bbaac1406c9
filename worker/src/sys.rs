//! The worker's raw system calls: its inherited descriptors, and the
//! set-up of a job's process between fork and exec. Every `unsafe` of the
//! worker lives here.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};

/// Takes ownership of an inherited descriptor and marks it close-on-exec so
/// that no job inherits it (the event pipe and the lock must never leak
/// into a job: a job holding the lock would keep a second scheduler out
/// after cronwarden is gone).
pub(crate) fn adopt(fd: RawFd) -> std::io::Result<OwnedFd> {
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
pub(crate) fn cloexec_inherited() {
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

/// What a job's process is switched to between fork and exec. Everything
/// is computed before the fork (user and group lookups allocate and take
/// locks, which the child must not).
#[derive(Debug, Clone, Default)]
pub(crate) struct ChildSetup {
    /// (resource, limit): soft and hard limits are both set.
    pub limits: Vec<(LimitKind, u64)>,
    pub nice: Option<i32>,
    /// (uid, gid, supplementary groups).
    pub credentials: Option<(u32, u32, Vec<u32>)>,
    /// The run cgroup's `cgroup.procs`, open: the child writes itself in
    /// before anything else, so all it ever starts is held there.
    pub cgroup_procs: Option<RawFd>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum LimitKind {
    NoFile,
    AddressSpace,
    Cpu,
    /// RLIMIT_NPROC: processes of the (real) user.
    Procs,
}

impl ChildSetup {
    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
            && self.nice.is_none()
            && self.credentials.is_none()
            && self.cgroup_procs.is_none()
    }

    /// Installs the set-up on `cmd`. Limits and niceness come first, while
    /// the child may still raise them; then groups, gid and uid, in that
    /// order, since after setuid the child can change none of them.
    pub fn apply(self, cmd: &mut tokio::process::Command) {
        if self.is_empty() {
            // No pre_exec: std keeps using posix_spawn, the cheap path.
            return;
        }
        // SAFETY: the closure runs in the forked child before exec and only
        // makes async-signal-safe system calls on data prepared before the
        // fork (no allocation, no locks).
        unsafe {
            cmd.pre_exec(move || self.in_child());
        }
    }

    fn in_child(&self) -> std::io::Result<()> {
        let check = |r: libc::c_int| {
            if r == -1 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        if let Some(fd) = self.cgroup_procs {
            // "0" is the writing process. A failure leaves the job in the
            // worker's cgroup, still in its process group: the run goes on
            // with the group as its only boundary, never fails for it.
            // SAFETY: a plain system call on a descriptor opened before
            // the fork and a static buffer.
            unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
        }
        for (kind, value) in &self.limits {
            let resource = match kind {
                LimitKind::NoFile => libc::RLIMIT_NOFILE,
                LimitKind::AddressSpace => libc::RLIMIT_AS,
                LimitKind::Cpu => libc::RLIMIT_CPU,
                LimitKind::Procs => libc::RLIMIT_NPROC,
            };
            let lim = libc::rlimit {
                rlim_cur: *value as libc::rlim_t,
                rlim_max: *value as libc::rlim_t,
            };
            // SAFETY: a plain system call with a valid pointer.
            check(unsafe { libc::setrlimit(resource, &lim) })?;
        }
        if let Some(n) = self.nice {
            // SAFETY: a plain system call; `who` 0 is the calling process.
            check(unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, n) })?;
        }
        if let Some((uid, gid, groups)) = &self.credentials {
            // SAFETY: plain system calls; `groups` outlives them.
            unsafe {
                check(libc::setgroups(groups.len(), groups.as_ptr()))?;
                check(libc::setgid(*gid))?;
                check(libc::setuid(*uid))?;
            }
        }
        Ok(())
    }
}
