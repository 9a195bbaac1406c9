//! `cronwarden alerts`: open alerts or the whole history (one shape for
//! both, see `Alert::resolved_at`), and the results of `alerts test`.

use std::io::Write;

use cronwarden_shared::status::Alert;
use jiff::Timestamp;
use serde_json::Value;

use super::{relative, table};

/// `cronwarden alerts [--all]`.
pub(crate) fn alerts(
    out: &mut dyn Write,
    alerts: &[Alert],
    now: Timestamp,
    color: bool,
) -> std::io::Result<u8> {
    if alerts.is_empty() {
        writeln!(out, "no alerts")?;
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = alerts
        .iter()
        .map(|a| {
            vec![
                a.severity.as_str().to_string(),
                a.kind.to_string(),
                a.job.clone().unwrap_or_else(|| "-".into()),
                relative(Some(a.opened_at), now),
                match a.resolved_at {
                    Some(t) => format!("resolved {}", relative(Some(t), now)),
                    None => "open".into(),
                },
                a.summary.clone(),
            ]
        })
        .collect();
    table(
        out,
        &["SEVERITY", "KIND", "JOB", "OPENED", "STATE", "SUMMARY"],
        &rows,
        &[0, 4],
        color,
    )?;
    Ok(0)
}

/// `cronwarden alerts test`: one line per sink; exit 1 if any failed.
///
/// The reply (`{"ok", "sinks": {name: {"ok", "error"}}, "configured"}`)
/// has no type in the shared crate yet: the supervisor builds it ad hoc.
pub(crate) fn test_results(out: &mut dyn Write, v: &Value) -> std::io::Result<u8> {
    let sinks = v["sinks"].as_object().cloned().unwrap_or_default();
    if sinks.is_empty() {
        writeln!(
            out,
            "no alert sinks are configured; alerts go to the log and the status only"
        )?;
    }
    for (name, r) in &sinks {
        match r["ok"].as_bool() {
            Some(true) => writeln!(out, "{name}: delivered")?,
            _ => writeln!(
                out,
                "{name}: FAILED: {}",
                r["error"].as_str().unwrap_or("?")
            )?,
        }
    }
    Ok(if v["ok"] == true || sinks.is_empty() {
        0
    } else {
        1
    })
}
