//! What the CLI prints for people: aligned tables, relative times ("in
//! 3m 20s", "2h 5m ago") and state words in colour.
//!
//! Colour is decided once, by [`color_enabled`]: only when stdout is a
//! terminal and `NO_COLOR` is unset or empty (`CLICOLOR_FORCE` forces it,
//! e.g. for a pager; `NO_COLOR` still wins). Column widths are computed on
//! the plain text, so a coloured table lines up exactly as a plain one, and
//! a plain one contains no escape code at all. `--json` output never comes
//! through here: programs get the socket's JSON unchanged.

use std::{io::Write, time::Duration};

use jiff::Timestamp;
use serde_json::Value;

use cronwarden_shared::{
    status::StatusReport,
    timefmt::{human_duration, rfc3339_in},
};

/// Whether to colour: `NO_COLOR` (non-empty) never, `CLICOLOR_FORCE`
/// (non-empty, not `0`) always, otherwise only on a terminal.
pub(crate) fn color_enabled(
    stdout_is_tty: bool,
    no_color: Option<&str>,
    force: Option<&str>,
) -> bool {
    if no_color.is_some_and(|v| !v.is_empty()) {
        return false;
    }
    if force.is_some_and(|v| !v.is_empty() && v != "0") {
        return true;
    }
    stdout_is_tty
}

/// The ANSI colour a state word is shown in, if any.
fn paint(word: &str) -> Option<&'static str> {
    Some(match word {
        "ok" | "success" | "delivered" | "holds" => "32",
        "running" => "36",
        "degraded" | "late" | "paused" | "killed" | "skipped" | "warning" | "open" => "33",
        "stalled" | "down" | "failing" | "wedged" | "failed" | "timeout" | "lost" | "critical"
        | "BROKEN" | "FAILED" => "31",
        _ => return None,
    })
}

/// A word in its colour (first word decides: "skipped (overlap)").
pub(crate) fn colored(text: &str, color: bool) -> String {
    let first = text.split_whitespace().next().unwrap_or_default();
    match paint(first).filter(|_| color) {
        Some(code) => format!("\x1b[{code}m{text}\x1b[0m"),
        None => text.to_string(),
    }
}

/// An aligned table: columns two spaces apart, widths from the plain text;
/// the cells of the `painted` columns are coloured after padding.
pub(crate) fn table(
    out: &mut dyn Write,
    header: &[&str],
    rows: &[Vec<String>],
    painted: &[usize],
    color: bool,
) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let head: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for (i, row) in std::iter::once(&head).chain(rows).enumerate() {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (col, (c, w)) in row.iter().zip(&widths).enumerate() {
            if col > 0 {
                line.push_str("  ");
            }
            let pad = if col == last {
                String::new()
            } else {
                " ".repeat(w.saturating_sub(c.chars().count()))
            };
            if i > 0 && painted.contains(&col) {
                line.push_str(&colored(c, color));
            } else {
                line.push_str(c);
            }
            line.push_str(&pad);
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// "in 3m", "in 3m 20s", "2h 5m ago", "-" when there is no time.
pub(crate) fn relative(t: Option<Timestamp>, now: Timestamp) -> String {
    let Some(t) = t else { return "-".into() };
    let d = t.duration_since(now);
    let abs = Duration::try_from(d.abs()).unwrap_or_default();
    // Whole seconds are enough for people; "3m 0s" reads as "3m".
    let text =
        human_duration(Duration::from_secs(abs.as_secs()).max(abs.min(Duration::from_secs(1))));
    let text = text
        .strip_suffix(" 0s")
        .or_else(|| text.strip_suffix(" 0m"))
        .or_else(|| text.strip_suffix(" 0h"))
        .unwrap_or(&text)
        .to_string();
    if d.is_negative() {
        format!("{text} ago")
    } else {
        format!("in {text}")
    }
}

fn ago(ms: Option<u64>) -> String {
    ms.map(|ms| format!("{} ago", human_duration(Duration::from_millis(ms))))
        .unwrap_or_else(|| "never".into())
}

fn ts(v: &Value) -> Option<Timestamp> {
    v.as_str().and_then(|s| s.parse().ok())
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// `cronwarden jobs`.
pub(crate) fn jobs(
    out: &mut dyn Write,
    v: &Value,
    now: Timestamp,
    color: bool,
) -> std::io::Result<u8> {
    let rows: Vec<Vec<String>> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|j| {
            let last = &j["last_run"];
            vec![
                s(&j["name"]),
                s(&j["state"]),
                s(&j["schedule"]),
                relative(ts(&j["next_fire_at"]), now),
                if last.is_null() {
                    "-".into()
                } else {
                    s(&last["outcome"])
                },
                if last.is_null() {
                    "-".into()
                } else {
                    relative(ts(&last["finished_at"]).or(ts(&last["started_at"])), now)
                },
            ]
        })
        .collect();
    if rows.is_empty() {
        writeln!(out, "no jobs")?;
        return Ok(0);
    }
    table(
        out,
        &["JOB", "STATE", "SCHEDULE", "NEXT", "LAST RUN", "ENDED"],
        &rows,
        &[1, 4],
        color,
    )?;
    Ok(0)
}

/// `cronwarden runs JOB`.
pub(crate) fn runs(
    out: &mut dyn Write,
    v: &Value,
    now: Timestamp,
    color: bool,
) -> std::io::Result<u8> {
    let rows: Vec<Vec<String>> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let outcome = match r["skip_reason"].as_str() {
                Some(reason) => format!("skipped ({reason})"),
                None => s(&r["outcome"]),
            };
            let exit = match (r["exit_code"].as_i64(), r["signal"].as_i64()) {
                (Some(c), _) => format!("exit {c}"),
                (_, Some(sig)) => format!("signal {sig}"),
                _ => "-".into(),
            };
            vec![
                r["id"].to_string(),
                relative(ts(&r["scheduled_at"]).or(ts(&r["started_at"])), now),
                s(&r["trigger"]),
                outcome,
                exit,
                r["duration_ms"]
                    .as_u64()
                    .map(|d| human_duration(Duration::from_millis(d)))
                    .unwrap_or_else(|| "-".into()),
                format!("{}/{}", r["stdout_bytes"], r["stderr_bytes"]),
            ]
        })
        .collect();
    if rows.is_empty() {
        writeln!(out, "no runs")?;
        return Ok(0);
    }
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

/// `cronwarden alerts`.
pub(crate) fn alerts(
    out: &mut dyn Write,
    v: &Value,
    now: Timestamp,
    color: bool,
) -> std::io::Result<u8> {
    let rows: Vec<Vec<String>> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            vec![
                s(&a["severity"]),
                s(&a["kind"]),
                a["job"].as_str().unwrap_or("-").to_string(),
                relative(ts(&a["opened_at"]), now),
                match ts(&a["resolved_at"]) {
                    Some(t) => format!("resolved {}", relative(Some(t), now)),
                    None => "open".into(),
                },
                s(&a["summary"]),
            ]
        })
        .collect();
    if rows.is_empty() {
        writeln!(out, "no alerts")?;
        return Ok(0);
    }
    table(
        out,
        &["SEVERITY", "KIND", "JOB", "OPENED", "STATE", "SUMMARY"],
        &rows,
        &[0, 4],
        color,
    )?;
    Ok(0)
}

/// `cronwarden audit JOB`; the exit code is the verdict.
pub(crate) fn audit(out: &mut dyn Write, v: &Value, color: bool) -> std::io::Result<u8> {
    let ok = v["ok"] == Value::Bool(true);
    writeln!(
        out,
        "{}: {} scheduled time(s) from {} to {}: {} record(s)",
        s(&v["job"]),
        v["expected"],
        s(&v["from"]),
        s(&v["to"]),
        v["records"]
    )?;
    if let Some(o) = v["outcomes"].as_object() {
        let parts: Vec<String> = o.iter().map(|(k, n)| format!("{k} {n}")).collect();
        writeln!(out, "  outcomes: {}", parts.join(", "))?;
    }
    for key in ["missing", "duplicated", "unexpected"] {
        let list = v[key].as_array().cloned().unwrap_or_default();
        if !list.is_empty() {
            let shown: Vec<String> = list
                .iter()
                .take(10)
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect();
            let more = if list.len() > 10 { ", …" } else { "" };
            writeln!(out, "  {key}: {} ({}{more})", list.len(), shown.join(", "))?;
        }
    }
    writeln!(
        out,
        "  invariant {}",
        colored(if ok { "holds" } else { "BROKEN" }, color)
    )?;
    Ok(if ok { 0 } else { 1 })
}

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
    let rows: Vec<Vec<String>> = r
        .jobs
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
    )?;
    if !r.alerts.is_empty() {
        writeln!(out)?;
        let rows: Vec<Vec<String>> = r
            .alerts
            .iter()
            .map(|a| {
                vec![
                    format!("{:?}", a.severity).to_lowercase(),
                    a.kind.clone(),
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

/// One job as `check` shows it: name, expression, the schedule in words,
/// then its next fires with how far away they are.
pub(crate) fn check_job(
    out: &mut dyn Write,
    job: &cronwarden_shared::config::JobSpec,
    now: Timestamp,
    fires: usize,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{}  {:?}  {}",
        job.name,
        job.schedule.expr(),
        super::explain::explain(&job.schedule, &job.timezone)
    )?;
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

/// A job's next `n` fires after `now` (an `@every` cadence starting on
/// the next whole second, as a fresh worker arms it).
pub(crate) fn next_fires(
    job: &cronwarden_shared::config::JobSpec,
    now: Timestamp,
    n: usize,
) -> Vec<Timestamp> {
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
fn error_json(e: &cronwarden_shared::config::ConfigError) -> Value {
    serde_json::json!({ "file": e.file, "job": e.job, "key": e.key, "message": e.message })
}

/// `check --json` of a valid config: its jobs (with the explanation and
/// next fires) and the lint warnings.
pub(crate) fn check_json(
    config: &cronwarden_shared::config::Config,
    warnings: &[cronwarden_shared::config::ConfigError],
    now: Timestamp,
) -> Value {
    let jobs: Vec<Value> = config
        .jobs
        .iter()
        .map(|j| {
            let next: Vec<String> = next_fires(j, now, 3)
                .into_iter()
                .map(|t| rfc3339_in(t, j.schedule.timezone()))
                .collect();
            serde_json::json!({
                "name": j.name,
                "schedule": j.schedule.expr(),
                "timezone": j.timezone,
                "explanation": super::explain::explain(&j.schedule, &j.timezone),
                "next": next,
            })
        })
        .collect();
    let warnings: Vec<Value> = warnings.iter().map(error_json).collect();
    serde_json::json!({ "file": config.path, "ok": true, "jobs": jobs, "warnings": warnings })
}

/// `check --json` of an invalid config: every error.
pub(crate) fn check_errors_json(
    path: &std::path::Path,
    errors: &cronwarden_shared::config::ConfigErrors,
) -> Value {
    let errors: Vec<Value> = errors.0.iter().map(error_json).collect();
    serde_json::json!({ "file": path, "ok": false, "errors": errors })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(color_enabled(true, None, None));
        assert!(!color_enabled(false, None, None));
        assert!(!color_enabled(true, Some("1"), None));
        // An empty NO_COLOR does not count (no-color.org).
        assert!(color_enabled(true, Some(""), None));
        assert!(color_enabled(false, None, Some("1")));
        assert!(!color_enabled(false, None, Some("0")));
        assert!(!color_enabled(false, Some("1"), Some("1")));
    }

    #[test]
    fn coloured_tables_align_like_plain_ones() {
        let rows = vec![
            vec!["backup".to_string(), "failing".into(), "in 3m".into()],
            vec!["x".to_string(), "ok".into(), "2h 5m ago".into()],
        ];
        let render = |color| {
            let mut buf = vec![];
            table(&mut buf, &["JOB", "STATE", "NEXT"], &rows, &[1], color).unwrap();
            String::from_utf8(buf).unwrap()
        };
        let plain = render(false);
        assert_eq!(
            plain,
            "JOB     STATE    NEXT\nbackup  failing  in 3m\nx       ok       2h 5m ago\n"
        );
        let coloured = render(true);
        assert!(coloured.contains("\x1b[31mfailing\x1b[0m"), "{coloured:?}");
        let stripped = coloured
            .replace("\x1b[31m", "")
            .replace("\x1b[32m", "")
            .replace("\x1b[0m", "");
        assert_eq!(stripped, plain);
    }

    #[test]
    fn relative_times() {
        let now: Timestamp = "2026-12-01T12:00:00Z".parse().unwrap();
        let at = |s: &str| Some(s.parse::<Timestamp>().unwrap());
        assert_eq!(relative(at("2026-12-01T12:03:00Z"), now), "in 3m");
        assert_eq!(relative(at("2026-12-01T12:03:20.5Z"), now), "in 3m 20s");
        assert_eq!(relative(at("2026-12-01T11:59:59.9Z"), now), "100ms ago");
        assert_eq!(relative(at("2026-12-01T09:55:00Z"), now), "2h 5m ago");
        assert_eq!(relative(None, now), "-");
    }
}
