//! The light read behind the status page's 24-hour strips: per record only
//! what a mark shows (no output tails), newest first, bounded.

use jiff::{SignedDuration, Timestamp};
use rusqlite::params;

use super::{parse_outcome, parse_skip, parse_trigger, ts_parse, Store, StoreError};
use crate::status::{Outcome, SkipReason, Trigger};

/// One record as a mark on a time strip.
#[derive(Debug, Clone, PartialEq)]
pub struct RunMark {
    pub id: u64,
    /// When it started, or for a skipped fire when it was due.
    pub at: Timestamp,
    pub scheduled_at: Option<Timestamp>,
    pub trigger: Trigger,
    pub outcome: Outcome,
    pub skip_reason: Option<SkipReason>,
    pub exit_code: Option<i32>,
    pub duration_ms: Option<u64>,
}

/// Records are inserted when their fire is claimed, so ids follow fire
/// times except for a catch-up, which stands for times up to its misfire
/// grace earlier. Reading newest first stops this far before the window.
const ORDER_SLACK: SignedDuration = SignedDuration::from_hours(1);

impl Store {
    /// Hands `each` a job's records whose mark time is at or after `from`,
    /// newest first, at most `cap` of them (memory stays with the caller's
    /// aggregate); true when the cap cut the window short.
    pub fn marks(
        &self,
        job: &str,
        from: Timestamp,
        cap: usize,
        mut each: impl FnMut(RunMark),
    ) -> Result<bool, StoreError> {
        let stop = from.checked_sub(ORDER_SLACK).unwrap_or(from);
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT id, scheduled_at, trigger, started_at, outcome, skip_reason, exit_code, duration_ms \
                 FROM runs WHERE job = ?1 ORDER BY id DESC",
            )
            .map_err(self.sql("reading run marks"))?;
        let mut rows = st
            .query(params![job])
            .map_err(self.sql("reading run marks"))?;
        let mut seen = 0;
        while let Some(r) = rows.next().map_err(self.sql("reading run marks"))? {
            let get = || -> rusqlite::Result<Option<RunMark>> {
                let scheduled_at = ts_parse(r.get(1)?);
                let started_at = ts_parse(r.get(3)?);
                let Some(at) = started_at.or(scheduled_at) else {
                    return Ok(None);
                };
                Ok(Some(RunMark {
                    id: r.get::<_, i64>(0)? as u64,
                    at,
                    scheduled_at,
                    trigger: parse_trigger(&r.get::<_, String>(2)?),
                    outcome: parse_outcome(&r.get::<_, String>(4)?),
                    skip_reason: parse_skip(r.get(5)?),
                    exit_code: r.get(6)?,
                    duration_ms: r.get::<_, Option<i64>>(7)?.map(|v| v.max(0) as u64),
                }))
            };
            let Some(m) = get().map_err(self.sql("reading run marks"))? else {
                continue;
            };
            if m.at < stop {
                break;
            }
            if m.at >= from {
                if seen == cap {
                    return Ok(true);
                }
                seen += 1;
                each(m);
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::RunRecord;
    use crate::store::Write;

    fn rec(id: u64, at: &str, outcome: Outcome) -> RunRecord {
        let t: Timestamp = at.parse().unwrap();
        RunRecord {
            id,
            job: "j".into(),
            scheduled_at: Some(t),
            covers: vec![t],
            trigger: Trigger::Schedule,
            started_at: (outcome != Outcome::Skipped).then_some(t),
            finished_at: Some(t),
            outcome,
            skip_reason: (outcome == Outcome::Skipped).then_some(SkipReason::Overlap),
            exit_code: (outcome == Outcome::Failed).then_some(3),
            signal: None,
            duration_ms: Some(5),
            stdout_bytes: 0,
            stderr_bytes: 0,
            error: None,
            stdout_tail: String::new(),
            stderr_tail: String::new(),
            contain: Default::default(),
            may_repeat: false,
        }
    }

    #[test]
    fn marks_are_the_window_newest_first_and_capped() {
        let mut s = Store::open_in_memory().unwrap();
        let recs = [
            rec(1, "2026-01-01T08:00:00Z", Outcome::Success),
            rec(2, "2026-01-01T10:00:00Z", Outcome::Failed),
            rec(3, "2026-01-01T11:00:00Z", Outcome::Skipped),
            rec(4, "2026-01-01T12:00:00Z", Outcome::Success),
        ];
        let writes: Vec<Write> = recs.iter().cloned().map(Write::Insert).collect();
        s.apply_overriding(&writes).unwrap();
        let from: Timestamp = "2026-01-01T09:30:00Z".parse().unwrap();
        let read = |cap| {
            let mut v = Vec::new();
            let cut = s.marks("j", from, cap, |m| v.push(m)).unwrap();
            (v, cut)
        };
        let (m, cut) = read(10);
        assert_eq!(m.iter().map(|m| m.id).collect::<Vec<_>>(), [4, 3, 2]);
        assert!(!cut);
        assert_eq!(m[1].outcome, Outcome::Skipped);
        assert_eq!(m[1].skip_reason, Some(SkipReason::Overlap));
        assert_eq!(m[2].exit_code, Some(3));
        let (m, cut) = read(2);
        assert_eq!(m.len(), 2);
        assert!(cut);
        assert!(!s.marks("other", from, 10, |_| panic!("not j's")).unwrap());
    }
}
