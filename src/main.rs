//! `cronwarden`: CLI dispatch only. The work lives in the library crates:
//! `cronwarden-shared` (config, schedules, wire and status types),
//! `cronwarden-worker` (the scheduler loop and job runner) and
//! `cronwarden-supervisor` (the supervisor, its socket and lock).

mod cli;
mod logs;

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use clap::{Parser, Subcommand, ValueEnum};
use cli::{client, import::crontab, lint, render};
use cronwarden_shared::{
    config::{Config, DEFAULT_CONFIG},
    schedule::Schedule,
    status::StatusReport,
    timefmt::rfc3339_in,
};
use cronwarden_supervisor::lock;
use hyper::Method;
use jiff::{tz::TimeZone, Timestamp};
use serde_json::Value;

#[derive(Parser)]
#[command(
    name = "cronwarden",
    version,
    about = "A cron scheduler that cannot go quiet without someone knowing",
    after_help = "Examples:\n  cronwarden run --config examples/demo.toml\n  cronwarden check --config /etc/cronwarden.toml\n  cronwarden import /etc/crontab > cronwarden.toml\n  cronwarden next '*/15 2 * * *' --tz Europe/Berlin -n 5\n  cronwarden status --json"
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
    #[command(
        after_help = "Examples:\n  cronwarden run --config /etc/cronwarden.toml\n  cronwarden run --config examples/demo.toml --log-format json"
    )]
    Run {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate a config, explain each job's schedule and print its next
    /// fires; warn (exit 0) of DST surprises, skip streaks and pile-ups; exit 2
    /// if invalid.
    #[command(
        after_help = "Examples:\n  cronwarden check --config /etc/cronwarden.toml\n  cronwarden check --json | jq '.warnings'"
    )]
    Check {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Print the jobs, next fires and warnings as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the next N fires of a schedule strictly after FROM, one per line.
    #[command(
        after_help = "Examples:\n  cronwarden next '30 2 * * *' --tz Europe/Berlin -n 3\n  cronwarden next '@every 90s' --from 2026-12-01T00:00:00Z --json"
    )]
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
        /// Print a JSON array of the instants.
        #[arg(long)]
        json: bool,
    },
    /// Show the supervisor's status; exit 0 ok, 1 degraded, 2 stalled/down, 3 unknown.
    #[command(
        after_help = "Examples:\n  cronwarden status --config /etc/cronwarden.toml\n  cronwarden status --json | jq .state\n  cronwarden status --socket /run/cronwarden.sock"
    )]
    Status {
        #[command(flatten)]
        conn: Conn,
    },
    /// List the jobs with their state, next fire and last run.
    #[command(
        after_help = "Examples:\n  cronwarden jobs --config /etc/cronwarden.toml\n  cronwarden jobs --json | jq -r '.[] | select(.state != \"idle\") | .name'"
    )]
    Jobs {
        #[command(flatten)]
        conn: Conn,
    },
    /// Show a job's run history, newest first (skipped fires included).
    #[command(
        after_help = "Examples:\n  cronwarden runs backup\n  cronwarden runs backup --limit 100 --json"
    )]
    Runs {
        job: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        conn: Conn,
    },
    /// Run a job now (recorded with trigger `manual`).
    #[command(after_help = "Examples:\n  cronwarden trigger backup")]
    Trigger {
        job: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Stop firing a job (its fires are recorded as skipped `paused`) until resumed.
    #[command(after_help = "Examples:\n  cronwarden pause backup && cronwarden resume backup")]
    Pause {
        job: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Resume a paused job.
    #[command(after_help = "Examples:\n  cronwarden resume backup")]
    Resume {
        job: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Re-read the config file (as SIGHUP does); an invalid one is refused.
    #[command(
        after_help = "Examples:\n  cronwarden reload --config /etc/cronwarden.toml\n  systemctl reload cronwarden   # the same, by SIGHUP"
    )]
    Reload {
        #[command(flatten)]
        conn: Conn,
    },
    /// Prove the ledger: every scheduled time of JOB in the window has exactly
    /// one record. Exit 1 when it does not.
    #[command(
        after_help = "Examples:\n  cronwarden audit backup\n  cronwarden audit backup --from 2026-11-01T00:00:00Z --to 2026-12-01T00:00:00Z --json"
    )]
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
    #[command(
        after_help = "Examples:\n  cronwarden alerts\n  cronwarden alerts --all --json\n  cronwarden alerts test"
    )]
    Alerts {
        #[command(subcommand)]
        action: Option<AlertsCmd>,
        /// The whole history, resolved alerts included.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Convert a crontab (FILE, or - for stdin) into cronwarden TOML on stdout.
    /// Exit 0 when every line translated, 1 when some became comments, 2
    /// when the file cannot be read.
    #[command(
        after_help = "Examples:\n  cronwarden import /etc/crontab > system.toml && cronwarden check --config system.toml\n  crontab -l | cronwarden import - > cronwarden.toml\n  cronwarden import --system /srv/cron.d/backup --tz Europe/Berlin"
    )]
    Import {
        /// The crontab file, or `-` for stdin.
        file: PathBuf,
        /// System format, with a user column (the default for /etc/crontab
        /// and files under /etc/cron.d).
        #[arg(long)]
        system: bool,
        /// The zone cron's local time stands for (default: this host's zone).
        #[arg(long)]
        tz: Option<String>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "Examples:\n  cronwarden completions bash > /etc/bash_completion.d/cronwarden\n  cronwarden completions zsh > \"${fpath[1]}/_cronwarden\"\n  cronwarden completions fish > ~/.config/fish/completions/cronwarden.fish"
    )]
    Completions { shell: clap_complete::Shell },
    /// The scheduler worker (started by `run`; not for direct use).
    #[command(hide = true)]
    Worker {
        #[arg(long)]
        events_fd: i32,
        #[arg(long)]
        lock_fd: Option<i32>,
        #[arg(long, default_value_t = 1)]
        first_run_id: u64,
        /// Also log to daily files here (the supervisor's `log_dir`).
        #[arg(long)]
        log_dir: Option<PathBuf>,
        #[arg(long, default_value_t = 7)]
        log_retention: u32,
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
            // Log files are set up before `run` validates the config; an
            // invalid config is then reported by `run` (on stderr).
            let files = cronwarden_shared::config::Config::load(&config)
                .ok()
                .and_then(|c| {
                    c.integrations
                        .log_dir
                        .map(|d| (d, c.integrations.log_retention))
                });
            let _guard = logs::init(
                cli.log_format == LogFormat::Json,
                "supervisor",
                files.as_ref().map(|(d, r)| (d.as_path(), *r)),
            );
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
            log_dir,
            log_retention,
        } => {
            let _guard = logs::init(
                cli.log_format == LogFormat::Json,
                "worker",
                log_dir.as_deref().map(|d| (d, log_retention)),
            );
            Ok(cronwarden_worker::main(cronwarden_worker::WorkerArgs {
                events_fd,
                lock_fd,
                first_run_id,
            }))
        }
        Cmd::Check { config, json } => check(&config, json),
        Cmd::Import { file, system, tz } => import(&file, system, tz),
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
        } => next(&expr, &tz, from.as_deref(), n, json),
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
            call(&conn, Method::GET, path.into(), |o, v| {
                render::alerts(o, v, Timestamp::now(), color())
            })
        }
        Cmd::Jobs { conn } => call(&conn, Method::GET, "/v1/jobs".into(), |o, v| {
            render::jobs(o, v, Timestamp::now(), color())
        }),
        Cmd::Runs { job, limit, conn } => call(
            &conn,
            Method::GET,
            format!("/v1/jobs/{}/runs?limit={limit}", enc(&job)),
            |o, v| render::runs(o, v, Timestamp::now(), color()),
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
                |o, v| render::audit(o, v, color()),
            )
        }
    }
}

fn check(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            if json {
                writeln!(out, "{}", render::check_errors_json(path, &errors))?;
            }
            eprintln!("{errors}");
            eprintln!(
                "{}: {} error(s); the config is not valid",
                path.display(),
                errors.0.len()
            );
            return Ok(ExitCode::from(2));
        }
    };
    let now = Timestamp::now();
    let warnings = lint::lint(&config, now);
    if json {
        writeln!(out, "{}", render::check_json(&config, &warnings, now))?;
        return Ok(ExitCode::SUCCESS);
    }
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let counted = match warnings.len() {
        0 => String::new(),
        n => format!(", {n} warning(s)"),
    };
    writeln!(
        out,
        "{}: ok, {} job(s){counted}",
        path.display(),
        config.jobs.len()
    )?;
    for job in &config.jobs {
        render::check_job(&mut out, job, now, 3)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn import(file: &Path, system: bool, tz: Option<String>) -> anyhow::Result<ExitCode> {
    use std::io::Read;
    let stdin = file == Path::new("-");
    let mut bytes = vec![];
    let read = if stdin {
        std::io::stdin().read_to_end(&mut bytes).map(|_| ())
    } else {
        std::fs::File::open(file).and_then(|mut f| f.read_to_end(&mut bytes).map(|_| ()))
    };
    if let Err(e) = read {
        eprintln!("cronwarden: cannot read {}: {e}", file.display());
        return Ok(ExitCode::from(2));
    }
    let timezone = match tz {
        Some(tz) if TimeZone::get(&tz).is_err() => {
            eprintln!("cronwarden: --tz: unknown time zone {tz:?}");
            return Ok(ExitCode::from(2));
        }
        Some(tz) => Some(tz),
        None => TimeZone::system().iana_name().map(str::to_string),
    };
    let opts = crontab::Options {
        system: system
            || (!stdin && crontab::is_system_path(&file.canonicalize().unwrap_or(file.into()))),
        source: if stdin {
            "stdin".into()
        } else {
            file.display().to_string()
        },
        timezone,
    };
    let conversion = crontab::convert(&String::from_utf8_lossy(&bytes), &opts);
    std::io::stdout()
        .lock()
        .write_all(conversion.toml.as_bytes())?;
    for (line, why) in &conversion.untranslated {
        let why = why.lines().next().unwrap_or_default();
        eprintln!("{}: line {line}: not translated: {why}", opts.source);
    }
    Ok(ExitCode::from(u8::from(
        !conversion.untranslated.is_empty(),
    )))
}

fn next(
    expr: &str,
    tz: &str,
    from: Option<&str>,
    n: usize,
    json: bool,
) -> anyhow::Result<ExitCode> {
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
    let mut fires = vec![];
    for _ in 0..n {
        // As `check` and the scheduler do: a fresh @every cadence starts on
        // the next whole second after FROM, not at FROM's fraction.
        let Some(next) = schedule.next_after(t, None) else {
            break;
        };
        fires.push(rfc3339_in(next, &zone));
        t = next;
    }
    if json {
        writeln!(out, "{}", Value::from(fires))?;
    } else {
        for f in fires {
            writeln!(out, "{f}")?;
        }
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
        render::status(&mut out, &report, Timestamp::now(), color())?;
    }
    Ok(ExitCode::from(report.state.exit_code()))
}

/// Whether stdout gets colour (a terminal, and `NO_COLOR` unset).
fn color() -> bool {
    use std::io::IsTerminal;
    render::color_enabled(
        std::io::stdout().is_terminal(),
        std::env::var("NO_COLOR").ok().as_deref(),
        std::env::var("CLICOLOR_FORCE").ok().as_deref(),
    )
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
