//! The claim thread: owns the connection to the shared ledger (and
//! reconnects when it breaks), claims the runs the loop holds back (the
//! claims that arrive together in one statement), asks who holds the
//! fires this host missed, publishes and checks the job definitions, and
//! beats for the host (leases, peers' lost runs, clock skew, the peers).
//! It answers the loop on a channel; the loop never waits for it.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    sync::mpsc as std_mpsc,
    time::{Duration, Instant},
};

use cronwarden_shared::{
    cluster::{Claim, ClaimOutcome, Ledger},
    config::ClusterConfig,
    wire::{ClusterHealth, DefinitionDiffers},
    VERSION,
};
use jiff::Timestamp;
use tokio::sync::mpsc;

use super::{Answer, MissedFire, Request, AHEAD, CLAIM_WITHIN, SKEW_BOUND};

/// How a run of this host ends in the ledger.
#[derive(Debug, Clone, Copy)]
enum End {
    /// It ran: its record's outcome.
    Ran(&'static str),
    /// Claimed ahead, not started: the skip's reason.
    Skipped(&'static str),
    /// Claimed ahead, released: the row is ended skipped (`worker_down`).
    Released,
}

/// The hosts are listed at most this often: the query counts each host's
/// claims of the last hour, and claims wait behind it on the thread.
const PEERS_EVERY: Duration = Duration::from_secs(10);

/// How long fires this host missed wait for the ledger to say who holds
/// them before they are recorded as this host's misfires.
const MISSED_WAIT: Duration = Duration::from_secs(30);

/// At most this many claims that arrived together go in one statement
/// (a burst of jobs due in the same second): bounded so one statement
/// stays well within the statement timeout.
const MAX_CLAIM_BATCH: usize = 500;

/// A beat (a clock read, then a transaction of three statements and its
/// commit: a few ms, more while the database's disk is busy) is not begun
/// this close before a claim of a fire of this host: the claim would wait
/// behind it on this thread (issue 19: fire delay on PostgreSQL).
pub(super) const BEAT_CLEARANCE: Duration = Duration::from_millis(50);
/// A beat held back for a claim runs this long after the moment the claim
/// is sent: it has reached the thread by then (the loop sends it on that
/// turn) and is handled first.
pub(super) const BEAT_AFTER_FIRE: Duration = Duration::from_millis(20);

// The two moments a beat keeps clear of (see [`beat_at`]) are so far apart
// that a beat moved past the first is clear of the second: one move, so
// the bound of `beat_at` holds.
const _: () =
    assert!(AHEAD.as_millis() >= BEAT_CLEARANCE.as_millis() + BEAT_AFTER_FIRE.as_millis());

/// When a beat due at `due` runs, the thread being free from `now` and
/// the next fire of this host being at `next_fire`: as soon as it can
/// (`due`, or `now` for a beat already overdue), unless that falls within
/// [`BEAT_CLEARANCE`] before a moment the fire's claim is sent (or at it,
/// before the claim came): then [`BEAT_AFTER_FIRE`] past that moment.
/// Never later than `due` plus both, however the fires follow one another
/// (fires every few ms must not starve the beats: the leases they renew
/// would run out); an instant already past means at once.
///
/// A fire's claim is sent at two moments, and the thread may wait on
/// either: [`AHEAD`] before the instant (the loop wakes then to claim it
/// ahead: the usual path, whose answer a beat would delay past the
/// instant), and at the instant (a claim ahead that failed, found a
/// peer's run live, won too long ago or under a definition since
/// reloaded, or a fire not claimed ahead: its claim goes then, and the
/// fire waits for it). Both are kept clear.
pub(super) fn beat_at(due: Instant, now: Instant, next_fire: Option<Instant>) -> Instant {
    // An overdue beat (the thread was busy claiming) would begin now: the
    // clearance is judged from then, not from when it was due.
    let from = due.max(now);
    let Some(fire) = next_fire else {
        return from;
    };
    let bound = due + BEAT_CLEARANCE + BEAT_AFTER_FIRE;
    let mut at = from;
    // The claim ahead first: a beat moved past it is then judged against
    // the instant.
    for sent in [fire.checked_sub(AHEAD), Some(fire)].into_iter().flatten() {
        if at + BEAT_CLEARANCE > sent && at < sent + BEAT_AFTER_FIRE {
            at = (sent + BEAT_AFTER_FIRE).min(bound);
        }
    }
    at
}

/// At most this many run ends wait for the database to come back; older
/// ones are dropped from the ledger (the host's own store has them).
const MAX_PENDING_FINISHES: usize = 10_000;

/// Test only (builds with fail points, as the end-to-end tests'): the
/// file this variable names holds a number of milliseconds the skew
/// measurement adds to this host's clock, read at every beat so a test
/// can take it away again. Hosts on one machine share one clock: without
/// a fake offset no test could show the `cluster_clock_skew` alert.
pub(crate) const TEST_CLOCK_OFFSET_FILE: &str = "CRONWARDEN_TEST_CLOCK_OFFSET_FILE";

fn test_clock_offset_us() -> i64 {
    if !cfg!(feature = "failpoints") {
        return 0;
    }
    std::env::var_os(TEST_CLOCK_OFFSET_FILE)
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|s| s.trim().parse::<i64>().ok())
        .map_or(0, |ms| ms.saturating_mul(1000))
}

/// The jobs whose definition here (`defs`: job, hash) is not the one
/// most live hosts hold (`majority`): job to (ours, theirs). A job no
/// live host published yet differs from nothing.
pub(super) fn differing(
    defs: &[(String, String)],
    majority: &BTreeMap<String, String>,
) -> BTreeMap<String, (String, String)> {
    defs.iter()
        .filter_map(|(job, ours)| {
            let theirs = majority.get(job).filter(|h| *h != ours)?;
            Some((job.clone(), (ours.clone(), theirs.clone())))
        })
        .collect()
}

/// The claim thread: owns the connection, reconnects when it breaks.
pub(super) struct Thread {
    cfg: ClusterConfig,
    ledger: Option<Ledger>,
    beat_every: Duration,
    answers: mpsc::UnboundedSender<Answer>,
    /// Run ids this host won and that have not ended: their leases are
    /// renewed at each beat.
    running: BTreeSet<u64>,
    /// Run ids whose claim statement failed: it may have committed all
    /// the same. With [`Thread::running`], the runs that may have a row
    /// here: a fire claimed and not started that has neither (its claim
    /// never reached the database, or lost) has nothing to end, and an
    /// overloaded ledger is not sent a statement for it.
    ambiguous: BTreeSet<u64>,
    finishes: VecDeque<(u64, End)>,
    defs: Option<Vec<(String, String)>>,
    /// Missed fires whose holders the ledger did not tell yet, and since
    /// when they wait.
    unanswered: Vec<(Vec<MissedFire>, Instant)>,
    /// The predecessor's runs still to record lost: (below, alive).
    predecessor: Option<(u64, Vec<u64>)>,
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
    /// This host's next fire, as the loop last said (see [`beat_at`]).
    next_fire: Option<Instant>,
}

impl Thread {
    pub(super) fn new(
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
            ambiguous: BTreeSet::new(),
            finishes: VecDeque::new(),
            defs: None,
            predecessor: None,
            unanswered: Vec::new(),
            next_connect: Instant::now(),
            skew_reported: false,
            skew_ms: None,
            differs: BTreeMap::new(),
            peers: Vec::new(),
            next_peers: Instant::now(),
            next_fire: None,
        }
    }

    pub(super) fn run(mut self, rx: std_mpsc::Receiver<Request>) {
        let mut next_beat = Instant::now();
        loop {
            let now = Instant::now();
            let wait = beat_at(next_beat, now, self.next_fire).saturating_duration_since(now);
            match rx.recv_timeout(wait) {
                Ok(request) => self.handle(request, &rx),
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                // The loop is gone: the worker is ending.
                Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                    self.flush_finishes();
                    return;
                }
            }
            let now = Instant::now();
            if now >= beat_at(next_beat, now, self.next_fire) {
                self.beat();
                next_beat = Instant::now() + self.beat_every;
            }
        }
    }

    fn handle(&mut self, request: Request, rx: &std_mpsc::Receiver<Request>) {
        match request {
            Request::Claim(claim, at) => {
                // The claims already waiting go with it (a burst of jobs
                // due in the same second); the first other request ends
                // the burst and is handled after it.
                let mut batch = vec![(claim, at)];
                let mut after = None;
                while batch.len() < MAX_CLAIM_BATCH {
                    match rx.try_recv() {
                        Ok(Request::Claim(c, at)) => batch.push((c, at)),
                        // Sent on the same turn as the claims: not the end
                        // of the burst.
                        Ok(Request::NextFire(at)) => self.next_fire = at,
                        Ok(other) => {
                            after = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                self.claims(batch);
                if let Some(request) = after {
                    self.handle(request, rx);
                }
            }
            Request::NextFire(at) => self.next_fire = at,
            Request::Missed(fires) => self.missed(fires, Instant::now()),
            Request::TakeOver { below, alive } => {
                self.running.extend(alive.iter().copied());
                self.predecessor = Some((below, alive));
                self.lose_predecessors();
            }
            Request::Finish { run_id, outcome } => self.end(run_id, End::Ran(outcome)),
            Request::SkipClaimed { run_id, reason } => {
                if self.may_hold(run_id) {
                    self.end(run_id, End::Skipped(reason));
                }
            }
            Request::Release { run_id } => {
                if self.may_hold(run_id) {
                    self.end(run_id, End::Released);
                }
            }
            Request::Defs(defs) => {
                // A job reloaded with another definition (or gone) is
                // judged afresh, now: its next fire may be a day away.
                self.differs
                    .retain(|job, (ours, _)| defs.iter().any(|(j, h)| j == job && h == ours));
                self.defs = Some(defs);
                self.publish_defs();
                self.report();
            }
        }
    }

    /// Whether this host may hold a row of `run_id`'s claim: it won, or
    /// its statement failed (see [`Thread::ambiguous`]).
    fn may_hold(&self, run_id: u64) -> bool {
        self.running.contains(&run_id) || self.ambiguous.contains(&run_id)
    }

    /// A run's end (or a fire claimed ahead and not started) goes to the
    /// ledger, after every end before it.
    fn end(&mut self, run_id: u64, end: End) {
        self.running.remove(&run_id);
        self.ambiguous.remove(&run_id);
        if self.finishes.len() >= MAX_PENDING_FINISHES {
            self.finishes.pop_front();
        }
        self.finishes.push_back((run_id, end));
        self.flush_finishes();
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
                    self.lose_predecessors();
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

    /// Claims a burst: the claims that arrived together (up to
    /// [`MAX_CLAIM_BATCH`]) in one statement, one round trip for all (see
    /// [`Ledger::claim_many`]).
    fn claims(&mut self, batch: Vec<(Claim, Instant)>) {
        let (late, batch): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|(_, at)| at.elapsed() > CLAIM_WITHIN);
        for (claim, _) in late {
            let late = format!("not claimed within {}s of its fire", CLAIM_WITHIN.as_secs());
            self.settle(&claim, Err(late));
        }
        let batch: Vec<Claim> = batch.into_iter().map(|(c, _)| c).collect();
        if batch.is_empty() {
            return;
        }
        let results = match fail::eval("worker::claim_fail", |_| ()) {
            Some(()) => Err("fault injection".into()),
            None => self.with(|l| l.claim_many(&batch)),
        };
        match results {
            Ok(outcomes) => {
                for (claim, outcome) in batch.iter().zip(outcomes) {
                    self.settle(claim, Ok(outcome));
                }
            }
            Err(e) => {
                for claim in &batch {
                    if self.ambiguous.len() >= MAX_PENDING_FINISHES {
                        // Bounded: the oldest are the least likely to be
                        // ended still (a row left so is lost by its lease).
                        self.ambiguous.pop_first();
                    }
                    self.ambiguous.insert(claim.run_id);
                    self.settle(claim, Err(e.clone()));
                }
            }
        }
    }

    /// Keeps what a claim's answer says of the job, and sends it.
    fn settle(&mut self, claim: &Claim, result: Result<ClaimOutcome, String>) {
        let (run_id, ahead) = (claim.run_id, claim.ahead);
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
        let _ = self.answers.send(Answer::Claim {
            run_id,
            result,
            ahead,
        });
    }

    /// Who holds the fires this host missed (asked since `since`). While
    /// the ledger does not answer they wait, retried at each beat, for
    /// [`MISSED_WAIT`] (a worker just started may not be connected yet);
    /// then they are this host's misfires (a record too many beats none).
    fn missed(&mut self, fires: Vec<MissedFire>, since: Instant) {
        let keys: Vec<(String, Timestamp)> =
            fires.iter().map(|(_, j, t)| (j.clone(), *t)).collect();
        let holders = match self.with(|l| l.holders(&keys)) {
            Ok(h) => h,
            Err(_) if since.elapsed() < MISSED_WAIT => {
                self.unanswered.push((fires, since));
                return;
            }
            Err(e) => {
                tracing::warn!("cannot ask the shared ledger who ran the fires missed here: {e}");
                vec![None; fires.len()]
            }
        };
        let me = self.cfg.host.as_str();
        let answer = fires
            .iter()
            .zip(holders.into_iter().chain(std::iter::repeat(None)))
            .map(|((id, _, _), h)| (*id, h.filter(|h| h != me)))
            .collect();
        let _ = self.answers.send(Answer::Missed(answer));
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
            return;
        }
        self.check_defs();
    }

    /// Compares this host's definitions with the ones most live hosts
    /// hold: the jobs that differ are reported (and alerted on by the
    /// supervisor) without waiting for their next claim.
    fn check_defs(&mut self) {
        let Some(defs) = self.defs.clone() else {
            return;
        };
        let jobs: Vec<String> = defs.iter().map(|(j, _)| j.clone()).collect();
        let majority = match self.with(|l| l.majority_defs(&jobs)) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("cannot compare job definitions with the other hosts: {e}");
                return;
            }
        };
        let before: BTreeSet<String> = self.differs.keys().cloned().collect();
        self.differs = differing(&defs, &majority);
        for (job, (ours, theirs)) in &self.differs {
            if !before.contains(job) {
                tracing::error!(job, ours, theirs, "this host's definition of the job differs from the one most hosts hold: not claiming its fires");
            }
        }
    }

    /// Records the dead predecessor's runs lost (once the ledger answers).
    fn lose_predecessors(&mut self) {
        let Some((below, alive)) = self.predecessor.clone() else {
            return;
        };
        if self.ledger.is_none() {
            return;
        }
        match self.with(|l| l.lose_predecessors(below, &alive)) {
            Ok(lost) => {
                for (job, at, run_id) in lost {
                    tracing::error!(job, scheduled_at = %at, run = run_id, "run recorded lost in the shared ledger: its worker died while it was running");
                }
                self.predecessor = None;
            }
            Err(e) => tracing::warn!(
                "the previous worker's runs are not recorded lost in the shared ledger yet: {e}"
            ),
        }
    }

    fn flush_finishes(&mut self) {
        while let Some((run_id, end)) = self.finishes.front().copied() {
            if self.ledger.is_none() {
                return;
            }
            match self.with(|l| match end {
                End::Ran(outcome) => l.finish(run_id, outcome),
                End::Skipped(reason) => l.skip_claimed(run_id, reason),
                End::Released => l.release_claimed(run_id),
            }) {
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
        let offset = test_clock_offset_us();
        match self.with(|l| {
            l.offset_clock_for_test(offset);
            l.beat(&running, VERSION)
        }) {
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
        for (fires, since) in std::mem::take(&mut self.unanswered) {
            self.missed(fires, since);
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
            // Peers reload too: this host may have become the odd one.
            self.check_defs();
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
mod tests {
    use super::*;

    #[test]
    fn a_skip_of_a_claim_that_never_reached_the_database_costs_no_statement() {
        let cfg = ClusterConfig {
            // Nothing listens there: every statement fails at once.
            url: "postgres://cw@127.0.0.1:1/none".into(),
            host: "here".into(),
            lease: Duration::from_secs(30),
        };
        let (answers, _answers_rx) = mpsc::unbounded_channel();
        let mut th = Thread::new(cfg, Duration::from_secs(1), answers);
        let (_tx, rx) = std_mpsc::channel();
        // Never claimed here (or given up late, unsent): nothing to end.
        th.handle(
            Request::SkipClaimed {
                run_id: 3,
                reason: "paused",
            },
            &rx,
        );
        th.handle(Request::Release { run_id: 3 }, &rx);
        assert!(th.finishes.is_empty());
        // A claim whose statement failed may have committed: its end is
        // kept for the ledger.
        let claim = Claim {
            job: "j".into(),
            run_id: 4,
            covers: vec![Timestamp::from_second(1_800_000_000).unwrap()],
            hash: String::new(),
            exclusive: false,
            ahead: true,
        };
        th.handle(Request::Claim(claim, Instant::now()), &rx);
        th.handle(
            Request::SkipClaimed {
                run_id: 4,
                reason: "paused",
            },
            &rx,
        );
        assert_eq!(th.finishes.len(), 1);
    }
}
