//! The shared ledger of several hosts on one PostgreSQL database (issue
//! 19, README "Several hosts"). Each host keeps its own SQLite store as
//! its journal, unchanged; this database is the claim authority: a fire
//! runs on the one host whose claim transaction inserted its row
//! (`cw_fires`, keyed by job and scheduled time), and only after that
//! transaction committed (fail closed).
//!
//! Everything here is blocking (the `postgres` crate): the worker calls it
//! from its own claim thread, never from the scheduling loop, and the
//! supervisor (alert ownership) from a thread of its own, never from its
//! loop; the CLI (`cluster`, `audit`) directly. Times that
//! key rows travel as whole microseconds since the epoch, so a fire's key
//! is exact; leases and `last_seen` use the database's clock (`now()`),
//! so a host whose clock is off cannot stretch or cut them.

use std::time::Duration;

use jiff::Timestamp;

use crate::config::ClusterConfig;

mod audit;
mod claim;
pub mod schema;
mod tls;

pub use audit::{audit_job, FireRow, JobAudit, LIST_AT_MOST, MAX_EXPECTED, MAX_ROWS};
pub use claim::{Claim, ClaimOutcome};

/// A fire's time in SQL, from a bigint microseconds parameter.
pub(crate) const TS: &str = "(timestamptz 'epoch' + ($N::bigint) * interval '1 microsecond')";
/// A timestamptz column back to bigint microseconds.
pub(crate) fn us(col: &str) -> String {
    format!("(extract(epoch from {col}) * 1000000)::bigint")
}
/// `TS` with its parameter number.
pub(crate) fn ts(n: u32) -> String {
    TS.replace("$N", &format!("${n}"))
}

/// The definition hash most live hosts hold of each job (ties: the one
/// held longest, then by hash): `$1` the jobs (`text[]`), `$2` the lease
/// in seconds. The one statement of the rule for batched claims and the
/// definition check.
pub(crate) const MAJORITY: &str =
    "SELECT DISTINCT ON (d.job) d.job, d.hash FROM cw_job_defs d JOIN cw_peers p ON p.host = d.host
     WHERE d.job = ANY($1) AND p.last_seen > now() - $2 * interval '1 second'
     GROUP BY d.job, d.hash ORDER BY d.job, count(*) DESC, min(d.since), d.hash";

/// How long one statement may take before the host gives up on it (and
/// a claim fails closed).
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// A host stopped (SIGSTOP, a VM paused) inside a claim transaction holds
/// the row its peers want: the server ends its session after this, well
/// within [`STATEMENT_TIMEOUT`], so the peers' claims go through.
pub const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(2);
/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The database refused or could not be reached: `what` was being done.
    #[error("shared ledger: {what}: {message}")]
    Db { what: String, message: String },
    #[error("shared ledger: {0}")]
    Schema(String),
}

impl LedgerError {
    pub(crate) fn db(what: &str, e: postgres::Error) -> LedgerError {
        // The server's own message says what it refused; the driver's
        // Display of a db error is only "db error".
        let message = match e.as_db_error() {
            Some(d) => format!("{}: {}", d.severity(), d.message()),
            None => match std::error::Error::source(&e) {
                Some(src) => format!("{e}: {src}"),
                None => e.to_string(),
            },
        };
        LedgerError::Db {
            what: what.to_string(),
            message,
        }
    }

    /// The connection is gone (reconnect before the next statement).
    pub fn is_connection(&self) -> bool {
        matches!(self, LedgerError::Db { message, .. } if message.contains("connection") || message.contains("closed") || message.contains("timed out"))
    }
}

/// One host's connection to the shared ledger.
pub struct Ledger {
    client: postgres::Client,
    host: String,
    lease: Duration,
    /// The claim of a job that allows overlap, prepared once: one round
    /// trip per fire (see [`Ledger::claim`]).
    claim_stmt: Option<postgres::Statement>,
    /// Test only: added to this host's clock reading in the skew
    /// measurement (see [`Ledger::offset_clock_for_test`]).
    test_clock_offset_us: i64,
}

/// A host as the ledger knows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Peer {
    pub host: String,
    pub last_seen: Timestamp,
    /// The host's wall clock minus the database's, in milliseconds, as
    /// measured at its last beat.
    pub skew_ms: i64,
    /// Fires it claimed (ran) in the last hour.
    pub claimed_last_hour: u64,
    /// Seen within its lease: alive as far as the ledger can tell.
    pub alive: bool,
}

/// What one beat found.
#[derive(Debug, Default)]
pub struct Beat {
    /// This host's wall clock minus the database's, microseconds.
    pub skew_us: i64,
    /// Runs of silent peers this beat recorded `lost`: (job, scheduled
    /// time, host, run id).
    pub lost: Vec<(String, Timestamp, String, u64)>,
}

fn ts_of(us: i64) -> Timestamp {
    Timestamp::from_microsecond(us).unwrap_or(Timestamp::UNIX_EPOCH)
}

impl Ledger {
    /// Connects and migrates the schema.
    pub fn connect(cfg: &ClusterConfig) -> Result<Ledger, LedgerError> {
        let what = format!("connect to {}", cfg.redacted());
        let mut pg: postgres::Config = cfg.url.parse().map_err(|e| LedgerError::db(&what, e))?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(CONNECT_TIMEOUT);
        }
        pg.keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .application_name("cronwarden");
        let client = match pg.get_ssl_mode() {
            postgres::config::SslMode::Require => {
                let tls = tls::connector().map_err(|message| LedgerError::Db {
                    what: what.clone(),
                    message,
                })?;
                pg.connect(tls)
            }
            // `prefer` (the driver's default) would try TLS with a
            // certificate the host cannot check, and fail: TLS is asked
            // for, never guessed.
            _ => pg.connect(postgres::NoTls),
        };
        let mut client = client.map_err(|e| LedgerError::db(&what, e))?;
        client
            .batch_execute(&format!(
                "SET client_min_messages = warning; SET statement_timeout = {}; SET lock_timeout = {};
                 SET idle_in_transaction_session_timeout = {}",
                STATEMENT_TIMEOUT.as_millis(),
                STATEMENT_TIMEOUT.as_millis(),
                IDLE_IN_TRANSACTION.as_millis()
            ))
            .map_err(|e| LedgerError::db("set timeouts", e))?;
        schema::migrate(&mut client)?;
        Ok(Ledger {
            client,
            host: cfg.host.clone(),
            lease: cfg.lease,
            claim_stmt: None,
            test_clock_offset_us: 0,
        })
    }

    /// Test only: the skew measurement (and nothing else) reads this
    /// host's clock `us` microseconds ahead. Hosts on one machine share a
    /// clock, so an end-to-end test of the skew alert needs a fake offset.
    pub fn offset_clock_for_test(&mut self, us: i64) {
        self.test_clock_offset_us = us;
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    fn lease_secs(&self) -> f64 {
        self.lease.as_secs_f64()
    }

    /// This host's beat: it is seen now, its clock compared with the
    /// database's, the leases of its runs `running` renewed, and runs of
    /// peers whose lease ran out recorded `lost` (after the renewal, so a
    /// database back after an outage longer than the lease does not make
    /// this host lose its own runs).
    pub fn beat(&mut self, running: &[u64], version: &str) -> Result<Beat, LedgerError> {
        let before = Timestamp::now();
        let db_now: i64 = self
            .client
            .query_one(&format!("SELECT {}", us("clock_timestamp()")), &[])
            .map_err(|e| LedgerError::db("read the database clock", e))?
            .get(0);
        let after = Timestamp::now();
        let mid =
            (before.as_microsecond() + after.as_microsecond()) / 2 + self.test_clock_offset_us;
        let skew_us = mid - db_now;
        let ids: Vec<i64> = running.iter().map(|&i| i as i64).collect();
        let lease = self.lease_secs();
        let mut tx = self
            .client
            .transaction()
            .map_err(|e| LedgerError::db("begin beat", e))?;
        tx.execute(
            "INSERT INTO cw_peers (host, last_seen, skew_us, version) VALUES ($1, now(), $2, $3)
             ON CONFLICT (host) DO UPDATE SET last_seen = now(), skew_us = $2, version = $3",
            &[&self.host, &skew_us, &version],
        )
        .map_err(|e| LedgerError::db("record this host as seen", e))?;
        tx.execute(
            "UPDATE cw_fires SET lease_until = now() + $3 * interval '1 second'
             WHERE host = $1 AND state = 'running' AND run_id = ANY($2)",
            &[&self.host, &ids, &lease],
        )
        .map_err(|e| LedgerError::db("renew leases", e))?;
        let rows = tx
            .query(
                &format!(
                    "UPDATE cw_fires SET state = 'lost', outcome = 'lost', finished = now(),
                         lease_until = NULL, lost_by = $1
                     WHERE state = 'running' AND lease_until < now()
                     RETURNING job, {}, host, run_id",
                    us("scheduled_for")
                ),
                &[&self.host],
            )
            .map_err(|e| LedgerError::db("record expired runs lost", e))?;
        tx.commit().map_err(|e| LedgerError::db("commit beat", e))?;
        let lost = rows
            .iter()
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    ts_of(r.get(1)),
                    r.get::<_, String>(2),
                    r.get::<_, i64>(3) as u64,
                )
            })
            .collect();
        Ok(Beat { skew_us, lost })
    }

    /// Publishes this host's definition hash of each job (the jobs it no
    /// longer has lose theirs): a job whose hash differs from the one most
    /// live hosts hold is not claimed here (see [`Claim`]).
    pub fn publish_defs(&mut self, defs: &[(String, String)]) -> Result<(), LedgerError> {
        let (jobs, hashes): (Vec<String>, Vec<String>) = defs.iter().cloned().unzip();
        let mut tx = self
            .client
            .transaction()
            .map_err(|e| LedgerError::db("begin publishing job definitions", e))?;
        tx.execute(
            "DELETE FROM cw_job_defs WHERE host = $1 AND NOT (job = ANY($2))",
            &[&self.host, &jobs],
        )
        .map_err(|e| LedgerError::db("remove old job definitions", e))?;
        tx.execute(
            "INSERT INTO cw_job_defs (host, job, hash)
             SELECT $1, j, h FROM unnest($2::text[], $3::text[]) AS d(j, h)
             ON CONFLICT (host, job) DO UPDATE SET hash = excluded.hash,
                 since = CASE WHEN cw_job_defs.hash = excluded.hash THEN cw_job_defs.since ELSE now() END",
            &[&self.host, &jobs, &hashes],
        )
        .map_err(|e| LedgerError::db("publish job definitions", e))?;
        tx.commit()
            .map_err(|e| LedgerError::db("commit job definitions", e))
    }

    /// The definition hash most live hosts hold of each of `jobs` (ties:
    /// the one held longest), as a claim judges it: a job missing here has
    /// no live host's definition yet. Checked at start, at each reload and
    /// with the peers, so a differing definition shows before the job's
    /// next fire (which may be a day away).
    pub fn majority_defs(
        &mut self,
        jobs: &[String],
    ) -> Result<std::collections::BTreeMap<String, String>, LedgerError> {
        let rows = self
            .client
            .query(MAJORITY, &[&jobs, &self.lease_secs()])
            .map_err(|e| LedgerError::db("compare job definitions", e))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Every host the ledger knows, by name.
    pub fn peers(&mut self) -> Result<Vec<Peer>, LedgerError> {
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT p.host, {}, p.skew_us,
                        (SELECT count(*) FROM cw_fires f WHERE f.host = p.host
                           AND f.state <> 'skipped' AND f.claimed_at > now() - interval '1 hour'),
                        p.last_seen > now() - $1 * interval '1 second'
                     FROM cw_peers p ORDER BY p.host",
                    us("p.last_seen")
                ),
                &[&self.lease_secs()],
            )
            .map_err(|e| LedgerError::db("list peers", e))?;
        Ok(rows
            .iter()
            .map(|r| Peer {
                host: r.get(0),
                last_seen: ts_of(r.get(1)),
                skew_ms: r.get::<_, i64>(2) / 1000,
                claimed_last_hour: r.get::<_, i64>(3).max(0) as u64,
                alive: r.get(4),
            })
            .collect())
    }

    /// Takes the one open alert of `kind` for `job` ("" for none) for this
    /// host if no live host holds it, so one alert per condition is sent
    /// across hosts. Returns its owner: this host when it opened it, took
    /// it over (its owner is no longer alive: not seen within the lease)
    /// or already held it; else the host that does.
    pub fn own_alert(&mut self, kind: &str, job: &str) -> Result<String, LedgerError> {
        // The owner a conflict leaves in place is read in the same
        // statement; a row inserted by a peer meanwhile is not in this
        // statement's snapshot, so a miss is asked again.
        for _ in 0..3 {
            let row = self
                .client
                .query_opt(
                    "WITH took AS (
                       INSERT INTO cw_alerts (kind, job, host) VALUES ($1, $2, $3)
                       ON CONFLICT (kind, job) DO UPDATE SET host = $3, opened = now()
                         WHERE NOT EXISTS (SELECT 1 FROM cw_peers p WHERE p.host = cw_alerts.host
                                           AND p.last_seen > now() - $4 * interval '1 second')
                            OR cw_alerts.host = $3
                       RETURNING host)
                     SELECT host FROM took
                     UNION ALL
                     SELECT host FROM cw_alerts WHERE kind = $1 AND job = $2
                       AND NOT EXISTS (SELECT 1 FROM took)",
                    &[&kind, &job, &self.host, &self.lease_secs()],
                )
                .map_err(|e| LedgerError::db("take an alert", e))?;
            if let Some(r) = row {
                return Ok(r.get(0));
            }
        }
        Err(LedgerError::Db {
            what: "take an alert".into(),
            message: "its owner changed under three tries in a row".into(),
        })
    }

    /// Closes this host's alert of `kind` for `job` (a peer's is left
    /// alone): a peer with the condition still open takes it over.
    pub fn close_alert(&mut self, kind: &str, job: &str) -> Result<(), LedgerError> {
        self.client
            .execute(
                "DELETE FROM cw_alerts WHERE kind = $1 AND job = $2 AND host = $3",
                &[&kind, &job, &self.host],
            )
            .map(drop)
            .map_err(|e| LedgerError::db("close an alert", e))
    }

    pub(crate) fn client(&mut self) -> &mut postgres::Client {
        &mut self.client
    }
}

/// A stable hash of a job's definition, the same on every host reading the
/// same job text with the same build: FNV-1a over its debug form, with the
/// host's own jitter offset left out (it differs by design).
pub fn definition_hash(spec: &crate::config::JobSpec) -> String {
    let mut spec = spec.clone();
    spec.jitter_offset = Duration::ZERO;
    let text = format!("{spec:?}");
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
pub(crate) mod tests;
