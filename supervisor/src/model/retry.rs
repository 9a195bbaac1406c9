//! How a job's runs make its failure streak when it has `retries`: the
//! streak counts fires, so a failed run the worker will retry does not
//! count; the fire counts as failed only when its last retry fails (or a
//! run ends in a way never retried: killed, lost). The same rule as the
//! worker's (`worker/src/plan/retry.rs`), followed from the runs' triggers:
//! a `retry` run is the next attempt of the fire before it.

use cronwarden_shared::{
    config::RetryPolicy,
    status::{Outcome, RunRecord, Trigger},
};

/// What a finished run does to the failure streak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Its fire failed: one more.
    Failed,
    /// It succeeded: the streak ends.
    Reset,
    /// It failed and a retry follows: its fire is not decided yet.
    Pending,
}

/// The step for `run`, given the attempt of the job's previous run (kept
/// per job, updated here).
pub(crate) fn step(attempt: &mut u32, policy: &RetryPolicy, run: &RunRecord) -> Step {
    *attempt = match run.trigger {
        Trigger::Retry => attempt.saturating_add(1),
        _ => 0,
    };
    if !run.outcome.is_failure() {
        return Step::Reset;
    }
    let retried = matches!(run.outcome, Outcome::Failed | Outcome::Timeout);
    if retried && *attempt < policy.retries {
        Step::Pending
    } else {
        Step::Failed
    }
}

/// The failure streak of a job's stored history (finished runs, newest
/// first), counting fires: a failed run followed by its retry is not a
/// fire of its own. The newest run counts as it is, even when a retry of
/// it may still come (a supervisor restarted then sees it failed).
pub(crate) fn seeded_streak(newest_first: &[&RunRecord]) -> u32 {
    let mut n = 0;
    for (i, r) in newest_first.iter().enumerate() {
        if !r.outcome.is_failure() {
            break;
        }
        let retried_by_newer = i > 0 && newest_first[i - 1].trigger == Trigger::Retry;
        if !retried_by_newer {
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(trigger: Trigger, outcome: Outcome) -> RunRecord {
        RunRecord::new(1, "j", vec![], trigger, outcome)
    }

    #[test]
    fn retried_failures_wait_for_the_last_attempt() {
        let p = RetryPolicy {
            retries: 2,
            ..RetryPolicy::default()
        };
        let mut a = 0;
        use Outcome::*;
        use Trigger::*;
        assert_eq!(step(&mut a, &p, &run(Schedule, Failed)), Step::Pending);
        assert_eq!(step(&mut a, &p, &run(Retry, Timeout)), Step::Pending);
        assert_eq!(step(&mut a, &p, &run(Retry, Failed)), Step::Failed);
        assert_eq!(step(&mut a, &p, &run(Schedule, Failed)), Step::Pending);
        assert_eq!(step(&mut a, &p, &run(Retry, Success)), Step::Reset);
        // Lost runs are never retried: they count at once.
        assert_eq!(step(&mut a, &p, &run(Schedule, Lost)), Step::Failed);
        let none = RetryPolicy::default();
        assert_eq!(step(&mut a, &none, &run(Schedule, Failed)), Step::Failed);
    }

    #[test]
    fn a_seeded_streak_counts_fires() {
        use Outcome::*;
        use Trigger::*;
        let h = [
            run(Retry, Failed),
            run(Retry, Failed),
            run(Schedule, Failed),
            run(Schedule, Failed),
            run(Schedule, Success),
            run(Schedule, Failed),
        ];
        let refs: Vec<&RunRecord> = h.iter().collect();
        assert_eq!(seeded_streak(&refs), 2);
        assert_eq!(seeded_streak(&[]), 0);
    }
}
