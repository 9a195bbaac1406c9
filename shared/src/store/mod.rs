//! The embedded store: one SQLite file, `<state_dir>/cronwarden.db`.
//!
//! Tables (an operator can read them with `sqlite3`):
//! - `jobs`: per-job schedule state: the next fire to claim, the last
//!   scheduled time (the `@every` anchor), paused;
//! - `runs`: every run and every skipped fire, one row per record (with
//!   `containment`, since v2: the run's cgroup and what it cost, as JSON;
//!   `may_repeat`, since v3: a catch-up that may repeat fires, see
//!   `recovery`);
//! - `alerts`: alert history;
//! - `meta`: the schema version, the run-id reservation, whether the last
//!   worker ended with its writes stored (`worker_live`, see `recovery`),
//!   and the boot each `@reboot` job last fired in (`reboot.rs`).
//!
//! `marks` is the light, bounded read behind the status page's strips.
//!
//! Instants are stored as fixed-width RFC 3339 UTC text with nanoseconds, so
//! they sort as text and read as times.
//!
//! Crash safety: WAL with `synchronous = NORMAL` survives a `kill -9` of any
//! process at any point (only a power loss can drop the last commits). The
//! worker claims a fire (moves `next_run_at` from T to T' only if it is
//! still T) and inserts its record in one transaction *before* the job is
//! spawned, so no acknowledged fire is ever lost, and a run found `running`
//! at start-up belonged to a dead worker and is recorded `lost`.
//!
//! A file that is not a cronwarden store is never overwritten: opening it
//! fails with an error that names it.
//!
//! Here: opening, the schema, job rows, a turn's writes. Apart: `runs`
//! (the runs table, read and written), `recovery` (a dead worker's runs
//! in flight and run ids), `adopt` (the supervisor's copy of what a dead
//! worker held), `alerts` (the history).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use jiff::Timestamp;
use rusqlite::{params, Connection, OpenFlags};

use crate::status::RunRecord;

mod adopt;
mod alerts;
mod recovery;
mod runs;
pub use adopt::Adopted;
use runs::{insert_run, parse_outcome, parse_skip, parse_trigger};

mod marks;
mod reboot;
pub use marks::RunMark;

/// The store's file name under `state_dir`.
pub const FILE_NAME: &str = "cronwarden.db";
/// The schema this build writes; older stores are migrated forward.
const SCHEMA_VERSION: i64 = 3;
/// Runs kept per job by default.
pub(crate) const DEFAULT_RETENTION: u32 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: cannot open: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "store {path} is not a usable cronwarden database ({detail}); it was left untouched: \
         move it aside (or restore a backup) and start again"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error("store {path} has schema version {found}, newer than this cronwarden understands ({SCHEMA_VERSION}); upgrade cronwarden")]
    TooNew { path: PathBuf, found: i64 },
    #[error("store {path}: {what}: {source}")]
    Sql {
        path: PathBuf,
        what: &'static str,
        source: rusqlite::Error,
    },
}

/// A job's persisted schedule state.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    pub name: String,
    pub schedule: String,
    pub timezone: String,
    pub next_run_at: Option<Timestamp>,
    pub last_scheduled_at: Option<Timestamp>,
    pub paused: bool,
}

/// A job's new schedule and zone, stored with the claim that switches the
/// job to it: until that claim commits, the row keeps the schedule its
/// `next_run_at` belongs to, so fires missed under the old schedule are
/// still found (and accounted) after a crash.
#[derive(Debug, Clone, PartialEq)]
pub struct Rearm {
    pub schedule: String,
    pub timezone: String,
}

/// One write of a loop turn.
#[derive(Debug, Clone)]
pub enum Write {
    /// Move a job's `next_run_at` from `from` to `to` (compare-and-set);
    /// with `rearm`, also switch the row to a new schedule and zone (and
    /// forget the old `@every` anchor).
    Claim {
        job: String,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        last_scheduled_at: Option<Timestamp>,
        rearm: Option<Rearm>,
    },
    /// Run ids up to `upto` may be in use: a restarted worker starts above
    /// it, so an id used by a worker whose records never reached the store
    /// is never given to another run (see [`Store::first_free_run_id`]).
    ReserveIds {
        upto: u64,
    },
    /// A job's row as the config wants it, whatever was stored (a job
    /// added while the store could not reconcile).
    UpsertJob(JobRow),
    /// A job's row removed (a job removed while the store could not
    /// reconcile); its runs stay.
    RemoveJob {
        job: String,
    },
    /// A run that is starting (outcome `running`) or a skip.
    Insert(RunRecord),
    /// A run's final record.
    Finish(RunRecord),
    /// A skip record that proved not to be this host's: several hosts, a
    /// fire missed here that a peer ran (recorded `misfire` at once, so a
    /// worker killed before the ledger answers loses nothing). Only a
    /// skip is ever removed; a missing row is no error.
    Forget {
        run_id: u64,
    },
    Paused {
        job: String,
        paused: bool,
    },
    /// An `@reboot` job fired in this boot (see `reboot.rs`).
    RebootFired {
        job: String,
        boot_id: String,
    },
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

fn ts_text(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S.%9fZ").to_string()
}

fn ts_parse(s: Option<String>) -> Option<Timestamp> {
    s.and_then(|s| s.parse().ok())
}

const SCHEMA_V1: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE jobs (
    name              TEXT PRIMARY KEY,
    schedule          TEXT NOT NULL,
    timezone          TEXT NOT NULL,
    next_run_at       TEXT,
    last_scheduled_at TEXT,
    paused            INTEGER NOT NULL DEFAULT 0,
    updated_at        TEXT NOT NULL
);
CREATE TABLE runs (
    id           INTEGER PRIMARY KEY,
    job          TEXT NOT NULL,
    scheduled_at TEXT,
    covers       TEXT NOT NULL DEFAULT '[]',
    trigger      TEXT NOT NULL,
    started_at   TEXT,
    finished_at  TEXT,
    outcome      TEXT NOT NULL,
    skip_reason  TEXT,
    exit_code    INTEGER,
    signal       INTEGER,
    duration_ms  INTEGER,
    stdout_bytes INTEGER NOT NULL DEFAULT 0,
    stderr_bytes INTEGER NOT NULL DEFAULT 0,
    error        TEXT,
    stdout_tail  TEXT NOT NULL DEFAULT '',
    stderr_tail  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX runs_by_job ON runs(job, id);
CREATE INDEX runs_by_outcome ON runs(outcome) WHERE outcome = 'running';
CREATE TABLE alerts (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL,
    job         TEXT,
    severity    TEXT NOT NULL,
    opened_at   TEXT NOT NULL,
    resolved_at TEXT,
    summary     TEXT NOT NULL,
    details     TEXT NOT NULL DEFAULT '{}'
);
";

impl Store {
    /// Opens (creating if absent) the store for writing, migrating it.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.into(),
            source,
        })?;
        let mut store = Store {
            conn,
            path: path.into(),
        };
        store.setup()?;
        Ok(store)
    }

    /// A store in memory: a stand-in while the worker swaps its store file
    /// (the old connection must close before a new one opens the path).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        Store::open(Path::new(":memory:"))
    }

    /// Opens an existing store read-only (the supervisor's and CLI's view).
    pub fn open_readonly(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Open {
            path: path.into(),
            source,
        })?;
        conn.busy_timeout(Duration::from_secs(2))
            .map_err(|source| StoreError::Open {
                path: path.into(),
                source,
            })?;
        Ok(Store {
            conn,
            path: path.into(),
        })
    }

    fn sql(&self, what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Sql {
            path: self.path.clone(),
            what,
            source,
        }
    }

    fn setup(&mut self) -> Result<(), StoreError> {
        let corrupt = |e: rusqlite::Error| StoreError::Corrupt {
            path: self.path.clone(),
            detail: e.to_string(),
        };
        // Any read fails on a file that is not SQLite; nothing is written yet.
        let tables: i64 = self
            .conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(corrupt)?;
        let check: String = self
            .conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(corrupt)?;
        if check != "ok" {
            return Err(StoreError::Corrupt {
                path: self.path.clone(),
                detail: format!("integrity check: {check}"),
            });
        }
        let version: i64 = if tables == 0 {
            0
        } else {
            self.conn
                .query_row(
                    "SELECT value FROM meta WHERE key = 'schema_version'",
                    [],
                    |r| r.get::<_, String>(0),
                )
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| StoreError::Corrupt {
                    path: self.path.clone(),
                    detail: "it has tables but no cronwarden schema version".into(),
                })?
        };
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found: version,
            });
        }
        self.conn
            .busy_timeout(Duration::from_secs(5))
            .map_err(self.sql("busy timeout"))?;
        self.conn
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
            )
            .map_err(self.sql("setting WAL mode"))?;
        if version < 1 {
            let tx = self.conn.transaction().map_err(|source| StoreError::Sql {
                path: self.path.clone(),
                what: "migrating",
                source,
            })?;
            tx.execute_batch(SCHEMA_V1)
                .and_then(|_| {
                    tx.execute(
                        "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)",
                        ["1"],
                    )
                })
                .and_then(|_| tx.commit())
                .map_err(|source| StoreError::Sql {
                    path: self.path.clone(),
                    what: "creating schema v1",
                    source,
                })?;
        }
        if version < 2 {
            self.migrate_v2()?;
        }
        if version < 3 {
            self.migrate_v3()?;
        }
        // Future versions: `if version < 4 { ... }` here, each in its own transaction.
        Ok(())
    }

    /// v2: `runs.containment`, what each run was held in and cost (its
    /// cgroup, CPU, peak memory, leftovers killed, output holder) as JSON.
    fn migrate_v2(&mut self) -> Result<(), StoreError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|source| StoreError::Sql {
            path: path.clone(),
            what: "migrating to schema v2",
            source,
        })?;
        tx.execute_batch(
            "ALTER TABLE runs ADD COLUMN containment TEXT;
             UPDATE meta SET value = '2' WHERE key = 'schema_version';",
        )
        .and_then(|_| tx.commit())
        .map_err(|source| StoreError::Sql {
            path,
            what: "migrating to schema v2",
            source,
        })
    }

    /// v3: `runs.may_repeat`, set on the one catch-up per job that may
    /// repeat fires a dead worker ran while the store could not commit.
    fn migrate_v3(&mut self) -> Result<(), StoreError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|source| StoreError::Sql {
            path: path.clone(),
            what: "migrating to schema v3",
            source,
        })?;
        tx.execute_batch(
            "ALTER TABLE runs ADD COLUMN may_repeat INTEGER NOT NULL DEFAULT 0;
             UPDATE meta SET value = '3' WHERE key = 'schema_version';",
        )
        .and_then(|_| tx.commit())
        .map_err(|source| StoreError::Sql {
            path,
            what: "migrating to schema v3",
            source,
        })
    }

    /// The persisted state of every job (including ones no longer configured).
    pub fn jobs(&self) -> Result<Vec<JobRow>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT name, schedule, timezone, next_run_at, last_scheduled_at, paused FROM jobs ORDER BY name")
            .map_err(self.sql("reading jobs"))?;
        let rows = st
            .query_map([], |r| {
                Ok(JobRow {
                    name: r.get(0)?,
                    schedule: r.get(1)?,
                    timezone: r.get(2)?,
                    next_run_at: ts_parse(r.get(3)?),
                    last_scheduled_at: ts_parse(r.get(4)?),
                    paused: r.get::<_, i64>(5)? != 0,
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(self.sql("reading jobs"))?;
        Ok(rows)
    }

    /// Makes the `jobs` table match `wanted`: rows of jobs that are gone
    /// are deleted (their runs stay) and new ones inserted. A row whose
    /// schedule or zone changed is returned *as stored* (old schedule, old
    /// next fire): the plan accounts the fires missed under the old
    /// schedule, then switches the row with a claim carrying a [`Rearm`],
    /// in the same transaction as those fires' records. Returns the rows in
    /// the order of `wanted`.
    pub fn reconcile(&mut self, wanted: &[JobRow]) -> Result<Vec<JobRow>, StoreError> {
        let existing = self.jobs()?;
        let now = ts_text(Timestamp::now());
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|source| StoreError::Sql {
            path: path.clone(),
            what: "reconcile",
            source,
        })?;
        let mut out = vec![];
        let res: rusqlite::Result<()> = (|| {
            for old in &existing {
                if !wanted.iter().any(|w| w.name == old.name) {
                    tx.execute("DELETE FROM jobs WHERE name = ?1", [&old.name])?;
                }
            }
            for w in wanted {
                match existing.iter().find(|e| e.name == w.name) {
                    Some(e) => out.push(e.clone()),
                    None => {
                        tx.execute(
                            "INSERT INTO jobs (name, schedule, timezone, next_run_at, last_scheduled_at, paused, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                            params![w.name, w.schedule, w.timezone, w.next_run_at.map(ts_text), w.last_scheduled_at.map(ts_text), w.paused as i64, now],
                        )?;
                        out.push(w.clone());
                    }
                }
            }
            Ok(())
        })();
        res.and_then(|_| tx.commit())
            .map_err(|source| StoreError::Sql {
                path,
                what: "reconcile",
                source,
            })?;
        Ok(out)
    }

    /// Writes a complete, consistent copy of this store (committed WAL
    /// frames included) to `dest`, which must not exist: how a store whose
    /// file was deleted under the open connection is saved.
    pub fn copy_into(&self, dest: &Path) -> Result<(), StoreError> {
        self.conn
            .execute("VACUUM INTO ?1", [dest.to_string_lossy()])
            .map(|_| ())
            .map_err(self.sql("copying the store"))
    }

    /// How long a statement waits for another connection's lock before
    /// failing with "database is locked" (5 s after [`Store::open`]).
    pub fn set_busy_timeout(&self, wait: Duration) -> Result<(), StoreError> {
        self.conn
            .busy_timeout(wait)
            .map_err(self.sql("setting the busy timeout"))
    }

    /// Leaves checkpoints to [`Store::checkpoint`]: SQLite's own, after
    /// the commit that takes the WAL past 1,000 pages, runs inside that
    /// commit, with two fsyncs, before it returns.
    pub fn no_auto_checkpoint(&self) -> Result<(), StoreError> {
        self.conn
            .pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(self.sql("turning off automatic checkpoints"))
    }

    /// Copies what the WAL holds into the database file, as far as no
    /// reader prevents it (a passive checkpoint: it waits for no one).
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .map_err(self.sql("checkpointing the WAL"))
    }

    /// The file this store was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies a turn's writes in one transaction. A claim whose `from` no
    /// longer matches is refused: the whole batch is rolled back and
    /// `Ok(false)` returned (another scheduler moved the job).
    pub fn apply(&mut self, writes: &[Write]) -> Result<bool, StoreError> {
        self.apply_checked(writes, true)
    }

    /// As [`Store::apply`], but claims set `next_run_at` whatever it was:
    /// the worker's memory wins over a row that moved underneath it (a
    /// hand edit, a restored backup). Never refuses.
    pub fn apply_overriding(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        self.apply_checked(writes, false).map(|_| ())
    }

    fn apply_checked(&mut self, writes: &[Write], check: bool) -> Result<bool, StoreError> {
        if writes.is_empty() {
            return Ok(true);
        }
        let path = self.path.clone();
        let now = ts_text(Timestamp::now());
        let tx = self.conn.transaction().map_err(|source| StoreError::Sql {
            path: path.clone(),
            what: "begin",
            source,
        })?;
        let mut claimed_all = true;
        let res: rusqlite::Result<()> = (|| {
            for w in writes {
                match w {
                    Write::Claim {
                        job,
                        from,
                        to,
                        last_scheduled_at,
                        rearm,
                    } => {
                        let n = tx
                            .prepare_cached(
                                "UPDATE jobs SET next_run_at = ?3, last_scheduled_at = coalesce(?4, last_scheduled_at), updated_at = ?5 WHERE name = ?1 AND (next_run_at IS ?2 OR NOT ?6)",
                            )?
                            .execute(params![job, from.map(ts_text), to.map(ts_text), last_scheduled_at.map(ts_text), now, check])?;
                        if n != 1 && check {
                            claimed_all = false;
                            return Ok(());
                        }
                        if let Some(r) = rearm {
                            tx.prepare_cached(
                                "UPDATE jobs SET schedule = ?2, timezone = ?3, last_scheduled_at = ?4 WHERE name = ?1",
                            )?
                            .execute(params![job, r.schedule, r.timezone, last_scheduled_at.map(ts_text)])?;
                        }
                    }
                    Write::UpsertJob(w) => {
                        tx.prepare_cached(
                            "INSERT OR REPLACE INTO jobs (name, schedule, timezone, next_run_at, last_scheduled_at, paused, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        )?
                        .execute(params![w.name, w.schedule, w.timezone, w.next_run_at.map(ts_text), w.last_scheduled_at.map(ts_text), w.paused as i64, now])?;
                    }
                    Write::RemoveJob { job } => {
                        tx.prepare_cached("DELETE FROM jobs WHERE name = ?1")?
                            .execute([job])?;
                    }
                    Write::ReserveIds { upto } => {
                        tx.prepare_cached(
                            "INSERT INTO meta (key, value) VALUES ('run_id_reserved', ?1) ON CONFLICT(key) DO UPDATE SET value = CASE WHEN CAST(value AS INTEGER) < CAST(?1 AS INTEGER) THEN ?1 ELSE value END",
                        )?
                        .execute([upto.to_string()])?;
                    }
                    Write::Insert(r) => insert_run(&tx, r)?,
                    Write::RebootFired { job, boot_id } => reboot::record(&tx, job, boot_id)?,
                    // The finish record is the whole run: it replaces the row
                    // written at start (or stands alone if that write failed).
                    Write::Finish(r) => insert_run(&tx, r)?,
                    Write::Forget { run_id } => {
                        tx.prepare_cached(
                            "DELETE FROM runs WHERE id = ?1 AND outcome = 'skipped'",
                        )?
                        .execute([*run_id as i64])?;
                    }
                    Write::Paused { job, paused } => {
                        tx.prepare_cached(
                            "UPDATE jobs SET paused = ?2, updated_at = ?3 WHERE name = ?1",
                        )?
                        .execute(params![job, *paused as i64, now])?;
                    }
                }
            }
            Ok(())
        })();
        res.map_err(|source| StoreError::Sql {
            path: path.clone(),
            what: "writing a turn",
            source,
        })?;
        if !claimed_all {
            tx.rollback().map_err(|source| StoreError::Sql {
                path,
                what: "rollback",
                source,
            })?;
            return Ok(false);
        }
        tx.commit().map_err(|source| StoreError::Sql {
            path,
            what: "commit",
            source,
        })?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests;
