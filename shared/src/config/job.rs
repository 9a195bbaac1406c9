//! The `[[job]]` keys: a job's name, schedule and zone, command, timings,
//! overlap policy, environment, alert thresholds, and the keys that shape
//! its process (user, group, environment base, niceness, resource limits).
//! Every error names the job (`job #N` when it has no usable name) and the
//! key; a job with any error is left out of the config, which is refused.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    time::Duration,
};

use jiff::tz::TimeZone;
use toml::{Table, Value};

use super::{
    validate::{parse_size, Validator},
    JobCommand, JobSpec, Leftovers, Limits, OnStoreFailure, Overlap, Schedule,
};

/// Every key a `[[job]]` accepts.
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
    "ping_start_url",
    "ping_success_url",
    "ping_failure_url",
    "retention",
    "keep_output",
    "log_output",
    "on_store_failure",
    "leftovers",
    "limit_nproc",
    "memory_max",
    "pids_max",
    "cpu_weight",
    "jitter",
    "retries",
    "retry_delay",
    "retry_backoff",
];

/// What a job inherits from the top of the file.
pub(super) struct JobDefaults<'a> {
    /// The config file's directory, for a relative `working_dir`.
    pub(super) base: &'a Path,
    /// The top-level zone (`None` when it is invalid: that error stands
    /// for the jobs' schedules too).
    pub(super) tz: Option<&'a TimeZone>,
    pub(super) tz_name: &'a str,
    /// `[watchdog] late_after`.
    pub(super) late_after: Duration,
}

/// The keys that shape the job's process.
struct ProcessKeys {
    user: Option<String>,
    group: Option<String>,
    inherit_env: bool,
    nice: Option<i32>,
    limits: Limits,
}

impl Validator {
    /// The `[[job]]` array: every valid job, names unique.
    pub(super) fn jobs(&mut self, job: Option<&Value>, defaults: &JobDefaults) -> Vec<JobSpec> {
        let mut jobs = vec![];
        let mut names = BTreeSet::new();
        match job {
            None => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let Some(t) = item.as_table() else {
                        self.err(
                            Some(format!("job #{}", i + 1)),
                            "",
                            "must be a table ([[job]])".into(),
                        );
                        continue;
                    };
                    if let Some(Value::String(name)) = t.get("name") {
                        if !names.insert(name.clone()) {
                            self.err(
                                Some(name.clone()),
                                "name",
                                "duplicate job name (names must be unique)".into(),
                            );
                            continue;
                        }
                    }
                    if let Some(job) = self.job(i, t, defaults) {
                        jobs.push(job);
                    }
                }
            }
            Some(_) => self.err(None, "job", "must be an array of tables ([[job]])".into()),
        }
        jobs
    }

    /// One `[[job]]` (the `index`th, 0-based), or `None` when it has an error.
    fn job(&mut self, index: usize, t: &Table, defaults: &JobDefaults) -> Option<JobSpec> {
        let before = self.errors.len();
        let label = match t.get("name") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            _ => format!("job #{}", index + 1),
        };
        let j = Some(label.as_str());
        self.unknown_keys(j, "", t, JOB_KEYS);
        let name = self.job_name(&label, t);
        let (timezone, schedule) = self.job_schedule(&label, t, defaults);
        let command = self.job_command(&label, t);
        let timeout = match t.get("timeout") {
            None => Some(Duration::from_secs(3600)),
            v => self.duration(j, "timeout", v, true).unwrap_or(None),
        };
        let mut duration = |key: &str, default: Duration| {
            self.duration(j, key, t.get(key), false)
                .flatten()
                .unwrap_or(default)
        };
        let kill_grace = duration("kill_grace", Duration::from_secs(10));
        let misfire_grace = duration("misfire_grace", Duration::from_secs(3600));
        let late_after = duration("late_after", defaults.late_after);
        let overlap = self.overlap(&label, t.get("overlap"));
        let env = self.env(&label, t.get("env"));
        let working_dir = self
            .string(j, "working_dir", t.get("working_dir"))
            .map(|s| defaults.base.join(s));
        let mut count = |key: &str| self.count(j, key, t.get(key));
        let zero_output_alert_after = count("zero_output_alert_after");
        let alert_after_failures = count("alert_after_failures").unwrap_or(1);
        let overlap_alert_after = count("overlap_alert_after").unwrap_or(3);
        let ping_url = self.url(j, "ping_url", t.get("ping_url"));
        let ping_templates = self.ping_templates(j, t, t.contains_key("ping_url"));
        let process = self.process_keys(&label, t);
        let retention = self
            .count(j, "retention", t.get("retention"))
            .unwrap_or(crate::store::DEFAULT_RETENTION);
        let keep_output = self.count(j, "keep_output", t.get("keep_output"));
        let log_output = self.flag(&label, "log_output", t.get("log_output"), true);
        let on_store_failure = self.on_store_failure(&label, t.get("on_store_failure"));
        let leftovers = self.leftovers(&label, t.get("leftovers"));
        let sched = self.sched_keys(&label, t);

        if self.errors.len() != before {
            return None;
        }
        Some(JobSpec {
            name: name?,
            schedule: schedule?,
            timezone,
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
            user: process.user,
            group: process.group,
            inherit_env: process.inherit_env,
            nice: process.nice,
            limits: process.limits,
            ping_url,
            ping_templates,
            retention,
            keep_output,
            log_output,
            on_store_failure,
            leftovers,
            jitter_offset: crate::jitter::offset(&crate::jitter::host(), &label, sched.jitter),
            jitter: sched.jitter,
            retry: sched.retry,
        })
    }

    /// A true/false key, `default` when absent.
    fn flag(&mut self, label: &str, key: &str, v: Option<&Value>, default: bool) -> bool {
        match v {
            None => default,
            Some(Value::Boolean(b)) => *b,
            Some(other) => {
                self.err(
                    Some(label.to_string()),
                    key,
                    format!("must be true or false, found {other}"),
                );
                default
            }
        }
    }

    fn job_name(&mut self, label: &str, t: &Table) -> Option<String> {
        match self.string(Some(label), "name", t.get("name")) {
            None if t.get("name").is_none() => {
                self.err(
                    Some(label.to_string()),
                    "name",
                    "missing (every job needs a unique name)".into(),
                );
                None
            }
            Some(n) if super::validate::name_problem(&n).is_some() => {
                let why = super::validate::name_problem(&n).unwrap_or_default();
                self.err(Some(label.to_string()), "name", why.into());
                None
            }
            other => other,
        }
    }

    /// The job's zone name (its own or inherited) and its schedule in that
    /// zone (`None` when either is invalid).
    fn job_schedule(
        &mut self,
        label: &str,
        t: &Table,
        defaults: &JobDefaults,
    ) -> (String, Option<Schedule>) {
        let j = Some(label);
        let tz_name = self
            .string(j, "timezone", t.get("timezone"))
            .unwrap_or_else(|| defaults.tz_name.to_string());
        let tz = if t.contains_key("timezone") {
            self.timezone(j, "timezone", &tz_name)
        } else {
            defaults.tz.cloned()
        };
        let schedule = match self.string(j, "schedule", t.get("schedule")) {
            None if t.get("schedule").is_none() => {
                self.err(
                    Some(label.to_string()),
                    "schedule",
                    "missing (e.g. \"0 3 * * *\" or \"@every 5m\")".into(),
                );
                None
            }
            None => None,
            Some(expr) => match tz.as_ref().map(|tz| Schedule::parse(&expr, tz)) {
                Some(Ok(s)) => Some(s),
                Some(Err(e)) => {
                    self.err(Some(label.to_string()), "schedule", e.to_string());
                    None
                }
                None => None,
            },
        };
        (tz_name, schedule)
    }

    /// `command` (an argv) or `shell` (a script for `/bin/sh -c`), exactly one.
    fn job_command(&mut self, label: &str, t: &Table) -> Option<JobCommand> {
        let err = |v: &mut Validator, key: &str, message: String| {
            v.err(Some(label.to_string()), key, message);
            None
        };
        match (t.get("command"), t.get("shell")) {
            (Some(_), Some(_)) => err(
                self,
                "shell",
                "give either `command` (argv) or `shell`, not both".into(),
            ),
            (None, None) => err(
                self,
                "command",
                "missing (an argv array such as [\"/usr/bin/backup\", \"--full\"], or `shell = \"...\"`)".into(),
            ),
            (Some(Value::Array(items)), None) => {
                let argv: Option<Vec<String>> = items
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect();
                match argv {
                    Some(argv) if !argv.is_empty() && !argv[0].is_empty() => {
                        Some(JobCommand::Argv(argv))
                    }
                    Some(_) => err(self, "command", "must not be empty".into()),
                    None => err(self, "command", "every element must be a string".into()),
                }
            }
            (Some(other), None) => err(
                self,
                "command",
                format!(
                    "must be an array of strings (argv), found {}; use `shell` for a shell command line",
                    other.type_str()
                ),
            ),
            (None, Some(_)) => match self.string(Some(label), "shell", t.get("shell")) {
                Some(s) if !s.trim().is_empty() => Some(JobCommand::Shell(s)),
                Some(_) => err(self, "shell", "must not be empty".into()),
                None => None,
            },
        }
    }

    fn on_store_failure(&mut self, label: &str, v: Option<&Value>) -> OnStoreFailure {
        match self.string(Some(label), "on_store_failure", v).as_deref() {
            None | Some("run") => OnStoreFailure::Run,
            Some("hold") => OnStoreFailure::Hold,
            Some(other) => {
                self.err(
                    Some(label.to_string()),
                    "on_store_failure",
                    format!("unknown policy {other:?} (expected run or hold)"),
                );
                OnStoreFailure::Run
            }
        }
    }

    fn leftovers(&mut self, label: &str, v: Option<&Value>) -> Leftovers {
        match self.string(Some(label), "leftovers", v).as_deref() {
            None | Some("kill") => Leftovers::Kill,
            Some("keep") => Leftovers::Keep,
            Some(other) => {
                self.err(
                    Some(label.to_string()),
                    "leftovers",
                    format!("unknown value {other:?} (expected kill or keep)"),
                );
                Leftovers::Kill
            }
        }
    }

    fn overlap(&mut self, label: &str, v: Option<&Value>) -> Overlap {
        match self.string(Some(label), "overlap", v).as_deref() {
            None | Some("skip") => Overlap::Skip,
            Some("queue") => Overlap::Queue,
            Some("replace") => Overlap::Replace,
            Some("allow") => Overlap::Allow,
            Some(other) => {
                self.err(
                    Some(label.to_string()),
                    "overlap",
                    format!("unknown policy {other:?} (expected skip, queue, replace or allow)"),
                );
                Overlap::Skip
            }
        }
    }

    /// `env`: a table of variable names to string values.
    fn env(&mut self, label: &str, v: Option<&Value>) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        match v {
            None => {}
            Some(Value::Table(e)) => {
                for (k, val) in e {
                    if k.is_empty() || k.contains('=') || k.contains('\0') {
                        self.err(
                            Some(label.to_string()),
                            &format!("env.{k}"),
                            "invalid variable name".into(),
                        );
                    }
                    match val.as_str() {
                        Some(s) => {
                            env.insert(k.clone(), s.to_string());
                        }
                        None => self.err(
                            Some(label.to_string()),
                            &format!("env.{k}"),
                            "must be a string".into(),
                        ),
                    }
                }
            }
            Some(other) => self.err(
                Some(label.to_string()),
                "env",
                format!("must be a table of strings, found {}", other.type_str()),
            ),
        }
        env
    }

    /// The keys that shape the job's process: who it runs as, its
    /// environment base, niceness and resource limits.
    fn process_keys(&mut self, label: &str, t: &Table) -> ProcessKeys {
        let (user, group) = self.credentials(label, t);
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
        let limits = self.limits(label, t);
        ProcessKeys {
            user,
            group,
            inherit_env,
            nice,
            limits,
        }
    }

    /// `user` and `group`: they must exist, and switching to them must be
    /// possible for the user cronwarden runs as.
    fn credentials(&mut self, label: &str, t: &Table) -> (Option<String>, Option<String>) {
        let j = Some(label);
        let user = self.string(j, "user", t.get("user"));
        let group = self.string(j, "group", t.get("group"));
        if user.is_none() && group.is_none() {
            return (user, group);
        }
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
        (user, group)
    }

    /// `limit_nofile`, `limit_as`, `limit_cpu`, `limit_nproc`, and the
    /// cgroup limits `memory_max`, `pids_max` and `cpu_weight`.
    fn limits(&mut self, label: &str, t: &Table) -> Limits {
        let j = Some(label);
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
        let nproc = self
            .count(j, "limit_nproc", t.get("limit_nproc"))
            .map(u64::from);
        let memory_max = match t.get("memory_max") {
            None => None,
            Some(v) => match parse_size(v) {
                Ok(n) => Some(n),
                Err(e) => {
                    self.err(Some(label.to_string()), "memory_max", e);
                    None
                }
            },
        };
        let pids_max = self.count(j, "pids_max", t.get("pids_max")).map(u64::from);
        let cpu_weight = match self.count(j, "cpu_weight", t.get("cpu_weight")) {
            Some(w) if w > 10_000 => {
                self.err(
                    Some(label.to_string()),
                    "cpu_weight",
                    format!("must be from 1 to 10000, found {w}"),
                );
                None
            }
            w => w,
        };
        Limits {
            nofile,
            address_space,
            cpu_seconds,
            nproc,
            memory_max,
            pids_max,
            cpu_weight,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{parse_errors as errors, validate::MAX_DURATION, Config};
    use super::*;

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
    fn unnamed_job_is_numbered() {
        let errs = errors("[[job]]\nschedule = \"@daily\"\ncommand = [\"true\"]\n");
        assert_eq!(errs, ["/etc/cw.toml: job \"job #1\": key \"name\": missing (every job needs a unique name)"]);
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
                "log_output = 1",
                "job \"j\": key \"log_output\": must be true or false",
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
        assert!(
            j.log_output,
            "output goes to the log by default, as supercronic"
        );
    }

    #[test]
    fn containment_keys_are_validated_by_key() {
        let job = |extra: &str| {
            format!("[[job]]\nname = \"j\"\nschedule = \"@daily\"\nshell = \"true\"\n{extra}\n")
        };
        for (extra, want) in [
            (
                "leftovers = \"maybe\"",
                "key \"leftovers\": unknown value \"maybe\"",
            ),
            (
                "limit_nproc = 0",
                "key \"limit_nproc\": must be a positive integer",
            ),
            ("memory_max = \"lots\"", "key \"memory_max\": invalid size"),
            (
                "pids_max = -1",
                "key \"pids_max\": must be a positive integer",
            ),
            (
                "cpu_weight = 10001",
                "key \"cpu_weight\": must be from 1 to 10000",
            ),
        ] {
            let errs = errors(&job(extra));
            assert!(errs.iter().any(|e| e.contains(want)), "{extra}: {errs:?}");
        }
        let errs = errors(&format!("cgroups = \"no\"\n{}", job("")));
        assert!(
            errs.iter()
                .any(|e| e.contains("key \"cgroups\": must be true or false")),
            "{errs:?}"
        );
        let c = Config::parse(Path::new("/etc/cw.toml"), &job("")).unwrap();
        assert_eq!(
            c.jobs[0].leftovers,
            super::Leftovers::Kill,
            "kill by default"
        );
        assert!(c.cgroups, "cgroups on by default");
        let c = Config::parse(
            Path::new("/etc/cw.toml"),
            &format!(
                "cgroups = false\n{}",
                job("leftovers = \"keep\"\nlimit_nproc = 20\nmemory_max = \"64M\"\npids_max = 50\ncpu_weight = 200")
            ),
        )
        .unwrap();
        let j = &c.jobs[0];
        assert!(!c.cgroups);
        assert_eq!(j.leftovers, super::Leftovers::Keep);
        assert_eq!(
            (
                j.limits.nproc,
                j.limits.memory_max,
                j.limits.pids_max,
                j.limits.cpu_weight
            ),
            (Some(20), Some(64 << 20), Some(50), Some(200))
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

    /// Issue 13: `check` panicked (exit 101) adding this to the timeout,
    /// and `reload` accepted it, after which both processes panicked.
    #[test]
    fn a_kill_grace_of_u64_max_seconds_is_refused_naming_the_key() {
        let errs = errors(
            "[[job]]\nname = \"a\"\nschedule = \"@daily\"\nshell = \"true\"\n\
             kill_grace = \"18446744073709551615s\"\n",
        );
        assert_eq!(
            errs,
            ["/etc/cw.toml: job \"a\": key \"kill_grace\": \
              must be at most 365d (a year), found \"18446744073709551615s\""]
        );
    }

    /// The supervisor's second line kills a run at timeout + kill_grace +
    /// 10s, the worker at timeout then kill_grace: with the largest values
    /// accepted, neither sum nor deadline can overflow.
    #[test]
    fn the_largest_accepted_timings_cannot_overflow_a_deadline() {
        let c = Config::parse(
            Path::new("c.toml"),
            "[[job]]\nname = \"a\"\nschedule = \"@daily\"\nshell = \"true\"\n\
             timeout = \"365d\"\nkill_grace = \"365d\"\nmisfire_grace = \"365d\"\n\
             late_after = \"365d\"\n",
        )
        .unwrap();
        let j = &c.jobs[0];
        let (timeout, grace) = (j.timeout.unwrap(), j.kill_grace);
        assert_eq!((timeout, grace), (MAX_DURATION, MAX_DURATION));
        let total = timeout
            .checked_add(grace)
            .and_then(|d| d.checked_add(Duration::from_secs(10)))
            .expect("timeout + kill_grace + 10s overflows");
        assert!(jiff::SignedDuration::try_from(total).is_ok());
        let now = std::time::Instant::now();
        assert!(now.checked_add(total).is_some());
        assert!(now.checked_add(j.late_after + j.misfire_grace).is_some());
        let wall = jiff::Timestamp::now();
        assert!(wall
            .checked_add(jiff::SignedDuration::try_from(total).unwrap())
            .is_ok());
    }
}
