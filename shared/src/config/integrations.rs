//! The top-level keys that connect cronwarden to what operators already
//! run: `metrics_listen` (Prometheus over TCP), `heartbeat_url` and
//! `heartbeat_url_interval` (a whole-host dead man's switch), `log_dir` and
//! `log_retention` (rolling log files). Per-job `ping_url` is parsed with
//! the other job keys. Validation follows the rest of the config: every
//! error names the file and the key, and all are reported at once.

use std::{net::SocketAddr, path::Path, path::PathBuf, time::Duration};

use toml::Table;

use super::validate::Validator;

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

/// `base` joined with a ping suffix (`start`, `fail`), healthchecks.io style.
pub fn ping_target(base: &str, suffix: &str) -> String {
    if suffix.is_empty() {
        return base.to_string();
    }
    format!("{}/{suffix}", base.trim_end_matches('/'))
}

impl Validator {
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
    fn ping_targets_join_with_one_slash() {
        assert_eq!(ping_target("http://h/p", "start"), "http://h/p/start");
        assert_eq!(ping_target("http://h/p/", "fail"), "http://h/p/fail");
        assert_eq!(ping_target("http://h/p", ""), "http://h/p");
    }
}
