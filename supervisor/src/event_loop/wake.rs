//! When the supervisor's loop wakes by itself: one timer at the earliest
//! of its deadlines, and the tick's work done on the heartbeat's wake-up.
//!
//! tokio's timer wheel wakes its driver at the start of a timer's slot
//! (64 ms slots for timers up to 4 s away, 4 s slots beyond) to move the
//! timer to a finer level, and again when it is due. Separate timers for
//! the stall check, the overdue heartbeat and the tick, each re-armed
//! after every heartbeat, cost about five wake-ups a second at idle
//! (issue 18). One timer, and a tick that rides on the heartbeat's own
//! wake-up when it is nearly due, leave about one: the heartbeat's. The
//! one timer is a timerfd (`cronwarden_shared::alarm`), not the wheel's,
//! so even that one timer costs one wake-up, not two or three.

use std::time::Duration;

use tokio::time::Instant;

/// Conditions are re-evaluated this often without events.
const TICK: Duration = Duration::from_secs(1);
/// A wake-up this close before the tick does the tick's work then.
const TICK_EARLY: Duration = Duration::from_millis(100);
/// How late the tick's own timer is: past the wheel's 64 ms slot, so that
/// the slot's start (the first wake-up) comes after the heartbeat that
/// normally does the tick's work. Without events, ticks come every 1.1 s.
const TICK_LATE: Duration = Duration::from_millis(100);

pub(super) struct Tick {
    last: Instant,
}

impl Tick {
    /// Due at once: the loop's first turn ticks (as tokio's interval did).
    pub(super) fn first(now: Instant) -> Tick {
        Tick {
            last: now.checked_sub(TICK).unwrap_or(now),
        }
    }

    #[cfg(test)]
    fn new(last: Instant) -> Tick {
        Tick { last }
    }

    pub(super) fn due(&self, now: Instant) -> bool {
        now + TICK_EARLY >= self.last + TICK
    }

    pub(super) fn done(&mut self, now: Instant) {
        self.last = now;
    }

    /// The tick's own timer, for a loop that no event wakes.
    pub(super) fn timer(&self) -> Instant {
        self.last + TICK + TICK_LATE
    }
}

/// The earliest of the deadlines that are set.
pub(super) fn earliest<const N: usize>(deadlines: [Option<Instant>; N]) -> Option<Instant> {
    deadlines.into_iter().flatten().min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tick_is_due_early_on_another_wake_up_and_its_timer_late() {
        let t0 = Instant::now();
        let mut t = Tick::new(t0);
        assert!(!t.due(t0 + Duration::from_millis(850)));
        assert!(t.due(t0 + Duration::from_millis(900)));
        assert_eq!(t.timer(), t0 + Duration::from_millis(1100));
        t.done(t0 + Duration::from_millis(950));
        assert!(!t.due(t0 + Duration::from_millis(1800)));
        assert!(t.due(t0 + Duration::from_millis(1850)));
        let now = t0 + Duration::from_secs(5);
        assert!(Tick::first(now).due(now));
    }

    #[test]
    fn earliest_ignores_unset_deadlines() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(5);
        assert_eq!(earliest([None, Some(later), Some(t0), None]), Some(t0));
        assert_eq!(earliest::<2>([None, None]), None);
    }
}
