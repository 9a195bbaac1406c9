//! The embedded store: one SQLite file, `<state_dir>/cronwarden.db`.
//!
//! Tables (an operator can read them with `sqlite3`):
//! - `jobs`: per-job schedule state: the next fire to claim, the last
//!   scheduled time (the `@every` anchor), paused;
//! - `runs`: every run and every skipped fire, one row per record (with
//!   `containment`, since v2: the run's cgroup and what it cost, as JSON);
//! - `alerts`: alert history;
//! - `meta`: the schema version, the run-id reservation, and the boot
//!   each `@reboot` job last fired in (`reboot.rs`).
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
//! Here: opening, the schema, job rows, a turn's writes, runs. Apart:
//! `recovery` (a dead worker's runs in flight and run ids), `adopt` (the
//! supervisor's copy of what a dead worker held), `alerts` (the history).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use jiff::Timestamp;
use rusqlite::{params, Connection, OpenFlags};

use crate::status::{Containment, Outcome, RunRecord, SkipReason, Trigger};

mod adopt;
mod alerts;
mod recovery;
pub use adopt::Adopted;

mod marks;
mod reboot;
pub use marks::RunMark;

/// The store's file name under `state_dir`.
pub const FILE_NAME: &str = "cronwarden.db";
/// The schema this build writes; older stores are migrated forward.
const SCHEMA_VERSION: i64 = 2;
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

fn parse_outcome(s: &str) -> Outcome {
    match s {
        "success" => Outcome::Success,
        "failed" => Outcome::Failed,
        "timeout" => Outcome::Timeout,
        "killed" => Outcome::Killed,
        "skipped" => Outcome::Skipped,
        "running" => Outcome::Running,
        _ => Outcome::Lost,
    }
}

fn skip_text(r: Option<SkipReason>) -> Option<&'static str> {
    r.map(|r| match r {
        SkipReason::Overlap => "overlap",
        SkipReason::Misfire => "misfire",
        SkipReason::Paused => "paused",
        SkipReason::WorkerDown => "worker_down",
        SkipReason::Removed => "removed",
        SkipReason::StoreUnavailable => "store_unavailable",
        SkipReason::Peer => "peer",
        SkipReason::DefinitionDiffers => "definition_differs",
    })
}

fn parse_skip(s: Option<String>) -> Option<SkipReason> {
    Some(match s?.as_str() {
        "overlap" => SkipReason::Overlap,
        "misfire" => SkipReason::Misfire,
        "paused" => SkipReason::Paused,
        "removed" => SkipReason::Removed,
        "store_unavailable" => SkipReason::StoreUnavailable,
        "peer" => SkipReason::Peer,
        "definition_differs" => SkipReason::DefinitionDiffers,
        _ => SkipReason::WorkerDown,
    })
}

fn parse_trigger(s: &str) -> Trigger {
    match s {
        "catchup" => Trigger::Catchup,
        "manual" => Trigger::Manual,
        "retry" => Trigger::Retry,
        _ => Trigger::Schedule,
    }
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
        // Future versions: `if version < 3 { ... }` here, each in its own transaction.
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

    /// Deletes a job's runs beyond the newest `keep`; bounded work per call.
    pub fn prune(&mut self, job: &str, keep: u32) -> Result<usize, StoreError> {
        self.conn
            .execute(
                "DELETE FROM runs WHERE id IN (SELECT id FROM runs WHERE job = ?1 AND outcome != 'running' ORDER BY id DESC LIMIT 5000 OFFSET ?2)",
                params![job, keep as i64],
            )
            .map_err(self.sql("pruning runs"))
    }

    /// A job's runs, newest first.
    pub fn runs(&self, job: &str, limit: u32) -> Result<Vec<RunRecord>, StoreError> {
        self.query_runs(
            "WHERE job = ?1 ORDER BY id DESC LIMIT ?2",
            params![job, limit as i64],
        )
    }

    /// Run `id` of a job, or (`None`) its newest run that started (skipped
    /// fires are records too, but have no output); `None` when there is none.
    pub fn run(&self, job: &str, id: Option<u64>) -> Result<Option<RunRecord>, StoreError> {
        let found = match id {
            Some(id) => self.query_runs("WHERE job = ?1 AND id = ?2", params![job, id as i64]),
            None => self.query_runs(
                "WHERE job = ?1 AND started_at IS NOT NULL ORDER BY id DESC LIMIT 1",
                params![job],
            ),
        };
        found.map(|v| v.into_iter().next())
    }

    /// Every record of a job whose scheduled time (or a covered time) may fall in
    /// `[from, to]`, oldest first, for the audit.
    pub fn runs_between(
        &self,
        job: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<RunRecord>, StoreError> {
        // Coalesced runs are stamped with their latest covered time, which
        // is never earlier than the times they cover.
        self.query_runs(
            "WHERE job = ?1 AND scheduled_at >= ?2 ORDER BY id",
            params![job, ts_text(from)],
        )
        .map(|v| {
            v.into_iter()
                .filter(|r| {
                    r.covers.iter().any(|c| *c <= to) || r.scheduled_at.is_some_and(|s| s <= to)
                })
                .collect()
        })
    }

    fn query_runs<P: rusqlite::Params>(
        &self,
        tail: &str,
        p: P,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let sql = format!(
            "SELECT id, job, scheduled_at, covers, trigger, started_at, finished_at, outcome, skip_reason, exit_code, signal, duration_ms, stdout_bytes, stderr_bytes, error, stdout_tail, stderr_tail, containment FROM runs {tail}"
        );
        let mut st = self
            .conn
            .prepare_cached(&sql)
            .map_err(self.sql("reading runs"))?;
        let rows = st
            .query_map(p, |r| {
                let covers: String = r.get(3)?;
                Ok(RunRecord {
                    id: r.get::<_, i64>(0)? as u64,
                    job: r.get(1)?,
                    scheduled_at: ts_parse(r.get(2)?),
                    covers: serde_json::from_str(&covers).unwrap_or_default(),
                    trigger: parse_trigger(&r.get::<_, String>(4)?),
                    started_at: ts_parse(r.get(5)?),
                    finished_at: ts_parse(r.get(6)?),
                    outcome: parse_outcome(&r.get::<_, String>(7)?),
                    skip_reason: parse_skip(r.get(8)?),
                    exit_code: r.get(9)?,
                    signal: r.get(10)?,
                    duration_ms: r.get::<_, Option<i64>>(11)?.map(|v| v as u64),
                    stdout_bytes: r.get::<_, i64>(12)? as u64,
                    stderr_bytes: r.get::<_, i64>(13)? as u64,
                    error: r.get(14)?,
                    stdout_tail: r.get(15)?,
                    stderr_tail: r.get(16)?,
                    contain: containment_parse(r.get(17)?),
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(self.sql("reading runs"))?;
        Ok(rows)
    }
}

fn insert_run(tx: &rusqlite::Transaction<'_>, r: &RunRecord) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO runs (id, job, scheduled_at, covers, trigger, started_at, finished_at, outcome, skip_reason, exit_code, signal, duration_ms, stdout_bytes, stderr_bytes, error, stdout_tail, stderr_tail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
    )?
    .execute(params![
        r.id as i64,
        r.job,
        r.scheduled_at.map(ts_text),
        serde_json::to_string(&r.covers).unwrap_or_else(|_| "[]".into()),
        r.trigger.as_str(),
        r.started_at.map(ts_text),
        r.finished_at.map(ts_text),
        r.outcome.as_str(),
        skip_text(r.skip_reason),
        r.exit_code,
        r.signal,
        r.duration_ms.map(|d| d as i64),
        r.stdout_bytes as i64,
        r.stderr_bytes as i64,
        r.error,
        r.stdout_tail,
        r.stderr_tail,
    ])?;
    write_containment(tx, r)
}

/// The run's containment, apart from the main insert: one JSON column, so
/// new figures need no new column.
fn write_containment(tx: &rusqlite::Transaction<'_>, r: &RunRecord) -> rusqlite::Result<()> {
    if r.contain == Containment::default() {
        return Ok(());
    }
    let json = serde_json::to_string(&r.contain).unwrap_or_default();
    tx.prepare_cached("UPDATE runs SET containment = ?2 WHERE id = ?1")?
        .execute(params![r.id as i64, json])?;
    Ok(())
}

fn containment_parse(s: Option<String>) -> Containment {
    s.and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, next: &str) -> JobRow {
        JobRow {
            name: name.into(),
            schedule: "* * * * *".into(),
            timezone: "UTC".into(),
            next_run_at: Some(next.parse().unwrap()),
            last_scheduled_at: None,
            paused: false,
        }
    }

    fn run(id: u64, job: &str, outcome: Outcome) -> RunRecord {
        let mut r = RunRecord::new(
            id,
            job,
            vec!["2026-11-24T10:00:00Z".parse().unwrap()],
            Trigger::Schedule,
            outcome,
        );
        r.started_at = Some(Timestamp::now());
        r
    }

    /// A v1 store (as written before containment) is migrated in place:
    /// its runs read back with no containment, and new records keep
    /// theirs.
    #[test]
    fn a_v1_store_migrates_and_containment_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(SCHEMA_V1).unwrap();
            c.execute_batch(
                "INSERT INTO meta (key, value) VALUES ('schema_version', '1');
                 INSERT INTO runs (id, job, trigger, outcome) VALUES (1, 'old', 'manual', 'success');",
            )
            .unwrap();
        }
        let mut s = Store::open(&path).unwrap();
        let old = s.runs("old", 10).unwrap();
        assert_eq!(old.len(), 1);
        assert_eq!(old[0].contain, Containment::default());
        let mut r = run(2, "new", Outcome::Success);
        r.contain = Containment {
            cgroup: Some("/sys/fs/cgroup/x/run-2".into()),
            cpu_usec: Some(1_000_000),
            memory_peak: None,
            leftovers_killed: Some(3),
            output_holder: Some("42 (sleep)".into()),
            pgid: Some(42),
            leader_start: Some(12345),
        };
        s.apply(&[Write::Insert(r.clone())]).unwrap();
        drop(s);
        let s = Store::open_readonly(&path).unwrap();
        assert_eq!(s.runs("new", 10).unwrap()[0].contain, r.contain);
        let v: String = s
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(v, "2");
    }

    #[test]
    fn reconcile_removes_ghosts_keeps_history_and_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut s = Store::open(&path).unwrap();
        s.reconcile(&[
            row("a", "2026-11-24T10:00:00Z"),
            row("b", "2026-11-24T10:00:00Z"),
        ])
        .unwrap();
        s.apply(&[Write::Insert(run(1, "b", Outcome::Success))])
            .unwrap();
        let got = s.reconcile(&[row("a", "2026-11-25T00:00:00Z")]).unwrap();
        // Unchanged schedule: the stored next fire wins over a recomputed one.
        assert_eq!(
            got[0].next_run_at,
            Some("2026-11-24T10:00:00Z".parse().unwrap())
        );
        assert_eq!(s.jobs().unwrap().len(), 1, "ghost row of b survived");
        assert_eq!(s.runs("b", 10).unwrap().len(), 1, "history of b lost");
    }

    #[test]
    fn claim_is_compare_and_set() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join(FILE_NAME)).unwrap();
        s.reconcile(&[row("a", "2026-11-24T10:00:00Z")]).unwrap();
        let t0: Timestamp = "2026-11-24T10:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-11-24T10:01:00Z".parse().unwrap();
        let claim = |from| Write::Claim {
            job: "a".into(),
            from: Some(from),
            to: Some(t1),
            last_scheduled_at: Some(t0),
            rearm: None,
        };
        assert!(s
            .apply(&[claim(t0), Write::Insert(run(1, "a", Outcome::Success))])
            .unwrap());
        // The same claim again fails and takes its insert with it.
        assert!(!s
            .apply(&[claim(t0), Write::Insert(run(2, "a", Outcome::Success))])
            .unwrap());
        assert_eq!(s.runs("a", 10).unwrap().len(), 1);
    }

    #[test]
    fn running_rows_become_lost_on_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut s = Store::open(&path).unwrap();
        s.apply(&[Write::Insert(run(7, "a", Outcome::Running))])
            .unwrap();
        assert!(s.is_running(7).unwrap());
        drop(s);
        let mut s = Store::open(&path).unwrap();
        let lost = s.recover_lost().unwrap();
        assert_eq!(lost.len(), 1);
        assert_eq!(s.runs("a", 1).unwrap()[0].outcome, Outcome::Lost);
        assert_eq!(s.max_run_id().unwrap(), 7);
    }

    #[test]
    fn a_file_that_is_not_a_store_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let junk = b"this is not a database, it is a shopping list\n".repeat(100);
        std::fs::write(&path, &junk).unwrap();
        let err = Store::open(&path).err().expect("junk accepted");
        assert!(err.to_string().contains(path.to_str().unwrap()), "{err}");
        assert!(err.to_string().contains("left untouched"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), junk);
    }

    #[test]
    fn prune_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join(FILE_NAME)).unwrap();
        let writes: Vec<Write> = (1..=30)
            .map(|i| {
                Write::Finish({
                    let mut r = run(i, "a", Outcome::Success);
                    r.finished_at = Some(Timestamp::now());
                    r
                })
            })
            .collect();
        s.apply(&writes).unwrap();
        s.prune("a", 10).unwrap();
        let runs = s.runs("a", 100).unwrap();
        assert_eq!(runs.len(), 10);
        assert_eq!(runs[0].id, 30);
    }
}
