//! The worker's raw system calls: its inherited descriptors, and the
//! set-up of a job's process between fork and exec. Every `unsafe` of the
//! worker lives here.

use std::{
    ffi::CString,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
};

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
            // Raw system calls, not glibc's wrappers: after a raw clone3
            // glibc still believes the parent's threads exist, and its
            // setuid would try to signal them all (the "setxid" broadcast).
            // The kernel call changes the calling thread, the only one here.
            let raw = |r: libc::c_long| check(if r == -1 { -1 } else { 0 });
            // SAFETY: plain system calls; `groups` outlives them.
            unsafe {
                raw(libc::syscall(
                    libc::SYS_setgroups,
                    groups.len(),
                    groups.as_ptr(),
                ))?;
                raw(libc::syscall(libc::SYS_setgid, *gid))?;
                raw(libc::syscall(libc::SYS_setuid, *uid))?;
            }
        }
        Ok(())
    }
}

/// A job's process image, prepared before the clone: the child only reads
/// it (no allocation after the clone).
#[derive(Debug)]
pub(crate) struct Exec {
    /// Paths to try in order, as execvp would (PATH already searched).
    pub candidates: Vec<CString>,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub cwd: Option<CString>,
    pub setup: ChildSetup,
}

/// How a clone3 spawn went.
#[derive(Debug)]
pub(crate) enum Cloned {
    /// Running in the cgroup: its pid and a pidfd on it.
    Started { pid: u32, pidfd: OwnedFd },
    /// This kernel (or this cgroup) cannot do it: use the fork path.
    Unsupported(std::io::Error),
    /// The process could not be started (or could not exec).
    Failed(std::io::Error),
}

/// clone3's arguments (linux/sched.h, CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Forces the fork-then-join path for run cgroups (to compare the two,
/// and to test the fallback on a kernel that has clone3).
pub(crate) const NO_CLONE3_ENV: &str = "CRONWARDEN_NO_CLONE3";

/// Set once clone3 said ENOSYS or E2BIG: it is not going to change.
static NO_CLONE3: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Starts `exec` directly inside the cgroup `cgroup` (an open directory)
/// with clone3(CLONE_INTO_CGROUP | CLONE_PIDFD): no migration afterwards,
/// so no write to cgroup.procs, which costs a grace period of the kernel's
/// cgroup lock (milliseconds) per start. `stdio` are the descriptors the
/// job gets as 0, 1 and 2 (all 3 or above). Blocks until the child has
/// exec'd (or failed to).
pub(crate) fn spawn_into_cgroup(exec: &Exec, cgroup: BorrowedFd<'_>, stdio: [RawFd; 3]) -> Cloned {
    use std::sync::atomic::Ordering;
    static FORCED_OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let forced_off = *FORCED_OFF
        .get_or_init(|| std::env::var_os(NO_CLONE3_ENV).is_some_and(|v| !v.is_empty() && v != "0"));
    if forced_off || NO_CLONE3.load(Ordering::Relaxed) {
        return Cloned::Unsupported(std::io::Error::from_raw_os_error(libc::ENOSYS));
    }
    if stdio.iter().any(|fd| *fd < 3) || exec.candidates.is_empty() || exec.argv.is_empty() {
        return Cloned::Unsupported(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    let argv: Vec<*const libc::c_char> = exec
        .argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = exec
        .envp
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    // The child reports a failure before exec as an errno on this pipe;
    // close-on-exec, so EOF means the exec happened.
    let (err_r, err_w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return Cloned::Failed(e.into()),
    };
    let mut pidfd: libc::c_int = -1;
    let args = CloneArgs {
        flags: (libc::CLONE_PIDFD as u64) | CLONE_INTO_CGROUP,
        pidfd: std::ptr::addr_of_mut!(pidfd) as u64,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 without CLONE_VM is a fork: the child has its own copy
    // of memory and runs only `child_exec`, which makes async-signal-safe
    // system calls on data prepared above and never returns.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            std::ptr::addr_of!(args),
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r == 0 {
        // SAFETY: in the child, see above.
        unsafe { child_exec(exec, &argv, &envp, stdio, err_w.as_raw_fd()) }
    }
    if r < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error().unwrap_or(0) {
            libc::ENOSYS | libc::E2BIG => {
                NO_CLONE3.store(true, Ordering::Relaxed);
                Cloned::Unsupported(e)
            }
            libc::EINVAL
            | libc::EPERM
            | libc::EACCES
            | libc::EOPNOTSUPP
            | libc::EBUSY
            | libc::ENOENT
            | libc::EBADF => Cloned::Unsupported(e),
            _ => Cloned::Failed(e),
        };
    }
    // SAFETY: the kernel stored a new descriptor there (CLONE_PIDFD).
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    drop(err_w);
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(err_r.as_raw_fd(), &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    if got == buf.len() {
        // It exits at once: reap it here so no zombie is left.
        let _ = nix::sys::wait::waitid(
            nix::sys::wait::Id::PIDFd(pidfd.as_fd()),
            nix::sys::wait::WaitPidFlag::WEXITED,
        );
        return Cloned::Failed(std::io::Error::from_raw_os_error(i32::from_ne_bytes(buf)));
    }
    Cloned::Started {
        pid: r as u32,
        pidfd,
    }
}

/// CLONE_INTO_CGROUP (Linux 5.7), not in every libc crate version.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// The child after clone3: the job's stdio, its own process group, its
/// working directory, limits and identity, then exec. Any failure is sent
/// as an errno on `err` and the child exits 127.
///
/// # Safety
/// Only in the child of a fork-like clone; async-signal-safe throughout
/// (system calls on prepared data, no allocation, no locks).
unsafe fn child_exec(
    exec: &Exec,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    stdio: [RawFd; 3],
    err: RawFd,
) -> ! {
    let fail = |e: i32| -> ! {
        let b = e.to_ne_bytes();
        // SAFETY: a write of a stack buffer, then exit without unwinding
        // or atexit handlers (they belong to the parent).
        unsafe {
            libc::write(err, b.as_ptr().cast(), b.len());
            libc::_exit(127)
        }
    };
    let errno = || {
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    // SAFETY (the block): plain system calls on prepared data.
    unsafe {
        // What Rust's runtime changed for itself must not reach the job:
        // SIGPIPE is ignored in the worker, and the mask is inherited.
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        for (target, fd) in stdio.into_iter().enumerate() {
            if libc::dup2(fd, target as i32) == -1 {
                fail(errno());
            }
        }
        if libc::setpgid(0, 0) == -1 {
            fail(errno());
        }
        if let Some(dir) = &exec.cwd {
            if libc::chdir(dir.as_ptr()) == -1 {
                fail(errno());
            }
        }
    }
    if let Err(e) = exec.setup.in_child() {
        fail(e.raw_os_error().unwrap_or(libc::EIO));
    }
    // execvp's rule: a path that is not there (or not a directory) moves
    // on to the next; a permission error is reported if nothing else runs.
    let mut first = libc::ENOENT;
    for path in &exec.candidates {
        // SAFETY: null-terminated arrays of pointers into live CStrings.
        unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        match errno() {
            libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ELOOP | libc::ENAMETOOLONG => {}
            libc::EACCES => first = libc::EACCES,
            e => fail(e),
        }
    }
    fail(first)
}

/// Registers a pidfd with the reactor (readable once the process exits).
pub(crate) fn watch(fd: OwnedFd) -> std::io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is open for as long as it is owned (here, by the
    // AsyncFd) and always returns the same descriptor.
    unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
            .map_err(std::io::Error::from)
    }
}

/// A pidfd on `pid` (Linux 5.3): from here on, signals sent through it can
/// only reach that very process, never one that reuses its number.
pub(crate) fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: a plain system call with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sends `sig` to the process behind `pidfd` (ESRCH once it has exited).
pub(crate) fn pidfd_signal(
    pidfd: BorrowedFd<'_>,
    sig: nix::sys::signal::Signal,
) -> std::io::Result<()> {
    // SAFETY: a plain system call; a null siginfo means "as kill(2)".
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
