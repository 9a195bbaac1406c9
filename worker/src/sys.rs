//! The worker's raw system calls: its inherited descriptors, files opened
//! through a directory held open (`at`), and a job's set-up between fork
//! and exec. Every `unsafe` of the worker lives here.

use std::{
    ffi::CString,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};

pub(crate) mod at;
mod slots;
mod start_tick;

#[cfg(test)]
pub(crate) use slots::in_use_here as slots_in_use_here;

/// Takes ownership of an inherited descriptor, close-on-exec so no job
/// inherits it (a job holding the lock would keep a second scheduler out
/// after cronwarden is gone).
pub(crate) fn adopt(fd: RawFd) -> std::io::Result<OwnedFd> {
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(std::io::Error::from)?;
    // SAFETY: the supervisor passes these descriptor numbers on the command
    // line for descriptors it placed there with dup2; F_SETFD above succeeded,
    // so the descriptor is open, and nothing else in this process owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `/dev/null`, open for reading and writing once for the worker's life:
/// every job's stdin, and what the start threads' slots hold between
/// starts (issue 18: an open and a close fewer per start). `None` if it
/// cannot be opened now (callers then open their own); tried again at
/// the next call.
pub(crate) fn dev_null() -> Option<BorrowedFd<'static>> {
    static NULL: std::sync::OnceLock<OwnedFd> = std::sync::OnceLock::new();
    if let Some(fd) = NULL.get() {
        return Some(fd.as_fd());
    }
    // std opens with O_CLOEXEC: no job inherits it but as its stdin.
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        // Two threads may both have opened it: one copy is kept.
        Ok(f) => Some(NULL.get_or_init(|| f.into()).as_fd()),
        Err(e) => {
            tracing::warn!("cannot open /dev/null once for every start: {e}");
            None
        }
    }
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
    /// Running in the cgroup: its pid, a pidfd on it, and its start
    /// time in clock ticks where [`same_tick`] knows it.
    Started {
        pid: u32,
        pidfd: OwnedFd,
        start_ticks: Option<u64>,
    },
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
///
/// On x86_64 the child shares our memory until its exec (CLONE_VM |
/// CLONE_VFORK on a stack of its own, as glibc's posix_spawn): no copy of
/// the worker's page tables, and no copy-on-write faults for the worker's
/// other threads while the child has not exec'd yet, which made each start
/// cost milliseconds. Elsewhere it is a fork-like clone.
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
    let child = |placed: Option<slots::Placed>| ChildExec {
        exec,
        argv: &argv,
        envp: &envp,
        stdio: placed.map_or(stdio, |p| p.fds),
        unshare_below: placed.map(|p| p.above),
    };
    #[cfg(target_arch = "x86_64")]
    let cloned = slots::placed(stdio, |placed| {
        vfork_into(&child(placed), cgroup, raw_sigmask)
    });
    #[cfg(not(target_arch = "x86_64"))]
    let cloned = fork_into(&child(None), cgroup);
    match cloned {
        Ok(started) => started,
        Err(e) => match e.raw_os_error().unwrap_or(0) {
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
        },
    }
}

/// What the child needs between the clone and its exec, all prepared.
struct ChildExec<'a> {
    exec: &'a Exec,
    argv: &'a [*const libc::c_char],
    envp: &'a [*const libc::c_char],
    stdio: [RawFd; 3],
    /// The child shares the worker's descriptor table (CLONE_FILES) and
    /// first takes a copy of the descriptors below this one only, where
    /// `stdio` is ([`slots`]).
    unshare_below: Option<libc::c_uint>,
}

/// Where the child reports an errno from before its exec.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
enum Report<'a> {
    /// A close-on-exec pipe (fork-like clone: the child has its own memory).
    Pipe(RawFd),
    /// Memory shared with the parent, which is suspended meanwhile (vfork).
    Shared(&'a std::sync::atomic::AtomicI32),
}

/// The child's stack for [`vfork_into`]: it runs on it only until exec.
#[cfg(target_arch = "x86_64")]
const CHILD_STACK: usize = 64 * 1024;

#[cfg(target_arch = "x86_64")]
#[repr(C, align(16))]
struct ChildStack([std::mem::MaybeUninit<u8>; CHILD_STACK]);

/// The child and its errno, as [`child_entry`] gets them.
#[cfg(target_arch = "x86_64")]
struct VforkArg<'a> {
    child: &'a ChildExec<'a>,
    err: std::sync::atomic::AtomicI32,
}

/// clone3(CLONE_VM | CLONE_VFORK): returns once the child has exec'd or
/// exited; a failure before its exec is in the memory we share. `block`
/// sets the thread's signal mask before the clone ([`raw_sigmask`]; a
/// test's stand-in fails).
#[cfg(target_arch = "x86_64")]
fn vfork_into(
    child: &ChildExec<'_>,
    cgroup: BorrowedFd<'_>,
    block: fn(u64) -> Result<u64, i32>,
) -> Result<Cloned, std::io::Error> {
    use std::sync::atomic::{AtomicI32, Ordering};
    let arg = VforkArg {
        child,
        err: AtomicI32::new(0),
    };
    let mut stack = ChildStack([std::mem::MaybeUninit::uninit(); CHILD_STACK]);
    let mut pidfd: libc::c_int = -1;
    let args = CloneArgs {
        flags: (libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD) as u64
            | CLONE_INTO_CGROUP
            | if child.unshare_below.is_some() {
                libc::CLONE_FILES as u64
            } else {
                0
            },
        pidfd: std::ptr::addr_of_mut!(pidfd) as u64,
        exit_signal: libc::SIGCHLD as u64,
        stack: stack.0.as_mut_ptr() as u64,
        stack_size: CHILD_STACK as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // Every signal blocked across the clone (glibc's own two included,
    // hence the raw call): a handler of ours must never run in the child,
    // which shares our memory; it resets them before it unblocks. Not
    // blocked, no clone: the start fails rather than risk it.
    let old = match block(!0) {
        Ok(old) => old,
        Err(e) => {
            let e = std::io::Error::from_raw_os_error(e);
            return Ok(Cloned::Failed(std::io::Error::new(
                e.kind(),
                format!("cannot block signals for the clone, not starting: {e}"),
            )));
        }
    };
    // SAFETY: the child runs `child_entry` on `stack` (ours, alive: this
    // thread is suspended until the child execs or exits), which only
    // reads `arg` and stores into `arg.err`, with async-signal-safe system
    // calls, and never returns.
    let before = start_tick::boottime_ns();
    let r = unsafe {
        clone3_on_stack(
            &args,
            child_entry,
            std::ptr::addr_of!(arg).cast_mut().cast(),
        )
    };
    let after = start_tick::boottime_ns();
    if let Err(e) = raw_sigmask(old) {
        // Never seen (the mask just read back is valid). The thread then
        // keeps every signal blocked: a signal for the process goes to
        // another thread.
        tracing::error!(
            "cannot restore the spawner thread's signal mask: {}",
            std::io::Error::from_raw_os_error(e)
        );
    }
    if r < 0 {
        return Err(std::io::Error::from_raw_os_error(-r as i32));
    }
    // SAFETY: the kernel stored a new descriptor there (CLONE_PIDFD).
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    match arg.err.load(Ordering::SeqCst) {
        0 => Ok(Cloned::Started {
            pid: r as u32,
            pidfd,
            start_ticks: start_tick::same_tick(before, after),
        }),
        e => {
            // It has exited (or is about to): reap it so no zombie is left.
            let _ = nix::sys::wait::waitid(
                nix::sys::wait::Id::PIDFd(pidfd.as_fd()),
                nix::sys::wait::WaitPidFlag::WEXITED,
            );
            Ok(Cloned::Failed(std::io::Error::from_raw_os_error(e)))
        }
    }
}

/// Sets the calling thread's signal mask (all 64 signals, as the kernel
/// sees them: glibc's wrappers keep two of them out); returns the old one,
/// or the errno. Async-signal-safe.
#[cfg(target_arch = "x86_64")]
fn raw_sigmask(mask: u64) -> Result<u64, i32> {
    let mut old = 0u64;
    // SAFETY: a plain system call on two local words of the kernel's size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            std::ptr::addr_of!(mask),
            std::ptr::addr_of_mut!(old),
            8usize,
        )
    };
    if r == 0 {
        Ok(old)
    } else {
        // SAFETY: errno is this thread's, read right after the call.
        Err(unsafe { *libc::__errno_location() })
    }
}

/// The kernel's `struct sigaction` on x86_64.
#[cfg(target_arch = "x86_64")]
#[repr(C)]
#[derive(Default)]
struct KernelSigaction {
    handler: usize,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// In the child of a vfork-like clone, before anything is unblocked:
/// every signal with a handler (glibc's own included) back to its default,
/// since a handler of ours would run on the parent's memory (exec resets
/// them anyway; this covers the moments before). Async-signal-safe.
#[cfg(target_arch = "x86_64")]
fn default_handlers() {
    for sig in 1..=64 {
        let mut old = KernelSigaction::default();
        // SAFETY: plain system calls on local structures of the kernel's
        // layout.
        unsafe {
            let got = libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                std::ptr::null::<KernelSigaction>(),
                std::ptr::addr_of_mut!(old),
                8usize,
            );
            if got == 0 && old.handler != libc::SIG_DFL && old.handler != libc::SIG_IGN {
                let dfl = KernelSigaction::default();
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    std::ptr::addr_of!(dfl),
                    std::ptr::null_mut::<KernelSigaction>(),
                    8usize,
                );
            }
        }
    }
}

/// The child of [`vfork_into`], on its own stack.
#[cfg(target_arch = "x86_64")]
extern "C" fn child_entry(arg: *mut libc::c_void) -> ! {
    // SAFETY: `arg` is the parent's `VforkArg`, alive while it is suspended.
    let arg = unsafe { &*(arg as *const VforkArg<'_>) };
    // SAFETY: in the child of a vfork-like clone, see `child_exec`.
    unsafe { child_exec(arg.child, Report::Shared(&arg.err)) }
}

/// clone3 with a new stack for the child, which calls `f(arg)` there (a
/// child cannot return into the caller's frames: they are the parent's).
/// Returns the child's pid, or -errno.
///
/// # Safety
/// `f` must never return and, with CLONE_VM, must only do what a vfork
/// child may; `args.stack` must be valid for the child.
#[cfg(target_arch = "x86_64")]
unsafe fn clone3_on_stack(
    args: &CloneArgs,
    f: extern "C" fn(*mut libc::c_void) -> !,
    arg: *mut libc::c_void,
) -> i64 {
    let ret: i64;
    // SAFETY: the syscall preserves every register but rax, rcx and r11;
    // in the child rsp is the new stack, where `f` is called with `arg`.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "and rsp, -16",
            "mov rdi, {arg}",
            "call {f}",
            "ud2",
            "2:",
            f = in(reg) f as usize,
            arg = in(reg) arg,
            inlateout("rax") libc::SYS_clone3 => ret,
            inout("rdi") std::ptr::from_ref(args) => _,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            out("rcx") _,
            out("r11") _,
        );
    }
    ret
}

/// A fork-like clone3 (the child gets a copy of our memory); a failure
/// before exec comes back on a close-on-exec pipe.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn fork_into(child: &ChildExec<'_>, cgroup: BorrowedFd<'_>) -> Result<Cloned, std::io::Error> {
    // The child reports a failure before exec as an errno on this pipe;
    // close-on-exec, so EOF means the exec happened.
    let (err_r, err_w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return Ok(Cloned::Failed(e.into())),
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
        unsafe { child_exec(child, Report::Pipe(err_w.as_raw_fd())) }
    }
    if r < 0 {
        return Err(std::io::Error::last_os_error());
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
        return Ok(Cloned::Failed(std::io::Error::from_raw_os_error(
            i32::from_ne_bytes(buf),
        )));
    }
    Ok(Cloned::Started {
        pid: r as u32,
        pidfd,
        start_ticks: None,
    })
}

/// CLONE_INTO_CGROUP (Linux 5.7), not in every libc crate version.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// The child after clone3: the job's stdio, its own process group, its
/// working directory, limits and identity, then exec. Any failure is
/// reported as an errno through `report` and the child exits 127.
///
/// # Safety
/// Only in the child of a fork-like or vfork-like clone; async-signal-safe
/// throughout (system calls on prepared data, no allocation, no locks),
/// and with shared memory it writes nothing but its report.
unsafe fn child_exec(child: &ChildExec<'_>, report: Report<'_>) -> ! {
    let fail = |e: i32| -> ! {
        match &report {
            Report::Pipe(fd) => {
                let b = e.to_ne_bytes();
                // SAFETY: a write of a stack buffer.
                unsafe { libc::write(*fd, b.as_ptr().cast(), b.len()) };
            }
            Report::Shared(err) => err.store(e, std::sync::atomic::Ordering::SeqCst),
        }
        // SAFETY: exit without unwinding or atexit handlers (they belong
        // to the parent).
        unsafe { libc::_exit(127) }
    };
    let errno = || {
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    if let Some(below) = child.unshare_below {
        // The worker's table until here (CLONE_FILES): before anything
        // touches it, a copy of what lies below the slots, or of all of
        // it if close_range cannot.
        // SAFETY: plain system calls on integers.
        let own = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                below,
                libc::c_uint::MAX,
                slots::CLOSE_RANGE_UNSHARE,
            ) == 0
                || libc::unshare(libc::CLONE_FILES) == 0
        };
        if !own {
            fail(errno());
        }
    }
    let (exec, argv, envp) = (child.exec, child.argv, child.envp);
    #[cfg(target_arch = "x86_64")]
    if matches!(report, Report::Shared(_)) {
        default_handlers();
        if let Err(e) = raw_sigmask(0) {
            fail(e);
        }
    }
    // SAFETY (the block): plain system calls on prepared data.
    unsafe {
        // What Rust's runtime changed for itself must not reach the job:
        // SIGPIPE is ignored in the worker, and the mask is inherited.
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        for (target, fd) in child.stdio.into_iter().enumerate() {
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

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    /// Signals that cannot be blocked for a vfork-like clone mean no
    /// clone: the start fails with the reason, and the job never runs (a
    /// child sharing the worker's memory could run one of its handlers).
    #[test]
    fn no_clone_when_signals_cannot_be_blocked() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let argv = ["/bin/sh", "-c", "touch \"$0\"", marker.to_str().unwrap()].map(String::from);
        let exec = crate::child::exec_for(&argv, true, &[], None, Default::default()).unwrap();
        let (_out, _err, stdio) = crate::child::stdio().unwrap();
        let argv: Vec<*const libc::c_char> = exec
            .argv
            .iter()
            .map(|a| a.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        let envp = [std::ptr::null()];
        let child = ChildExec {
            exec: &exec,
            argv: &argv,
            envp: &envp,
            stdio: stdio.raw(),
            unshare_below: None,
        };
        let cgroup = std::fs::File::open(dir.path()).unwrap();
        let refused = |_| Err(libc::EPERM);
        match vfork_into(&child, cgroup.as_fd(), refused) {
            Ok(Cloned::Failed(e)) => {
                assert!(e.to_string().contains("cannot block signals"), "{e}");
                assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
            }
            other => panic!("cloned anyway: {other:?}"),
        }
        assert!(!marker.exists(), "the job ran");
    }
}
