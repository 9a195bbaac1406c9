//! Applying the worker's events to the model: one function per event.
//!
//! Invariants: an event about a job the config does not have changes
//! nothing but `max_run_id` (so a later worker never reuses its id); run
//! ids, instants and counts come from another process and are used with
//! saturating or checked arithmetic only; a finish already counted (a lost
//! run we recorded ourselves and the next worker reports again) is not
//! counted twice.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use cronwarden_shared::{
    jitter,
    status::{ClockJump, Outcome, RunRecord, RunningInfo, SkipReason, Trigger},
    wire::{Armed, ArmedDigest, Event, RunProgress},
};
use jiff::Timestamp;
use tokio::time::Instant;

use super::{JobObs, Model, REBASE_WINDOW};
use crate::pings::RunEvent;

/// Advances our expectation past every scheduled time a fire or skip
/// stood for.
fn accounted(j: &mut JobObs, covered: Timestamp) {
    let next = j.spec.schedule.next_after(covered, Some(covered));
    if j.expected_next.is_none_or(|e| e <= covered) {
        j.expected_next = next;
    }
}

/// Re-bases the expectation of a job on the worker's arming after a
/// backward step of the wall clock to `at` (or a new worker started at
/// `at` on a clock behind our expectation): an arming before ours is
/// adopted if the schedule produces it on the new clock (no earlier than
/// its first fire after `at`); anything else stays a disagreement.
fn rebase(j: &mut JobObs, at: Timestamp, armed: Timestamp) {
    let Some(expected) = j.expected_next else {
        return;
    };
    let since = at
        .checked_sub(jiff::SignedDuration::from_secs(1))
        .unwrap_or(at);
    let earliest = match j.spec.schedule.every() {
        // The worker keeps the cadence anchored in its store: its first
        // fire on the new clock is the first after `at` on a cadence we
        // may not know (without an anchor, `next_after` would start a
        // fresh one a whole period on).
        Some(_) => Some(since),
        None => j.spec.schedule.next_after(since, None),
    };
    if armed < expected && earliest.is_some_and(|e| e <= armed) {
        tracing::info!(
            job = %j.spec.name,
            from = %expected,
            to = %armed,
            "expectation re-based on the worker's arming on a clock stepped back"
        );
        j.expected_next = Some(armed);
        j.due_seen = None;
        j.misarmed_since = None;
    }
}

impl Model {
    /// Applies one event line from the worker, observed at `now`.
    pub fn apply(&mut self, ev: Event, now: Instant) {
        self.held.observe(&ev);
        match ev {
            Event::Hello { pid, version, .. } => self.hello(pid, &version, now),
            Event::Heartbeat {
                seq,
                at,
                last_good_turn_at,
                store_error,
                armed,
                progress,
                stats,
                ..
            } => {
                self.last_worker_wall = Some(self.last_worker_wall.map_or(at, |w| w.max(at)));
                self.beat(now, seq, at, last_good_turn_at, store_error);
                self.armed_check(armed, at, now);
                self.progress(progress);
                self.counters.heartbeat(now, stats.as_ref());
                self.durability(stats.as_ref());
            }
            Event::Schedule { jobs } => self.schedule(jobs, now),
            Event::Fire {
                job,
                run_id,
                scheduled_at,
                covers,
                pid,
                pipes,
                started_at,
                next_fire_at,
                trigger,
            } => {
                let run = RunningInfo {
                    run_id,
                    pid,
                    started_at,
                    scheduled_at,
                    last_output_at: None,
                    last_line: None,
                    pipes,
                };
                self.fired(&job, run, &covers, next_fire_at, trigger, now);
            }
            Event::Skip {
                job,
                run_id,
                scheduled_at,
                reason,
                next_fire_at,
                ..
            } => self.skipped(&job, run_id, scheduled_at, reason, next_fire_at),
            Event::Queued {
                job,
                run_id,
                covers,
                next_fire_at,
            } => self.queued(&job, run_id, &covers, next_fire_at),
            Event::Finish { run } => self.finished(run),
            // Kept by `held` (above) only.
            Event::Claimed { .. } => {}
            Event::CommandFailed { command, error } => {
                tracing::warn!(command, "worker refused a command: {error}");
            }
            Event::ClockJump(j) => self.clock_jumped(j, now),
            Event::Cluster(h) => self.cluster = Some(h),
            // Answered by the supervisor's control path before the model.
            Event::Reply { .. } => {}
            // Kept for followers by the loop; nothing to judge.
            Event::Output { .. } => {}
        }
    }

    fn hello(&mut self, pid: u32, version: &str, now: Instant) {
        if Some(pid) != self.worker.pid {
            tracing::warn!(
                pid,
                expected = self.worker.pid,
                "hello from an unexpected pid"
            );
        }
        tracing::info!(pid, version, "worker ready");
        self.worker.hello = true;
        self.worker.hello_at = Some(now);
        // A new worker counts its drops from zero; its predecessors' stay.
        self.worker.records_dropped_earlier = self
            .worker
            .records_dropped_earlier
            .saturating_add(std::mem::take(&mut self.worker.records_dropped));
        self.worker.writes_held = 0;
        self.worker.last_heartbeat = Some(now);
    }

    /// What the worker's journal holds and dropped, for the durability
    /// conditions (`judge::durability`).
    fn durability(&mut self, stats: Option<&cronwarden_shared::stats::WorkerStats>) {
        let w = &mut self.worker;
        match stats {
            Some(s) => {
                w.records_dropped = w.records_dropped.max(s.records_dropped);
                w.writes_held = s.writes_held;
            }
            // A heartbeat without stats (start-up, before the journal
            // exists) holds nothing.
            None => w.writes_held = 0,
        }
    }

    fn beat(
        &mut self,
        now: Instant,
        seq: u64,
        at: Timestamp,
        last_good_turn_at: Option<Timestamp>,
        store_error: Option<String>,
    ) {
        let w = &mut self.worker;
        // A hello says only that the replacement started; a heartbeat
        // after it that its loop turns. The stalled worker's own late
        // lines prove nothing.
        if w.replacing_stalled && w.hello && w.pid != w.stalled_pid {
            tracing::info!(
                pid = w.pid,
                "the replacement of the stalled worker is making progress"
            );
            w.replacing_stalled = false;
            w.stalled_pid = None;
        }
        let previous = w.last_heartbeat.or(w.spawned);
        w.last_heartbeat = Some(now);
        w.seq = Some(seq);
        w.store_error = store_error;
        // Dated on our monotonic clock. A good turn already reported keeps
        // its date. A new one happened since the previous line we saw, so
        // its age (by the worker's wall clock, which may have been stepped
        // between the two stamps) is capped by the time since that line:
        // a wall clock step can never make a healthy loop look old.
        if last_good_turn_at != w.last_good_turn_wall || w.last_good_turn.is_none() {
            w.last_good_turn = last_good_turn_at.map(|g| {
                let age = Duration::try_from(at.duration_since(g)).unwrap_or_default();
                let cap = previous.map_or(Duration::ZERO, |p| now.saturating_duration_since(p));
                now.checked_sub(age.min(cap)).unwrap_or(now)
            });
            w.last_good_turn_wall = last_good_turn_at;
        }
    }

    /// The armed cross-check, made as the heartbeat is applied: its digest
    /// reflects the worker's arming at `at`, and every line the worker
    /// wrote before it has been applied, so our expectation is as of that
    /// heartbeat too, but for one thing: a fire the worker took in the
    /// turn just before the heartbeat has its `fire` line written after
    /// the process started, usually after the heartbeat. So the digest is
    /// compared with ours, and failing that with ours projected past `at`
    /// (every job whose expected fire has come armed for its next fire
    /// after `at`, as the worker's turn arms it). Agreement with the
    /// projection holds the projected fires as taken but not yet reported
    /// ([`WorkerObs::unreported`]); a fire left unreported too long is a
    /// worker that claims fires and never runs them.
    ///
    /// [`WorkerObs::unreported`]: super::WorkerObs::unreported
    fn armed_check(&mut self, armed: Option<ArmedDigest>, at: Timestamp, now: Instant) {
        let digest = |f: &dyn Fn(&JobObs) -> Option<Timestamp>| {
            ArmedDigest::of(self.jobs.iter().map(|(n, j)| (n.as_str(), f(j))))
        };
        // A jittered fire is taken at its start, not at its time.
        let started = |j: &JobObs, e: Timestamp| jitter::start_of(e, j.spec.jitter_offset) <= at;
        let projected = |j: &JobObs| match j.expected_next {
            Some(e) if started(j, e) => j.spec.schedule.next_after(at, Some(e)),
            other => other,
        };
        let ours = digest(&|j| j.expected_next);
        let w = &mut self.worker;
        w.armed = armed;
        let Some(theirs) = armed else {
            return;
        };
        if theirs == ours {
            w.armed_mismatch_since = None;
            w.unreported.clear();
        } else if theirs == digest(&projected) {
            w.armed_mismatch_since = None;
            let taken: BTreeMap<&String, Timestamp> = self
                .jobs
                .iter()
                .filter_map(|(n, j)| Some((n, j.expected_next.filter(|e| started(j, *e))?)))
                .collect();
            w.unreported.retain(|n, (due, _)| taken.get(n) == Some(due));
            for (n, due) in taken {
                w.unreported.entry(n.clone()).or_insert((due, now));
            }
        } else {
            w.armed_mismatch_since.get_or_insert(now);
            w.armed_mismatch_last = Some(now);
        }
    }

    /// What runs in flight last printed, for the wedged-run alert.
    fn progress(&mut self, progress: Vec<RunProgress>) {
        for p in progress {
            if let Some(r) = self
                .jobs
                .values_mut()
                .find_map(|j| j.running.get_mut(&p.run_id))
            {
                r.last_output_at = p.last_output_at;
                r.last_line = (!p.last_line.is_empty()).then_some(p.last_line);
            }
        }
    }

    fn schedule(&mut self, jobs: Vec<Armed>, now: Instant) {
        // A new worker's first arming comes from the store's cursors: the
        // fires between our expectation and it were taken by the previous
        // worker (its lines may have died with it), and are in its
        // records. So we expect from its arming, as long as the schedule
        // can produce it from where we were: no later than the next fire
        // after the worker was started. An arming beyond that (a cursor a
        // day ahead) is kept as a disagreement: misarmed, and late.
        //
        // "Where we were" is the later of the new worker's start and the
        // last wall time a worker told us plus the stall allowance: a
        // replaced worker may have taken fires for that long after its last
        // line we read (and a backward step may have put the new worker's
        // start before them).
        let first = !std::mem::replace(&mut self.worker.schedule_seen, true);
        let lost = self
            .config
            .watchdog
            .stall_after
            .saturating_add(Duration::from_secs(1));
        let lost = jiff::SignedDuration::try_from(lost).unwrap_or(jiff::SignedDuration::ZERO);
        let started = match (self.worker.started_at, self.last_worker_wall) {
            (Some(s), Some(w)) => Some(s.max(w.checked_add(lost).unwrap_or(w))),
            (s, _) => s,
        };
        let rebase_from = self
            .rebase_after_jump
            .filter(|(_, read)| now.saturating_duration_since(*read) <= REBASE_WINDOW)
            .map(|(at, _)| at);
        for a in jobs {
            if let Some(j) = self.jobs.get_mut(&a.job) {
                if let (true, Some(expected), Some(armed), Some(started)) =
                    (first, j.expected_next, a.next_fire_at, started)
                {
                    let reachable = j
                        .spec
                        .schedule
                        .next_after(started, Some(expected))
                        .is_some_and(|next| armed <= next);
                    if expected < armed && reachable {
                        j.expected_next = Some(armed);
                    }
                }
                // A new worker armed before our expectation, for no earlier
                // than the schedule's first fire after it was started: the
                // clock was stepped back while no worker watched it (the new
                // one corrects its stored arming when configured, and has no
                // earlier reading to report a jump against).
                if let (true, Some(started), Some(armed)) =
                    (first, self.worker.started_at, a.next_fire_at)
                {
                    rebase(j, started, armed);
                }
                j.next_fire_at = a.next_fire_at;
                j.paused = a.paused;
                if let (Some(at), Some(armed)) = (rebase_from, a.next_fire_at) {
                    rebase(j, at, armed);
                }
                // An @every cadence is anchored in the worker's store;
                // we learn the anchor from its arming once.
                if j.spec.schedule.every().is_some() && j.expected_next.is_none() {
                    j.expected_next = a.next_fire_at;
                }
            }
        }
    }

    fn fired(
        &mut self,
        job: &str,
        run: RunningInfo,
        covers: &[Timestamp],
        next_fire_at: Option<Timestamp>,
        trigger: Trigger,
        now: Instant,
    ) {
        self.max_run_id = self.max_run_id.max(run.run_id);
        if self
            .rebase_after_jump
            .is_some_and(|(_, read)| now.saturating_duration_since(read) <= REBASE_WINDOW)
        {
            // Perhaps a line of the pass before a backward step (see
            // `rebase_after_jump`): if the digests disagree now, the
            // schedule is asked for again, and re-bases us.
            self.worker.armed_report_requested = false;
        }
        let Some(j) = self.jobs.get_mut(job) else {
            return;
        };
        // A jittered fire is on time at its start, not at its time.
        let due = run
            .scheduled_at
            .map(|s| jitter::start_of(s, j.spec.jitter_offset));
        self.counters.fired(trigger, due, run.started_at);
        self.run_events.push(RunEvent::Started {
            job: job.to_string(),
            run_id: run.run_id,
        });
        if run.scheduled_at.is_some() {
            // A fire line is written once its process has started, so a
            // line of a later turn (a skip, a queued fire) can overtake
            // it: its arming, taken when the fire was, never moves back
            // an arming a later line reported (the worker's next fires
            // only move forward; a reconfigured one, or one whose clock
            // was stepped back, sends its schedule).
            if next_fire_at.is_none_or(|n| j.next_fire_at.is_none_or(|cur| n >= cur)) {
                j.next_fire_at = next_fire_at;
            }
            j.streaks.overlap_skips = 0;
        }
        j.seen_started.insert(run.run_id, now);
        j.running.insert(run.run_id, run);
        if let Some(last) = covers.iter().max() {
            accounted(j, *last);
        }
    }

    fn skipped(
        &mut self,
        job: &str,
        run_id: u64,
        scheduled_at: Timestamp,
        reason: SkipReason,
        next_fire_at: Option<Timestamp>,
    ) {
        self.max_run_id = self.max_run_id.max(run_id);
        let Some(j) = self.jobs.get_mut(job) else {
            return;
        };
        j.next_fire_at = next_fire_at;
        if reason == SkipReason::Overlap {
            j.streaks.overlap_skips += 1;
        }
        self.counters.skipped(job, reason);
        accounted(j, scheduled_at);
    }

    fn queued(
        &mut self,
        job: &str,
        run_id: u64,
        covers: &[Timestamp],
        next_fire_at: Option<Timestamp>,
    ) {
        self.max_run_id = self.max_run_id.max(run_id);
        let Some(j) = self.jobs.get_mut(job) else {
            return;
        };
        j.next_fire_at = next_fire_at;
        if let Some(last) = covers.iter().max() {
            accounted(j, *last);
        }
    }

    fn finished(&mut self, run: RunRecord) {
        self.max_run_id = self.max_run_id.max(run.id);
        let Some(j) = self.jobs.get_mut(&run.job) else {
            return;
        };
        super::ended_at_least(&mut self.ended_through, &run.job, run.id);
        // A run whose fire line was read had its times accounted then;
        // accounting them again at its end could only move an expectation
        // re-based since (a backward step) onto the pass before.
        let fire_seen = j.running.remove(&run.id).is_some();
        j.seen_started.remove(&run.id);
        let snap = j.snapshots.remove(&run.id);
        if matches!(run.outcome, Outcome::Timeout | Outcome::Lost) && snap.is_some() {
            j.last_forensics = snap.map(Box::new);
        }
        if j.last_run
            .as_ref()
            .is_some_and(|l| l.id == run.id && l.outcome == run.outcome)
        {
            // Already counted (a lost run we recorded ourselves,
            // reported again by the next worker's recovery).
            return;
        }
        if run.outcome == Outcome::Skipped {
            // A queued fire dropped at shutdown: accounted, not a run.
            return;
        }
        match super::retry::step(&mut j.retry_attempt, &j.spec.retry, &run) {
            super::retry::Step::Failed => j.streaks.failures += 1,
            super::retry::Step::Reset => j.streaks.failures = 0,
            super::retry::Step::Pending => {}
        }
        if run.stdout_bytes == 0 && run.stderr_bytes == 0 {
            j.streaks.zero_output += 1;
        } else {
            j.streaks.zero_output = 0;
        }
        if let Some(last) = run.covers.iter().max().filter(|_| !fire_seen) {
            accounted(j, *last);
        }
        self.counters.finished(&run);
        self.run_events
            .push(RunEvent::Finished(Box::new(run.clone())));
        j.last_run = Some(Arc::new(run));
    }

    fn clock_jumped(&mut self, j: ClockJump, now: Instant) {
        tracing::warn!(
            jump_ms = j.jump_ms,
            kind = j.kind.as_str(),
            jobs_due = j.jobs_due,
            fires_due = j.fires_due,
            "the worker saw the wall clock jump"
        );
        if self.clock_jumps.len() >= 10 {
            self.clock_jumps.pop_front();
        }
        // Armings compared across the jump are not comparable; start over.
        for job in self.jobs.values_mut() {
            job.misarmed_since = None;
        }
        self.worker.armed_mismatch_since = None;
        self.worker.unreported.clear();
        self.last_clock_jump = Some((j.clone(), now));
        // After a backward step the worker may arm a repeating schedule
        // on the new clock, before our expectation: its next schedule
        // report re-bases us (the digests now differ, so it is asked for).
        if j.jump_ms < 0 {
            self.rebase_after_jump = Some((j.at, now));
        }
        self.clock_jumps.push_back(j);
    }
}
