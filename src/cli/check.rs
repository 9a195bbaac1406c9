//! `cronwarden check`: load and validate a config and its drop-ins without
//! running it, then lint it. Exit 0 when valid (warnings included), 2 when not; errors and
//! warnings go to stderr, the jobs to stdout.

use std::{io::Write, path::Path, process::ExitCode};

use cronwarden_shared::config::Config;
use jiff::Timestamp;

use super::{host_limits, lint, render::check as view};

pub(crate) fn check(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            if json {
                writeln!(out, "{}", view::check_errors_json(path, &errors))?;
            }
            eprintln!("{errors}");
            eprintln!(
                "{}: {} error(s); the config is not valid",
                path.display(),
                errors.0.len()
            );
            return Ok(ExitCode::from(2));
        }
    };
    let now = Timestamp::now();
    let mut warnings = lint::lint(&config, now);
    let caps = host_limits::probe(&config);
    // /proc/self belongs to the effective user: whether we run as root.
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    warnings.extend(host_limits::judge(&config, &caps, root));
    if json {
        writeln!(out, "{}", view::check_json(&config, &warnings, now))?;
        return Ok(ExitCode::SUCCESS);
    }
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let counted = match warnings.len() {
        0 => String::new(),
        n => format!(", {n} warning(s)"),
    };
    writeln!(
        out,
        "{}: ok, {} job(s){counted}",
        path.display(),
        config.jobs.len()
    )?;
    for d in &config.dropins {
        let jobs = config.job_files.values().filter(|f| *f == d).count();
        writeln!(out, "  drop-in {}: {jobs} job(s)", d.display())?;
    }
    for job in &config.jobs {
        view::check_job(&mut out, job, now, view::FIRES)?;
    }
    writeln!(out, "{}", host_limits::summary(&caps))?;
    Ok(ExitCode::SUCCESS)
}
