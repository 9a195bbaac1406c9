//! Claiming a fire: one transaction per run, so exactly one host runs
//! each scheduled time of each job. The transaction inserts a row per
//! scheduled time the run covers (`ON CONFLICT DO NOTHING`: a time another
//! host claimed stays its), advances the job's cursor, and leaves the rows
//! `running` under a lease. Nothing runs before it commits.

use jiff::Timestamp;

use super::{ts, ts_of, us, Ledger, LedgerError};

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
    /// recorded them first.
    Busy { host: String, run_id: u64 },
    /// Most live hosts hold another definition of the job: this host does
    /// not claim it.
    Differs { theirs: String },
}

impl Ledger {
    /// Claims `c` in one transaction (see the module doc).
    pub fn claim(&mut self, c: &Claim) -> Result<ClaimOutcome, LedgerError> {
        if !c.exclusive {
            return self.claim_one_trip(c);
        }
        let host = self.host.clone();
        let lease = self.lease_secs();
        let covers: Vec<i64> = c.covers.iter().map(|t| t.as_microsecond()).collect();
        let newest = covers.iter().copied().max().unwrap_or_default();
        let run_id = c.run_id as i64;
        let db = |what: &'static str| move |e| LedgerError::db(what, e);
        let mut tx = self.client().transaction().map_err(db("begin claim"))?;
        let majority = tx
            .query_opt(
                "SELECT d.hash FROM cw_job_defs d JOIN cw_peers p ON p.host = d.host
                 WHERE d.job = $1 AND p.last_seen > now() - $2 * interval '1 second'
                 GROUP BY d.hash ORDER BY count(*) DESC, min(d.since), d.hash LIMIT 1",
                &[&c.job, &lease],
            )
            .map_err(db("compare job definitions"))?
            .map(|r| r.get::<_, String>(0));
        if let Some(theirs) = majority.filter(|h| *h != c.hash) {
            tx.rollback().map_err(db("end claim"))?;
            return Ok(ClaimOutcome::Differs { theirs });
        }
        if c.exclusive {
            // Two hosts claiming different fires of one exclusive job at
            // once would each see no live run: take turns per job.
            tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&c.job])
                .map_err(db("lock the job"))?;
            let busy = tx
                .query_opt(
                    "SELECT host, run_id FROM cw_fires
                     WHERE job = $1 AND state = 'running' AND lease_until > now() AND host <> $2
                     LIMIT 1",
                    &[&c.job, &host],
                )
                .map_err(db("look for a live run"))?;
            if let Some(r) = busy {
                let (busy_host, busy_run): (String, i64) = (r.get(0), r.get(1));
                tx.execute(
                    &format!(
                        "INSERT INTO cw_fires (job, scheduled_for, host, run_id, state, finished, outcome)
                         SELECT $1, {}, $2, $3, 'skipped', now(), 'overlap'
                         FROM unnest($4::bigint[]) AS u(t) ON CONFLICT DO NOTHING",
                        ts(5).replace("$5", "u.t")
                    ),
                    &[&c.job, &host, &run_id, &covers],
                )
                .map_err(db("record the fire skipped"))?;
                tx.commit().map_err(db("commit claim"))?;
                return Ok(ClaimOutcome::Busy {
                    host: busy_host,
                    run_id: busy_run as u64,
                });
            }
        }
        let won = tx
            .query(
                &format!(
                    "INSERT INTO cw_fires (job, scheduled_for, host, run_id, state, lease_until, started)
                     SELECT $1, {}, $2, $3, 'running', now() + $5 * interval '1 second', now()
                     FROM unnest($4::bigint[]) AS u(t) ON CONFLICT DO NOTHING
                     RETURNING {}",
                    ts(6).replace("$6", "u.t"),
                    us("scheduled_for")
                ),
                &[&c.job, &host, &run_id, &covers, &lease],
            )
            .map_err(db("insert the claim"))?;
        let mut won: Vec<Timestamp> = won.iter().map(|r| ts_of(r.get(0))).collect();
        won.sort();
        if won.is_empty() {
            let holder = tx
                .query_opt(
                    &format!(
                        "SELECT host FROM cw_fires WHERE job = $1 AND scheduled_for = {}",
                        ts(2)
                    ),
                    &[&c.job, &newest],
                )
                .map_err(db("read who claimed the fire"))?
                .map_or_else(String::new, |r| r.get(0));
            tx.rollback().map_err(db("end claim"))?;
            return Ok(ClaimOutcome::Taken { host: holder });
        }
        tx.execute(
            &format!(
                "INSERT INTO cw_cursors (job, last_scheduled) VALUES ($1, {})
                 ON CONFLICT (job) DO UPDATE
                 SET last_scheduled = greatest(cw_cursors.last_scheduled, excluded.last_scheduled)",
                ts(2)
            ),
            &[&c.job, &newest],
        )
        .map_err(db("advance the job's cursor"))?;
        tx.commit().map_err(db("commit claim"))?;
        Ok(ClaimOutcome::Won(won))
    }

    /// The claim of a job without an overlap rule across hosts, as one
    /// statement (atomic by itself, no transaction round trips), prepared
    /// once per connection: the winner's fire waits one round trip.
    fn claim_one_trip(&mut self, c: &Claim) -> Result<ClaimOutcome, LedgerError> {
        let db = |what: &'static str| move |e| LedgerError::db(what, e);
        if self.claim_stmt.is_none() {
            let sql = format!(
                "WITH majority AS (
                     SELECT d.hash FROM cw_job_defs d JOIN cw_peers p ON p.host = d.host
                     WHERE d.job = $1 AND p.last_seen > now() - $5 * interval '1 second'
                     GROUP BY d.hash ORDER BY count(*) DESC, min(d.since), d.hash LIMIT 1
                 ), allowed AS (
                     SELECT NOT EXISTS (SELECT 1 FROM majority WHERE hash <> $6) AS ok
                 ), won AS (
                     INSERT INTO cw_fires (job, scheduled_for, host, run_id, state, lease_until, started)
                     SELECT $1, {}, $2, $3, 'running', now() + $5 * interval '1 second', now()
                     FROM unnest($4::bigint[]) AS u(t), allowed WHERE allowed.ok
                     ON CONFLICT DO NOTHING RETURNING scheduled_for
                 ), cursor AS (
                     INSERT INTO cw_cursors (job, last_scheduled)
                     SELECT $1, max(scheduled_for) FROM won HAVING count(*) > 0
                     ON CONFLICT (job) DO UPDATE
                     SET last_scheduled = greatest(cw_cursors.last_scheduled, excluded.last_scheduled)
                 )
                 SELECT (SELECT ok FROM allowed), (SELECT hash FROM majority),
                        array(SELECT {} FROM won)",
                ts(7).replace("$7", "u.t"),
                us("scheduled_for")
            );
            let stmt = self
                .client()
                .prepare(&sql)
                .map_err(db("prepare the claim"))?;
            self.claim_stmt = Some(stmt);
        }
        let Some(stmt) = self.claim_stmt.clone() else {
            return Err(LedgerError::Schema(
                "the claim statement is not prepared".into(),
            ));
        };
        let host = self.host.clone();
        let covers: Vec<i64> = c.covers.iter().map(|t| t.as_microsecond()).collect();
        let newest = covers.iter().copied().max().unwrap_or_default();
        let lease = self.lease_secs();
        let row = self
            .client()
            .query_one(
                &stmt,
                &[&c.job, &host, &(c.run_id as i64), &covers, &lease, &c.hash],
            )
            .map_err(db("claim the fire"))?;
        let (allowed, majority, won): (bool, Option<String>, Vec<i64>) =
            (row.get(0), row.get(1), row.get(2));
        if !allowed {
            return Ok(ClaimOutcome::Differs {
                theirs: majority.unwrap_or_default(),
            });
        }
        if won.is_empty() {
            return Ok(ClaimOutcome::Taken {
                host: self.holder(&c.job, newest)?,
            });
        }
        let mut won: Vec<Timestamp> = won.into_iter().map(ts_of).collect();
        won.sort();
        Ok(ClaimOutcome::Won(won))
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

    /// Records this host's run `run_id` ended with `outcome` (the record's
    /// word; run ids are unique per host). A run a peer recorded `lost`
    /// while this host was silent is set right: it did run here, once.
    /// Returns how many fire rows it ended (the times the run covered).
    pub fn finish(&mut self, run_id: u64, outcome: &str) -> Result<u64, LedgerError> {
        let host = self.host.clone();
        self.client()
            .execute(
                "UPDATE cw_fires SET state = 'finished', outcome = $3, finished = now(), lease_until = NULL
                 WHERE host = $1 AND run_id = $2 AND state IN ('running', 'lost')",
                &[&host, &(run_id as i64), &outcome],
            )
            .map_err(|e| LedgerError::db("record the run finished", e))
    }
}
