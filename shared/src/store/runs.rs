//! The `runs` table: writing a record, reading and pruning them, and the
//! text forms of a record's enums.

use jiff::Timestamp;
use rusqlite::params;

use super::{ts_parse, ts_text, Store, StoreError};
use crate::status::{Containment, Outcome, RunRecord, SkipReason, Trigger};

impl Store {
    /// Deletes a job's runs beyond the newest `keep`; bounded work per call.
    pub fn prune(&mut self, job: &str, keep: u32) -> Result<usize, StoreError> {
        self.conn
            .execute(
                "DELETE FROM runs WHERE id IN (SELECT id FROM runs WHERE job = ?1 AND outcome != 'running' ORDER BY id DESC LIMIT 5000 OFFSET ?2)",
                params![job, keep as i64],
            )
            .map_err(self.sql("pruning runs"))
    }

    /// The jobs with more records than `keep` says they keep (`None`: the
    /// job keeps them all), from one scan of the `(job, id)` index instead
    /// of a prune per job. Records still running are counted, so a job may
    /// be named whose prune then deletes nothing, never the other way round.
    pub fn jobs_over_retention(
        &self,
        keep: impl Fn(&str) -> Option<u32>,
    ) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT job, COUNT(*) FROM runs GROUP BY job")
            .map_err(self.sql("counting runs per job"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(self.sql("counting runs per job"))?;
        let mut over = vec![];
        for row in rows {
            let (job, n) = row.map_err(self.sql("counting runs per job"))?;
            if keep(&job).is_some_and(|k| n > i64::from(k)) {
                over.push(job);
            }
        }
        Ok(over)
    }

    /// A job's runs, newest first.
    pub fn runs(&self, job: &str, limit: u32) -> Result<Vec<RunRecord>, StoreError> {
        self.query_runs(
            "WHERE job = ?1 ORDER BY id DESC LIMIT ?2",
            params![job, limit as i64],
        )
    }

    /// Run `id` of a job, or (`None`) its newest run that started (skipped
    /// fires are records too, but have no output); `None` when there is none.
    pub fn run(&self, job: &str, id: Option<u64>) -> Result<Option<RunRecord>, StoreError> {
        let found = match id {
            Some(id) => self.query_runs("WHERE job = ?1 AND id = ?2", params![job, id as i64]),
            None => self.query_runs(
                "WHERE job = ?1 AND started_at IS NOT NULL ORDER BY id DESC LIMIT 1",
                params![job],
            ),
        };
        found.map(|v| v.into_iter().next())
    }

    /// Every record of a job whose scheduled time (or a covered time) may fall in
    /// `[from, to]`, oldest first, for the audit.
    pub fn runs_between(
        &self,
        job: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<RunRecord>, StoreError> {
        // Coalesced runs are stamped with their latest covered time, which
        // is never earlier than the times they cover.
        self.query_runs(
            "WHERE job = ?1 AND scheduled_at >= ?2 ORDER BY id",
            params![job, ts_text(from)],
        )
        .map(|v| {
            v.into_iter()
                .filter(|r| {
                    r.covers.iter().any(|c| *c <= to) || r.scheduled_at.is_some_and(|s| s <= to)
                })
                .collect()
        })
    }

    pub(super) fn query_runs<P: rusqlite::Params>(
        &self,
        tail: &str,
        p: P,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let sql = format!(
            "SELECT id, job, scheduled_at, covers, trigger, started_at, finished_at, outcome, skip_reason, exit_code, signal, duration_ms, stdout_bytes, stderr_bytes, error, stdout_tail, stderr_tail, containment, may_repeat FROM runs {tail}"
        );
        let mut st = self
            .conn
            .prepare_cached(&sql)
            .map_err(self.sql("reading runs"))?;
        let rows = st
            .query_map(p, |r| {
                let covers: String = r.get(3)?;
                Ok(RunRecord {
                    id: r.get::<_, i64>(0)? as u64,
                    job: r.get(1)?,
                    scheduled_at: ts_parse(r.get(2)?),
                    covers: serde_json::from_str(&covers).unwrap_or_default(),
                    trigger: parse_trigger(&r.get::<_, String>(4)?),
                    started_at: ts_parse(r.get(5)?),
                    finished_at: ts_parse(r.get(6)?),
                    outcome: parse_outcome(&r.get::<_, String>(7)?),
                    skip_reason: parse_skip(r.get(8)?),
                    exit_code: r.get(9)?,
                    signal: r.get(10)?,
                    duration_ms: r.get::<_, Option<i64>>(11)?.map(|v| v as u64),
                    stdout_bytes: r.get::<_, i64>(12)? as u64,
                    stderr_bytes: r.get::<_, i64>(13)? as u64,
                    error: r.get(14)?,
                    stdout_tail: r.get(15)?,
                    stderr_tail: r.get(16)?,
                    contain: containment_parse(r.get(17)?),
                    may_repeat: r.get::<_, i64>(18)? != 0,
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(self.sql("reading runs"))?;
        Ok(rows)
    }
}

pub(super) fn insert_run(tx: &rusqlite::Transaction<'_>, r: &RunRecord) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO runs (id, job, scheduled_at, covers, trigger, started_at, finished_at, outcome, skip_reason, exit_code, signal, duration_ms, stdout_bytes, stderr_bytes, error, stdout_tail, stderr_tail, may_repeat) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
    )?
    .execute(params![
        r.id as i64,
        r.job,
        r.scheduled_at.map(ts_text),
        serde_json::to_string(&r.covers).unwrap_or_else(|_| "[]".into()),
        r.trigger.as_str(),
        r.started_at.map(ts_text),
        r.finished_at.map(ts_text),
        r.outcome.as_str(),
        skip_text(r.skip_reason),
        r.exit_code,
        r.signal,
        r.duration_ms.map(|d| d as i64),
        r.stdout_bytes as i64,
        r.stderr_bytes as i64,
        r.error,
        r.stdout_tail,
        r.stderr_tail,
        r.may_repeat as i64,
    ])?;
    write_containment(tx, r)
}

/// The run's containment, apart from the main insert: one JSON column, so
/// new figures need no new column.
fn write_containment(tx: &rusqlite::Transaction<'_>, r: &RunRecord) -> rusqlite::Result<()> {
    if r.contain == Containment::default() {
        return Ok(());
    }
    let json = serde_json::to_string(&r.contain).unwrap_or_default();
    tx.prepare_cached("UPDATE runs SET containment = ?2 WHERE id = ?1")?
        .execute(params![r.id as i64, json])?;
    Ok(())
}

fn containment_parse(s: Option<String>) -> Containment {
    s.and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
}

pub(super) fn parse_outcome(s: &str) -> Outcome {
    match s {
        "success" => Outcome::Success,
        "failed" => Outcome::Failed,
        "timeout" => Outcome::Timeout,
        "killed" => Outcome::Killed,
        "skipped" => Outcome::Skipped,
        "running" => Outcome::Running,
        _ => Outcome::Lost,
    }
}

fn skip_text(r: Option<SkipReason>) -> Option<&'static str> {
    r.map(SkipReason::as_str)
}

pub(super) fn parse_skip(s: Option<String>) -> Option<SkipReason> {
    Some(match s?.as_str() {
        "overlap" => SkipReason::Overlap,
        "misfire" => SkipReason::Misfire,
        "paused" => SkipReason::Paused,
        "removed" => SkipReason::Removed,
        "store_unavailable" => SkipReason::StoreUnavailable,
        "peer" => SkipReason::Peer,
        "definition_differs" => SkipReason::DefinitionDiffers,
        _ => SkipReason::WorkerDown,
    })
}

pub(super) fn parse_trigger(s: &str) -> Trigger {
    match s {
        "catchup" => Trigger::Catchup,
        "manual" => Trigger::Manual,
        "retry" => Trigger::Retry,
        _ => Trigger::Schedule,
    }
}
