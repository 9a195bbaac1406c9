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
//!
//! The file a batch lands in is checked, before and after its commit:
//! SQLite keeps writing to a file deleted or replaced under an open
//! connection, so a batch committed there is reported failed (held, and
//! applied again, idempotently, to the file the loop recreates and hands
//! over by [`Writer::reopen`]); meanwhile the writer never creates a
//! store file itself (issue 14: records after a deletion were gone).

use std::{
    path::{Path, PathBuf},
    sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender, TryRecvError},
    time::Duration,
};

use cronwarden_shared::store::{Store, Write};

use crate::{error::WorkerError, journal::Apply, spawner::Opener};

/// How long a batch may wait for another connection's lock on the
/// writer's thread (off the loop, so longer than the loop's own 100 ms).
const WRITER_BUSY_TIMEOUT: Duration = Duration::from_secs(1);

enum Request {
    /// A batch, and the gates of the starts waiting for it to commit.
    Apply(Vec<Write>, Vec<Opener>),
    /// The store file was recreated or reopened at this path.
    Reopen(PathBuf),
}

/// The outcome of one batch: the error text if it was not committed.
pub(crate) type Outcome = Result<(), String>;

pub(crate) struct Writer {
    tx: Sender<Request>,
    rx: Receiver<Outcome>,
    in_flight: bool,
    /// Gates to open with the next batch's commit.
    openers: Vec<Opener>,
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
            openers: Vec::new(),
        })
    }

    /// A batch is handed over and its outcome not collected yet.
    pub fn busy(&self) -> bool {
        self.in_flight
    }

    /// Starts waiting at their gates for records now planned (pending in
    /// the journal): the thread opens each as soon as a batch commits, as
    /// every batch holds all that is planned and not yet stored. A batch
    /// that fails drops them unopened (the loop's keys decide then).
    pub fn open_on_commit(&mut self, openers: impl IntoIterator<Item = Opener>) {
        self.openers.extend(openers);
    }

    /// Hands a batch over (only when not busy).
    pub fn send(&mut self, batch: Vec<Write>) -> Result<(), WorkerError> {
        debug_assert!(!self.in_flight);
        let openers = std::mem::take(&mut self.openers);
        self.tx
            .send(Request::Apply(batch, openers))
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

/// The (device, inode) of a file; `Ok(None)` when it does not exist.
pub(crate) fn file_identity(path: &Path) -> std::io::Result<Option<(u64, u64)>> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some((m.dev(), m.ino()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The writer's connection and the identity of the file it opened.
struct Open {
    store: Store,
    identity: (u64, u64),
}

/// Why the path no longer names the file the connection writes, if so.
fn moved(path: &Path, identity: (u64, u64)) -> Option<String> {
    match file_identity(path) {
        Ok(Some(id)) if id == identity => None,
        Ok(Some(_)) => Some(format!(
            "the store file {} was replaced under the writer",
            path.display()
        )),
        Ok(None) => Some(format!(
            "the store file {} was deleted under the writer",
            path.display()
        )),
        // Cannot tell: the commit stands.
        Err(_) => None,
    }
}

/// Writes committed since the last checkpoint after which the writer
/// checkpoints, once no batch waits: about two WAL pages a write, well
/// under SQLite's own 1,000-page threshold, which it no longer applies
/// (issue 18: that checkpoint ran inside the commit a start waited for,
/// with two fsyncs, every few hundred fires).
const CHECKPOINT_AFTER: usize = 256;
/// Past this many, it checkpoints even with a batch waiting: a stream of
/// bursts still keeps the WAL bounded.
const CHECKPOINT_AT_LATEST: usize = 4 * CHECKPOINT_AFTER;

fn serve(mut path: PathBuf, requests: Receiver<Request>, done: Sender<Outcome>) {
    let mut open: Option<Open> = None;
    let mut since_checkpoint = 0;
    let mut next = None;
    loop {
        let Some(req) = next.take().or_else(|| requests.recv().ok()) else {
            return;
        };
        let (batch, openers) = match req {
            Request::Reopen(p) => {
                path = p;
                open = None;
                continue;
            }
            Request::Apply(batch, openers) => (batch, openers),
        };
        let outcome = apply(&path, &mut open, &batch);
        if outcome.is_ok() {
            // Committed: their starts go on now, not a hop later through
            // the loop (issue 18).
            openers.into_iter().for_each(Opener::open);
            since_checkpoint += batch.len();
        }
        if done.send(outcome).is_err() {
            return;
        }
        if since_checkpoint < CHECKPOINT_AFTER {
            continue;
        }
        // Off the commits' path: a batch waiting goes first.
        match requests.try_recv() {
            Ok(req) if since_checkpoint < CHECKPOINT_AT_LATEST => {
                next = Some(req);
                continue;
            }
            Ok(req) => next = Some(req),
            Err(TryRecvError::Empty) => {}
            Err(TryRecvError::Disconnected) => return,
        }
        if let Some(o) = &open {
            match o.store.checkpoint() {
                Ok(()) => since_checkpoint = 0,
                Err(e) => tracing::debug!("{e}; tried again after the next batch"),
            }
        }
    }
}

/// One batch, committed to the file at `path` and nowhere else.
fn apply(path: &Path, open: &mut Option<Open>, batch: &[Write]) -> Outcome {
    if let Some(why) = open.as_ref().and_then(|o| moved(path, o.identity)) {
        *open = None;
        return Err(format!("{why}; the batch is held for the recreated file"));
    }
    if open.is_none() {
        // Only an existing file: one deleted under us is the loop's to
        // recreate with what it holds (an empty store created here would
        // pass for the real one).
        let identity = match file_identity(path) {
            Ok(Some(id)) => id,
            Ok(None) => {
                return Err(format!(
                    "the store file {} is missing; the batch is held until it is recreated",
                    path.display()
                ))
            }
            Err(e) => return Err(format!("store {}: {e}", path.display())),
        };
        let store = Store::open(path)
            .and_then(|s| {
                s.set_busy_timeout(WRITER_BUSY_TIMEOUT)?;
                s.no_auto_checkpoint()?;
                Ok(s)
            })
            .map_err(|e| e.to_string())?;
        *open = Some(Open { store, identity });
    }
    let o = open.as_mut().expect("opened above");
    let committed = (|| -> Result<(), WorkerError> {
        if !Apply::apply(&mut o.store, batch, true)? {
            // With the state lock held this means a hand edit or a
            // restored backup: memory wins, so the chain of claims
            // goes on (refusing them again every turn would lose them).
            tracing::error!("store refused a claim (next_run_at moved underneath us); writing the claims over it and continuing from memory");
            Apply::apply(&mut o.store, batch, false)?;
        }
        Ok(())
    })();
    committed.map_err(|e| e.to_string())?;
    // Deleted while the batch waited for a lock or was being committed:
    // it landed in the unlinked file.
    if let Some(why) = moved(path, o.identity) {
        *open = None;
        return Err(format!(
            "{why} while a batch was committed; it is held for the recreated file"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use cronwarden_shared::store::{JobRow, Write};

    use super::*;
    use crate::journal::Journal;

    fn row() -> JobRow {
        JobRow {
            name: "a".into(),
            schedule: "* * * * * *".into(),
            timezone: "UTC".into(),
            next_run_at: None,
            last_scheduled_at: None,
            paused: false,
        }
    }

    fn paused(on: bool) -> Write {
        Write::Paused {
            job: "a".into(),
            paused: on,
        }
    }

    fn remove_store(path: &Path) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }

    fn outcome(writer: &mut Writer) -> Outcome {
        writer
            .outcome(Duration::from_secs(60))
            .expect("no outcome within a minute")
    }

    /// Issue 14: the store's files deleted under a running instance. A
    /// batch is never reported committed unless it is in the file the
    /// path names: one that lands in (or would go to) the deleted file
    /// fails and stays held, the writer creates no empty store in its
    /// place, and once the loop recreates the file and hands it over the
    /// same batch commits there.
    #[test]
    fn a_batch_is_never_committed_into_a_deleted_store_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        Store::open(&path).unwrap().reconcile(&[row()]).unwrap();
        let mut writer = Writer::start(path.clone()).unwrap();
        writer.send(vec![paused(true)]).unwrap();
        assert_eq!(outcome(&mut writer), Ok(()));

        // Deleted between two batches.
        remove_store(&path);
        writer.send(vec![paused(false)]).unwrap();
        let err = outcome(&mut writer).unwrap_err();
        assert!(err.contains("deleted"), "{err}");
        assert!(!path.exists(), "the writer created a store file");
        writer.send(vec![paused(false)]).unwrap();
        assert!(outcome(&mut writer).is_err());
        assert!(!path.exists(), "the writer created a store file");

        // Recreated by the loop and handed over: the held batch lands.
        let mut store = Store::open(&path).unwrap();
        store.reconcile(&[row()]).unwrap();
        store.apply(&[paused(true)]).unwrap();
        writer.reopen(path.clone());
        writer.send(vec![paused(false)]).unwrap();
        assert_eq!(outcome(&mut writer), Ok(()));
        assert!(!store.jobs().unwrap()[0].paused);

        // Deleted while a batch waits for another connection's lock: it
        // commits into the unlinked file (or finds it gone) and fails.
        let backup = rusqlite::Connection::open(&path).unwrap();
        backup.execute_batch("BEGIN EXCLUSIVE").unwrap();
        writer.send(vec![paused(true)]).unwrap();
        remove_store(&path);
        backup.execute_batch("COMMIT").unwrap();
        drop(backup);
        assert!(outcome(&mut writer).is_err());
        assert!(!path.exists(), "the writer created a store file");
    }

    /// Issue 18: a start waiting at its gate for its record goes on when
    /// the batch holding it commits, opened by the writer before the loop
    /// hears of the commit; a batch that fails leaves the gate to the
    /// loop's key (dropped unopened here, it closes).
    #[test]
    fn a_committed_batch_opens_its_gates_and_a_failed_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut writer = Writer::start(path.clone()).unwrap();
        // No store file yet: the batch fails.
        let (refused, key) = crate::spawner::gate();
        writer.open_on_commit([key.opener()]);
        writer.send(vec![paused(true)]).unwrap();
        assert!(outcome(&mut writer).is_err());
        drop(key);
        assert!(!refused.wait(Duration::ZERO), "opened by a failed batch");

        Store::open(&path).unwrap().reconcile(&[row()]).unwrap();
        let (gate, key) = crate::spawner::gate();
        writer.open_on_commit([key.opener()]);
        writer.send(vec![paused(true)]).unwrap();
        assert_eq!(outcome(&mut writer), Ok(()));
        // Open already when the outcome came; the loop's key after it
        // changes nothing.
        drop(key);
        assert!(gate.wait(Duration::ZERO), "not opened by its commit");
    }

    /// Issue 18: the writer checkpoints the WAL itself, after a batch and
    /// not inside its commit, every [`CHECKPOINT_AFTER`] writes: after that
    /// many small batches (far fewer WAL pages than SQLite's own
    /// threshold), the database file alone holds them.
    #[test]
    fn the_writer_checkpoints_after_its_batches_not_inside_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        Store::open(&path).unwrap().reconcile(&[row()]).unwrap();
        let mut writer = Writer::start(path.clone()).unwrap();
        let main_file_alone = || {
            let copy = dir.path().join("copy.db");
            for suffix in ["-wal", "-shm"] {
                let _ = std::fs::remove_file(dir.path().join(format!("copy.db{suffix}")));
            }
            std::fs::copy(&path, &copy).ok()?;
            let c = rusqlite::Connection::open(&copy).ok()?;
            c.query_row("SELECT paused FROM jobs WHERE name = 'a'", [], |r| {
                r.get::<_, bool>(0)
            })
            .ok()
        };
        for _ in 0..CHECKPOINT_AFTER - 1 {
            writer.send(vec![paused(true)]).unwrap();
            assert_eq!(outcome(&mut writer), Ok(()));
        }
        assert_eq!(main_file_alone(), Some(false), "checkpointed early");
        writer.send(vec![paused(true)]).unwrap();
        assert_eq!(outcome(&mut writer), Ok(()));
        let until = std::time::Instant::now() + Duration::from_secs(60);
        while main_file_alone() != Some(true) {
            assert!(
                std::time::Instant::now() < until,
                "not checkpointed after {CHECKPOINT_AFTER} writes"
            );
            std::thread::yield_now();
        }
    }

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
        j.flush_through(&mut writer, wait, Duration::ZERO, || ());
        // The loop is back while the lock is held: nothing durable yet.
        assert!(!j.settled());
        assert_eq!(j.held(), 1);
        j.flush_through(&mut writer, wait, Duration::ZERO, || ());
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
                || (),
            );
        }
        assert_eq!(j.error(), None);
        assert!(store.jobs().unwrap()[0].paused);
    }
}
