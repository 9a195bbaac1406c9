//! `cronwarden runs JOB`: a job's records, newest first, skipped fires
//! included with their reason.

use std::{io::Write, time::Duration};

use cronwarden_shared::{
    status::{RunRecord, SkipReason},
    timefmt::human_duration,
};
use jiff::Timestamp;

use super::{relative, table};

/// `cronwarden runs JOB`.
pub(crate) fn runs(
    out: &mut dyn Write,
    runs: &[RunRecord],
    now: Timestamp,
    color: bool,
) -> std::io::Result<u8> {
    if runs.is_empty() {
        writeln!(out, "no runs")?;
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let outcome = match r.skip_reason {
                Some(reason) => format!("skipped ({})", reason_word(reason)),
                None => r.outcome.as_str().to_string(),
            };
            let exit = match (r.exit_code, r.signal) {
                (Some(c), _) => format!("exit {c}"),
                (_, Some(sig)) => format!("signal {sig}"),
                _ => "-".into(),
            };
            vec![
                r.id.to_string(),
                relative(r.scheduled_at.or(r.started_at), now),
                r.trigger.as_str().to_string(),
                outcome,
                exit,
                r.duration_ms
                    .map(|d| human_duration(Duration::from_millis(d)))
                    .unwrap_or_else(|| "-".into()),
                format!("{}/{}", r.stdout_bytes, r.stderr_bytes),
            ]
        })
        .collect();
    table(
        out,
        &[
            "RUN",
            "SCHEDULED",
            "TRIGGER",
            "OUTCOME",
            "EXIT",
            "TOOK",
            "OUT/ERR BYTES",
        ],
        &rows,
        &[3],
        color,
    )?;
    Ok(0)
}

/// The reason as the JSON names it: asked of serde, so the words shown
/// here and the ones `--json` prints come from one list.
fn reason_word(reason: SkipReason) -> String {
    match serde_json::to_value(reason) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{reason:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_reasons_read_as_the_json_names_them() {
        assert_eq!(reason_word(SkipReason::WorkerDown), "worker_down");
        assert_eq!(reason_word(SkipReason::Overlap), "overlap");
    }
}
