//! Everything `cronwarden` does as a command-line tool; the scheduling
//! itself lives in the library crates. [`run`] dispatches a parsed command
//! line to one of:
//!
//! - [`args`]: the command line (clap): subcommands, flags, help texts;
//! - [`discover`]: where the config and the socket are (`--config`,
//!   `CRONWARDEN_CONFIG`, `/etc/cronwarden.toml`, the runtime socket);
//! - [`roles`]: `run` (the supervisor) and `worker`, with their logging;
//! - [`check`] (with [`lint`], [`explain`] and [`host_limits`]): validate a
//!   config, warn of surprises and of limits this host cannot enforce, say
//!   each schedule in words;
//! - [`next`]: a schedule's next fires;
//! - [`import`]: a crontab translated into cronwarden TOML;
//! - [`status`]: the supervisor's verdict as an exit code (and `--probe`,
//!   cronwarden's own health);
//! - [`man`]: the man pages, generated from [`args`];
//! - [`jobs`]: every job, read page by page (`jobs`, and `status`'s table);
//! - [`request`]: every other socket command's round trip (`runs`,
//!   `alerts`, `audit`, `trigger`, `pause`, `resume`, `reload`), over
//!   [`client`], the HTTP client of the status socket;
//! - [`cluster`]: several hosts, read from the shared ledger;
//!   [`cluster_audit`]: `audit` across hosts (a postgres `store`);
//! - [`logs`]: a run's output, stored or followed live;
//! - [`kill`]: ending a run in progress;
//! - [`render`]: what each command prints for people (tables, colour,
//!   relative times).
//!
//! Exit codes: 0 success, 1 refused or a negative verdict, 2 invalid input
//! (config, schedule, instant), 3 the supervisor cannot be reached.

mod args;
mod check;
mod client;
mod cluster;
mod cluster_audit;
mod discover;
mod explain;
mod host_limits;
mod import;
mod jobs;
mod kill;
mod lint;
mod logs;
mod man;
mod next;
mod render;
mod request;
mod roles;
mod status;

use std::{io::Write, process::ExitCode, time::Duration};

use cronwarden_shared::status::{Alert, AuditReport, RunRecord};
use hyper::Method;
use jiff::Timestamp;
use serde_json::Value;

pub(crate) use args::Cli;
use args::{AlertsCmd, Cmd, ConfigArg, LogFormat};
use request::{call, call_within, enc, job_op};

/// How long `alerts test` may take: every sink's retries (the supervisor
/// gives up after 300 s), plus a margin.
const ALERT_TEST_LIMIT: Duration = Duration::from_secs(310);

/// Runs one command line; the exit code is the command's verdict.
pub(crate) fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Cmd::Run { config, log_format } => match config_file(&config) {
            Ok(path) => roles::supervisor(path, log_format == LogFormat::Json),
            Err(code) => Ok(code),
        },
        Cmd::Worker {
            events_fd,
            lock_fd,
            first_run_id,
            log_dir,
            log_retention,
            log_format,
        } => Ok(roles::worker(
            events_fd,
            lock_fd,
            first_run_id,
            log_dir.as_deref().map(|d| (d, log_retention)),
            log_format == LogFormat::Json,
        )),
        Cmd::Cluster {
            config,
            from,
            to,
            json,
        } => match config_file(&config) {
            Ok(path) => cluster::cluster(&path, from.as_deref(), to.as_deref(), json),
            Err(code) => Ok(code),
        },
        Cmd::Check { config, json } => match config_file(&config) {
            Ok(path) => check::check(&path, json),
            Err(code) => Ok(code),
        },
        Cmd::Import {
            file,
            system,
            tz,
            safe_defaults,
        } => import::import(&file, system, tz, safe_defaults),
        Cmd::Man { dir } => man::man(dir.as_deref()),
        Cmd::Completions { shell } => {
            // Into a buffer first: clap_complete panics on a write error,
            // and a closed pipe must stay quiet.
            let mut script = vec![];
            let mut cli = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cli, "cronwarden", &mut script);
            std::io::stdout().lock().write_all(&script)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Next {
            expr,
            tz,
            from,
            n,
            json,
        } => next::next(&expr, &tz, from.as_deref(), n, json),
        Cmd::Status { probe, conn } => status::status(&conn, probe),
        Cmd::Alerts {
            action: Some(AlertsCmd::Test { conn }),
            ..
        } => call_within(
            &conn,
            Method::POST,
            "/v1/alerts/test".into(),
            ALERT_TEST_LIMIT,
            |o, v: Value| render::alerts::test_results(o, &v),
        ),
        Cmd::Alerts {
            action: None,
            all,
            conn,
        } => {
            let path = if all {
                "/v1/alerts?all=1"
            } else {
                "/v1/alerts"
            };
            call(&conn, Method::GET, path.into(), |o, v: Vec<Alert>| {
                render::alerts::alerts(o, &v, Timestamp::now(), render::stdout_color())
            })
        }
        Cmd::Jobs { conn } => jobs::jobs(&conn),
        Cmd::Runs { job, limit, conn } => call(
            &conn,
            Method::GET,
            format!("/v1/jobs/{}/runs?limit={limit}", enc(&job)),
            |o, v: Vec<RunRecord>| {
                render::runs::runs(o, &v, Timestamp::now(), render::stdout_color())
            },
        ),
        Cmd::Trigger { job, conn } => job_op(&conn, &job, "trigger"),
        Cmd::Pause { job, conn } => job_op(&conn, &job, "pause"),
        Cmd::Resume { job, conn } => job_op(&conn, &job, "resume"),
        Cmd::Logs {
            job,
            run,
            follow,
            conn,
        } => Ok(logs::logs(&conn, &job, run, follow)),
        Cmd::Kill { job, run, conn } => kill::kill(&conn, &job, run),
        Cmd::Reload { conn } => call(&conn, Method::POST, "/v1/reload".into(), |o, v: Value| {
            writeln!(o, "reloaded: {} job(s)", v["jobs"])?;
            Ok(0)
        }),
        Cmd::Audit {
            job,
            from,
            to,
            schedule,
            timezone,
            conn,
        } => {
            let ask = cluster_audit::Ask {
                job: &job,
                from: from.as_deref(),
                to: to.as_deref(),
                schedule: schedule.as_deref(),
                timezone: timezone.as_deref(),
            };
            if let Some(code) = cluster_audit::audit(&conn, &ask)? {
                return Ok(code);
            }
            audit(
                &conn,
                &job,
                [("from", from), ("to", to)],
                [("schedule", schedule), ("timezone", timezone)],
            )
        }
    }
}

/// The config file of `run` or `check` (see [`discover`]); exit 2 when
/// none can be read, saying where it looked.
fn config_file(arg: &ConfigArg) -> Result<std::path::PathBuf, ExitCode> {
    discover::config_for_run(arg.config.as_deref()).map_err(|e| {
        eprintln!("cronwarden: no config file to read\n{e}");
        ExitCode::from(2)
    })
}

/// `cronwarden audit`: the bounds are checked here, so that a typo is exit
/// 2 without asking the supervisor.
fn audit(
    conn: &args::Conn,
    job: &str,
    bounds: [(&str, Option<String>); 2],
    schedule: [(&str, Option<String>); 2],
) -> anyhow::Result<ExitCode> {
    let mut q = vec![];
    for (k, v) in bounds {
        if let Some(v) = v {
            if v.parse::<Timestamp>().is_err() {
                eprintln!("cronwarden: --{k}: {v:?} is not an RFC 3339 instant");
                return Ok(ExitCode::from(2));
            }
            q.push(format!("{k}={}", enc(&v)));
        }
    }
    // The supervisor parses the schedule, in the config's zone by default.
    for (k, v) in schedule {
        if let Some(v) = v {
            q.push(format!("{k}={}", enc(&v)));
        }
    }
    call(
        conn,
        Method::GET,
        format!("/v1/jobs/{}/audit?{}", enc(job), q.join("&")),
        |o, r: AuditReport| render::audit::audit(o, &r, render::stdout_color()),
    )
}
