//! The configuration file: one TOML document, validated completely. This
//! module holds the model (a validated [`Config`] and its parts) and the
//! loading ([`Config::load`], [`Config::parse`], [`Config::locate`]); the
//! checks live by concern in its submodules: `validate` (the `Validator`
//! and its generic key helpers), `job` (the `[[job]]` keys), `sched`
//! (jitter and retries), `sinks` (the `[[alert]]` sinks), `integrations`
//! (metrics, host heartbeat, log files) and `dropin` (the drop-in
//! directory). Its only I/O is reading the file and its drop-ins and
//! resolving `user` and group
//! names through the system's databases.
//!
//! Validation never stops at the first problem: [`Config::parse`] returns
//! every error, each naming the file, the job (when inside a `[[job]]`) and
//! the key, so an operator fixes a config in one pass. Unknown keys are
//! errors (a typo must not silently fall back to a default).
//!
//! Relative paths (`state_dir`, `socket`, a job's `working_dir`) are resolved
//! against the directory of the config file, not the process's cwd, so a
//! config means the same thing wherever cronwarden is started from.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use toml::{Table, Value};

use crate::{alert_kind::AlertKind, schedule::Schedule};

pub mod cluster;
pub mod dropin;
pub(crate) mod integrations;
pub(crate) mod job;
mod sched;
pub use sched::{RetryPolicy, MAX_RETRIES, MAX_RETRY_DELAY};
mod sinks;
pub use sinks::ALERTMANAGER_REPEAT;
mod validate;

pub use cluster::ClusterConfig;
pub use dropin::{DropIn, Source};
pub use integrations::{
    expand_ping, ping_target, run_uuid, Integrations, PingTemplates, PingVars, TemplateError,
};
use job::JobDefaults;
use validate::Validator;

/// The config file looked for when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "cronwarden.toml";
/// The largest config file accepted (a 10,000-job config is about 2 MiB).
pub(crate) const MAX_CONFIG_BYTES: usize = 16 << 20;
/// Where state lives when the config does not say.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/cronwarden";
/// The socket under systemd's `RuntimeDirectory=cronwarden`: the default
/// when the config names no socket and keeps the default state directory,
/// if [`RUNTIME_DIR`] exists (see [`default_socket`]).
pub const RUNTIME_SOCKET: &str = "/run/cronwarden/cronwarden.sock";
/// The runtime directory systemd creates for the unit.
pub const RUNTIME_DIR: &str = "/run/cronwarden";

/// The socket of a config that names none: [`RUNTIME_SOCKET`] for the
/// system's scheduler (state in [`DEFAULT_STATE_DIR`]) when [`RUNTIME_DIR`]
/// is a directory, so clients that cannot read the config find it at the
/// standard path; else `<state_dir>/cronwarden.sock`. A scheduler with its
/// own `state_dir` keeps its socket there: two schedulers on one host must
/// never share a socket path. Supervisor and clients compute this alike
/// (the clients through [`Config::locate`]).
pub fn default_socket(state_dir: &Path) -> PathBuf {
    if state_dir == Path::new(DEFAULT_STATE_DIR) && Path::new(RUNTIME_DIR).is_dir() {
        PathBuf::from(RUNTIME_SOCKET)
    } else {
        state_dir.join("cronwarden.sock")
    }
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// The job's name, or `job #N` (1-based) when it has none.
    pub job: Option<String>,
    /// The key, dotted for nested tables (`watchdog.stall_after`); empty for
    /// errors about the whole file.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.display())?;
        if let Some(job) = &self.job {
            write!(f, "job {job:?}: ")?;
        }
        if !self.key.is_empty() {
            write!(f, "key {:?}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a config file (never empty).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// What to do when a job is due while its previous run is still going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// Record the fire as skipped (reason `overlap`).
    Skip,
    /// Run it when the current run ends; at most one pending.
    Queue,
    /// Kill the running one (recorded `killed`) and start the new one.
    Replace,
    /// Run concurrently.
    Allow,
}

impl Overlap {
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::Queue => "queue",
            Overlap::Replace => "replace",
            Overlap::Allow => "allow",
        }
    }
}

/// What a job's fire does while the store cannot commit its claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnStoreFailure {
    /// Run it (availability first); the supervisor keeps a copy of the
    /// held claim and record.
    #[default]
    Run,
    /// Skip it (`store_unavailable`), recorded once the store writes.
    Hold,
}

/// How a job is started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobCommand {
    /// Executed directly, never through a shell.
    Argv(Vec<String>),
    /// Run as `/bin/sh -c <script>`.
    Shell(String),
}

impl JobCommand {
    pub fn argv(&self) -> Vec<String> {
        match self {
            JobCommand::Argv(v) => v.clone(),
            JobCommand::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
        }
    }
}

/// The watchdog's timings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watchdog {
    /// How often the worker's loop reports progress.
    pub heartbeat_interval: Duration,
    /// Heartbeat silence after which the worker is declared stalled and replaced.
    pub stall_after: Duration,
    /// How long after its scheduled time a fire may go unseen before the job is late.
    pub late_after: Duration,
    /// How long a worker may keep heartbeating without an error-free loop
    /// turn before it is replaced.
    pub failing_restart_after: Duration,
}

impl Default for Watchdog {
    fn default() -> Self {
        Watchdog {
            heartbeat_interval: Duration::from_secs(1),
            stall_after: Duration::from_secs(5),
            late_after: Duration::from_secs(60),
            failing_restart_after: Duration::from_secs(60),
        }
    }
}

/// One `[[job]]`.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub name: String,
    pub schedule: Schedule,
    /// The zone's IANA name, as configured (or inherited).
    pub timezone: String,
    pub command: JobCommand,
    /// `None` only when the config says `timeout = "none"`.
    pub timeout: Option<Duration>,
    pub kill_grace: Duration,
    pub overlap: Overlap,
    pub misfire_grace: Duration,
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<PathBuf>,
    /// Alert after this many consecutive runs with no output at all.
    pub zero_output_alert_after: Option<u32>,
    /// Alert after this many consecutive failed runs.
    pub alert_after_failures: u32,
    /// Alert after this many consecutive fires skipped because the previous
    /// run was still busy.
    pub overlap_alert_after: u32,
    /// Mark the job late when a fire is not seen this long after its time.
    pub late_after: Duration,
    /// healthchecks.io-style pings: `<url>/start`, `<url>`, `<url>/fail`.
    pub ping_url: Option<String>,
    /// `ping_start_url`, `ping_success_url`, `ping_failure_url`: pings
    /// spelled out per event, with placeholders (never with `ping_url`).
    pub ping_templates: PingTemplates,
    /// Run as this user (its uid, primary group and supplementary groups).
    pub user: Option<String>,
    /// Run with this group as the primary one.
    pub group: Option<String>,
    /// Start from cronwarden's own environment instead of a clean one.
    pub inherit_env: bool,
    /// The job's niceness (-20..=19), set before exec.
    pub nice: Option<i32>,
    pub limits: Limits,
    /// Records (runs and skips) kept in the store; older ones are pruned.
    pub retention: u32,
    /// Keep the full output of the newest N runs in files under
    /// `<state_dir>/output/<job>/` (off when `None`).
    pub keep_output: Option<u32>,
    /// Each line of the job's stdout and stderr also goes to cronwarden's
    /// log as it arrives (within the output log budget).
    pub log_output: bool,
    /// `on_store_failure`: run or hold a fire the store cannot commit.
    pub on_store_failure: OnStoreFailure,
    /// What happens to processes the job leaves behind when its main
    /// process exits.
    pub leftovers: Leftovers,
    /// `jitter`: fires start up to this much after their time.
    pub jitter: Duration,
    /// This host's fixed share of `jitter` (see [`crate::jitter`]),
    /// computed when the config is read.
    pub jitter_offset: Duration,
    /// `retries`, `retry_delay`, `retry_backoff`.
    pub retry: RetryPolicy,
}

/// `leftovers`: what becomes of a run's processes still alive when its
/// main process exits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Leftovers {
    /// Killed (the whole cgroup, or the process group without cgroups),
    /// and counted in the run record: systemd's control-group mode.
    #[default]
    Kill,
    /// Left running (until the next start of cronwarden sweeps them).
    Keep,
}

/// Resource limits set in the job's process before exec (soft = hard).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// RLIMIT_NOFILE: open descriptors.
    pub nofile: Option<u64>,
    /// RLIMIT_AS: address space, bytes.
    pub address_space: Option<u64>,
    /// RLIMIT_CPU: CPU time, whole seconds (rounded up).
    pub cpu_seconds: Option<u64>,
    /// RLIMIT_NPROC: processes of the job's user (not enforced for root:
    /// pair it with `user`). The fallback for `pids_max`.
    pub nproc: Option<u64>,
    /// cgroup `memory.max`, bytes (needs the memory controller).
    pub memory_max: Option<u64>,
    /// cgroup `pids.max` (needs the pids controller).
    pub pids_max: Option<u64>,
    /// cgroup `cpu.weight`, 1..=10000 (needs the cpu controller).
    pub cpu_weight: Option<u32>,
}

/// A header value of a webhook: literal, or read from the supervisor's
/// environment at delivery time (`"env:SLACK_TOKEN"`), so secrets stay out
/// of the config file and out of logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    Literal(String),
    Env(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// The alert notice itself.
    Json,
    /// `{"text": "..."}`, which Slack, Mattermost and others accept.
    Slack,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkKind {
    /// Runs argv with the alert as JSON on stdin and `CRONWARDEN_ALERT_*` variables.
    Exec { argv: Vec<String> },
    /// POSTs the alert.
    Webhook {
        url: String,
        format: WebhookFormat,
        headers: Vec<(String, HeaderValue)>,
    },
    /// Pushes the alert to Alertmanager's `POST <url>/api/v2/alerts`,
    /// again every `repeat_after` while it is open.
    Alertmanager {
        url: String,
        headers: Vec<(String, HeaderValue)>,
    },
}

/// One `[[alert]]` block.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkSpec {
    /// `name`, or `<kind>#<n>`.
    pub name: String,
    pub kind: SinkKind,
    /// Bound on one delivery attempt.
    pub timeout: Duration,
    /// Attempts after the first, with exponential backoff from 500ms.
    pub retries: u32,
    /// Only these alert kinds (all when absent).
    pub kinds: Option<Vec<AlertKind>>,
    /// Only alerts of these jobs (all when absent; worker alerts have no job).
    pub jobs: Option<Vec<String>>,
    pub min_severity: crate::status::Severity,
    /// `repeat_after`: this sink's own reminder cadence, overriding
    /// `alert_repeat_after` (None: follow it; Some(None): no reminders).
    pub repeat_after: Option<Option<Duration>>,
}

/// The specs behind `Arc`s, in a list of their own size: collecting
/// `into_iter().map(Arc::new)` would reuse (and keep) the specs' buffer,
/// ~600 bytes a job, for 8-byte pointers.
fn arcs(jobs: Vec<JobSpec>) -> Vec<Arc<JobSpec>> {
    let mut out = Vec::with_capacity(jobs.len());
    out.extend(jobs.into_iter().map(Arc::new));
    out
}

/// A validated config.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from, as given.
    pub path: PathBuf,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub timezone: String,
    pub watchdog: Watchdog,
    /// Behind `Arc`s: the worker's plan and the supervisor's model share
    /// them (a spec is about 600 bytes; issue 18).
    pub jobs: Vec<Arc<JobSpec>>,
    pub sinks: Vec<SinkSpec>,
    /// Re-send open alerts as `reminder` notices this often (off by default).
    pub alert_repeat_after: Option<Duration>,
    /// The group the socket (and its directory) belongs to: who may connect.
    pub socket_group: Option<(String, u32)>,
    /// Members of this group may make control calls (trigger, pause,
    /// resume, reload, alerts test), besides root and cronwarden's own user.
    pub control_group: Option<(String, u32)>,
    /// Metrics listener, host heartbeat URL, log files.
    pub integrations: Integrations,
    /// The drop-in files read, in the order read (see [`dropin`]).
    pub dropins: Vec<PathBuf>,
    /// The drop-in each drop-in job came from; the others are in `path`.
    pub job_files: BTreeMap<String, PathBuf>,
    /// `cgroups`: a cgroup v2 per run where one can be made (default);
    /// `false` keeps runs in process groups only.
    pub cgroups: bool,
    /// `store = "postgres://…"`: several hosts share one ledger.
    pub cluster: Option<ClusterConfig>,
    /// Positions in `jobs` in name order, for [`Config::job`].
    by_name: Vec<u32>,
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Config::read(path).map(|(config, _)| config)
    }

    /// Reads and validates `path` and its drop-ins, and keeps the texts it
    /// parsed: the supervisor judges by the config and each worker runs the
    /// texts, so both must come from one read (a second could see the files
    /// rewritten).
    pub fn read(path: &Path) -> Result<(Config, Source), ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                job: None,
                key: String::new(),
                message: format!("cannot read config file: {e}"),
            }])
        })?;
        let budget = MAX_CONFIG_BYTES.saturating_sub(text.len());
        let dropins = dropin::read(path, budget).map_err(ConfigErrors)?;
        let source = Source { text, dropins };
        let config = Config::parse_source(path, &source)?;
        Ok((config, source))
    }

    /// Validates `text` as if read from `path`, without drop-ins.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
        Config::parse_source(
            path,
            &Source {
                text: text.to_string(),
                dropins: vec![],
            },
        )
    }

    /// Validates the config `source` as if read from `path`, its drop-ins
    /// after it.
    pub fn parse_source(path: &Path, source: &Source) -> Result<Config, ConfigErrors> {
        let config = Config::parse_tree(path, source);
        // The TOML tree (~3.4 KB a job) is gone: its pages go back.
        crate::heap::release_freed();
        config
    }

    fn parse_tree(path: &Path, source: &Source) -> Result<Config, ConfigErrors> {
        let text = source.text.as_str();
        let mut v = Validator::new(path.to_path_buf());
        let Some(table) = v.document(text) else {
            return Err(ConfigErrors(v.errors));
        };
        let base = base_dir(path);
        let top_keys: Vec<&str> = TOP_KEYS
            .iter()
            .chain(integrations::KEYS)
            .chain(cluster::KEYS)
            .copied()
            .collect();
        v.unknown_keys(None, "", &table, &top_keys);
        let integrations = v.integrations(&table, &base);
        let state_dir = v
            .string(None, "state_dir", table.get("state_dir"))
            .map(|s| base.join(s))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        let socket = v
            .string(None, "socket", table.get("socket"))
            .map(|s| base.join(s))
            .unwrap_or_else(|| default_socket(&state_dir));
        let timezone = v
            .string(None, "timezone", table.get("timezone"))
            .unwrap_or_else(|| "UTC".to_string());
        let default_tz = v.timezone(None, "timezone", &timezone);
        let watchdog = v.watchdog(table.get("watchdog"));
        let socket_group = v.group(&table, "socket_group");
        let control_group = v.group(&table, "control_group");
        let alert_repeat_after = v
            .duration(
                None,
                "alert_repeat_after",
                table.get("alert_repeat_after"),
                false,
            )
            .flatten();
        let sinks = v.sinks(table.get("alert"));
        let cluster = v.cluster(&table, watchdog.heartbeat_interval);
        let cgroups = match table.get("cgroups") {
            None => true,
            Some(Value::Boolean(b)) => *b,
            Some(other) => {
                v.err(
                    None,
                    "cgroups",
                    format!("must be true or false, found {other}"),
                );
                true
            }
        };
        let defaults = JobDefaults {
            base: &base,
            tz: default_tz.as_ref(),
            tz_name: &timezone,
            late_after: watchdog.late_after,
        };
        let mut jobs = v.jobs(table.get("job"), &defaults);
        let mut sinks = sinks;
        let mut names = dropin::Names::default();
        names.main(path, table.get("job"), &sinks);
        let mut merged = dropin::merge(&source.dropins, &defaults, names);
        v.errors.append(&mut merged.errors);
        if !v.errors.is_empty() {
            return Err(ConfigErrors(v.errors));
        }
        jobs.append(&mut merged.jobs);
        sinks.append(&mut merged.sinks);
        let mut by_name: Vec<u32> = (0..jobs.len() as u32).collect();
        by_name.sort_by(|a, b| jobs[*a as usize].name.cmp(&jobs[*b as usize].name));
        Ok(Config {
            path: path.to_path_buf(),
            state_dir,
            socket,
            timezone,
            watchdog,
            jobs: arcs(jobs),
            sinks,
            alert_repeat_after,
            socket_group,
            control_group,
            integrations,
            dropins: source.dropins.iter().map(|d| d.path.clone()).collect(),
            job_files: merged.job_files,
            cgroups,
            cluster,
            by_name,
        })
    }

    /// Where the status socket and lock of the config at `path` are, reading
    /// only `state_dir` and `socket`: the CLI must reach the supervisor even
    /// when the rest of the file has an error (that is when `reload` is
    /// needed most, to see the errors).
    pub fn locate(path: &Path) -> Result<(PathBuf, PathBuf), ConfigErrors> {
        let one = |message: String| {
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                job: None,
                key: String::new(),
                message,
            }])
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| one(format!("cannot read config file: {e}")))?;
        let table: Table = text
            .parse()
            .map_err(|e: toml::de::Error| one(format!("invalid TOML: {}", e.message())))?;
        let base = base_dir(path);
        let state_dir = table
            .get("state_dir")
            .and_then(Value::as_str)
            .map(|s| base.join(s))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        let socket = table
            .get("socket")
            .and_then(Value::as_str)
            .map(|s| base.join(s))
            .unwrap_or_else(|| default_socket(&state_dir));
        Ok((socket, state_dir.join("cronwarden.lock")))
    }

    /// The lock file that makes one supervisor per state directory.
    pub fn lock_path(&self) -> PathBuf {
        self.state_dir.join("cronwarden.lock")
    }

    /// The job named `name`: by binary search, as a burst's pings look up
    /// every run's job (a scan of every name was O(jobs) each; issue 18);
    /// by a scan if `jobs` was changed since the config was read.
    pub fn job(&self, name: &str) -> Option<&JobSpec> {
        let at = |i: &u32| self.jobs.get(*i as usize).map(|j| j.name.as_str());
        let found = self
            .by_name
            .binary_search_by(|i| at(i).unwrap_or_default().cmp(name))
            .ok()
            .and_then(|p| self.jobs.get(self.by_name[p] as usize))
            .filter(|j| j.name == name);
        found
            .or_else(|| self.jobs.iter().find(|j| j.name == name))
            .map(|j| &**j)
    }

    /// The file that defines the job `name`: a drop-in, or the main file.
    pub fn file_of(&self, name: &str) -> &Path {
        self.job_files.get(name).unwrap_or(&self.path)
    }
}

/// The directory relative paths in the config at `path` are resolved against.
fn base_dir(path: &Path) -> PathBuf {
    path.parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The top-level keys besides those of [`integrations::KEYS`].
pub(crate) const TOP_KEYS: &[&str] = &[
    "state_dir",
    "socket",
    "timezone",
    "watchdog",
    "job",
    "alert",
    "alert_repeat_after",
    "socket_group",
    "control_group",
    "cgroups",
];

impl Validator {
    /// `text` as a TOML table, or `None` (with the error recorded) when it
    /// is too large or not TOML.
    fn document(&mut self, text: &str) -> Option<Table> {
        if text.len() > MAX_CONFIG_BYTES {
            self.err(
                None,
                "",
                format!(
                    "the file is {} bytes; at most {MAX_CONFIG_BYTES} are accepted",
                    text.len()
                ),
            );
            return None;
        }
        // Apart: the tree is ~3.4 KB a job, and made among the config's
        // own allocations its pages could not be given back (`heap`).
        match crate::heap::apart(|| text.parse::<Table>()) {
            Ok(t) => Some(t),
            Err(e) => {
                let line = e
                    .span()
                    .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
                let msg = e.message().to_string();
                self.err(
                    None,
                    "",
                    match line {
                        Some(l) => format!("line {l}: invalid TOML: {msg}"),
                        None => format!("invalid TOML: {msg}"),
                    },
                );
                None
            }
        }
    }

    /// The `[watchdog]` table, defaults for what it does not set.
    fn watchdog(&mut self, w: Option<&Value>) -> Watchdog {
        let mut watchdog = Watchdog::default();
        let Some(w) = w else {
            return watchdog;
        };
        let Some(w) = w.as_table() else {
            self.err(None, "watchdog", "must be a table ([watchdog])".into());
            return watchdog;
        };
        self.unknown_keys(
            None,
            "watchdog.",
            w,
            &[
                "heartbeat_interval",
                "stall_after",
                "late_after",
                "failing_restart_after",
            ],
        );
        let mut d = |k: &str, dflt| {
            self.duration(None, &format!("watchdog.{k}"), w.get(k), false)
                .flatten()
                .unwrap_or(dflt)
        };
        watchdog.heartbeat_interval = d("heartbeat_interval", watchdog.heartbeat_interval);
        watchdog.stall_after = d("stall_after", watchdog.stall_after);
        watchdog.late_after = d("late_after", watchdog.late_after);
        watchdog.failing_restart_after = d("failing_restart_after", watchdog.failing_restart_after);
        if watchdog.heartbeat_interval < Duration::from_millis(10) {
            self.err(
                None,
                "watchdog.heartbeat_interval",
                "must be at least 10ms".into(),
            );
        }
        if watchdog.stall_after <= watchdog.heartbeat_interval {
            self.err(
                None,
                "watchdog.stall_after",
                format!(
                    "must be longer than heartbeat_interval ({}), or every worker looks stalled",
                    humantime::format_duration(watchdog.heartbeat_interval)
                ),
            );
        }
        watchdog
    }

    /// A top-level group key (`socket_group`, `control_group`): the name and
    /// its gid.
    fn group(&mut self, table: &Table, key: &str) -> Option<(String, u32)> {
        let name = self.string(None, key, table.get(key))?;
        match crate::account::group_id(&name) {
            Ok(gid) => Some((name, gid)),
            Err(e) => {
                self.err(None, key, e);
                None
            }
        }
    }
}

/// Every error `text` gets, as displayed, for a file at `/etc/cw.toml`.
#[cfg(test)]
fn parse_errors(text: &str) -> Vec<String> {
    match Config::parse(Path::new("/etc/cw.toml"), text) {
        Ok(_) => vec![],
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

#[cfg(test)]
mod tests;
