//! `cronwarden check`'s view of a valid config: each job with its schedule
//! in words and its next fires, for people; and `check --json`, where the
//! shape is built here (it is the CLI's own output, not a socket reply).
//!
//! A job that runs as under cron (`timeout = "none"`, `overlap = "allow"`,
//! as `import` writes them) gets a line that says so and names the safer
//! choice: an explanation on stdout, not a warning. Such a job chose it
//! explicitly (no timeout must be spelt out), so it is not a surprise.

use std::io::Write;

use cronwarden_shared::{
    config::{Config, ConfigError, ConfigErrors, JobSpec, Overlap},
    timefmt::rfc3339_in,
};
use jiff::Timestamp;
use serde_json::Value;

use super::relative;
use crate::cli::explain::explain;

/// How many next fires `check` shows per job, in both forms.
pub(crate) const FIRES: usize = 3;

/// One job as `check` shows it: name, expression, the schedule in words,
/// then its next fires with how far away they are.
pub(crate) fn check_job(
    out: &mut dyn Write,
    job: &JobSpec,
    now: Timestamp,
    fires: usize,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{}  {:?}  {}",
        job.name,
        job.schedule.expr(),
        explain(&job.schedule, &job.timezone)
    )?;
    if let Some(note) = cron_like(job) {
        writeln!(out, "  {note}")?;
    }
    for t in next_fires(job, now, fires) {
        writeln!(
            out,
            "  {}  {}",
            rfc3339_in(t, job.schedule.timezone()),
            relative(Some(t), now)
        )?;
    }
    Ok(())
}

/// What a job that runs as under cron gives up, and the safer choice.
pub(crate) fn cron_like(job: &JobSpec) -> Option<String> {
    let (mut kept, mut safer) = (vec![], vec![]);
    if job.timeout.is_none() {
        kept.push("no time limit");
        safer.push("timeout = \"1h\"");
    }
    if job.overlap == Overlap::Allow {
        kept.push("runs may overlap");
        safer.push("overlap = \"skip\"");
    }
    (!kept.is_empty()).then(|| {
        format!(
            "as under cron: {} (safer: {})",
            kept.join(", "),
            safer.join(", ")
        )
    })
}

/// A job's next `n` fires after `now` (an `@every` cadence starting on
/// the next whole second, as a fresh worker arms it).
fn next_fires(job: &JobSpec, now: Timestamp, n: usize) -> Vec<Timestamp> {
    let mut t = now;
    let mut out = vec![];
    for _ in 0..n {
        match job.schedule.next_after(t, None) {
            Some(next) => {
                out.push(next);
                t = next;
            }
            None => break,
        }
    }
    out
}

/// A config error or warning as `check --json` reports it.
fn error_json(e: &ConfigError) -> Value {
    serde_json::json!({ "file": e.file, "job": e.job, "key": e.key, "message": e.message })
}

/// `check --json` of a valid config: its jobs (with the explanation and
/// next fires) and the lint warnings.
pub(crate) fn check_json(config: &Config, warnings: &[ConfigError], now: Timestamp) -> Value {
    let jobs: Vec<Value> = config
        .jobs
        .iter()
        .map(|j| {
            let next: Vec<String> = next_fires(j, now, FIRES)
                .into_iter()
                .map(|t| rfc3339_in(t, j.schedule.timezone()))
                .collect();
            serde_json::json!({
                "name": j.name,
                "file": config.file_of(&j.name),
                "schedule": j.schedule.expr(),
                "timezone": j.timezone,
                "explanation": explain(&j.schedule, &j.timezone),
                "note": cron_like(j),
                "next": next,
            })
        })
        .collect();
    let warnings: Vec<Value> = warnings.iter().map(error_json).collect();
    serde_json::json!({
        "file": config.path,
        "dropins": config.dropins,
        "ok": true,
        "jobs": jobs,
        "warnings": warnings,
    })
}

/// `check --json` of an invalid config: every error.
pub(crate) fn check_errors_json(path: &std::path::Path, errors: &ConfigErrors) -> Value {
    let errors: Vec<Value> = errors.0.iter().map(error_json).collect();
    serde_json::json!({ "file": path, "ok": false, "errors": errors })
}
