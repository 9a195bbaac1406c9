//! `cronwarden audit JOB` on several hosts: with a postgres `store` in the
//! config, the job's fires are audited across hosts from the shared ledger
//! (the judgement of `cronwarden cluster`, `shared::cluster::audit_job`),
//! each scheduled time with the host that ran it and its outcome, read
//! straight from the database. A single host's audit is the supervisor's
//! (`GET /v1/jobs/{name}/audit`), unchanged.

use std::{io::Write, process::ExitCode};

use cronwarden_shared::{
    cluster::{audit_job, FireRow, JobAudit, Ledger, LIST_AT_MOST},
    config::Config,
    schedule::Schedule,
};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use super::{args::Conn, cluster, discover::Located};

#[derive(Serialize)]
struct Report {
    store: String,
    from: Timestamp,
    to: Timestamp,
    #[serde(flatten)]
    audit: JobAudit,
    /// Every row of the window, by time: the host that ran it, its state
    /// and outcome.
    fires: Vec<FireRow>,
    ok: bool,
}

/// What `cronwarden audit` was asked.
pub(crate) struct Ask<'a> {
    pub(crate) job: &'a str,
    pub(crate) from: Option<&'a str>,
    pub(crate) to: Option<&'a str>,
    pub(crate) schedule: Option<&'a str>,
    pub(crate) timezone: Option<&'a str>,
}

/// The audit across hosts when the config (found as every client finds
/// it, unless `--socket` names a supervisor) has a postgres `store`:
/// `Some(exit code)`. `None`: a single host (or no readable config), for
/// the supervisor to answer.
pub(crate) fn audit(conn: &Conn, ask: &Ask<'_>) -> anyhow::Result<Option<ExitCode>> {
    if conn.socket.is_some() {
        return Ok(None);
    }
    let located = Located::config(conn.config.as_deref());
    let Ok(config) = Config::load(&located.path) else {
        return Ok(None);
    };
    let Some(cfg) = config.cluster.clone() else {
        return Ok(None);
    };
    let now = Timestamp::now();
    let to_default = now.checked_sub(cluster::SETTLE).unwrap_or(now);
    let day_ago = now
        .checked_sub(SignedDuration::from_hours(24))
        .unwrap_or(now);
    let (from, to) = match cluster::window(ask.from, ask.to, day_ago, to_default) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("{e}");
            return Ok(Some(ExitCode::from(2)));
        }
    };
    let schedule = match schedule_of(&config, ask) {
        Ok(s) => s,
        Err((code, e)) => {
            eprintln!("cronwarden: {e}");
            return Ok(Some(ExitCode::from(code)));
        }
    };
    let mut ledger = match Ledger::connect(&cfg) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cronwarden: {e}");
            return Ok(Some(ExitCode::from(1)));
        }
    };
    let fires = ledger.fires(Some(ask.job), from, to)?;
    // By default from the job's first row, if it is within the day (as a
    // single host's audit starts at its first record).
    let from = match (ask.from, fires.first()) {
        (None, Some(first)) => first.scheduled_for,
        _ => from,
    };
    let rows: Vec<&FireRow> = fires.iter().collect();
    let audit = audit_job(ask.job, &schedule, from, to, &rows);
    let ok = audit.ok();
    let report = Report {
        store: cfg.redacted(),
        from,
        to,
        audit,
        fires,
        ok,
    };
    let mut o = std::io::stdout().lock();
    if conn.json {
        serde_json::to_writer_pretty(&mut o, &report)?;
        writeln!(o)?;
    } else {
        render(&mut o, &report)?;
    }
    Ok(Some(ExitCode::from(u8::from(!ok))))
}

/// `--schedule` (in `--timezone`, else the config's zone), else the
/// config's job's; the error with its exit code.
fn schedule_of(config: &Config, ask: &Ask<'_>) -> Result<Schedule, (u8, String)> {
    match ask.schedule {
        Some(expr) => {
            let zone = ask.timezone.unwrap_or(&config.timezone);
            let tz = jiff::tz::TimeZone::get(zone)
                .map_err(|_| (2, format!("--timezone: unknown time zone {zone:?}")))?;
            Schedule::parse(expr, &tz).map_err(|e| (2, format!("--schedule: {e}")))
        }
        None => config.job(ask.job).map(|j| j.schedule.clone()).ok_or((
            1,
            format!(
                "{}: no job {:?} (a removed job is audited with --schedule EXPR)",
                config.path.display(),
                ask.job
            ),
        )),
    }
}

fn render(o: &mut impl Write, r: &Report) -> std::io::Result<()> {
    writeln!(
        o,
        "{} from {} to {}, across hosts (shared ledger {}):",
        r.audit.job, r.from, r.to, r.store
    )?;
    cluster::render_job(o, &r.audit)?;
    for f in r.fires.iter().take(LIST_AT_MOST) {
        writeln!(
            o,
            "    {}  {}  {}{}",
            f.scheduled_for,
            f.host,
            f.state,
            f.outcome
                .as_deref()
                .filter(|out| *out != f.state)
                .map(|out| format!(" ({out})"))
                .unwrap_or_default()
        )?;
    }
    if r.fires.len() > LIST_AT_MOST {
        writeln!(
            o,
            "    … and {} more (--json lists every one)",
            r.fires.len() - LIST_AT_MOST
        )?;
    }
    cluster::verdict(o, r.ok)
}
