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
                    // Several hosts: the one that delivers it.
                    None => match &a.owner {
                        Some(h) => format!("open, owner {h}"),
                        None => "open".into(),
                    },
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

#[cfg(test)]
mod tests {
    use cronwarden_shared::status::{AlertNotice, Severity};
    use serde_json::json;

    use super::*;

    /// `alerts --all` is served from the history, as `AlertNotice`s: the
    /// extra fields must not stop them decoding as `Alert`s.
    #[test]
    fn the_history_reads_as_alerts() {
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        let notice = AlertNotice {
            event: "resolved".into(),
            kind: cronwarden_shared::alert_kind::AlertKind::JobFailing,
            job: Some("backup".into()),
            severity: Severity::Critical,
            summary: "backup failed 3 times in a row".into(),
            opened_at: at("2026-12-01T10:00:00Z"),
            resolved_at: Some(at("2026-12-01T11:00:00Z")),
            host: "db1".into(),
            details: json!({ "failures": 3 }),
        };
        let body = serde_json::to_vec(&[notice]).unwrap();
        let history: Vec<Alert> = serde_json::from_slice(&body).unwrap();
        let mut out = vec![];
        alerts(&mut out, &history, at("2026-12-01T12:00:00Z"), false).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "SEVERITY  KIND         JOB     OPENED  STATE            SUMMARY\n\
             critical  job_failing  backup  2h ago  resolved 1h ago  backup failed 3 times in a row\n"
        );
    }

    /// Several hosts: an open alert of a job's fires names the host that
    /// delivers it.
    #[test]
    fn an_open_alert_names_its_owner() {
        let open: Vec<Alert> = serde_json::from_value(json!([{
            "kind": "job_late", "job": "tick", "severity": "warning",
            "opened_at": "2026-12-01T11:00:00Z", "resolved_at": null,
            "summary": "tick is late", "owner": "h1"
        }]))
        .unwrap();
        let mut out = vec![];
        let now = "2026-12-01T12:00:00Z".parse().unwrap();
        alerts(&mut out, &open, now, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("  open, owner h1  tick is late"), "{text}");
    }
}
