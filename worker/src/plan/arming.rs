//! Where a job should be armed after time moved oddly: a backward step of
//! the wall clock, a stored next fire off its schedule at start, or a
//! supervisor that found the arming wrong ([`Command::Rearm`]). One pure
//! rule for the three, so a job is armed the same way whichever noticed.
//!
//! The rule, given the job's armed fire `armed`, its last accounted fire
//! `last` (run, coalesced or skipped) and the wall time `now`; `first` is
//! the schedule's first fire after `now` on the job's cadence:
//!
//! - `armed` no later than `first`: kept (a fire at or before `now` is due
//!   and goes through the misfire rules);
//! - `last` after `now` (the clock is behind what was accounted: it was
//!   stepped back, running or stopped), as a DST fold is handled: a
//!   schedule that repeats within the stepped-back span `(now, last]`
//!   (two fires or more there) keeps its cadence on the new clock and is
//!   armed at `first` (a per-second job keeps firing every second); one
//!   that does not (a daily 12:00 job stepped back from 12:03 to 11:55)
//!   keeps the fire after `last`, so a fixed-time fire already recorded is
//!   not run twice;
//! - otherwise `armed` cannot be produced from what was accounted: it
//!   passes over fires nobody accounted. It is corrected to the fire after
//!   `last` (those fires then go through the misfire rules, so each gets
//!   its record), or to `first` when nothing was accounted yet.
//!
//! [`Command::Rearm`]: cronwarden_shared::wire::Command::Rearm

use cronwarden_shared::schedule::Schedule;
use jiff::{SignedDuration, Timestamp};

/// What to do with a job's arming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arming {
    /// The arming is one the schedule gives: keep it.
    Keep,
    /// The clock went back over a span the schedule repeats in: arm the
    /// first fire after now (a second pass over the span, as in a fold).
    SecondPass(Timestamp),
    /// The arming passes over fires nobody accounted: arm this instead.
    Corrected(Timestamp),
}

impl Arming {
    /// The fire to arm, unless the arming is kept.
    pub fn to(self) -> Option<Timestamp> {
        match self {
            Arming::Keep => None,
            Arming::SecondPass(t) | Arming::Corrected(t) => Some(t),
        }
    }
}

/// Where a job is to be armed: see the module doc.
pub(crate) fn arming(
    schedule: &Schedule,
    armed: Option<Timestamp>,
    last: Option<Timestamp>,
    now: Timestamp,
) -> Arming {
    let anchor = cadence_anchor(schedule, last, now);
    let Some(first) = schedule.next_after(now, anchor) else {
        // A schedule that never fires again has nothing to arm.
        return Arming::Keep;
    };
    // Nothing armed while the schedule still fires: as far off as can be.
    let beyond = |t: Timestamp| armed.is_none_or(|a| a > t);
    if !beyond(first) {
        return Arming::Keep;
    }
    match last {
        Some(last) if last > now && repeats_within(schedule, anchor, now, last) => {
            Arming::SecondPass(first)
        }
        Some(last) => match schedule.next_after(last, Some(last)) {
            Some(after_last) if beyond(after_last) => Arming::Corrected(after_last),
            _ => Arming::Keep,
        },
        None => Arming::Corrected(first),
    }
}

/// Whether the schedule fires at least twice in `(from, to]`.
fn repeats_within(
    schedule: &Schedule,
    anchor: Option<Timestamp>,
    from: Timestamp,
    to: Timestamp,
) -> bool {
    let Some(one) = schedule.next_after(from, anchor) else {
        return false;
    };
    let anchor = anchor.map(|_| one);
    schedule
        .next_after(one, anchor)
        .is_some_and(|two| one <= to && two <= to)
}

/// The `@every` cadence as seen from `now`: an instant on it no later than
/// `now` (the last accounted fire, moved back by whole periods when the
/// clock is behind it), so the first fire after `now` keeps the cadence.
/// `None` for cron schedules, which have no anchor.
fn cadence_anchor(
    schedule: &Schedule,
    last: Option<Timestamp>,
    now: Timestamp,
) -> Option<Timestamp> {
    let period = SignedDuration::try_from(schedule.every()?).ok()?;
    let last = last?;
    if last <= now {
        return Some(last);
    }
    let behind = last.duration_since(now).as_nanos();
    let periods = behind / period.as_nanos().max(1) + 1;
    let back = SignedDuration::from_nanos(i64::try_from(periods * period.as_nanos()).ok()?);
    last.checked_sub(back).ok()
}

#[cfg(test)]
mod tests {
    //! The rule against a brute-force oracle: schedules `*/N` in the
    //! seconds field (and `@every Ns` anchored on a whole second), whose
    //! fires are the whole seconds divisible by N (or `anchor + k·N`), so
    //! "the first fire after t" and "fires in a span" are counted second by
    //! second, without the schedule code under test.

    use super::*;
    use jiff::tz::TimeZone;
    use proptest::prelude::*;

    /// 2030-01-01T00:00:00Z.
    const T0: i64 = 1_893_456_000;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(T0 + s).unwrap()
    }

    fn cron(n: i64) -> Schedule {
        Schedule::parse(&format!("*/{n} * * * * *"), &TimeZone::UTC).unwrap()
    }

    fn every(n: i64) -> Schedule {
        Schedule::parse(&format!("@every {n}s"), &TimeZone::UTC).unwrap()
    }

    /// Fire times of the oracle schedule: multiples of `n` (cron), or
    /// `anchor + k·n` for any integer k (`@every`, anchored).
    fn fires(n: i64, anchor: Option<i64>) -> impl Fn(i64) -> bool {
        move |s| (s - anchor.unwrap_or(0)).rem_euclid(n) == 0
    }

    fn oracle(n: i64, anchor: Option<i64>, armed: i64, last: Option<i64>, now: i64) -> Arming {
        let is_fire = fires(n, anchor);
        let first_after = |t: i64| ((t + 1)..).find(|s| is_fire(*s)).unwrap();
        let first = first_after(now);
        if armed <= first {
            return Arming::Keep;
        }
        match last {
            Some(l) if l > now => {
                let in_span = ((now + 1)..=l).filter(|s| is_fire(*s)).count();
                if in_span >= 2 {
                    Arming::SecondPass(ts(first))
                } else if armed > first_after(l) {
                    Arming::Corrected(ts(first_after(l)))
                } else {
                    Arming::Keep
                }
            }
            Some(l) if first_after(l) < armed => Arming::Corrected(ts(first_after(l))),
            Some(_) => Arming::Keep,
            None => Arming::Corrected(ts(first)),
        }
    }

    #[test]
    fn a_per_second_job_stepped_back_ten_minutes_keeps_firing() {
        let s = cron(1);
        // Fired at 600, armed for 601, the clock now reads 0.
        assert_eq!(
            arming(&s, Some(ts(601)), Some(ts(600)), ts(0)),
            Arming::SecondPass(ts(1))
        );
    }

    #[test]
    fn a_daily_job_that_fired_is_not_run_again_after_a_step_back() {
        let s = Schedule::parse("0 0 12 * * *", &TimeZone::UTC).unwrap();
        let noon = Timestamp::from_second(T0 + 12 * 3600).unwrap();
        let next_noon = noon + SignedDuration::from_hours(24);
        let before = noon - SignedDuration::from_mins(5);
        assert_eq!(
            arming(&s, Some(next_noon), Some(noon), before),
            Arming::Keep
        );
        // Never fired (configured after noon): nothing was recorded, so
        // today's noon may come.
        assert_eq!(
            arming(&s, Some(next_noon), None, before),
            Arming::Corrected(noon)
        );
    }

    #[test]
    fn a_stored_fire_a_day_ahead_is_corrected_to_the_fire_after_the_last() {
        let s = cron(1);
        assert_eq!(
            arming(&s, Some(ts(86_400 + 20)), Some(ts(10)), ts(20)),
            Arming::Corrected(ts(11))
        );
        // In step with the schedule: kept, due fires included.
        assert_eq!(arming(&s, Some(ts(11)), Some(ts(10)), ts(20)), Arming::Keep);
        assert_eq!(arming(&s, Some(ts(21)), Some(ts(20)), ts(20)), Arming::Keep);
        // A job that lost its arming altogether is armed again.
        assert_eq!(
            arming(&s, None, Some(ts(10)), ts(20)),
            Arming::Corrected(ts(11))
        );
        assert_eq!(arming(&s, None, None, ts(20)), Arming::Corrected(ts(21)));
    }

    #[test]
    fn an_every_job_keeps_its_cadence_on_the_new_clock() {
        let s = every(7);
        // Anchored at 3 (fires 3, 10, 17, ...); fired at 703, stepped back
        // to 100: the first fire after 100 on that cadence is 101.
        assert_eq!(
            arming(&s, Some(ts(710)), Some(ts(703)), ts(100)),
            Arming::SecondPass(ts(101))
        );
    }

    proptest! {
        #[test]
        fn the_rule_matches_the_oracle(
            n in 1i64..=30,
            is_every in any::<bool>(),
            anchor in 0i64..30,
            last in proptest::option::of(0i64..2_000),
            armed_ahead in 1i64..3_000,
            now in 0i64..2_000,
        ) {
            // A cron `*/N` has fires N apart only when N divides 60.
            let n = if is_every { n } else { [1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30][(n as usize) % 11] };
            let (schedule, anchor) = if is_every {
                (every(n), Some(anchor))
            } else {
                (cron(n), None)
            };
            // An @every job's last accounted fire is on its cadence; without
            // one, a cron schedule is anchored at 0 (its multiples).
            let last = last.map(|l| match anchor {
                Some(a) => a + (l - a).div_euclid(n) * n,
                None => l.div_euclid(n) * n,
            });
            // The armed fire is on the cadence too (the plan only ever arms
            // what the schedule gives).
            let base = last.unwrap_or(now);
            let on = fires(n, anchor);
            let armed = ((base + armed_ahead)..).find(|s| on(*s)).unwrap();
            // Without an accounted fire, an @every oracle has no anchor to
            // count from: the cadence starts at the armed fire.
            let (schedule_anchor, oracle_anchor) = match (anchor, last) {
                (Some(_), None) => (None, None),
                (a, _) => (a, a),
            };
            let got = arming(&schedule, Some(ts(armed)), last.map(ts), ts(now));
            if schedule_anchor.is_none() && is_every {
                // A fresh cadence: only "kept or re-armed after now" can be
                // said independently.
                if let Some(to) = got.to() {
                    prop_assert!(to > ts(now) && to < ts(armed));
                }
            } else {
                prop_assert_eq!(got, oracle(n, oracle_anchor, armed, last, now));
            }
        }
    }
}
