//! `cronwarden check`'s lints: configs that are valid but will surprise.
//!
//! - a fixed wall time (hour field not starting with `*`) that falls into
//!   its zone's DST gap (it fires at the end of the gap instead) or fold (it
//!   fires once, in the first pass) within the next year;
//! - `overlap = "skip"` with a `timeout` (plus `kill_grace`) not shorter
//!   than the schedule's shortest interval between fires: one run that
//!   takes its full timeout makes the next fires skip, a streak by
//!   construction;
//! - many jobs ([`PILE_UP`] or more) firing at the same instant;
//! - a `jitter` not shorter than the schedule's shortest interval between
//!   fires: a fire could start after the next one is due.
//!
//! Lints are warnings: each is a [`ConfigError`] (file, job, key, message)
//! that never makes a config invalid. They look ahead from a given instant
//! and bound their work (fires per job), so `check` stays fast on a
//! thousand-job config; a lint may miss a rare case, never invent one.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use cronwarden_shared::config::{Config, ConfigError, JobSpec, Overlap};
use cronwarden_shared::timefmt::{human_duration, rfc3339_in};

/// This many jobs on one instant is a pile-up worth a warning.
pub(crate) const PILE_UP: usize = 10;

/// How far ahead the DST lint looks.
const YEAR: SignedDuration = SignedDuration::from_hours(366 * 24);
/// How far ahead the pile-up lint looks: a weekly pile-up shows.
const PILE_UP_WINDOW: SignedDuration = SignedDuration::from_hours(8 * 24);
/// Total fires computed by the period and pile-up lints, shared by the jobs.
const FIRE_BUDGET: usize = 200_000;

/// Every warning for `config`, looking ahead from `now`.
pub(crate) fn lint(config: &Config, now: Timestamp) -> Vec<ConfigError> {
    let per_job = (FIRE_BUDGET / config.jobs.len().max(1)).clamp(50, 1000);
    let mut out = vec![];
    for job in &config.jobs {
        dst(config, job, now, &mut out);
        skip_streak(config, job, now, per_job, &mut out);
        jitter_span(config, job, now, per_job, &mut out);
    }
    pile_up(config, now, per_job, &mut out);
    out
}

fn warning(config: &Config, job: &JobSpec, key: &str, message: String) -> ConfigError {
    ConfigError {
        file: config.file_of(&job.name).to_path_buf(),
        job: Some(job.name.clone()),
        key: key.into(),
        message,
    }
}

fn dst(config: &Config, job: &JobSpec, now: Timestamp, out: &mut Vec<ConfigError>) {
    let s = &job.schedule;
    if s.every().is_some() || s.hour_star() {
        return;
    }
    let tz = s.timezone();
    let Ok(end) = now.checked_add(YEAR) else {
        return;
    };
    let (mut gap_seen, mut fold_seen) = (false, false);
    for tr in tz.following(now).take_while(|tr| tr.timestamp() < end) {
        let at = tr.timestamp();
        let Ok(just_before) = at.checked_sub(SignedDuration::from_nanos(1)) else {
            continue;
        };
        let (before, after) = (tz.to_offset(just_before), tz.to_offset(at));
        let (from, to) = (before.to_datetime(at), after.to_datetime(at));
        let hm = |w: jiff::civil::DateTime| w.strftime("%H:%M").to_string();
        if after > before && !gap_seen {
            if let Some(w) = s.first_wall_match(from, to) {
                gap_seen = true;
                out.push(warning(
                    config,
                    job,
                    "schedule",
                    format!(
                        "{} on {} does not exist in {} (clocks jump from {} to {}): \
                         that day the job fires at {} instead",
                        w.strftime("%H:%M:%S"),
                        w.date(),
                        job.timezone,
                        hm(from),
                        hm(to),
                        hm(to)
                    ),
                ));
            }
        } else if after < before && !fold_seen {
            if let Some(w) = s.first_wall_match(to, from) {
                fold_seen = true;
                out.push(warning(
                    config,
                    job,
                    "schedule",
                    format!(
                        "{} on {} happens twice in {} (clocks fall back from {} to {}): \
                         the job fires once, in the first pass ({})",
                        w.strftime("%H:%M:%S"),
                        w.date(),
                        job.timezone,
                        hm(from),
                        hm(to),
                        before
                            .to_timestamp(w)
                            .map(|t| rfc3339_in(t, tz))
                            .unwrap_or_default()
                    ),
                ));
            }
        }
    }
}

/// The shortest interval between fires (over `limit` fires at most).
fn shortest_period(job: &JobSpec, now: Timestamp, limit: usize) -> Option<Duration> {
    if let Some(d) = job.schedule.every() {
        return Some(d);
    }
    let end = now.checked_add(YEAR).ok()?;
    let mut prev = job.schedule.next_after(now, None)?;
    let mut best: Option<Duration> = None;
    for _ in 0..limit {
        let Some(next) = job.schedule.next_after(prev, None).filter(|t| *t < end) else {
            break;
        };
        let gap = Duration::try_from(next.duration_since(prev)).ok()?;
        best = Some(best.map_or(gap, |b| b.min(gap)));
        prev = next;
    }
    best
}

fn skip_streak(
    config: &Config,
    job: &JobSpec,
    now: Timestamp,
    limit: usize,
    out: &mut Vec<ConfigError>,
) {
    if job.overlap != Overlap::Skip {
        return;
    }
    let Some(period) = shortest_period(job, now, limit) else {
        return;
    };
    // The busy flag is released at the latest timeout + kill_grace after
    // the start; a fire due before that is skipped.
    let timeout = match job.timeout {
        Some(t) if t + job.kill_grace < period => return,
        Some(t) => human_duration(t),
        None => "none".into(),
    };
    out.push(warning(
        config,
        job,
        "timeout",
        format!(
            "timeout ({timeout}) plus kill_grace ({}) is not shorter than the shortest interval \
             between fires ({}) and overlap is \"skip\": a run that takes its full timeout skips \
             the next fire(s); lower the timeout or choose another overlap policy",
            human_duration(job.kill_grace),
            human_duration(period)
        ),
    ));
}

fn jitter_span(
    config: &Config,
    job: &JobSpec,
    now: Timestamp,
    limit: usize,
    out: &mut Vec<ConfigError>,
) {
    if job.jitter.is_zero() {
        return;
    }
    let Some(period) = shortest_period(job, now, limit) else {
        return;
    };
    if job.jitter < period {
        return;
    }
    out.push(warning(
        config,
        job,
        "jitter",
        format!(
            "jitter ({}) is not shorter than the shortest interval between fires ({}): a fire \
             may start after the next one is due; lower the jitter",
            human_duration(job.jitter),
            human_duration(period)
        ),
    ));
}

fn pile_up(config: &Config, now: Timestamp, limit: usize, out: &mut Vec<ConfigError>) {
    if config.jobs.len() < PILE_UP {
        return;
    }
    let Ok(end) = now.checked_add(PILE_UP_WINDOW) else {
        return;
    };
    // `@every` phases depend on when the worker starts: no fixed instant.
    let mut at: BTreeMap<Timestamp, Vec<usize>> = BTreeMap::new();
    for (i, job) in config.jobs.iter().enumerate() {
        if job.schedule.every().is_some() {
            continue;
        }
        let mut t = now;
        for _ in 0..limit {
            match job.schedule.next_after(t, None).filter(|n| *n < end) {
                Some(n) => {
                    at.entry(n).or_default().push(i);
                    t = n;
                }
                None => break,
            }
        }
    }
    // One warning per set of jobs that meet, at its first instant.
    // A set already reported, or part of one (a job whose fires ran out of
    // budget earlier leaves its companions meeting alone later), is not news.
    let mut reported: Vec<BTreeSet<usize>> = vec![];
    for (t, jobs) in at {
        let set: BTreeSet<usize> = jobs.iter().copied().collect();
        if jobs.len() < PILE_UP || reported.iter().any(|r| set.is_subset(r)) {
            continue;
        }
        reported.push(set);
        let first = &config.jobs[jobs[0]];
        let names: Vec<&str> = jobs
            .iter()
            .take(5)
            .map(|i| config.jobs[*i].name.as_str())
            .collect();
        let more = if jobs.len() > 5 { ", …" } else { "" };
        out.push(warning(
            config,
            first,
            "schedule",
            format!(
                "{} jobs fire at the same instant, first at {} ({}{more}): \
                 spread their minutes or seconds so they do not start at once",
                jobs.len(),
                rfc3339_in(t, first.schedule.timezone()),
                names.join(", ")
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn warnings(text: &str, now: &str) -> Vec<String> {
        let config = Config::parse(Path::new("cw.toml"), text).unwrap();
        lint(&config, now.parse().unwrap())
            .iter()
            .map(|w| w.to_string())
            .collect()
    }

    fn job(name: &str, schedule: &str, extra: &str) -> String {
        format!(
            "[[job]]\nname = \"{name}\"\nschedule = \"{schedule}\"\nshell = \"true\"\n{extra}\n"
        )
    }

    const NOW: &str = "2026-12-01T00:00:00Z";

    #[test]
    fn a_jitter_as_long_as_the_interval_is_a_warning() {
        let w = warnings(
            &job("j", "*/5 * * * *", "jitter = \"5m\"\ntimeout = \"1m\""),
            NOW,
        );
        assert_eq!(w.len(), 1, "{w:#?}");
        assert!(w[0].contains("jitter") && w[0].contains("5m"), "{}", w[0]);
        let w = warnings(
            &job("j", "*/5 * * * *", "jitter = \"4m\"\ntimeout = \"1m\""),
            NOW,
        );
        assert!(w.is_empty(), "{w:#?}");
    }

    #[test]
    fn dst_gap_and_fold_of_a_fixed_time() {
        let w = warnings(
            &job(
                "gap",
                "30 2 * * *",
                "timezone = \"Europe/Berlin\"\ntimeout = \"1h\"",
            ),
            NOW,
        );
        assert_eq!(w.len(), 2, "{w:#?}");
        assert!(
            w[0].starts_with("cw.toml: job \"gap\": key \"schedule\": 02:30:00 on 2027-03-28 does not exist in Europe/Berlin (clocks jump from 02:00 to 03:00)"),
            "{w:#?}"
        );
        assert!(
            w[1].contains("02:30:00 on 2027-10-31 happens twice in Europe/Berlin (clocks fall back from 03:00 to 02:00)"),
            "{w:#?}"
        );
        // New York: 02:15 is in the March gap only; 01:15 in the November fold only.
        let w = warnings(
            &job("ny", "15 2 * * *", "timezone = \"America/New_York\""),
            NOW,
        );
        assert_eq!(w.len(), 1, "{w:#?}");
        assert!(w[0].contains("does not exist"), "{w:#?}");
        let w = warnings(
            &job("ny", "15 1 * * *", "timezone = \"America/New_York\""),
            NOW,
        );
        assert_eq!(w.len(), 1, "{w:#?}");
        assert!(w[0].contains("happens twice"), "{w:#?}");
    }

    #[test]
    fn no_dst_warning_without_the_problem() {
        for (expr, tz) in [
            ("30 3 * * *", "Europe/Berlin"),   // after both transitions
            ("30 2 * * *", "UTC"),             // no DST
            ("30 2 * * *", "Asia/Tokyo"),      // no DST
            ("30 * * * *", "Europe/Berlin"),   // hour field *: real-time cadence
            ("30 2 * 5-9 *", "Europe/Berlin"), // never on a transition day
            ("@every 1h", "Europe/Berlin"),
        ] {
            let extra = format!("timezone = \"{tz}\"\ntimeout = \"10m\"");
            let w = warnings(&job("j", expr, &extra), NOW);
            assert!(w.is_empty(), "{expr} {tz}: {w:#?}");
        }
    }

    #[test]
    fn timeout_not_below_the_period_with_skip() {
        for (expr, extra) in [
            ("*/5 * * * *", "timeout = \"5m\""),
            ("*/5 * * * *", ""), // the default timeout, 1h
            ("@every 90s", "timeout = \"none\""),
            ("0 0,23 * * *", "timeout = \"2h\""), // 23:00 -> 00:00 is 1h
        ] {
            let w = warnings(&job("j", expr, extra), NOW);
            assert_eq!(w.len(), 1, "{expr} {extra}: {w:#?}");
            assert!(
                w[0].starts_with("cw.toml: job \"j\": key \"timeout\": timeout ("),
                "{w:#?}"
            );
        }
        for (expr, extra) in [
            ("*/5 * * * *", "timeout = \"4m\""),
            ("*/5 * * * *", "timeout = \"1h\"\noverlap = \"queue\""),
            ("0 3 * * *", "timeout = \"1h\""),
            ("@every 90s", "timeout = \"1m\""),
        ] {
            let w = warnings(&job("j", expr, extra), NOW);
            assert!(w.is_empty(), "{expr} {extra}: {w:#?}");
        }
    }

    #[test]
    fn many_jobs_on_one_instant() {
        let mut text = String::new();
        for i in 0..PILE_UP {
            text += &job(&format!("j{i}"), "0 3 * * *", "");
        }
        let w = warnings(&text, NOW);
        assert_eq!(w.len(), 1, "{w:#?}");
        assert!(
            w[0].starts_with("cw.toml: job \"j0\": key \"schedule\": 10 jobs fire at the same instant, first at 2026-12-01T03:00:00+00:00 (j0, j1, j2, j3, j4, …)"),
            "{w:#?}"
        );
        // One fewer, or the same count spread over minutes: no warning.
        let mut few = String::new();
        let mut spread = String::new();
        for i in 0..PILE_UP {
            if i > 0 {
                few += &job(&format!("j{i}"), "0 3 * * *", "");
            }
            spread += &job(&format!("j{i}"), &format!("{i} 3 * * *"), "");
        }
        assert!(warnings(&few, NOW).is_empty());
        assert!(warnings(&spread, NOW).is_empty());
    }
}
