//! The judgement: a pure function of the observations (the [`Model`]) and
//! the two clocks, returning what is wrong (conditions, which the alert
//! book turns into alerts) and what the loop must do about it (actions).
//!
//! Invariants: nothing here mutates the model, reads a clock, reads
//! `/proc` or signals a process. Forensics (what a run is doing) are
//! gathered by the loop beforehand ([`looks_near_timeout`],
//! [`looks_at_busy_runs`]) and recorded in the model as observations.
//! Each detector is one small function of the observations and the clocks;
//! [`judge`] only runs them in the order their conditions are reported.
//!
//! A judgement also remembers a little for the next one ([`Memory`]: since
//! when a disagreement has been seen, what was already acted on), which
//! [`Model::evaluate`] adopts. That adoption assumes the loop carries out
//! every action of that judgement, which is the loop's contract; a
//! judgement made only to answer a status request is never adopted.

mod clock_jump;
mod cluster;
mod durability;
mod heal;
mod job;
mod worker;

pub(crate) use worker::{overdue_after, CRASH_WINDOW};

#[cfg(test)]
mod tests;

use std::time::Duration;

use cronwarden_shared::{
    config::Watchdog, status::RunningInfo, timefmt::human_duration, wire::ArmedDigest,
};
use jiff::{SignedDuration, Timestamp};
use tokio::time::Instant;

use super::{Model, WorkerObs};
use crate::alerts::Condition;

/// The clocks a judgement is made against: `now` (monotonic) for every
/// age the supervisor measures itself, `wall` for schedules and for ages
/// the worker reports in wall time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clocks {
    pub now: Instant,
    pub wall: Timestamp,
}

/// What the loop must do. An action is returned until a judgement that
/// returned it is adopted (`Model::evaluate`): its memory counts it done.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// SIGKILL worker `pid` (not yet reaped) and remember `why` for its
    /// exit line; the reaper then starts a replacement as for any exit.
    ReplaceWorker { pid: u32, why: Replace },
    /// SIGKILL the process group `pgid` of a run the worker let outlive
    /// its timeout + kill grace + [`KILL_MARGIN`].
    KillRun { job: String, run_id: u64, pgid: u32 },
    /// Send the worker `ReportSchedule`: its armed digest disagrees with
    /// ours, and its full schedule names the jobs that differ.
    AskArmedSchedule,
    /// Send the worker `Rearm`: its arming of `job` has disagreed with
    /// ours for longer than [`MISARMED_AFTER`] (see `heal`).
    Rearm { job: String },
}

/// Why a worker is replaced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Replace {
    /// No heartbeat (or no hello) within its allowance.
    Stalled { allowance: Duration },
    /// Alive, but no loop turn without error for this long.
    Failing { failing_for: Duration },
    /// A job's arming still disagreed with ours [`heal::REARM_WAIT`] after the
    /// worker was told to re-arm it; disagreeing for this long.
    Misarmed { for_: Duration },
}

impl Replace {
    /// How the replaced worker ended, for the status and the restart alert.
    pub fn because(&self) -> String {
        match self {
            Replace::Stalled { allowance } => format!(
                "was killed after {} without a heartbeat",
                human_duration(*allowance)
            ),
            Replace::Failing { failing_for } => format!(
                "was replaced after failing every loop turn for {}",
                human_duration(*failing_for)
            ),
            Replace::Misarmed { for_ } => format!(
                "was replaced: its arming of a job disagreed with the schedule for {}, re-arming included",
                human_duration(*for_)
            ),
        }
    }
}

/// A run in a runaway state is killed by the supervisor this long after
/// its timeout and kill grace, if the worker has not ended it: enough for
/// a busy worker to do it first.
pub const KILL_MARGIN: Duration = Duration::from_secs(10);
/// How long the worker's armed time may disagree with ours before it is a
/// condition (the two legitimately differ for an instant around a fire).
pub(super) const MISARMED_AFTER: Duration = Duration::from_secs(3);
/// How long a fire the worker's arming shows taken may go unreported (no
/// fire, skip or queued line) before it is a condition: its `fire` line
/// follows the process's start, which a loaded host can delay by seconds.
pub(crate) const UNREPORTED_AFTER: Duration = Duration::from_secs(10);
/// A fresh worker gets at least this long to say hello (a cold exec on a
/// busy host) before it counts as stalled.
pub(super) const START_ALLOWANCE: Duration = Duration::from_secs(10);
/// At most this many runs are looked at in /proc per tick (near their
/// timeout) or per evaluation (busy runs of overlap streaks): each look
/// reads /proc, and the loop must stay short when a thousand runs time out
/// at once.
pub(super) const LOOKS_PER_EVENT: usize = 16;

/// What a judgement remembers for the next one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Memory {
    /// Whether the worker was asked for its schedule in this episode.
    pub armed_report_requested: bool,
    /// Jobs whose since-when of disagreeing armed times changed, with
    /// the new value (only the changes: a config may have 10,000 jobs).
    pub misarmed_since: Vec<(String, Option<Instant>)>,
    /// The pid of a worker this judgement declared stalled.
    pub declared_stalled: Option<u32>,
    /// The worker the supervisor is replacing (killed, not yet reaped).
    pub replacing: Option<u32>,
    /// Runs killed by the supervisor in this judgement: (job, run).
    pub enforced: Vec<(String, u64)>,
    /// Jobs whose since-when of a re-arm request changed, with the new
    /// value (see `heal`).
    pub rearm_sent: Vec<(String, Option<Instant>)>,
    /// Jobs whose due-since (see `job::due_seen`) changed, with the new value.
    pub due_seen: Vec<(String, Option<(Timestamp, Instant)>)>,
    /// When this judgement was made.
    pub judged_at: Option<Instant>,
}

/// Everything wrong right now, and what to do about it.
#[derive(Debug, Clone, Default)]
pub struct Judgement {
    pub conditions: Vec<Condition>,
    pub actions: Vec<Action>,
    pub memory: Memory,
}

/// Judges the model at `clocks`. Pure: see the module doc.
pub fn judge(m: &Model, clocks: Clocks) -> Judgement {
    let mut out = Judgement::default();
    let w = &m.worker;
    let wd = &m.config.watchdog;
    let now = clocks.now;
    out.conditions.extend(worker::crash_loop(w, now));
    let stall = worker::stall(w, wd, now);
    out.conditions
        .extend(worker::not_up(w, w.replacing_stalled || stall.is_some()));
    if let (Some(pid), true) = (w.pid, w.hello) {
        // One liveness condition at a time, the gravest first.
        let liveness = stall
            .map(|age| worker::stalled(pid, age, wd.stall_after))
            .or_else(|| worker::replacing_stalled(pid, w))
            .or_else(|| worker::heartbeat_overdue(pid, w, wd, now))
            .or_else(|| worker::failing(pid, w, wd, now));
        out.conditions.extend(liveness);
    }
    out.conditions.extend(worker::restarted(w, now));
    out.conditions.extend(worker::store_error(w));
    out.conditions.extend(durability::writes_held(w));
    out.conditions.extend(durability::records_dropped(w));
    out.conditions
        .extend(worker::reload_failed(m.reload_error.as_ref()));
    out.conditions.extend(worker::delivery_failed(&m.sinks));
    out.conditions
        .extend(clock_jump::recent(m.last_clock_jump.as_ref(), now));
    out.conditions
        .extend(cluster::conditions(m.cluster.as_ref()));

    // The replacement decisions: a stall first (its deadline is the
    // loop's timer), else a worker failing for too long.
    out.memory.replacing = w.replacing;
    let not_yet_replaced = w.pid.filter(|pid| w.replacing != Some(*pid));
    if let (Some(pid), Some(_)) = (not_yet_replaced, stall) {
        out.actions.push(Action::ReplaceWorker {
            pid,
            why: Replace::Stalled {
                allowance: allowance(w, wd),
            },
        });
        out.memory.declared_stalled = Some(pid);
        out.memory.replacing = Some(pid);
    } else if let Some((pid, failing_for)) =
        not_yet_replaced.and_then(|_| worker::replace_failing(w, wd, now))
    {
        out.actions.push(Action::ReplaceWorker {
            pid,
            why: Replace::Failing { failing_for },
        });
        out.memory.replacing = Some(pid);
    }

    let armed = worker::armed_mismatch(w, now);
    out.memory.armed_report_requested = armed.since.is_some() && w.armed_report_requested;
    if armed.since.is_some() && !w.armed_report_requested {
        out.actions.push(Action::AskArmedSchedule);
        out.memory.armed_report_requested = true;
    }
    if let Some(theirs) = armed.due {
        // Only now: a walk of every job's name, at every evaluation, for
        // a comparison made only when the worker's digest disagreed.
        let ours = ArmedDigest::of(m.jobs.iter().map(|(n, j)| (n.as_str(), j.expected_next)));
        out.conditions.push(worker::misarmed(m, theirs, ours));
    } else if w.pid.is_some() && w.hello {
        out.conditions.extend(worker::unreported(m, now));
    }

    let worker_up = w.pid.is_some() && w.hello;
    // How far back the wall clock's word is believed for a fire first seen
    // due now (see `job::due_seen`).
    let credit_since = [m.last_judged, w.hello_at]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(now);
    out.memory.judged_at = Some(now);
    let mut persistently_misarmed = None;
    for (name, j) in &m.jobs {
        let due_seen = job::due_seen(j, clocks, credit_since);
        if due_seen != j.due_seen {
            out.memory.due_seen.push((name.clone(), due_seen));
        }
        if worker_up {
            out.conditions
                .extend(job::late(name, j, due_seen, w.hello_at, now));
        }
        let since = job::misarmed_since(j, worker_up, clocks, m.last_judged);
        if since != j.misarmed_since {
            out.memory.misarmed_since.push((name.clone(), since));
        }
        out.conditions.extend(job::misarmed(name, j, since, now));
        let (healing, sent) = heal::heal(j, since, now);
        if sent != j.rearm_sent {
            out.memory.rearm_sent.push((name.clone(), sent));
        }
        match healing {
            Some(heal::Heal::Rearm) => out.actions.push(Action::Rearm { job: name.clone() }),
            Some(heal::Heal::Replace(for_)) => {
                persistently_misarmed.get_or_insert(for_);
            }
            None => {}
        }
        out.conditions
            .extend(job::overlap_streak(name, j, now, clocks.wall));
        out.conditions.extend(job::outcome(name, j));
        out.conditions.extend(job::zero_output_streak(name, j));
        for (run_id, pgid) in job::outlived(j, now) {
            out.actions.push(Action::KillRun {
                job: name.clone(),
                run_id,
                pgid,
            });
            out.memory.enforced.push((name.clone(), run_id));
        }
    }
    // Re-arming did not heal the disagreement: a new worker, unless one
    // is being replaced already.
    let replacing = out
        .actions
        .iter()
        .any(|a| matches!(a, Action::ReplaceWorker { .. }));
    if let (Some(pid), Some(for_), false) = (not_yet_replaced, persistently_misarmed, replacing) {
        out.actions.push(Action::ReplaceWorker {
            pid,
            why: Replace::Misarmed { for_ },
        });
        out.memory.replacing = Some(pid);
    }
    out
}

/// How long the worker may stay silent: `stall_after` once it said hello,
/// at least [`START_ALLOWANCE`] before.
fn allowance(w: &WorkerObs, wd: &Watchdog) -> Duration {
    if w.hello {
        wd.stall_after
    } else {
        wd.stall_after.max(START_ALLOWANCE)
    }
}

/// When the current worker counts as stalled if it stays silent: its
/// allowance after its last heartbeat (or after it was started, before
/// its hello). `None` without a worker, or once it is being replaced.
/// The loop sleeps until this instant and then evaluates; the judgement
/// replaces the worker when `now` has reached it.
pub fn stall_deadline(w: &WorkerObs, wd: &Watchdog) -> Option<Instant> {
    let pid = w.pid?;
    if w.replacing == Some(pid) {
        return None;
    }
    stall_at(w, wd)
}

/// The stall instant, whether or not the worker is being replaced (its
/// condition holds either way). `None` when too far off to represent.
fn stall_at(w: &WorkerObs, wd: &Watchdog) -> Option<Instant> {
    w.pid?;
    let since = w.last_heartbeat.or(w.spawned)?;
    since.checked_add(allowance(w, wd))
}

/// A run the loop should look at in /proc before judging.
#[derive(Debug, Clone, PartialEq)]
pub struct Look {
    pub job: String,
    pub run: RunningInfo,
    pub why: LookWhy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookWhy {
    /// The run is within `lead` of its timeout, or past it and not yet
    /// killed: its `job_timeout` alert says what it was doing.
    NearTimeout,
    /// The run keeps an overlap streak going: its alert says what it does.
    Busy,
}

/// Every run from `lead` before its timeout until its kill grace is over
/// (by wall time), at most [`LOOKS_PER_EVENT`].
pub fn looks_near_timeout(m: &Model, wall: Timestamp, lead: Duration) -> Vec<Look> {
    let signed = |d: Duration| SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX);
    let mut out = vec![];
    for (name, j) in &m.jobs {
        let Some(timeout) = j.spec.timeout else {
            continue;
        };
        let from = signed(timeout.saturating_sub(lead));
        let until = signed(
            timeout
                .saturating_add(j.spec.kill_grace)
                .saturating_add(lead),
        );
        for r in j.running.values() {
            let age = wall.duration_since(r.started_at);
            if age >= from && age <= until {
                out.push(Look {
                    job: name.clone(),
                    run: r.clone(),
                    why: LookWhy::NearTimeout,
                });
            }
        }
    }
    out.truncate(LOOKS_PER_EVENT);
    out
}

/// The busy run of every job in an overlap streak, at most
/// [`LOOKS_PER_EVENT`].
pub fn looks_at_busy_runs(m: &Model) -> Vec<Look> {
    m.jobs
        .iter()
        .filter(|(_, j)| j.streaks.overlap_skips >= j.spec.overlap_alert_after)
        .filter_map(|(name, j)| {
            Some(Look {
                job: name.clone(),
                run: j.running.values().next()?.clone(),
                why: LookWhy::Busy,
            })
        })
        .take(LOOKS_PER_EVENT)
        .collect()
}
