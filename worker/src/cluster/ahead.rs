//! Claims ahead (Quartz's "acquire triggers ahead"): a fire the plan would
//! start if nothing changes is claimed [`AHEAD`] before its instant, so
//! that at the instant its run starts without waiting for the database
//! (the claim's commit, a WAL fsync, was most of the fire delay on
//! PostgreSQL: issue 19). Nothing starts before its instant, nor before
//! its claim committed: the claim may be ahead, the start may not.
//!
//! The plan gives the fire its run id when it is claimed ahead
//! ([`crate::plan::Plan::claim_ahead`]), and the record it makes of the
//! fire at the instant (a run, or a skip) carries that id. So:
//! - a run whose claim ahead won passes [`Cluster::hold`] at once, if the
//!   claim was sent less than half the lease ago, counted in boot time
//!   from the send, not from when the answer was read (else it is claimed
//!   again: an old win may have been recorded `lost` by a peer meanwhile,
//!   the worker frozen or the machine suspended after the commit);
//! - one whose claim ahead is still unanswered waits for that answer as
//!   for any claim; one a peer holds is the peer's; any other answer (the
//!   database failed, a peer's run was live: overlap is judged when the
//!   fire is due, so a claim ahead records no skip) is claimed again at
//!   the instant, as without a claim ahead (a claim is idempotent for its
//!   run: the row won ahead is won again);
//! - a fire the plan skips after all (paused, its job busy here, the
//!   store failing, a reload that removed it: judged at the instant, as
//!   always) ends skipped in the ledger with the local record's reason
//!   (one whose claim ahead failed too: it may have committed);
//! - a worker that stops ends its claims ahead skipped `worker_down`; one
//!   killed leaves them `running` until the lease paths record them
//!   `lost` (a replacement worker at once, or a peer when the lease ends).
//!
//! - a fire whose job a reload changed since its claim ahead is claimed
//!   again at the instant, under the new definition;
//! - a fire claimed ahead and not fired in time (the wall clock stepped
//!   back) is released: its row ended skipped (`worker_down`) in the
//!   ledger; claimed again when it comes due, it is answered taken by this
//!   host and recorded so here ([`Cluster::release_ahead`]).
//!
//! The claim thread renews the lease of a row won ahead like a run's.

use std::{collections::BTreeMap, time::Duration};

use cronwarden_shared::{
    cluster::ClaimOutcome,
    status::{Outcome, SkipReason},
    store::Write,
};

use super::{Cluster, Request};
use crate::{
    clock::boot_time,
    plan::{AheadFire, Effects, Spawn},
};

/// How long before its instant a fire is claimed. Measured on this VM
/// (pgbench, a claim-shaped insert and cursor upsert, one commit, 20/s):
/// p50 1.9 ms, p99 7.7 ms, max 34 ms on a quiet machine; with both cores
/// compiling, p50 11 ms, p99 41 ms, max 54 ms. A beat begun just before
/// the claim (one transaction, one commit) can delay it by as much again:
/// two round trips at the loaded p99 (about 80 ms) fit in 100 ms, and an
/// answer later than that only makes the fire wait for it, as without a
/// claim ahead. The cost: a pause or a reload within this window before
/// a fire skips that fire (the peers do not take it over), as it is
/// already claimed.
pub(crate) const AHEAD: Duration = Duration::from_millis(100);

/// A fire claimed ahead and not fired this long after (monotonic time)
/// is released (see `crate::plan`'s `ahead`): [`AHEAD`], and a second for
/// a loop turn that is late (a busy machine) without the clock stepping.
pub(crate) const RELEASE_AFTER: Duration = AHEAD.saturating_add(Duration::from_secs(1));

/// Where a claim ahead stands.
#[derive(Debug)]
pub(super) enum AheadState {
    /// Sent, not answered yet.
    Asked,
    /// Answered.
    Answered(Result<ClaimOutcome, String>),
}

/// A fire claimed ahead, until the plan starts or skips it.
#[derive(Debug)]
pub(super) struct Ahead {
    pub(super) state: AheadState,
    /// When the claim was sent ([`boot_time`]): a win is trusted at the
    /// fire's instant only while younger than half the lease (see
    /// [`Cluster::won_ahead`]). Its row's lease runs from its commit, after
    /// the send, whenever the answer is read: a worker frozen between the
    /// commit and the read (or the machine suspended: the lease is wall
    /// time in the database, so the age is boot time, not monotonic) must
    /// not take a fresh read for a fresh win.
    pub(super) sent: Duration,
    job: String,
    /// A reload changed the job's definition since the claim ahead (its
    /// hash, its overlap policy): its answer is not the fire's, which is
    /// claimed again at the instant.
    pub(super) again: bool,
    /// The plan skipped the fire before the claim was answered: why (the
    /// row, if the claim won, ends skipped so).
    ended: Option<SkipReason>,
}

impl Cluster {
    /// Claims these fires ahead of their instant (see the module map).
    pub fn ahead(&mut self, fires: Vec<AheadFire>) {
        for f in fires {
            let spawn = Spawn {
                record: cronwarden_shared::status::RunRecord::new(
                    f.run_id,
                    &f.job.name,
                    vec![f.at],
                    cronwarden_shared::status::Trigger::Schedule,
                    Outcome::Running,
                ),
                job: f.job,
                next_fire_at: None,
                delay: Duration::ZERO,
            };
            self.ahead.insert(
                f.run_id,
                Ahead {
                    state: AheadState::Asked,
                    sent: boot_time(),
                    job: spawn.job.name.clone(),
                    again: false,
                    ended: None,
                },
            );
            self.send_claim(self.claim_of(&spawn, true), std::time::Instant::now());
        }
    }

    /// Whether `spawn`'s fire was won ahead, for exactly the times it
    /// covers, and recently enough: then it is this host's run now (the
    /// entry is used up). A win whose claim was sent more than half the
    /// lease ago is not trusted (the worker may have been stopped past its
    /// lease and a peer have recorded the row `lost` meanwhile): the fire
    /// is claimed again, which wins this host's own running row again, and
    /// a lost one not.
    pub(super) fn won_ahead(&mut self, spawn: &Spawn) -> bool {
        let id = spawn.record.id;
        let won = matches!(
            self.ahead.get(&id),
            Some(Ahead { state: AheadState::Answered(Ok(ClaimOutcome::Won(w))), again: false, sent, .. })
                if *w == spawn.record.covers && self.trusted(*sent)
        );
        if won {
            self.ahead.remove(&id);
            self.ahead_won.remove(&id);
            self.won.insert(id);
        }
        won
    }

    /// Whether a win of a claim sent at `sent` ([`boot_time`]) is young
    /// enough to be trusted (see [`Ahead::sent`]).
    pub(super) fn trusted(&self, sent: Duration) -> bool {
        boot_time().saturating_sub(sent) < self.trust_ahead_for
    }

    /// An answer to a claim ahead. Before the instant it is kept; at the
    /// instant (the run held for it) a won or a peer's fire is the run's
    /// answer, returned; anything else is claimed again now. A fire the
    /// plan skipped meanwhile has its row, if won, ended skipped.
    pub(super) fn answered_ahead(
        &mut self,
        run_id: u64,
        result: Result<ClaimOutcome, String>,
    ) -> Option<Result<ClaimOutcome, String>> {
        if self.ahead_released.remove(&run_id) {
            // Its row, if it won, is removed already.
            return None;
        }
        // A claim that failed may have committed all the same (the
        // connection broke after the commit): its row, if any, is ended
        // as a won one is (a no-op without a row).
        if let Ok(ClaimOutcome::Won(_)) | Err(_) = &result {
            self.ahead_won.insert(run_id);
        }
        if let Some(held) = self.held.get(&run_id) {
            return match &result {
                _ if held.again => {
                    let (claim, since) = (self.claim_of(&held.spawn, false), held.since);
                    self.send_claim(claim, since);
                    None
                }
                Ok(ClaimOutcome::Won(w))
                    if *w == held.spawn.record.covers
                        && held.ahead_sent.is_none_or(|sent| self.trusted(sent)) =>
                {
                    Some(result)
                }
                Ok(ClaimOutcome::Taken { .. }) if held.spawn.record.covers.len() == 1 => {
                    Some(result)
                }
                _ => {
                    let (claim, since) = (self.claim_of(&held.spawn, false), held.since);
                    self.send_claim(claim, since);
                    None
                }
            };
        }
        match self.ahead.get_mut(&run_id) {
            Some(Ahead {
                ended: Some(reason),
                ..
            }) => {
                let reason = *reason;
                self.ahead.remove(&run_id);
                self.skip_claimed(run_id, reason);
            }
            Some(a) => a.state = AheadState::Answered(result),
            // Given up already (the worker stops): `abandon_ahead` asked
            // the thread, which takes requests in order, to end the row
            // after this claim, with the local record's reason.
            None => {
                self.ahead_won.remove(&run_id);
            }
        }
        None
    }

    /// The plan's skips (and the ends of queued runs it dropped) of fires
    /// claimed ahead, in `fx`: their rows end skipped with the same reason.
    pub(crate) fn skipped_ahead(&mut self, fx: &Effects) {
        if self.ahead.is_empty() {
            return;
        }
        for w in &fx.writes {
            let (Write::Insert(r) | Write::Finish(r)) = w else {
                continue;
            };
            if r.outcome != Outcome::Skipped {
                continue;
            }
            let reason = r.skip_reason.unwrap_or(SkipReason::WorkerDown);
            match self.ahead.get_mut(&r.id) {
                None => {}
                Some(
                    a @ Ahead {
                        state: AheadState::Asked,
                        ..
                    },
                ) => a.ended = Some(reason),
                Some(_) => {
                    self.ahead.remove(&r.id);
                    self.skip_claimed(r.id, reason);
                }
            }
        }
    }

    /// A reload: the claims ahead of jobs whose definition changed (or
    /// that left) are claimed again at the instant, as the new definition
    /// (a peer's live run of a job now exclusive, a definition now unlike
    /// the other hosts') may not let the fire run.
    pub(super) fn reconfigured_ahead(&mut self, before: &BTreeMap<String, String>) {
        for a in self.ahead.values_mut() {
            if before.get(&a.job) != self.hashes.get(&a.job) {
                a.again = true;
            }
        }
    }

    /// Releases these claims ahead (the plan forgot their ids: the fires
    /// are claimed at their instant): the rows this host won are removed
    /// from the ledger, after the claims (the thread takes requests in
    /// order), so a claim still unanswered is covered too.
    pub fn release_ahead(&mut self, ids: Vec<u64>) {
        for run_id in ids {
            if let Some(Ahead {
                state: AheadState::Asked,
                ..
            }) = self.ahead.remove(&run_id)
            {
                self.ahead_released.insert(run_id);
            }
            self.ahead_won.remove(&run_id);
            let _ = self.tx.send(Request::Release { run_id });
        }
    }

    /// A row this host won (or may have won) ahead and does not run ends
    /// skipped.
    pub(super) fn skip_claimed(&mut self, run_id: u64, reason: SkipReason) {
        if self.ahead_won.remove(&run_id) {
            let _ = self.tx.send(Request::SkipClaimed {
                run_id,
                reason: reason.as_str(),
            });
        }
    }

    /// The worker stops: every fire claimed (ahead or at its instant) and
    /// not started ends skipped in the ledger as here: with the reason the
    /// plan already recorded it with (a pause, a reload), else
    /// `worker_down`. The thread takes the request after the claim, so a
    /// claim still unanswered is covered too (a claim that did not win
    /// ends nothing).
    pub(super) fn abandon_ahead(&mut self) {
        let ahead = std::mem::take(&mut self.ahead)
            .into_iter()
            .map(|(run_id, a)| (run_id, a.ended));
        let held = self.held.keys().map(|run_id| (*run_id, None));
        for (run_id, ended) in ahead.chain(held) {
            self.ahead_won.remove(&run_id);
            let _ = self.tx.send(Request::SkipClaimed {
                run_id,
                reason: ended.unwrap_or(SkipReason::WorkerDown).as_str(),
            });
        }
    }
}
