//! `cronwarden status` and `cronwarden jobs`: the supervisor, the worker,
//! the jobs table and the open alerts. `jobs` prints the same table as
//! `status` through [`jobs_table`], so the two can never disagree on what a
//! job's row says.

use std::io::Write;

use cronwarden_shared::status::{JobStatus, StatusReport};
use jiff::Timestamp;

use super::{ago, colored, relative, table};

/// `cronwarden status`.
pub(crate) fn status(
    out: &mut dyn Write,
    r: &StatusReport,
    now: Timestamp,
    color: bool,
) -> std::io::Result<()> {
    writeln!(out, "state: {}", colored(r.state.as_str(), color))?;
    for reason in &r.reasons {
        writeln!(out, "  - {reason}")?;
    }
    writeln!(
        out,
        "supervisor: pid {}, version {}, up since {} ({})",
        r.supervisor.pid,
        r.supervisor.version,
        r.supervisor.started_at,
        relative(Some(r.supervisor.started_at), now)
    )?;
    match r.worker.pid {
        Some(pid) => writeln!(
            out,
            "worker: pid {pid}, restarts {}, heartbeat {}, last good turn {}",
            r.worker.restarts,
            ago(r.worker.heartbeat_age_ms),
            ago(r.worker.last_good_turn_age_ms)
        )?,
        None => writeln!(out, "worker: not running, restarts {}", r.worker.restarts)?,
    }
    jobs_table(out, &r.jobs, now, color)?;
    if !r.alerts.is_empty() {
        writeln!(out)?;
        let rows: Vec<Vec<String>> = r
            .alerts
            .iter()
            .map(|a| {
                vec![
                    a.severity.as_str().to_string(),
                    a.kind.to_string(),
                    a.job.clone().unwrap_or_else(|| "-".into()),
                    relative(Some(a.opened_at), now),
                    a.summary.clone(),
                ]
            })
            .collect();
        table(
            out,
            &["SEVERITY", "ALERT", "JOB", "OPENED", "SUMMARY"],
            &rows,
            &[0],
            color,
        )?;
    }
    Ok(())
}

/// `cronwarden jobs`: the table alone, or "no jobs".
pub(crate) fn jobs(
    out: &mut dyn Write,
    jobs: &[JobStatus],
    now: Timestamp,
    color: bool,
) -> std::io::Result<u8> {
    if jobs.is_empty() {
        writeln!(out, "no jobs")?;
    } else {
        jobs_table(out, jobs, now, color)?;
    }
    Ok(0)
}

/// One row per job: its state, next fire and how its last run ended.
fn jobs_table(
    out: &mut dyn Write,
    jobs: &[JobStatus],
    now: Timestamp,
    color: bool,
) -> std::io::Result<()> {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            let (outcome, ended) = match &j.last_run {
                Some(l) => (
                    l.outcome.as_str().to_string(),
                    relative(l.finished_at.or(l.started_at), now),
                ),
                None => ("-".into(), "-".into()),
            };
            vec![
                j.name.clone(),
                j.state.as_str().into(),
                j.schedule.clone(),
                relative(j.next_fire_at, now),
                outcome,
                ended,
            ]
        })
        .collect();
    table(
        out,
        &["JOB", "STATE", "SCHEDULE", "NEXT", "LAST RUN", "ENDED"],
        &rows,
        &[1, 4],
        color,
    )
}
