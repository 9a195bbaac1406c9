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
//! The same thread beats for the host: it renews the leases of the runs
//! this host won, records peers' expired runs `lost`, measures the clock
//! skew against the database's clock, and records each run's end.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    sync::mpsc as std_mpsc,
    time::{Duration, Instant},
};

use cronwarden_shared::{
    cluster::{definition_hash, Claim, ClaimOutcome, Ledger},
    config::{ClusterConfig, Config, Overlap},
    status::{Outcome, RunRecord, SkipReason, Trigger},
    store::Write,
    wire::{ClusterHealth, DefinitionDiffers, Event},
    VERSION,
};
use jiff::Timestamp;
use tokio::sync::mpsc;

use crate::plan::{Effects, Spawn};

/// A claim not committed this long after the fire was planned is given up
/// (fail closed): a run that starts this late is worse than one recorded
/// not run, and another host may well have it.
pub(crate) const CLAIM_WITHIN: Duration = Duration::from_secs(5);
/// At most this many run ends wait for the database to come back; older
/// ones are dropped from the ledger (the host's own store has them).
const MAX_PENDING_FINISHES: usize = 10_000;
/// Why a claim was given up when the worker stops.
const STOPPING: &str = "the worker stopped before the claim was answered";
/// Clock skew against the database above this is logged as an error.
pub(crate) const SKEW_BOUND: Duration = Duration::from_secs(2);

/// The hosts are listed at most this often: the query counts each host's
/// claims of the last hour, and claims wait behind it on the thread.
const PEERS_EVERY: Duration = Duration::from_secs(10);

/// What the claim thread is asked.
enum Request {
    Claim(Claim, Instant),
    Finish { run_id: u64, outcome: &'static str },
    Defs(Vec<(String, String)>),
}

/// What the claim thread tells the loop, for [`Cluster::resolve`]: a
/// claim's answer, or (at each beat) what it learnt of the ledger, for
/// the supervisor.
#[derive(Debug)]
pub(crate) enum Answer {
    Claim {
        run_id: u64,
        result: Result<ClaimOutcome, String>,
    },
    Health(ClusterHealth),
}

/// A run waiting for its claim: the spawn and its `running` record.
struct Held {
    spawn: Spawn,
    insert: Write,
}

/// The loop's side of the shared ledger.
pub(crate) struct Cluster {
    tx: std_mpsc::Sender<Request>,
    /// The loop's own answer channel, to fail a claim the thread cannot take.
    answers: mpsc::UnboundedSender<Answer>,
    /// Says when the thread ended (its last run ends recorded).
    exited: std_mpsc::Receiver<()>,
    held: BTreeMap<u64, Held>,
    /// Runs whose claim won: the next flush lets them through.
    released: BTreeSet<u64>,
    /// Runs this host won and that have not ended: their ends go to the
    /// ledger.
    won: BTreeSet<u64>,
    hashes: BTreeMap<String, String>,
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
            released: BTreeSet::new(),
            won: BTreeSet::new(),
            hashes: BTreeMap::new(),
        }
    }

    /// A (new) config: each job's definition hash is published.
    pub fn configure(&mut self, config: &Config) {
        self.hashes = config
            .jobs
            .iter()
            .map(|j| (j.name.clone(), definition_hash(j)))
            .collect();
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
            let insert = fx.writes.remove(at);
            let claim = Claim {
                job: spawn.job.name.clone(),
                run_id: id,
                covers: spawn.record.covers.clone(),
                hash: self
                    .hashes
                    .get(&spawn.job.name)
                    .cloned()
                    .unwrap_or_default(),
                exclusive: matches!(spawn.job.overlap, Overlap::Skip | Overlap::Queue),
            };
            if self.tx.send(Request::Claim(claim, Instant::now())).is_err() {
                let _ = self.answers.send(Answer::Claim {
                    run_id: id,
                    result: Err("the claim thread is not running".into()),
                });
            }
            self.held.insert(id, Held { spawn, insert });
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
            Answer::Claim { run_id, result } => (run_id, result),
            Answer::Health(h) => {
                fx.events.push(Event::Cluster(h));
                return None;
            }
        };
        let Some(Held { mut spawn, insert }) = self.held.remove(&run_id) else {
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
                    // stands for the rest only.
                    narrow(&mut spawn.record, &won);
                    if let Write::Insert(r) = &mut insert {
                        narrow(r, &won);
                    }
                }
                self.released.insert(id);
                self.won.insert(id);
                fx.writes.push(insert);
                fx.spawns.push(spawn);
                return None;
            }
            Ok(ClaimOutcome::Taken { host }) => {
                tracing::debug!(job, run = id, host, "fire claimed by another host");
                // Not this host's record: the supervisor hears of it so
                // the fire counts as accounted, the store keeps nothing.
                if let Some(&scheduled_at) = spawn.record.covers.last() {
                    fx.events.push(Event::Skip {
                        job: job.clone(),
                        run_id: id,
                        scheduled_at,
                        reason: SkipReason::Peer,
                        busy_run_id: None,
                        next_fire_at: spawn.next_fire_at,
                    });
                }
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
        let ids: Vec<u64> = self.held.keys().copied().collect();
        ids.into_iter()
            .filter_map(|run_id| {
                let answer = Answer::Claim {
                    run_id,
                    result: Err(STOPPING.into()),
                };
                self.resolve(answer, now, fx)
            })
            .collect()
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

/// A run narrowed to the covered times it won.
fn narrow(record: &mut RunRecord, won: &[Timestamp]) {
    record.covers = won.to_vec();
    record.scheduled_at = won.last().copied();
    if won.len() == 1 && record.trigger == Trigger::Catchup {
        record.trigger = Trigger::Schedule;
    }
}

/// The claim thread: owns the connection, reconnects when it breaks.
struct Thread {
    cfg: ClusterConfig,
    ledger: Option<Ledger>,
    beat_every: Duration,
    answers: mpsc::UnboundedSender<Answer>,
    /// Run ids this host won and that have not ended: their leases are
    /// renewed at each beat.
    running: BTreeSet<u64>,
    finishes: VecDeque<(u64, &'static str)>,
    defs: Option<Vec<(String, String)>>,
    next_connect: Instant,
    skew_reported: bool,
    /// The last skew measured, milliseconds.
    skew_ms: Option<i64>,
    /// Jobs whose last claim was refused for a differing definition:
    /// (ours, theirs); a claim that goes through clears its job.
    differs: BTreeMap<String, (String, String)>,
    /// The hosts as last listed.
    peers: Vec<cronwarden_shared::cluster::Peer>,
    next_peers: Instant,
}

impl Thread {
    fn new(
        cfg: ClusterConfig,
        beat_every: Duration,
        answers: mpsc::UnboundedSender<Answer>,
    ) -> Thread {
        Thread {
            cfg,
            ledger: None,
            beat_every,
            answers,
            running: BTreeSet::new(),
            finishes: VecDeque::new(),
            defs: None,
            next_connect: Instant::now(),
            skew_reported: false,
            skew_ms: None,
            differs: BTreeMap::new(),
            peers: Vec::new(),
            next_peers: Instant::now(),
        }
    }

    fn run(mut self, rx: std_mpsc::Receiver<Request>) {
        let mut next_beat = Instant::now();
        loop {
            let wait = next_beat.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(Request::Claim(claim, at)) => self.claim(claim, at),
                Ok(Request::Finish { run_id, outcome }) => {
                    self.running.remove(&run_id);
                    if self.finishes.len() >= MAX_PENDING_FINISHES {
                        self.finishes.pop_front();
                    }
                    self.finishes.push_back((run_id, outcome));
                    self.flush_finishes();
                }
                Ok(Request::Defs(defs)) => {
                    // A job reloaded with another definition (or gone)
                    // is judged afresh at its next claim.
                    self.differs
                        .retain(|job, (ours, _)| defs.iter().any(|(j, h)| j == job && h == ours));
                    self.defs = Some(defs);
                    self.publish_defs();
                }
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                // The loop is gone: the worker is ending.
                Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                    self.flush_finishes();
                    return;
                }
            }
            if Instant::now() >= next_beat {
                self.beat();
                next_beat = Instant::now() + self.beat_every;
            }
        }
    }

    /// The connection, (re)connecting at most once a second.
    fn ledger(&mut self) -> Result<&mut Ledger, String> {
        if self.ledger.is_none() {
            if Instant::now() < self.next_connect {
                return Err("the shared ledger is unreachable (retrying)".into());
            }
            self.next_connect = Instant::now() + Duration::from_secs(1);
            match Ledger::connect(&self.cfg) {
                Ok(l) => {
                    tracing::info!(
                        store = self.cfg.redacted(),
                        host = self.cfg.host,
                        "connected to the shared ledger"
                    );
                    self.ledger = Some(l);
                    // What the database may have missed meanwhile.
                    self.publish_defs();
                    self.flush_finishes();
                }
                Err(e) => {
                    tracing::error!("{e}");
                    return Err(e.to_string());
                }
            }
        }
        self.ledger
            .as_mut()
            .ok_or_else(|| "the shared ledger is unreachable".to_string())
    }

    /// Runs `f` on the connection; an error drops it (reconnect next time).
    fn with<T>(
        &mut self,
        f: impl FnOnce(&mut Ledger) -> Result<T, cronwarden_shared::cluster::LedgerError>,
    ) -> Result<T, String> {
        let ledger = self.ledger()?;
        match f(ledger) {
            Ok(t) => Ok(t),
            Err(e) => {
                // Any error may have left the session unusable (a broken
                // connection, an aborted transaction): start afresh.
                self.ledger = None;
                Err(e.to_string())
            }
        }
    }

    fn claim(&mut self, claim: Claim, at: Instant) {
        let run_id = claim.run_id;
        let result = if at.elapsed() > CLAIM_WITHIN {
            Err(format!(
                "not claimed within {}s of its fire",
                CLAIM_WITHIN.as_secs()
            ))
        } else {
            fail::fail_point!("worker::claim_fail", |_| {
                let _ = self.answers.send(Answer::Claim {
                    run_id,
                    result: Err("fault injection".into()),
                });
            });
            self.with(|l| l.claim(&claim))
        };
        match &result {
            Ok(ClaimOutcome::Won(_)) => {
                self.running.insert(run_id);
                self.differs.remove(&claim.job);
            }
            Ok(ClaimOutcome::Differs { theirs }) => {
                self.differs
                    .insert(claim.job.clone(), (claim.hash.clone(), theirs.clone()));
            }
            Ok(ClaimOutcome::Taken { .. } | ClaimOutcome::Busy { .. }) => {
                self.differs.remove(&claim.job);
            }
            Err(_) => {}
        }
        let _ = self.answers.send(Answer::Claim { run_id, result });
    }

    fn publish_defs(&mut self) {
        let Some(defs) = self.defs.clone() else {
            return;
        };
        if self.ledger.is_none() {
            return;
        }
        if let Err(e) = self.with(|l| l.publish_defs(&defs)) {
            tracing::error!("{e}");
        }
    }

    fn flush_finishes(&mut self) {
        while let Some((run_id, outcome)) = self.finishes.front().copied() {
            if self.ledger.is_none() {
                return;
            }
            match self.with(|l| l.finish(run_id, outcome)) {
                Ok(_) => {
                    self.finishes.pop_front();
                }
                Err(e) => {
                    tracing::warn!(
                        run = run_id,
                        "run end not recorded in the shared ledger yet: {e}"
                    );
                    return;
                }
            }
        }
    }

    fn beat(&mut self) {
        let running: Vec<u64> = self.running.iter().copied().collect();
        match self.with(|l| l.beat(&running, VERSION)) {
            Ok(beat) => {
                for (job, at, host, run_id) in beat.lost {
                    tracing::error!(job, scheduled_at = %at, host, run = run_id, "a peer's run recorded lost: its lease ran out");
                }
                let skew = Duration::from_micros(beat.skew_us.unsigned_abs());
                if skew > SKEW_BOUND && !self.skew_reported {
                    tracing::error!(skew_ms = beat.skew_us / 1000, "this host's clock is off the database's by more than {}s: fires are late or early against the other hosts", SKEW_BOUND.as_secs());
                }
                self.skew_reported = skew > SKEW_BOUND;
                self.skew_ms = Some(beat.skew_us / 1000);
                self.flush_finishes();
            }
            Err(e) => tracing::warn!("shared ledger beat failed: {e}"),
        }
        self.report();
    }

    /// Tells the supervisor (through the loop) what the ledger says: the
    /// skew, the differing definitions, the peers. The peers are the
    /// last known when the database is unreachable now.
    fn report(&mut self) {
        let peers = if self.ledger.is_some() && Instant::now() >= self.next_peers {
            self.next_peers = Instant::now() + PEERS_EVERY;
            match self.with(|l| l.peers()) {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!("cannot list the shared ledger's hosts: {e}");
                    None
                }
            }
        } else {
            None
        };
        if let Some(p) = peers {
            self.peers = p;
        }
        let health = ClusterHealth {
            host: self.cfg.host.clone(),
            skew_ms: self.skew_ms,
            skew_bound_ms: SKEW_BOUND.as_millis() as u64,
            differs: self
                .differs
                .iter()
                .map(|(job, (ours, theirs))| DefinitionDiffers {
                    job: job.clone(),
                    ours: ours.clone(),
                    theirs: theirs.clone(),
                })
                .collect(),
            peers: self.peers.clone(),
        };
        let _ = self.answers.send(Answer::Health(health));
    }
}

#[cfg(test)]
mod tests;
