//! Reading the clocks, and telling a wall-clock step from a suspend.
//!
//! The only place the worker reads time for scheduling: the loop reads
//! [`Clocks`] once per input and hands them to the plan, which never reads
//! a clock itself (so its tests drive a fake one). Wall time is only used
//! to compute fire instants; jumps are judged against CLOCK_MONOTONIC
//! (stops while suspended) and CLOCK_BOOTTIME (does not). The age of a
//! claim ahead's win (several hosts) is boot time too ([`boot_time`]).

use std::time::Duration;

use cronwarden_shared::status::ClockJumpKind;
use jiff::{SignedDuration, Timestamp};

/// Wall-clock movement beyond this, against the monotonic clock, between
/// two turns is a clock jump (NTP step, suspend, VM restore).
const CLOCK_JUMP: Duration = Duration::from_secs(2);

/// The three clocks at one moment: wall time (as the scheduler sees it),
/// CLOCK_MONOTONIC and CLOCK_BOOTTIME.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Clocks {
    pub wall: Timestamp,
    pub mono: Duration,
    pub boot: Duration,
}

impl Clocks {
    pub fn read() -> Clocks {
        use nix::time::{clock_gettime, ClockId};
        let read = |id| clock_gettime(id).map(Duration::from).unwrap_or_default();
        let mono = read(ClockId::CLOCK_MONOTONIC);
        Clocks {
            wall: wall_now(),
            mono,
            boot: boot_time(),
        }
    }
}

/// CLOCK_BOOTTIME: monotonic, and running on while the machine is
/// suspended, as wall time (and so the shared ledger's leases) does.
pub(crate) fn boot_time() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(Duration::from)
        .unwrap_or_default()
}

/// What moved between two readings, if anything did: the wall clock's
/// movement beyond the monotonic one, and whether that was a suspend
/// (boot time ran ahead of monotonic by more than [`CLOCK_JUMP`]) or a
/// step of the wall clock. Movements within `CLOCK_JUMP` are nothing.
pub(crate) fn clock_event(prev: Clocks, now: Clocks) -> Option<(SignedDuration, ClockJumpKind)> {
    let signed = |d: Duration| SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX);
    let mono_step = signed(now.mono.saturating_sub(prev.mono));
    let boot_step = signed(now.boot.saturating_sub(prev.boot));
    let jump = now.wall.duration_since(prev.wall) - mono_step;
    let limit = signed(CLOCK_JUMP);
    if boot_step - mono_step > limit {
        Some((jump, ClockJumpKind::Suspend))
    } else if jump.abs() > limit {
        Some((jump, ClockJumpKind::Step))
    } else {
        None
    }
}

/// Wall time as the scheduler sees it. In test builds a fail point can add
/// an offset read from a file (`worker::clock_offset=return(PATH)`, seconds),
/// so a test can jump the worker's clock without touching the machine's.
pub(crate) fn wall_now() -> Timestamp {
    let now = Timestamp::now();
    match fail::eval("worker::clock_offset", |path| path) {
        Some(Some(path)) => {
            let secs: i64 = std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            now.checked_add(SignedDuration::from_secs(secs))
                .unwrap_or(now)
        }
        _ => now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(wall_s: i64, mono_s: u64, boot_s: u64) -> Clocks {
        Clocks {
            wall: Timestamp::from_second(1_800_000_000 + wall_s).unwrap(),
            mono: Duration::from_secs(mono_s),
            boot: Duration::from_secs(boot_s),
        }
    }

    #[test]
    fn clock_events_tell_a_step_from_a_suspend() {
        let t0 = at(0, 100, 100);
        // Ordinary progress, and drift within the bound: nothing.
        assert_eq!(clock_event(t0, at(1, 101, 101)), None);
        assert_eq!(clock_event(t0, at(3, 101, 101)), None);
        // The wall clock set 30 s ahead, or 30 s back: steps.
        assert_eq!(
            clock_event(t0, at(31, 101, 101)),
            Some((SignedDuration::from_secs(30), ClockJumpKind::Step))
        );
        assert_eq!(
            clock_event(t0, at(-29, 101, 101)),
            Some((SignedDuration::from_secs(-30), ClockJumpKind::Step))
        );
        // An hour asleep: monotonic stood still, boot time and the wall
        // clock ran on.
        assert_eq!(
            clock_event(t0, at(3601, 101, 3701)),
            Some((SignedDuration::from_secs(3600), ClockJumpKind::Suspend))
        );
        // A suspend is one even if the wall clock was not kept (no RTC).
        assert_eq!(
            clock_event(t0, at(1, 101, 3701)),
            Some((SignedDuration::ZERO, ClockJumpKind::Suspend))
        );
        // A slow turn (the loop stopped, not the machine) is no event.
        assert_eq!(clock_event(t0, at(60, 160, 160)), None);
    }
}
