//! `cronwarden audit JOB`: the ledger's verdict for people; the exit code
//! is the verdict.

use std::io::Write;

use cronwarden_shared::status::AuditReport;

use super::colored;

/// Listed times per kind of discrepancy; the rest are counted only.
const SHOWN: usize = 10;

/// `cronwarden audit JOB`.
pub(crate) fn audit(out: &mut dyn Write, r: &AuditReport, color: bool) -> std::io::Result<u8> {
    writeln!(
        out,
        "{}: {} scheduled time(s) from {} to {}: {} record(s)",
        r.job, r.expected, r.from, r.to, r.records
    )?;
    let parts: Vec<String> = r.outcomes.iter().map(|(k, n)| format!("{k} {n}")).collect();
    writeln!(out, "  outcomes: {}", parts.join(", "))?;
    for (key, list) in [
        ("missing", &r.missing),
        ("duplicated", &r.duplicated),
        ("unexpected", &r.unexpected),
    ] {
        if !list.is_empty() {
            let shown: Vec<String> = list.iter().take(SHOWN).map(|t| t.to_string()).collect();
            let more = if list.len() > SHOWN { ", …" } else { "" };
            writeln!(out, "  {key}: {} ({}{more})", list.len(), shown.join(", "))?;
        }
    }
    if !r.may_repeat.is_empty() {
        let ids: Vec<String> = r.may_repeat.iter().map(u64::to_string).collect();
        writeln!(
            out,
            "  may repeat: run(s) {} (catch-ups after both processes died while the store \
             failed: a fire they cover may have run before, under the dead worker)",
            ids.join(", ")
        )?;
    }
    writeln!(
        out,
        "  invariant {}",
        colored(if r.ok { "holds" } else { "BROKEN" }, color)
    )?;
    Ok(u8::from(!r.ok))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Instants print as the JSON has them (the e2e tests compare them).
    #[test]
    fn a_broken_ledger_lists_its_times_as_the_json_has_them() {
        let report: AuditReport = serde_json::from_value(json!({
            "job": "backup", "from": "2026-12-01T00:00:00Z", "to": "2026-12-01T03:00:00.5Z",
            "expected": 3, "records": 2, "missing": ["2026-12-01T02:00:00Z"],
            "duplicated": [], "unexpected": [],
            "outcomes": { "success": 1, "skipped:overlap": 1 }, "ok": false
        }))
        .unwrap();
        let mut out = vec![];
        assert_eq!(audit(&mut out, &report, false).unwrap(), 1);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "backup: 3 scheduled time(s) from 2026-12-01T00:00:00Z to 2026-12-01T03:00:00.5Z: 2 record(s)\n  \
             outcomes: skipped:overlap 1, success 1\n  \
             missing: 1 (2026-12-01T02:00:00Z)\n  \
             invariant BROKEN\n"
        );
    }

    #[test]
    fn a_catch_up_that_may_repeat_is_named_beside_a_holding_invariant() {
        let report: AuditReport = serde_json::from_value(json!({
            "job": "tick", "from": "2026-12-01T00:00:00Z", "to": "2026-12-01T00:00:02Z",
            "expected": 3, "records": 2, "missing": [], "duplicated": [], "unexpected": [],
            "outcomes": { "success": 2 }, "may_repeat": [41], "ok": true
        }))
        .unwrap();
        let mut out = vec![];
        assert_eq!(audit(&mut out, &report, false).unwrap(), 0);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("  may repeat: run(s) 41 (catch-ups"),
            "{text}"
        );
        assert!(text.ends_with("  invariant holds\n"), "{text}");
    }
}
