//! The configuration file: one TOML document, validated completely.
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
    collections::{BTreeMap, BTreeSet},
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use jiff::tz::TimeZone;
use toml::{Table, Value};

use crate::{alert_kind::AlertKind, schedule::Schedule};

pub(crate) mod integrations;
pub use integrations::{ping_target, Integrations};

/// The config file looked for when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "cronwarden.toml";
/// The largest config file accepted (a 10,000-job config is about 2 MiB).
pub const MAX_CONFIG_BYTES: usize = 16 << 20;
/// Where state lives when the config does not say.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/cronwarden";

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
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }
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

/// A validated config.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from, as given.
    pub path: PathBuf,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub timezone: String,
    pub watchdog: Watchdog,
    pub jobs: Vec<JobSpec>,
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
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                job: None,
                key: String::new(),
                message: format!("cannot read config file: {e}"),
            }])
        })?;
        Config::parse(path, &text)
    }

    /// Validates `text` as if read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
        let mut v = Validator {
            file: path.to_path_buf(),
            errors: vec![],
        };
        if text.len() > MAX_CONFIG_BYTES {
            v.err(
                None,
                "",
                format!(
                    "the file is {} bytes; at most {MAX_CONFIG_BYTES} are accepted",
                    text.len()
                ),
            );
            return Err(ConfigErrors(v.errors));
        }
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let table: Table = match text.parse::<Table>() {
            Ok(t) => t,
            Err(e) => {
                let line = e
                    .span()
                    .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
                let msg = e.message().to_string();
                v.err(
                    None,
                    "",
                    match line {
                        Some(l) => format!("line {l}: invalid TOML: {msg}"),
                        None => format!("invalid TOML: {msg}"),
                    },
                );
                return Err(ConfigErrors(v.errors));
            }
        };
        let top_keys: Vec<&str> = TOP_KEYS.iter().chain(integrations::KEYS).copied().collect();
        v.unknown_keys(None, "", &table, &top_keys);
        let integrations = v.integrations(&table, &base);
        let state_dir = v
            .string(None, "state_dir", table.get("state_dir"))
            .map(|s| base.join(s))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        let socket = v
            .string(None, "socket", table.get("socket"))
            .map(|s| base.join(s))
            .unwrap_or_else(|| state_dir.join("cronwarden.sock"));
        let timezone = v
            .string(None, "timezone", table.get("timezone"))
            .unwrap_or_else(|| "UTC".to_string());
        let default_tz = v.timezone(None, "timezone", &timezone);

        let mut watchdog = Watchdog::default();
        if let Some(w) = table.get("watchdog") {
            match w.as_table() {
                Some(w) => {
                    v.unknown_keys(
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
                    let d = |v: &mut Validator, k: &str, dflt| {
                        v.duration(None, &format!("watchdog.{k}"), w.get(k), false)
                            .flatten()
                            .unwrap_or(dflt)
                    };
                    watchdog.heartbeat_interval =
                        d(&mut v, "heartbeat_interval", watchdog.heartbeat_interval);
                    watchdog.stall_after = d(&mut v, "stall_after", watchdog.stall_after);
                    watchdog.late_after = d(&mut v, "late_after", watchdog.late_after);
                    watchdog.failing_restart_after = d(
                        &mut v,
                        "failing_restart_after",
                        watchdog.failing_restart_after,
                    );
                    if watchdog.heartbeat_interval < Duration::from_millis(10) {
                        v.err(
                            None,
                            "watchdog.heartbeat_interval",
                            "must be at least 10ms".into(),
                        );
                    }
                    if watchdog.stall_after <= watchdog.heartbeat_interval {
                        v.err(
                            None,
                            "watchdog.stall_after",
                            format!(
                                "must be longer than heartbeat_interval ({}), or every worker looks stalled",
                                humantime::format_duration(watchdog.heartbeat_interval)
                            ),
                        );
                    }
                }
                None => v.err(None, "watchdog", "must be a table ([watchdog])".into()),
            }
        }

        let group_key = |v: &mut Validator, key: &str| {
            let name = v.string(None, key, table.get(key))?;
            match crate::account::group_id(&name) {
                Ok(gid) => Some((name, gid)),
                Err(e) => {
                    v.err(None, key, e);
                    None
                }
            }
        };
        let socket_group = group_key(&mut v, "socket_group");
        let control_group = group_key(&mut v, "control_group");
        let alert_repeat_after = v
            .duration(
                None,
                "alert_repeat_after",
                table.get("alert_repeat_after"),
                false,
            )
            .flatten();
        let mut sinks = vec![];
        match table.get("alert") {
            None => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    match item.as_table() {
                        Some(t) => {
                            if let Some(sink) = v.sink(i, t) {
                                if sinks.iter().any(|s: &SinkSpec| s.name == sink.name) {
                                    v.err(
                                        None,
                                        &format!("alert.{}.name", sink.name),
                                        "duplicate sink name".into(),
                                    );
                                } else {
                                    sinks.push(sink);
                                }
                            }
                        }
                        None => v.err(
                            None,
                            &format!("alert #{}", i + 1),
                            "must be a table ([[alert]])".into(),
                        ),
                    }
                }
            }
            Some(_) => v.err(
                None,
                "alert",
                "must be an array of tables ([[alert]])".into(),
            ),
        }

        let mut jobs = vec![];
        let mut names = BTreeSet::new();
        match table.get("job") {
            None => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let Some(t) = item.as_table() else {
                        v.err(
                            Some(format!("job #{}", i + 1)),
                            "",
                            "must be a table ([[job]])".into(),
                        );
                        continue;
                    };
                    if let Some(Value::String(name)) = t.get("name") {
                        if !names.insert(name.clone()) {
                            v.err(
                                Some(name.clone()),
                                "name",
                                "duplicate job name (names must be unique)".into(),
                            );
                            continue;
                        }
                    }
                    if let Some(job) = v.job(i, t, &base, default_tz.as_ref(), &timezone, &watchdog)
                    {
                        jobs.push(job);
                    }
                }
            }
            Some(_) => v.err(None, "job", "must be an array of tables ([[job]])".into()),
        }

        if v.errors.is_empty() {
            Ok(Config {
                path: path.to_path_buf(),
                state_dir,
                socket,
                timezone,
                watchdog,
                jobs,
                sinks,
                alert_repeat_after,
                socket_group,
                control_group,
                integrations,
            })
        } else {
            Err(ConfigErrors(v.errors))
        }
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
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let state_dir = table
            .get("state_dir")
            .and_then(Value::as_str)
            .map(|s| base.join(s))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        let socket = table
            .get("socket")
            .and_then(Value::as_str)
            .map(|s| base.join(s))
            .unwrap_or_else(|| state_dir.join("cronwarden.sock"));
        Ok((socket, state_dir.join("cronwarden.lock")))
    }

    /// The lock file that makes one supervisor per state directory.
    pub fn lock_path(&self) -> PathBuf {
        self.state_dir.join("cronwarden.lock")
    }

    pub fn job(&self, name: &str) -> Option<&JobSpec> {
        self.jobs.iter().find(|j| j.name == name)
    }
}

fn valid_url(u: &str) -> bool {
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"));
    match rest {
        Some(r) => {
            let host = r.split(['/', '?', '#']).next().unwrap_or("");
            !host.is_empty() && !host.contains(char::is_whitespace)
        }
        None => false,
    }
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
];

pub(crate) const JOB_KEYS: &[&str] = &[
    "name",
    "schedule",
    "timezone",
    "command",
    "shell",
    "timeout",
    "kill_grace",
    "overlap",
    "misfire_grace",
    "env",
    "working_dir",
    "zero_output_alert_after",
    "alert_after_failures",
    "overlap_alert_after",
    "late_after",
    "user",
    "group",
    "inherit_env",
    "nice",
    "limit_nofile",
    "limit_as",
    "limit_cpu",
    "ping_url",
    "retention",
    "keep_output",
];

struct Validator {
    file: PathBuf,
    errors: Vec<ConfigError>,
}

impl Validator {
    fn err(&mut self, job: Option<String>, key: &str, message: String) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            job,
            key: key.to_string(),
            message,
        });
    }

    fn unknown_keys(&mut self, job: Option<&str>, prefix: &str, t: &Table, known: &[&str]) {
        for k in t.keys() {
            if !known.contains(&k.as_str()) {
                self.err(
                    job.map(str::to_string),
                    &format!("{prefix}{k}"),
                    format!("unknown key (known keys: {})", known.join(", ")),
                );
            }
        }
    }

    fn string(&mut self, job: Option<&str>, key: &str, v: Option<&Value>) -> Option<String> {
        match v? {
            Value::String(s) => Some(s.clone()),
            other => {
                self.err(
                    job.map(str::to_string),
                    key,
                    format!("must be a string, found {}", other.type_str()),
                );
                None
            }
        }
    }

    /// `Some(None)` means the explicit value "none" (only where allowed).
    fn duration(
        &mut self,
        job: Option<&str>,
        key: &str,
        v: Option<&Value>,
        none_allowed: bool,
    ) -> Option<Option<Duration>> {
        let s = self.string(job, key, v)?;
        if none_allowed && s.trim() == "none" {
            return Some(None);
        }
        match humantime::parse_duration(&s) {
            Ok(d) if d.is_zero() => {
                self.err(
                    job.map(str::to_string),
                    key,
                    "must be longer than zero".into(),
                );
                None
            }
            Ok(d) => Some(Some(d)),
            Err(e) => {
                self.err(
                    job.map(str::to_string),
                    key,
                    format!(
                        "invalid duration {s:?}: {e} (expected e.g. \"30s\", \"1h 30m\"{})",
                        if none_allowed { " or \"none\"" } else { "" }
                    ),
                );
                None
            }
        }
    }

    fn count(&mut self, job: Option<&str>, key: &str, v: Option<&Value>) -> Option<u32> {
        match v? {
            Value::Integer(n) if *n >= 1 && *n <= u32::MAX as i64 => Some(*n as u32),
            other => {
                self.err(
                    job.map(str::to_string),
                    key,
                    format!("must be a positive integer, found {other}"),
                );
                None
            }
        }
    }

    fn strings(&mut self, key: &str, v: Option<&Value>) -> Option<Vec<String>> {
        match v? {
            Value::Array(items) => {
                let out: Option<Vec<String>> = items
                    .iter()
                    .map(|i| i.as_str().map(str::to_string))
                    .collect();
                if out.is_none() {
                    self.err(None, key, "every element must be a string".into());
                }
                out
            }
            other => {
                self.err(
                    None,
                    key,
                    format!("must be an array of strings, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn sink(&mut self, index: usize, t: &Table) -> Option<SinkSpec> {
        let before = self.errors.len();
        let kind_name = t
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let name = match t.get("name").and_then(Value::as_str) {
            Some(n) => n.to_string(),
            None => format!(
                "{}#{}",
                if kind_name.is_empty() {
                    "alert"
                } else {
                    &kind_name
                },
                index + 1
            ),
        };
        let key = |k: &str| format!("alert.{name}.{k}");
        let mut known = vec![
            "name",
            "kind",
            "timeout",
            "retries",
            "kinds",
            "jobs",
            "min_severity",
            "repeat_after",
        ];
        match kind_name.as_str() {
            "exec" => known.push("command"),
            "webhook" => known.extend(["url", "format", "headers"]),
            _ => {}
        }
        for k in t.keys() {
            if !known.contains(&k.as_str()) {
                self.err(
                    None,
                    &key(k),
                    format!(
                        "unknown key (known keys for this sink: {})",
                        known.join(", ")
                    ),
                );
            }
        }
        let kind = match kind_name.as_str() {
            "exec" => match t.get("command") {
                Some(Value::Array(items)) => {
                    let argv: Option<Vec<String>> = items
                        .iter()
                        .map(|i| i.as_str().map(str::to_string))
                        .collect();
                    match argv {
                        Some(a) if !a.is_empty() && !a[0].is_empty() => {
                            Some(SinkKind::Exec { argv: a })
                        }
                        _ => {
                            self.err(
                                None,
                                &key("command"),
                                "must be a non-empty array of strings (argv)".into(),
                            );
                            None
                        }
                    }
                }
                _ => {
                    self.err(
                        None,
                        &key("command"),
                        "missing: an argv array, e.g. [\"/usr/local/bin/page-oncall\"]".into(),
                    );
                    None
                }
            },
            "webhook" => {
                let url = self.string(None, &key("url"), t.get("url"));
                let url = match url {
                    Some(u) if valid_url(&u) => Some(u),
                    Some(u) => {
                        self.err(None, &key("url"), format!("invalid URL {u:?} (expected http://host[:port]/path or https://...)"));
                        None
                    }
                    None => {
                        self.err(None, &key("url"), "missing".into());
                        None
                    }
                };
                let format = match self
                    .string(None, &key("format"), t.get("format"))
                    .as_deref()
                {
                    None | Some("json") => WebhookFormat::Json,
                    Some("slack") => WebhookFormat::Slack,
                    Some(f) => {
                        self.err(
                            None,
                            &key("format"),
                            format!("unknown format {f:?} (expected json or slack)"),
                        );
                        WebhookFormat::Json
                    }
                };
                let mut headers = vec![];
                match t.get("headers") {
                    None => {}
                    Some(Value::Table(h)) => {
                        for (k, val) in h {
                            match val.as_str() {
                                Some(s) => headers.push((
                                    k.clone(),
                                    match s.strip_prefix("env:") {
                                        Some(var) => HeaderValue::Env(var.to_string()),
                                        None => HeaderValue::Literal(s.to_string()),
                                    },
                                )),
                                None => self.err(
                                    None,
                                    &key(&format!("headers.{k}")),
                                    "must be a string".into(),
                                ),
                            }
                        }
                    }
                    Some(_) => self.err(None, &key("headers"), "must be a table of strings".into()),
                }
                url.map(|url| SinkKind::Webhook {
                    url,
                    format,
                    headers,
                })
            }
            "" => {
                self.err(None, &key("kind"), "missing (exec or webhook)".into());
                None
            }
            other => {
                self.err(
                    None,
                    &key("kind"),
                    format!("unknown sink kind {other:?} (expected exec or webhook)"),
                );
                None
            }
        };
        let timeout = self
            .duration(None, &key("timeout"), t.get("timeout"), false)
            .flatten()
            .unwrap_or(Duration::from_secs(10));
        let retries = match t.get("retries") {
            None => 3,
            Some(Value::Integer(n)) if (0..=20).contains(n) => *n as u32,
            Some(other) => {
                self.err(
                    None,
                    &key("retries"),
                    format!("must be an integer from 0 to 20, found {other}"),
                );
                3
            }
        };
        let kinds = self.strings(&key("kinds"), t.get("kinds")).map(|names| {
            names
                .iter()
                .filter_map(|k| match k.parse::<AlertKind>() {
                    Ok(kind) => Some(kind),
                    Err(e) => {
                        self.err(None, &key("kinds"), e.to_string());
                        None
                    }
                })
                .collect::<Vec<_>>()
        });
        let jobs = self.strings(&key("jobs"), t.get("jobs"));
        let min_severity = match self
            .string(None, &key("min_severity"), t.get("min_severity"))
            .as_deref()
        {
            None | Some("info") => crate::status::Severity::Info,
            Some("warning") => crate::status::Severity::Warning,
            Some("critical") => crate::status::Severity::Critical,
            Some(o) => {
                self.err(
                    None,
                    &key("min_severity"),
                    format!("unknown severity {o:?} (expected info, warning or critical)"),
                );
                crate::status::Severity::Info
            }
        };
        let repeat_after = t
            .get("repeat_after")
            .and_then(|v| self.duration(None, &key("repeat_after"), Some(v), true));
        if self.errors.len() != before {
            return None;
        }
        Some(SinkSpec {
            name,
            kind: kind?,
            timeout,
            retries,
            kinds,
            jobs,
            min_severity,
            repeat_after,
        })
    }

    fn timezone(&mut self, job: Option<&str>, key: &str, name: &str) -> Option<TimeZone> {
        match TimeZone::get(name) {
            Ok(tz) => Some(tz),
            Err(_) => {
                self.err(
                    job.map(str::to_string),
                    key,
                    format!("unknown time zone {name:?} (expected an IANA name such as \"Europe/Berlin\" or \"UTC\")"),
                );
                None
            }
        }
    }

    fn job(
        &mut self,
        index: usize,
        t: &Table,
        base: &Path,
        default_tz: Option<&TimeZone>,
        default_tz_name: &str,
        watchdog: &Watchdog,
    ) -> Option<JobSpec> {
        let before = self.errors.len();
        let label = match t.get("name") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            _ => format!("job #{}", index + 1),
        };
        let j = Some(label.as_str());
        self.unknown_keys(j, "", t, JOB_KEYS);

        let name = match self.string(j, "name", t.get("name")) {
            None if t.get("name").is_none() => {
                self.err(
                    Some(label.clone()),
                    "name",
                    "missing (every job needs a unique name)".into(),
                );
                None
            }
            Some(n) if n.trim().is_empty() || n.chars().any(|c| c.is_control() || c == '/') => {
                self.err(
                    Some(label.clone()),
                    "name",
                    "must be non-empty, without '/' or control characters".into(),
                );
                None
            }
            other => other,
        };

        let tz_name = self
            .string(j, "timezone", t.get("timezone"))
            .unwrap_or_else(|| default_tz_name.to_string());
        let tz = if t.contains_key("timezone") {
            self.timezone(j, "timezone", &tz_name)
        } else {
            default_tz.cloned()
        };

        let schedule = match self.string(j, "schedule", t.get("schedule")) {
            None if t.get("schedule").is_none() => {
                self.err(
                    Some(label.clone()),
                    "schedule",
                    "missing (e.g. \"0 3 * * *\" or \"@every 5m\")".into(),
                );
                None
            }
            None => None,
            Some(expr) => match tz.as_ref().map(|tz| Schedule::parse(&expr, tz)) {
                Some(Ok(s)) => Some(s),
                Some(Err(e)) => {
                    self.err(Some(label.clone()), "schedule", e.to_string());
                    None
                }
                None => None,
            },
        };

        let command = match (t.get("command"), t.get("shell")) {
            (Some(_), Some(_)) => {
                self.err(
                    Some(label.clone()),
                    "shell",
                    "give either `command` (argv) or `shell`, not both".into(),
                );
                None
            }
            (None, None) => {
                self.err(
                    Some(label.clone()),
                    "command",
                    "missing (an argv array such as [\"/usr/bin/backup\", \"--full\"], or `shell = \"...\"`)".into(),
                );
                None
            }
            (Some(Value::Array(items)), None) => {
                let argv: Option<Vec<String>> = items
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect();
                match argv {
                    Some(argv) if !argv.is_empty() && !argv[0].is_empty() => {
                        Some(JobCommand::Argv(argv))
                    }
                    Some(_) => {
                        self.err(Some(label.clone()), "command", "must not be empty".into());
                        None
                    }
                    None => {
                        self.err(
                            Some(label.clone()),
                            "command",
                            "every element must be a string".into(),
                        );
                        None
                    }
                }
            }
            (Some(other), None) => {
                self.err(
                    Some(label.clone()),
                    "command",
                    format!(
                        "must be an array of strings (argv), found {}; use `shell` for a shell command line",
                        other.type_str()
                    ),
                );
                None
            }
            (None, Some(_)) => match self.string(j, "shell", t.get("shell")) {
                Some(s) if !s.trim().is_empty() => Some(JobCommand::Shell(s)),
                Some(_) => {
                    self.err(Some(label.clone()), "shell", "must not be empty".into());
                    None
                }
                None => None,
            },
        };

        let timeout = match t.get("timeout") {
            None => Some(Duration::from_secs(3600)),
            v => self.duration(j, "timeout", v, true).unwrap_or(None),
        };
        let kill_grace = self
            .duration(j, "kill_grace", t.get("kill_grace"), false)
            .flatten()
            .unwrap_or(Duration::from_secs(10));
        let misfire_grace = self
            .duration(j, "misfire_grace", t.get("misfire_grace"), false)
            .flatten()
            .unwrap_or(Duration::from_secs(3600));
        let late_after = self
            .duration(j, "late_after", t.get("late_after"), false)
            .flatten()
            .unwrap_or(watchdog.late_after);
        let overlap = match self.string(j, "overlap", t.get("overlap")).as_deref() {
            None | Some("skip") => Overlap::Skip,
            Some("queue") => Overlap::Queue,
            Some("replace") => Overlap::Replace,
            Some("allow") => Overlap::Allow,
            Some(other) => {
                self.err(
                    Some(label.clone()),
                    "overlap",
                    format!("unknown policy {other:?} (expected skip, queue, replace or allow)"),
                );
                Overlap::Skip
            }
        };
        let mut env = BTreeMap::new();
        match t.get("env") {
            None => {}
            Some(Value::Table(e)) => {
                for (k, val) in e {
                    if k.is_empty() || k.contains('=') || k.contains('\0') {
                        self.err(
                            Some(label.clone()),
                            &format!("env.{k}"),
                            "invalid variable name".into(),
                        );
                    }
                    match val.as_str() {
                        Some(s) => {
                            env.insert(k.clone(), s.to_string());
                        }
                        None => self.err(
                            Some(label.clone()),
                            &format!("env.{k}"),
                            "must be a string".into(),
                        ),
                    }
                }
            }
            Some(other) => self.err(
                Some(label.clone()),
                "env",
                format!("must be a table of strings, found {}", other.type_str()),
            ),
        }
        let working_dir = self
            .string(j, "working_dir", t.get("working_dir"))
            .map(|s| base.join(s));
        let zero_output_alert_after = self.count(
            j,
            "zero_output_alert_after",
            t.get("zero_output_alert_after"),
        );
        let alert_after_failures = self
            .count(j, "alert_after_failures", t.get("alert_after_failures"))
            .unwrap_or(1);
        let overlap_alert_after = self
            .count(j, "overlap_alert_after", t.get("overlap_alert_after"))
            .unwrap_or(3);
        let ping_url = self.url(j, "ping_url", t.get("ping_url"));

        let (user, group, inherit_env, nice, limits) = self.process_keys(&label, t);
        let retention = self
            .count(j, "retention", t.get("retention"))
            .unwrap_or(crate::store::DEFAULT_RETENTION);
        let keep_output = self.count(j, "keep_output", t.get("keep_output"));

        if self.errors.len() != before {
            return None;
        }
        Some(JobSpec {
            name: name?,
            schedule: schedule?,
            timezone: tz_name,
            command: command?,
            timeout,
            kill_grace,
            overlap,
            misfire_grace,
            env,
            working_dir,
            zero_output_alert_after,
            alert_after_failures,
            overlap_alert_after,
            late_after,
            user,
            group,
            inherit_env,
            nice,
            limits,
            ping_url,
            retention,
            keep_output,
        })
    }

    /// The keys that shape the job's process: who it runs as, its
    /// environment base, niceness and resource limits.
    #[allow(clippy::type_complexity)]
    fn process_keys(
        &mut self,
        label: &str,
        t: &Table,
    ) -> (Option<String>, Option<String>, bool, Option<i32>, Limits) {
        let j = Some(label);
        let user = self.string(j, "user", t.get("user"));
        let group = self.string(j, "group", t.get("group"));
        if user.is_some() || group.is_some() {
            match crate::account::resolve(user.as_deref(), group.as_deref()) {
                Ok(c) if !crate::account::can_switch_to(&c) => self.err(
                    Some(label.to_string()),
                    if user.is_some() { "user" } else { "group" },
                    format!(
                        "running a job as {}:{} needs root; cronwarden runs as uid {}",
                        c.uid,
                        c.gid,
                        nix::unistd::Uid::effective()
                    ),
                ),
                Ok(_) => {}
                Err(e) => self.err(
                    Some(label.to_string()),
                    if e.contains("group") && group.is_some() {
                        "group"
                    } else {
                        "user"
                    },
                    e,
                ),
            }
        }
        let inherit_env = match t.get("inherit_env") {
            None => false,
            Some(Value::Boolean(b)) => *b,
            Some(other) => {
                self.err(
                    Some(label.to_string()),
                    "inherit_env",
                    format!("must be true or false, found {other}"),
                );
                false
            }
        };
        let nice = match t.get("nice") {
            None => None,
            Some(Value::Integer(n)) if (-20..=19).contains(n) => Some(*n as i32),
            Some(other) => {
                self.err(
                    Some(label.to_string()),
                    "nice",
                    format!("must be an integer from -20 to 19, found {other}"),
                );
                None
            }
        };
        let nofile = self
            .count(j, "limit_nofile", t.get("limit_nofile"))
            .map(u64::from);
        let address_space = match t.get("limit_as") {
            None => None,
            Some(v) => match parse_size(v) {
                Ok(n) => Some(n),
                Err(e) => {
                    self.err(Some(label.to_string()), "limit_as", e);
                    None
                }
            },
        };
        let cpu_seconds = self
            .duration(j, "limit_cpu", t.get("limit_cpu"), false)
            .flatten()
            .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
        (
            user,
            group,
            inherit_env,
            nice,
            Limits {
                nofile,
                address_space,
                cpu_seconds,
            },
        )
    }
}

/// A size in bytes: an integer, or a string with a binary suffix
/// (`"512M"`, `"2G"`, `"64KiB"`).
fn parse_size(v: &Value) -> Result<u64, String> {
    let bad = |what: &str| {
        format!("invalid size {what} (expected bytes as an integer, or e.g. \"512M\", \"2G\")")
    };
    match v {
        Value::Integer(n) if *n > 0 => Ok(*n as u64),
        Value::String(s) => {
            let t = s.trim();
            let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
            let (num, unit) = t.split_at(split);
            let n: u64 = num.parse().map_err(|_| bad(&format!("{s:?}")))?;
            let shift = match unit
                .trim()
                .to_ascii_uppercase()
                .trim_end_matches("IB")
                .trim_end_matches('B')
            {
                "" => 0,
                "K" => 10,
                "M" => 20,
                "G" => 30,
                "T" => 40,
                _ => return Err(bad(&format!("{s:?}"))),
            };
            n.checked_mul(1u64 << shift)
                .filter(|n| *n > 0)
                .ok_or_else(|| bad(&format!("{s:?}")))
        }
        other => Err(bad(&other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match Config::parse(Path::new("/etc/cw.toml"), text) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = Config::parse(
            Path::new("/etc/cw/cronwarden.toml"),
            "state_dir = \"state\"\n[[job]]\nname = \"a\"\nschedule = \"* * * * *\"\ncommand = [\"true\"]\n",
        )
        .unwrap();
        assert_eq!(c.state_dir, Path::new("/etc/cw/state"));
        assert_eq!(c.socket, Path::new("/etc/cw/state/cronwarden.sock"));
        let j = &c.jobs[0];
        assert_eq!(j.timeout, Some(Duration::from_secs(3600)));
        assert_eq!(j.kill_grace, Duration::from_secs(10));
        assert_eq!(j.misfire_grace, Duration::from_secs(3600));
        assert_eq!(j.overlap, Overlap::Skip);
        assert_eq!(j.timezone, "UTC");
        assert_eq!(j.retention, 1000);
        assert_eq!(c.watchdog, Watchdog::default());
    }

    #[test]
    fn every_error_is_reported_with_file_job_and_key() {
        let errs = errors(
            r#"
            timezone = "Mars/Olympus"
            [watchdog]
            stall_after = "soon"
            [[job]]
            name = "a"
            schedule = "61 * * * *"
            command = []
            tiemout = "5m"
            [[job]]
            name = "b"
            schedule = "@every 1m"
            shell = "true"
            timeout = "forever"
            [[job]]
            name = "b"
            schedule = "@daily"
            command = ["true"]
            "#,
        );
        let want = [
            "/etc/cw.toml: key \"timezone\": unknown time zone \"Mars/Olympus\"",
            "/etc/cw.toml: key \"watchdog.stall_after\": invalid duration \"soon\"",
            "/etc/cw.toml: job \"a\": key \"tiemout\": unknown key",
            "/etc/cw.toml: job \"a\": key \"command\": must not be empty",
            "/etc/cw.toml: job \"b\": key \"timeout\": invalid duration \"forever\"",
            "/etc/cw.toml: job \"b\": key \"name\": duplicate job name",
        ];
        for w in want {
            assert!(
                errs.iter().any(|e| e.starts_with(w)),
                "missing {w:?} in {errs:#?}"
            );
        }
        // Job "a" schedule: the default zone is invalid, so it is not parsed;
        // the zone error above stands for it.
        assert_eq!(errs.len(), want.len(), "{errs:#?}");
    }

    #[test]
    fn schedule_and_zone_errors_name_the_job() {
        let errs = errors(
            "[[job]]\nname = \"x\"\nschedule = \"61 * * * *\"\ncommand = [\"true\"]\n\
             [[job]]\nname = \"y\"\nschedule = \"@daily\"\ntimezone = \"Nowhere/City\"\ncommand = [\"true\"]\n",
        );
        assert!(
            errs[0]
                .starts_with("/etc/cw.toml: job \"x\": key \"schedule\": invalid cron expression"),
            "{errs:?}"
        );
        assert!(
            errs[1].starts_with("/etc/cw.toml: job \"y\": key \"timezone\": unknown time zone"),
            "{errs:?}"
        );
    }

    #[test]
    fn toml_syntax_error_names_the_line() {
        let errs = errors("state_dir = \"x\"\n[[job]\n");
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with("/etc/cw.toml: line 2: invalid TOML"),
            "{errs:?}"
        );
    }

    #[test]
    fn unnamed_job_is_numbered() {
        let errs = errors("[[job]]\nschedule = \"@daily\"\ncommand = [\"true\"]\n");
        assert_eq!(errs, ["/etc/cw.toml: job \"job #1\": key \"name\": missing (every job needs a unique name)"]);
    }

    #[test]
    fn an_oversized_file_is_refused_naming_it() {
        let big = format!("# {}\n", "x".repeat(MAX_CONFIG_BYTES));
        let errs = errors(&big);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("/etc/cw.toml: the file is"), "{errs:?}");
    }

    #[test]
    fn process_keys_are_validated_by_key() {
        let job = |extra: &str| {
            format!("[[job]]\nname = \"j\"\nschedule = \"@daily\"\nshell = \"true\"\n{extra}\n")
        };
        let cases = [
            (
                "nice = 20",
                "key \"nice\": must be an integer from -20 to 19",
            ),
            (
                "limit_nofile = 0",
                "key \"limit_nofile\": must be a positive integer",
            ),
            (
                "limit_as = \"12Q\"",
                "key \"limit_as\": invalid size \"12Q\"",
            ),
            (
                "limit_cpu = \"soon\"",
                "key \"limit_cpu\": invalid duration",
            ),
            (
                "inherit_env = \"yes\"",
                "key \"inherit_env\": must be true or false",
            ),
            (
                "user = \"no-such-user-cw\"",
                "job \"j\": key \"user\": no user named \"no-such-user-cw\"",
            ),
            (
                "group = \"no-such-group-cw\"",
                "job \"j\": key \"group\": no group named",
            ),
        ];
        for (extra, want) in cases {
            let errs = errors(&job(extra));
            assert!(errs.iter().any(|e| e.contains(want)), "{extra}: {errs:?}");
            assert!(
                errs.iter().all(|e| e.starts_with("/etc/cw.toml: ")),
                "{errs:?}"
            );
        }
        let errs =
            errors("socket_group = \"no-such-group-cw\"\ncontrol_group = \"no-such-group-cw\"\n");
        assert!(
            errs[0].contains("key \"socket_group\": no group named"),
            "{errs:?}"
        );
        assert!(
            errs[1].contains("key \"control_group\": no group named"),
            "{errs:?}"
        );
        let c = Config::parse(
            Path::new("/etc/cw.toml"),
            &job("limit_as = \"512M\"\nlimit_cpu = \"1m 500ms\"\nlimit_nofile = 64\nnice = -5"),
        )
        .unwrap();
        let j = &c.jobs[0];
        assert_eq!(j.limits.address_space, Some(512 << 20));
        assert_eq!(
            j.limits.cpu_seconds,
            Some(61),
            "rounded up to whole seconds"
        );
        assert_eq!(j.limits.nofile, Some(64));
        assert_eq!(j.nice, Some(-5));
        assert!(!j.inherit_env, "clean environment by default");
        assert_eq!(parse_size(&Value::String("64KiB".into())), Ok(64 << 10));
        assert_eq!(parse_size(&Value::Integer(4096)), Ok(4096));
    }

    #[test]
    fn alert_sinks_are_validated_by_key() {
        let ok = Config::parse(
            Path::new("c.toml"),
            "[[alert]]\nkind = \"webhook\"\nurl = \"https://hooks.example/x\"\nformat = \"slack\"\n\
             headers = { Authorization = \"env:HOOK_TOKEN\" }\nkinds = [\"job_late\", \"worker_misarmed\"]\nmin_severity = \"warning\"\n\
             [[alert]]\nname = \"pager\"\nkind = \"exec\"\ncommand = [\"/usr/local/bin/page\"]\n",
        )
        .unwrap();
        assert_eq!(ok.sinks.len(), 2);
        assert_eq!(ok.sinks[0].name, "webhook#1");
        assert!(
            matches!(&ok.sinks[0].kind, SinkKind::Webhook { headers, .. } if headers[0].1 == HeaderValue::Env("HOOK_TOKEN".into()))
        );
        let errs = errors(
            "[[alert]]\nkind = \"webhook\"\nurl = \"ftp:/nope\"\n\
             [[alert]]\nname = \"x\"\nkind = \"exec\"\ncommand = []\n\
             [[alert]]\nname = \"y\"\nkind = \"webhook\"\nurl = \"http://h/\"\nkinds = [\"job_sad\"]\n\
             [[alert]]\nkind = \"carrier-pigeon\"\n",
        );
        let want = [
            "key \"alert.webhook#1.url\": invalid URL",
            "key \"alert.x.command\": must be a non-empty array",
            "key \"alert.y.kinds\": unknown alert kind \"job_sad\"",
            "key \"alert.carrier-pigeon#4.kind\": unknown sink kind",
        ];
        for w in want {
            assert!(
                errs.iter().any(|e| e.contains(w)),
                "missing {w:?} in {errs:#?}"
            );
        }
    }

    #[test]
    fn a_sink_may_set_its_own_repeat_after() {
        let c = Config::parse(
            Path::new("c.toml"),
            "alert_repeat_after = \"4h\"\n\
             [[alert]]\nname = \"pager\"\nkind = \"exec\"\ncommand = [\"page\"]\nrepeat_after = \"30m\"\n\
             [[alert]]\nname = \"chat\"\nkind = \"exec\"\ncommand = [\"chat\"]\nrepeat_after = \"none\"\n\
             [[alert]]\nname = \"mail\"\nkind = \"exec\"\ncommand = [\"mail\"]\n",
        )
        .unwrap();
        let every: Vec<_> = c.sinks.iter().map(|s| s.repeat_after).collect();
        assert_eq!(
            every,
            [Some(Some(Duration::from_secs(1800))), Some(None), None]
        );
        let errs = errors(
            "[[alert]]\nname = \"p\"\nkind = \"exec\"\ncommand = [\"page\"]\nrepeat_after = \"soon\"\n",
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("key \"alert.p.repeat_after\": invalid duration")),
            "{errs:#?}"
        );
    }

    #[test]
    fn timeout_none_must_be_explicit() {
        let c = Config::parse(
            Path::new("c.toml"),
            "[[job]]\nname = \"a\"\nschedule = \"@daily\"\nshell = \"true\"\ntimeout = \"none\"\n",
        )
        .unwrap();
        assert_eq!(c.jobs[0].timeout, None);
        assert_eq!(c.jobs[0].command.argv(), ["/bin/sh", "-c", "true"]);
    }

    #[test]
    fn retention_must_be_at_least_one() {
        let errs = errors(
            "[[job]]\nname = \"a\"\nschedule = \"@daily\"\nshell = \"true\"\nretention = 0\n",
        );
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with(
                "/etc/cw.toml: job \"a\": key \"retention\": must be a positive integer"
            ),
            "{errs:?}"
        );
        let c = Config::parse(
            Path::new("c.toml"),
            "[[job]]\nname = \"a\"\nschedule = \"@daily\"\nshell = \"true\"\nretention = 5\n",
        )
        .unwrap();
        assert_eq!(c.jobs[0].retention, 5);
    }
}
