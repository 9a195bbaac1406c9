//! What the status socket serves: an immutable snapshot of the status and
//! the metrics, published by the loop after each evaluation, read by the server.
//!
//! One owner, one snapshot: the loop ([`crate::event_loop`]) owns the model
//! and alone computes from it (conditions, ages, looks in `/proc`). It
//! publishes a new [`Snapshot`] on a `watch` channel after every
//! evaluation and tick, a bounded time after event lines, when the
//! heartbeat becomes overdue, and before it answers a control call. A
//! request takes the latest `Arc` and serializes it: no computation, no
//! model access, no `/proc` read per request, so readers cost the loop
//! nothing beyond serializing and two reads of one snapshot agree. Ages in
//! the status (heartbeat, last good turn) are as of the publication.

use std::{path::PathBuf, sync::Arc};

use cronwarden_shared::{config::Config, status::StatusReport};
use jiff::Timestamp;
use tokio::{sync::watch, time::Instant};

use crate::model::{counters::Counters, Model};

/// The status, the metrics and the config in force, as of one instant.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) status: StatusReport,
    pub(crate) counters: Counters,
    /// For what requests check against the running config: which jobs
    /// exist, who may control.
    pub(crate) config: Arc<Config>,
    /// The store the history endpoints read.
    pub(crate) store_path: PathBuf,
}

/// The server's end: the latest snapshot, always there.
pub(crate) type Snapshots = watch::Receiver<Arc<Snapshot>>;

impl Snapshot {
    /// The first snapshot, before any evaluation: a judgement of `model`
    /// as it starts (no worker yet), adopting nothing.
    pub(crate) fn of(model: &Model, now: Instant, wall: Timestamp) -> Snapshot {
        Snapshot::published(model, model.status(now, wall))
    }

    /// The snapshot of an evaluation: its status, and the counters and
    /// config in force.
    pub(crate) fn published(model: &Model, status: StatusReport) -> Snapshot {
        Snapshot {
            status,
            counters: model.counters.clone(),
            config: model.config.clone(),
            store_path: model.store_path(),
        }
    }
}
