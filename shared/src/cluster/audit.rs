//! Reading the shared ledger back: the fires of a window, and the audit
//! across hosts of one job's fires (`cronwarden cluster` for every job,
//! `cronwarden audit JOB` for one): every scheduled time has exactly one
//! row (the primary key makes a second one impossible), none is missing,
//! none is stuck `running` with its lease run out.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};

use super::{ts, ts_of, us, Ledger, LedgerError};
use crate::schedule::Schedule;

/// Missing times listed per job at most (the count says how many).
pub const LIST_AT_MOST: usize = 20;
/// The most scheduled times computed per job (a day of a per-second job
/// fits).
pub const MAX_EXPECTED: usize = 100_000;

/// One row of `cw_fires`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FireRow {
    pub job: String,
    pub scheduled_for: Timestamp,
    pub host: String,
    pub run_id: u64,
    /// `running`, `finished`, `skipped`, `lost`.
    pub state: String,
    pub outcome: Option<String>,
    /// The peer that recorded it lost, if one did.
    pub lost_by: Option<String>,
    /// `running` with its lease run out and no peer beat since to record
    /// it lost (every host is down, or none beats).
    pub lease_expired: bool,
}

/// At most this many rows are read for one audit.
pub const MAX_ROWS: i64 = 200_000;

impl Ledger {
    /// The fires scheduled in `[from, to]` (of `job`, or of every job), by
    /// job and time (at most [`MAX_ROWS`]).
    pub fn fires(
        &mut self,
        job: Option<&str>,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<FireRow>, LedgerError> {
        let rows = self
            .client()
            .query(
                &format!(
                    "SELECT job, {}, host, run_id, state, outcome, lost_by,
                        state = 'running' AND lease_until < now()
                     FROM cw_fires WHERE scheduled_for BETWEEN {} AND {}
                       AND ($4::text IS NULL OR job = $4)
                     ORDER BY job, scheduled_for LIMIT $3",
                    us("scheduled_for"),
                    ts(1),
                    ts(2)
                ),
                &[
                    &from.as_microsecond(),
                    &to.as_microsecond(),
                    &MAX_ROWS,
                    &job,
                ],
            )
            .map_err(|e| LedgerError::db("read the fires", e))?;
        Ok(rows
            .iter()
            .map(|r| FireRow {
                job: r.get(0),
                scheduled_for: ts_of(r.get(1)),
                host: r.get(2),
                run_id: r.get::<_, i64>(3) as u64,
                state: r.get(4),
                outcome: r.get(5),
                lost_by: r.get(6),
                // NULL for a running row without a lease (written by
                // hand or by an older build): not expired, not a panic.
                lease_expired: r.get::<_, Option<bool>>(7).unwrap_or(false),
            })
            .collect())
    }
}

/// One job's fires in a window, judged across hosts.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct JobAudit {
    pub job: String,
    pub expected: usize,
    /// Rows by state (`finished`, `running`, `lost`, `skipped`).
    pub states: BTreeMap<String, usize>,
    /// Runs by host.
    pub hosts: BTreeMap<String, usize>,
    pub missing: usize,
    pub missing_first: Vec<Timestamp>,
    /// Rows for times the schedule does not have (a changed schedule).
    pub unexpected: usize,
    /// `running` with the lease run out and nobody to record it lost.
    pub stale: Vec<FireRow>,
    /// The expected times were cut at [`MAX_EXPECTED`].
    pub truncated: bool,
}

impl JobAudit {
    /// Exactly once: every scheduled time has its one row, and none is
    /// stuck running.
    pub fn ok(&self) -> bool {
        self.missing == 0 && self.stale.is_empty()
    }
}

/// Audits the rows of job `name` (any host, any order) against its
/// `schedule` over `[from, to]`.
pub fn audit_job(
    name: &str,
    schedule: &Schedule,
    from: Timestamp,
    to: Timestamp,
    rows: &[&FireRow],
) -> JobAudit {
    let mut expected = vec![];
    // The first time at or after `from`.
    let mut cursor = from
        .checked_sub(SignedDuration::from_nanos(1))
        .ok()
        .and_then(|f| schedule.next_after(f, None));
    while let Some(t) = cursor.filter(|t| *t <= to) {
        if expected.len() >= MAX_EXPECTED {
            break;
        }
        expected.push(t);
        cursor = schedule.next_after(t, Some(t));
    }
    let truncated = expected.len() >= MAX_EXPECTED;
    let have: BTreeSet<Timestamp> = rows.iter().map(|r| r.scheduled_for).collect();
    let missing: Vec<Timestamp> = expected
        .iter()
        .copied()
        .filter(|t| !have.contains(t))
        .collect();
    let expected_set: BTreeSet<Timestamp> = expected.iter().copied().collect();
    let mut states = BTreeMap::new();
    let mut hosts = BTreeMap::new();
    for r in rows {
        *states.entry(r.state.clone()).or_default() += 1;
        if r.state != "skipped" {
            *hosts.entry(r.host.clone()).or_default() += 1;
        }
    }
    JobAudit {
        job: name.to_string(),
        expected: expected.len(),
        states,
        hosts,
        missing: missing.len(),
        missing_first: missing.into_iter().take(LIST_AT_MOST).collect(),
        unexpected: rows
            .iter()
            .filter(|r| !expected_set.contains(&r.scheduled_for))
            .count(),
        stale: rows
            .iter()
            .filter(|r| r.lease_expired)
            .map(|r| (*r).clone())
            .collect(),
        truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(at: &str, host: &str, state: &str, lease_expired: bool) -> FireRow {
        FireRow {
            job: "j".into(),
            scheduled_for: at.parse().unwrap(),
            host: host.into(),
            run_id: 1,
            state: state.into(),
            outcome: None,
            lost_by: None,
            lease_expired,
        }
    }

    #[test]
    fn every_time_once_is_ok_and_a_gap_or_a_stale_run_is_not() {
        let s = Schedule::parse("0 * * * *", &jiff::tz::TimeZone::UTC).unwrap();
        let (from, to) = (
            "2026-12-01T00:00:00Z".parse().unwrap(),
            "2026-12-01T02:00:00Z".parse().unwrap(),
        );
        let rows = [
            row("2026-12-01T00:00:00Z", "a", "finished", false),
            row("2026-12-01T01:00:00Z", "b", "lost", false),
            row("2026-12-01T02:00:00Z", "a", "skipped", false),
        ];
        let refs: Vec<&FireRow> = rows.iter().collect();
        let a = audit_job("j", &s, from, to, &refs);
        assert!(a.ok(), "{a:?}");
        assert_eq!(a.expected, 3);
        assert_eq!(a.hosts, BTreeMap::from([("a".into(), 1), ("b".into(), 1)]));
        let gap = audit_job("j", &s, from, to, &refs[..2]);
        assert!(!gap.ok() && gap.missing == 1, "{gap:?}");
        let stale = row("2026-12-01T02:00:00Z", "a", "running", true);
        let refs = [&rows[0], &rows[1], &stale];
        let a = audit_job("j", &s, from, to, &refs);
        assert!(!a.ok() && a.stale.len() == 1, "{a:?}");
    }
}
