//! The top-level keys that connect cronwarden to what operators already
//! run: `metrics_listen` (Prometheus over TCP), `heartbeat_url` and
//! `heartbeat_url_interval` (a whole-host dead man's switch), `log_dir` and
//! `log_retention` (rolling log files); and per job, the ping URL templates
//! `ping_start_url`, `ping_success_url`, `ping_failure_url` with their
//! placeholders (the simple `ping_url` is parsed with the other job keys).
//! Validation follows the rest of the config: every error names the file
//! (and job) and the key, and all are reported at once.

use std::{net::SocketAddr, path::Path, path::PathBuf, time::Duration};

use toml::Table;

use super::validate::{valid_url, Validator};

/// The top-level keys this module owns (the caller's unknown-key check
/// accepts them).
pub(crate) const KEYS: &[&str] = &[
    "metrics_listen",
    "heartbeat_url",
    "heartbeat_url_interval",
    "log_dir",
    "log_retention",
];

/// Metrics, host heartbeat and log files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Integrations {
    /// Also serve `GET /metrics` on this TCP address.
    pub metrics_listen: Option<SocketAddr>,
    /// Requested every `heartbeat_interval` while the state is ok;
    /// `<url>/fail` (with the status summary) while it is not.
    pub heartbeat_url: Option<String>,
    pub heartbeat_interval: Duration,
    /// Logs also go to daily files here.
    pub log_dir: Option<PathBuf>,
    /// Daily log files kept.
    pub log_retention: u32,
}

const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(60);
const DEFAULT_LOG_RETENTION: u32 = 7;

impl Default for Integrations {
    fn default() -> Self {
        Integrations {
            metrics_listen: None,
            heartbeat_url: None,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            log_dir: None,
            log_retention: DEFAULT_LOG_RETENTION,
        }
    }
}

/// A job's ping URL templates, one per event; an event without one is not
/// pinged. Placeholders (`{exit_code}`, `{run_id}`, `{run_uuid}`, `{job}`)
/// are filled per run ([`expand_ping`]); nothing is appended, so any
/// service's URL scheme can be spelled out (healthchecks.io's `/{exit_code}`
/// and `?rid=`, Cronitor's `?state=`, Dead Man's Snitch's bare URL).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PingTemplates {
    pub start: Option<String>,
    pub success: Option<String>,
    pub failure: Option<String>,
}

/// The per-job template keys, in the order of [`PingTemplates`]' fields.
pub(crate) const JOB_PING_KEYS: &[&str] =
    &["ping_start_url", "ping_success_url", "ping_failure_url"];

/// What a template's placeholders are filled with, for one run.
#[derive(Debug, Clone, Copy)]
pub struct PingVars<'a> {
    pub job: &'a str,
    pub run_id: u64,
    /// `None` at a run's start: `{exit_code}` is refused in `ping_start_url`.
    pub exit_code: Option<i32>,
}

/// A placeholder that is not one of ours, or braces that do not pair.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error(
        "unknown placeholder {{{0}}} (known: {{exit_code}}, {{run_id}}, {{run_uuid}}, {{job}})"
    )]
    Unknown(String),
    #[error("{{exit_code}} has no value at a run's start")]
    NoExitCode,
    #[error("unpaired brace")]
    Unpaired,
}

/// A run's id as a UUID in canonical lowercase form, for services that
/// pair events by a UUID (healthchecks.io's `rid`): the job name's FNV-1a
/// hash, then the run id (unique within a store, and the same for a run's
/// start and end), so runs of equally numbered jobs on two hosts rarely
/// meet either.
pub fn run_uuid(job: &str, run_id: u64) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in job.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    let id = run_id & 0xffff_ffff_ffff;
    format!("{h:08x}-0000-4000-8000-{id:012x}")
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so a
/// job name is one path segment or one query value wherever it is put.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `template` with its placeholders filled from `vars`.
pub fn expand_ping(template: &str, vars: PingVars) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        if rest.as_bytes()[open] == b'}' {
            return Err(TemplateError::Unpaired);
        }
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or(TemplateError::Unpaired)?;
        let name = &after[..close];
        match name {
            "job" => out.push_str(&encode(vars.job)),
            "run_id" => out.push_str(&vars.run_id.to_string()),
            "run_uuid" => out.push_str(&run_uuid(vars.job, vars.run_id)),
            "exit_code" => {
                let code = vars.exit_code.ok_or(TemplateError::NoExitCode)?;
                out.push_str(&code.to_string());
            }
            other => return Err(TemplateError::Unknown(other.to_string())),
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `base` joined with a ping suffix (`start`, `fail`), healthchecks.io style.
pub fn ping_target(base: &str, suffix: &str) -> String {
    if suffix.is_empty() {
        return base.to_string();
    }
    format!("{}/{suffix}", base.trim_end_matches('/'))
}

impl Validator {
    /// A job's `ping_*_url` templates: valid URLs once filled, known
    /// placeholders only; not together with `ping_url` (whose suffixes
    /// would be appended to the templates' own scheme).
    pub(super) fn ping_templates(
        &mut self,
        job: Option<&str>,
        t: &Table,
        has_ping_url: bool,
    ) -> PingTemplates {
        let mut urls = JOB_PING_KEYS.iter().map(|key| {
            let template = self.string(job, key, t.get(*key))?;
            let sample = PingVars {
                job: job.unwrap_or("job"),
                run_id: 1,
                exit_code: (*key != "ping_start_url").then_some(0),
            };
            let error = match expand_ping(&template, sample) {
                Ok(url) if valid_url(&url) => None,
                Ok(_) => Some(format!(
                    "invalid URL {template:?} (expected http://host[:port]/path or https://...)"
                )),
                Err(e) => Some(format!("{e} in {template:?}")),
            };
            if let Some(e) = error {
                self.err(job.map(str::to_string), key, e);
                return None;
            }
            if has_ping_url {
                self.err(
                    job.map(str::to_string),
                    key,
                    "not with ping_url: ping_url is the healthchecks.io shorthand (it appends /start and /fail); spell every event out with the ping_*_url keys instead".into(),
                );
            }
            Some(template)
        });
        let (start, success, failure) = (
            urls.next().flatten(),
            urls.next().flatten(),
            urls.next().flatten(),
        );
        PingTemplates {
            start,
            success,
            failure,
        }
    }

    pub(super) fn integrations(&mut self, t: &Table, base: &Path) -> Integrations {
        let mut out = Integrations::default();
        if let Some(s) = self.string(None, "metrics_listen", t.get("metrics_listen")) {
            match s.parse::<SocketAddr>() {
                Ok(a) => out.metrics_listen = Some(a),
                Err(_) => self.err(
                    None,
                    "metrics_listen",
                    format!("invalid address {s:?} (expected IP:PORT, e.g. \"127.0.0.1:9184\")"),
                ),
            }
        }
        out.heartbeat_url = self.url(None, "heartbeat_url", t.get("heartbeat_url"));
        if let Some(d) = self
            .duration(
                None,
                "heartbeat_url_interval",
                t.get("heartbeat_url_interval"),
                false,
            )
            .flatten()
        {
            if d < Duration::from_secs(1) {
                self.err(None, "heartbeat_url_interval", "must be at least 1s".into());
            } else {
                out.heartbeat_interval = d;
            }
        }
        out.log_dir = self
            .string(None, "log_dir", t.get("log_dir"))
            .map(|s| base.join(s));
        if let Some(n) = self.count(None, "log_retention", t.get("log_retention")) {
            out.log_retention = n;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    #[test]
    fn defaults_and_values() {
        let c = Config::parse(Path::new("/etc/cw/c.toml"), "").unwrap();
        assert_eq!(c.integrations, Integrations::default());
        let c = Config::parse(
            Path::new("/etc/cw/c.toml"),
            "metrics_listen = \"127.0.0.1:9184\"\nheartbeat_url = \"https://hc-ping.com/abc\"\n\
             heartbeat_url_interval = \"30s\"\nlog_dir = \"logs\"\nlog_retention = 3\n\
             [[job]]\nname = \"a\"\nschedule = \"@daily\"\nshell = \"true\"\nping_url = \"http://127.0.0.1:1/p\"\n",
        )
        .unwrap();
        let i = &c.integrations;
        assert_eq!(i.metrics_listen, Some("127.0.0.1:9184".parse().unwrap()));
        assert_eq!(i.heartbeat_url.as_deref(), Some("https://hc-ping.com/abc"));
        assert_eq!(i.heartbeat_interval, Duration::from_secs(30));
        assert_eq!(i.log_dir.as_deref(), Some(Path::new("/etc/cw/logs")));
        assert_eq!(i.log_retention, 3);
        assert_eq!(c.jobs[0].ping_url.as_deref(), Some("http://127.0.0.1:1/p"));
    }

    #[test]
    fn errors_name_file_job_and_key() {
        let errs = match Config::parse(
            Path::new("/etc/cw.toml"),
            "metrics_listen = \"localhost\"\nheartbeat_url = \"hc-ping.com/x\"\n\
             heartbeat_url_interval = \"100ms\"\nlog_retention = 0\nlog_dir = 5\n\
             [[job]]\nname = \"a\"\nschedule = \"@daily\"\nshell = \"true\"\nping_url = \"ftp://x\"\n",
        ) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.0.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        };
        let want = [
            "/etc/cw.toml: key \"metrics_listen\": invalid address \"localhost\"",
            "/etc/cw.toml: key \"heartbeat_url\": invalid URL",
            "/etc/cw.toml: key \"heartbeat_url_interval\": must be at least 1s",
            "/etc/cw.toml: key \"log_retention\": must be a positive integer",
            "/etc/cw.toml: key \"log_dir\": must be a string",
            "/etc/cw.toml: job \"a\": key \"ping_url\": invalid URL \"ftp://x\"",
        ];
        for w in want {
            assert!(
                errs.iter().any(|e| e.starts_with(w)),
                "missing {w:?} in {errs:#?}"
            );
        }
        assert_eq!(errs.len(), want.len(), "{errs:#?}");
    }

    #[test]
    fn ping_templates_fill_known_placeholders_only() {
        let vars = PingVars {
            job: "a/b c",
            run_id: 7,
            exit_code: Some(2),
        };
        assert_eq!(
            expand_ping("http://h/{job}/{exit_code}?rid={run_uuid}&n={run_id}", vars),
            Ok(format!(
                "http://h/a%2Fb%20c/2?rid={}&n=7",
                run_uuid("a/b c", 7)
            ))
        );
        assert_eq!(
            expand_ping("http://h/{nope}", vars),
            Err(TemplateError::Unknown("nope".into()))
        );
        assert_eq!(
            expand_ping("http://h/{job", vars),
            Err(TemplateError::Unpaired)
        );
        assert_eq!(
            expand_ping("http://h/}", vars),
            Err(TemplateError::Unpaired)
        );
        let start = PingVars {
            exit_code: None,
            ..vars
        };
        assert_eq!(
            expand_ping("http://h/{exit_code}", start),
            Err(TemplateError::NoExitCode)
        );
    }

    #[test]
    fn run_uuids_are_canonical_and_differ_by_job_and_run() {
        let u = run_uuid("backup", 17);
        assert_eq!(u.len(), 36);
        assert!(
            u.chars()
                .all(|c| c == '-' || c.is_ascii_digit() || ('a'..='f').contains(&c)),
            "{u}"
        );
        assert_eq!(
            u.split('-').map(str::len).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(u.ends_with("-000000000011"), "{u}");
        assert_ne!(u, run_uuid("backup", 18));
        assert_ne!(u, run_uuid("restore", 17));
        assert_eq!(u, run_uuid("backup", 17));
    }

    #[test]
    fn ping_template_keys_are_validated_naming_the_job_and_key() {
        let ok = Config::parse(
            Path::new("c.toml"),
            "[[job]]\nname = \"a\"\nschedule = \"@daily\"\nshell = \"true\"\n\
             ping_start_url = \"https://cronitor.link/p/k/a?state=run&series={run_id}\"\n\
             ping_failure_url = \"https://cronitor.link/p/k/a?state=fail&series={run_id}&status_code={exit_code}\"\n",
        )
        .unwrap();
        let t = &ok.jobs[0].ping_templates;
        assert!(t.start.is_some() && t.failure.is_some() && t.success.is_none());
        let errs = match Config::parse(
            Path::new("/etc/cw.toml"),
            "[[job]]\nname = \"a\"\nschedule = \"@daily\"\nshell = \"true\"\n\
             ping_start_url = \"http://h/{exit_code}\"\n\
             ping_success_url = \"http://h/{status}\"\n\
             ping_failure_url = \"h/fail\"\n\
             [[job]]\nname = \"b\"\nschedule = \"@daily\"\nshell = \"true\"\n\
             ping_url = \"http://h/b\"\nping_success_url = \"http://h/b/ok\"\n",
        ) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.0.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        };
        let want = [
            "/etc/cw.toml: job \"a\": key \"ping_start_url\": {exit_code} has no value at a run's start",
            "/etc/cw.toml: job \"a\": key \"ping_success_url\": unknown placeholder {status}",
            "/etc/cw.toml: job \"a\": key \"ping_failure_url\": invalid URL \"h/fail\"",
            "/etc/cw.toml: job \"b\": key \"ping_success_url\": not with ping_url",
        ];
        for w in want {
            assert!(
                errs.iter().any(|e| e.starts_with(w)),
                "missing {w:?} in {errs:#?}"
            );
        }
        assert_eq!(errs.len(), want.len(), "{errs:#?}");
    }

    #[test]
    fn ping_targets_join_with_one_slash() {
        assert_eq!(ping_target("http://h/p", "start"), "http://h/p/start");
        assert_eq!(ping_target("http://h/p/", "fail"), "http://h/p/fail");
        assert_eq!(ping_target("http://h/p", ""), "http://h/p");
    }
}
