//! How long an ended run's report waits for the starts in flight
//! ([`crate::spawner::after_starts`]): what reporting costs (its cgroup's
//! figures and removal, the log line, the store's write, the supervisor's
//! line) then comes after a burst's starts instead of slowing them (issue
//! 18). The run's times are taken before the wait; the wait never reaches
//! the job's next fire, which would find the job busy, nor its timeout.

use std::time::Duration;

use jiff::Timestamp;
use tokio::time::Instant;

use super::RunRequest;

/// The longest an ended run's report waits for the starts in flight: a
/// burst of a thousand starts takes a few hundred milliseconds.
pub(crate) const REPORT_HOLD: Duration = Duration::from_secs(1);
/// How long before the job's next fire a held report is let go: the loop
/// takes the run's end before that fire's turn.
const REPORT_BEFORE_FIRE: Duration = Duration::from_millis(100);

/// How long this ended run's report may wait for the starts in flight.
pub(super) fn report_within(req: &RunRequest, started: Instant) -> Duration {
    let timeout_left = req
        .job
        .timeout
        .map(|t| (started + t).saturating_duration_since(Instant::now()));
    hold_bound(Timestamp::now(), req.next_fire_at, timeout_left)
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
    fn a_report_is_let_go_before_the_jobs_next_fire() {
        let now = at("2026-12-05T10:00:00Z");
        // Next fire in 400 ms: let go 100 ms before it.
        assert_eq!(
            hold_bound(now, Some(at("2026-12-05T10:00:00.4Z")), None),
            Duration::from_millis(300)
        );
        // Next fire within 100 ms, now, or already past (a clock step):
        // no hold at all.
        for next in [
            "2026-12-05T10:00:00.05Z",
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
