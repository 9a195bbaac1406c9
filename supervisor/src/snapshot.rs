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
//! nothing and two reads of one snapshot agree. Ages in
//! the status (heartbeat, last good turn) are as of the publication.
//!
//! Serialising is done once per snapshot, by the first request that needs
//! it, never by the loop: the summary, the whole report, and each job's
//! JSON on its own (so a page of jobs serialises only the jobs it shows,
//! once). The next request on the same snapshot serialises nothing, and a
//! job's JSON is shared by the next snapshots while its status is the same
//! one (the model shares unchanged statuses: `model::Reported`). A
//! snapshot never changes, so its bytes never go stale.

use std::{
    path::PathBuf,
    sync::{Arc, OnceLock},
};

use bytes::Bytes;
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
    /// The serialised forms of `status`, made on first use.
    serialised: Serialised,
}

/// What requests have serialised of one snapshot so far.
#[derive(Debug, Default)]
struct Serialised {
    /// `GET /v1/status`: the summary, pretty.
    summary: OnceLock<Bytes>,
    /// `GET /v1/status?jobs=all`: the whole report, pretty.
    full: OnceLock<Bytes>,
    /// Positions in `status.jobs`, in name order: how pages and look-ups
    /// by name find a job.
    by_name: OnceLock<Vec<u32>>,
    /// Each job's JSON (compact, one line), by its position in
    /// `status.jobs`: shared with other snapshots that hold the same status.
    jobs: Box<[JobJson]>,
}

/// A job's JSON, made on first use (see `model::Reported`).
type JobJson = Arc<OnceLock<Bytes>>;

/// Pretty JSON and a final newline, as every reply of the socket.
pub(crate) fn pretty<T: serde::Serialize + ?Sized>(v: &T) -> Bytes {
    let mut bytes = serde_json::to_vec_pretty(v).expect("status types serialize");
    bytes.push(b'\n');
    Bytes::from(bytes)
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
        // Each job's JSON cell, shared with the last snapshots while its
        // status is the one the model reported (the report lists the jobs
        // in the model's order); a fresh cell otherwise.
        let jobs: Box<[JobJson]> = status
            .jobs
            .iter()
            .zip(model.jobs.values())
            .map(|(s, j)| match &*j.reported.borrow() {
                Some(r) if Arc::ptr_eq(&r.status, s) => r.json.clone(),
                _ => JobJson::default(),
            })
            .chain(std::iter::repeat_with(JobJson::default))
            .take(status.jobs.len())
            .collect();
        let mut snapshot = Snapshot::from_parts(
            status,
            model.counters.clone(),
            model.config.clone(),
            model.store_path(),
        );
        snapshot.serialised.jobs = jobs;
        snapshot
    }

    /// A snapshot of these parts, nothing serialised yet.
    pub(crate) fn from_parts(
        status: StatusReport,
        counters: Counters,
        config: Arc<Config>,
        store_path: PathBuf,
    ) -> Snapshot {
        let jobs = (0..status.jobs.len()).map(|_| JobJson::default()).collect();
        Snapshot {
            status,
            counters,
            config,
            store_path,
            serialised: Serialised {
                jobs,
                ..Serialised::default()
            },
        }
    }

    /// The summary's JSON (`GET /v1/status`).
    pub(crate) fn summary_json(&self) -> Bytes {
        self.serialised
            .summary
            .get_or_init(|| pretty(&self.status.summary()))
            .clone()
    }

    /// The whole report's JSON (`GET /v1/status?jobs=all`).
    pub(crate) fn full_json(&self) -> Bytes {
        self.serialised
            .full
            .get_or_init(|| pretty(&self.status))
            .clone()
    }

    /// Positions in `status.jobs`, in the order of the jobs' names.
    pub(crate) fn by_name(&self) -> &[u32] {
        self.serialised.by_name.get_or_init(|| {
            let jobs = &self.status.jobs;
            let mut order: Vec<u32> = (0..jobs.len() as u32).collect();
            // The model keeps its jobs in a map by name, so this is sorted
            // already: the check is linear, the sort a safety net.
            if !jobs.windows(2).all(|w| w[0].name <= w[1].name) {
                order.sort_by(|a, b| jobs[*a as usize].name.cmp(&jobs[*b as usize].name));
            }
            order
        })
    }

    /// The position of the job named `name` in `status.jobs`.
    pub(crate) fn job_position(&self, name: &str) -> Option<usize> {
        let order = self.by_name();
        let jobs = &self.status.jobs;
        order
            .binary_search_by(|i| jobs[*i as usize].name.as_str().cmp(name))
            .ok()
            .map(|k| order[k] as usize)
    }

    /// The JSON of the job at position `i` of `status.jobs`, on one line.
    pub(crate) fn job_json(&self, i: usize) -> &Bytes {
        self.serialised.jobs[i].get_or_init(|| {
            Bytes::from(serde_json::to_vec(&self.status.jobs[i]).expect("status types serialize"))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// A job's JSON is made once while its status stays the same, across
    /// snapshots; a changed status gets new JSON, and says the change.
    #[test]
    fn a_jobs_json_is_shared_by_snapshots_until_its_status_changes() {
        let text = "[[job]]\nname = \"a\"\nschedule = \"@daily\"\ncommand = [\"true\"]\n\
                    [[job]]\nname = \"b\"\nschedule = \"@daily\"\ncommand = [\"true\"]\n";
        let config = Config::parse(Path::new("/x/cronwarden.toml"), text).unwrap();
        let mut model = Model::for_test(config);
        let (now, wall) = (Instant::now(), Timestamp::now());
        let publish = |model: &mut Model| {
            let status = model.evaluate(now, wall).status;
            Snapshot::published(model, status)
        };
        let first = publish(&mut model);
        let a = first.job_json(0).clone();
        let second = publish(&mut model);
        assert!(Arc::ptr_eq(
            &first.serialised.jobs[0],
            &second.serialised.jobs[0]
        ));
        assert_eq!(second.serialised.jobs[0].get(), Some(&a), "made once");
        model.jobs.get_mut("a").unwrap().paused = true;
        let third = publish(&mut model);
        assert!(!Arc::ptr_eq(
            &first.serialised.jobs[0],
            &third.serialised.jobs[0]
        ));
        assert!(Arc::ptr_eq(
            &first.serialised.jobs[1],
            &third.serialised.jobs[1]
        ));
        let v: serde_json::Value = serde_json::from_slice(third.job_json(0)).unwrap();
        assert_eq!(
            (v["name"].as_str(), v["paused"].as_bool()),
            (Some("a"), Some(true))
        );
    }
}
