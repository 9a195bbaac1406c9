//! The [`Validator`] and its generic key helpers: a string, a duration, a
//! count, an array of strings, a time zone, a URL, a size, unknown keys.
//!
//! A helper never stops validation: on a bad value it records one
//! [`ConfigError`] (file, job, key, message) and returns `None`, so the
//! caller goes on and the operator sees every problem at once. The
//! per-concern validators (`job`, `sinks`, `integrations`) are `impl
//! Validator` blocks in their own modules, built from these helpers.

use std::{path::PathBuf, time::Duration};

use jiff::tz::TimeZone;
use toml::{Table, Value};

use super::ConfigError;

/// The longest duration any key accepts: 365 days. Every duration in the
/// config (a job's `timeout`, `kill_grace`, `misfire_grace`, `late_after`,
/// `limit_cpu`, the `[watchdog]` timings, the alert and heartbeat intervals,
/// a sink's `timeout` and `repeat_after`) is something an operator waits
/// for; none is meaningful beyond a year. The bound is what makes the
/// processes' deadline arithmetic safe: `timeout + kill_grace` plus a
/// margin, added to a monotonic `Instant`, cannot overflow (a value near
/// `u64::MAX` seconds once made `check` and both processes panic).
pub(super) const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Collects every problem of one config file.
pub(crate) struct Validator {
    pub(super) file: PathBuf,
    pub(super) errors: Vec<ConfigError>,
}

impl Validator {
    pub(super) fn new(file: PathBuf) -> Self {
        Validator {
            file,
            errors: vec![],
        }
    }

    pub(super) fn err(&mut self, job: Option<String>, key: &str, message: String) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            job,
            key: key.to_string(),
            message,
        });
    }

    pub(super) fn unknown_keys(
        &mut self,
        job: Option<&str>,
        prefix: &str,
        t: &Table,
        known: &[&str],
    ) {
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

    pub(super) fn string(
        &mut self,
        job: Option<&str>,
        key: &str,
        v: Option<&Value>,
    ) -> Option<String> {
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

    /// A duration from zero (excluded) to [`MAX_DURATION`] (included).
    /// `Some(None)` means the explicit value "none" (only where allowed).
    pub(super) fn duration(
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
            Ok(d) if d > MAX_DURATION => {
                self.err(
                    job.map(str::to_string),
                    key,
                    format!("must be at most 365d (a year), found {s:?}"),
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

    pub(super) fn count(&mut self, job: Option<&str>, key: &str, v: Option<&Value>) -> Option<u32> {
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

    pub(super) fn strings(&mut self, key: &str, v: Option<&Value>) -> Option<Vec<String>> {
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

    pub(super) fn timezone(
        &mut self,
        job: Option<&str>,
        key: &str,
        name: &str,
    ) -> Option<TimeZone> {
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

    pub(super) fn url(
        &mut self,
        job: Option<&str>,
        key: &str,
        v: Option<&Value>,
    ) -> Option<String> {
        let u = self.string(job, key, v)?;
        if valid_url(&u) {
            Some(u)
        } else {
            self.err(
                job.map(str::to_string),
                key,
                format!("invalid URL {u:?} (expected http://host[:port]/path or https://...)"),
            );
            None
        }
    }
}

/// The one rule for a job's or a sink's name, or why `name` breaks it.
///
/// A name is used as a URL path segment (percent-encoded by the CLI,
/// decoded by the server), as a directory under `<state_dir>/output`
/// (`keep_output`), as a command-line argument and in log lines and
/// tables. So it must be one non-empty path component that is neither `.`
/// nor `..` and holds no `/`; it must not start with `-` (a CLI verb would
/// take it for an option); it must not start or end with white space
/// (invisible in a table); and it must hold no control character and no
/// bidirectional override or isolate (U+202A-U+202E, U+2066-U+2069),
/// which make a log line or a table say something other than its bytes.
/// Anything else is allowed: spaces inside, `?`, `#`, `%`, non-ASCII
/// letters.
pub(crate) fn name_problem(name: &str) -> Option<&'static str> {
    let bidi = |c: char| matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    if name.is_empty() {
        Some("must not be empty")
    } else if name == "." || name == ".." {
        Some("must not be \".\" or \"..\"")
    } else if name.contains('/') {
        Some("must not contain '/'")
    } else if name.starts_with('-') {
        Some("must not start with '-' (a command line would take it for an option)")
    } else if name.trim() != name {
        Some("must not start or end with white space")
    } else if name.chars().any(char::is_control) {
        Some("must not contain control characters")
    } else if name.chars().any(bidi) {
        Some("must not contain bidirectional overrides or isolates (U+202A-U+202E, U+2066-U+2069)")
    } else {
        None
    }
}

pub(super) fn valid_url(u: &str) -> bool {
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

/// A size in bytes: an integer, or a string with a binary suffix
/// (`"512M"`, `"2G"`, `"64KiB"`).
pub(super) fn parse_size(v: &Value) -> Result<u64, String> {
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
    use super::super::{parse_errors, Config};
    use super::*;
    use std::path::Path;

    /// Every duration key, with the table it lives in.
    const DURATION_KEYS: &[(&str, &str)] = &[
        ("", "alert_repeat_after"),
        ("", "heartbeat_url_interval"),
        ("[watchdog]\n", "heartbeat_interval"),
        ("[watchdog]\n", "stall_after"),
        ("[watchdog]\n", "late_after"),
        ("[watchdog]\n", "failing_restart_after"),
        (
            "[[alert]]\nname = \"s\"\nkind = \"exec\"\ncommand = [\"x\"]\n",
            "timeout",
        ),
        (
            "[[alert]]\nname = \"s\"\nkind = \"exec\"\ncommand = [\"x\"]\n",
            "repeat_after",
        ),
        (
            "[[job]]\nname = \"j\"\nschedule = \"@daily\"\nshell = \"true\"\n",
            "timeout",
        ),
        (
            "[[job]]\nname = \"j\"\nschedule = \"@daily\"\nshell = \"true\"\n",
            "kill_grace",
        ),
        (
            "[[job]]\nname = \"j\"\nschedule = \"@daily\"\nshell = \"true\"\n",
            "misfire_grace",
        ),
        (
            "[[job]]\nname = \"j\"\nschedule = \"@daily\"\nshell = \"true\"\n",
            "late_after",
        ),
        (
            "[[job]]\nname = \"j\"\nschedule = \"@daily\"\nshell = \"true\"\n",
            "limit_cpu",
        ),
    ];

    #[test]
    fn every_duration_key_is_bounded_by_a_year() {
        for (table, key) in DURATION_KEYS {
            // stall_after must stay longer than heartbeat_interval, so the
            // longest heartbeat_interval accepted is just under a year.
            let (wd, longest) = if *key == "heartbeat_interval" {
                ("stall_after = \"365d\"\n", "364d")
            } else {
                ("", "365d")
            };
            let at = |d: &str| format!("{table}{wd}{key} = \"{d}\"\n");
            let ok = Config::parse(Path::new("c.toml"), &at(longest));
            assert!(ok.is_ok(), "{table}{key}: {ok:?}");
            for too_long in ["365d 1ns", "18446744073709551615s"] {
                let errs = parse_errors(&at(too_long));
                assert_eq!(errs.len(), 1, "{table}{key} = {too_long:?}: {errs:#?}");
                assert!(
                    errs[0].contains(&format!(
                        "{key}\": must be at most 365d (a year), found \"{too_long}\""
                    )),
                    "{table}{key}: {errs:#?}"
                );
            }
        }
    }

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size(&Value::String("512M".into())), Ok(512 << 20));
        assert_eq!(parse_size(&Value::String("64KiB".into())), Ok(64 << 10));
        assert_eq!(parse_size(&Value::Integer(4096)), Ok(4096));
        assert!(parse_size(&Value::String("12Q".into())).is_err());
        assert!(parse_size(&Value::String("99999999999T".into())).is_err());
        assert!(parse_size(&Value::Integer(0)).is_err());
    }
}

#[cfg(test)]
mod name_tests {
    use super::super::{parse_errors, Config};
    use super::name_problem;
    use proptest::prelude::*;
    use std::path::{Component, Path};

    fn config(name: &str) -> String {
        format!(
            "[[job]]\nname = {}\nschedule = \"@daily\"\nshell = \"true\"\n\
             [[alert]]\nname = {}\nkind = \"exec\"\ncommand = [\"true\"]\n",
            toml::Value::String(name.into()),
            toml::Value::String(name.into()),
        )
    }

    #[test]
    fn names_that_break_a_path_a_command_line_or_a_log_line_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "/",
            "-x",
            " a",
            "a ",
            "a\nb",
            "a\tb",
            "a\u{7f}",
            "a\u{202E}b",
            "\u{2066}x",
            "x\u{2069}",
        ] {
            assert!(name_problem(bad).is_some(), "{bad:?} must be refused");
            let errs = parse_errors(&config(bad));
            assert!(
                errs.iter().any(|e| e.contains("key \"name\"")),
                "job {bad:?}: {errs:?}"
            );
            assert!(
                errs.iter().any(|e| e.contains(".name\"")),
                "sink {bad:?}: {errs:?}"
            );
        }
    }

    #[test]
    fn spaces_marks_and_letters_are_allowed() {
        for good in [
            "a b",
            "a?b",
            "a#b",
            "100%",
            "é tâche ☃",
            "naïve",
            "x.y",
            "...",
            "a-b",
        ] {
            assert_eq!(name_problem(good), None, "{good:?}");
            let c = Config::parse(Path::new("/etc/cw.toml"), &config(good)).unwrap();
            assert_eq!(c.jobs[0].name, good);
            assert_eq!(c.sinks[0].name, good);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

        /// `keep_output` writes under `<state_dir>/output/<name>`: an
        /// accepted name is exactly one ordinary path component, so that
        /// directory is always a child of `output` (the oracle is std's
        /// own path parser).
        #[test]
        fn an_accepted_name_is_one_ordinary_path_component(name in "[./a-z \\-#%?é\u{202E}\n]{0,6}") {
            if name_problem(&name).is_none() {
                let root = Path::new("/state/output");
                let dir = root.join(&name);
                let comps: Vec<_> = dir.strip_prefix(root).unwrap().components().collect();
                prop_assert_eq!(comps.len(), 1);
                prop_assert!(matches!(comps[0], Component::Normal(_)));
                prop_assert_eq!(dir.parent(), Some(root));
            }
        }
    }
}
