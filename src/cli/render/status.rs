//! `cronwarden status` and `cronwarden jobs`: the supervisor, the worker,
//! the jobs table and the open alerts. `jobs` prints the same table as
//! `status` through [`jobs_table`], so the two can never disagree on what a
//! job's row says.

use std::{borrow::Borrow, io::Write};

use cronwarden_shared::status::{JobStatus, StatusReport};
use jiff::Timestamp;

use super::{ago, colored, elapsed, relative, table};

/// `cronwarden status`.
pub(crate) fn status(
    out: &mut dyn Write,
    r: &StatusReport,
    now: Timestamp,
    color: bool,
) -> std::io::Result<()> {
    writeln!(out, "state: {}", colored(r.state.as_str(), color))?;
    for reason in &r.reasons {
        writeln!(out, "  - {reason}")?;
    }
    writeln!(
        out,
        "supervisor: pid {}, version {}, up since {} ({})",
        r.supervisor.pid,
        r.supervisor.version,
        // Whole seconds: nanoseconds are noise to a person.
        r.supervisor
            .started_at
            .round(jiff::Unit::Second)
            .unwrap_or(r.supervisor.started_at),
        relative(Some(r.supervisor.started_at), now)
    )?;
    if let Some(what) = &r.supervisor.binary_replaced {
        writeln!(out, "  binary: {what}")?;
    }
    match r.worker.pid {
        Some(pid) => writeln!(
            out,
            "worker: pid {pid}, restarts {}, heartbeat {}, last good turn {}",
            r.worker.restarts,
            ago(r.worker.heartbeat_age_ms),
            ago(r.worker.last_good_turn_age_ms)
        )?,
        None => writeln!(out, "worker: not running, restarts {}", r.worker.restarts)?,
    }
    jobs_table(out, &r.jobs, now, color)?;
    peers_table(out, r, now, color)?;
    if !r.alerts.is_empty() {
        writeln!(out)?;
        let rows: Vec<Vec<String>> = r
            .alerts
            .iter()
            .map(|a| {
                vec![
                    a.severity.as_str().to_string(),
                    a.kind.to_string(),
                    a.job.clone().unwrap_or_else(|| "-".into()),
                    relative(Some(a.opened_at), now),
                    match &a.owner {
                        Some(h) => format!("{} [owner {h}]", a.summary),
                        None => a.summary.clone(),
                    },
                ]
            })
            .collect();
        table(
            out,
            &["SEVERITY", "ALERT", "JOB", "OPENED", "SUMMARY"],
            &rows,
            &[0],
            color,
        )?;
    }
    Ok(())
}

/// The hosts of the shared ledger (store = postgres), when there are.
fn peers_table(
    out: &mut dyn Write,
    r: &StatusReport,
    now: Timestamp,
    color: bool,
) -> std::io::Result<()> {
    if r.peers.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    let rows: Vec<Vec<String>> = r
        .peers
        .iter()
        .map(|p| {
            vec![
                p.host.clone(),
                if p.alive { "alive" } else { "silent" }.to_string(),
                relative(Some(p.last_seen), now),
                p.claimed_last_hour.to_string(),
                format!("{} ms", p.skew_ms),
            ]
        })
        .collect();
    table(
        out,
        &["HOST", "STATE", "LAST SEEN", "FIRES (1H)", "SKEW"],
        &rows,
        &[],
        color,
    )
}

/// `cronwarden jobs`: the table alone, or "no jobs".
pub(crate) fn jobs(
    out: &mut dyn Write,
    jobs: &[impl Borrow<JobStatus>],
    now: Timestamp,
    color: bool,
) -> std::io::Result<u8> {
    if jobs.is_empty() {
        writeln!(out, "no jobs")?;
    } else {
        jobs_table(out, jobs, now, color)?;
    }
    Ok(0)
}

/// One row per job: its state, next fire (none while paused: it will not
/// fire) and how its last run ended, or how long the current run has been
/// going.
fn jobs_table(
    out: &mut dyn Write,
    jobs: &[impl Borrow<JobStatus>],
    now: Timestamp,
    color: bool,
) -> std::io::Result<()> {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(Borrow::borrow)
        .map(|j: &JobStatus| {
            let oldest_running = j.running.iter().map(|r| r.started_at).min();
            let (outcome, ended) = match (&j.last_run, oldest_running) {
                (_, Some(started)) => (
                    format!("running {}", elapsed(Some(started), now)),
                    "-".into(),
                ),
                (Some(l), None) => (
                    l.outcome.as_str().to_string(),
                    relative(l.finished_at.or(l.started_at), now),
                ),
                (None, None) => ("-".into(), "-".into()),
            };
            let next = if j.paused {
                "-".into()
            } else {
                relative(j.next_fire_at, now)
            };
            vec![
                j.name.clone(),
                j.state.as_str().into(),
                j.schedule.clone(),
                next,
                outcome,
                ended,
            ]
        })
        .collect();
    table(
        out,
        &["JOB", "STATE", "SCHEDULE", "NEXT", "LAST RUN", "ENDED"],
        &rows,
        &[1, 4],
        color,
    )
}

#[cfg(test)]
mod tests {
    use cronwarden_shared::status::{
        JobState, Outcome, RunRecord, State, Streaks, SupervisorInfo, Trigger, WorkerInfo,
    };

    use super::*;
    use std::sync::Arc;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn report() -> StatusReport {
        let mut last = RunRecord::new(
            7,
            "backup",
            vec![at("2026-12-01T11:00:00Z")],
            Trigger::Schedule,
            Outcome::Failed,
        );
        last.started_at = Some(at("2026-12-01T11:00:00Z"));
        last.finished_at = Some(at("2026-12-01T11:05:00Z"));
        StatusReport {
            state: State::Degraded,
            reasons: vec!["job backup is failing".into()],
            supervisor: SupervisorInfo {
                pid: 41,
                version: "0.1.0".into(),
                started_at: at("2026-12-01T09:59:59.678220599Z"),
                binary_replaced: None,
            },
            worker: WorkerInfo {
                pid: None,
                started_at: None,
                restarts: 2,
                heartbeat_age_ms: None,
                last_good_turn_age_ms: None,
                heartbeat_seq: None,
                malformed_events: 0,
            },
            jobs: vec![Arc::new(JobStatus {
                name: "backup".into(),
                schedule: "0 * * * *".into(),
                timezone: "UTC".into(),
                state: JobState::Failing,
                paused: false,
                next_fire_at: Some(at("2026-12-01T13:00:00Z")),
                last_run: Some(Arc::new(last)),
                streaks: Streaks::default(),
                running: vec![],
            })],
            alerts: vec![],
            sinks: vec![],
            clock_jumps: vec![],
            peers: vec![],
        }
    }

    /// With a shared ledger the hosts are listed: name, alive or not,
    /// last seen, fires claimed in the last hour; a single host lists none.
    #[test]
    fn the_peers_of_a_shared_ledger_are_listed() {
        let now = at("2026-12-01T12:00:00Z");
        let mut r = report();
        let mut plain = vec![];
        status(&mut plain, &r, now, false).unwrap();
        assert!(!String::from_utf8(plain).unwrap().contains("HOST"));
        r.peers = vec![
            cronwarden_shared::cluster::Peer {
                host: "db-a".into(),
                last_seen: at("2026-12-01T11:59:58Z"),
                skew_ms: 4,
                claimed_last_hour: 57,
                alive: true,
            },
            cronwarden_shared::cluster::Peer {
                host: "db-b".into(),
                last_seen: at("2026-12-01T11:00:00Z"),
                skew_ms: -3100,
                claimed_last_hour: 0,
                alive: false,
            },
        ];
        let mut out = vec![];
        status(&mut out, &r, now, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        let a = text.lines().find(|l| l.starts_with("db-a")).expect(&text);
        assert!(
            a.contains("alive") && a.contains(" 57 ") && a.contains("4 ms"),
            "{a}"
        );
        let b = text.lines().find(|l| l.starts_with("db-b")).expect(&text);
        assert!(b.contains("silent") && b.contains("-3100 ms"), "{b}");
        assert!(
            b.contains(&relative(Some(at("2026-12-01T11:00:00Z")), now)),
            "{b}"
        );
    }

    #[test]
    fn a_paused_job_has_no_next_fire_and_a_running_one_its_elapsed_time() {
        let now = at("2026-12-01T12:00:00Z");
        let mut r = report();
        let first = Arc::make_mut(&mut r.jobs[0]);
        first.paused = true;
        first.state = JobState::Paused;
        let mut run = first.clone();
        run.name = "sync".into();
        run.paused = false;
        run.state = JobState::Running;
        run.running = vec![serde_json::from_value(serde_json::json!({
            "run_id": 8, "pid": 99, "started_at": "2026-12-01T11:58:30Z", "scheduled_at": null
        }))
        .unwrap()];
        r.jobs.push(Arc::new(run));
        let mut out = vec![];
        jobs(&mut out, &r.jobs, now, false).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "JOB     STATE    SCHEDULE   NEXT   LAST RUN        ENDED\n\
             backup  paused   0 * * * *  -      failed          55m ago\n\
             sync    running  0 * * * *  in 1h  running 1m 30s  -\n"
        );
    }

    /// A clock jump is news, not trouble: its info alert is listed with
    /// its size, direction and when, under an `ok` state with no reason.
    #[test]
    fn a_clock_jump_is_listed_as_an_info_alert_under_an_ok_state() {
        let now = at("2026-12-01T12:00:00Z");
        let mut r = report();
        r.state = State::Ok;
        r.reasons = vec![];
        r.alerts = vec![cronwarden_shared::status::Alert {
            kind: cronwarden_shared::alert_kind::AlertKind::ClockJumped,
            job: None,
            severity: cronwarden_shared::status::Severity::Info,
            opened_at: at("2026-12-01T11:58:00Z"),
            resolved_at: None,
            summary:
                "the wall clock was stepped backward by 10m 0s (noticed at 2026-12-01T11:58:00Z)"
                    .into(),
            owner: None,
        }];
        let mut out = vec![];
        status(&mut out, &r, now, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("state: ok\nsupervisor:"), "{text}");
        let row = text
            .lines()
            .find(|l| l.contains("clock_jumped"))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(row.starts_with("info"), "{row}");
        assert!(row.contains("2m ago"), "{row}");
        assert!(
            row.ends_with("stepped backward by 10m 0s (noticed at 2026-12-01T11:58:00Z)"),
            "{row}"
        );
    }

    #[test]
    fn status_and_jobs_print_the_same_jobs_table() {
        let now = at("2026-12-01T12:00:00Z");
        let r = report();
        let (mut status_out, mut jobs_out) = (vec![], vec![]);
        status(&mut status_out, &r, now, false).unwrap();
        jobs(&mut jobs_out, &r.jobs, now, false).unwrap();
        let table = String::from_utf8(jobs_out).unwrap();
        assert_eq!(
            table,
            "JOB     STATE    SCHEDULE   NEXT   LAST RUN  ENDED\n\
             backup  failing  0 * * * *  in 1h  failed    55m ago\n"
        );
        assert_eq!(
            String::from_utf8(status_out).unwrap(),
            format!(
                "state: degraded\n  - job backup is failing\n\
                 supervisor: pid 41, version 0.1.0, up since 2026-12-01T10:00:00Z (2h ago)\n\
                 worker: not running, restarts 2\n{table}"
            )
        );
    }
}
