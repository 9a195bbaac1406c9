//! Several hosts: the fires to claim ahead of their instant (see
//! `crate::cluster`'s `ahead`), and the run ids their records get.
//!
//! A fire is claimed ahead only if the plan would start it were it due
//! now (its job not paused, not busy here with an overlap policy that
//! forbids a second run, its store not failing under `hold`). The fire
//! gets its run id then; whatever the plan makes of it at its instant, a
//! run or a skip judged then as always, carries that id, so the shared
//! ledger's row and this host's record are one fire's. A fire claimed
//! ahead that the plan will not fire any more (a reload removed its job or
//! armed it past it) is recorded skipped `removed` under that id, judged
//! at its instant as any skip (or once its claim is older than the release
//! bound, below: the wall clock stepped back): a reload that puts it back
//! before then keeps its claim, and the fire ends in one record, not a
//! `removed` one and a second claim's.
//!
//! A fire claimed ahead and not consumed within a bound of monotonic time
//! (the wall clock stepped back in the window: its instant is now far
//! off), or any claimed ahead when the plan sees the wall clock step back,
//! is released: its id forgotten here, its row ended skipped in the
//! ledger by the cluster, and the fire claimed at its instant as without
//! a claim ahead (answered taken by this host: recorded skipped here too).
//! Held running instead, the row would keep the peers' exclusive runs
//! busy for as long as the step, and run the fire late here. One the plan
//! will not fire any more is not released (never due, it would get no
//! record here): it is recorded `removed`, as above.

use std::{sync::Arc, time::Duration};

use cronwarden_shared::{
    config::{JobSpec, OnStoreFailure, Overlap},
    status::{Outcome, RunRecord, SkipReason, Trigger},
    store::Write,
    wire::Event,
};
use jiff::Timestamp;

use super::{Effects, JobState, Plan};

/// A fire to claim ahead: the job, its scheduled time, the run id its
/// record will have.
#[derive(Debug)]
pub(crate) struct AheadFire {
    pub job: Arc<JobSpec>,
    pub at: Timestamp,
    pub run_id: u64,
}

/// A fire claimed ahead: the run id its record gets, and when it was
/// claimed (monotonic clock, as of the turn).
#[derive(Debug)]
pub(super) struct Claimed {
    run_id: u64,
    since: Duration,
}

/// Whether the plan would start `job`'s fire were it due now (what
/// `dispatch` judges, the misfire rule aside: the fire is not due yet).
fn would_start(job: &JobState, store_failing: bool) -> bool {
    let exclusive = matches!(job.spec.overlap, Overlap::Skip | Overlap::Queue);
    let held = store_failing && job.spec.on_store_failure == OnStoreFailure::Hold;
    let busy = exclusive && !job.running.is_empty();
    !(job.paused || held || busy)
}

impl Plan {
    /// The armed fires starting at or before `through` that the plan
    /// would start if nothing changes and that were not claimed ahead
    /// yet, each with the run id its record will have.
    pub fn claim_ahead(&mut self, through: Timestamp, fx: &mut Effects) -> Vec<AheadFire> {
        let names: Vec<String> = self.starts.due(through).map(str::to_string).collect();
        let mut fires = vec![];
        for name in names {
            let Some(job) = self.jobs.get(&name) else {
                continue;
            };
            let Some(at) = job.next else {
                continue;
            };
            let key = (name, at);
            if self.ahead.contains_key(&key)
                || self.no_ahead.contains(&key)
                || !would_start(job, self.store_failing)
                || self.drop_fires_of.as_deref() == Some(key.0.as_str())
            {
                continue;
            }
            let spec = job.spec.clone();
            let run_id = self.alloc_id(fx);
            let since = self.last_clocks.map_or(Duration::ZERO, |c| c.mono);
            self.ahead.insert(key, Claimed { run_id, since });
            fires.push(AheadFire {
                job: spec,
                at,
                run_id,
            });
        }
        fires
    }

    /// The earliest instant of a fire claimed ahead that
    /// [`Plan::drop_stale_ahead`] has not judged come yet: the loop wakes
    /// then, to fire it or, taken off the schedule since, record it. From
    /// the time it judged at, not the clock's now: an instant that passed
    /// while the rest of the turn ran is still to be judged (at once),
    /// and one it judged is not again (no spin).
    pub fn earliest_ahead_unjudged(&self) -> Option<Timestamp> {
        self.ahead
            .keys()
            .map(|(_, at)| *at)
            .filter(|at| self.ahead_judged_at.is_none_or(|t| *at > t))
            .min()
    }

    /// The earliest start of an armed fire after `t` (all of them with
    /// `None`): the next one to claim ahead.
    pub fn next_start_after(&self, t: Option<Timestamp>) -> Option<Timestamp> {
        match t {
            Some(t) => self.starts.first_after(t),
            None => self.starts.first(),
        }
    }

    /// The run id of a record of `name`'s fires `covers`: the one a fire
    /// among them was claimed ahead with, else a new one.
    pub(super) fn id_for(&mut self, name: &str, covers: &[Timestamp], fx: &mut Effects) -> u64 {
        if !self.ahead.is_empty() {
            for t in covers {
                if let Some(c) = self.ahead.remove(&(name.to_string(), *t)) {
                    return c.run_id;
                }
            }
        }
        self.alloc_id(fx)
    }

    /// Releases the fires claimed ahead more than `within` ago (monotonic
    /// clock, as of the last turn) and not fired yet (see the module map).
    pub fn expire_ahead(&mut self, within: Duration) {
        let jobs = &self.jobs;
        // A released fire is claimed ahead again no more; once it is
        // past, it need not be remembered.
        self.no_ahead
            .retain(|(name, at)| jobs.get(name).is_some_and(|j| j.next == Some(*at)));
        let Some(now) = self.last_clocks.map(|c| c.mono) else {
            return;
        };
        self.release_ahead_if(|c| now.saturating_sub(c.since) > within);
    }

    /// Whether the plan will fire `name`'s fire at `at` still: it is the
    /// job's armed fire, or after it (a reload may have armed the job
    /// before it).
    fn still_planned(&self, name: &str, at: Timestamp) -> bool {
        self.jobs
            .get(name)
            .is_some_and(|j| j.next.is_some_and(|n| n <= at))
    }

    /// Releases every fire claimed ahead `f` says (see the module map),
    /// but those the plan will not fire any more: [`Plan::drop_stale_ahead`]
    /// records them.
    pub(super) fn release_ahead_if(&mut self, f: impl Fn(&Claimed) -> bool) {
        let keys: Vec<(String, Timestamp)> = self
            .ahead
            .iter()
            .filter(|((name, at), c)| f(c) && self.still_planned(name, *at))
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            let Some(Claimed { run_id, .. }) = self.ahead.remove(&key) else {
                continue;
            };
            tracing::warn!(job = key.0, run = run_id, scheduled_at = %key.1, "a fire claimed ahead was not due in time (the wall clock stepped back?): its claim is ended (skipped worker_down)");
            self.released_ahead.push(run_id);
            self.no_ahead.insert(key);
        }
    }

    /// The run ids of the claims ahead released since the last call.
    pub fn take_released_ahead(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.released_ahead)
    }

    /// Records the fires claimed ahead that the plan will not fire any
    /// more skipped `removed` (their job left the config, or was armed
    /// past them: a reload changed it, the supervisor re-armed it), once
    /// their instant has come (`now`) or they were claimed more than
    /// `within` ago (monotonic clock, as of the last turn: the wall clock
    /// stepped back). Until then a reload may put the fire back, and it
    /// fires under its claim (see the module map).
    pub fn drop_stale_ahead(&mut self, now: Timestamp, within: Duration, fx: &mut Effects) {
        self.ahead_judged_at = Some(now);
        let mono = self.last_clocks.map(|c| c.mono);
        self.drop_stale_where(now, fx, |at, c| {
            at <= now || mono.is_some_and(|m| m.saturating_sub(c.since) > within)
        });
    }

    /// [`Plan::drop_stale_ahead`] whatever their instant: the worker
    /// stops, and the next one would never see such a fire due (it would
    /// get no record here).
    pub fn drop_stale_ahead_now(&mut self, now: Timestamp, fx: &mut Effects) {
        self.drop_stale_where(now, fx, |_, _| true);
    }

    /// Records skipped `removed` the fires claimed ahead that the plan
    /// will not fire any more and that `judged` says are to be judged now.
    fn drop_stale_where(
        &mut self,
        now: Timestamp,
        fx: &mut Effects,
        judged: impl Fn(Timestamp, &Claimed) -> bool,
    ) {
        if self.ahead.is_empty() {
            return;
        }
        let stale: Vec<(String, Timestamp)> = self
            .ahead
            .iter()
            .filter(|((name, at), c)| !self.still_planned(name, *at) && judged(*at, c))
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            let Some(Claimed { run_id, .. }) = self.ahead.remove(&key) else {
                continue;
            };
            let (job, t) = key;
            tracing::warn!(job, run = run_id, scheduled_at = %t, "a fire claimed ahead was taken off the schedule before its instant: recorded skipped");
            let mut rec =
                RunRecord::new(run_id, &job, vec![t], Trigger::Schedule, Outcome::Skipped);
            rec.finished_at = Some(now);
            rec.skip_reason = Some(SkipReason::Removed);
            rec.error = Some("claimed ahead in the shared ledger, then taken off the schedule (a reload) by its instant".into());
            fx.writes.push(Write::Insert(rec));
            fx.events.push(Event::Skip {
                next_fire_at: self.jobs.get(&job).and_then(|j| j.next),
                job,
                run_id,
                scheduled_at: t,
                reason: SkipReason::Removed,
                busy_run_id: None,
            });
        }
    }
}
