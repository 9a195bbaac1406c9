//! The keys of several hosts sharing one PostgreSQL ledger: `store`,
//! `host`, `lease` (README "Several hosts"). Without `store` the scheduler
//! is a single host and these keys are refused, so a stray `host` or
//! `lease` never reads as if the host were clustered.

use std::time::Duration;

use toml::Table;

use super::validate::Validator;

/// The top-level keys this module reads.
pub(crate) const KEYS: &[&str] = &["store", "host", "lease"];

/// The default `lease`: a run's claim outlives its host's silence this long.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// A lease must cover several heartbeats, or a loaded host loses its own
/// runs to its peers.
pub const LEASE_HEARTBEATS: u32 = 3;

/// `store = "postgres://…"`: this host claims every fire in the shared
/// database before running it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The connection URL, as configured (it may carry a password: never
    /// logged; see [`ClusterConfig::redacted`]).
    pub url: String,
    /// This host's name in the shared tables.
    pub host: String,
    /// How long a running fire's claim lives without a renewal.
    pub lease: Duration,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("url", &self.redacted())
            .field("host", &self.host)
            .field("lease", &self.lease)
            .finish()
    }
}

impl ClusterConfig {
    /// The URL without its password, for logs and status.
    pub fn redacted(&self) -> String {
        redact(&self.url)
    }
}

/// `postgres://user:secret@h/db` → `postgres://user:***@h/db`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, tail) = match rest.find('@') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***{tail}"),
        None => url.to_string(),
    }
}

/// This machine's host name (the default `host`).
pub fn default_host() -> String {
    Some(crate::jitter::host())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

impl Validator {
    /// The cluster keys of the top-level `table`, `None` without `store`.
    pub(super) fn cluster(&mut self, table: &Table, heartbeat: Duration) -> Option<ClusterConfig> {
        let url = self.string(None, "store", table.get("store"));
        let host = self.string(None, "host", table.get("host"));
        let lease = self
            .duration(None, "lease", table.get("lease"), false)
            .flatten();
        let Some(url) = url else {
            for key in ["host", "lease"] {
                if table.get(key).is_some() && table.get("store").is_none() {
                    self.err(
                        None,
                        key,
                        "only means something with `store = \"postgres://…\"` (several hosts)"
                            .into(),
                    );
                }
            }
            return None;
        };
        if let Err(e) = check_url(&url) {
            self.err(None, "store", e);
        }
        let host = match host {
            Some(h) if h.trim().is_empty() || h.len() > 255 || h.chars().any(char::is_control) => {
                self.err(
                    None,
                    "host",
                    format!("must be a name of 1 to 255 printable characters, found {h:?}"),
                );
                default_host()
            }
            Some(h) => h,
            None => default_host(),
        };
        let lease = lease.unwrap_or(DEFAULT_LEASE);
        if lease < heartbeat * LEASE_HEARTBEATS {
            self.err(
                None,
                "lease",
                format!(
                    "must be at least {LEASE_HEARTBEATS} heartbeats ({}), found {}",
                    humantime::format_duration(heartbeat * LEASE_HEARTBEATS),
                    humantime::format_duration(lease)
                ),
            );
        }
        Some(ClusterConfig { url, host, lease })
    }
}

/// A PostgreSQL URL this build can connect with.
fn check_url(url: &str) -> Result<(), String> {
    let redacted = redact(url);
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(format!(
            "must be a PostgreSQL URL (postgres://user@host/db), found {redacted:?}"
        ));
    }
    let parsed: postgres::Config = url
        .parse()
        .map_err(|e| format!("invalid PostgreSQL URL {redacted:?}: {e}"))?;
    if parsed.get_dbname().is_none() {
        return Err(format!("{redacted:?} names no database"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    fn parse(top: &str) -> Result<Config, String> {
        let text = format!(
            "{top}\n[[job]]\nname = \"a\"\nschedule = \"* * * * *\"\ncommand = [\"true\"]\n"
        );
        Config::parse(Path::new("/etc/cw.toml"), &text).map_err(|e| e.to_string())
    }

    #[test]
    fn without_store_the_host_is_alone() {
        assert!(parse("").unwrap().cluster.is_none());
        let e = parse("host = \"a\"").unwrap_err();
        assert!(e.contains("key \"host\"") && e.contains("store"), "{e}");
    }

    #[test]
    fn store_host_and_lease_are_read() {
        let c = parse("store = \"postgres://cw@db/cw\"\nhost = \"h1\"\nlease = \"20s\"")
            .unwrap()
            .cluster
            .unwrap();
        assert_eq!((c.host.as_str(), c.lease.as_secs()), ("h1", 20));
        let d = parse("store = \"postgresql://db/cw\"")
            .unwrap()
            .cluster
            .unwrap();
        assert_eq!(d.lease, super::DEFAULT_LEASE);
        assert!(!d.host.is_empty());
    }

    #[test]
    fn bad_values_name_their_key_and_hide_the_password() {
        let e = parse("store = \"mysql://u:hunter2@db/x\"").unwrap_err();
        assert!(e.contains("key \"store\"") && !e.contains("hunter2"), "{e}");
        let e = parse("store = \"postgres://u:hunter2@db/x?sslmode=bogus\"").unwrap_err();
        assert!(e.contains("key \"store\"") && !e.contains("hunter2"), "{e}");
        assert!(parse("store = \"postgres://db/x?sslmode=require\"").is_ok());
        let e = parse("store = \"postgres://db/x\"\nlease = \"1s\"").unwrap_err();
        assert!(e.contains("key \"lease\""), "{e}");
        let e = parse("store = \"postgres://db/x\"\nhost = \"\"").unwrap_err();
        assert!(e.contains("key \"host\""), "{e}");
    }

    #[test]
    fn redaction_keeps_user_and_host() {
        assert_eq!(
            super::redact("postgres://cw:s3cret@db:5432/x"),
            "postgres://cw:***@db:5432/x"
        );
        assert_eq!(super::redact("postgres://db/x"), "postgres://db/x");
    }
}
