//! The detectors of the worker's health and of the supervisor's own
//! troubles (store, reload, alert delivery). Each is a pure function of
//! the observations and the clock, returning at most one condition.

use std::time::Duration;

use cronwarden_shared::{
    alert_kind::AlertKind,
    config::Watchdog,
    status::{Severity, SinkHealth, State},
    timefmt::{human_duration, to_second},
    wire::ArmedDigest,
};
use jiff::Timestamp;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::{stall_at, MISARMED_AFTER, UNREPORTED_AFTER};
use crate::{
    alerts::Condition,
    model::{Model, WorkerObs},
};

/// A crash loop: this many worker exits within [`CRASH_WINDOW`].
pub const CRASH_LOOP_EXITS: usize = 5;
pub const CRASH_WINDOW: Duration = Duration::from_secs(60);
/// A worker up this long ends a crash loop.
pub const CRASH_SETTLED: Duration = Duration::from_secs(15);
/// How long a restart stays reported as news.
pub const RESTART_NEWS: Duration = Duration::from_secs(60);

/// Heartbeat silence after which the status stops saying `ok`: two missed
/// beats, plus slack for a busy host.
pub fn overdue_after(interval: Duration) -> Duration {
    interval * 2 + Duration::from_millis(100)
}

/// A condition not about one job.
pub(super) fn condition(
    kind: AlertKind,
    severity: Severity,
    state: State,
    summary: String,
    details: Value,
    alert: bool,
) -> Condition {
    Condition {
        kind,
        job: None,
        severity,
        state,
        summary,
        details,
        alert,
    }
}

fn previous(w: &WorkerObs, prefix: &str) -> String {
    w.last_exit
        .as_deref()
        .map(|e| format!(" ({prefix} {e})"))
        .unwrap_or_default()
}

pub(super) fn crash_loop(w: &WorkerObs, now: Instant) -> Option<Condition> {
    // Over once the current worker has stayed up for a while.
    let settled = w.hello
        && w.spawned
            .is_some_and(|s| now.saturating_duration_since(s) >= CRASH_SETTLED);
    let recent = w
        .exits
        .iter()
        .filter(|t| now.saturating_duration_since(**t) <= CRASH_WINDOW)
        .count();
    (!settled && recent >= CRASH_LOOP_EXITS).then(|| {
        condition(
            AlertKind::WorkerCrashLoop,
            Severity::Critical,
            State::Down,
            format!(
                "the worker exited {} times within {}; retrying with backoff (last one {})",
                w.exits.len(),
                human_duration(CRASH_WINDOW),
                w.last_exit.as_deref().unwrap_or("?")
            ),
            json!({ "exits": w.exits.len(), "last_exit": w.last_exit }),
            true,
        )
    })
}

/// No worker, or one that has not said hello. `stalled`: it is (or
/// replaces) a worker declared stalled, which keeps the state `stalled`
/// and alerted until a replacement proves progress; a first start is no
/// alert.
pub(super) fn not_up(w: &WorkerObs, stalled: bool) -> Option<Condition> {
    let summary = match (w.pid, w.hello) {
        (None, _) => format!("no worker is running{}", previous(w, "last one")),
        (Some(pid), false) => format!(
            "worker {pid} is starting and has not said hello yet{}",
            previous(w, "the previous one")
        ),
        (Some(_), true) => return None,
    };
    let (kind, state) = if stalled {
        (AlertKind::WorkerStalled, State::Stalled)
    } else {
        (AlertKind::WorkerDown, State::Down)
    };
    Some(condition(
        kind,
        Severity::Critical,
        state,
        summary,
        json!({ "pid": w.pid }),
        stalled,
    ))
}

/// The current worker's silence, if it has used up its allowance (see
/// [`super::stall_deadline`], the same instant).
pub(super) fn stall(w: &WorkerObs, wd: &Watchdog, now: Instant) -> Option<Duration> {
    let since = w.last_heartbeat.or(w.spawned)?;
    (now >= stall_at(w, wd)?).then(|| now.saturating_duration_since(since))
}

pub(super) fn stalled(pid: u32, age: Duration, stall_after: Duration) -> Condition {
    condition(
        AlertKind::WorkerStalled,
        Severity::Critical,
        State::Stalled,
        format!(
            "worker {pid} sent no heartbeat for {} (stall_after {}); replacing it",
            human_duration(age),
            human_duration(stall_after)
        ),
        json!({ "pid": pid, "heartbeat_age_ms": age.as_millis() as u64 }),
        true,
    )
}

/// A replacement's hello says only that it started; it has not replaced
/// the stalled worker until its loop turned (its first heartbeat).
pub(super) fn replacing_stalled(pid: u32, w: &WorkerObs) -> Option<Condition> {
    w.replacing_stalled.then(|| {
        condition(
            AlertKind::WorkerStalled,
            Severity::Critical,
            State::Stalled,
            format!(
                "worker {pid} replaced a stalled worker{} and has not sent a heartbeat yet",
                previous(w, "that")
            ),
            json!({ "pid": pid, "stalled_pid": w.stalled_pid }),
            true,
        )
    })
}

/// Not yet stalled, but heartbeats are missing: say so before
/// `stall_after` rather than claim all is well.
pub(super) fn heartbeat_overdue(
    pid: u32,
    w: &WorkerObs,
    wd: &Watchdog,
    now: Instant,
) -> Option<Condition> {
    let age = w
        .last_heartbeat
        .map(|t| now.saturating_duration_since(t))
        .unwrap_or_default();
    (age > overdue_after(wd.heartbeat_interval)).then(|| {
        condition(
            AlertKind::WorkerHeartbeatOverdue,
            Severity::Warning,
            State::Degraded,
            format!(
                "worker {pid} heartbeat overdue: none for {} (expected every {}; replaced after {})",
                human_duration(age),
                human_duration(wd.heartbeat_interval),
                human_duration(wd.stall_after)
            ),
            json!({ "pid": pid }),
            false,
        )
    })
}

/// Since when the worker has been failing: its last loop turn without
/// error or, when it heartbeats without ever having had one, its start.
fn failing_since(w: &WorkerObs) -> Option<Instant> {
    w.last_good_turn
        .or(w.last_heartbeat.filter(|_| w.seq.is_some()).and(w.spawned))
}

/// Alive but failing: reported once a good turn is older than
/// `stall_after` (or at once when there never was one).
pub(super) fn failing(pid: u32, w: &WorkerObs, wd: &Watchdog, now: Instant) -> Option<Condition> {
    let good_age = w.last_good_turn.map(|t| now.saturating_duration_since(t));
    let what = match good_age {
        Some(g) if g <= wd.stall_after => return None,
        Some(g) => format!(
            "its loop has not completed a turn without error for {}",
            human_duration(g)
        ),
        None if w.seq.is_some() => "none of its loop turns has completed without error".into(),
        None => return None,
    };
    Some(condition(
        AlertKind::WorkerFailing,
        Severity::Critical,
        State::Degraded,
        format!(
            "worker {pid} is alive but failing: {what}; replaced after {}",
            human_duration(wd.failing_restart_after)
        ),
        json!({ "pid": pid, "last_good_turn_age_ms": good_age.map(|g| g.as_millis() as u64) }),
        true,
    ))
}

/// The worker to replace for failing longer than `failing_restart_after`,
/// and for how long it has been failing.
pub(super) fn replace_failing(
    w: &WorkerObs,
    wd: &Watchdog,
    now: Instant,
) -> Option<(u32, Duration)> {
    let pid = w.pid.filter(|_| w.hello)?;
    let failing_for = now.saturating_duration_since(failing_since(w)?);
    (failing_for > wd.failing_restart_after).then_some((pid, failing_for))
}

/// A restart is news (info), until the new worker has been up a while.
pub(super) fn restarted(w: &WorkerObs, now: Instant) -> Option<Condition> {
    let recent = w
        .spawned
        .is_some_and(|s| now.saturating_duration_since(s) < RESTART_NEWS);
    let how = w.last_exit.as_ref().filter(|_| w.restarts > 0 && recent)?;
    Some(condition(
        AlertKind::WorkerRestarted,
        Severity::Info,
        State::Ok,
        format!(
            "the worker was restarted: the previous one {how}; {} restart(s) since start",
            w.restarts
        ),
        json!({ "pid": w.pid, "restarts": w.restarts, "previous": how }),
        true,
    ))
}

pub(super) fn store_error(w: &WorkerObs) -> Option<Condition> {
    let e = w.store_error.as_ref()?;
    Some(condition(
        AlertKind::StoreError,
        Severity::Critical,
        State::Degraded,
        format!("store writes are failing: {e}"),
        json!({ "error": e }),
        true,
    ))
}

/// How many errors of a refused reload its summary lists.
const RELOAD_ERRORS_SHOWN: usize = 20;

pub(super) fn reload_failed(reload_error: Option<&(Timestamp, String)>) -> Option<Condition> {
    let (at, err) = reload_error?;
    // Every error, so the status alone says all that is wrong; bounded, as
    // the summary also goes to every sink.
    let lines: Vec<&str> = err.lines().collect();
    let mut shown = lines
        .iter()
        .take(RELOAD_ERRORS_SHOWN)
        .copied()
        .collect::<Vec<_>>()
        .join("; ");
    if lines.len() > RELOAD_ERRORS_SHOWN {
        shown.push_str(&format!(
            "; and {} more (cronwarden check lists them all)",
            lines.len() - RELOAD_ERRORS_SHOWN
        ));
    }
    Some(condition(
        AlertKind::ConfigReloadFailed,
        Severity::Warning,
        State::Degraded,
        format!(
            "config reload at {} was refused; the previous config stays in force: {shown}",
            to_second(*at)
        ),
        json!({ "errors": err }),
        true,
    ))
}

pub(super) fn delivery_failed(sinks: &[SinkHealth]) -> Option<Condition> {
    let failing: Vec<&SinkHealth> = sinks
        .iter()
        .filter(|h| h.consecutive_failures >= crate::sinks::FAILING_AFTER)
        .collect();
    if failing.is_empty() {
        return None;
    }
    let names: Vec<&str> = failing.iter().map(|h| h.name.as_str()).collect();
    let errors: Vec<String> = failing
        .iter()
        .map(|h| format!("{}: {}", h.name, h.last_error.as_deref().unwrap_or("?")))
        .collect();
    Some(condition(
        AlertKind::AlertDeliveryFailed,
        Severity::Critical,
        State::Degraded,
        format!(
            "alerts are not reaching sink(s) {}: {}",
            names.join(", "),
            errors.join("; ")
        ),
        json!({ "sinks": names }),
        true,
    ))
}

/// The worker's whole armed schedule against ours.
pub(super) struct Armed {
    /// Since when they have disagreed (`now` if they just started to).
    pub since: Option<Instant>,
    /// The worker's digest, once the disagreement lasted [`MISARMED_AFTER`].
    pub due: Option<ArmedDigest>,
}

/// The disagreement found when the last heartbeat was applied (its
/// digest against our expectation as of that heartbeat).
pub(super) fn armed_mismatch(w: &WorkerObs, now: Instant) -> Armed {
    let up = w.pid.is_some() && w.hello;
    let since = w.armed_mismatch_since.filter(|_| up);
    Armed {
        since,
        // Lasted: a heartbeat showed it more than MISARMED_AFTER after the
        // first one did (heartbeats held back prove nothing either way).
        due: w.armed.filter(|_| {
            let lasted = since.zip(w.armed_mismatch_last);
            lasted.is_some_and(|(s, l)| l.saturating_duration_since(s) > MISARMED_AFTER)
                && since.is_some_and(|s| now.saturating_duration_since(s) > MISARMED_AFTER)
        }),
    }
}

/// Fires the worker's arming showed taken, still unreported after
/// [`UNREPORTED_AFTER`]: a worker that claims a job's fires but never runs
/// or skips them (it stopped arming the job for real).
pub(super) fn unreported(m: &Model, now: Instant) -> Option<Condition> {
    let stale: Vec<(&str, Timestamp)> = m
        .worker
        .unreported
        .iter()
        .filter(|(name, (due, seen))| {
            m.jobs
                .get(name.as_str())
                .is_some_and(|j| j.expected_next == Some(*due))
                && now.saturating_duration_since(*seen) > UNREPORTED_AFTER
        })
        .map(|(n, (due, _))| (n.as_str(), *due))
        .collect();
    if stale.is_empty() {
        return None;
    }
    let names: Vec<&str> = stale.iter().map(|(n, _)| *n).collect();
    let shown: Vec<String> = stale
        .iter()
        .map(|(n, due)| format!("{n} (due at {})", to_second(*due)))
        .collect();
    Some(condition(
        AlertKind::WorkerMisarmed,
        Severity::Warning,
        State::Degraded,
        format!(
            "the worker's armed schedule has moved past fires it never reported as run or skipped, for more than {}: {}",
            human_duration(UNREPORTED_AFTER),
            shown.join(", ")
        ),
        json!({ "jobs": names, "unreported": stale.iter().map(|(n, d)| json!({"job": n, "due_at": d})).collect::<Vec<_>>() }),
        true,
    ))
}

pub(super) fn misarmed(m: &Model, theirs: ArmedDigest, ours: ArmedDigest) -> Condition {
    let jobs: Vec<&str> = m
        .jobs
        .iter()
        .filter(|(_, j)| j.next_fire_at != j.expected_next)
        .map(|(n, _)| n.as_str())
        .collect();
    let summary = if theirs.jobs != ours.jobs {
        format!(
            "the worker has {} jobs armed but the config has {}: a ghost or a missing job",
            theirs.jobs, ours.jobs
        )
    } else if !jobs.is_empty() {
        format!(
            "the worker's armed schedule differs from the config's for: {}",
            jobs.join(", ")
        )
    } else {
        "the worker's armed schedule differs from what it reported; its in-memory state has diverged".into()
    };
    condition(
        AlertKind::WorkerMisarmed,
        Severity::Warning,
        State::Degraded,
        summary,
        json!({ "worker": theirs, "supervisor": ours, "jobs": jobs }),
        true,
    )
}
