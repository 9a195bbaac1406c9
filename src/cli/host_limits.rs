//! What of a config's containment this host can enforce, for `check`: a
//! cgroup per run (and which controllers it has) or the process-group
//! fallback, and a warning with the reason for each limit that would not
//! bind. The probe reads; [`judge`] is pure.

use cronwarden_shared::config::{Config, ConfigError, JobSpec};

/// What the host offers runs: the controllers of a writable cgroup2
/// hierarchy, or why runs get no cgroup.
pub(crate) type HostCaps = Result<Vec<String>, String>;

/// Probes this host (read-only) as a supervisor started here would see it.
pub(crate) fn probe(config: &Config) -> HostCaps {
    cronwarden_worker::probe_cgroups(config.cgroups)
}

/// One line saying how runs are contained here and which limits bind.
pub(crate) fn summary(caps: &HostCaps) -> String {
    match caps {
        Ok(c) => {
            let mut limits = vec!["limit_nproc (with user)"];
            for (controller, key) in CGROUP_LIMITS {
                if c.iter().any(|x| x == controller) {
                    limits.push(key);
                }
            }
            format!(
                "containment: a cgroup per run; enforceable limits: {}",
                limits.join(", ")
            )
        }
        Err(why) => format!(
            "containment: process groups only ({why}); enforceable limits: limit_nproc (with user)"
        ),
    }
}

/// (controller, job key) of the limits that need a cgroup controller.
const CGROUP_LIMITS: [(&str, &str); 3] = [
    ("memory", "memory_max"),
    ("pids", "pids_max"),
    ("cpu", "cpu_weight"),
];

/// A warning for each job limit this host cannot enforce, with why.
pub(crate) fn judge(config: &Config, caps: &HostCaps, root: bool) -> Vec<ConfigError> {
    let mut out = vec![];
    for job in &config.jobs {
        for (controller, key) in CGROUP_LIMITS {
            if !set(job, key) {
                continue;
            }
            let why = match caps {
                Err(why) => Some(format!("runs get no cgroup here: {why}")),
                Ok(c) if !c.iter().any(|x| x == controller) => Some(format!(
                    "the {controller} controller is not delegated to cronwarden's cgroup"
                )),
                Ok(_) => None,
            };
            if let Some(why) = why {
                out.push(warning(
                    config,
                    job,
                    key,
                    format!("not enforced on this host: {why}"),
                ));
            }
        }
        if job.limits.nproc.is_some() && job.user.is_none() && root {
            out.push(warning(
                config,
                job,
                "limit_nproc",
                "not enforced: RLIMIT_NPROC does not bind root; set `user`".into(),
            ));
        }
    }
    out
}

fn set(job: &JobSpec, key: &str) -> bool {
    let l = &job.limits;
    match key {
        "memory_max" => l.memory_max.is_some(),
        "pids_max" => l.pids_max.is_some(),
        _ => l.cpu_weight.is_some(),
    }
}

fn warning(config: &Config, job: &JobSpec, key: &str, message: String) -> ConfigError {
    ConfigError {
        file: config.path.clone(),
        job: Some(job.name.clone()),
        key: key.into(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(extra: &str) -> Config {
        let text =
            format!("[[job]]\nname = \"j\"\nschedule = \"@daily\"\nshell = \"true\"\n{extra}\n");
        Config::parse(Path::new("/etc/cw.toml"), &text).unwrap()
    }

    fn keys(w: &[ConfigError]) -> Vec<String> {
        w.iter().map(|e| e.key.clone()).collect()
    }

    #[test]
    fn cgroup_limits_warn_without_their_controller() {
        let c = config("memory_max = \"64M\"\npids_max = 10\ncpu_weight = 50");
        let none: HostCaps = Ok(vec![]);
        assert_eq!(
            keys(&judge(&c, &none, true)),
            ["memory_max", "pids_max", "cpu_weight"]
        );
        let some: HostCaps = Ok(vec!["memory".into(), "cpu".into()]);
        assert_eq!(keys(&judge(&c, &some, true)), ["pids_max"]);
        let off: HostCaps = Err("cgroups are turned off".into());
        let w = judge(&c, &off, true);
        assert!(w[0].message.contains("turned off"), "{}", w[0].message);
    }

    #[test]
    fn limit_nproc_warns_only_for_root_without_user() {
        let c = config("limit_nproc = 20");
        assert_eq!(keys(&judge(&c, &Ok(vec![]), true)), ["limit_nproc"]);
        assert!(judge(&c, &Ok(vec![]), false).is_empty());
        let c = config("limit_nproc = 20\nuser = \"root\"");
        assert!(judge(&c, &Ok(vec![]), true).is_empty());
    }

    #[test]
    fn the_summary_names_what_binds() {
        assert!(summary(&Ok(vec!["pids".into()])).contains("pids_max"));
        assert!(summary(&Ok(vec![])).contains("a cgroup per run"));
        assert!(summary(&Err("off".into())).contains("process groups only (off)"));
    }
}
