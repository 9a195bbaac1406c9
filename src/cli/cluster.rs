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
    cluster::{audit_job, FireRow, JobAudit, Ledger, Peer},
    config::Config,
};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

/// The default window ends this far back, so fires being claimed now are
/// not counted missing.
pub(crate) const SETTLE: SignedDuration = SignedDuration::from_secs(5);

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
    let to_default = now.checked_sub(SETTLE).unwrap_or(now);
    let from_default = to_default
        .checked_sub(SignedDuration::from_hours(1))
        .unwrap_or(to_default);
    let (from, to) = match window(from, to, from_default, to_default) {
        Ok(w) => w,
        Err(e) => {
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
    let rows = ledger.fires(None, from, to)?;
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
    let ok = jobs.iter().all(JobAudit::ok);
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

/// The window `[from, to]` of `--from` and `--to` (RFC 3339), each
/// defaulting as given; the error is for stderr (exit 2).
pub(crate) fn window(
    from: Option<&str>,
    to: Option<&str>,
    from_default: Timestamp,
    to_default: Timestamp,
) -> Result<(Timestamp, Timestamp), String> {
    let parse = |k: &str, v: Option<&str>, default: Timestamp| match v {
        None => Ok(default),
        Some(v) => v
            .parse::<Timestamp>()
            .map_err(|_| format!("cronwarden: --{k}: {v:?} is not an RFC 3339 instant")),
    };
    let (from, to) = (
        parse("from", from, from_default)?,
        parse("to", to, to_default)?,
    );
    if from > to {
        return Err("cronwarden: --from is after --to".into());
    }
    Ok((from, to))
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
        render_job(o, j)?;
    }
    verdict(o, r.ok)
}

/// One job's line of the audit across hosts, and its problems.
pub(crate) fn render_job(o: &mut impl Write, j: &JobAudit) -> std::io::Result<()> {
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
    Ok(())
}

/// The audit's last line.
pub(crate) fn verdict(o: &mut impl Write, ok: bool) -> std::io::Result<()> {
    writeln!(
        o,
        "{}",
        if ok {
            "exactly once: every scheduled time has one record across hosts"
        } else {
            "NOT exactly once: see above"
        }
    )
}
