//! Claiming a fire, so exactly one host runs each scheduled time of each
//! job: one statement for a burst of runs (in a transaction that first
//! locks the exclusive jobs among them, when there are some). It inserts a
//! row per scheduled time a run covers (`ON CONFLICT DO NOTHING`: a time
//! another host claimed stays its), advances the job's cursor, and leaves
//! the rows `running` under a lease. Nothing runs before it commits. Also
//! here: who holds the fires a host missed, a run's end, and a dead
//! predecessor's runs recorded `lost`.

use jiff::Timestamp;

use super::{ts, ts_of, us, Ledger, LedgerError, MAJORITY};

/// One run this host wants to start.
#[derive(Debug, Clone)]
pub struct Claim {
    pub job: String,
    /// This host's run id (ids are per host: rows are keyed by time).
    pub run_id: u64,
    /// The scheduled times the run stands for (oldest first, not empty).
    pub covers: Vec<Timestamp>,
    /// This host's [`super::definition_hash`] of the job.
    pub hash: String,
    /// The job's overlap policy forbids a second run at once (`skip`,
    /// `queue`): a live run on any other host makes this fire skipped.
    pub exclusive: bool,
    /// Claimed ahead of its instant: a peer's live run (an exclusive job)
    /// is answered [`ClaimOutcome::Busy`] without recording the fire
    /// skipped, for overlap is judged when the fire is due (the host
    /// claims again then).
    pub ahead: bool,
}

/// How a claim ended (it committed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// This host runs these of the covered times (the others were
    /// claimed elsewhere).
    Won(Vec<Timestamp>),
    /// Every covered time was already claimed; the newest by `host`.
    Taken { host: String },
    /// A run of the job was live on `host` (an exclusive job): the fires
    /// are recorded skipped (`overlap`) in the ledger, unless another host
    /// recorded them first (or the claim was [`Claim::ahead`]: nothing is
    /// recorded).
    Busy { host: String, run_id: u64 },
    /// Most live hosts hold another definition of the job: this host does
    /// not claim it.
    Differs { theirs: String },
}

impl Ledger {
    /// Claims `c` (see [`Ledger::claim_many`]).
    pub fn claim(&mut self, c: &Claim) -> Result<ClaimOutcome, LedgerError> {
        let mut answers = self.claim_many(std::slice::from_ref(c))?;
        answers.pop().ok_or_else(|| {
            LedgerError::Schema(format!("the claim of run {} has no answer", c.run_id))
        })
    }

    /// Claims a burst of runs, however many arrived together, in one
    /// statement (prepared once per connection): one round trip for the
    /// lot. Each fire is inserted on its own (`ON CONFLICT DO NOTHING`), so
    /// a time a peer holds never aborts the others' claims; rows go in in
    /// one order (job, time) on every host, so two hosts claiming the same
    /// burst wait for each other at most, never deadlock. A job whose
    /// definition differs from the majority's is not claimed. When the
    /// burst has exclusive jobs (`overlap` skip or queue), the statement
    /// runs in a transaction after locking those jobs (in the order of
    /// their lock keys, the same on every host), so two hosts claiming
    /// different fires of one job take turns and each sees the other's
    /// live run: a fire of a job live on another host is recorded skipped
    /// (`overlap`). Answers are in the order of `claims`.
    ///
    /// Claiming again a time this host already holds `running` under the
    /// same run id (claimed ahead of its instant) wins it again: a claim
    /// is idempotent for its run, so a host unsure whether its claim ahead
    /// committed simply claims again. That is a plain read of the row
    /// (`mine`), not an `ON CONFLICT DO UPDATE`: an upsert locks the
    /// conflicting row even where its condition fails, so every losing
    /// host would lock the winner's row (a transaction id, WAL, a commit
    /// to wait for, a deadlock with the winner's beat) and a burst holding
    /// one fire twice would fail whole. The lease of such a row is the
    /// beats' to renew, as any running row's.
    pub fn claim_many(&mut self, claims: &[Claim]) -> Result<Vec<ClaimOutcome>, LedgerError> {
        let db = |what: &'static str| move |e| LedgerError::db(what, e);
        if claims.is_empty() {
            return Ok(vec![]);
        }
        let stmt = self.claim_statement()?;
        // One row per covered time.
        let fires = claims
            .iter()
            .flat_map(|c| c.covers.iter().map(move |t| (c, t)));
        let (mut jobs, mut ids, mut times, mut hashes, mut excl, mut ahead) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for (c, t) in fires {
            jobs.push(c.job.as_str());
            ids.push(c.run_id as i64);
            times.push(t.as_microsecond());
            hashes.push(c.hash.as_str());
            excl.push(c.exclusive);
            ahead.push(c.ahead);
        }
        let locked: Vec<&str> = claims
            .iter()
            .filter(|c| c.exclusive)
            .map(|c| c.job.as_str())
            .collect();
        let host = self.host.clone();
        let lease = self.lease_secs();
        let params: [&(dyn postgres::types::ToSql + Sync); 8] =
            [&jobs, &lease, &ids, &times, &hashes, &host, &excl, &ahead];
        let rows = if locked.is_empty() {
            self.client()
                .query(&stmt, &params)
                .map_err(db("claim the fires"))?
        } else {
            let mut tx = self.client().transaction().map_err(db("begin claim"))?;
            tx.execute(
                "SELECT pg_advisory_xact_lock(k) FROM
                   (SELECT DISTINCT hashtext(j) AS k FROM unnest($1::text[]) AS j) s ORDER BY k",
                &[&locked],
            )
            .map_err(db("lock the jobs"))?;
            let rows = tx.query(&stmt, &params).map_err(db("claim the fires"))?;
            tx.commit().map_err(db("commit claim"))?;
            rows
        };
        let mut answers = std::collections::BTreeMap::new();
        for r in &rows {
            let run_id: i64 = r.get(0);
            answers.insert(run_id as u64, r);
        }
        let mut out = Vec::with_capacity(claims.len());
        for c in claims {
            // Not removed: a burst may hold one run's claim twice (sent
            // ahead and again at the instant), answered alike.
            let Some(r) = answers.get(&c.run_id) else {
                return Err(LedgerError::Schema(format!(
                    "the claim of run {} has no answer",
                    c.run_id
                )));
            };
            let (ok, theirs, busy_host, busy_run, won): (
                bool,
                Option<String>,
                Option<String>,
                Option<i64>,
                Vec<i64>,
            ) = (r.get(1), r.get(2), r.get(3), r.get(4), r.get(5));
            out.push(match (ok, busy_host, busy_run) {
                (false, _, _) => ClaimOutcome::Differs {
                    theirs: theirs.unwrap_or_default(),
                },
                (true, Some(host), Some(run_id)) => ClaimOutcome::Busy {
                    host,
                    run_id: run_id as u64,
                },
                _ if won.is_empty() => {
                    let newest = c.covers.iter().max().map_or(0, |t| t.as_microsecond());
                    // The claims are committed by now: a failure here
                    // must not fail them (the won ones would never run),
                    // it only leaves the peer unnamed.
                    let host = self
                        .holder(&c.job, newest)
                        .unwrap_or_else(|e| format!("another host (unnamed: {e})"));
                    ClaimOutcome::Taken { host }
                }
                _ => {
                    let mut won: Vec<Timestamp> = won.into_iter().map(ts_of).collect();
                    won.sort();
                    ClaimOutcome::Won(won)
                }
            });
        }
        Ok(out)
    }

    /// The claim statement of [`Ledger::claim_many`], prepared once per
    /// connection. Parameters, one element per covered time: `$1` jobs,
    /// `$3` run ids, `$4` times (microseconds), `$5` definition hashes,
    /// `$7` exclusive, `$8` ahead; `$2` the lease (s), `$6` this host.
    fn claim_statement(&mut self) -> Result<postgres::Statement, LedgerError> {
        if let Some(stmt) = &self.claim_stmt {
            return Ok(stmt.clone());
        }
        let sql = format!(
            "WITH input AS (
                 SELECT * FROM unnest($1::text[], $3::bigint[], $4::bigint[], $5::text[], $7::bool[], $8::bool[])
                     AS i(job, run_id, t, hash, exclusive, ahead)
             ), majority AS ({MAJORITY}
             ), runs AS (
                 SELECT DISTINCT i.job, i.run_id, i.exclusive, m.hash AS theirs,
                     (m.hash IS NULL OR m.hash = i.hash) AS ok
                 FROM input i LEFT JOIN majority m ON m.job = i.job
             ), busy AS (
                 SELECT DISTINCT ON (f.job) f.job, f.host, f.run_id FROM cw_fires f
                 WHERE f.job IN (SELECT job FROM runs WHERE ok AND exclusive)
                   AND f.state = 'running' AND f.lease_until > now() AND f.host <> $6
                 ORDER BY f.job, f.host, f.run_id
             ), skipped AS (
                 INSERT INTO cw_fires (job, scheduled_for, host, run_id, state, finished, outcome)
                 SELECT i.job, {at}, $6, i.run_id, 'skipped', now(), 'overlap'
                 FROM input i JOIN runs r ON r.job = i.job AND r.run_id = i.run_id
                 WHERE r.ok AND r.exclusive AND NOT i.ahead AND i.job IN (SELECT job FROM busy)
                 ORDER BY i.job, i.t
                 ON CONFLICT DO NOTHING
             ), won AS (
                 INSERT INTO cw_fires (job, scheduled_for, host, run_id, state, lease_until, started)
                 SELECT i.job, {at}, $6, i.run_id, 'running', now() + $2 * interval '1 second', now()
                 FROM input i JOIN runs r ON r.job = i.job AND r.run_id = i.run_id
                 WHERE r.ok AND NOT (r.exclusive AND i.job IN (SELECT job FROM busy))
                 ORDER BY i.job, i.t
                 ON CONFLICT DO NOTHING
                 RETURNING job, run_id, scheduled_for
             ), mine AS (
                 SELECT f.job, f.run_id, f.scheduled_for FROM cw_fires f
                 JOIN input i ON f.job = i.job AND f.scheduled_for = {at} AND f.run_id = i.run_id
                 JOIN runs r ON r.job = i.job AND r.run_id = i.run_id
                 WHERE f.host = $6 AND f.state = 'running' AND f.lease_until > now()
                   AND r.ok AND NOT (r.exclusive AND i.job IN (SELECT job FROM busy))
             ), held AS (
                 SELECT * FROM won UNION SELECT * FROM mine
             ), cursor AS (
                 INSERT INTO cw_cursors (job, last_scheduled)
                 SELECT job, max(scheduled_for) FROM won GROUP BY job ORDER BY job
                 ON CONFLICT (job) DO UPDATE
                 SET last_scheduled = greatest(cw_cursors.last_scheduled, excluded.last_scheduled)
             )
             SELECT r.run_id, r.ok, r.theirs, b.host, b.run_id,
                    array(SELECT {won_at} FROM held w WHERE w.job = r.job AND w.run_id = r.run_id)
             FROM runs r LEFT JOIN busy b ON b.job = r.job AND r.exclusive",
            at = ts(8).replace("$8", "i.t"),
            won_at = us("w.scheduled_for")
        );
        let stmt = self
            .client()
            .prepare(&sql)
            .map_err(|e| LedgerError::db("prepare the claim", e))?;
        self.claim_stmt = Some(stmt.clone());
        Ok(stmt)
    }

    /// The host that claimed `job`'s fire at `at` (microseconds).
    fn holder(&mut self, job: &str, at: i64) -> Result<String, LedgerError> {
        Ok(self
            .client()
            .query_opt(
                &format!(
                    "SELECT host FROM cw_fires WHERE job = $1 AND scheduled_for = {}",
                    ts(2)
                ),
                &[&job, &at],
            )
            .map_err(|e| LedgerError::db("read who claimed the fire", e))?
            .map_or_else(String::new, |r| r.get(0)))
    }

    /// The host holding each of `fires` (job, scheduled time) in the
    /// ledger, in order; `None` where no host claimed or skipped it. A
    /// host asks before it records a fire it missed: a fire a peer ran is
    /// not this host's misfire.
    pub fn holders(
        &mut self,
        fires: &[(String, Timestamp)],
    ) -> Result<Vec<Option<String>>, LedgerError> {
        let jobs: Vec<&str> = fires.iter().map(|(j, _)| j.as_str()).collect();
        let times: Vec<i64> = fires.iter().map(|(_, t)| t.as_microsecond()).collect();
        let rows = self
            .client()
            .query(
                &format!(
                    "SELECT f.host FROM unnest($1::text[], $2::bigint[]) WITH ORDINALITY AS u(job, t, i)
                     LEFT JOIN cw_fires f ON f.job = u.job AND f.scheduled_for = {}
                     ORDER BY u.i",
                    ts(3).replace("$3", "u.t")
                ),
                &[&jobs, &times],
            )
            .map_err(|e| LedgerError::db("read who holds the missed fires", e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Records this host's fire claimed ahead under `run_id` skipped with
    /// `reason` (a `SkipReason` word): the host did not start it (paused,
    /// its job busy here, removed by a reload, the worker stopping), and
    /// the ledger's row ends as the host's own record does. Returns how
    /// many rows it ended (none where the claim had not won).
    pub fn skip_claimed(&mut self, run_id: u64, reason: &str) -> Result<u64, LedgerError> {
        let host = self.host.clone();
        self.client()
            .execute(
                "UPDATE cw_fires SET state = 'skipped', outcome = $3, finished = now(),
                     lease_until = NULL
                 WHERE host = $1 AND run_id = $2 AND state IN ('running', 'lost')",
                &[&host, &(run_id as i64), &reason],
            )
            .map_err(|e| LedgerError::db("record the fire claimed ahead skipped", e))
    }

    /// Ends this host's fire claimed ahead under `run_id`, still
    /// `running` (not started), skipped `worker_down`: the host could not
    /// start it in time (its wall clock stepped back, its loop did not
    /// turn). The row is ended, not removed: the peers took their claims
    /// ahead answered `taken` as final, and a removed row would leave the
    /// fire with no record (or run it late here). Returns how many rows it
    /// ended.
    pub fn release_claimed(&mut self, run_id: u64) -> Result<u64, LedgerError> {
        let host = self.host.clone();
        self.client()
            .execute(
                "UPDATE cw_fires SET state = 'skipped', outcome = 'worker_down', finished = now(),
                     lease_until = NULL
                 WHERE host = $1 AND run_id = $2 AND state = 'running'",
                &[&host, &(run_id as i64)],
            )
            .map_err(|e| LedgerError::db("end the fire claimed ahead", e))
    }

    /// Records this host's run `run_id` ended with `outcome` (the record's
    /// word; run ids are unique per host). A run a peer recorded `lost`
    /// while this host was silent is set right: it did run here, once.
    /// A run that ended `lost` (its worker died, the run outlived it and
    /// is gone now) is `lost` in the ledger too, by this host.
    /// Returns how many fire rows it ended (the times the run covered).
    pub fn finish(&mut self, run_id: u64, outcome: &str) -> Result<u64, LedgerError> {
        let host = self.host.clone();
        self.client()
            .execute(
                "UPDATE cw_fires SET state = CASE WHEN $3 = 'lost' THEN 'lost' ELSE 'finished' END,
                     lost_by = CASE WHEN $3 = 'lost' THEN coalesce(lost_by, $1) ELSE lost_by END,
                     outcome = $3, finished = now(), lease_until = NULL
                 WHERE host = $1 AND run_id = $2 AND state IN ('running', 'lost')",
                &[&host, &(run_id as i64), &outcome],
            )
            .map_err(|e| LedgerError::db("record the run finished", e))
    }

    /// A replacement worker on this host (after its predecessor was
    /// killed) records the predecessor's runs `lost` at once, as its own
    /// store does, rather than leave them `running` until their lease
    /// runs out: every run of this host below `below` (the new worker's
    /// first run id) still `running`, except `alive` (runs that outlived
    /// their worker: the new one keeps their jobs busy and renews their
    /// leases until they are gone). Returns (job, scheduled time, run id)
    /// of each fire recorded lost.
    pub fn lose_predecessors(
        &mut self,
        below: u64,
        alive: &[u64],
    ) -> Result<Vec<(String, Timestamp, u64)>, LedgerError> {
        let host = self.host.clone();
        let alive: Vec<i64> = alive.iter().map(|&i| i as i64).collect();
        let rows = self
            .client()
            .query(
                &format!(
                    "UPDATE cw_fires SET state = 'lost', outcome = 'lost', finished = now(),
                         lease_until = NULL, lost_by = $1
                     WHERE host = $1 AND state = 'running' AND run_id < $2 AND NOT (run_id = ANY($3))
                     RETURNING job, {}, run_id",
                    us("scheduled_for")
                ),
                &[&host, &(below.min(i64::MAX as u64) as i64), &alive],
            )
            .map_err(|e| LedgerError::db("record the previous worker's runs lost", e))?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), ts_of(r.get(1)), r.get::<_, i64>(2) as u64))
            .collect())
    }
}
