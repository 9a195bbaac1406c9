//! `cronwarden status`: the supervisor's own verdict, as an exit code a
//! monitoring check can use: 0 ok, 1 degraded, 2 stalled or down, 3
//! unknown. "Unknown" says why (no socket, no answer, a bad answer) and, if
//! the lock is held by a process that does not answer, names its pid, so a
//! wedged supervisor is told apart from a stopped one. An answer from
//! another instance (another state directory behind the same socket path)
//! is unknown too, and says so.
//!
//! It reads the summary (`GET /v1/status`) and then the jobs by pages
//! ([`super::jobs`]), and shows them together as one report.
//!
//! `status --probe` is the liveness probe: its verdict is cronwarden's own
//! health only, from the summary alone (`--json` prints the summary): the worker runs, and no alert of the
//! worker's own health is open (stalled, failing, crash loop, down,
//! misarmed timer). A failing or late job leaves it at 0, so a Kubernetes
//! liveness probe does not restart a healthy scheduler because of a
//! broken job; restarting would not fix the job and would kill its runs.

use std::{io::Write, path::PathBuf, process::ExitCode, time::Duration};

use cronwarden_shared::{
    alert_kind::AlertKind,
    status::{Alert, StatusReport, StatusSummary},
};
use cronwarden_supervisor::lock;
use jiff::Timestamp;

use super::{args::Conn, client, discover, jobs, render};

/// The exit code when the state cannot be known.
const UNKNOWN: u8 = 3;
/// `--probe`'s exit code when cronwarden itself is not healthy.
const NOT_LIVE: u8 = 2;

/// The alert kinds that are about cronwarden's own health: any of them
/// open fails the probe. Everything else (a job's, a sink's, the store's,
/// a refused reload) is for monitoring, not for a restart.
const NOT_LIVE_KINDS: &[AlertKind] = &[
    AlertKind::WorkerStalled,
    AlertKind::WorkerFailing,
    AlertKind::WorkerCrashLoop,
    AlertKind::WorkerDown,
    AlertKind::WorkerMisarmed,
];

/// The probe's verdict from the worker's pid and heartbeat age and the
/// open alerts: `Ok(what is fine)` or `Err(what is not)`.
pub(crate) fn probe(
    worker_pid: Option<u32>,
    heartbeat_age_ms: Option<u64>,
    alerts: &[Alert],
) -> Result<String, Vec<String>> {
    let mut not = vec![];
    if worker_pid.is_none() {
        not.push("the worker is not running".to_string());
    }
    for a in alerts.iter().filter(|a| NOT_LIVE_KINDS.contains(&a.kind)) {
        not.push(format!("{}: {}", a.kind, a.summary));
    }
    match worker_pid {
        Some(pid) if not.is_empty() => Ok(format!(
            "live: worker pid {pid}, heartbeat {}",
            heartbeat_age_ms
                .map(|ms| format!("{ms} ms ago"))
                .unwrap_or_else(|| "not yet".into())
        )),
        _ => Err(not),
    }
}

/// How long the supervisor has to answer: a healthy one answers in
/// milliseconds, and a monitoring check must not hang.
const LIMIT: Duration = Duration::from_secs(5);

pub(crate) fn status(conn: &Conn, as_probe: bool) -> anyhow::Result<ExitCode> {
    let (socket, lock_path) = match discover::socket(conn.socket.as_deref(), conn.config.as_deref())
    {
        Ok(t) => (t.socket, t.lock),
        Err(e) => {
            eprintln!("cronwarden: status unknown: cannot find the socket: {e}");
            return Ok(ExitCode::from(UNKNOWN));
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let state_dir = lock_path.as_deref().and_then(|l| l.parent());
    let get = client::request_checked(&socket, state_dir, hyper::Method::GET, "/v1/status", LIMIT);
    let (code, body) = match rt.block_on(get) {
        Ok(r) => r,
        Err(e @ client::ClientError::OtherInstance { .. }) => {
            eprintln!("cronwarden: status unknown: {e}");
            return Ok(ExitCode::from(UNKNOWN));
        }
        Err(e) => {
            eprintln!("cronwarden: status unknown: {e}{}", holder(lock_path));
            return Ok(ExitCode::from(UNKNOWN));
        }
    };
    // The summary; a supervisor from before the summary sends the whole report.
    let summary = match serde_json::from_slice::<StatusReport>(&body) {
        Ok(full) if code == 200 => Reply::Full(full),
        _ => match serde_json::from_slice::<StatusSummary>(&body) {
            Ok(s) if code == 200 => Reply::Summary(s),
            _ => {
                eprintln!(
                    "cronwarden: status unknown: HTTP {code} from {}: {}",
                    socket.display(),
                    String::from_utf8_lossy(&body)
                );
                return Ok(ExitCode::from(UNKNOWN));
            }
        },
    };
    let mut out = std::io::stdout().lock();
    if as_probe {
        if conn.json {
            out.write_all(&body)?;
        }
        let (pid, heartbeat, alerts) = match &summary {
            Reply::Full(r) => (r.worker.pid, r.worker.heartbeat_age_ms, &r.alerts),
            Reply::Summary(s) => (s.worker.pid, s.worker.heartbeat_age_ms, &s.alerts),
        };
        return Ok(match probe(pid, heartbeat, alerts) {
            Ok(fine) => {
                if !conn.json {
                    writeln!(out, "{fine}")?;
                }
                ExitCode::SUCCESS
            }
            Err(reasons) => {
                if !conn.json {
                    writeln!(out, "not live: {}", reasons.join("; "))?;
                }
                ExitCode::from(NOT_LIVE)
            }
        });
    }
    // The jobs table, read by pages: the whole report, as people and
    // `--json` have always seen it.
    let report = match summary {
        Reply::Full(r) => r,
        Reply::Summary(s) => match rt.block_on(jobs::all(&socket, state_dir, LIMIT)) {
            Ok(jobs) => s.with_jobs(jobs.into_iter().map(std::sync::Arc::new).collect()),
            Err(e) => {
                eprintln!("cronwarden: status unknown: reading the jobs: {e}");
                return Ok(ExitCode::from(UNKNOWN));
            }
        },
    };
    if conn.json {
        let mut body = serde_json::to_vec_pretty(&report)?;
        body.push(b'\n');
        out.write_all(&body)?;
    } else {
        render::status::status(&mut out, &report, Timestamp::now(), render::stdout_color())?;
    }
    Ok(ExitCode::from(report.state.exit_code()))
}

/// What `GET /v1/status` answered.
enum Reply {
    /// The summary, without the jobs.
    Summary(StatusSummary),
    /// The whole report, from a supervisor that predates the summary.
    Full(StatusReport),
}

/// Who holds the lock, when the socket did not answer.
fn holder(lock_path: Option<PathBuf>) -> String {
    lock_path
        .filter(|p| lock::is_held(p))
        .map(|p| match lock::read_holder(&p) {
            Ok(h) if lock::holder_alive(&h) => format!(
                "; the lock {} is held by pid {} which does not answer",
                p.display(),
                h.pid
            ),
            // The recorded supervisor is gone; its worker still holds the
            // lock while it stops its jobs.
            Ok(h) => match lock::open_by(&p).as_slice() {
                [] => format!(
                    "; the lock {} is held by what is left of cronwarden pid {}, which has exited",
                    p.display(),
                    h.pid
                ),
                pids => format!(
                    "; the lock {} is held by pid {} left over from cronwarden pid {}, which has exited",
                    p.display(),
                    pids.iter().map(u32::to_string).collect::<Vec<_>>().join(", "),
                    h.pid
                ),
            },
            Err(_) => format!(
                "; the lock {} is held by a process that does not answer",
                p.display()
            ),
        })
        .unwrap_or_else(|| "; no supervisor is running".into())
}

#[cfg(test)]
mod tests {
    use cronwarden_shared::status::{Alert, Severity, State, SupervisorInfo, WorkerInfo};

    use super::*;

    fn probe(r: &StatusReport) -> Result<String, Vec<String>> {
        super::probe(r.worker.pid, r.worker.heartbeat_age_ms, &r.alerts)
    }

    fn report(pid: Option<u32>, kinds: &[AlertKind]) -> StatusReport {
        let at: Timestamp = "2026-12-01T12:00:00Z".parse().unwrap();
        StatusReport {
            state: State::Degraded,
            reasons: vec![],
            supervisor: SupervisorInfo {
                pid: 1,
                version: "0.1.0".into(),
                started_at: at,
                binary_replaced: None,
            },
            worker: WorkerInfo {
                pid,
                started_at: None,
                restarts: 0,
                heartbeat_age_ms: pid.map(|_| 120),
                last_good_turn_age_ms: None,
                heartbeat_seq: None,
                malformed_events: 0,
            },
            jobs: vec![],
            alerts: kinds
                .iter()
                .map(|k| Alert {
                    kind: *k,
                    job: None,
                    severity: Severity::Warning,
                    opened_at: at,
                    resolved_at: None,
                    summary: format!("{k} happened"),
                    owner: None,
                })
                .collect(),
            sinks: vec![],
            clock_jumps: vec![],
            peers: vec![],
        }
    }

    #[test]
    fn the_probe_judges_the_worker_not_the_jobs() {
        let job_trouble = [
            AlertKind::JobFailing,
            AlertKind::JobLate,
            AlertKind::JobTimeout,
            AlertKind::JobOverlapStreak,
            AlertKind::ConfigReloadFailed,
            AlertKind::AlertDeliveryFailed,
            AlertKind::WorkerRestarted,
            AlertKind::WorkerHeartbeatOverdue,
        ];
        assert_eq!(
            probe(&report(Some(7), &job_trouble)),
            Ok("live: worker pid 7, heartbeat 120 ms ago".into())
        );
        assert_eq!(
            probe(&report(None, &[])),
            Err(vec!["the worker is not running".into()])
        );
        for kind in NOT_LIVE_KINDS {
            let verdict = probe(&report(Some(7), &[*kind, AlertKind::JobFailing]));
            assert_eq!(verdict, Err(vec![format!("{kind}: {kind} happened")]));
        }
    }
}
