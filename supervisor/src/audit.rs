//! The ledger audit: recompute every scheduled time of a job in a window
//! from its schedule (the same code that fires it) and compare with the
//! records. The invariant of DESIGN.md holds when every expected time is
//! covered by exactly one record and no record claims a time the schedule
//! does not have.
//!
//! One audit is bounded: at most [`MAX_FIRES`] expected times (a reader
//! asking for 30 years of a per-second job gets a refusal naming the limit,
//! not a supervisor that grows by gigabytes), and it stops as soon as its
//! caller gives up ([`Bounds::cancelled`]).

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicBool, Ordering},
};

use jiff::Timestamp;

pub use cronwarden_shared::status::AuditReport;
use cronwarden_shared::{schedule::Schedule, status::RunRecord};

/// The most scheduled times one audit computes: a little over a day of a
/// per-second job (the default window is the last 24 hours).
/// The report lists at most this many missing times, so its size (and the
/// memory of the request) is bounded too.
pub const MAX_FIRES: usize = 100_000;

/// How often (in computed fires) the loop looks at its cancellation flag.
const CANCEL_CHECK_EVERY: usize = 1024;

/// What limits one audit.
pub struct Bounds<'a> {
    /// At most this many expected times.
    pub max_fires: usize,
    /// Set when nobody waits for the answer any more.
    pub cancelled: &'a AtomicBool,
}

/// Why an audit stopped without a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditStop {
    /// The window holds more than `max` scheduled times.
    TooManyFires { max: usize },
    /// The caller gave up (its reply timed out or it went away).
    Cancelled,
}

/// Audits `records` (any order) against `schedule` over `[from, to]`.
/// `anchor` is the `@every` cadence origin (ignored for cron).
pub fn audit(
    job: &str,
    schedule: &Schedule,
    anchor: Option<Timestamp>,
    records: &[RunRecord],
    from: Timestamp,
    to: Timestamp,
    bounds: &Bounds<'_>,
) -> Result<AuditReport, AuditStop> {
    let mut seen: BTreeMap<Timestamp, usize> = BTreeMap::new();
    let mut outcomes = BTreeMap::new();
    let mut counted = 0;
    let mut may_repeat = vec![];
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
        if r.may_repeat {
            may_repeat.push(r.id);
        }
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
    let mut expected: Vec<Timestamp> = vec![];
    // `@reboot` has no instants: each boot's one fire is the time its
    // record covers (a time covered twice is still a duplicate).
    let reboots: Vec<Timestamp> = match schedule.is_reboot() {
        true => seen.keys().copied().collect(),
        false => vec![],
    };
    let by_time = (!schedule.is_reboot())
        .then(|| schedule.fires_between(start, to, anchor.or(Some(start))))
        .into_iter()
        .flatten();
    for (i, t) in reboots.into_iter().chain(by_time).enumerate() {
        if i >= bounds.max_fires {
            return Err(AuditStop::TooManyFires {
                max: bounds.max_fires,
            });
        }
        if i % CANCEL_CHECK_EVERY == 0 && bounds.cancelled.load(Ordering::Relaxed) {
            return Err(AuditStop::Cancelled);
        }
        expected.push(t);
    }
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
    Ok(AuditReport {
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
        may_repeat: {
            may_repeat.sort_unstable();
            may_repeat
        },
    })
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

    static NOT_CANCELLED: AtomicBool = AtomicBool::new(false);

    fn unbounded() -> Bounds<'static> {
        Bounds {
            max_fires: usize::MAX,
            cancelled: &NOT_CANCELLED,
        }
    }

    #[test]
    fn a_window_beyond_the_limit_is_refused_and_a_cancelled_audit_stops() {
        let s = Schedule::parse("* * * * * *", &TimeZone::UTC).unwrap();
        let from: Timestamp = "1996-01-01T00:00:00Z".parse().unwrap();
        let to: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let bounds = Bounds {
            max_fires: 1000,
            cancelled: &NOT_CANCELLED,
        };
        assert_eq!(
            audit("j", &s, None, &[], from, to, &bounds),
            Err(AuditStop::TooManyFires { max: 1000 })
        );
        // Exactly at the limit is fine: 1000 fires in [from, from + 999s].
        let end = from + jiff::SignedDuration::from_secs(999);
        let r = audit("j", &s, None, &[], from, end, &bounds).unwrap();
        assert_eq!(r.expected, 1000);
        let cancelled = AtomicBool::new(true);
        let bounds = Bounds {
            max_fires: usize::MAX,
            cancelled: &cancelled,
        };
        assert_eq!(
            audit("j", &s, None, &[], from, to, &bounds),
            Err(AuditStop::Cancelled)
        );
    }

    #[test]
    fn a_reboot_job_expects_one_record_per_boot_fire() {
        let s = Schedule::parse("@reboot", &TimeZone::UTC).unwrap();
        let from: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let to: Timestamp = "2026-01-02T00:00:00Z".parse().unwrap();
        let boots = [
            rec(1, &["2026-01-01T01:00:00Z"]),
            rec(2, &["2026-01-01T05:00:00Z"]),
        ];
        let r = audit("j", &s, None, &boots, from, to, &unbounded()).unwrap();
        assert!(r.ok && r.expected == 2, "{r:?}");
        let twice = [boots[0].clone(), rec(3, &["2026-01-01T01:00:00Z"])];
        let r = audit("j", &s, None, &twice, from, to, &unbounded()).unwrap();
        assert!(!r.ok && r.duplicated.len() == 1, "{r:?}");
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
            &unbounded(),
        )
        .unwrap();
        assert!(ok.ok, "{ok:?}");
        assert_eq!(ok.expected, 5);
        assert!(ok.may_repeat.is_empty());
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
            &unbounded(),
        )
        .unwrap();
        assert!(!bad.ok);
        assert_eq!(bad.duplicated.len(), 1);
        assert_eq!(bad.missing.len(), 4);
        assert_eq!(bad.unexpected.len(), 1);
    }

    #[test]
    fn a_catch_up_that_may_repeat_is_named_and_the_invariant_still_judged() {
        let s = Schedule::parse("0 * * * *", &TimeZone::UTC).unwrap();
        let mut catch_up = rec(7, &["2026-11-24T01:00:00Z", "2026-11-24T02:00:00Z"]);
        catch_up.may_repeat = true;
        let mut outside = rec(9, &["2026-11-25T00:00:00Z"]);
        outside.may_repeat = true;
        let r = audit(
            "j",
            &s,
            None,
            &[outside, rec(1, &["2026-11-24T00:00:00Z"]), catch_up],
            "2026-11-24T00:00:00Z".parse().unwrap(),
            "2026-11-24T02:00:00Z".parse().unwrap(),
            &unbounded(),
        )
        .unwrap();
        assert!(r.ok, "{r:?}");
        assert_eq!(r.may_repeat, vec![7], "only the run in the window");
    }
}
