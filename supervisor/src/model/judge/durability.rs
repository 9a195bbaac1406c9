//! The detectors of the durability of the worker's writes (issue 14):
//! status is never `ok` while run records are being dropped or while
//! claims and records are held in memory only.

use cronwarden_shared::{
    alert_kind::AlertKind,
    status::{Severity, State},
};
use serde_json::json;

use super::worker::condition;
use crate::{alerts::Condition, model::WorkerObs};

/// Run records dropped beyond the held-write bound: fires or runs with no
/// record. Critical, and open for the supervisor's life (a loss does not
/// heal when the store recovers).
pub(super) fn records_dropped(w: &WorkerObs) -> Option<Condition> {
    let n = w.records_dropped.saturating_add(w.records_dropped_earlier);
    (n > 0).then(|| {
        condition(
            AlertKind::StoreRecordsDropped,
            Severity::Critical,
            State::Degraded,
            format!(
                "{n} run record(s) were dropped while the store failed: those fires or runs have no record"
            ),
            json!({ "records_dropped": n }),
            true,
        )
    })
}

/// Writes held in memory with no store error reported (the store just
/// recovered, or the writes are queued behind a slow store): not yet
/// durable, so not `ok`. A failing store is `store_error` already.
pub(super) fn writes_held(w: &WorkerObs) -> Option<Condition> {
    (w.store_error.is_none() && w.writes_held > 0).then(|| {
        condition(
            AlertKind::StoreError,
            Severity::Warning,
            State::Degraded,
            format!(
                "{} store write(s) are held in memory, not yet durable",
                w.writes_held
            ),
            json!({ "writes_held": w.writes_held }),
            false,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_records_are_critical_and_not_forgotten_with_the_worker() {
        let mut w = WorkerObs::default();
        assert!(records_dropped(&w).is_none());
        w.records_dropped_earlier = 3;
        let c = records_dropped(&w).unwrap();
        assert_eq!(c.kind, AlertKind::StoreRecordsDropped);
        assert_eq!(c.severity, Severity::Critical);
        assert_eq!(c.state, State::Degraded);
        assert!(c.summary.starts_with("3 run record(s)"), "{}", c.summary);
        w.records_dropped = 2;
        assert!(records_dropped(&w).unwrap().summary.starts_with("5 "));
    }

    #[test]
    fn held_writes_are_degraded_until_stored() {
        let mut w = WorkerObs::default();
        assert!(writes_held(&w).is_none());
        w.writes_held = 4;
        let c = writes_held(&w).unwrap();
        assert_eq!((c.kind, c.state), (AlertKind::StoreError, State::Degraded));
        // A failing store is reported by `store_error` itself, once.
        w.store_error = Some("disk full".into());
        assert!(writes_held(&w).is_none());
    }
}
