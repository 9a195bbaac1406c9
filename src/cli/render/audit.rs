//! `cronwarden audit JOB`: the ledger's verdict for people; the exit code
//! is the verdict.

use std::io::Write;

use cronwarden_shared::audit::AuditReport;

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
    writeln!(
        out,
        "  invariant {}",
        colored(if r.ok { "holds" } else { "BROKEN" }, color)
    )?;
    Ok(u8::from(!r.ok))
}
