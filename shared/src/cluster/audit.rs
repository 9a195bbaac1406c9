//! Reading the shared ledger back: the fires of a window, for the
//! cross-host audit (`cronwarden cluster`).

use jiff::Timestamp;

use super::{ts, ts_of, us, Ledger, LedgerError};

/// One row of `cw_fires`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FireRow {
    pub job: String,
    pub scheduled_for: Timestamp,
    pub host: String,
    pub run_id: u64,
    /// `running`, `finished`, `skipped`, `lost`.
    pub state: String,
    pub outcome: Option<String>,
    /// The peer that recorded it lost, if one did.
    pub lost_by: Option<String>,
    /// `running` with its lease run out and no peer beat since to record
    /// it lost (every host is down, or none beats).
    pub lease_expired: bool,
}

/// At most this many rows are read for one audit.
pub const MAX_ROWS: i64 = 200_000;

impl Ledger {
    /// The fires scheduled in `[from, to]`, by job and time (at most
    /// [`MAX_ROWS`]).
    pub fn fires(&mut self, from: Timestamp, to: Timestamp) -> Result<Vec<FireRow>, LedgerError> {
        let rows = self
            .client()
            .query(
                &format!(
                    "SELECT job, {}, host, run_id, state, outcome, lost_by,
                        state = 'running' AND lease_until < now()
                     FROM cw_fires WHERE scheduled_for BETWEEN {} AND {}
                     ORDER BY job, scheduled_for LIMIT $3",
                    us("scheduled_for"),
                    ts(1),
                    ts(2)
                ),
                &[&from.as_microsecond(), &to.as_microsecond(), &MAX_ROWS],
            )
            .map_err(|e| LedgerError::db("read the fires", e))?;
        Ok(rows
            .iter()
            .map(|r| FireRow {
                job: r.get(0),
                scheduled_for: ts_of(r.get(1)),
                host: r.get(2),
                run_id: r.get::<_, i64>(3) as u64,
                state: r.get(4),
                outcome: r.get(5),
                lost_by: r.get(6),
                lease_expired: r.get(7),
            })
            .collect())
    }
}
