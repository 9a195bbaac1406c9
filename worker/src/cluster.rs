//! Several hosts on one shared ledger (README "Several hosts"): every
//! scheduled run is claimed in the PostgreSQL database before it starts,
//! and only the host whose claim committed runs it.
//!
//! The loop never waits for the database. [`Cluster::hold`] takes the runs
//! the plan wants to start (and their `running` records) out of a flush
//! and hands their claims to the claim thread; the answer comes back on a
//! channel the loop selects on, and [`Cluster::resolve`] says what the run
//! becomes: started (its record written first, as any run), skipped with a
//! reason, or nothing at all here when a peer won the fire. A claim that
//! does not commit within [`CLAIM_WITHIN`] fails closed: the fire is not
//! run here, and is recorded skipped (`store_unavailable`).
//!
//! A fire this host missed (down, restarted, stopped) is recorded
//! `misfire` at once, in the flush that moves its job's cursor past it,
//! but its report to the supervisor is held the same way: the ledger is
//! asked who holds it, and a fire a peer ran is reported as the peer's
//! (`peer`) and its record removed (a peer's fire leaves no record here).
//! A catch-up run some of whose times a peer won runs once for the rest;
//! the peer's times are reported alike.
//!
//! A fire the plan would start is claimed [`AHEAD`] of its instant
//! (`ahead.rs`), so that at the instant a won claim lets the run through
//! at once; a fire claimed ahead and then not started ends skipped in the
//! ledger with the plan's reason, and an ahead claim that did not win for
//! sure is claimed again at the instant (a claim is idempotent for its
//! run); one not fired within [`RELEASE_AFTER`] (the wall clock stepped
//! back) is ended: its row recorded skipped (`worker_down`).
//!
//! The same thread (`thread.rs`) beats for the host: it renews the leases
//! of the runs this host won, records peers' expired runs `lost`, measures
//! the clock skew against the database's clock, records each run's end,
//! checks the job definitions against the other hosts' at start, at each
//! reload and with the peers, and records a dead predecessor's runs on
//! this host `lost` when a replacement worker starts.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::mpsc as std_mpsc,
    time::{Duration, Instant},
};

use cronwarden_shared::{
    cluster::{definition_hash, Claim, ClaimOutcome},
    config::{ClusterConfig, Config, Overlap},
    status::{Outcome, RunRecord, SkipReason, Trigger},
    store::Write,
    wire::{ClusterHealth, Event},
};
use jiff::Timestamp;
use tokio::sync::mpsc;

use crate::plan::{Effects, Spawn};

use thread::Thread;

/// A claim not committed this long after the fire was planned is given up
/// (fail closed): a run that starts this late is worse than one recorded
/// not run, and another host may well have it.
pub(crate) const CLAIM_WITHIN: Duration = Duration::from_secs(5);
/// Why a claim was given up when the worker stops.
const STOPPING: &str = "the worker stopped before the claim was answered";
/// Clock skew against the database above this is logged as an error.
pub(crate) const SKEW_BOUND: Duration = Duration::from_secs(2);

/// What the claim thread is asked.
enum Request {
    Claim(Claim, Instant),
    Finish {
        run_id: u64,
        outcome: &'static str,
    },
    /// A fire claimed ahead that this host did not start: its row (if
    /// the claim won) ends skipped with `reason`.
    SkipClaimed {
        run_id: u64,
        reason: &'static str,
    },
    /// A fire claimed ahead and released: its row (if the claim won, and
    /// still running) is ended skipped (`worker_down`) in the ledger.
    Release {
        run_id: u64,
    },
    Defs(Vec<(String, String)>),
    /// This worker replaced one that died: its runs below `below` are
    /// lost, except `alive` (whose leases go on being renewed).
    TakeOver {
        below: u64,
        alive: Vec<u64>,
    },
    /// Fires this host missed (run id of the skip, job, time): who holds
    /// them in the ledger?
    Missed(Vec<MissedFire>),
    /// This host's next fire (`None`: none armed): beats keep clear of it
    /// (see `thread::beat_at`).
    NextFire(Option<Instant>),
}

/// A fire this host missed: its skip's run id, the job, the time.
type MissedFire = (u64, String, Timestamp);

/// What the claim thread tells the loop, for [`Cluster::resolve`]: a
/// claim's answer, or (at each beat) what it learnt of the ledger, for
/// the supervisor.
#[derive(Debug)]
pub(crate) enum Answer {
    Claim {
        run_id: u64,
        result: Result<ClaimOutcome, String>,
        /// The answer to a claim ahead of the fire's instant.
        ahead: bool,
    },
    Health(ClusterHealth),
    /// The peer holding each missed fire (by its skip's run id), `None`
    /// where no other host has it (or the ledger could not say).
    Missed(Vec<(u64, Option<String>)>),
}

/// A run waiting for its claim: the spawn and its `running` record.
struct Held {
    spawn: Spawn,
    insert: Write,
    /// When the fire was due (held): its claim's [`CLAIM_WITHIN`] counts
    /// from then, however many times it is sent.
    since: Instant,
    /// Its claim ahead, on its way, was made under a definition a reload
    /// changed: its answer is not trusted, the fire is claimed again.
    again: bool,
    /// When its claim ahead, on its way, was sent (see `ahead::Ahead`'s
    /// `sent`): a win read too long after is claimed again.
    ahead_sent: Option<std::time::Duration>,
}

/// The loop's side of the shared ledger.
pub(crate) struct Cluster {
    tx: std_mpsc::Sender<Request>,
    /// The loop's own answer channel, to fail a claim the thread cannot take.
    answers: mpsc::UnboundedSender<Answer>,
    /// Says when the thread ended (its last run ends recorded).
    exited: std_mpsc::Receiver<()>,
    held: BTreeMap<u64, Held>,
    /// The events of fires this host missed (by their skip's run id), held
    /// until the ledger says whether a peer ran them.
    missed: BTreeMap<u64, Event>,
    /// Misfires the ledger answered for (nobody else holds them): the next
    /// flush lets their events through instead of asking again.
    missed_done: BTreeSet<u64>,
    /// Runs whose claim won: the next flush lets them through.
    released: BTreeSet<u64>,
    /// Runs this host won and that have not ended: their ends go to the
    /// ledger.
    won: BTreeSet<u64>,
    hashes: BTreeMap<String, String>,
    /// The next fire the thread was last told of.
    next_fire: Option<Instant>,
    /// Fires claimed ahead (by the run id the plan gave them), until the
    /// plan starts or skips them (see `ahead.rs`).
    ahead: BTreeMap<u64, Ahead>,
    /// Fires whose claim ahead won (or failed: it may have committed) and
    /// whose row has not become a run's or ended skipped.
    ahead_won: BTreeSet<u64>,
    /// Claims ahead released before their answer came.
    ahead_released: BTreeSet<u64>,
    /// How long a claim ahead's win is trusted: half the lease.
    trust_ahead_for: Duration,
    /// This host's name in the ledger.
    host: String,
}

impl Cluster {
    /// Starts the claim thread; its answers go to `answers`. A thread that
    /// cannot start (or dies) fails every claim: no fire runs unclaimed.
    pub fn start(
        cfg: &ClusterConfig,
        heartbeat: Duration,
        answers: mpsc::UnboundedSender<Answer>,
    ) -> Cluster {
        let (tx, rx) = std_mpsc::channel();
        let thread_cfg = cfg.clone();
        let beat_every = heartbeat.min(cfg.lease / 3);
        let thread_answers = answers.clone();
        let (exited_tx, exited) = std_mpsc::channel();
        if let Err(e) = std::thread::Builder::new()
            .name("cluster".into())
            .spawn(move || {
                Thread::new(thread_cfg, beat_every, thread_answers).run(rx);
                let _ = exited_tx.send(());
            })
        {
            tracing::error!("cannot start the shared ledger's claim thread ({e}): no scheduled fire runs on this host");
        }
        Cluster {
            exited,
            answers,
            tx,
            held: BTreeMap::new(),
            missed: BTreeMap::new(),
            missed_done: BTreeSet::new(),
            released: BTreeSet::new(),
            won: BTreeSet::new(),
            hashes: BTreeMap::new(),
            next_fire: None,
            ahead: BTreeMap::new(),
            ahead_won: BTreeSet::new(),
            ahead_released: BTreeSet::new(),
            trust_ahead_for: cfg.lease / 2,
            host: cfg.host.clone(),
        }
    }

    /// The plan's earliest armed fire (after a flush), told to the claim
    /// thread so that its beats do not delay that fire's claim. Only a
    /// change of more than a millisecond is sent (the instant on the
    /// monotonic clock is recomputed at every flush).
    pub fn next_fire(&mut self, fire: Option<Timestamp>) {
        // Past: now. Too far ahead for the monotonic clock: none (a beat
        // is never held for it anyway).
        let at = fire.and_then(|t| {
            let wait = t.duration_since(crate::clock::wall_now());
            Instant::now().checked_add(Duration::try_from(wait).unwrap_or(Duration::ZERO))
        });
        let moved = match (self.next_fire, at) {
            (Some(a), Some(b)) => a.max(b) - a.min(b) > Duration::from_millis(1),
            (a, b) => a.is_some() != b.is_some(),
        };
        if moved {
            self.next_fire = at;
            let _ = self.tx.send(Request::NextFire(at));
        }
    }

    /// A (new) config: each job's definition hash is published.
    pub fn configure(&mut self, config: &Config) {
        let before = std::mem::replace(
            &mut self.hashes,
            config
                .jobs
                .iter()
                .map(|j| (j.name.clone(), definition_hash(j)))
                .collect(),
        );
        self.reconfigured_ahead(&before);
        let defs = self
            .hashes
            .iter()
            .map(|(j, h)| (j.clone(), h.clone()))
            .collect();
        let _ = self.tx.send(Request::Defs(defs));
    }

    /// Takes the scheduled runs out of `fx` (with their `running`
    /// records) and sends their claims. Manual runs and retries are this
    /// host's own and pass, as do runs whose claim already won.
    pub fn hold(&mut self, fx: &mut Effects) {
        self.hold_missed(fx);
        self.skipped_ahead(fx);
        let spawns = std::mem::take(&mut fx.spawns);
        for spawn in spawns {
            let id = spawn.record.id;
            let scheduled = matches!(spawn.record.trigger, Trigger::Schedule | Trigger::Catchup);
            if self.released.remove(&id) || !scheduled || spawn.record.covers.is_empty() {
                fx.spawns.push(spawn);
                continue;
            }
            let Some(at) = fx.writes.iter().position(
                |w| matches!(w, Write::Insert(r) if r.id == id && r.outcome == Outcome::Running),
            ) else {
                // No record planned with it: nothing to hold back.
                fx.spawns.push(spawn);
                continue;
            };
            if self.won_ahead(&spawn) {
                // Claimed ahead: it starts now, its record where planned.
                fx.spawns.push(spawn);
                continue;
            }
            let insert = fx.writes.remove(at);
            let since = Instant::now();
            // The one fire claimed ahead, alone in the run.
            let alone = spawn.record.covers.len() == 1;
            let ahead = self.ahead.remove(&id);
            let again = ahead.as_ref().is_some_and(|a| a.again);
            let ahead_sent = ahead.as_ref().map(|a| a.sent);
            match ahead.map(|a| a.state) {
                // Its claim ahead is on its way: the answer resolves it
                // (or, made under an old definition, sends it again).
                Some(AheadState::Asked) => {}
                // A peer holds the fire (a peer's row is never removed):
                // answered as its claim would be.
                Some(AheadState::Answered(result @ Ok(ClaimOutcome::Taken { .. }))) if alone => {
                    let _ = self.answers.send(Answer::Claim {
                        run_id: id,
                        result,
                        ahead: false,
                    });
                }
                _ => self.send_claim(self.claim_of(&spawn, false), since),
            }
            self.held.insert(
                id,
                Held {
                    spawn,
                    insert,
                    since,
                    again,
                    ahead_sent,
                },
            );
        }
    }

    /// The claim of `spawn`'s run.
    fn claim_of(&self, spawn: &Spawn, ahead: bool) -> Claim {
        Claim {
            job: spawn.job.name.clone(),
            run_id: spawn.record.id,
            covers: spawn.record.covers.clone(),
            hash: self
                .hashes
                .get(&spawn.job.name)
                .cloned()
                .unwrap_or_default(),
            exclusive: matches!(spawn.job.overlap, Overlap::Skip | Overlap::Queue),
            ahead,
        }
    }

    /// Hands a claim to the thread; one the thread cannot take fails.
    /// `since`: when the fire was due (see [`CLAIM_WITHIN`]).
    fn send_claim(&mut self, claim: Claim, since: Instant) {
        let (run_id, ahead) = (claim.run_id, claim.ahead);
        if self.tx.send(Request::Claim(claim, since)).is_err() {
            let _ = self.answers.send(Answer::Claim {
                run_id,
                result: Err("the claim thread is not running".into()),
                ahead,
            });
        }
    }

    /// Takes the `misfire` skips' events out of `fx` and asks the ledger
    /// who holds those fires: one a peer ran (a host back from downtime, a
    /// restarted worker) is the peer's, not a misfire here (see
    /// [`Cluster::resolve`]). Their records stay in the flush, stored with
    /// the job's cursor that moves past them: a worker killed before the
    /// answer leaves them recorded (a misfire too many at worst, never a
    /// fire recorded nowhere); a peer's is removed when the answer comes.
    fn hold_missed(&mut self, fx: &mut Effects) {
        // The ones answered already are put back into the very flush that
        // calls this: they pass (asked again, they would never be sent).
        let done = std::mem::take(&mut self.missed_done);
        let mut asked = vec![];
        let mut events = Vec::with_capacity(fx.events.len());
        for event in std::mem::take(&mut fx.events) {
            match &event {
                Event::Skip {
                    job,
                    run_id,
                    scheduled_at,
                    reason: SkipReason::Misfire,
                    ..
                } if !done.contains(run_id) => {
                    asked.push((*run_id, job.clone(), *scheduled_at));
                    self.missed.insert(*run_id, event);
                }
                _ => events.push(event),
            }
        }
        fx.events = events;
        if asked.is_empty() {
            return;
        }
        let ids: Vec<u64> = asked.iter().map(|a| a.0).collect();
        if self.tx.send(Request::Missed(asked)).is_err() {
            // No ledger to ask: they are this host's misfires.
            let _ = self.answers.send(Answer::Missed(
                ids.into_iter().map(|id| (id, None)).collect(),
            ));
        }
    }

    /// The ledger's word on missed fires: a peer's is reported as such and
    /// its record removed (a peer's fire leaves no record here), the
    /// others are reported as the misfires they are.
    fn resolve_missed(&mut self, holders: Vec<(u64, Option<String>)>, fx: &mut Effects) {
        for (id, holder) in holders {
            let Some(event) = self.missed.remove(&id) else {
                continue;
            };
            match (holder, event) {
                (
                    Some(host),
                    Event::Skip {
                        job,
                        run_id,
                        scheduled_at,
                        next_fire_at,
                        ..
                    },
                ) => {
                    tracing::info!(job, scheduled_at = %scheduled_at, host, "a fire missed here was claimed by another host: not a misfire");
                    fx.writes.push(Write::Forget { run_id });
                    fx.events.push(Event::Skip {
                        job,
                        run_id,
                        scheduled_at,
                        reason: SkipReason::Peer,
                        busy_run_id: None,
                        next_fire_at,
                    });
                }
                (_, event) => {
                    self.missed_done.insert(id);
                    fx.events.push(event);
                }
            }
        }
    }

    /// What a claim's answer makes of its run: started (record and spawn
    /// into `fx`), or not, with what to record; returns the job and run
    /// id to release in the plan when the run does not start.
    pub fn resolve(
        &mut self,
        answer: Answer,
        now: Timestamp,
        fx: &mut Effects,
    ) -> Option<(String, u64)> {
        let (run_id, result) = match answer {
            Answer::Claim {
                run_id,
                result,
                ahead: false,
            } => (run_id, result),
            Answer::Claim {
                run_id,
                result,
                ahead: true,
            } => match self.answered_ahead(run_id, result) {
                Some(result) => (run_id, result),
                None => return None,
            },
            Answer::Health(h) => {
                fx.events.push(Event::Cluster(h));
                return None;
            }
            Answer::Missed(holders) => {
                self.resolve_missed(holders, fx);
                return None;
            }
        };
        let Some(Held {
            mut spawn, insert, ..
        }) = self.held.remove(&run_id)
        else {
            if let Ok(ClaimOutcome::Won(_)) = result {
                // Won after the worker gave up on it (stopping): it never
                // runs, and the ledger says so rather than keep its lease.
                let _ = self.tx.send(Request::Finish {
                    run_id,
                    outcome: SkipReason::WorkerDown.as_str(),
                });
            }
            return None;
        };
        let job = spawn.job.name.clone();
        let id = spawn.record.id;
        let (reason, error) = match result {
            Ok(ClaimOutcome::Won(won)) => {
                let mut insert = insert;
                if won != spawn.record.covers {
                    // Some covered times were another host's: this run
                    // stands for the rest only, and the supervisor hears
                    // the others are a peer's (it expects no run of them
                    // here, and does not call them late).
                    let theirs = spawn.record.covers.iter().filter(|t| !won.contains(t));
                    fx.events.extend(theirs.map(|&t| peer_skip(&spawn, t)));
                    narrow(&mut spawn.record, &won);
                    if let Write::Insert(r) = &mut insert {
                        narrow(r, &won);
                    }
                }
                self.released.insert(id);
                self.ahead_won.remove(&id);
                self.won.insert(id);
                fx.writes.push(insert);
                fx.spawns.push(spawn);
                return None;
            }
            Ok(ClaimOutcome::Taken { host }) if host == self.host => (
                // Only a worker of this host that stopped or died since
                // claimed it (ahead): the fire is this host's, not run.
                SkipReason::WorkerDown,
                "claimed ahead by this host, and not started in time: by a previous worker, which stopped before its instant, or by this one (stopped past its lease, or its wall clock stepped back: the claim was ended)"
                    .to_string(),
            ),
            Ok(ClaimOutcome::Taken { host }) => {
                tracing::debug!(job, run = id, host, "fire claimed by another host");
                // An ambiguous claim ahead of it holds no row here.
                self.ahead_won.remove(&id);
                // Not this host's record: the supervisor hears of each
                // covered time so they count as accounted, the store keeps
                // nothing.
                let covers = spawn.record.covers.iter();
                fx.events.extend(covers.map(|&t| peer_skip(&spawn, t)));
                return Some((job, id));
            }
            Ok(ClaimOutcome::Busy { host, run_id }) => (
                SkipReason::Overlap,
                format!("run {run_id} on host {host} was still running"),
            ),
            Ok(ClaimOutcome::Differs { theirs }) => {
                let ours = self.hashes.get(&job).cloned().unwrap_or_default();
                tracing::error!(job, ours, theirs, "this host's definition of the job differs from the one most hosts hold: not claiming its fires");
                (
                    SkipReason::DefinitionDiffers,
                    format!("this host's definition of the job (hash {ours}) differs from the one most live hosts hold ({theirs})"),
                )
            }
            Err(e) if e == STOPPING => (SkipReason::WorkerDown, e),
            Err(e) => {
                tracing::error!(
                    job,
                    run = id,
                    "claim not committed, the fire does not run here: {e}"
                );
                (
                    SkipReason::StoreUnavailable,
                    format!("the claim was not committed in the shared ledger: {e}"),
                )
            }
        };
        // A peer's live run is that host's overlap to judge and alert on
        // (its supervisor sees its own skips): here the fire is the peer's.
        let reported = match reason {
            SkipReason::Overlap => SkipReason::Peer,
            other => other,
        };
        // A row this host won ahead and does not run ends skipped too.
        self.skip_claimed(id, reason);
        let mut rec = spawn.record;
        rec.outcome = Outcome::Skipped;
        rec.started_at = None;
        rec.finished_at = Some(now);
        rec.skip_reason = Some(reason);
        rec.error = Some(error);
        if let Some(&scheduled_at) = rec.covers.last() {
            fx.events.push(Event::Skip {
                job: job.clone(),
                run_id: id,
                scheduled_at,
                reason: reported,
                busy_run_id: None,
                next_fire_at: spawn.next_fire_at,
            });
        }
        fx.writes.push(Write::Insert(rec));
        Some((job, id))
    }

    /// The worker stops: runs still waiting for their claim never start
    /// (recorded skipped, `worker_down`); returns them for the plan.
    pub fn abandon(&mut self, now: Timestamp, fx: &mut Effects) -> Vec<(String, u64)> {
        self.abandon_ahead();
        // Missed fires still unanswered are reported as misfires.
        let missed: Vec<(u64, Option<String>)> = self.missed.keys().map(|&id| (id, None)).collect();
        self.resolve_missed(missed, fx);
        let ids: Vec<u64> = self.held.keys().copied().collect();
        ids.into_iter()
            .filter_map(|run_id| {
                let answer = Answer::Claim {
                    run_id,
                    result: Err(STOPPING.into()),
                    ahead: false,
                };
                self.resolve(answer, now, fx)
            })
            .collect()
    }

    /// This worker took over from one that died (`first_run_id`: its own
    /// first id, above all the predecessor's). The predecessor's runs are
    /// recorded lost in the ledger at once, as in the store, so peers need
    /// not wait out their lease; the ones that outlived it (`alive`, kept
    /// busy in the plan) stay `running` with their leases renewed, for
    /// they do run here, and are lost in the ledger when they are gone.
    pub fn take_over(&mut self, first_run_id: u64, alive: Vec<u64>) {
        self.won.extend(alive.iter().copied());
        let _ = self.tx.send(Request::TakeOver {
            below: first_run_id,
            alive,
        });
    }

    /// A run ended: a run this host won has its end recorded in the ledger.
    pub fn finished(&mut self, record: &RunRecord) {
        if record.outcome == Outcome::Running || !self.won.remove(&record.id) {
            return;
        }
        let _ = self.tx.send(Request::Finish {
            run_id: record.id,
            outcome: record.outcome.as_str(),
        });
    }
}

impl Drop for Cluster {
    /// The worker ends: the thread records the last run ends it has
    /// (bounded: a database that does not answer is not waited for; the
    /// runs' leases then run out and a peer records them `lost`).
    fn drop(&mut self) {
        let (tx, _) = std_mpsc::channel();
        drop(std::mem::replace(&mut self.tx, tx));
        let _ = self.exited.recv_timeout(FINAL_FLUSH_WITHIN);
    }
}

/// How long a stopping worker waits for its last run ends to reach the
/// ledger.
const FINAL_FLUSH_WITHIN: Duration = Duration::from_secs(3);

/// The supervisor's word that `spawn`'s covered time `t` is a peer's.
fn peer_skip(spawn: &Spawn, t: Timestamp) -> Event {
    Event::Skip {
        job: spawn.job.name.clone(),
        run_id: spawn.record.id,
        scheduled_at: t,
        reason: SkipReason::Peer,
        busy_run_id: None,
        next_fire_at: spawn.next_fire_at,
    }
}

/// A run narrowed to the covered times it won.
fn narrow(record: &mut RunRecord, won: &[Timestamp]) {
    record.covers = won.to_vec();
    record.scheduled_at = won.last().copied();
    if won.len() == 1 && record.trigger == Trigger::Catchup {
        record.trigger = Trigger::Schedule;
    }
}

mod ahead;
mod thread;

use ahead::{Ahead, AheadState};
pub(crate) use ahead::{AHEAD, RELEASE_AFTER};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_ahead;
