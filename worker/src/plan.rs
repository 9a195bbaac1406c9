//! The scheduling plan: every firing decision, as a pure state machine.
//!
//! Inputs are the clocks (read by the loop, never here) and what happened:
//! a configuration (already reconciled with the store), a turn at a wall
//! time, a run that finished, a command (trigger, pause, resume, report,
//! re-arm), a shutdown. Outputs are [`Effects`]: store writes, events for the
//! supervisor, runs to spawn and runs to stop. Nothing in this module
//! reads a clock, touches the store or spawns; the loop in
//! [`crate::scheduler`] carries the effects out, in that order (writes
//! committed before events are sent and runs spawned, so every fire the
//! supervisor hears of is already durable).
//!
//! Invariants:
//! - every scheduled fire time yields exactly one record: a run (inserted
//!   `running`, completed by the runner under the same id and `started_at`)
//!   or a skip with its reason (`overlap`, `misfire`, `paused`,
//!   `worker_down`, `removed`): nothing pending is dropped unrecorded (a
//!   queued fire of a job a reload removes is skipped `removed`);
//! - a schedule or zone change accounts the fires the old schedule still
//!   owed (its stored next fire up to now, through the misfire rules)
//!   before the job is armed on the new one, in the same transaction as
//!   the claim that switches the stored row (see `configure` and
//!   [`Rearm`](cronwarden_shared::store::Rearm));
//! - run ids are never reused, even by a worker started after one whose
//!   writes never reached the store: every id is covered by a reservation
//!   ([`Write::ReserveIds`]) committed in the same transaction as its
//!   record or earlier, kept [`RESERVE_AHEAD`] ids ahead of the ids in
//!   use, and a new worker starts above the reservation;
//! - fires missed while the loop could not run (downtime, a stopped
//!   process, a slow turn, a forward clock step) are coalesced into one run
//!   that `covers` them if they are younger than the job's misfire grace,
//!   and skipped as `misfire` otherwise;
//! - a job's next fire only moves back by the rule of [`arming`]: after a
//!   backward clock step a schedule that repeats within the span stepped
//!   back keeps its cadence on the new clock (the span's times are fired
//!   a second time, a fold's second pass); a fixed-time fire already
//!   recorded is never fired twice;
//! - a job is never armed past fires nobody accounted: an arming the
//!   schedule cannot produce from the last accounted fire (at configure,
//!   or when the supervisor asks to re-arm) is corrected to the fire after
//!   it, so those fires go through the misfire rules ([`clock_step`]);
//! - at most one fire waits behind a busy run (`overlap = queue`);
//! - the loop may fire for an instant up to [`LEAD`] ahead of the wall
//!   clock; a queued fire started by a run's end inside it starts at its
//!   time, and a re-arm inside it never takes that instant again ([`lead`]);
//! - several hosts: a fire claimed ahead in the shared ledger gets its run
//!   id then, and whatever record the plan makes of it at its instant
//!   carries that id; one taken off the schedule before its instant is
//!   recorded skipped `removed`; one not due in time (the wall clock
//!   stepped back) is released, its id forgotten ([`ahead`]);
//! - a job's armed fire changes only through [`Plan::arm`], which keeps
//!   the index of [`starts`] true: a turn looks at the due jobs alone and
//!   the next wake-up is the index's first entry, whatever the job count.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use cronwarden_shared::{
    config::{Config, JobSpec, OnStoreFailure, Overlap},
    status::{Outcome, RunRecord, SkipReason, Trigger},
    store::{JobRow, Write},
    wire::{Armed, Command, Event},
};
use jiff::{SignedDuration, Timestamp};

use crate::{clock::Clocks, runner::StopReason};

/// At most this many missed fires of one job are enumerated in one turn
/// (a per-second job after a day of downtime); the rest follow in the next
/// turns, so one turn stays short.
const MAX_DUE_PER_TURN: usize = 10_000;
/// Run ids are reserved in the store this far ahead of the ids in use, so
/// a worker whose store fails can hand out this many more ids before one
/// could be reused by its successor (at 150 fires a second, about an
/// hour). The cost: a restarted worker's ids continue above the old
/// reservation, so ids jump by up to [`RESERVE_BLOCK`] at each start.
pub(crate) const RESERVE_AHEAD: u64 = 500_000;
/// How far one reservation reaches beyond the id that asked for it.
pub(crate) const RESERVE_BLOCK: u64 = 2 * RESERVE_AHEAD;

/// What one input asks the loop to do, in this order.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    /// Committed in one transaction before anything else happens.
    pub writes: Vec<Write>,
    pub events: Vec<Event>,
    /// Runs to ask to stop (run id, why).
    pub stops: Vec<(u64, StopReason)>,
    pub spawns: Vec<Spawn>,
}

/// A run to start. Its record is already among the writes (`running`); the
/// runner completes that same record.
#[derive(Debug)]
pub(crate) struct Spawn {
    pub record: RunRecord,
    pub job: Arc<JobSpec>,
    /// The job's next armed fire, reported with the fire event.
    pub next_fire_at: Option<Timestamp>,
    /// Start this much later (catch-up runs spread after a clock jump).
    pub delay: Duration,
}

struct JobState {
    spec: Arc<JobSpec>,
    /// The armed fire (nominal time). Changed only by [`Plan::arm`], which
    /// keeps the index of starts true.
    next: Option<Timestamp>,
    /// The last scheduled time accounted (run, coalesced or skipped), as
    /// the store's `last_scheduled_at`: where the schedule continues from
    /// (see [`arming`]).
    last: Option<Timestamp>,
    paused: bool,
    /// Runs in progress, oldest first.
    running: Vec<u64>,
    /// `overlap = queue`: the one fire waiting for the current run, with
    /// the id its record was committed under when it was claimed.
    pending: Option<(u64, Vec<Timestamp>)>,
}

pub(crate) struct Plan {
    jobs: BTreeMap<String, JobState>,
    /// The jobs by the start of their armed fire (see [`starts`]).
    starts: starts::Starts,
    next_run_id: u64,
    /// The highest run id reserved (planned to be stored): ids are handed
    /// out only below it.
    reserved: u64,
    /// Runs in progress of jobs a reload removed: they finish (and are
    /// recorded) as any run, and a shutdown stops them like the others.
    orphans: BTreeMap<u64, Arc<JobSpec>>,
    /// The clocks at the previous turn, to notice steps and suspends.
    last_clocks: Option<Clocks>,
    /// Spread the next turn's catch-up runs (after a forward clock jump).
    stagger: bool,
    /// Fault injection (`worker::drop_fire=return(JOB)`): this job's fires
    /// are claimed but silently never dispatched.
    pub drop_fires_of: Option<String>,
    /// Fault injection (`worker::misarm=return(JOB)`): this job's next
    /// claim arms it a day too far, once (a worker whose arming went
    /// wrong; see [`Plan::rearm_requested`]).
    pub misarm_once: Option<String>,
    /// The store is failing (set by the shell before each turn): a job
    /// with `on_store_failure = "hold"` skips its fires meanwhile.
    pub store_failing: bool,
    /// Set when this worker followed one that was killed while no living
    /// supervisor kept a copy of its writes: a run covering fires due at
    /// or before this instant (the start) may repeat fires the dead worker
    /// ran unrecorded (its claims held in memory, the store failing), and
    /// says so.
    pub in_doubt_through: Option<Timestamp>,
    retries: retry::Retries,
    boot: reboot::Boot,
    /// Several hosts: fires claimed ahead of their instant, with the run
    /// id their record gets (see [`ahead`]).
    ahead: BTreeMap<(String, Timestamp), ahead::Claimed>,
    /// Fires whose claim ahead was released: claimed at their instant.
    no_ahead: BTreeSet<(String, Timestamp)>,
    /// Run ids of claims ahead released, for the cluster to release.
    released_ahead: Vec<u64>,
    /// The wall time the fires claimed ahead were last judged at.
    ahead_judged_at: Option<Timestamp>,
    /// Where [`Plan::fire_due_at_most`] stopped at this `now`: the first
    /// job not reached. A job fired and still due (more missed fires than
    /// one turn takes) is not fired again in the turn's next chunk.
    resume: Option<(Timestamp, String)>,
}

/// The reservation a worker commits before it plans anything: ids from
/// `first_run_id` on, [`RESERVE_BLOCK`] of them. Committed at start (the
/// store must be writable then), so even a worker whose every later write
/// fails leaves its successor starting above the ids it handed out (up to
/// [`RESERVE_AHEAD`] of them).
pub(crate) fn reserve_at_start(first_run_id: u64) -> u64 {
    first_run_id.max(1).saturating_add(RESERVE_BLOCK)
}

/// The schedule rows a config asks for, armed from `now`: what the store
/// reconciles with (see [`Plan::configure`]).
pub(crate) fn wanted_rows(config: &Config, now: Timestamp) -> Vec<JobRow> {
    config
        .jobs
        .iter()
        .map(|j| JobRow {
            name: j.name.clone(),
            schedule: j.schedule.expr().to_string(),
            timezone: j.timezone.clone(),
            next_run_at: j.schedule.next_after(now, None),
            last_scheduled_at: None,
            paused: false,
        })
        .collect()
}

/// Whether a run covering these times may repeat fires a dead worker ran
/// unrecorded (see [`Plan::in_doubt_through`]). Only the catch-up of the
/// fires due at start can: every later fire is claimed by this worker.
fn doubted(in_doubt_through: Option<Timestamp>, covers: &[Timestamp]) -> bool {
    in_doubt_through.is_some_and(|b| covers.iter().any(|t| *t <= b))
}

fn trigger_for(covers: &[Timestamp]) -> Trigger {
    match covers.len() {
        0 => Trigger::Manual,
        1 => Trigger::Schedule,
        _ => Trigger::Catchup,
    }
}

impl Plan {
    /// Run ids start at `first_run_id` (at least 1): above every id any
    /// earlier worker may have used (see [`Store::first_free_run_id`]);
    /// ids up to `reserved` are durably reserved already (see
    /// [`reserve_at_start`]), later ones are reserved as they are needed.
    ///
    /// [`Store::first_free_run_id`]: cronwarden_shared::store::Store::first_free_run_id
    pub fn new(first_run_id: u64, reserved: u64) -> Plan {
        let first_run_id = first_run_id.max(1);
        Plan {
            jobs: BTreeMap::new(),
            starts: Default::default(),
            next_run_id: first_run_id,
            reserved: reserved.max(first_run_id - 1),
            orphans: BTreeMap::new(),
            last_clocks: None,
            stagger: false,
            drop_fires_of: None,
            misarm_once: None,
            store_failing: false,
            in_doubt_through: None,
            retries: Default::default(),
            boot: Default::default(),
            ahead: BTreeMap::new(),
            no_ahead: BTreeSet::new(),
            released_ahead: Vec::new(),
            ahead_judged_at: None,
            resume: None,
        }
    }

    /// A job's fire times due at `now`, oldest first, at most
    /// [`MAX_DUE_PER_TURN`].
    fn due(&self, job: &JobState, now: Timestamp) -> Vec<Timestamp> {
        let mut due = vec![];
        let mut cursor = job.next;
        while let Some(t) = cursor {
            if jitter::start_of(&job.spec, t) > now || due.len() >= MAX_DUE_PER_TURN {
                break;
            }
            due.push(t);
            cursor = job.spec.schedule.next_after(t, Some(t));
        }
        due
    }

    /// Claims and dispatches every fire due at `now`. Only the due jobs
    /// are looked at (the index of starts); they are taken in name order,
    /// as when every job was walked, so run ids follow the same order.
    pub fn fire_due(&mut self, now: Timestamp, fx: &mut Effects) {
        self.fire_due_at_most(now, fx, usize::MAX);
    }

    /// As [`Plan::fire_due`], but stops once `max_spawns` runs were
    /// added to `fx.spawns` by this call; returns whether it stopped
    /// there (then the jobs not reached are still due, and a next call at
    /// the same `now` goes on with them, in the same name order). Every
    /// job fired is fired whole (its claim, records and spawn in `fx`), so
    /// the loop can commit and start a burst's first runs while planning
    /// the rest (issue 18). A turn that spreads catch-up runs fires all at
    /// once, for the spread to cover them all.
    pub fn fire_due_at_most(
        &mut self,
        now: Timestamp,
        fx: &mut Effects,
        max_spawns: usize,
    ) -> bool {
        let first_spawn = fx.spawns.len();
        let max_spawns = if self.stagger { usize::MAX } else { max_spawns };
        let from = self
            .resume
            .take()
            .filter(|(at, _)| *at == now)
            .map(|(_, n)| n);
        let mut names: Vec<String> = self
            .starts
            .due(now)
            .filter(|n| from.as_deref().is_none_or(|from| *n >= from))
            .map(str::to_string)
            .collect();
        names.sort_unstable();
        for name in names {
            if fx.spawns.len() - first_spawn >= max_spawns {
                self.resume = Some((now, name));
                return true;
            }
            let Some(job) = self.jobs.get(&name) else {
                continue;
            };
            let due = self.due(job, now);
            let Some(&last) = due.last() else {
                continue;
            };
            // Past `now`, or still due when the turn's bound was reached.
            let mut to = job.spec.schedule.next_after(last, Some(last));
            if self.misarm_once.as_deref() == Some(name.as_str()) {
                self.misarm_once = None;
                to = to.and_then(|t| t.checked_add(SignedDuration::from_hours(24)).ok());
                tracing::warn!(job = %name, "fault injection: arming the job a day too far");
            }
            fx.writes.push(Write::Claim {
                job: name.clone(),
                from: job.next,
                to,
                last_scheduled_at: Some(last),
                rearm: None,
            });
            self.arm(&name, to);
            if let Some(job) = self.jobs.get_mut(&name) {
                job.last = Some(last);
            }
            if self.drop_fires_of.as_deref() == Some(name.as_str()) {
                continue;
            }
            self.dispatch(&name, due, now, fx);
        }
        if std::mem::take(&mut self.stagger) {
            spread(now, first_spawn, fx);
        }
        self.fire_retries(now, fx);
        false
    }

    /// The next run id, reserving more ahead of it when the reservation
    /// runs low (the reservation is written before the record that uses
    /// the id, in the same transaction).
    fn alloc_id(&mut self, fx: &mut Effects) -> u64 {
        let id = self.next_run_id;
        self.next_run_id += 1;
        if id.saturating_add(RESERVE_AHEAD) > self.reserved {
            self.reserved = id.saturating_add(RESERVE_BLOCK);
            fx.writes.push(Write::ReserveIds {
                upto: self.reserved,
            });
        }
        id
    }

    fn skip(
        &mut self,
        job: &str,
        t: Timestamp,
        reason: SkipReason,
        busy: Option<u64>,
        now: Timestamp,
        fx: &mut Effects,
    ) {
        let run_id = self.id_for(job, &[t], fx);
        let next_fire_at = self.jobs.get(job).and_then(|j| j.next);
        if reason != SkipReason::Paused {
            tracing::warn!(job, run = run_id, scheduled_at = %t, reason = reason.as_str(), busy_run = busy, "fire skipped");
        }
        let mut rec = RunRecord::new(run_id, job, vec![t], Trigger::Schedule, Outcome::Skipped);
        rec.finished_at = Some(now);
        rec.skip_reason = Some(reason);
        rec.error = busy.map(|b| format!("run {b} was still running"));
        fx.writes.push(Write::Insert(rec));
        fx.events.push(Event::Skip {
            job: job.to_string(),
            run_id,
            scheduled_at: t,
            reason,
            busy_run_id: busy,
            next_fire_at,
        });
    }

    /// Decides what the due fires of one job become: misfire skips for the
    /// stale ones, and for the fresh ones (coalesced) a paused skip, an
    /// overlap decision, or a run.
    fn dispatch(&mut self, name: &str, due: Vec<Timestamp>, now: Timestamp, fx: &mut Effects) {
        let Some(job) = self.jobs.get(name) else {
            return;
        };
        let grace = SignedDuration::try_from(job.spec.misfire_grace).unwrap_or(SignedDuration::MAX);
        let (stale, fresh): (Vec<_>, Vec<_>) = due
            .into_iter()
            .partition(|t| now.duration_since(jitter::start_of(&job.spec, *t)) > grace);
        for t in stale {
            self.skip(name, t, SkipReason::Misfire, None, now, fx);
        }
        let Some(job) = self.jobs.get(name) else {
            return;
        };
        if fresh.is_empty() {
            return;
        }
        if job.paused {
            for t in fresh {
                self.skip(name, t, SkipReason::Paused, None, now, fx);
            }
            return;
        }
        if self.store_failing && job.spec.on_store_failure == OnStoreFailure::Hold {
            for t in fresh {
                self.skip(name, t, SkipReason::StoreUnavailable, None, now, fx);
            }
            return;
        }
        if let Some(&busy) = job.running.first() {
            match job.spec.overlap {
                Overlap::Skip => {
                    for t in fresh {
                        self.skip(name, t, SkipReason::Overlap, Some(busy), now, fx);
                    }
                    return;
                }
                Overlap::Queue if job.pending.is_some() => {
                    for t in fresh {
                        self.skip(name, t, SkipReason::Overlap, Some(busy), now, fx);
                    }
                    return;
                }
                Overlap::Queue => {
                    // Recorded now (as in flight), so a crash before it
                    // starts still leaves a record: it becomes `lost`.
                    let id = self.id_for(name, &fresh, fx);
                    let Some(job) = self.jobs.get_mut(name) else {
                        return;
                    };
                    job.pending = Some((id, fresh.clone()));
                    let mut rec = RunRecord::new(
                        id,
                        name,
                        fresh.clone(),
                        trigger_for(&fresh),
                        Outcome::Running,
                    );
                    rec.may_repeat = doubted(self.in_doubt_through, &fresh);
                    fx.writes.push(Write::Insert(rec));
                    fx.events.push(Event::Queued {
                        job: name.to_string(),
                        run_id: id,
                        covers: fresh,
                        next_fire_at: job.next,
                    });
                    return;
                }
                Overlap::Replace => {
                    fx.stops
                        .extend(job.running.iter().map(|&id| (id, StopReason::Killed)));
                }
                Overlap::Allow => {}
            }
        }
        let run_id = self.id_for(name, &fresh, fx);
        self.start(run_id, name, fresh, now, fx);
    }

    /// Plans a run for the given scheduled times (empty: a manual run):
    /// its one record, inserted `running` with `started_at = now`, is the
    /// one the runner completes.
    fn start(
        &mut self,
        run_id: u64,
        name: &str,
        covers: Vec<Timestamp>,
        now: Timestamp,
        fx: &mut Effects,
    ) {
        let Some(job) = self.jobs.get_mut(name) else {
            return;
        };
        let trigger = trigger_for(&covers);
        let doubt = doubted(self.in_doubt_through, &covers);
        let mut record = RunRecord::new(run_id, name, covers, trigger, Outcome::Running);
        record.started_at = Some(now);
        record.may_repeat = doubt;
        job.running.push(run_id);
        fx.writes.push(Write::Insert(record.clone()));
        fx.spawns.push(Spawn {
            record,
            job: job.spec.clone(),
            next_fire_at: job.next,
            delay: Duration::ZERO,
        });
    }

    /// A run ended: record it, release its busy flag, start a queued fire.
    pub fn finished(&mut self, record: RunRecord, now: Timestamp, fx: &mut Effects) {
        let (name, id, outcome) = (record.job.clone(), record.id, record.outcome);
        fx.writes.push(Write::Finish(record));
        if self.orphans.remove(&id).is_some() {
            self.retries.forget(id);
            return;
        }
        let Some(job) = self.jobs.get_mut(&name) else {
            self.retries.forget(id);
            return;
        };
        job.running.retain(|r| *r != id);
        self.retries.finished(&job.spec, id, outcome, now);
        if job.running.is_empty() {
            if let Some((id, covers)) = job.pending.take() {
                let at = queued_start(&job.spec, &covers, now);
                self.start(id, &name, covers, at, fx);
            }
        }
    }

    /// Several hosts: a planned run whose fire this host did not win in the
    /// shared ledger never starts. It releases its busy flag like a run
    /// that ended (its record, if any, is the caller's to write), and a
    /// queued fire behind it starts.
    pub fn disclaimed(&mut self, name: &str, id: u64, now: Timestamp, fx: &mut Effects) {
        self.retries.forget(id);
        if self.orphans.remove(&id).is_some() {
            return;
        }
        let Some(job) = self.jobs.get_mut(name) else {
            return;
        };
        job.running.retain(|r| *r != id);
        if job.running.is_empty() {
            if let Some((id, covers)) = job.pending.take() {
                let at = queued_start(&job.spec, &covers, now);
                self.start(id, name, covers, at, fx);
            }
        }
    }

    /// Carries out a command. `configure` (which needs the store) and
    /// `shutdown` are the loop's; they do nothing here.
    pub fn command(&mut self, cmd: Command, now: Timestamp, fx: &mut Effects) {
        match cmd {
            Command::Trigger { job, request } => self.trigger(job, request, now, fx),
            Command::Pause { job, request } => self.set_paused("pause", job, request, true, fx),
            Command::Resume { job, request } => self.set_paused("resume", job, request, false, fx),
            Command::ReportSchedule => self.report_schedule(fx),
            Command::Rearm { job } => self.rearm_requested(&job, now, fx),
            // `kill` signals runs, which only the loop holds.
            Command::Configure { .. }
            | Command::Shutdown
            | Command::Kill { .. }
            | Command::Adopt { .. } => {}
        }
    }

    /// A manual run, refused while the job runs unless it allows overlap.
    fn trigger(&mut self, job: String, request: Option<u64>, now: Timestamp, fx: &mut Effects) {
        let refusal = match self.jobs.get(&job) {
            None => Some(format!("no job named {job:?}")),
            Some(j) => match (j.running.first(), j.spec.overlap) {
                (Some(busy), overlap) if overlap != Overlap::Allow => Some(format!(
                    "job {job:?} is still running (run {busy}) and its overlap policy is {}",
                    overlap.as_str()
                )),
                _ => None,
            },
        };
        match refusal {
            Some(error) => answer("trigger", request, Err(error), fx),
            None => {
                tracing::info!(job, "manual trigger");
                let run_id = self.alloc_id(fx);
                self.start(run_id, &job, vec![], now, fx);
                answer("trigger", request, Ok(Some(run_id)), fx);
            }
        }
    }

    fn set_paused(
        &mut self,
        command: &str,
        job: String,
        request: Option<u64>,
        paused: bool,
        fx: &mut Effects,
    ) {
        let Some(j) = self.jobs.get_mut(&job) else {
            return answer(command, request, Err(format!("no job named {job:?}")), fx);
        };
        j.paused = paused;
        tracing::info!(job, paused, "pause state changed");
        fx.writes.push(Write::Paused { job, paused });
        self.report_schedule(fx);
        answer(command, request, Ok(None), fx);
    }

    fn report_schedule(&self, fx: &mut Effects) {
        let jobs = self
            .jobs
            .values()
            .map(|j| Armed {
                job: j.spec.name.clone(),
                next_fire_at: j.next,
                paused: j.paused,
            })
            .collect();
        fx.events.push(Event::Schedule { jobs });
    }

    /// Stops every run; returns how many were running. Queued fires will
    /// not run now: their records say `worker_down`.
    pub fn shutdown(&mut self, now: Timestamp, fx: &mut Effects) -> usize {
        let queued: Vec<(String, u64, Vec<Timestamp>)> = self
            .jobs
            .iter_mut()
            .filter_map(|(n, j)| j.pending.take().map(|(id, c)| (n.clone(), id, c)))
            .collect();
        for (name, id, covers) in queued {
            let trigger = trigger_for(&covers);
            let mut rec = RunRecord::new(id, &name, covers, trigger, Outcome::Skipped);
            rec.finished_at = Some(now);
            rec.skip_reason = Some(SkipReason::WorkerDown);
            rec.error = Some("queued behind a running run when the worker shut down".into());
            fx.writes.push(Write::Finish(rec));
        }
        let before = fx.stops.len();
        for j in self.jobs.values() {
            fx.stops
                .extend(j.running.iter().map(|&id| (id, StopReason::Shutdown)));
        }
        fx.stops
            .extend(self.orphans.keys().map(|&id| (id, StopReason::Shutdown)));
        fx.stops.len() - before
    }

    /// The longest kill grace among jobs with a run in progress.
    pub fn longest_kill_grace(&self) -> Duration {
        self.jobs
            .values()
            .filter(|j| !j.running.is_empty())
            .map(|j| j.spec.kill_grace)
            .chain(self.orphans.values().map(|spec| spec.kill_grace))
            .max()
            .unwrap_or_default()
    }

    /// What the store must hold for this plan to be taken up again, for a
    /// store recreated under a running worker: every job's row (schedule,
    /// zone, armed fire, paused), then writes that set each job's
    /// `next_run_at` to the armed fire whatever it was (to be applied
    /// without the compare-and-set), the run-id reservation, the boot
    /// `@reboot` jobs fired in, and the records of queued fires (in
    /// flight).
    pub fn restore(&self) -> (Vec<JobRow>, Vec<Write>) {
        let rows = self
            .jobs
            .values()
            .map(|j| JobRow {
                name: j.spec.name.clone(),
                schedule: j.spec.schedule.expr().to_string(),
                timezone: j.spec.timezone.clone(),
                next_run_at: j.next,
                last_scheduled_at: None,
                paused: j.paused,
            })
            .collect();
        let mut writes = vec![Write::ReserveIds {
            upto: self.reserved,
        }];
        writes.extend(self.reboot_restore());
        for j in self.jobs.values() {
            writes.push(Write::Claim {
                job: j.spec.name.clone(),
                from: None,
                to: j.next,
                last_scheduled_at: None,
                rearm: None,
            });
            writes.push(Write::Paused {
                job: j.spec.name.clone(),
                paused: j.paused,
            });
            if let Some((id, covers)) = &j.pending {
                let mut rec = RunRecord::new(
                    *id,
                    &j.spec.name,
                    covers.clone(),
                    trigger_for(covers),
                    Outcome::Running,
                );
                rec.may_repeat = doubted(self.in_doubt_through, covers);
                writes.push(Write::Insert(rec));
            }
        }
        (rows, writes)
    }

    /// The earliest start of an armed fire of any job (its time plus its
    /// jitter offset), or of a waiting retry.
    pub fn earliest_fire(&self) -> Option<Timestamp> {
        self.starts
            .first()
            .into_iter()
            .chain(self.retries.earliest())
            .min()
    }

    /// Every job with its armed next fire, by name.
    pub fn armed(&self) -> impl Iterator<Item = (&str, Option<Timestamp>)> {
        self.jobs.iter().map(|(n, j)| (n.as_str(), j.next))
    }

    /// An earlier generation's run whose processes outlived the kill at
    /// start: it holds its job busy, for the overlap rules, until its lost
    /// record comes through [`Plan::finished`].
    pub fn hold(&mut self, job: &str, run_id: u64) {
        if let Some(j) = self.jobs.get_mut(job) {
            if !j.running.contains(&run_id) {
                j.running.push(run_id);
            }
        }
    }

    /// The runs in progress, of removed jobs too.
    pub fn running(&self) -> impl Iterator<Item = u64> + '_ {
        self.jobs
            .values()
            .flat_map(|j| j.running.iter().copied())
            .chain(self.orphans.keys().copied())
    }

    /// How many records of `job` to keep; `None` once it left the config
    /// (a removed job's history stays whole).
    pub fn retention(&self, job: &str) -> Option<u32> {
        self.jobs.get(job).map(|j| j.spec.retention)
    }
}

/// Answers a command: a `reply` when it carried a request id, else a
/// `command_failed` event for failures.
pub(crate) fn answer(
    command: &str,
    request: Option<u64>,
    result: Result<Option<u64>, String>,
    fx: &mut Effects,
) {
    match (request, result) {
        (Some(request), Ok(run_id)) => fx.events.push(Event::Reply {
            request,
            ok: true,
            error: None,
            run_id,
        }),
        (Some(request), Err(error)) => {
            tracing::warn!(command, "{error}");
            fx.events.push(Event::Reply {
                request,
                ok: false,
                error: Some(error),
                run_id: None,
            })
        }
        (None, Ok(_)) => {}
        (None, Err(error)) => command_failed(command, error, fx),
    }
}

pub(crate) fn command_failed(command: &str, error: String, fx: &mut Effects) {
    tracing::warn!(command, "{error}");
    fx.events.push(Event::CommandFailed {
        command: command.into(),
        error,
    });
}

mod ahead;
mod arming;
mod clock_step;
mod configure;

pub(crate) use ahead::AheadFire;
use clock_step::spread;
mod jitter;
mod lead;
use lead::queued_start;
pub use lead::LEAD;
pub(crate) use lead::{ahead_within_lead, lead_span};
mod reboot;
mod retry;
mod starts;

#[cfg(test)]
mod chunks;
#[cfg(test)]
mod extreme;
#[cfg(test)]
mod props;
#[cfg(test)]
pub(crate) mod props_world;
#[cfg(test)]
mod tests;
