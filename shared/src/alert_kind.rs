//! The one list of alert kinds. Config validation (a sink's `kinds`
//! filter), the supervisor's detectors, the metrics (`cronwarden_alerts_open`
//! has a sample for every kind) and the sinks all take their names from
//! here, so a kind the README documents can never be refused by `check`.
//!
//! Two kinds are conditions of the status only and never alerted:
//! `worker_down` (a worker that is starting or between restarts; a crash
//! loop is `worker_crash_loop`) and `worker_heartbeat_overdue` (the
//! `degraded` window before `stall_after`).

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// What an alert (or a status condition) is about. Serialised as its
/// snake_case name, the name users see and filter on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    WorkerStalled,
    WorkerFailing,
    WorkerCrashLoop,
    WorkerRestarted,
    WorkerMisarmed,
    WorkerDown,
    WorkerHeartbeatOverdue,
    JobLate,
    JobMisarmed,
    JobTimeout,
    JobLost,
    JobFailing,
    JobOverlapStreak,
    JobZeroOutputStreak,
    ConfigReloadFailed,
    StoreError,
    /// Run records the worker dropped while the store failed: a loss.
    StoreRecordsDropped,
    AlertDeliveryFailed,
    /// The wall clock was stepped or the host suspended (info, for a
    /// while after it was seen; it changes no state).
    ClockJumped,
    /// This host's clock is off the shared ledger's database clock by
    /// more than the bound (store = postgres): its fires are early or
    /// late against the other hosts'.
    ClusterClockSkew,
    /// A job's definition on this host differs from the one most live
    /// hosts hold (store = postgres): its fires are not claimed here.
    JobDefinitionDiffers,
    /// Sent by `cronwarden alerts test`.
    Test,
}

impl AlertKind {
    /// Every kind, in the order of the declaration.
    pub const ALL: &'static [AlertKind] = &[
        AlertKind::WorkerStalled,
        AlertKind::WorkerFailing,
        AlertKind::WorkerCrashLoop,
        AlertKind::WorkerRestarted,
        AlertKind::WorkerMisarmed,
        AlertKind::WorkerDown,
        AlertKind::WorkerHeartbeatOverdue,
        AlertKind::JobLate,
        AlertKind::JobMisarmed,
        AlertKind::JobTimeout,
        AlertKind::JobLost,
        AlertKind::JobFailing,
        AlertKind::JobOverlapStreak,
        AlertKind::JobZeroOutputStreak,
        AlertKind::ConfigReloadFailed,
        AlertKind::StoreError,
        AlertKind::StoreRecordsDropped,
        AlertKind::AlertDeliveryFailed,
        AlertKind::ClockJumped,
        AlertKind::ClusterClockSkew,
        AlertKind::JobDefinitionDiffers,
        AlertKind::Test,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::WorkerStalled => "worker_stalled",
            AlertKind::WorkerFailing => "worker_failing",
            AlertKind::WorkerCrashLoop => "worker_crash_loop",
            AlertKind::WorkerRestarted => "worker_restarted",
            AlertKind::WorkerMisarmed => "worker_misarmed",
            AlertKind::WorkerDown => "worker_down",
            AlertKind::WorkerHeartbeatOverdue => "worker_heartbeat_overdue",
            AlertKind::JobLate => "job_late",
            AlertKind::JobMisarmed => "job_misarmed",
            AlertKind::JobTimeout => "job_timeout",
            AlertKind::JobLost => "job_lost",
            AlertKind::JobFailing => "job_failing",
            AlertKind::JobOverlapStreak => "job_overlap_streak",
            AlertKind::JobZeroOutputStreak => "job_zero_output_streak",
            AlertKind::ConfigReloadFailed => "config_reload_failed",
            AlertKind::StoreError => "store_error",
            AlertKind::StoreRecordsDropped => "store_records_dropped",
            AlertKind::AlertDeliveryFailed => "alert_delivery_failed",
            AlertKind::ClockJumped => "clock_jumped",
            AlertKind::ClusterClockSkew => "cluster_clock_skew",
            AlertKind::JobDefinitionDiffers => "job_definition_differs",
            AlertKind::Test => "test",
        }
    }

    /// Whether the kind is one condition across hosts sharing a ledger
    /// (store = postgres): a condition about the job's fires, which any
    /// host may run, so one host (the owner in `cw_alerts`) delivers it.
    /// The rest are about this host (its worker, its store, its clock,
    /// its definitions, its arming) and stay per host. Exhaustive, so a
    /// new kind must be placed.
    pub fn cluster_wide(self) -> bool {
        match self {
            AlertKind::JobLate
            | AlertKind::JobTimeout
            | AlertKind::JobLost
            | AlertKind::JobFailing
            | AlertKind::JobOverlapStreak
            | AlertKind::JobZeroOutputStreak => true,
            AlertKind::WorkerStalled
            | AlertKind::WorkerFailing
            | AlertKind::WorkerCrashLoop
            | AlertKind::WorkerRestarted
            | AlertKind::WorkerMisarmed
            | AlertKind::WorkerDown
            | AlertKind::WorkerHeartbeatOverdue
            | AlertKind::JobMisarmed
            | AlertKind::ConfigReloadFailed
            | AlertKind::StoreError
            | AlertKind::StoreRecordsDropped
            | AlertKind::AlertDeliveryFailed
            | AlertKind::ClockJumped
            | AlertKind::ClusterClockSkew
            | AlertKind::JobDefinitionDiffers
            | AlertKind::Test => false,
        }
    }

    /// The names, comma-separated, for error messages.
    fn names() -> String {
        AlertKind::ALL
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for AlertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An alert kind name that is not in the list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown alert kind {0:?} (known: {known})", known = AlertKind::names())]
pub struct UnknownAlertKind(pub String);

impl FromStr for AlertKind {
    type Err = UnknownAlertKind;

    fn from_str(s: &str) -> Result<AlertKind, UnknownAlertKind> {
        AlertKind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownAlertKind(s.to_string()))
    }
}

impl PartialEq<&str> for AlertKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The serde name, the display name and the parsed name are one name,
    /// and `ALL` holds each kind once.
    #[test]
    fn every_kind_has_one_name_in_every_form() {
        let mut seen = std::collections::BTreeSet::new();
        for &k in AlertKind::ALL {
            assert!(seen.insert(k), "{k} listed twice");
            let json = serde_json::to_value(k).unwrap();
            assert_eq!(json, serde_json::Value::String(k.as_str().into()));
            assert_eq!(k.as_str().parse::<AlertKind>(), Ok(k));
            assert_eq!(k.to_string(), k.as_str());
        }
        assert!("job_sad".parse::<AlertKind>().is_err());
    }

    /// The README's list of kinds and this one are the same list (the bug
    /// this enum fixed: `check` refused `kinds = ["worker_misarmed"]`, a
    /// kind the README documents).
    #[test]
    fn the_readme_documents_exactly_the_alerted_kinds() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("\nKinds: ")
            .expect("README has its Kinds: list");
        let end = start
            + readme[start..]
                .find("Info alerts")
                .expect("end of the list");
        let documented: std::collections::BTreeSet<&str> =
            readme[start..end].split('`').skip(1).step_by(2).collect();
        let status_only = [
            AlertKind::WorkerDown,
            AlertKind::WorkerHeartbeatOverdue,
            AlertKind::Test,
        ];
        let alerted: std::collections::BTreeSet<&str> = AlertKind::ALL
            .iter()
            .filter(|k| !status_only.contains(k))
            .map(|k| k.as_str())
            .collect();
        assert_eq!(documented, alerted);
    }
}
