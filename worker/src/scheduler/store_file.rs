//! The scheduler's side of the store file: handing the journal's writes
//! to the writer, settling them at exit, what `store_error` says, and
//! watching the file's identity (deleted or replaced under the running
//! worker: recovered, reopened and written back).

use std::time::Duration;

use cronwarden_shared::store::{self, Store, Write};
use tokio::time::Instant;

use super::{Scheduler, IDENTITY_EVERY, IDENTITY_NOTE_FOR, SLOW_WRITE};
use crate::{
    clock::wall_now, error::WorkerError, takeover::LOOP_BUSY_TIMEOUT, writer::file_identity,
    writer::Writer,
};

impl Scheduler {
    /// Hands the journal's writes to the store, waiting at most `wait`.
    pub(super) fn write(&mut self, wait: Duration) {
        self.write_then(wait, || ());
    }

    /// [`Scheduler::write`], doing `between` once the writes are handed to
    /// the writer thread and before waiting for them.
    pub(super) fn write_then<T>(&mut self, wait: Duration, between: impl FnOnce() -> T) -> T {
        match (self.store_down, self.writer.as_mut()) {
            // The stand-in would take the writes and keep none of them.
            (true, _) => {
                let t = between();
                self.journal
                    .flush(&mut |_: &[Write], _: bool| Err(WorkerError::StoreUnavailable));
                t
            }
            (false, Some(w)) => self.journal.flush_through(w, wait, SLOW_WRITE, between),
            (false, None) => {
                let t = between();
                self.journal.flush(&mut self.store);
                t
            }
        }
    }

    /// At exit: the writes planned last reach the store (bounded).
    pub(super) fn settle_writes(&mut self, within: Duration) {
        let until = Instant::now() + within;
        while !self.journal.settled() && Instant::now() < until {
            self.write(Duration::from_millis(200));
            if self.journal.error().is_some() && !self.writer.as_ref().is_some_and(Writer::busy) {
                // A failing store: what is held is lost with this
                // worker, as with a kill (the supervisor has its copy).
                break;
            }
        }
    }

    /// At exit, once every write is stored: the next worker need not doubt
    /// that this one's fires are all recorded (see `Store::mark_worker_live`).
    pub(super) fn mark_stopped(&mut self) {
        if self.store_down || !self.journal.settled() || self.journal.error().is_some() {
            return;
        }
        if let Err(e) = self.store.mark_worker_stopped() {
            tracing::warn!("{e}: the next worker will take this one for killed");
        }
    }

    /// What `store_error` says: a failing store, and for a while after it,
    /// a store file that was deleted or replaced.
    pub(super) fn store_error(&mut self) -> Option<String> {
        if self
            .identity_note
            .as_ref()
            .is_some_and(|(_, until)| Instant::now() >= *until)
        {
            self.identity_note = None;
        }
        match (self.journal.error(), &self.identity_note) {
            (Some(e), Some((n, _))) => Some(format!("{n}; {e}")),
            (Some(e), None) => Some(e.to_string()),
            (None, Some((n, _))) => Some(n.clone()),
            (None, None) => None,
        }
    }

    /// Checks (every [`IDENTITY_EVERY`]) that the store path still names
    /// the file the connection has open. SQLite keeps writing to a file
    /// deleted under it, and every record would be gone at the next start.
    pub(super) fn check_store_identity(&mut self) {
        let now = Instant::now();
        if now < self.next_identity_check {
            return;
        }
        self.next_identity_check = now + IDENTITY_EVERY;
        if self.store_down {
            return self.recover_store("could not be reopened", false);
        }
        let what = match (file_identity(&self.store_path), self.identity) {
            (Ok(Some(id)), Some(known)) if id == known => return,
            (Ok(Some(id)), None) => {
                self.identity = Some(id);
                return;
            }
            (Ok(None), _) => "was deleted",
            (Ok(Some(_)), Some(_)) => "was replaced by another file",
            (Err(e), _) => {
                tracing::warn!(path = %self.store_path.display(), "cannot check the store file: {e}");
                return;
            }
        };
        self.recover_store(what, true);
    }

    /// The store file was deleted or replaced under the open connection.
    /// The old file's content is saved (the open connection still reads
    /// it): copied back to the path if the file was deleted, or aside
    /// (`cronwarden.db.saved-<time>`) if another file took its place. Then
    /// the store at the path is opened and what this worker holds is
    /// written back: every job's row and armed fire, the run-id
    /// reservation, the records of runs in flight and queued fires (the
    /// journal's held writes follow at the next flush). Reported at once,
    /// critical, with the loss, if any.
    pub(super) fn recover_store(&mut self, what: &str, save_old: bool) {
        let path = self.store_path.clone();
        let stamp = wall_now().strftime("%Y%m%dT%H%M%SZ").to_string();
        let saved = path.with_file_name(format!("{}.saved-{stamp}", store::FILE_NAME));
        let copied: Result<(), String> = if save_old {
            self.store.copy_into(&saved).map_err(|e| e.to_string())
        } else {
            Err("it was lost before".into())
        };
        // The old connection closes before a new one opens the path: on
        // close it removes `<path>-wal` and `-shm` by name.
        match Store::open_in_memory() {
            Ok(stand_in) => drop(std::mem::replace(&mut self.store, stand_in)),
            Err(e) => {
                tracing::error!("cannot swap the store: {e}");
                return;
            }
        }
        let deleted = what == "was deleted";
        let (target, history) = match (&copied, deleted) {
            (Ok(()), true) => match std::fs::rename(&saved, &path) {
                Ok(()) => (path.clone(), "its whole history was copied back".to_string()),
                Err(e) => (
                    saved.clone(),
                    format!("its history was saved to {} but cannot be moved back ({e}); writing there", saved.display()),
                ),
            },
            (Ok(()), false) => (
                path.clone(),
                format!("its history was saved to {}", saved.display()),
            ),
            (Err(e), _) => (
                path.clone(),
                format!("its history could not be saved ({e}) and is lost; the schedule and runs in flight are written back"),
            ),
        };
        let mut store = match Store::open(&target).and_then(|s| {
            s.set_busy_timeout(LOOP_BUSY_TIMEOUT)?;
            Ok(s)
        }) {
            Ok(s) => s,
            Err(e) if copied.is_ok() && target != saved => {
                tracing::error!("{e}; writing to the saved copy {} instead", saved.display());
                match Store::open(&saved) {
                    Ok(s) => s,
                    Err(e) => return self.store_lost(&path, what, e.to_string()),
                }
            }
            Err(e) => return self.store_lost(&path, what, e.to_string()),
        };
        let (rows, mut writes) = self.plan.restore();
        writes.extend(
            self.running
                .values()
                .map(|r| Write::Insert(r.record.clone())),
        );
        let restored = store
            .reconcile(&rows)
            .and_then(|_| store.apply_overriding(&writes));
        if let Err(e) = &restored {
            tracing::error!("writing back to the recreated store failed: {e}; held for retry");
            self.journal.extend(writes);
        }
        self.identity = file_identity(store.path()).ok().flatten();
        self.store_path = store.path().to_path_buf();
        if let Some(w) = &self.writer {
            w.reopen(self.store_path.clone());
        }
        self.store = store;
        self.store_down = false;
        let note = format!(
            "critical: the store file {} {what} under the running worker; it was reopened ({history}; the schedule, {} run(s) in flight and the held writes are written back)",
            path.display(),
            self.running.len()
        );
        tracing::error!("{note}");
        self.identity_note = Some((note, Instant::now() + IDENTITY_NOTE_FOR));
        // Say so now, not at the next interval.
        self.next_heartbeat = Instant::now();
    }

    /// No store could be reopened: reported, and tried again at the next
    /// check (the stand-in holds nothing durable, so writes are held).
    pub(super) fn store_lost(&mut self, path: &std::path::Path, what: &str, error: String) {
        let note = format!(
            "critical: the store file {} {what} under the running worker and cannot be reopened: {error}",
            path.display()
        );
        tracing::error!("{note}");
        self.identity = None;
        self.store_down = true;
        self.journal.set_error(note.clone());
        self.identity_note = Some((note, Instant::now() + IDENTITY_NOTE_FOR));
        self.next_heartbeat = Instant::now();
    }
}
