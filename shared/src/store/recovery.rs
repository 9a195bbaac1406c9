//! What a worker takes over from a dead one: its runs in flight, recorded
//! lost, and the run ids it may have used (every stored id and every id
//! reserved, so none is handed out twice).

use jiff::Timestamp;
use rusqlite::OptionalExtension;

use super::{ts_text, Store, StoreError};
use crate::status::{Outcome, RunRecord};

impl Store {
    /// Records left `running` by a dead worker become `lost`; returns them.
    pub fn recover_lost(&mut self) -> Result<Vec<RunRecord>, StoreError> {
        let now = Timestamp::now();
        let lost = self.query_runs("WHERE outcome = 'running' ORDER BY id", [])?;
        self.conn
            .execute(
                "UPDATE runs SET outcome = 'lost', finished_at = ?1, error = 'the worker died while the run was in flight' WHERE outcome = 'running'",
                [ts_text(now)],
            )
            .map_err(self.sql("recovering lost runs"))?;
        Ok(lost
            .into_iter()
            .map(|mut r| {
                r.outcome = Outcome::Lost;
                r.finished_at = Some(now);
                r
            })
            .collect())
    }

    /// The first run id no worker can have used: above every stored run
    /// and above every id a worker reserved ([`Write::ReserveIds`](super::Write::ReserveIds)), even
    /// one whose records were lost with it.
    pub fn first_free_run_id(&self) -> Result<u64, StoreError> {
        let reserved: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'run_id_reserved'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.sql("reading the reserved run ids"))?;
        let reserved = reserved.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        Ok(self.max_run_id()?.max(reserved).saturating_add(1))
    }

    /// Marks a worker in charge of the store (meta `worker_live`) and says
    /// whether the one before it ended without [`Store::mark_worker_stopped`]:
    /// killed, or stopped while its writes could not be stored. Such a
    /// worker may have run fires whose claims never reached the store.
    pub fn mark_worker_live(&mut self) -> Result<bool, StoreError> {
        let before: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'worker_live'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.sql("reading the previous worker's end"))?;
        self.conn
            .execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('worker_live', '1')",
                [],
            )
            .map_err(self.sql("marking the worker live"))?;
        Ok(before.as_deref() == Some("1"))
    }

    /// The worker ends with every write stored: its successor has nothing
    /// to doubt (see [`Store::mark_worker_live`]).
    pub fn mark_worker_stopped(&mut self) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('worker_live', '0')",
                [],
            )
            .map(|_| ())
            .map_err(self.sql("marking the worker stopped"))
    }

    /// The highest run id ever used (0 for a new store).
    pub fn max_run_id(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT coalesce(max(id), 0) FROM runs", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|v| v as u64)
            .map_err(self.sql("reading the highest run id"))
    }

    /// Whether a run is still recorded as in flight.
    #[cfg(test)]
    pub(super) fn is_running(&self, id: u64) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT outcome = 'running' FROM runs WHERE id = ?1",
                [id as i64],
                |r| r.get::<_, bool>(0),
            )
            .optional()
            .map(|v| v.unwrap_or(false))
            .map_err(self.sql("reading a run"))
    }
}
