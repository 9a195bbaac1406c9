//! The detectors of one job: late, misarmed, wedged (overlap streak), its
//! last outcome (timeout, lost, failing streak), silent (zero-output
//! streak), and runs that outlived their bound. Each is a pure function of
//! the job's observations and the clocks.

use std::time::Duration;

use cronwarden_shared::{
    alert_kind::AlertKind,
    jitter,
    status::{Outcome, Severity, State},
    timefmt::{human_duration, to_second},
};
use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::{Clocks, KILL_MARGIN, MISARMED_AFTER};
use crate::{alerts::Condition, forensics, model::JobObs};

fn condition(
    kind: AlertKind,
    job: &str,
    severity: Severity,
    summary: String,
    details: Value,
) -> Condition {
    Condition {
        kind,
        job: Some(job.to_string()),
        severity,
        state: State::Degraded,
        summary,
        details,
        alert: true,
    }
}

fn unsigned(d: SignedDuration) -> Duration {
    // Not `Duration::try_from`: its error for a negative duration is built
    // (and allocated) only to be dropped, for every job not yet due at
    // every evaluation (issue 18).
    if d.is_negative() {
        Duration::ZERO
    } else {
        d.unsigned_abs()
    }
}

/// The most a fire first seen due is believed to have been due already:
/// the loop judges every second, so a longer gap since the previous
/// judgement is the supervisor's own pause (or a suspend), which is
/// discounted, not blamed on the worker: the lines queued meanwhile are
/// read first and say what it did.
pub(crate) const GAP_CREDIT: Duration = Duration::from_secs(2);

/// Since when, on our monotonic clock, the job's expected fire has been
/// due: remembered from the judgement that first saw its wall-clock time
/// come; when first seen now, the wall clock's word for how long ago is
/// believed only up to `credit_since` (the previous judgement, or the
/// current worker's hello), so a forward step of the wall clock between
/// two judgements can age a due fire by that interval at most.
pub(super) fn due_seen(
    j: &JobObs,
    clocks: Clocks,
    credit_since: Instant,
) -> Option<(Timestamp, Instant)> {
    let due = j.expected_next?;
    // A jittered job is due at its fire's start, not at its time.
    let starts = jitter::start_of(due, j.spec.jitter_offset);
    // Most jobs are not due: judged without the arithmetic below.
    if clocks.wall < starts {
        return None;
    }
    if let Some((d, at)) = j.due_seen.filter(|(d, _)| *d == due) {
        return Some((d, at));
    }
    let past = unsigned(clocks.wall.duration_since(starts));
    let credit = past
        .min(clocks.now.saturating_duration_since(credit_since))
        .min(GAP_CREDIT);
    Some((due, clocks.now.checked_sub(credit).unwrap_or(clocks.now)))
}

/// Past due by our own computation for longer than `late_after`, counted
/// on our monotonic clock from when it came due, or from the current
/// worker's hello if that is later: a new worker is late only for what it
/// has not accounted (fired, skipped or coalesced) since it said hello,
/// never for the time nobody was there to fire.
pub(super) fn late(
    name: &str,
    j: &JobObs,
    due_seen: Option<(Timestamp, Instant)>,
    hello_at: Option<Instant>,
    now: Instant,
) -> Option<Condition> {
    let (due, seen) = due_seen?;
    let since = seen.max(hello_at?);
    let late_by = now.saturating_duration_since(since);
    (late_by > j.spec.late_after).then(|| {
        condition(
            AlertKind::JobLate,
            name,
            Severity::Warning,
            format!(
                "job {name} is late: due at {}, neither fired nor skipped for {}",
                to_second(due),
                human_duration(late_by)
            ),
            json!({ "due_at": due, "late_ms": late_by.as_millis() as u64 }),
        )
    })
}

/// Since when the worker's arming of this job has disagreed with ours
/// (`now` if it just started to). An arming ahead of ours, but no further
/// than the schedule's next fire after now, is a fire the worker took and
/// whose line has not arrived yet (its `fire` line follows the process's
/// start): not a disagreement. A worker that takes fires and never reports
/// them is caught by `worker::unreported`.
///
/// A gap in our own judging (`last_judged` longer ago than
/// [`MISARMED_AFTER`]: the supervisor was paused, or starved) is no time
/// the disagreement was seen lasting: its count starts again at the first
/// judgement after the gap, once the lines queued during it are read (one
/// of them may be the report that settles it).
pub(super) fn misarmed_since(
    j: &JobObs,
    worker_up: bool,
    clocks: Clocks,
    last_judged: Option<Instant>,
) -> Option<Instant> {
    let (Some(theirs), Some(ours)) = (j.next_fire_at, j.expected_next) else {
        return None;
    };
    let in_flight = ours < theirs
        && j.spec
            .schedule
            .next_after(clocks.wall, Some(ours))
            .is_some_and(|next| theirs <= next);
    let misarmed = worker_up && theirs != ours && !in_flight;
    let gap =
        last_judged.is_some_and(|at| clocks.now.saturating_duration_since(at) > MISARMED_AFTER);
    misarmed.then(|| j.misarmed_since.filter(|_| !gap).unwrap_or(clocks.now))
}

/// The armed cross-check: a disagreement that lasted [`MISARMED_AFTER`].
pub(super) fn misarmed(
    name: &str,
    j: &JobObs,
    since: Option<Instant>,
    now: Instant,
) -> Option<Condition> {
    let since = since?;
    (now.saturating_duration_since(since) > MISARMED_AFTER).then(|| {
        let show = |t: Option<Timestamp>| t.map(to_second).unwrap_or_default();
        condition(
            AlertKind::JobMisarmed,
            name,
            Severity::Warning,
            format!(
                "job {name}: the worker armed it for {} but its schedule says {}",
                show(j.next_fire_at),
                show(j.expected_next)
            ),
            json!({ "armed": j.next_fire_at, "expected": j.expected_next }),
        )
    })
}

/// Fires skipped in a row because the previous run is still busy; says
/// what the busy run is doing, from the loop's last look at it.
pub(super) fn overlap_streak(
    name: &str,
    j: &JobObs,
    now: Instant,
    wall: Timestamp,
) -> Option<Condition> {
    if j.streaks.overlap_skips < j.spec.overlap_alert_after {
        return None;
    }
    let (run, details) = match j.running.values().next() {
        Some(r) => {
            let look = j.busy_look.as_ref().filter(|l| l.run_id == r.run_id);
            let (procs, holders) = match look {
                Some(l) => (forensics::describe(&l.processes), l.pipe_holders.as_slice()),
                None => ("not looked at yet".to_string(), &[][..]),
            };
            // Its age on our monotonic clock, from when we saw it start.
            let age = j
                .seen_started
                .get(&r.run_id)
                .map(|seen| now.saturating_duration_since(*seen))
                .unwrap_or_else(|| unsigned(wall.duration_since(r.started_at)));
            let held = if holders.is_empty() {
                String::new()
            } else {
                let hs: Vec<String> = holders.iter().map(|(p, c)| format!("{c} {p}")).collect();
                format!("; its output is held open by {}", hs.join(", "))
            };
            let last = match (&r.last_line, r.last_output_at) {
                (Some(line), Some(at)) => format!(
                    "; last output {:?} {} ago",
                    line,
                    human_duration(unsigned(wall.duration_since(at)))
                ),
                _ => "; no output yet".into(),
            };
            (
                format!(
                    "run {} has been running for {}: {procs}{held}{last}",
                    r.run_id,
                    human_duration(age),
                ),
                json!({ "run_id": r.run_id, "pid": r.pid, "running_ms": age.as_millis() as u64,
                        "processes": look.map_or(&[][..], |l| &l.processes), "pipe_holders": holders,
                        "last_line": r.last_line, "last_output_at": r.last_output_at }),
            )
        }
        None => ("the busy run has just ended".into(), json!({})),
    };
    Some(condition(
        AlertKind::JobOverlapStreak,
        name,
        Severity::Warning,
        format!(
            "job {name}: {} fires in a row skipped because the previous run is still busy; {run}",
            j.streaks.overlap_skips
        ),
        details,
    ))
}

/// The last run's outcome: a timeout or a lost run (each alerted until the
/// next run ends otherwise), or a failing streak.
pub(super) fn outcome(name: &str, j: &JobObs) -> Option<Condition> {
    let last = j.last_run.as_ref()?;
    let what = last
        .error
        .clone()
        .unwrap_or_else(|| match (last.exit_code, last.signal) {
            (Some(c), _) => format!("exit code {c}"),
            (_, Some(s)) => format!("signal {s}"),
            _ => last.outcome.as_str().into(),
        });
    let mut details =
        json!({ "run_id": last.id, "outcome": last.outcome, "streak": j.streaks.failures });
    // What the run was doing, seen while it was still there.
    let seen = j
        .last_forensics
        .as_ref()
        .filter(|f| f.run_id == last.id)
        .filter(|_| matches!(last.outcome, Outcome::Timeout | Outcome::Lost));
    let seen_line = match seen {
        Some(f) => {
            details["processes"] = json!(f.processes);
            details["pipe_holders"] = json!(f.pipe_holders);
            details["last_line"] = json!(f.last_line);
            details["last_output_at"] = json!(f.last_output_at);
            details["seen_at"] = json!(f.taken_at);
            format!("; seen at {}", f.describe())
        }
        None => String::new(),
    };
    let (kind, severity, summary) = match last.outcome {
        Outcome::Timeout => (
            AlertKind::JobTimeout,
            Severity::Warning,
            format!(
                "job {name}: run {} {what}; its process group was killed{seen_line}",
                last.id
            ),
        ),
        Outcome::Lost => (
            AlertKind::JobLost,
            Severity::Critical,
            format!("job {name}: run {} lost: {what}{seen_line}", last.id),
        ),
        _ if j.streaks.failures >= j.spec.alert_after_failures => (
            AlertKind::JobFailing,
            Severity::Warning,
            format!(
                "job {name} failed {} time(s) in a row (last: {what})",
                j.streaks.failures
            ),
        ),
        _ => return None,
    };
    Some(condition(kind, name, severity, summary, details))
}

pub(super) fn zero_output_streak(name: &str, j: &JobObs) -> Option<Condition> {
    let limit = j.spec.zero_output_alert_after?;
    (j.streaks.zero_output >= limit).then(|| {
        condition(
            AlertKind::JobZeroOutputStreak,
            name,
            Severity::Warning,
            format!(
                "job {name} produced no output at all in {} consecutive runs",
                j.streaks.zero_output
            ),
            json!({ "streak": j.streaks.zero_output }),
        )
    })
}

/// Runs that outlived timeout + kill grace + [`KILL_MARGIN`], measured on
/// the monotonic clock from when the supervisor saw them start (a wall
/// clock step ages nothing), and that the supervisor has not killed yet:
/// (run, process group). A run whose start was never seen is not judged.
pub(super) fn outlived(j: &JobObs, now: Instant) -> Vec<(u64, u32)> {
    let Some(timeout) = j.spec.timeout else {
        return vec![];
    };
    let limit = timeout
        .saturating_add(j.spec.kill_grace)
        .saturating_add(KILL_MARGIN);
    j.running
        .values()
        .filter(|r| {
            j.seen_started
                .get(&r.run_id)
                .is_some_and(|seen| now.saturating_duration_since(*seen) > limit)
        })
        .filter(|r| !j.enforced.contains(&r.run_id))
        .map(|r| (r.run_id, r.pid))
        .collect()
}
