//! Detection leads to healing: a job whose arming the worker keeps
//! disagreeing about (`job_misarmed`) is first re-armed by the worker from
//! its schedule (`rearm`: the worker accounts what a wrong arming passed
//! over by the misfire rules and reports its schedule again); if the
//! disagreement outlasts [`REARM_WAIT`] after that, the worker's state is
//! not to be trusted and it is replaced (a new worker arms from the
//! store, where a stored next fire off its schedule is corrected at start).

use std::time::Duration;

use tokio::time::Instant;

use super::MISARMED_AFTER;
use crate::model::JobObs;

/// How long a disagreement may outlast the request to re-arm before the
/// worker is replaced: the request, the worker's turn and its `schedule`
/// line take well under a second; ten leave room for a loaded host.
pub(crate) const REARM_WAIT: Duration = Duration::from_secs(10);

/// What to do about one job's arming.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Heal {
    /// Ask the worker to re-arm the job.
    Rearm,
    /// Re-arming did not help: replace the worker; the disagreement has
    /// lasted this long.
    Replace(Duration),
}

/// Given since when the job has been misarmed (see `job::misarmed_since`),
/// what to do, and since when a re-arm has been asked for in this
/// episode (the job's new `rearm_sent`).
pub(super) fn heal(
    j: &JobObs,
    misarmed_since: Option<Instant>,
    now: Instant,
) -> (Option<Heal>, Option<Instant>) {
    let Some(since) = misarmed_since else {
        return (None, None);
    };
    if now.saturating_duration_since(since) <= MISARMED_AFTER {
        return (None, j.rearm_sent);
    }
    match j.rearm_sent {
        None => (Some(Heal::Rearm), Some(now)),
        Some(at) if now.saturating_duration_since(at) > REARM_WAIT => (
            Some(Heal::Replace(now.saturating_duration_since(since))),
            Some(at),
        ),
        Some(at) => (None, Some(at)),
    }
}
