//! Adopting what a dead worker held in memory: the supervisor's second
//! copy of its records and claims (issue 14), written by the next worker
//! when it takes the store over, before it plans anything.
//!
//! Invariants: adoption never goes back. A record is written only where
//! the store has none under its id, or only the `running` row its start
//! left (a finish supersedes it); a job's cursor only moves forward. So a
//! copy that was in fact stored already changes nothing, and adopting
//! twice is adopting once.

use rusqlite::{params, OptionalExtension};

use super::{insert_run, ts_text, Store, StoreError};
use crate::{
    status::{Outcome, RunRecord},
    wire::AdoptedCursor,
};

/// What an adoption wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Adopted {
    pub records: usize,
    pub cursors: usize,
}

impl Store {
    /// Writes the adopted records and cursors in one transaction.
    pub fn adopt(
        &mut self,
        records: &[RunRecord],
        cursors: &[AdoptedCursor],
    ) -> Result<Adopted, StoreError> {
        let path = self.path.clone();
        let sql = |what: &'static str| {
            let path = path.clone();
            move |source| StoreError::Sql { path, what, source }
        };
        let tx = self.conn.transaction().map_err(sql("begin"))?;
        let mut out = Adopted::default();
        for r in records {
            let stored: Option<String> = tx
                .prepare_cached("SELECT outcome FROM runs WHERE id = ?1")
                .and_then(|mut st| st.query_row([r.id as i64], |row| row.get(0)).optional())
                .map_err(sql("reading a run to adopt"))?;
            let newer = match stored.as_deref() {
                None => true,
                Some("running") => r.outcome != Outcome::Running,
                Some(_) => false,
            };
            if newer {
                insert_run(&tx, r).map_err(sql("adopting a run record"))?;
                out.records += 1;
            }
        }
        for c in cursors {
            out.cursors += tx
                .prepare_cached(
                    "UPDATE jobs SET next_run_at = ?2 WHERE name = ?1 AND next_run_at < ?2",
                )
                .and_then(|mut st| st.execute(params![c.job, ts_text(c.next_fire_at)]))
                .map_err(sql("adopting a job's next fire"))?;
        }
        tx.commit().map_err(sql("commit"))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;
    use crate::{
        status::Trigger,
        store::{JobRow, Write},
    };

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(1_893_456_000 + s).unwrap()
    }

    #[test]
    fn adoption_fills_gaps_and_never_goes_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let row = |next| JobRow {
            name: "a".into(),
            schedule: "* * * * * *".into(),
            timezone: "UTC".into(),
            next_run_at: Some(ts(next)),
            last_scheduled_at: None,
            paused: false,
        };
        store.reconcile(&[row(10)]).unwrap();
        let rec = |id: u64, outcome| {
            RunRecord::new(id, "a", vec![ts(id as i64)], Trigger::Schedule, outcome)
        };
        // Stored: 1 finished, 2 running.
        store
            .apply(&[
                Write::Finish(rec(1, Outcome::Success)),
                Write::Insert(rec(2, Outcome::Running)),
            ])
            .unwrap();
        let adopted = store
            .adopt(
                &[
                    rec(1, Outcome::Running),
                    rec(2, Outcome::Failed),
                    rec(3, Outcome::Success),
                ],
                &[AdoptedCursor {
                    job: "a".into(),
                    next_fire_at: ts(20),
                }],
            )
            .unwrap();
        assert_eq!(
            adopted,
            Adopted {
                records: 2,
                cursors: 1
            }
        );
        let outcomes: Vec<(u64, Outcome)> = store
            .runs("a", 10)
            .unwrap()
            .into_iter()
            .map(|r| (r.id, r.outcome))
            .collect();
        assert_eq!(
            outcomes,
            [
                (3, Outcome::Success),
                (2, Outcome::Failed),
                (1, Outcome::Success)
            ]
        );
        assert_eq!(store.jobs().unwrap()[0].next_run_at, Some(ts(20)));
        // Again, and with an older cursor: nothing changes.
        let again = store
            .adopt(
                &[rec(3, Outcome::Running)],
                &[AdoptedCursor {
                    job: "a".into(),
                    next_fire_at: ts(15),
                }],
            )
            .unwrap();
        assert_eq!(again, Adopted::default());
        assert_eq!(store.jobs().unwrap()[0].next_run_at, Some(ts(20)));
    }
}
