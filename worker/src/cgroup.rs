//! A cgroup (v2) per run: the boundary nothing a job starts can leave.
//!
//! A process group is not a boundary: `setsid`, a double fork or a
//! daemonising script leave it, and nothing finds them again. A cgroup
//! holds every descendant whatever it does, `cgroup.kill` ends them all at
//! once (no race with a forking child), and `cpu.stat` / `memory.peak` say
//! what the run cost.
//!
//! Layout: `<our own cgroup>/cronwarden-<hash of the state dir>/run-<id>`.
//! The instance directory is per state dir, so two cronwardens on one host
//! never sweep each other's runs, and a new generation of this one finds
//! every run cgroup the previous one left behind (a crash, kill -9) and
//! kills what is still in it before it fires anything ([`Hierarchy::sweep`]).
//! Our own cgroup may hold processes (the supervisor and worker live
//! there): with no controller enabled in it, cgroup v2's "no internal
//! processes" rule does not apply, and the run cgroups are leaves.
//!
//! Everything here is a few small reads and writes on cgroupfs (kernel
//! memory, never disk I/O); the waits for a killed cgroup to empty are
//! bounded and async.

use std::{
    fs::File,
    io::Write,
    os::fd::{AsFd, OwnedFd},
    path::{Path, PathBuf},
    time::Duration,
};

use cronwarden_shared::config::Limits;
use nix::fcntl::OFlag;

use crate::sys::at::{mkdir_at, open_at};

/// Why there is no cgroup for runs: said once at start, with the reason.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroups are turned off ({0})")]
    Off(&'static str),
    #[error("no cgroup2 hierarchy is mounted (/proc/self/mountinfo)")]
    NoMount,
    #[error("cannot tell this process's cgroup v2 path from /proc/self/cgroup")]
    NoOwnCgroup,
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create cgroup {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The environment variable that forces the process-group fallback.
pub(crate) const NO_CGROUPS_ENV: &str = "CRONWARDEN_NO_CGROUPS";

/// How long a killed cgroup may take to empty before we give up on it
/// (its directory then stays, and the next start sweeps it).
pub(crate) const EMPTY_BOUND: Duration = Duration::from_secs(3);

/// The directory all of this instance's run cgroups live in.
#[derive(Debug)]
pub(crate) struct Hierarchy {
    instance: PathBuf,
    /// The instance directory, open: run cgroups are made and opened
    /// through it.
    instance_dir: OwnedFd,
    /// Controllers available to the run cgroups (`cgroup.subtree_control`
    /// of the instance directory after enabling what the parent offers).
    controllers: Vec<String>,
}

/// The cgroup2 mount point and the root it shows, from mountinfo text.
pub(crate) fn cgroup2_mount(mountinfo: &str) -> Option<(PathBuf, String)> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let f: Vec<&str> = left.split_whitespace().collect();
        Some((PathBuf::from(unescape(f.get(4)?)), unescape(f.get(3)?)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Our cgroup v2 path (the `0::` line) from /proc/self/cgroup text.
pub(crate) fn own_cgroup(proc_cgroup: &str) -> Option<String> {
    proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim_end_matches(" (deleted)").to_string())
}

/// Where our own cgroup is, given the mount, the root it shows, and our
/// cgroup path (both relative to the hierarchy's root).
pub(crate) fn own_dir(mount: &Path, mount_root: &str, own: &str) -> Option<PathBuf> {
    let rel = own.strip_prefix(mount_root.trim_end_matches('/'))?;
    let rel = rel.trim_start_matches('/');
    if rel.split('/').any(|c| c == "..") {
        return None;
    }
    Some(if rel.is_empty() {
        mount.to_path_buf()
    } else {
        mount.join(rel)
    })
}

/// A stable name for a state dir (FNV-1a: the same across builds, so a
/// new binary sweeps what an old one left).
pub(crate) fn instance_name(state_dir: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let canonical = state_dir
        .canonicalize()
        .unwrap_or_else(|_| state_dir.to_path_buf());
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in canonical.as_os_str().as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("cronwarden-{h:016x}")
}

/// `usage_usec` from cpu.stat text.
pub(crate) fn usage_usec(cpu_stat: &str) -> Option<u64> {
    cpu_stat
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

/// Whether cgroup.events says the cgroup still holds processes.
fn populated_in(events: &str) -> bool {
    events
        .lines()
        .any(|l| l.split_whitespace().eq(["populated", "1"]))
}

/// Without changing anything: whether runs started by this process (or a
/// worker in the same cgroup) would get cgroups, and which controllers
/// they could use; or why not. For `cronwarden check`.
pub fn probe(enabled: bool) -> Result<Vec<String>, String> {
    let own = locate(enabled).map_err(|e| e.to_string())?;
    nix::unistd::access(&own, nix::unistd::AccessFlags::W_OK)
        .map_err(|e| format!("cgroup {} is not writable: {e}", own.display()))?;
    Ok(std::fs::read_to_string(own.join("cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect())
}

/// The leaf cronwarden's own processes move to, so that the cgroup it was
/// given (systemd's `Delegate=yes` service cgroup) holds no process and
/// may hand controllers to the run cgroups: cgroup v2's "no internal
/// processes" rule forbids a cgroup with processes to have children with
/// controllers enabled. Runs live beside it, under `cronwarden-<hash>/`.
pub(crate) const LEAF: &str = "supervisor";

/// The cgroup cronwarden was given: ours, or its parent once we are in
/// our leaf (a worker started after the move finds itself there).
pub(crate) fn base_of(own: &Path) -> PathBuf {
    match (own.file_name(), own.parent()) {
        (Some(name), Some(parent)) if name == LEAF => parent.to_path_buf(),
        _ => own.to_path_buf(),
    }
}

/// The root cgroup may hold processes and enable controllers both: there
/// is nothing to move out of (and a whole host's processes are there).
fn is_root(dir: &Path) -> bool {
    !dir.join("cgroup.type").exists()
}

/// Moves the supervisor (our parent) and this worker from `own` into its
/// leaf [`LEAF`], then offers `own`'s controllers to its children. Each
/// step may fail (not delegated, other processes still in `own`): the runs
/// then get fewer limits, never fail; the reason is logged.
fn enter_leaf(own: &Path) {
    let leaf = own.join(LEAF);
    let moved = mkdir(&leaf).map_err(|e| e.to_string()).and_then(|()| {
        let procs = leaf.join("cgroup.procs");
        // The parent only while it is the supervisor sharing our cgroup
        // (not init after the supervisor died).
        let parent = nix::unistd::getppid().as_raw();
        let same = |pid: &str| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .ok()
                .and_then(|s| own_cgroup(&s))
        };
        let movers: &[i32] = if parent > 1 && same(&parent.to_string()) == same("self") {
            &[parent, 0]
        } else {
            &[0]
        };
        for &pid in movers {
            write_file(&procs, &pid.to_string())
                .map_err(|e| format!("cannot move process {pid} to {}: {e}", procs.display()))?;
        }
        Ok(())
    });
    if let Err(e) = moved {
        tracing::warn!("{e}; the run cgroups get no controllers");
        return;
    }
    let offered = std::fs::read_to_string(own.join("cgroup.controllers")).unwrap_or_default();
    for c in offered.split_whitespace() {
        if let Err(e) = write_file(&own.join("cgroup.subtree_control"), &format!("+{c}")) {
            tracing::warn!(cgroup = %own.display(), controller = c, "cannot enable a controller for the run cgroups: {e}");
        }
    }
}

/// Our own cgroup's directory, unless cgroups are turned off.
fn locate(enabled: bool) -> Result<PathBuf, CgroupError> {
    if !enabled {
        return Err(CgroupError::Off("config: cgroups = false"));
    }
    if std::env::var_os(NO_CGROUPS_ENV).is_some_and(|v| v != "0" && !v.is_empty()) {
        return Err(CgroupError::Off("CRONWARDEN_NO_CGROUPS is set"));
    }
    let read = |p: &str| {
        std::fs::read_to_string(p).map_err(|source| CgroupError::Read {
            path: p.into(),
            source,
        })
    };
    let (mount, root) =
        cgroup2_mount(&read("/proc/self/mountinfo")?).ok_or(CgroupError::NoMount)?;
    let own = own_cgroup(&read("/proc/self/cgroup")?).ok_or(CgroupError::NoOwnCgroup)?;
    own_dir(&mount, &root, &own).ok_or(CgroupError::NoOwnCgroup)
}

impl Hierarchy {
    /// Finds our cgroup in a writable cgroup2 hierarchy and makes the
    /// instance directory, or says why runs fall back to process groups.
    pub(crate) fn setup(state_dir: &Path, enabled: bool) -> Result<Hierarchy, CgroupError> {
        let own = locate(enabled)?;
        let base = base_of(&own);
        if base == own && !is_root(&own) {
            enter_leaf(&own);
        }
        let instance = base.join(instance_name(state_dir));
        mkdir(&instance)?;
        // Offer the run cgroups what our own cgroup offers the instance
        // directory (nothing on a hybrid host; memory, pids, cpu under
        // systemd's Delegate=yes). A failure only means fewer limits.
        let offered =
            std::fs::read_to_string(instance.join("cgroup.controllers")).unwrap_or_default();
        let mut controllers = vec![];
        for c in offered.split_whitespace() {
            if write_file(&instance.join("cgroup.subtree_control"), &format!("+{c}")).is_ok() {
                controllers.push(c.to_string());
            }
        }
        let instance_dir =
            File::open(&instance)
                .map(OwnedFd::from)
                .map_err(|source| CgroupError::Open {
                    path: instance.clone(),
                    source,
                })?;
        Ok(Hierarchy {
            instance,
            instance_dir,
            controllers,
        })
    }

    pub(crate) fn instance(&self) -> &Path {
        &self.instance
    }

    /// What runs here can be limited by.
    pub(crate) fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }

    /// The cgroup of run `id`, made now, with the job's limits written
    /// (those whose controller is missing are skipped: `check` warns).
    pub(crate) fn create_run(&self, id: u64, limits: &Limits) -> Result<RunCgroup, CgroupError> {
        let name = format!("run-{id}");
        let path = self.instance.join(&name);
        let instance = self.instance_dir.as_fd();
        made(&path, mkdir_at(instance, &name))?;
        let dir = open_at(instance, &name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
            .map(OwnedFd::from)
            .map_err(|source| CgroupError::Open {
                path: path.clone(),
                source,
            })?;
        let settings = [
            ("memory", "memory.max", limits.memory_max),
            ("pids", "pids.max", limits.pids_max),
            ("cpu", "cpu.weight", limits.cpu_weight.map(u64::from)),
        ];
        for (controller, file, value) in settings {
            let Some(v) = value else { continue };
            if !self.has(controller) {
                continue;
            }
            let written = open_at(dir.as_fd(), file, OFlag::O_WRONLY)
                .and_then(|mut f| f.write_all(v.to_string().as_bytes()));
            if let Err(e) = written {
                tracing::warn!(run = id, file, "cannot set a cgroup limit: {e}");
            }
        }
        Ok(RunCgroup { path, dir })
    }

    /// Removes the instance directory at a clean exit, if no run cgroup
    /// is left in it (a kept leftover's stays for the next start).
    pub(crate) fn remove_instance(&self) {
        let _ = std::fs::remove_dir(&self.instance);
    }

    /// Kills and removes every run cgroup left in the instance directory by
    /// an earlier generation. Returns (run id, processes killed) per cgroup
    /// that held any. Blocking but bounded ([`EMPTY_BOUND`] in all).
    pub(crate) fn sweep(&self) -> Vec<(u64, usize)> {
        let Ok(entries) = std::fs::read_dir(&self.instance) else {
            return vec![];
        };
        let mut left = vec![];
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = name
                .strip_prefix("run-")
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let path = e.path();
            let n = pids_in(&path).len();
            if n > 0 {
                kill_all(&path);
            }
            left.push((id, n, path));
        }
        let until = std::time::Instant::now() + EMPTY_BOUND;
        let mut killed = vec![];
        for (id, n, path) in left {
            while populated(&path) && std::time::Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            if let Err(e) = std::fs::remove_dir(&path) {
                tracing::warn!(cgroup = %path.display(), "cannot remove a leftover run cgroup: {e}");
            }
            if n > 0 {
                killed.push((id, n));
            }
        }
        killed
    }
}

/// One run's cgroup.
#[derive(Debug)]
pub(crate) struct RunCgroup {
    path: PathBuf,
    /// The cgroup's directory, open: clone3 starts the job in it.
    dir: OwnedFd,
}

impl RunCgroup {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The directory, for clone3(CLONE_INTO_CGROUP).
    pub(crate) fn dir_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.dir)
    }

    /// `cgroup.procs`, open for a forked child to write itself into before
    /// exec (close-on-exec, so the job never holds it): the fallback when
    /// clone3 cannot start it there.
    pub(crate) fn open_procs(&self) -> Result<OwnedFd, CgroupError> {
        let procs = self.path.join("cgroup.procs");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&procs)
            .map(OwnedFd::from)
            .map_err(|source| CgroupError::Open {
                path: procs,
                source,
            })
    }

    /// The processes in the cgroup now.
    pub(crate) fn pids(&self) -> Vec<u32> {
        pids_in(&self.path)
    }

    /// Whether it, or a cgroup below it, holds a process now.
    pub(crate) fn populated(&self) -> bool {
        self.read("cgroup.events").is_ok_and(|s| populated_in(&s))
    }

    /// One of its files the kernel prints in one piece, read through the
    /// directory held open (see [`read_small`]).
    fn read(&self, file: &str) -> std::io::Result<String> {
        read_small_from(open_at(self.dir_fd(), file, OFlag::O_RDONLY)?)
    }

    /// Sends `sig` to every process in the cgroup but `except`, each only
    /// while it is still a member (see [`signal_if_member`]).
    pub(crate) fn signal_members(&self, sig: nix::sys::signal::Signal, except: u32) {
        for p in self.pids().into_iter().filter(|p| *p != except) {
            signal_if_member(&self.path, p, sig);
        }
    }

    /// Ends every process in the cgroup, forks in flight included.
    pub(crate) fn kill(&self) {
        kill_all(&self.path);
    }

    /// CPU time used by every process that ever ran in it, µs.
    pub(crate) fn cpu_usec(&self) -> Option<u64> {
        self.read("cpu.stat").ok().and_then(|s| usage_usec(&s))
    }

    /// Peak memory, bytes (only with the memory controller).
    pub(crate) fn memory_peak(&self) -> Option<u64> {
        self.read("memory.peak")
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Waits (bounded, async) for the cgroup to empty, unless it was
    /// just seen empty (`empty`: nothing can enter an empty cgroup of
    /// ours), reads what the run cost (CPU µs, peak memory bytes), then
    /// has it removed. A cgroup that does not empty stays: the next start
    /// sweeps it.
    pub(crate) async fn finish(self, empty: bool) -> (Option<u64>, Option<u64>) {
        let until = tokio::time::Instant::now() + EMPTY_BOUND;
        while !empty && self.populated() && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Off the loop. The cost is read at once (the run's record waits
        // for it); the rmdir, which waits for the kernel's cgroup lock that
        // every start's mkdir and clone3 take too, waits for the starts in
        // flight (a burst's starts and ends overlap).
        crate::spawner::cleanup(move || self.remove())
            .await
            .unwrap_or_default()
    }

    fn remove(self) -> (Option<u64>, Option<u64>) {
        let cost = (self.cpu_usec(), self.memory_peak());
        drop(self.dir);
        let path = self.path;
        crate::spawner::remove_when_quiet(move || {
            if let Err(e) = std::fs::remove_dir(&path) {
                tracing::warn!(cgroup = %path.display(), "cannot remove a run's cgroup: {e}");
            }
        });
        cost
    }
}

fn mkdir(path: &Path) -> Result<(), CgroupError> {
    made(path, std::fs::create_dir(path))
}

/// What making directory `path` came to: there already is as good as made.
fn made(path: &Path, outcome: std::io::Result<()>) -> Result<(), CgroupError> {
    match outcome {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(CgroupError::Create {
            path: path.into(),
            source,
        }),
    }
}

fn write_file(path: &Path, value: &str) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all(value.as_bytes())
}

/// The text of a cgroup file the kernel prints in one piece
/// (`cgroup.events`, `cpu.stat`, `memory.peak`) in three system calls
/// (open, read, close): `read_to_string` first asks for a size, which
/// cgroupfs does not know, then reads until a read gives nothing (issue
/// 18: every run's end reads a few of these). Not for a list such as
/// `cgroup.procs`, which the kernel hands out a page at a time: there a
/// short read is not the end.
fn read_small(path: &Path) -> std::io::Result<String> {
    read_small_from(File::open(path)?)
}

/// [`read_small`] of a file already open.
fn read_small_from(mut f: File) -> std::io::Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; 4096];
    let n = f.read(&mut buf)?;
    let full = n == buf.len();
    buf.truncate(n);
    if full {
        f.read_to_end(&mut buf)?;
    }
    String::from_utf8(buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

fn pids_in(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Signals `pid` only if it is (still) in cgroup `dir`: a pidfd pins the
/// process first, so the membership read after it is about that very
/// process, never a later one given the same number.
fn signal_if_member(dir: &Path, pid: u32, sig: nix::sys::signal::Signal) {
    let Ok(pidfd) = crate::sys::pidfd_open(pid) else {
        return;
    };
    let member = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|s| own_cgroup(&s))
        .is_some_and(|rel| {
            let rel = rel.trim_start_matches('/');
            !rel.is_empty() && dir.ends_with(rel)
        });
    if member {
        let _ = crate::sys::pidfd_signal(std::os::fd::AsFd::as_fd(&pidfd), sig);
    }
}

pub(crate) fn populated(dir: &Path) -> bool {
    match read_small(&dir.join("cgroup.events")) {
        Ok(s) => populated_in(&s),
        // No events file (not a cgroup any more): nothing to wait for.
        Err(_) => false,
    }
}

/// `cgroup.kill` (Linux 5.14); before it, SIGKILL to every listed process,
/// a few rounds to catch children forked meanwhile.
fn kill_all(dir: &Path) {
    if write_file(&dir.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    for _ in 0..5 {
        let pids = pids_in(dir);
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            signal_if_member(dir, pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount_of_a_hybrid_host() {
        let mi = "25 1 0:23 / /sys rw - sysfs sysfs rw\n\
                  31 25 0:27 / /sys/fs/cgroup ro - tmpfs tmpfs ro\n\
                  41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(mi),
            Some((PathBuf::from("/sys/fs/cgroup/unified"), "/".to_string()))
        );
        assert_eq!(
            cgroup2_mount("25 1 0:23 / /sys rw - sysfs sysfs rw\n"),
            None
        );
    }

    #[test]
    fn own_cgroup_is_the_v2_line() {
        let pc = "9:name=systemd:/\n8:pids:/x\n0::/system.slice/cronwarden.service\n";
        assert_eq!(
            own_cgroup(pc).as_deref(),
            Some("/system.slice/cronwarden.service")
        );
        assert_eq!(own_cgroup("8:pids:/\n"), None);
    }

    #[test]
    fn own_dir_joins_relative_to_the_mount_root() {
        let m = Path::new("/sys/fs/cgroup");
        assert_eq!(
            own_dir(m, "/", "/").unwrap(),
            PathBuf::from("/sys/fs/cgroup")
        );
        assert_eq!(
            own_dir(m, "/", "/a.slice/b.service").unwrap(),
            PathBuf::from("/sys/fs/cgroup/a.slice/b.service")
        );
        assert_eq!(own_dir(m, "/a.slice", "/a.slice/b").unwrap(), m.join("b"));
        assert_eq!(own_dir(m, "/other", "/a.slice/b"), None);
        assert_eq!(own_dir(m, "/", "/a/../b"), None);
    }

    #[test]
    fn the_base_is_the_leafs_parent() {
        let p = Path::new("/sys/fs/cgroup/system.slice/cronwarden.service");
        assert_eq!(base_of(p), p);
        assert_eq!(base_of(&p.join(LEAF)), p);
        assert_eq!(base_of(Path::new("/")), Path::new("/"));
    }

    #[test]
    fn reads_cpu_usage_and_populated() {
        let s = "usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\n";
        assert_eq!(usage_usec(s), Some(1_234_567));
        assert_eq!(usage_usec("user_usec 5\n"), None);
        assert!(populated_in("populated 1\nfrozen 0\n"));
        assert!(!populated_in("populated 0\nfrozen 0\n"));
    }

    #[test]
    fn instance_names_are_stable_and_distinct() {
        let a = instance_name(Path::new("/nonexistent/a"));
        assert_eq!(a, instance_name(Path::new("/nonexistent/a")));
        assert_ne!(a, instance_name(Path::new("/nonexistent/b")));
        assert!(a.starts_with("cronwarden-") && a.len() == "cronwarden-".len() + 16);
    }
}
