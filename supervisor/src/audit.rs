//! The ledger audit: recompute every scheduled time of a job in a window
//! from its schedule (the same code that fires it) and compare with the
//! records. The invariant of DESIGN.md holds when every expected time is
//! covered by exactly one record and no record claims a time the schedule
//! does not have.

use std::collections::BTreeMap;

use jiff::Timestamp;

pub use cronwarden_shared::status::AuditReport;
use cronwarden_shared::{schedule::Schedule, status::RunRecord};

/// Audits `records` (any order) against `schedule` over `[from, to]`.
/// `anchor` is the `@every` cadence origin (ignored for cron).
pub fn audit(
    job: &str,
    schedule: &Schedule,
    anchor: Option<Timestamp>,
    records: &[RunRecord],
    from: Timestamp,
    to: Timestamp,
) -> AuditReport {
    let mut seen: BTreeMap<Timestamp, usize> = BTreeMap::new();
    let mut outcomes = BTreeMap::new();
    let mut counted = 0;
    for r in records {
        let in_window: Vec<Timestamp> = r
            .covers
            .iter()
            .copied()
            .filter(|t| *t >= from && *t <= to)
            .collect();
        if in_window.is_empty() {
            continue;
        }
        counted += 1;
        let key = match r.skip_reason {
            Some(reason) => format!(
                "skipped:{}",
                serde_json::to_value(reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            ),
            None => r.outcome.as_str().to_string(),
        };
        *outcomes.entry(key).or_insert(0) += 1;
        for t in in_window {
            *seen.entry(t).or_insert(0) += 1;
        }
    }
    // `from` is inclusive: start just before it.
    let start = from
        .checked_sub(jiff::SignedDuration::from_nanos(1))
        .unwrap_or(from);
    let expected: Vec<Timestamp> = schedule
        .fires_between(start, to, anchor.or(Some(start)))
        .collect();
    let mut missing = vec![];
    let mut duplicated = vec![];
    for t in &expected {
        match seen.remove(t) {
            None => missing.push(*t),
            Some(1) => {}
            Some(_) => duplicated.push(*t),
        }
    }
    let unexpected: Vec<Timestamp> = seen.into_keys().collect();
    AuditReport {
        job: job.to_string(),
        from,
        to,
        expected: expected.len(),
        records: counted,
        ok: missing.is_empty() && duplicated.is_empty() && unexpected.is_empty(),
        missing,
        duplicated,
        unexpected,
        outcomes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cronwarden_shared::status::{Outcome, Trigger};
    use jiff::tz::TimeZone;

    fn rec(id: u64, covers: &[&str]) -> RunRecord {
        let covers = covers.iter().map(|c| c.parse().unwrap()).collect();
        let mut r = RunRecord::new(id, "j", covers, Trigger::Schedule, Outcome::Success);
        r.exit_code = Some(0);
        r
    }

    #[test]
    fn finds_missing_duplicated_and_unexpected() {
        let s = Schedule::parse("0 * * * *", &TimeZone::UTC).unwrap();
        let from: Timestamp = "2026-11-24T00:00:00Z".parse().unwrap();
        let to: Timestamp = "2026-11-24T04:00:00Z".parse().unwrap();
        let ok = audit(
            "j",
            &s,
            None,
            &[
                rec(1, &["2026-11-24T00:00:00Z"]),
                rec(2, &["2026-11-24T01:00:00Z", "2026-11-24T02:00:00Z"]),
                rec(3, &["2026-11-24T03:00:00Z"]),
                rec(4, &["2026-11-24T04:00:00Z"]),
            ],
            from,
            to,
        );
        assert!(ok.ok, "{ok:?}");
        assert_eq!(ok.expected, 5);
        let bad = audit(
            "j",
            &s,
            None,
            &[
                rec(1, &["2026-11-24T00:00:00Z"]),
                rec(2, &["2026-11-24T00:00:00Z"]),
                rec(3, &["2026-11-24T01:30:00Z"]),
            ],
            from,
            to,
        );
        assert!(!bad.ok);
        assert_eq!(bad.duplicated.len(), 1);
        assert_eq!(bad.missing.len(), 4);
        assert_eq!(bad.unexpected.len(), 1);
    }
}
