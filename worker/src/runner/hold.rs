//! How long an ended run's report waits for the starts in flight
//! ([`crate::spawner::after_starts`]): what reporting costs (its cgroup's
//! figures and removal, the log line, the store's write, the supervisor's
//! line) then comes after a burst's starts instead of slowing them (issue
//! 18). The run's times are taken before the wait; it ends a full second
//! before the job's next fire (that fire must not find the job busy, nor
//! a claim made ahead of it; what follows the wait, the cgroup's figures
//! and the loop's turn, can take tens of milliseconds), by the run's
//! timeout, and when the run is told to stop (shutdown). While a report
//! waits, its job counts as running: a manual trigger is refused then.

use std::time::Duration;

use jiff::Timestamp;
use tokio::time::Instant;

use super::RunRequest;

/// The longest an ended run's report waits for the starts in flight: a
/// burst of a thousand starts takes a few hundred milliseconds.
pub(crate) const REPORT_HOLD: Duration = Duration::from_secs(1);
/// How long before the job's next fire a held report is let go at the
/// latest: a job that fires every second or two is never held.
const REPORT_BEFORE_FIRE: Duration = Duration::from_secs(1);

/// How long this ended run's report may wait for the starts in flight.
pub(super) fn report_within(req: &RunRequest, started: Instant) -> Duration {
    let timeout_left = req
        .job
        .timeout
        .map(|t| (started + t).saturating_duration_since(Instant::now()));
    hold_bound(crate::clock::wall_now(), req.next_fire_at, timeout_left)
}

/// [`REPORT_HOLD`], shortened to end [`REPORT_BEFORE_FIRE`] before the
/// job's next fire and by the time its run's timeout would have come.
fn hold_bound(
    now: Timestamp,
    next_fire: Option<Timestamp>,
    timeout_left: Option<Duration>,
) -> Duration {
    let before_fire = next_fire.map_or(REPORT_HOLD, |next| {
        Duration::try_from(next.duration_since(now))
            .unwrap_or(Duration::ZERO)
            .saturating_sub(REPORT_BEFORE_FIRE)
    });
    REPORT_HOLD
        .min(before_fire)
        .min(timeout_left.unwrap_or(REPORT_HOLD))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_report_holds_at_most_a_second_without_a_fire_or_timeout_near() {
        let now = at("2026-12-05T10:00:00Z");
        assert_eq!(hold_bound(now, None, None), Duration::from_secs(1));
        assert_eq!(
            hold_bound(
                now,
                Some(at("2026-12-05T10:01:00Z")),
                Some(Duration::from_secs(30))
            ),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn a_report_is_let_go_a_second_before_the_jobs_next_fire() {
        let now = at("2026-12-05T10:00:00Z");
        // Next fire in 1.4 s: let go a second before it.
        assert_eq!(
            hold_bound(now, Some(at("2026-12-05T10:00:01.4Z")), None),
            Duration::from_millis(400)
        );
        // Next fire within a second (a per-second job), now, or already
        // past (a clock step): no hold at all.
        for next in [
            "2026-12-05T10:00:01Z",
            "2026-12-05T10:00:00.5Z",
            "2026-12-05T10:00:00Z",
            "2026-12-05T09:59:00Z",
        ] {
            assert_eq!(
                hold_bound(now, Some(at(next)), None),
                Duration::ZERO,
                "{next}"
            );
        }
    }

    #[test]
    fn a_report_is_not_held_past_the_runs_timeout() {
        let now = at("2026-12-05T10:00:00Z");
        assert_eq!(
            hold_bound(now, None, Some(Duration::from_millis(250))),
            Duration::from_millis(250)
        );
        assert_eq!(hold_bound(now, None, Some(Duration::ZERO)), Duration::ZERO);
    }
}
