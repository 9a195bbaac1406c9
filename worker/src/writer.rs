//! The store writer: a thread of its own, with its own connection, that
//! commits the journal's batches, so the scheduling loop never waits on
//! SQLite beyond a short bound (issue 14: a store locked or slow for
//! seconds got the worker killed as stalled).
//!
//! One batch is in flight at a time (writes reach the store in order).
//! The loop hands a batch over and waits at most its bound for the
//! outcome; past it, the turn goes on (the batch counts as held, not
//! durable, and the supervisor gets a copy of each claim) and the outcome
//! is collected at a later turn. A claim the store refuses is written over
//! it, as the journal always did (memory wins).

use std::{
    path::PathBuf,
    sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender},
    time::Duration,
};

use cronwarden_shared::store::{Store, Write};

use crate::{error::WorkerError, journal::Apply};

/// How long a batch may wait for another connection's lock on the
/// writer's thread (off the loop, so longer than the loop's own 100 ms).
const WRITER_BUSY_TIMEOUT: Duration = Duration::from_secs(1);

enum Request {
    Apply(Vec<Write>),
    /// The store file was recreated or reopened at this path.
    Reopen(PathBuf),
}

/// The outcome of one batch: the error text if it was not committed.
pub(crate) type Outcome = Result<(), String>;

pub(crate) struct Writer {
    tx: Sender<Request>,
    rx: Receiver<Outcome>,
    in_flight: bool,
}

impl Writer {
    /// Starts the thread; it opens its connection to `path` at its first
    /// batch (and again after a failure).
    pub fn start(path: PathBuf) -> std::io::Result<Writer> {
        let (tx, requests) = channel::<Request>();
        let (done, rx) = channel::<Outcome>();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || serve(path, requests, done))?;
        Ok(Writer {
            tx,
            rx,
            in_flight: false,
        })
    }

    /// A batch is handed over and its outcome not collected yet.
    pub fn busy(&self) -> bool {
        self.in_flight
    }

    /// Hands a batch over (only when not busy).
    pub fn send(&mut self, batch: Vec<Write>) -> Result<(), WorkerError> {
        debug_assert!(!self.in_flight);
        self.tx
            .send(Request::Apply(batch))
            .map_err(|_| WorkerError::StoreUnavailable)?;
        self.in_flight = true;
        Ok(())
    }

    /// The outcome of the batch in flight, waiting at most `wait`.
    pub fn outcome(&mut self, wait: Duration) -> Option<Outcome> {
        if !self.in_flight {
            return None;
        }
        match self.rx.recv_timeout(wait) {
            Ok(o) => {
                self.in_flight = false;
                Some(o)
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                self.in_flight = false;
                Some(Err("the store writer thread is gone".into()))
            }
        }
    }

    pub fn reopen(&self, path: PathBuf) {
        let _ = self.tx.send(Request::Reopen(path));
    }
}

fn serve(mut path: PathBuf, requests: Receiver<Request>, done: Sender<Outcome>) {
    let mut store: Option<Store> = None;
    for req in requests {
        let batch = match req {
            Request::Reopen(p) => {
                path = p;
                store = None;
                continue;
            }
            Request::Apply(batch) => batch,
        };
        let outcome = (|| -> Result<(), WorkerError> {
            if store.is_none() {
                let s = Store::open(&path)?;
                s.set_busy_timeout(WRITER_BUSY_TIMEOUT)?;
                store = Some(s);
            }
            let s = store.as_mut().expect("opened above");
            if !Apply::apply(s, &batch, true)? {
                // With the state lock held this means a hand edit or a
                // restored backup: memory wins, so the chain of claims
                // goes on (refusing them again every turn would lose them).
                tracing::error!("store refused a claim (next_run_at moved underneath us); writing the claims over it and continuing from memory");
                Apply::apply(s, &batch, false)?;
            }
            Ok(())
        })();
        if done.send(outcome.map_err(|e| e.to_string())).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use cronwarden_shared::store::{JobRow, Write};

    use super::*;
    use crate::journal::Journal;

    /// Issue 14: a store locked by another connection (a backup) never
    /// holds the loop: the batch stays in flight or held (not durable,
    /// reported) while the loop goes on, and is committed once the lock
    /// goes.
    #[test]
    fn a_locked_store_leaves_the_batch_held_and_commits_it_later() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut store = Store::open(&path).unwrap();
        store
            .reconcile(&[JobRow {
                name: "a".into(),
                schedule: "* * * * * *".into(),
                timezone: "UTC".into(),
                next_run_at: None,
                last_scheduled_at: None,
                paused: false,
            }])
            .unwrap();
        let mut writer = Writer::start(path.clone()).unwrap();
        let mut j = Journal::new();
        let wait = Duration::from_millis(10);

        let backup = rusqlite::Connection::open(&path).unwrap();
        backup.execute_batch("BEGIN EXCLUSIVE").unwrap();
        j.extend([Write::Paused {
            job: "a".into(),
            paused: true,
        }]);
        j.flush_through(&mut writer, wait, Duration::ZERO);
        // The loop is back while the lock is held: nothing durable yet.
        assert!(!j.settled());
        assert_eq!(j.held(), 1);
        j.flush_through(&mut writer, wait, Duration::ZERO);
        // Reported (slow, or the writer's own wait for the lock ran out).
        assert!(j.error().is_some());
        assert_eq!(j.held(), 1);
        backup.execute_batch("COMMIT").unwrap();
        drop(backup);
        let until = std::time::Instant::now() + Duration::from_secs(60);
        while !j.settled() {
            assert!(std::time::Instant::now() < until, "never committed");
            j.flush_through(
                &mut writer,
                Duration::from_millis(100),
                Duration::from_secs(60),
            );
        }
        assert_eq!(j.error(), None);
        assert!(store.jobs().unwrap()[0].paused);
    }
}
