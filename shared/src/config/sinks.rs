//! The `[[alert]]` blocks: where alerts are delivered ([`SinkSpec`]), an
//! exec command, a webhook or an Alertmanager, and which alerts each one takes (kinds,
//! jobs, minimum severity). Sink names are unique; an unnamed sink is
//! called `<kind>#<n>` and its keys are reported as `alert.<name>.<key>`.
//! A sink's `kinds` are [`AlertKind`]s, so a kind the detectors can raise
//! is a kind a sink can select.

use std::time::Duration;

use toml::{Table, Value};

use super::{
    validate::{valid_url, Validator},
    AlertKind, HeaderValue, SinkKind, SinkSpec, WebhookFormat,
};
use crate::status::Severity;

/// The keys every sink accepts, besides those of its kind.
const COMMON_KEYS: &[&str] = &[
    "name",
    "kind",
    "timeout",
    "retries",
    "kinds",
    "jobs",
    "min_severity",
    "repeat_after",
];

/// How often an Alertmanager sink re-pushes an open alert, unless its
/// `repeat_after` says other.
pub const ALERTMANAGER_REPEAT: Duration = Duration::from_secs(60);

/// `alert.<sink>.<key>`, the key of an error about a sink.
fn key(sink: &str, k: &str) -> String {
    format!("alert.{sink}.{k}")
}

impl Validator {
    /// The `[[alert]]` array: every valid sink, names unique.
    pub(super) fn sinks(&mut self, alert: Option<&Value>) -> Vec<SinkSpec> {
        let mut sinks = vec![];
        match alert {
            None => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let Some(t) = item.as_table() else {
                        self.err(
                            None,
                            &format!("alert #{}", i + 1),
                            "must be a table ([[alert]])".into(),
                        );
                        continue;
                    };
                    let Some(sink) = self.sink(i, t) else {
                        continue;
                    };
                    if sinks.iter().any(|s: &SinkSpec| s.name == sink.name) {
                        self.err(None, &key(&sink.name, "name"), "duplicate sink name".into());
                    } else {
                        sinks.push(sink);
                    }
                }
            }
            Some(_) => self.err(
                None,
                "alert",
                "must be an array of tables ([[alert]])".into(),
            ),
        }
        sinks
    }

    /// One `[[alert]]` block (the `index`th, 0-based), or `None` when it has
    /// an error.
    fn sink(&mut self, index: usize, t: &Table) -> Option<SinkSpec> {
        let before = self.errors.len();
        let kind_name = t.get("kind").and_then(Value::as_str).unwrap_or("");
        let name = match t.get("name").and_then(Value::as_str) {
            Some(n) => n.to_string(),
            None => format!(
                "{}#{}",
                if kind_name.is_empty() {
                    "alert"
                } else {
                    kind_name
                },
                index + 1
            ),
        };
        if let Some(why) = super::validate::name_problem(&name) {
            self.err(None, &key(&name, "name"), why.into());
        }
        self.sink_unknown_keys(&name, kind_name, t);
        let kind = match kind_name {
            "exec" => self.exec_sink(&name, t),
            "webhook" => self.webhook_sink(&name, t),
            "alertmanager" => self.alertmanager_sink(&name, t),
            "" => {
                self.err(
                    None,
                    &key(&name, "kind"),
                    "missing (exec, webhook or alertmanager)".into(),
                );
                None
            }
            other => {
                self.err(
                    None,
                    &key(&name, "kind"),
                    format!("unknown sink kind {other:?} (expected exec, webhook or alertmanager)"),
                );
                None
            }
        };
        let timeout = self
            .duration(None, &key(&name, "timeout"), t.get("timeout"), false)
            .flatten()
            .unwrap_or(Duration::from_secs(10));
        let retries = self.retries(&name, t.get("retries"));
        let kinds = self.alert_kinds(&name, t.get("kinds"));
        let jobs = self.strings(&key(&name, "jobs"), t.get("jobs"));
        let min_severity = self.min_severity(&name, t.get("min_severity"));
        let mut repeat_after = t
            .get("repeat_after")
            .and_then(|v| self.duration(None, &key(&name, "repeat_after"), Some(v), true));
        if kind_name == "alertmanager" {
            // Alertmanager resolves an alert at its endsAt: an open one must
            // be pushed again before then, so this sink always re-pushes.
            match repeat_after {
                None => repeat_after = Some(Some(ALERTMANAGER_REPEAT)),
                Some(Some(d)) if d < Duration::from_secs(1) => self.err(
                    None,
                    &key(&name, "repeat_after"),
                    "must be at least 1s".into(),
                ),
                Some(None) => self.err(
                    None,
                    &key(&name, "repeat_after"),
                    "an alertmanager sink must re-push open alerts (Alertmanager resolves an alert that is not pushed again); give an interval, default 1m".into(),
                ),
                Some(Some(_)) => {}
            }
        }
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

    fn sink_unknown_keys(&mut self, name: &str, kind_name: &str, t: &Table) {
        let mut known = COMMON_KEYS.to_vec();
        match kind_name {
            "exec" => known.push("command"),
            "webhook" => known.extend(["url", "format", "headers"]),
            "alertmanager" => known.extend(["url", "headers"]),
            _ => {}
        }
        for k in t.keys() {
            if !known.contains(&k.as_str()) {
                self.err(
                    None,
                    &key(name, k),
                    format!(
                        "unknown key (known keys for this sink: {})",
                        known.join(", ")
                    ),
                );
            }
        }
    }

    /// `kind = "exec"`: its `command` argv.
    fn exec_sink(&mut self, name: &str, t: &Table) -> Option<SinkKind> {
        match t.get("command") {
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
                            &key(name, "command"),
                            "must be a non-empty array of strings (argv)".into(),
                        );
                        None
                    }
                }
            }
            _ => {
                self.err(
                    None,
                    &key(name, "command"),
                    "missing: an argv array, e.g. [\"/usr/local/bin/page-oncall\"]".into(),
                );
                None
            }
        }
    }

    /// `kind = "alertmanager"`: Alertmanager's base `url`
    /// (`http://host:9093`) and optional `headers`.
    fn alertmanager_sink(&mut self, name: &str, t: &Table) -> Option<SinkKind> {
        let url = self.sink_url(name, t);
        let headers = self.headers(name, t.get("headers"));
        url.map(|url| SinkKind::Alertmanager { url, headers })
    }

    /// A sink's `url`: present and valid.
    fn sink_url(&mut self, name: &str, t: &Table) -> Option<String> {
        match self.string(None, &key(name, "url"), t.get("url")) {
            Some(u) if valid_url(&u) => Some(u),
            Some(u) => {
                self.err(
                    None,
                    &key(name, "url"),
                    format!("invalid URL {u:?} (expected http://host[:port]/path or https://...)"),
                );
                None
            }
            None => {
                self.err(None, &key(name, "url"), "missing".into());
                None
            }
        }
    }

    /// `kind = "webhook"`: its `url`, `format` and `headers`.
    fn webhook_sink(&mut self, name: &str, t: &Table) -> Option<SinkKind> {
        let url = self.sink_url(name, t);
        let format = match self
            .string(None, &key(name, "format"), t.get("format"))
            .as_deref()
        {
            None | Some("json") => WebhookFormat::Json,
            Some("slack") => WebhookFormat::Slack,
            Some(f) => {
                self.err(
                    None,
                    &key(name, "format"),
                    format!("unknown format {f:?} (expected json or slack)"),
                );
                WebhookFormat::Json
            }
        };
        let headers = self.headers(name, t.get("headers"));
        url.map(|url| SinkKind::Webhook {
            url,
            format,
            headers,
        })
    }

    /// A webhook's `headers`: literal values, or `env:VAR` read at delivery.
    fn headers(&mut self, name: &str, v: Option<&Value>) -> Vec<(String, HeaderValue)> {
        let mut headers = vec![];
        match v {
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
                            &key(name, &format!("headers.{k}")),
                            "must be a string".into(),
                        ),
                    }
                }
            }
            Some(_) => self.err(
                None,
                &key(name, "headers"),
                "must be a table of strings".into(),
            ),
        }
        headers
    }

    fn retries(&mut self, name: &str, v: Option<&Value>) -> u32 {
        match v {
            None => 3,
            Some(Value::Integer(n)) if (0..=20).contains(n) => *n as u32,
            Some(other) => {
                self.err(
                    None,
                    &key(name, "retries"),
                    format!("must be an integer from 0 to 20, found {other}"),
                );
                3
            }
        }
    }

    /// `kinds`: names of [`AlertKind`]s.
    fn alert_kinds(&mut self, name: &str, v: Option<&Value>) -> Option<Vec<AlertKind>> {
        let names = self.strings(&key(name, "kinds"), v)?;
        Some(
            names
                .iter()
                .filter_map(|k| match k.parse::<AlertKind>() {
                    Ok(kind) => Some(kind),
                    Err(e) => {
                        self.err(None, &key(name, "kinds"), e.to_string());
                        None
                    }
                })
                .collect(),
        )
    }

    fn min_severity(&mut self, name: &str, v: Option<&Value>) -> Severity {
        match self.string(None, &key(name, "min_severity"), v).as_deref() {
            None | Some("info") => Severity::Info,
            Some("warning") => Severity::Warning,
            Some("critical") => Severity::Critical,
            Some(o) => {
                self.err(
                    None,
                    &key(name, "min_severity"),
                    format!("unknown severity {o:?} (expected info, warning or critical)"),
                );
                Severity::Info
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{parse_errors as errors, Config};
    use super::*;
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
    fn an_alertmanager_sink_always_re_pushes() {
        let c = Config::parse(
            Path::new("c.toml"),
            "[[alert]]\nname = \"am\"\nkind = \"alertmanager\"\nurl = \"http://127.0.0.1:9093\"\n\
             [[alert]]\nname = \"am2\"\nkind = \"alertmanager\"\nurl = \"http://am:9093/\"\nrepeat_after = \"30s\"\n",
        )
        .unwrap();
        assert_eq!(
            c.sinks[0].kind,
            SinkKind::Alertmanager {
                url: "http://127.0.0.1:9093".into(),
                headers: vec![]
            }
        );
        assert_eq!(c.sinks[0].repeat_after, Some(Some(ALERTMANAGER_REPEAT)));
        assert_eq!(c.sinks[1].repeat_after, Some(Some(Duration::from_secs(30))));
        let errs = errors(
            "[[alert]]\nname = \"a\"\nkind = \"alertmanager\"\nrepeat_after = \"none\"\nformat = \"slack\"\n",
        );
        for w in [
            "key \"alert.a.url\": missing",
            "key \"alert.a.repeat_after\": an alertmanager sink must re-push",
            "key \"alert.a.format\": unknown key",
        ] {
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
}
