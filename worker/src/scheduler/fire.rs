//! Firing what is due, and handing runs to the runner.
//!
//! A burst (a thousand jobs on the same second) is fired in chunks: the
//! first [`FIRST_CHUNK`] fires are planned, committed (each fire's claim
//! and record in the chunk's one transaction) and their starts handed to
//! the spawner threads at once ([`runner::begin`]); then the next chunk,
//! twice as large (up to [`MAX_CHUNK`]), is planned and committed while
//! those threads start the first (issue 18: the whole burst was committed
//! before its first start, 14-23 ms at 1,000 jobs). The invariants are the
//! ones of a single flush: a run starts only once its record is committed,
//! or, when the store is slow or failing, with the supervisor's copy of its
//! claim in the pipe first; a fire's claim and record are never split
//! between two transactions. The waits for the chunks' commits share the
//! turn's bound (twice [`WRITE_WAIT`], as one flush could wait already), and
//! a chunk not committed within its share ends the chunking: the rest is
//! fired in one go, as before.
//!
//! A fire is planned and committed up to [`LEAD`] before its instant, and
//! its start waits on its spawner thread, prepared, until the instant
//! (`RunRequest::not_before`): the commit (a write that the filesystem's
//! journal stalls for a millisecond or two now and then) is off the fire's
//! path, which is then the wake and the clone as for a bare loop (issue
//! 18's fire-delay tail). Only on a healthy store and a single host: a
//! failing store makes a start wait for the supervisor's copy of its claim,
//! and several hosts claim in the shared ledger ahead already. What the
//! plan decides for the fire (overlap, pause) it decides then, as the loop
//! knows the jobs [`LEAD`] before the instant.

use std::time::Duration;

use cronwarden_shared::wire::Event;
use jiff::Timestamp;
use tokio::time::Instant;

use super::{Running, Scheduler, CLAIM_COPY_WITHIN, WRITE_WAIT};
use crate::{
    clock::wall_now,
    plan::{ahead_within_lead, Spawn, LEAD},
    runner::{self, Begun, RunRequest, StopHandle},
    spawner::{self, GateKey},
};

/// The first chunk of a burst: as many fires as the spawner threads of a
/// small machine take at once, so the first starts wait for a small commit.
const FIRST_CHUNK: usize = 8;
/// Chunks double up to this: fewer, larger transactions once the spawner
/// threads have a queue to work through.
const MAX_CHUNK: usize = 256;

/// A start to begin before its record commits: its request, and the gate
/// it waits at.
pub(super) struct Gated {
    req: RunRequest,
    gate: spawner::Gate,
    pub key: GateKey,
}

/// Hands each gated start to a spawner thread: it prepares, then waits at
/// its gate. Called once the commit is handed to the writer (the longer of
/// the two, it goes first).
pub(super) fn begin_ahead(gated: Vec<Option<Gated>>) -> Vec<Option<(GateKey, Begun)>> {
    gated
        .into_iter()
        .map(|g| g.map(|g| (g.key, runner::begin_gated(&g.req, Some(g.gate)))))
        .collect()
}

/// How long a flush may wait (for each of its two waits) so that the turn
/// stays within `until`.
pub(super) fn wait_until(until: Instant) -> Duration {
    WRITE_WAIT.min(until.saturating_duration_since(Instant::now()) / 2)
}

impl Scheduler {
    /// Fires what is due at `now`: in chunks, each committed and started
    /// before the next is planned, while the store keeps up; what is left
    /// of the last chunk is in `self.fx` for the turn's flush.
    pub(super) fn fire(&mut self, now: Timestamp, until: Instant) {
        // Several hosts: runs wait for their claims in the shared ledger,
        // handled whole by the turn's flush. A failing store makes every
        // start wait for the supervisor's copy anyway.
        let chunked = self.cluster.is_none() && !self.store_down && self.journal.error().is_none();
        if !chunked {
            self.plan.fire_due(now, &mut self.fx);
            return;
        }
        let mut chunk = FIRST_CHUNK;
        while self.plan.fire_due_at_most(now, &mut self.fx, chunk) {
            self.flush_within(wait_until(until));
            if !self.journal.settled() {
                // Slow: the rest in one transaction, as without chunks,
                // judged knowing whether the store failed meanwhile
                // (`on_store_failure = hold`).
                self.plan.store_failing = self.journal.error().is_some();
                self.plan.fire_due(now, &mut self.fx);
                return;
            }
            chunk = (chunk * 2).min(MAX_CHUNK);
        }
    }

    /// Whether fires are planned ahead of their instant ([`LEAD`]).
    pub(super) fn leads(&self) -> bool {
        self.cluster.is_none() && !self.store_down && self.journal.error().is_none()
    }

    /// The instant a turn at `wall` fires for: the next fire's own, when it
    /// is at most [`LEAD`] away and fires lead; else `wall`.
    pub(super) fn fire_instant(&self, wall: Timestamp) -> Timestamp {
        match self.plan.earliest_fire() {
            Some(t) if self.leads() && ahead_within_lead(wall, t) => t,
            _ => wall,
        }
    }

    /// The time the arming a heartbeat shows is as of: the instant the
    /// last turn fired for, when it is still ahead (within [`LEAD`]), else
    /// now. A fire taken ahead is armed past in the plan before its
    /// `fire` line can come (after its start): the supervisor projects the
    /// fires due by this time as taken (else it would take every
    /// heartbeat inside the lead for a misarmed job).
    pub(super) fn armed_at(&self) -> Timestamp {
        let now = wall_now();
        match self.fired_for {
            Some(t) if ahead_within_lead(now, t) => t,
            _ => now,
        }
    }

    /// The runner's request for `spawn`: a run planned ahead of its instant
    /// (its `started_at`) does not start before it.
    fn request(&self, spawn: &Spawn) -> RunRequest {
        let job = &spawn.job;
        let not_before = spawn.record.started_at.and_then(|at| {
            let ahead = Duration::try_from(at.duration_since(wall_now())).ok()?;
            (!ahead.is_zero()).then(|| std::time::Instant::now() + ahead.min(LEAD))
        });
        RunRequest {
            not_before,
            record: spawn.record.clone(),
            job: job.clone(),
            next_fire_at: spawn.next_fire_at,
            progress: Default::default(),
            output_dir: job.keep_output.map(|_| self.output_root.join(&job.name)),
            cgroups: self.cgroups.clone(),
            started_tx: Some(self.done_tx.clone()),
        }
    }

    /// Whether a flush's starts can be handed over before its commit, to
    /// wait at a gate ([`spawner::Gate`]): a few fires on a healthy store, alone
    /// (several hosts: they wait for their claims; a burst's later chunks
    /// find the threads busy anyway).
    pub(super) fn gates_ahead(&self, fires: usize) -> bool {
        fires <= FIRST_CHUNK
            && self.cluster.is_none()
            && !self.store_down
            && self.journal.error().is_none()
    }

    /// A gate for each start of `spawns` that would go at once, with its
    /// request, for [`begin_ahead`] once the commit is handed over.
    pub(super) fn gated(&self, spawns: &[Spawn]) -> Vec<Option<Gated>> {
        spawns
            .iter()
            .map(|s| {
                s.delay.is_zero().then(|| {
                    let (gate, key) = spawner::gate();
                    Gated {
                        req: self.request(s),
                        gate,
                        key,
                    }
                })
            })
            .collect()
    }

    /// `spawn`'s run, its start begun ahead (`ahead`) or not. A start
    /// begun ahead goes on now if its record is committed, else once the
    /// supervisor has the claim's copy, as any start would.
    pub(super) fn spawn(&mut self, spawn: Spawn, ahead: Option<(GateKey, Begun)>) {
        let req = self.request(&spawn);
        let Spawn {
            record,
            next_fire_at,
            delay,
            ..
        } = spawn;
        // The store did not commit this run's claim: the supervisor gets
        // a copy, in the pipe before the job starts, so a worker killed
        // now leaves the claim with it and the fire never runs twice.
        let durable = !self.store_down && self.journal.settled() && self.journal.error().is_none();
        let (mut key, mut ahead) = ahead.unzip();
        if let Some(key) = key.take_if(|_| durable) {
            key.open();
            // Its age counts from the commit, as a start's after it.
            ahead = ahead.map(Begun::aged_from_now);
        }
        let claimed = (!durable).then(|| {
            self.events.send_written(Event::Claimed {
                run: record.clone(),
                next_fire_at,
            })
        });
        let stop = StopHandle::default();
        self.running.insert(
            req.record.id,
            Running {
                stop: stop.clone(),
                progress: req.progress.clone(),
                record: req.record.clone(),
            },
        );
        // Its record is committed and nothing else comes first: the start
        // is handed to a spawner thread now, not when the loop next polls
        // the run's task (after the rest of the turn).
        let begun = match ahead {
            Some(begun) => Some(begun),
            None => (claimed.is_none() && delay.is_zero()).then(|| runner::begin(&req)),
        };
        let events = self.events.clone();
        let done = self.done_tx.clone();
        tokio::task::spawn_local(async move {
            if let Some(written) = claimed {
                // Bounded: a supervisor that stops reading must not keep
                // the job from running (availability first).
                if tokio::time::timeout(CLAIM_COPY_WITHIN, written)
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        "the supervisor's copy of a claim is not written yet; running anyway"
                    );
                }
            }
            // Begun ahead and held at its gate until now.
            let begun = match key {
                Some(key) => {
                    key.open();
                    begun.map(Begun::aged_from_now)
                }
                None => begun,
            };
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let record = runner::run(req, events.clone(), stop, begun).await;
            events.send(Event::Finish {
                run: record.clone(),
            });
            let _ = done.send(record);
        });
    }
}
