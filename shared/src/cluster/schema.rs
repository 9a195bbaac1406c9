//! The shared ledger's schema, versioned: each migration runs once, in
//! order, under an advisory lock (hosts starting together apply it once),
//! and its number is recorded in `cw_schema_version`. A database migrated
//! by a newer build is refused rather than written in a shape this build
//! does not know.

use super::LedgerError;

/// Serialises migrations across hosts (`pg_advisory_xact_lock`).
const MIGRATION_LOCK: i64 = 0x6377_6d69_6772; // "cwmigr"

/// The migrations, in order: (version, SQL). Never edit one that shipped:
/// add the next.
pub const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "
    CREATE TABLE cw_fires (
        job text NOT NULL,
        scheduled_for timestamptz NOT NULL,
        host text NOT NULL,
        run_id bigint NOT NULL,
        -- running, finished, skipped, lost
        state text NOT NULL,
        lease_until timestamptz,
        claimed_at timestamptz NOT NULL DEFAULT now(),
        started timestamptz,
        finished timestamptz,
        outcome text,
        -- the peer that recorded the run lost when its lease ran out
        lost_by text,
        PRIMARY KEY (job, scheduled_for)
    );
    CREATE INDEX cw_fires_running ON cw_fires (job) WHERE state = 'running';
    CREATE INDEX cw_fires_host ON cw_fires (host, claimed_at);
    CREATE TABLE cw_cursors (
        job text PRIMARY KEY,
        last_scheduled timestamptz NOT NULL
    );
    CREATE TABLE cw_peers (
        host text PRIMARY KEY,
        first_seen timestamptz NOT NULL DEFAULT now(),
        last_seen timestamptz NOT NULL,
        -- the host's wall clock minus the database's, microseconds
        skew_us bigint NOT NULL DEFAULT 0,
        version text NOT NULL DEFAULT ''
    );
    CREATE TABLE cw_job_defs (
        host text NOT NULL,
        job text NOT NULL,
        hash text NOT NULL,
        -- when this host's definition last changed
        since timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (host, job)
    );
    CREATE TABLE cw_alerts (
        kind text NOT NULL,
        job text NOT NULL DEFAULT '',
        host text NOT NULL,
        opened timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (kind, job)
    );
    ",
)];

/// The newest schema this build knows.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Brings the database to [`latest`]; returns the version it found.
pub fn migrate(client: &mut postgres::Client) -> Result<i32, LedgerError> {
    let ctx = |what: &str| {
        let what = what.to_string();
        move |e: postgres::Error| LedgerError::db(&what, e)
    };
    let mut tx = client.transaction().map_err(ctx("begin migration"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(ctx("lock for migration"))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS cw_schema_version (
             version integer PRIMARY KEY,
             applied timestamptz NOT NULL DEFAULT now())",
    )
    .map_err(ctx("create cw_schema_version"))?;
    let found: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM cw_schema_version",
            &[],
        )
        .map_err(ctx("read the schema version"))?
        .get(0);
    if found > latest() {
        return Err(LedgerError::Schema(format!(
            "the database's schema is version {found}, newer than this build's {}: upgrade cronwarden on this host",
            latest()
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > found) {
        tx.batch_execute(sql)
            .map_err(ctx(&format!("schema migration {version}")))?;
        tx.execute(
            "INSERT INTO cw_schema_version (version) VALUES ($1)",
            &[version],
        )
        .map_err(ctx(&format!("record schema migration {version}")))?;
    }
    tx.commit().map_err(ctx("commit migration"))?;
    Ok(found)
}
