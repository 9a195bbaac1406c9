//! Three descriptors per spawning thread, at low numbers, where a job's
//! stdin, stdout and stderr are placed for its clone. The child then
//! shares our descriptor table only until its first system call, which
//! copies just the descriptors below the slots (close_range with
//! CLOSE_RANGE_UNSHARE), instead of getting a copy of the whole table at
//! the clone and closing it again, one descriptor at a time, at its exec
//! (issue 18: with a burst's pipes and pidfds open, those closes were a
//! tenth of each start's CPU, and grew with every run in flight).

use std::{
    cell::RefCell,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    sync::OnceLock,
};

/// Slots made at or above this number are not kept: the copy below them
/// would cost about what it saves (the thread then uses the full copy).
const LOW: RawFd = 256;

/// CLOSE_RANGE_UNSHARE (linux/close_range.h, Linux 5.9).
pub(super) const CLOSE_RANGE_UNSHARE: libc::c_uint = 1 << 1;

/// Where a start's stdio was placed: the child gets these as 0, 1 and 2,
/// and keeps only the descriptors below `above`.
#[derive(Clone, Copy)]
pub(super) struct Placed {
    pub fds: [RawFd; 3],
    pub above: libc::c_uint,
}

struct Slots {
    fds: [OwnedFd; 3],
    /// What the slots hold between starts, nothing of any run: the
    /// worker's one /dev/null ([`super::dev_null`]), also every job's
    /// stdin, which then needs no placing.
    null: RawFd,
    /// Which slots hold something else than `null` now.
    placed: [std::cell::Cell<bool>; 3],
}

thread_local! {
    /// This thread's slots: `None` until its first start, then whether it
    /// has any.
    static SLOTS: RefCell<Option<Option<Slots>>> = const { RefCell::new(None) };
}

/// Whether the kernel has close_range with CLOSE_RANGE_UNSHARE, and not
/// the bug in it that copied the worker's "these 64 descriptors are all
/// taken" bits into the child's smaller table (CVE-2024-45025): the job's
/// table then skipped whole blocks of free descriptors, and a job with a
/// low `nofile` limit ran out early. Known by the kernel's version; the
/// call itself is asked once with nothing to close (never with the flag,
/// which would give the asking thread a table of its own).
fn supported() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        // SAFETY: uname fills a zeroed struct of its own type; `release`
        // is then a NUL-terminated string inside it.
        let release = unsafe {
            let mut u: libc::utsname = std::mem::zeroed();
            if libc::uname(&mut u) == 0 {
                std::ffi::CStr::from_ptr(u.release.as_ptr())
                    .to_string_lossy()
                    .into_owned()
            } else {
                String::new()
            }
        };
        if !unshare_is_sound(&release) {
            return false;
        }
        // SAFETY: close_range takes plain integers; this range is empty
        // of descriptors.
        let r = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                libc::c_uint::MAX,
                libc::c_uint::MAX,
                0 as libc::c_uint,
            )
        };
        r == 0
    })
}

/// Whether the kernel `release` (as uname gives it) has the fix for
/// CVE-2024-45025: 6.11, and the stable releases it was backported to.
/// A distribution's own backport under an older number is not known
/// here: such a kernel takes the full copy, as before.
fn unshare_is_sound(release: &str) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    let (Some(Some(major)), Some(Some(minor))) = (parts.next(), parts.next()) else {
        return false;
    };
    let patch = parts.next().flatten().unwrap_or(0);
    match (major, minor) {
        (7.., _) | (6, 11..) => true,
        (6, 10) => patch >= 7,
        (6, 6) => patch >= 48,
        (6, 1) => patch >= 107,
        (5, 15) => patch >= 166,
        (5, 10) => patch >= 225,
        _ => false,
    }
}

impl Slots {
    fn make() -> Option<Slots> {
        if !supported() {
            return None;
        }
        let null = super::dev_null()?.as_raw_fd();
        let dup = || {
            // SAFETY: F_DUPFD_CLOEXEC of an open descriptor makes a new
            // one (the lowest free from 3), which we own.
            let fd = unsafe { libc::fcntl(null, libc::F_DUPFD_CLOEXEC, 3) };
            // SAFETY: see above; -1 is not taken.
            (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
        };
        let fds = [dup()?, dup()?, dup()?];
        if fds.iter().any(|fd| fd.as_raw_fd() >= LOW) {
            return None;
        }
        Some(Slots {
            fds,
            null,
            placed: Default::default(),
        })
    }

    /// Puts each of `stdio` in its slot (close-on-exec, like everything
    /// of ours).
    fn place(&self, stdio: [RawFd; 3]) -> std::io::Result<Placed> {
        for ((slot, placed), fd) in self.fds.iter().zip(&self.placed).zip(stdio) {
            if fd != self.null || placed.get() {
                // Marked first: a failed dup3 may have closed the slot's.
                placed.set(true);
                dup_onto(fd, slot.as_raw_fd())?;
            }
        }
        let fds = [0, 1, 2].map(|i| self.fds[i].as_raw_fd());
        let top = fds.iter().copied().max().unwrap_or(2);
        Ok(Placed {
            fds,
            above: (top + 1) as libc::c_uint,
        })
    }

    /// Back to /dev/null: the slots must not hold a run's pipe ends, or
    /// its output would never reach its end of file.
    fn clear(&self) -> std::io::Result<()> {
        for (slot, placed) in self.fds.iter().zip(&self.placed) {
            if placed.get() {
                dup_onto(self.null, slot.as_raw_fd())?;
                placed.set(false);
            }
        }
        Ok(())
    }
}

/// dup3 with O_CLOEXEC: `to` now refers to what `from` does.
fn dup_onto(from: RawFd, to: RawFd) -> std::io::Result<()> {
    if from == to {
        return Ok(());
    }
    // SAFETY: dup3 on two descriptor numbers; `to` is one of our slots.
    match unsafe { libc::dup3(from, to, libc::O_CLOEXEC) } {
        -1 => Err(std::io::Error::last_os_error()),
        _ => Ok(()),
    }
}

/// Runs `clone` with `stdio` placed in this thread's slots (`Some`), or
/// as they are (`None`: no slots here, or they could not be filled), and
/// empties the slots again once it returns, that is once the child has
/// exec'd or failed (the clone is vfork-like).
pub(super) fn placed<T>(stdio: [RawFd; 3], clone: impl FnOnce(Option<Placed>) -> T) -> T {
    SLOTS.with(|cell| {
        let mut slots = cell.borrow_mut();
        let slots = slots.get_or_insert_with(Slots::make);
        let Some(s) = slots.as_ref() else {
            return clone(None);
        };
        let placed = s.place(stdio);
        let failed = std::cell::Cell::new(placed.is_err());
        let out = {
            // Emptied however `clone` returns (or unwinds).
            let _empty = Empty {
                slots: s,
                failed: &failed,
            };
            clone(placed.as_ref().ok().copied())
        };
        if failed.get() {
            // Never seen (dup3 onto a descriptor we hold). Not trusted
            // again: dropped, they close, and with them any pipe end.
            *slots = None;
        }
        out
    })
}

/// Empties the slots when dropped; says if it could not.
struct Empty<'a> {
    slots: &'a Slots,
    failed: &'a std::cell::Cell<bool>,
}

impl Drop for Empty<'_> {
    fn drop(&mut self) {
        if self.slots.clear().is_err() {
            self.failed.set(true);
        }
    }
}

/// Whether this thread places stdio in slots (for the tests).
#[cfg(test)]
pub(crate) fn in_use_here() -> bool {
    SLOTS.with(|cell| matches!(&*cell.borrow(), Some(Some(_))))
}

#[cfg(test)]
mod tests {
    use super::unshare_is_sound;

    /// Against the fixed releases of CVE-2024-45025, as uname spells
    /// them.
    #[test]
    fn only_kernels_with_the_close_range_fix_share_the_table() {
        let table = [
            ("6.18.44-fc-v1147", true),
            ("6.11.0", true),
            ("7.0", true),
            ("6.10.7-arch1-1", true),
            ("6.10.6", false),
            ("6.8.0-45-generic", false),
            ("6.6.48", true),
            ("6.6.47", false),
            ("6.1.107", true),
            ("6.1.0-25-amd64", false),
            ("5.15.166", true),
            ("5.15.0-119-generic", false),
            ("5.10.225", true),
            ("5.14.0-427.el9.x86_64", false),
            ("5.4.283", false),
            ("", false),
            ("garbage", false),
        ];
        for (release, sound) in table {
            assert_eq!(unshare_is_sound(release), sound, "{release}");
        }
    }
}
