//! The command line as clap parses it: every subcommand, its flags, its
//! help text and examples. Nothing here acts; [`super::run`] dispatches.
//!
//! The help texts are user documentation (`--help`, the completion
//! scripts): the e2e tests pin parts of them.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "cronwarden",
    version,
    about = "A cron scheduler that cannot go quiet without someone knowing",
    after_help = "Examples:\n  cronwarden run --config examples/demo.toml\n  cronwarden check --config /etc/cronwarden.toml\n  cronwarden import /etc/crontab > cronwarden.toml\n  cronwarden next '*/15 2 * * *' --tz Europe/Berlin -n 5\n  cronwarden status --json"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
    /// Run the supervisor in the foreground (it starts and watches the worker).
    #[command(
        after_help = "Examples:\n  cronwarden run --config /etc/cronwarden.toml\n  cronwarden run --config examples/demo.toml --log-format json"
    )]
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// Log format on stderr (and in log_dir's files).
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Validate a config, explain each job's schedule and print its next
    /// fires; warn (exit 0) of DST surprises, skip streaks and pile-ups; exit 2
    /// if invalid.
    #[command(
        after_help = "Examples:\n  cronwarden check --config /etc/cronwarden.toml\n  cronwarden check --json | jq '.warnings'"
    )]
    Check {
        #[command(flatten)]
        config: ConfigArg,
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
        /// How many fires to print.
        #[arg(short = 'n', default_value_t = 5)]
        n: usize,
        /// Print a JSON array of the instants.
        #[arg(long)]
        json: bool,
    },
    /// Show the supervisor's status; exit 0 ok, 1 degraded, 2 stalled/down, 3 unknown.
    /// With --probe, only cronwarden's own health: exit 0 live, 2 not, 3 unknown.
    #[command(
        after_help = "Examples:\n  cronwarden status\n  cronwarden status --json | jq .state\n  cronwarden status --probe    # a liveness probe: a failing job does not fail it\n  cronwarden status --socket /run/cronwarden/cronwarden.sock"
    )]
    Status {
        /// Judge only cronwarden itself (worker up and heartbeating; not
        /// stalled, down or crash-looping), not the jobs: for a liveness
        /// probe. Exit 0 live, 2 not live, 3 unknown.
        #[arg(long)]
        probe: bool,
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
        /// The job's name.
        job: String,
        /// How many records to show, newest first.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        conn: Conn,
    },
    /// Run a job now (recorded with trigger `manual`).
    #[command(after_help = "Examples:\n  cronwarden trigger backup")]
    Trigger {
        /// The job's name.
        job: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Stop firing a job (its fires are recorded as skipped `paused`) until resumed.
    #[command(after_help = "Examples:\n  cronwarden pause backup && cronwarden resume backup")]
    Pause {
        /// The job's name.
        job: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Resume a paused job.
    #[command(after_help = "Examples:\n  cronwarden resume backup")]
    Resume {
        /// The job's name.
        job: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print a run's output (default: the job's last run): its stdout on
    /// stdout, its stderr on stderr. With -f, follow a running run until it ends.
    #[command(
        after_help = "Examples:\n  cronwarden logs backup\n  cronwarden logs backup 1042 2>/dev/null   # stdout only\n  cronwarden logs -f backup                # the run in progress, live\n  cronwarden logs backup --json            # the run record, tails included"
    )]
    Logs {
        /// The job's name.
        job: String,
        /// The run id (see `cronwarden runs JOB`); default: the last run
        /// (with -f: the newest run in progress, else the last run).
        run: Option<u64>,
        /// Follow a running run: print its lines as they come, until it ends.
        #[arg(short, long)]
        follow: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// End a running run: SIGTERM to its process group, SIGKILL after the
    /// job's kill_grace; recorded `killed` by operator. Without RUN, every
    /// run of the job in progress.
    #[command(after_help = "Examples:\n  cronwarden kill backup\n  cronwarden kill backup 1042")]
    Kill {
        /// The job's name.
        job: String,
        /// The run id to end (default: every run of the job in progress).
        run: Option<u64>,
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
    /// one record (several hosts: across them, with the host that ran each,
    /// read from the config's postgres `store`). Exit 1 when it does not.
    #[command(
        after_help = "Examples:\n  cronwarden audit backup\n  cronwarden audit backup --from 2026-11-01T00:00:00Z --to 2026-12-01T00:00:00Z --json\n  cronwarden audit old-report --schedule '0 6 * * *'   (a job removed from the config)"
    )]
    Audit {
        /// The job's name.
        job: String,
        /// Start of the window, RFC 3339 (default: 24h ago, or the job's first record).
        #[arg(long)]
        from: Option<String>,
        /// End of the window, RFC 3339 (default: a few seconds ago).
        #[arg(long)]
        to: Option<String>,
        /// Audit against this schedule instead of the config's: how a job
        /// removed from the config (its records stay) is audited.
        #[arg(long, value_name = "EXPR")]
        schedule: Option<String>,
        /// The zone of --schedule (default: the config's `timezone`).
        #[arg(long, value_name = "ZONE", requires = "schedule")]
        timezone: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Several hosts: the hosts sharing the config's `store` and an audit
    /// of the shared ledger (every scheduled time of every job has exactly
    /// one record across hosts), read from the database. Exit 1 when not.
    #[command(
        after_help = "Examples:\n  cronwarden cluster\n  cronwarden cluster --from 2026-12-01T00:00:00Z --to 2026-12-02T00:00:00Z --json"
    )]
    Cluster {
        #[command(flatten)]
        config: ConfigArg,
        /// Start of the window, RFC 3339 (default: an hour before --to).
        #[arg(long)]
        from: Option<String>,
        /// End of the window, RFC 3339 (default: 5 seconds ago).
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        json: bool,
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
        /// Give each job cronwarden's safer defaults (a timeout, and a fire
        /// skipped while the previous run is busy) instead of cron's
        /// behaviour (no timeout, runs may overlap).
        #[arg(long)]
        safe_defaults: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "Examples:\n  cronwarden completions bash > /etc/bash_completion.d/cronwarden\n  cronwarden completions zsh > \"${fpath[1]}/_cronwarden\"\n  cronwarden completions fish > ~/.config/fish/completions/cronwarden.fish"
    )]
    Completions {
        /// The shell to write the script for.
        shell: clap_complete::Shell,
    },
    /// Print the man page cronwarden(1), generated from this command line;
    /// with --dir, write it and one page per command (cronwarden-status(1), ...)
    /// into DIR.
    #[command(
        after_help = "Examples:\n  cronwarden man --dir /usr/local/share/man/man1 && mandb\n  cronwarden man | man -l -"
    )]
    Man {
        /// Write cronwarden.1 and cronwarden-COMMAND.1 here instead of
        /// printing cronwarden.1.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
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
        /// Also log to daily files here (the supervisor's `log_dir`).
        #[arg(long)]
        log_dir: Option<PathBuf>,
        #[arg(long, default_value_t = 7)]
        log_retention: u32,
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
}

#[derive(Subcommand)]
pub(crate) enum AlertsCmd {
    /// Send a clearly marked test alert through every sink; exit 1 if any fails.
    Test {
        #[command(flatten)]
        conn: Conn,
    },
}

/// The config file of `run` and `check`.
#[derive(clap::Args)]
pub(crate) struct ConfigArg {
    /// The config file [default: $CRONWARDEN_CONFIG, else /etc/cronwarden.toml].
    #[arg(long, short, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
}

/// How the CLI finds the supervisor.
#[derive(clap::Args)]
pub(crate) struct Conn {
    /// The config whose socket to use [default: $CRONWARDEN_CONFIG, else
    /// /etc/cronwarden.toml, else the socket /run/cronwarden/cronwarden.sock].
    #[arg(long, short, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// The status socket (default: the one the config names).
    #[arg(long, value_name = "PATH")]
    pub(crate) socket: Option<PathBuf>,
    /// Print the raw JSON reply.
    #[arg(long)]
    pub(crate) json: bool,
}
