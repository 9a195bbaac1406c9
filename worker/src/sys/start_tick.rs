//! A new process's start time without reading /proc: the kernel stamps
//! it with CLOCK_BOOTTIME inside clone3, and /proc/PID/stat shows that in
//! clock ticks, so two readings around the clone that fall in one tick
//! give it (issue 18: three system calls per start).

/// CLOCK_BOOTTIME, ns: the clock the kernel stamps a new process with
/// (its start time in /proc/PID/stat is that, in clock ticks). Through
/// the vDSO: no system call.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) fn boottime_ns() -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills a local timespec.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } == 0;
    ok.then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// The start time (clock ticks since boot, field 22 of /proc/PID/stat) of
/// a process cloned between two CLOCK_BOOTTIME readings, when both fall
/// in the same tick: known without reading /proc (issue 18: three system
/// calls per start). `None` across a tick boundary: the caller reads it.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) fn same_tick(before_ns: Option<u64>, after_ns: Option<u64>) -> Option<u64> {
    static NS_PER_TICK: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let per_tick = (*NS_PER_TICK.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        // The kernel divides by NSEC_PER_SEC / USER_HZ only when it is
        // whole; otherwise, no shortcut.
        (hz > 0 && 1_000_000_000 % hz == 0).then(|| 1_000_000_000 / hz as u64)
    }))?;
    ticks_if_same(before_ns?, after_ns?, per_tick)
}

/// [`same_tick`]'s arithmetic.
fn ticks_if_same(before_ns: u64, after_ns: u64, per_tick: u64) -> Option<u64> {
    let (b, a) = (before_ns / per_tick, after_ns / per_tick);
    (b == a).then_some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_time_is_known_only_inside_one_tick() {
        let ms = 1_000_000;
        assert_eq!(ticks_if_same(20 * ms, 29 * ms + 999_999, 10 * ms), Some(2));
        assert_eq!(ticks_if_same(19 * ms + 999_999, 20 * ms, 10 * ms), None);
        assert_eq!(ticks_if_same(0, 0, 10 * ms), Some(0));
        assert_eq!(ticks_if_same(5 * ms, 35 * ms, 10 * ms), None);
    }

    /// Against /proc: a process made between two readings that fall in
    /// one tick started in that tick, as /proc/PID/stat counts it.
    #[test]
    fn the_start_time_from_the_clock_is_the_one_proc_gives() {
        let mut checked = 0;
        for _ in 0..500 {
            let before = boottime_ns();
            let mut child = std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap();
            let after = boottime_ns();
            let from_proc = crate::procfs::start_time(child.id());
            child.kill().unwrap();
            child.wait().unwrap();
            if let Some(ticks) = same_tick(before, after) {
                assert_eq!(Some(ticks), from_proc, "pid {}", child.id());
                checked += 1;
                if checked == 20 {
                    return;
                }
            }
        }
        panic!("only {checked} of 500 starts fell inside one tick");
    }
}
