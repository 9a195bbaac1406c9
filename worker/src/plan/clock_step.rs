//! The plan's side of time moving oddly: wall-clock steps and suspends
//! noticed between turns, stored next fires off their schedule, and the
//! supervisor's request to re-arm a job. Where a job is armed then is
//! decided by the one rule of [`super::arming`].
//!
//! - A forward step (or a suspend) leaves runs in progress alone (their
//!   timeouts run on the monotonic clock); the fires it passed over are
//!   due and go through the misfire rules, their catch-up runs spread over
//!   [`STAGGER`].
//! - A backward step is handled like a DST fold: a schedule that repeats
//!   within the stepped-back span keeps its cadence on the new clock (the
//!   span's fires come a second time, each with its own record, as the
//!   second pass of a fold does); one that does not keeps its armed fire,
//!   so a fixed-time fire already recorded never runs twice. The second
//!   pass's start becomes the job's last accounted time, so a further step
//!   back is measured against what this pass accounted.
//! - Every step or suspend is reported (`clock_jump`) together with the
//!   armed schedule, so the supervisor re-bases its expectations on the
//!   worker's arming as of the step.

use std::{collections::BTreeMap, time::Duration};

use cronwarden_shared::{
    status::{ClockJump, ClockJumpKind, Trigger},
    store::Write,
    wire::Event,
};
use jiff::{SignedDuration, Timestamp};

use super::{
    arming::{arming, Arming},
    command_failed, Effects, Plan,
};
use crate::clock::{clock_event, Clocks};

/// The longest spread of catch-up runs after a forward clock jump.
pub(super) const STAGGER: Duration = Duration::from_secs(1);

impl Plan {
    /// Takes the clocks of a turn. A jump of the wall clock against the
    /// monotonic one, or a suspend, is reported with its size and the fires
    /// now due; after a backward step each job is armed by the rule of
    /// [`super::arming`] (see the module doc).
    pub fn observe_clocks(&mut self, now: Clocks, fx: &mut Effects) {
        let Some(prev) = self.last_clocks.replace(now) else {
            return;
        };
        let Some((jump, kind)) = clock_event(prev, now) else {
            return;
        };
        let wall = now.wall;
        let mut rearmed = 0u32;
        if jump.is_negative() {
            // Their instants are later now by the step: held, their rows
            // would keep the peers off them as long.
            self.release_ahead_if(|_| true);
            let names: Vec<String> = self.jobs.keys().cloned().collect();
            for name in names {
                if self
                    .correct_arming(&name, wall, "a backward step of the wall clock", fx)
                    .is_some()
                {
                    rearmed += 1;
                }
            }
        }
        let (mut jobs_due, mut fires_due) = (0u32, 0u32);
        for j in self.starts.due(wall).filter_map(|n| self.jobs.get(n)) {
            let n = self.due(j, wall).len();
            if n > 0 {
                jobs_due += 1;
            }
            fires_due = fires_due.saturating_add(n as u32);
        }
        fx.events.push(Event::ClockJump(ClockJump {
            at: wall,
            jump_ms: jump.as_millis() as i64,
            jobs_due,
            fires_due,
            kind,
        }));
        // The supervisor's expectations were made on the old clock: it
        // re-bases them on the arming as of the step.
        self.report_schedule(fx);
        self.stagger = !jump.is_negative() && jobs_due > 1;
        tracing::warn!(
            jump_ms = jump.as_millis(),
            direction = if jump.is_negative() {
                "backward"
            } else {
                "forward"
            },
            kind = match kind {
                ClockJumpKind::Step => "step",
                ClockJumpKind::Suspend => "suspend",
            },
            jobs_due,
            fires_due,
            rearmed,
            "wall clock jumped; fires it skipped are handled as misfires, schedules that repeat within a span stepped back keep their cadence, a recorded fixed-time fire never runs twice"
        );
    }

    /// Arms `name` by the rule of [`super::arming`] if its arming is not
    /// the one the rule gives: the claim moves the stored next fire, and
    /// the correction is logged with `why` it was looked at. Fires the
    /// new arming makes due go through the misfire rules at the next
    /// turn, so each gets its record. Returns what was done, `None` if the
    /// arming was kept.
    pub(super) fn correct_arming(
        &mut self,
        name: &str,
        now: Timestamp,
        why: &str,
        fx: &mut Effects,
    ) -> Option<Arming> {
        let job = self.jobs.get_mut(name)?;
        let decision = arming(&job.spec.schedule, job.next, job.last, now);
        let to = decision.to()?;
        let show =
            |t: Option<Timestamp>| t.map_or_else(|| "nothing".to_string(), |t| t.to_string());
        match decision {
            Arming::SecondPass(_) => tracing::info!(
                job = name,
                armed = %show(job.next),
                last_accounted = %show(job.last),
                rearmed_at = %to,
                "{why}: the schedule repeats within the span stepped back; it keeps its cadence on the new clock"
            ),
            _ => tracing::warn!(
                job = name,
                armed = %show(job.next),
                last_accounted = %show(job.last),
                corrected_to = %to,
                "{why}: the armed fire is not one the schedule gives from the last accounted fire; corrected (the fires it passed over are accounted by the misfire rules)"
            ),
        }
        // A second pass starts afresh at `now`: what the first pass
        // accounted beyond it is not what a later step back is measured
        // against. An `@every` cadence keeps its anchor (the fire before
        // the first of the new pass).
        let new_last = match decision {
            Arming::SecondPass(first) => Some(
                job.spec
                    .schedule
                    .every()
                    .and_then(|p| SignedDuration::try_from(p).ok())
                    .and_then(|p| first.checked_sub(p).ok())
                    .unwrap_or(now),
            ),
            _ => None,
        };
        fx.writes.push(Write::Claim {
            job: name.to_string(),
            from: job.next,
            to: Some(to),
            last_scheduled_at: new_last,
            rearm: None,
        });
        if new_last.is_some() {
            job.last = new_last;
        }
        self.arm(name, Some(to));
        Some(decision)
    }

    /// The supervisor found the job's arming disagreeing with its
    /// schedule: the job is armed by the rule (fires passed over are then
    /// due, and accounted by the misfire rules), and the schedule is
    /// reported either way, so the supervisor sees what is armed now.
    pub(super) fn rearm_requested(&mut self, job: &str, now: Timestamp, fx: &mut Effects) {
        if !self.jobs.contains_key(job) {
            return command_failed("rearm", format!("no job named {job:?}"), fx);
        }
        let why = "the supervisor asked to re-arm it";
        if self.correct_arming(job, now, why, fx).is_none() {
            tracing::info!(
                job,
                "{why}; its arming is already the one its schedule gives"
            );
        }
        self.report_schedule(fx);
    }
}

/// After a forward clock jump, the catch-up runs among the spawns from
/// `first` on start spread over at most [`STAGGER`] instead of all in the
/// same millisecond. A run's `started_at` is when it is to start, so its
/// one record (the row written now and the runner's) shows the spread.
pub(super) fn spread(now: Timestamp, first: usize, fx: &mut Effects) {
    let spawns = &mut fx.spawns[first..];
    if spawns.len() < 2 {
        return;
    }
    let step = (STAGGER / spawns.len() as u32).min(Duration::from_millis(50));
    let mut starts = BTreeMap::new();
    for (i, s) in spawns.iter_mut().enumerate() {
        if s.record.trigger != Trigger::Catchup || i == 0 {
            continue;
        }
        s.delay = step * i as u32;
        if let Some(at) = SignedDuration::try_from(s.delay)
            .ok()
            .and_then(|d| now.checked_add(d).ok())
        {
            s.record.started_at = Some(at);
            starts.insert(s.record.id, at);
        }
    }
    for w in &mut fx.writes {
        if let Write::Insert(r) = w {
            if let Some(at) = starts.get(&r.id) {
                r.started_at = Some(*at);
            }
        }
    }
}
