//! A job's running process, however it was started: by tokio (posix_spawn,
//! or fork for jobs with a pre-exec set-up), or by clone3 straight into its
//! cgroup, in which case it is waited for and signalled through its pidfd.

use std::{
    ffi::{CString, OsStr, OsString},
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
        unix::{ffi::OsStrExt, process::ExitStatusExt},
    },
    process::ExitStatus,
};

use nix::sys::wait::{Id, WaitPidFlag, WaitStatus};
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

use crate::sys;

/// One end of a job's output pipe, ours.
pub(crate) type Pipe = pipe::Receiver;

/// A job's process.
#[derive(Debug)]
pub(crate) enum Child {
    Tokio(tokio::process::Child),
    Pidfd(PidfdChild),
}

/// A process started by clone3: its pidfd (readable once it exits), and
/// its output pipes until taken.
#[derive(Debug)]
pub(crate) struct PidfdChild {
    pid: u32,
    /// When it started, in clock ticks, if known from the clone.
    start_ticks: Option<u64>,
    pidfd: AsyncFd<OwnedFd>,
    stdout: Option<Pipe>,
    stderr: Option<Pipe>,
    status: Option<ExitStatus>,
}

impl Child {
    pub fn id(&self) -> u32 {
        match self {
            Child::Tokio(c) => c.id().unwrap_or(0),
            Child::Pidfd(c) => c.pid,
        }
    }

    /// When it started (clock ticks since boot), where the start knew it
    /// without reading /proc (`sys::start_tick`).
    pub fn start_ticks(&self) -> Option<u64> {
        match self {
            Child::Tokio(_) => None,
            Child::Pidfd(c) => c.start_ticks,
        }
    }

    pub fn take_stdout(&mut self) -> Option<Pipe> {
        match self {
            Child::Tokio(c) => c.stdout.take().and_then(|p| adopt(p.into_owned_fd())),
            Child::Pidfd(c) => c.stdout.take(),
        }
    }

    pub fn take_stderr(&mut self) -> Option<Pipe> {
        match self {
            Child::Tokio(c) => c.stderr.take().and_then(|p| adopt(p.into_owned_fd())),
            Child::Pidfd(c) => c.stderr.take(),
        }
    }

    /// Waits for the process to exit and reaps it. Cancel-safe.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        match self {
            Child::Tokio(c) => c.wait().await,
            Child::Pidfd(c) => c.wait().await,
        }
    }
}

fn adopt(fd: std::io::Result<OwnedFd>) -> Option<Pipe> {
    fd.and_then(pipe::Receiver::from_owned_fd)
        .inspect_err(|e| tracing::warn!("cannot read a job's output pipe: {e}"))
        .ok()
}

impl PidfdChild {
    /// Takes over a process started by [`sys::spawn_into_cgroup`] and the
    /// read ends of its pipes. In the runtime's context.
    pub fn new(
        pid: u32,
        pidfd: OwnedFd,
        start_ticks: Option<u64>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> std::io::Result<PidfdChild> {
        Ok(PidfdChild {
            pid,
            start_ticks,
            pidfd: sys::watch(pidfd)?,
            // Read ends of pipes made non-blocking by [`stdio`].
            stdout: Some(pipe::Receiver::from_owned_fd_unchecked(stdout)?),
            stderr: Some(pipe::Receiver::from_owned_fd_unchecked(stderr)?),
            status: None,
        })
    }

    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        if let Some(st) = self.status {
            return Ok(st);
        }
        loop {
            let mut ready = self.pidfd.readable().await?;
            match reap(self.pidfd.get_ref().as_fd(), WaitPidFlag::WNOHANG)? {
                Some(st) => {
                    self.status = Some(st);
                    return Ok(st);
                }
                None => ready.clear_ready(),
            }
        }
    }
}

impl Drop for PidfdChild {
    /// A run abandoned before its process was reaped (`lost`): reap it
    /// whenever it does exit, so no zombie stays for the worker's life.
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        let Ok(fd) = self.pidfd.get_ref().try_clone() else {
            return;
        };
        if matches!(reap(fd.as_fd(), WaitPidFlag::WNOHANG), Ok(Some(_)) | Err(_)) {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Ok(fd) = sys::watch(fd) {
                    let _ = fd.readable().await;
                    let _ = reap(fd.get_ref().as_fd(), WaitPidFlag::WNOHANG);
                }
            });
        }
    }
}

/// waitid on a pidfd: `None` while the process runs (with WNOHANG).
fn reap(pidfd: BorrowedFd<'_>, flags: WaitPidFlag) -> std::io::Result<Option<ExitStatus>> {
    let st = loop {
        match nix::sys::wait::waitid(Id::PIDFd(pidfd), WaitPidFlag::WEXITED | flags) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => break r?,
        }
    };
    Ok(match st {
        WaitStatus::Exited(_, code) => Some(ExitStatus::from_raw((code & 0xff) << 8)),
        WaitStatus::Signaled(_, sig, core) => Some(ExitStatus::from_raw(
            sig as i32 | if core { 0x80 } else { 0 },
        )),
        _ => None,
    })
}

/// What a job's process is made of, for [`sys::Exec`]: its argv, the
/// environment (`clear`: start empty, else from ours; then `vars` in
/// order), its working directory. Allocates, so before the clone.
pub(crate) fn exec_for(
    argv: &[String],
    clear: bool,
    vars: &[(OsString, OsString)],
    cwd: Option<&std::path::Path>,
    setup: sys::ChildSetup,
) -> Option<sys::Exec> {
    let mut env: Vec<(OsString, OsString)> = if clear {
        vec![]
    } else {
        std::env::vars_os().collect()
    };
    for (k, v) in vars {
        match env.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v.clone(),
            None => env.push((k.clone(), v.clone())),
        }
    }
    let cstr = |s: &[u8]| CString::new(s).ok();
    let envp = env
        .iter()
        .map(|(k, v)| cstr(&[k.as_bytes(), b"=", v.as_bytes()].concat()))
        .collect::<Option<Vec<_>>>()?;
    let program = argv.first()?;
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_os_str())
        .unwrap_or(OsStr::new("/bin:/usr/bin"));
    Some(sys::Exec {
        candidates: candidates(program, path)
            .iter()
            .map(|p| cstr(p.as_os_str().as_bytes()))
            .collect::<Option<_>>()?,
        argv: argv
            .iter()
            .map(|a| cstr(a.as_bytes()))
            .collect::<Option<_>>()?,
        envp,
        cwd: match cwd {
            Some(d) => Some(cstr(d.as_os_str().as_bytes())?),
            None => None,
        },
        setup,
    })
}

/// Where execvp would look for `program`, in order.
fn candidates(program: &str, path: &OsStr) -> Vec<std::path::PathBuf> {
    if program.contains('/') {
        return vec![program.into()];
    }
    std::env::split_paths(path)
        .map(|d| {
            if d.as_os_str().is_empty() {
                std::path::PathBuf::from(".").join(program)
            } else {
                d.join(program)
            }
        })
        .collect()
}

/// A job's stdio for a clone: its stdin, the worker's one /dev/null
/// ([`sys::dev_null`]; its own only if that could not be opened), and the
/// write ends of its output pipes.
pub(crate) struct JobStdio {
    own_null: Option<OwnedFd>,
    out: OwnedFd,
    err: OwnedFd,
}

impl JobStdio {
    /// The raw numbers the child gets as 0, 1 and 2.
    pub fn raw(&self) -> [i32; 3] {
        let null = match &self.own_null {
            Some(fd) => fd.as_raw_fd(),
            None => sys::dev_null().map_or(-1, |fd| fd.as_raw_fd()),
        };
        [null, self.out.as_raw_fd(), self.err.as_raw_fd()]
    }
}

/// The job's pipes, made before the clone: (ours to read stdout, ours to
/// read stderr, the job's ends).
pub(crate) fn stdio() -> std::io::Result<(OwnedFd, OwnedFd, JobStdio)> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    // Our ends non-blocking from the start (tokio takes them unchecked:
    // no fstat and two fcntl each), the job's ends blocking, as a job
    // expects its stdout (issue 18: syscalls per start).
    let pipe = || -> std::io::Result<(OwnedFd, OwnedFd)> {
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        fcntl(w.as_raw_fd(), FcntlArg::F_SETFL(OFlag::empty()))?;
        Ok((r, w))
    };
    let (out_r, out) = pipe()?;
    let (err_r, err) = pipe()?;
    let own_null = match sys::dev_null() {
        Some(_) => None,
        // std opens with O_CLOEXEC.
        None => Some(std::fs::File::open("/dev/null")?.into()),
    };
    Ok((out_r, err_r, JobStdio { own_null, out, err }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_pipe_ends_do_not_block_and_the_jobs_do() {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let nonblocking = |fd: &OwnedFd| {
            let fl = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).unwrap();
            OFlag::from_bits_truncate(fl).contains(OFlag::O_NONBLOCK)
        };
        let (out_r, err_r, job) = stdio().unwrap();
        assert!(nonblocking(&out_r) && nonblocking(&err_r));
        assert!(!nonblocking(&job.out) && !nonblocking(&job.err));
    }

    #[test]
    fn candidates_follow_execvp() {
        assert_eq!(
            candidates("/bin/sh", OsStr::new("/x")),
            vec![std::path::PathBuf::from("/bin/sh")]
        );
        assert_eq!(
            candidates("ls", OsStr::new("/a:/b::/c")),
            ["/a/ls", "/b/ls", "./ls", "/c/ls"]
                .iter()
                .map(std::path::PathBuf::from)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_environment_is_ours_or_clean_with_the_jobs_on_top() {
        let vars = [
            (OsString::from("PATH"), OsString::from("/only")),
            (OsString::from("A"), OsString::from("1")),
            (OsString::from("A"), OsString::from("2")),
        ];
        let exec = exec_for(
            &["prog".into(), "x".into()],
            true,
            &vars,
            None,
            sys::ChildSetup::default(),
        )
        .unwrap();
        let envp: Vec<_> = exec.envp.iter().map(|c| c.to_str().unwrap()).collect();
        assert_eq!(envp, ["PATH=/only", "A=2"]);
        assert_eq!(exec.candidates, [CString::new("/only/prog").unwrap()]);
        let bad = [(OsString::from("NUL"), OsString::from("a\0b"))];
        assert!(exec_for(&["p".into()], true, &bad, None, Default::default()).is_none());
    }

    /// A run cgroup in this host's writable cgroup2 hierarchy, or `None`.
    /// A run cgroup under `dir`'s instance, and a runtime to spawn in; or
    /// `None`, the test skipped, where no cgroup2 hierarchy is writable.
    fn run_cgroup(
        dir: &std::path::Path,
    ) -> Option<(
        crate::cgroup::Hierarchy,
        crate::cgroup::RunCgroup,
        tokio::runtime::Runtime,
    )> {
        let made = crate::cgroup::Hierarchy::setup(dir, true)
            .ok()
            .and_then(|h| Some((h.create_run(1, &Default::default()).ok()?, h)));
        let Some((cg, h)) = made else {
            cronwarden_shared::test_skip::skip("no writable cgroup2 hierarchy");
            return None;
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Some((h, cg, rt))
    }

    async fn spawn(
        argv: &[&str],
        cg: &crate::cgroup::RunCgroup,
    ) -> std::io::Result<(Child, String)> {
        spawn_in(argv, None, cg).await
    }

    async fn spawn_in(
        argv: &[&str],
        cwd: Option<&std::path::Path>,
        cg: &crate::cgroup::RunCgroup,
    ) -> std::io::Result<(Child, String)> {
        let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
        let vars = [(OsString::from("PATH"), OsString::from("/usr/bin:/bin"))];
        let exec = exec_for(&argv, true, &vars, cwd, Default::default()).unwrap();
        let (out_r, err_r, stdio) = stdio()?;
        let child = match sys::spawn_into_cgroup(&exec, cg.dir_fd(), stdio.raw()) {
            sys::Cloned::Started {
                pid,
                pidfd,
                start_ticks,
            } => {
                drop(stdio);
                Child::Pidfd(PidfdChild::new(pid, pidfd, start_ticks, out_r, err_r)?)
            }
            sys::Cloned::Failed(e) => return Err(e),
            sys::Cloned::Unsupported(e) => panic!("clone3 unsupported here: {e}"),
        };
        let mut child = child;
        let mut out = String::new();
        let mut pipe = child.take_stdout().unwrap();
        tokio::io::AsyncReadExt::read_to_string(&mut pipe, &mut out).await?;
        Ok((child, out))
    }

    #[test]
    fn clone3_starts_the_job_inside_its_cgroup() {
        let dir = tempfile::tempdir().unwrap();
        let Some((h, cg, rt)) = run_cgroup(dir.path()) else {
            return;
        };
        rt.block_on(async {
            let (mut child, out) = spawn(&["sh", "-c", "cat /proc/self/cgroup; exit 3"], &cg)
                .await
                .unwrap();
            let st = child.wait().await.unwrap();
            assert_eq!(st.code(), Some(3));
            let own = cg.path().file_name().unwrap().to_str().unwrap();
            let instance = h.instance().file_name().unwrap().to_str().unwrap();
            assert!(
                out.lines()
                    .any(|l| l.starts_with("0::") && l.ends_with(&format!("{instance}/{own}"))),
                "not in its cgroup: {out}"
            );
            let e = spawn(&["no-such-program-here"], &cg).await.unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        });
        rt.block_on(cg.finish(false));
        h.remove_instance();
    }

    /// The job gets its stdin, stdout and stderr and no other descriptor
    /// of the worker's, however many the worker holds (one of them not
    /// even close-on-exec): the child shares the worker's table until it
    /// takes a copy of what lies below the spawning thread's slots only.
    /// The worker's own descriptors are untouched, and the slots keep no
    /// pipe end: the output reaches its end of file.
    #[test]
    fn the_job_gets_its_stdio_and_nothing_else_of_the_workers() {
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let Some((h, cg, rt)) = run_cgroup(dir.path()) else {
            return;
        };
        let inode = |fd: i32| nix::sys::stat::fstat(fd).map(|st| (st.st_dev, st.st_ino));
        // As the worker does at its start: what this test process was
        // given by its own parent is not for the job either.
        sys::cloexec_inherited();
        rt.block_on(async {
            let bounded = |f| tokio::time::timeout(std::time::Duration::from_secs(20), f);
            // This thread's first start makes its slots, at low numbers.
            let (mut child, _) = bounded(spawn(&["true"], &cg)).await.unwrap().unwrap();
            assert!(child.wait().await.unwrap().success());
            assert!(sys::slots_in_use_here());
            let many: Vec<std::fs::File> = (0..300)
                .map(|_| std::fs::File::open("/dev/null").unwrap())
                .collect();
            // Above all of them (not in a hole another test's close left
            // below the slots: that one the child would copy).
            let top = many.iter().map(|f| f.as_raw_fd()).max().unwrap();
            let leaky = nix::fcntl::fcntl(
                many[299].as_raw_fd(),
                nix::fcntl::FcntlArg::F_DUPFD(top + 1),
            )
            .unwrap();
            let ours = [0, 1, 2, leaky].map(inode);
            let (mut child, out) = bounded(spawn(&["sh", "-c", "exec ls -1 /proc/self/fd"], &cg))
                .await
                .expect("the output never ended: a slot holds a pipe end")
                .unwrap();
            assert!(child.wait().await.unwrap().success());
            let mut fds: Vec<i32> = out.lines().map(|l| l.parse().unwrap()).collect();
            fds.sort_unstable();
            // 0, 1, 2 and the directory ls reads.
            assert!(fds.starts_with(&[0, 1, 2]) && fds.len() == 4, "{fds:?}");
            assert!(!fds.contains(&leaky), "{fds:?}");
            assert_eq!([0, 1, 2, leaky].map(inode), ours);
            for f in &many {
                nix::fcntl::fcntl(f.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
            }
            nix::unistd::close(leaky).unwrap();
        });
        rt.block_on(cg.finish(false));
        h.remove_instance();
    }

    /// The mask of the calling thread, as /proc shows it.
    fn own_mask() -> libc::sigset_t {
        // SAFETY: a read of this thread's mask into a local set.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut set);
            set
        }
    }

    fn same_mask(a: &libc::sigset_t, b: &libc::sigset_t) -> bool {
        // SAFETY: sigismember reads two valid sets.
        (1..65).all(|s| unsafe { libc::sigismember(a, s) == libc::sigismember(b, s) })
    }

    /// What the child sets up between the clone and its exec (it shares
    /// the worker's memory until then): its working directory, its own
    /// process group, no blocked signal and SIGPIPE back to default; a
    /// failure before the exec is the start's error; the spawning
    /// thread's signal mask is as before.
    #[test]
    fn the_child_is_set_up_before_its_exec_and_failures_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let Some((h, cg, rt)) = run_cgroup(dir.path()) else {
            return;
        };
        let mask = own_mask();
        rt.block_on(async {
            // The mask read by the shell itself (`exec`, which keeps it):
            // read from a child, it races the shell's own blocking of all
            // signals around its vfork of that child.
            let script =
                "pwd; cut -d' ' -f1,5 /proc/$$/stat; exec grep -E '^Sig(Blk|Ign)' /proc/self/status";
            let (mut child, out) = spawn_in(&["sh", "-c", script], Some(dir.path()), &cg)
                .await
                .unwrap();
            assert!(child.wait().await.unwrap().success());
            let lines: Vec<&str> = out.lines().collect();
            let canonical = dir.path().canonicalize().unwrap();
            assert_eq!(lines[0], canonical.to_str().unwrap(), "{out}");
            let ids: Vec<&str> = lines[1].split(' ').collect();
            assert_eq!(ids[0], ids[1], "not its own process group: {out}");
            let field = |name: &str| {
                let l = lines.iter().find(|l| l.starts_with(name)).unwrap();
                u64::from_str_radix(l.split_whitespace().nth(1).unwrap(), 16).unwrap()
            };
            assert_eq!(field("SigBlk:"), 0, "{out}");
            assert_eq!(field("SigIgn:") & (1 << (libc::SIGPIPE - 1)), 0, "{out}");
            let gone = dir.path().join("gone");
            let e = spawn_in(&["true"], Some(&gone), &cg).await.unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        });
        assert!(same_mask(&mask, &own_mask()));
        rt.block_on(cg.finish(false));
        h.remove_instance();
    }
}
