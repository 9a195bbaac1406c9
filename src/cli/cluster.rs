//! `cronwarden cluster`: several hosts as the shared ledger sees them, read
//! straight from the database named by the config's `store` (no
//! supervisor needed, so it works from any host, even one that is down):
//! the hosts (last seen, alive, clock skew, fires claimed in the last
//! hour) and, for each job of the config, the window's audit across hosts:
//! every scheduled time has exactly one row (the primary key makes a
//! second one impossible), none is missing, none is stuck `running` with
//! its lease run out. Exit 1 when the audit finds a problem.

use std::{collections::BTreeMap, io::Write, path::Path, process::ExitCode};

use cronwarden_shared::{
    cluster::{FireRow, Ledger, Peer},
    config::Config,
};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

/// Times listed per job at most (the count says how many there are).
const LIST_AT_MOST: usize = 20;
/// The most scheduled times computed per job.
const MAX_EXPECTED: usize = 100_000;
/// The default window ends this far back, so fires being claimed now are
/// not counted missing.
const SETTLE: SignedDuration = SignedDuration::from_secs(5);

#[derive(Serialize)]
struct JobAudit {
    job: String,
    expected: usize,
    /// Rows by state (`finished`, `running`, `lost`, `skipped`).
    states: BTreeMap<String, usize>,
    /// Runs by host.
    hosts: BTreeMap<String, usize>,
    missing: usize,
    missing_first: Vec<Timestamp>,
    /// Rows for times the schedule does not have (a changed schedule).
    unexpected: usize,
    /// `running` with the lease run out and nobody to record it lost.
    stale: Vec<FireRow>,
    /// The expected times were cut at the bound.
    truncated: bool,
}

#[derive(Serialize)]
struct Report {
    store: String,
    from: Timestamp,
    to: Timestamp,
    peers: Vec<Peer>,
    jobs: Vec<JobAudit>,
    ok: bool,
}

pub(crate) fn cluster(
    path: &Path,
    from: Option<&str>,
    to: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    let Some(cfg) = config.cluster.clone() else {
        eprintln!(
            "cronwarden: {}: no `store = \"postgres://…\"`: this scheduler is a single host",
            path.display()
        );
        return Ok(ExitCode::from(2));
    };
    let now = Timestamp::now();
    let parse = |k: &str, v: Option<&str>, default: Timestamp| match v {
        None => Ok(default),
        Some(v) => v
            .parse::<Timestamp>()
            .map_err(|_| format!("cronwarden: --{k}: {v:?} is not an RFC 3339 instant")),
    };
    let to_default = now.checked_sub(SETTLE).unwrap_or(now);
    let from_default = to_default
        .checked_sub(SignedDuration::from_hours(1))
        .unwrap_or(to_default);
    let (from, to) = match (
        parse("from", from, from_default),
        parse("to", to, to_default),
    ) {
        (Ok(f), Ok(t)) if f <= t => (f, t),
        (Ok(_), Ok(_)) => {
            eprintln!("cronwarden: --from is after --to");
            return Ok(ExitCode::from(2));
        }
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    let mut ledger = match Ledger::connect(&cfg) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cronwarden: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let peers = ledger.peers()?;
    let rows = ledger.fires(from, to)?;
    let mut by_job: BTreeMap<&str, Vec<&FireRow>> = BTreeMap::new();
    for r in &rows {
        by_job.entry(&r.job).or_default().push(r);
    }
    let jobs: Vec<JobAudit> = config
        .jobs
        .iter()
        .map(|j| {
            let rows = by_job.remove(j.name.as_str()).unwrap_or_default();
            audit_job(&j.name, &j.schedule, from, to, &rows)
        })
        .collect();
    let ok = jobs.iter().all(|j| j.missing == 0 && j.stale.is_empty());
    let report = Report {
        store: cfg.redacted(),
        from,
        to,
        peers,
        jobs,
        ok,
    };
    let mut o = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut o, &report)?;
        writeln!(o)?;
    } else {
        render(&mut o, &report, now)?;
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn audit_job(
    name: &str,
    schedule: &cronwarden_shared::schedule::Schedule,
    from: Timestamp,
    to: Timestamp,
    rows: &[&FireRow],
) -> JobAudit {
    let mut expected = vec![];
    // The first time at or after `from`.
    let mut cursor = from
        .checked_sub(SignedDuration::from_nanos(1))
        .ok()
        .and_then(|f| schedule.next_after(f, None));
    while let Some(t) = cursor.filter(|t| *t <= to) {
        if expected.len() >= MAX_EXPECTED {
            break;
        }
        expected.push(t);
        cursor = schedule.next_after(t, Some(t));
    }
    let truncated = expected.len() >= MAX_EXPECTED;
    let have: std::collections::BTreeSet<Timestamp> =
        rows.iter().map(|r| r.scheduled_for).collect();
    let missing: Vec<Timestamp> = expected
        .iter()
        .copied()
        .filter(|t| !have.contains(t))
        .collect();
    let expected_set: std::collections::BTreeSet<Timestamp> = expected.iter().copied().collect();
    let mut states = BTreeMap::new();
    let mut hosts = BTreeMap::new();
    for r in rows {
        *states.entry(r.state.clone()).or_default() += 1;
        if r.state != "skipped" {
            *hosts.entry(r.host.clone()).or_default() += 1;
        }
    }
    JobAudit {
        job: name.to_string(),
        expected: expected.len(),
        states,
        hosts,
        missing: missing.len(),
        missing_first: missing.into_iter().take(LIST_AT_MOST).collect(),
        unexpected: rows
            .iter()
            .filter(|r| !expected_set.contains(&r.scheduled_for))
            .count(),
        stale: rows
            .iter()
            .filter(|r| r.lease_expired)
            .map(|r| (*r).clone())
            .collect(),
        truncated,
    }
}

fn render(o: &mut impl Write, r: &Report, now: Timestamp) -> std::io::Result<()> {
    writeln!(o, "shared ledger {}", r.store)?;
    writeln!(o, "hosts:")?;
    for p in &r.peers {
        let ago = now.duration_since(p.last_seen).as_secs();
        writeln!(
            o,
            "  {:<24} {:<5} seen {ago}s ago, clock {:+}ms against the database, {} fire(s) claimed in the last hour",
            p.host,
            if p.alive { "up" } else { "DOWN" },
            p.skew_ms,
            p.claimed_last_hour
        )?;
    }
    writeln!(o, "fires from {} to {}:", r.from, r.to)?;
    for j in &r.jobs {
        let states: Vec<String> = j.states.iter().map(|(s, n)| format!("{n} {s}")).collect();
        let hosts: Vec<String> = j.hosts.iter().map(|(h, n)| format!("{h} {n}")).collect();
        writeln!(
            o,
            "  {}: {} scheduled; {}; by host: {}{}",
            j.job,
            j.expected,
            if states.is_empty() {
                "no rows".to_string()
            } else {
                states.join(", ")
            },
            if hosts.is_empty() {
                "-".to_string()
            } else {
                hosts.join(", ")
            },
            if j.truncated {
                " (window cut at the bound)"
            } else {
                ""
            }
        )?;
        if j.missing > 0 {
            let first: Vec<String> = j.missing_first.iter().map(|t| t.to_string()).collect();
            writeln!(
                o,
                "    MISSING {}: claimed by no host (all down, or the database unreachable): {}",
                j.missing,
                first.join(" ")
            )?;
        }
        for s in &j.stale {
            writeln!(
                o,
                "    STALE {} on {} (run {}): running with its lease run out and no live host to record it lost",
                s.scheduled_for, s.host, s.run_id
            )?;
        }
    }
    writeln!(
        o,
        "{}",
        if r.ok {
            "exactly once: every scheduled time has one record across hosts"
        } else {
            "NOT exactly once: see above"
        }
    )
}
