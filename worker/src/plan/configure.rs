//! The plan's side of a (new) configuration: jobs added, removed and
//! changed, a removed job's queued fire recorded `removed`, and a job whose
//! schedule or zone changed re-armed after the fires its old schedule owed
//! (see [`Rearm`]).

use cronwarden_shared::{
    config::Config,
    status::{Outcome, RunRecord, SkipReason},
    store::{JobRow, Rearm, Write},
    wire::Event,
};
use jiff::Timestamp;

use super::{trigger_for, Effects, JobState, Plan, MAX_DUE_PER_TURN};

impl Plan {
    /// Applies a (new) config, given the store's rows for it (in the
    /// config's job order; see [`wanted_rows`]): removed jobs are dropped at
    /// once (their running runs finish, but they never fire again); the
    /// others take their next fire and paused flag from the rows (so new
    /// and changed jobs are armed from now, and an unchanged job's fire
    /// that came due while cronwarden was down goes through the misfire
    /// rules). Their runs in progress and queued fires are kept. A removed
    /// job's queued fire is recorded skipped (`removed`). A job whose row
    /// still holds another schedule or zone (changed while running, or
    /// across downtime) is re-armed from `now` on the new one, after the
    /// fires the old one owed up to `now` are dispatched.
    pub fn configure(
        &mut self,
        config: &Config,
        rows: Vec<JobRow>,
        now: Timestamp,
        fx: &mut Effects,
    ) {
        let mut old = std::mem::take(&mut self.jobs);
        // Every job is armed again below, on its new spec (its jitter may
        // have changed, and with it the start the index holds).
        self.starts.clear();
        let mut rearms = vec![];
        let mut checks = vec![];
        let mut jobs = Vec::with_capacity(config.jobs.len());
        let mut arms = Vec::with_capacity(config.jobs.len());
        for (spec, row) in config.jobs.iter().zip(rows) {
            let spec = spec.clone();
            let mut job = old.remove(&spec.name).unwrap_or_else(|| JobState {
                spec: spec.clone(),
                next: None,
                last: None,
                paused: false,
                // A job removed and added back: its runs still in progress
                // are its own again (overlap rules see them).
                running: self
                    .orphans
                    .iter()
                    .filter(|(_, o)| o.name == spec.name)
                    .map(|(id, _)| *id)
                    .collect(),
                pending: None,
            });
            self.orphans.retain(|_, o| o.name != spec.name);
            job.spec = spec;
            job.next = None;
            job.last = row.last_scheduled_at;
            job.paused = row.paused;
            let (name, next) = (job.spec.name.clone(), row.next_run_at);
            if row.schedule != job.spec.schedule.expr() || row.timezone != job.spec.timezone {
                rearms.push(row);
            } else {
                checks.push(name.clone());
            }
            jobs.push((name.clone(), job));
            arms.push((name, next));
        }
        // Collected, then armed: a map built from an iterator has full
        // nodes, where inserting in name order leaves them half empty.
        self.jobs = jobs.into_iter().collect();
        for (name, next) in arms {
            self.arm(&name, next);
        }
        for (name, job) in old {
            tracing::info!(job = %name, running = job.running.len(), "job removed from the config; it will not fire again");
            for &id in &job.running {
                self.orphans.insert(id, job.spec.clone());
            }
            if let Some((id, covers)) = job.pending {
                let busy = job.running.first().copied();
                self.removed_while_queued(&name, id, covers, busy, now, fx);
            }
        }
        for row in rearms {
            self.rearm(row, now, fx);
        }
        for name in checks {
            self.correct_arming(&name, now, "checked when configured", fx);
        }
        self.fire_reboots(now, fx);
        self.report_schedule(fx);
    }

    /// When the store could not reconcile a config (it fails), the plan
    /// schedules from `wanted` alone; these writes, held and retried with
    /// the others, bring the store's rows in line once it recovers: rows
    /// of jobs this config removes go, and jobs new to the plan (or with
    /// another schedule or zone) get their row as wanted (else a job
    /// removed and added back during the outage would resume from its
    /// stale stored fire, and a changed one keep its old schedule in the
    /// store). Call before [`Plan::configure`].
    pub fn unreconciled_writes(&self, wanted: &[JobRow]) -> Vec<Write> {
        let mut writes: Vec<Write> = self
            .jobs
            .keys()
            .filter(|name| !wanted.iter().any(|w| &w.name == *name))
            .map(|name| Write::RemoveJob { job: name.clone() })
            .collect();
        writes.extend(
            wanted
                .iter()
                .filter(|w| match self.jobs.get(&w.name) {
                    None => true,
                    Some(j) => {
                        j.spec.schedule.expr() != w.schedule || j.spec.timezone != w.timezone
                    }
                })
                .map(|w| Write::UpsertJob(w.clone())),
        );
        writes
    }

    /// A queued fire whose job a reload removed: its record (committed
    /// `running` when it was queued) becomes a skip, reason `removed`.
    pub(super) fn removed_while_queued(
        &mut self,
        name: &str,
        id: u64,
        covers: Vec<Timestamp>,
        busy: Option<u64>,
        now: Timestamp,
        fx: &mut Effects,
    ) {
        tracing::warn!(
            job = name,
            run = id,
            "a queued fire of a removed job is recorded skipped (removed)"
        );
        let scheduled_at = covers.iter().max().copied();
        let trigger = trigger_for(&covers);
        let mut rec = RunRecord::new(id, name, covers, trigger, Outcome::Skipped);
        rec.finished_at = Some(now);
        rec.skip_reason = Some(SkipReason::Removed);
        rec.error = Some(match busy {
            Some(b) => format!("queued behind run {b} when a reload removed the job"),
            None => "queued when a reload removed the job".into(),
        });
        fx.writes.push(Write::Finish(rec));
        if let Some(scheduled_at) = scheduled_at {
            fx.events.push(Event::Skip {
                job: name.to_string(),
                run_id: id,
                scheduled_at,
                reason: SkipReason::Removed,
                busy_run_id: busy,
                next_fire_at: None,
            });
        }
    }

    /// Moves a job from the schedule its stored row holds to its configured
    /// one. The fires the old schedule owed up to `now` are due: they go
    /// through the misfire rules (a catch-up run within the grace, misfire
    /// skips beyond) like any missed fire; then the job is armed from `now`.
    /// The claim that switches the row carries the new schedule, so until
    /// it commits a restart still sees the old one and finds the same fires.
    pub(super) fn rearm(&mut self, row: JobRow, now: Timestamp, fx: &mut Effects) {
        let Some(job) = self.jobs.get(&row.name) else {
            return;
        };
        let old = jiff::tz::TimeZone::get(&row.timezone)
            .ok()
            .and_then(|tz| cronwarden_shared::schedule::Schedule::parse(&row.schedule, &tz).ok());
        let mut owed = vec![];
        let mut cursor = row.next_run_at;
        while let Some(t) = cursor {
            if t > now || owed.len() >= MAX_DUE_PER_TURN {
                break;
            }
            owed.push(t);
            // An old schedule this build cannot read: its stored next fire
            // is the one fire known to be owed.
            cursor = old.as_ref().and_then(|s| s.next_after(t, Some(t)));
        }
        // From the last fire accounted, if it is ahead of `now` by no more
        // than the loop's lead (it was decided ahead): never that fire
        // again. Further ahead is a clock stepped back: from `now`.
        let from = job
            .last
            .filter(|last| super::ahead_within_lead(now, *last))
            .unwrap_or(now);
        let to = job.spec.schedule.next_after(from, None);
        tracing::info!(
            job = %row.name,
            old_schedule = %row.schedule,
            old_timezone = %row.timezone,
            new_schedule = job.spec.schedule.expr(),
            new_timezone = %job.spec.timezone,
            owed = owed.len(),
            "schedule changed: accounting the fires the old one owed, then arming the new one"
        );
        fx.writes.push(Write::Claim {
            job: row.name.clone(),
            from: row.next_run_at,
            to,
            last_scheduled_at: None,
            rearm: Some(Rearm {
                schedule: job.spec.schedule.expr().to_string(),
                timezone: job.spec.timezone.clone(),
            }),
        });
        self.arm(&row.name, to);
        if let Some(job) = self.jobs.get_mut(&row.name) {
            job.last = None;
        }
        if !owed.is_empty() && self.drop_fires_of.as_deref() != Some(row.name.as_str()) {
            self.dispatch(&row.name, owed, now, fx);
        }
    }
}
