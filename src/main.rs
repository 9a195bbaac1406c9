//! `cronwarden`: CLI dispatch only. The work lives in the library crates:
//! `cronwarden-shared` (config, schedules, wire and status types),
//! `cronwarden-worker` (the scheduler loop and job runner) and
//! `cronwarden-supervisor` (the supervisor, its socket and lock).

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use clap::{Parser, Subcommand, ValueEnum};
use cronwarden_shared::{
    config::{Config, DEFAULT_CONFIG},
    schedule::Schedule,
    status::StatusReport,
    timefmt::{human_duration, rfc3339_in},
};
use cronwarden_supervisor::{client, lock};
use hyper::Method;
use jiff::{tz::TimeZone, Timestamp};
use serde_json::Value;

#[derive(Parser)]
#[command(
    name = "cronwarden",
    version,
    about = "A cron scheduler that cannot go quiet without someone knowing",
    after_help = "Examples:\n  cronwarden run --config examples/demo.toml\n  cronwarden check --config /etc/cronwarden.toml\n  cronwarden next '*/15 2 * * *' --tz Europe/Berlin -n 5\n  cronwarden status --json"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the supervisor in the foreground (it starts and watches the worker).
    Run {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate a config and print each job's next fires; exit 2 if invalid.
    Check {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Print the next N fires of a schedule strictly after FROM, one per line.
    Next {
        /// A cron expression (5 or 6 fields), a nickname (@daily) or "@every <duration>".
        expr: String,
        /// IANA time zone the cron fields are matched in.
        #[arg(long, default_value = "UTC")]
        tz: String,
        /// RFC 3339 instant to start after (default: now).
        #[arg(long)]
        from: Option<String>,
        #[arg(short = 'n', default_value_t = 5)]
        n: usize,
    },
    /// Show the supervisor's status; exit 0 ok, 1 degraded, 2 stalled/down, 3 unknown.
    Status {
        #[command(flatten)]
        conn: Conn,
    },
    /// List the jobs with their state, next fire and last run.
    Jobs {
        #[command(flatten)]
        conn: Conn,
    },
    /// Show a job's run history, newest first (skipped fires included).
    Runs {
        job: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        conn: Conn,
    },
    /// Run a job now (recorded with trigger `manual`).
    Trigger {
        job: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Stop firing a job (its fires are recorded as skipped `paused`) until resumed.
    Pause {
        job: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Resume a paused job.
    Resume {
        job: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Re-read the config file (as SIGHUP does); an invalid one is refused.
    Reload {
        #[command(flatten)]
        conn: Conn,
    },
    /// Prove the ledger: every scheduled time of JOB in the window has exactly
    /// one record. Exit 1 when it does not.
    Audit {
        job: String,
        /// Start of the window, RFC 3339 (default: 24h ago, or the job's first record).
        #[arg(long)]
        from: Option<String>,
        /// End of the window, RFC 3339 (default: a few seconds ago).
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show open alerts (or, with --all, the alert history); `alerts test`
    /// sends a marked test alert through every sink and reports each result.
    Alerts {
        #[command(subcommand)]
        action: Option<AlertsCmd>,
        /// The whole history, resolved alerts included.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// The scheduler worker (started by `run`; not for direct use).
    #[command(hide = true)]
    Worker {
        #[arg(long)]
        events_fd: i32,
        #[arg(long)]
        lock_fd: Option<i32>,
        #[arg(long, default_value_t = 1)]
        first_run_id: u64,
    },
}

#[derive(Subcommand)]
enum AlertsCmd {
    /// Send a clearly marked test alert through every sink; exit 1 if any fails.
    Test {
        #[command(flatten)]
        conn: Conn,
    },
}

/// How the CLI finds the supervisor.
#[derive(clap::Args)]
struct Conn {
    #[arg(long, short, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// The status socket (default: the one the config names).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Print the raw JSON reply.
    #[arg(long)]
    json: bool,
}

fn init_logs(format: LogFormat, who: &'static str) {
    use tracing_subscriber::{fmt, EnvFilter};
    let filter =
        EnvFilter::try_from_env("CRONWARDEN_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == LogFormat::Json {
        builder.json().init();
    } else {
        builder.with_target(false).init();
    }
    tracing::debug!(who, "logging");
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // A closed stdout (`cronwarden next ... | head`) is not an error.
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("cronwarden: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Cmd::Run { config } => {
            init_logs(cli.log_format, "supervisor");
            match cronwarden_supervisor::run(cronwarden_supervisor::RunOptions {
                config_path: config,
                log_json: cli.log_format == LogFormat::Json,
            }) {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e) => {
                    eprintln!("cronwarden: {e}");
                    Ok(ExitCode::from(e.exit_code()))
                }
            }
        }
        Cmd::Worker {
            events_fd,
            lock_fd,
            first_run_id,
        } => {
            init_logs(cli.log_format, "worker");
            Ok(cronwarden_worker::main(cronwarden_worker::WorkerArgs {
                events_fd,
                lock_fd,
                first_run_id,
            }))
        }
        Cmd::Check { config } => check(&config),
        Cmd::Next { expr, tz, from, n } => next(&expr, &tz, from.as_deref(), n),
        Cmd::Status { conn } => status(&conn),
        Cmd::Alerts {
            action: Some(AlertsCmd::Test { conn }),
            ..
        } => call_within(
            &conn,
            Method::POST,
            "/v1/alerts/test".into(),
            Duration::from_secs(310),
            |o, v| {
                let sinks = v["sinks"].as_object().cloned().unwrap_or_default();
                if sinks.is_empty() {
                    writeln!(
                        o,
                        "no alert sinks are configured; alerts go to the log and the status only"
                    )?;
                }
                for (name, r) in &sinks {
                    match r["ok"].as_bool() {
                        Some(true) => writeln!(o, "{name}: delivered")?,
                        _ => writeln!(o, "{name}: FAILED: {}", r["error"].as_str().unwrap_or("?"))?,
                    }
                }
                Ok(if v["ok"] == true || sinks.is_empty() {
                    0
                } else {
                    1
                })
            },
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
            call(&conn, Method::GET, path.into(), print_alerts)
        }
        Cmd::Jobs { conn } => call(&conn, Method::GET, "/v1/jobs".into(), print_jobs),
        Cmd::Runs { job, limit, conn } => call(
            &conn,
            Method::GET,
            format!("/v1/jobs/{}/runs?limit={limit}", enc(&job)),
            print_runs,
        ),
        Cmd::Trigger { job, conn } => job_call(&conn, &job, "trigger"),
        Cmd::Pause { job, conn } => job_call(&conn, &job, "pause"),
        Cmd::Resume { job, conn } => job_call(&conn, &job, "resume"),
        Cmd::Reload { conn } => call(&conn, Method::POST, "/v1/reload".into(), |o, v| {
            writeln!(o, "reloaded: {} job(s)", v["jobs"])?;
            Ok(0)
        }),
        Cmd::Audit {
            job,
            from,
            to,
            conn,
        } => {
            let mut q = vec![];
            for (k, v) in [("from", from), ("to", to)] {
                if let Some(v) = v {
                    if v.parse::<Timestamp>().is_err() {
                        eprintln!("cronwarden: --{k}: {v:?} is not an RFC 3339 instant");
                        return Ok(ExitCode::from(2));
                    }
                    q.push(format!("{k}={}", v.replace(':', "%3A").replace('+', "%2B")));
                }
            }
            call(
                &conn,
                Method::GET,
                format!("/v1/jobs/{}/audit?{}", enc(&job), q.join("&")),
                print_audit,
            )
        }
    }
}

fn check(path: &Path) -> anyhow::Result<ExitCode> {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "{}: {} error(s); the config is not valid",
                path.display(),
                errors.0.len()
            );
            return Ok(ExitCode::from(2));
        }
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}: ok, {} job(s)", path.display(), config.jobs.len())?;
    let now = Timestamp::now();
    for job in &config.jobs {
        writeln!(
            out,
            "{}  {:?} ({})",
            job.name,
            job.schedule.expr(),
            job.timezone
        )?;
        let mut t = now;
        for _ in 0..3 {
            match job.schedule.next_after(t, None) {
                Some(next) => {
                    writeln!(out, "  {}", rfc3339_in(next, job.schedule.timezone()))?;
                    t = next;
                }
                None => break,
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn next(expr: &str, tz: &str, from: Option<&str>, n: usize) -> anyhow::Result<ExitCode> {
    let zone = match TimeZone::get(tz) {
        Ok(z) => z,
        Err(_) => {
            eprintln!("cronwarden: --tz: unknown time zone {tz:?}");
            return Ok(ExitCode::from(2));
        }
    };
    let start: Timestamp = match from {
        None => Timestamp::now(),
        Some(s) => match s.parse::<Timestamp>() {
            Ok(t) => t,
            Err(e) => {
                eprintln!("cronwarden: --from: {s:?} is not an RFC 3339 instant: {e}");
                return Ok(ExitCode::from(2));
            }
        },
    };
    let schedule = match Schedule::parse(expr, &zone) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cronwarden: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let mut out = std::io::stdout().lock();
    let mut t = start;
    for _ in 0..n {
        // As `check` and the scheduler do: a fresh @every cadence starts on
        // the next whole second after FROM, not at FROM's fraction.
        let Some(next) = schedule.next_after(t, None) else {
            break;
        };
        writeln!(out, "{}", rfc3339_in(next, &zone))?;
        t = next;
    }
    Ok(ExitCode::SUCCESS)
}

fn status(conn: &Conn) -> anyhow::Result<ExitCode> {
    let (config, socket, json) = (&conn.config, conn.socket.clone(), conn.json);
    const UNKNOWN: u8 = 3;
    let (socket, lock_path) = match socket {
        Some(s) => (s, None),
        None => match Config::locate(config) {
            Ok((socket, lock)) => (socket, Some(lock)),
            Err(e) => {
                eprintln!("cronwarden: status unknown: cannot find the socket:\n{e}");
                return Ok(ExitCode::from(UNKNOWN));
            }
        },
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let reply = rt.block_on(client::get(&socket, "/v1/status", Duration::from_secs(5)));
    let (code, body) = match reply {
        Ok(r) => r,
        Err(e) => {
            let holder = lock_path
                .filter(|p| lock::is_held(p))
                .map(|p| match lock::read_holder(&p) {
                    Ok(h) => format!(
                        "; the lock {} is held by pid {} which does not answer",
                        p.display(),
                        h.pid
                    ),
                    Err(_) => format!(
                        "; the lock {} is held by a process that does not answer",
                        p.display()
                    ),
                })
                .unwrap_or_else(|| "; no supervisor is running".into());
            eprintln!("cronwarden: status unknown: {e}{holder}");
            return Ok(ExitCode::from(UNKNOWN));
        }
    };
    let report: StatusReport = match serde_json::from_slice(&body) {
        Ok(r) if code == 200 => r,
        _ => {
            eprintln!(
                "cronwarden: status unknown: HTTP {code} from {}: {}",
                socket.display(),
                String::from_utf8_lossy(&body)
            );
            return Ok(ExitCode::from(UNKNOWN));
        }
    };
    let mut out = std::io::stdout().lock();
    if json {
        out.write_all(&body)?;
    } else {
        print_status(&mut out, &report)?;
    }
    Ok(ExitCode::from(report.state.exit_code()))
}

/// Percent-encodes a job name for a URL path.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Resolves the socket: `--socket`, else the config's.
fn socket_for(conn: &Conn) -> Result<PathBuf, ExitCode> {
    match &conn.socket {
        Some(s) => Ok(s.clone()),
        None => Config::locate(&conn.config)
            .map(|(socket, _)| socket)
            .map_err(|e| {
                eprintln!("cronwarden: cannot find the socket:\n{e}");
                ExitCode::from(3)
            }),
    }
}

/// One call on the socket. Prints the JSON with `--json`, else through
/// `show`; exit 0 on success, 1 when refused, 3 when nobody answers.
fn call(
    conn: &Conn,
    method: Method,
    path: String,
    show: impl FnOnce(&mut dyn Write, &Value) -> std::io::Result<u8>,
) -> anyhow::Result<ExitCode> {
    call_within(conn, method, path, Duration::from_secs(15), show)
}

fn call_within(
    conn: &Conn,
    method: Method,
    path: String,
    limit: Duration,
    show: impl FnOnce(&mut dyn Write, &Value) -> std::io::Result<u8>,
) -> anyhow::Result<ExitCode> {
    let socket = match socket_for(conn) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (code, body) = match rt.block_on(client::request(&socket, method, &path, limit)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cronwarden: {e} (is `cronwarden run` running?)");
            return Ok(ExitCode::from(3));
        }
    };
    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut out = std::io::stdout().lock();
    if !(200..300).contains(&code) {
        let msg = value["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        eprintln!("cronwarden: {msg}");
        if conn.json {
            out.write_all(&body)?;
        }
        return Ok(ExitCode::from(1));
    }
    if conn.json {
        out.write_all(&body)?;
        // The audit's verdict is its exit code, with --json too.
        return Ok(ExitCode::from(if value["ok"] == Value::Bool(false) {
            1
        } else {
            0
        }));
    }
    Ok(ExitCode::from(show(&mut out, &value)?))
}

/// `trigger`, `pause` or `resume` one job.
fn job_call(conn: &Conn, job: &str, op: &'static str) -> anyhow::Result<ExitCode> {
    call(
        conn,
        Method::POST,
        format!("/v1/jobs/{}/{op}", enc(job)),
        |o, v| {
            match op {
                "trigger" => writeln!(o, "triggered: run {}", v["run_id"])?,
                _ => writeln!(o, "{op}d")?,
            }
            Ok(0)
        },
    )
}

fn table(out: &mut dyn Write, header: &[&str], rows: Vec<Vec<String>>) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let head: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&head).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
    }
    Ok(())
}

fn ts(v: &Value) -> Option<Timestamp> {
    v.as_str().and_then(|s| s.parse().ok())
}

fn print_jobs(out: &mut dyn Write, v: &Value) -> std::io::Result<u8> {
    let now = Timestamp::now();
    let rows = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|j| {
            let last = &j["last_run"];
            vec![
                j["name"].as_str().unwrap_or_default().to_string(),
                j["state"].as_str().unwrap_or_default().to_string(),
                j["schedule"].as_str().unwrap_or_default().to_string(),
                relative(ts(&j["next_fire_at"]), now),
                if last.is_null() {
                    "-".into()
                } else {
                    format!(
                        "{} {}",
                        last["outcome"].as_str().unwrap_or_default(),
                        relative(ts(&last["finished_at"]), now)
                    )
                },
            ]
        })
        .collect();
    table(out, &["JOB", "STATE", "SCHEDULE", "NEXT", "LAST RUN"], rows)?;
    Ok(0)
}

fn print_runs(out: &mut dyn Write, v: &Value) -> std::io::Result<u8> {
    let now = Timestamp::now();
    let rows = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let outcome = match r["skip_reason"].as_str() {
                Some(reason) => format!("skipped ({reason})"),
                None => r["outcome"].as_str().unwrap_or_default().to_string(),
            };
            let exit = match (r["exit_code"].as_i64(), r["signal"].as_i64()) {
                (Some(c), _) => format!("exit {c}"),
                (_, Some(s)) => format!("signal {s}"),
                _ => "-".into(),
            };
            vec![
                r["id"].to_string(),
                relative(ts(&r["scheduled_at"]), now),
                r["trigger"].as_str().unwrap_or_default().to_string(),
                outcome,
                exit,
                r["duration_ms"]
                    .as_u64()
                    .map(|d| human_duration(Duration::from_millis(d)))
                    .unwrap_or_else(|| "-".into()),
                format!("{}/{}", r["stdout_bytes"], r["stderr_bytes"]),
            ]
        })
        .collect();
    table(
        out,
        &[
            "RUN",
            "SCHEDULED",
            "TRIGGER",
            "OUTCOME",
            "EXIT",
            "TOOK",
            "OUT/ERR BYTES",
        ],
        rows,
    )?;
    Ok(0)
}

fn print_alerts(out: &mut dyn Write, v: &Value) -> std::io::Result<u8> {
    let now = Timestamp::now();
    let rows: Vec<Vec<String>> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            vec![
                a["severity"].as_str().unwrap_or_default().to_string(),
                a["kind"].as_str().unwrap_or_default().to_string(),
                a["job"].as_str().unwrap_or("-").to_string(),
                relative(ts(&a["opened_at"]), now),
                match ts(&a["resolved_at"]) {
                    Some(t) => format!("resolved {}", relative(Some(t), now)),
                    None => "open".into(),
                },
                a["summary"].as_str().unwrap_or_default().to_string(),
            ]
        })
        .collect();
    if rows.is_empty() {
        writeln!(out, "no alerts")?;
        return Ok(0);
    }
    table(
        out,
        &["SEVERITY", "KIND", "JOB", "OPENED", "STATE", "SUMMARY"],
        rows,
    )?;
    Ok(0)
}

fn print_audit(out: &mut dyn Write, v: &Value) -> std::io::Result<u8> {
    let ok = v["ok"] == Value::Bool(true);
    writeln!(
        out,
        "{}: {} scheduled time(s) from {} to {}: {} record(s)",
        v["job"].as_str().unwrap_or_default(),
        v["expected"],
        v["from"].as_str().unwrap_or_default(),
        v["to"].as_str().unwrap_or_default(),
        v["records"]
    )?;
    if let Some(o) = v["outcomes"].as_object() {
        let parts: Vec<String> = o.iter().map(|(k, n)| format!("{k} {n}")).collect();
        writeln!(out, "  outcomes: {}", parts.join(", "))?;
    }
    for key in ["missing", "duplicated", "unexpected"] {
        let list = v[key].as_array().cloned().unwrap_or_default();
        if !list.is_empty() {
            let shown: Vec<String> = list
                .iter()
                .take(10)
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect();
            let more = if list.len() > 10 { ", …" } else { "" };
            writeln!(out, "  {key}: {} ({}{more})", list.len(), shown.join(", "))?;
        }
    }
    writeln!(out, "  invariant {}", if ok { "holds" } else { "BROKEN" })?;
    Ok(if ok { 0 } else { 1 })
}

fn ago(ms: Option<u64>) -> String {
    ms.map(|ms| format!("{} ago", human_duration(Duration::from_millis(ms))))
        .unwrap_or_else(|| "never".into())
}

fn relative(t: Option<Timestamp>, now: Timestamp) -> String {
    let Some(t) = t else { return "-".into() };
    let d = t.duration_since(now);
    let abs = Duration::try_from(d.abs()).unwrap_or_default();
    if d.is_negative() {
        format!("{} ago", human_duration(abs))
    } else {
        format!("in {}", human_duration(abs))
    }
}

fn print_status(out: &mut impl Write, r: &StatusReport) -> std::io::Result<()> {
    let now = Timestamp::now();
    writeln!(out, "state: {}", r.state.as_str())?;
    for reason in &r.reasons {
        writeln!(out, "  - {reason}")?;
    }
    writeln!(
        out,
        "supervisor: pid {}, version {}, up since {}",
        r.supervisor.pid, r.supervisor.version, r.supervisor.started_at
    )?;
    match r.worker.pid {
        Some(pid) => writeln!(
            out,
            "worker: pid {pid}, restarts {}, heartbeat {}, last good turn {}",
            r.worker.restarts,
            ago(r.worker.heartbeat_age_ms),
            ago(r.worker.last_good_turn_age_ms)
        )?,
        None => writeln!(out, "worker: not running, restarts {}", r.worker.restarts)?,
    }
    let rows: Vec<[String; 5]> = r
        .jobs
        .iter()
        .map(|j| {
            let last = j
                .last_run
                .as_ref()
                .map(|l| {
                    format!(
                        "{} {}",
                        l.outcome.as_str(),
                        relative(l.finished_at.or(l.started_at), now)
                    )
                })
                .unwrap_or_else(|| "-".into());
            [
                j.name.clone(),
                j.state.as_str().into(),
                j.schedule.clone(),
                relative(j.next_fire_at, now),
                last,
            ]
        })
        .collect();
    let header = ["JOB", "STATE", "SCHEDULE", "NEXT", "LAST RUN"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
    }
    Ok(())
}
