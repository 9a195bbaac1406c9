//! Prometheus metrics: the text exposition format (version 0.0.4), written
//! by hand and checked with `promtool check metrics` in the tests.
//!
//! Served at `GET /metrics` on the status socket and, with
//! `metrics_listen`, on a TCP listener that serves nothing else (but the
//! status page, `GET /`). Both are
//! renderings of the loop's latest snapshot ([`crate::snapshot`]): rendering
//! never touches the model, the store, the worker or the network.
//!
//! The counters themselves are recorded by the model (`model::counters`);
//! this module only renders them, so it depends on the model and not the
//! other way round.
//!
//! Label cardinality is bounded by the config: per-job series exist only for
//! configured jobs (a job removed by a reload loses its series), outcomes,
//! skip reasons and alert kinds are fixed sets. The fire delay histogram is
//! deliberately not per job: it measures the scheduler (is the worker firing
//! on time?), one series answers that, and per-job buckets would multiply the
//! series by the job count for no diagnostic gain (a run record has its own
//! `scheduled_at` and `started_at`). Counters start at zero with the
//! supervisor, which Prometheus handles as a counter reset.

use std::{
    collections::BTreeMap, convert::Infallible, fmt::Write, net::SocketAddr, sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use cronwarden_shared::{
    alert_kind::AlertKind,
    stats::{Histogram, STORE_WRITE_BUCKETS},
    status::{Alert, JobStatus, State, StatusReport},
    VERSION,
};
use http_body_util::Full;
use hyper::{body::Incoming, header, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use jiff::Timestamp;
use tokio::{net::TcpListener, sync::Semaphore, time::Instant};

use crate::{
    model::counters::{
        reason_str, Counters, FIRE_DELAY_BUCKETS, RUN_DURATION_BUCKETS, RUN_OUTCOMES, SKIP_REASONS,
    },
    server,
    snapshot::{Snapshot, Snapshots},
};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Escapes a label value as the exposition format requires.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn num(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {}", num(value));
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], bounds: &[f64], h: &Histogram) {
        let mut cumulative = 0;
        for (i, b) in bounds.iter().enumerate() {
            cumulative += h.counts.get(i).copied().unwrap_or(0);
            let le = num(*b);
            let mut l = labels.to_vec();
            l.push(("le", &le));
            self.sample(&format!("{name}_bucket"), &l, cumulative as f64);
        }
        let mut l = labels.to_vec();
        l.push(("le", "+Inf"));
        self.sample(&format!("{name}_bucket"), &l, h.count as f64);
        self.sample(&format!("{name}_sum"), labels, h.sum);
        self.sample(&format!("{name}_count"), labels, h.count as f64);
    }
}

/// The whole exposition, from a snapshot's status and counters; `now` only
/// ages the heartbeat.
pub fn render(status: &StatusReport, mx: &Counters, now: Instant) -> String {
    let mut t = Text(String::with_capacity(8192));
    t.family("cronwarden_up", "gauge", "1 while the supervisor answers.");
    t.sample("cronwarden_up", &[], 1.0);
    t.family(
        "cronwarden_build_info",
        "gauge",
        "The running version, as a label; always 1.",
    );
    t.sample("cronwarden_build_info", &[("version", VERSION)], 1.0);
    t.family(
        "cronwarden_state",
        "gauge",
        "1 for the overall state the status reports (ok, degraded, stalled, down), 0 for the others.",
    );
    for s in [State::Ok, State::Degraded, State::Stalled, State::Down] {
        let v = if s == status.state { 1.0 } else { 0.0 };
        t.sample("cronwarden_state", &[("state", s.as_str())], v);
    }

    job_series(&mut t, status, mx);
    worker_series(&mut t, status.worker.restarts, mx, now);
    alerts_open(&mut t, &status.alerts);
    process_series(&mut t, mx);
    t.0
}

/// The label naming a job. Not `job`: Prometheus gives every scraped
/// series a `job` label of its own (the scrape job), and with the default
/// `honor_labels: false` ours would be renamed `exported_job`. `cronjob` is
/// what kube-state-metrics uses for the same thing.
pub const JOB_LABEL: &str = "cronjob";

fn unix_seconds(ts: Timestamp) -> f64 {
    ts.as_nanosecond() as f64 / 1e9
}

/// Runs, skips, last run times, next fire, running runs and durations, by
/// job; the fire delay over all jobs. Every per-job series is present from
/// the job's first appearance: a timestamp not known yet is 0, so that
/// `time() - x` is huge (and an alert on it fires) for a job that never
/// got that far, instead of the series being absent and the rule silent.
fn job_series(t: &mut Text, status: &StatusReport, mx: &Counters) {
    t.family(
        "cronwarden_runs_total",
        "counter",
        "Finished runs by job and outcome, since the supervisor started.",
    );
    for (job, j) in mx.jobs.iter() {
        for o in RUN_OUTCOMES {
            let n = j.runs.get(o.as_str()).copied().unwrap_or(0);
            t.sample(
                "cronwarden_runs_total",
                &[(JOB_LABEL, job), ("outcome", o.as_str())],
                n as f64,
            );
        }
    }
    t.family(
        "cronwarden_skips_total",
        "counter",
        "Scheduled fires that did not run, by job and reason, since the supervisor started.",
    );
    for (job, j) in mx.jobs.iter() {
        for r in SKIP_REASONS {
            let r = reason_str(*r);
            let n = j.skips.get(r).copied().unwrap_or(0);
            t.sample(
                "cronwarden_skips_total",
                &[(JOB_LABEL, job), ("reason", r)],
                n as f64,
            );
        }
    }
    t.family(
        "cronwarden_last_success_timestamp_seconds",
        "gauge",
        "When the job's last successful run finished (unix seconds); 0 if it never succeeded.",
    );
    for (job, j) in mx.jobs.iter() {
        t.sample(
            "cronwarden_last_success_timestamp_seconds",
            &[(JOB_LABEL, job)],
            j.last_success.map_or(0.0, unix_seconds),
        );
    }
    t.family(
        "cronwarden_last_run_timestamp_seconds",
        "gauge",
        "When the job's last run of each outcome finished (unix seconds); 0 if none did.",
    );
    for (job, j) in mx.jobs.iter() {
        for o in RUN_OUTCOMES {
            t.sample(
                "cronwarden_last_run_timestamp_seconds",
                &[(JOB_LABEL, job), ("outcome", o.as_str())],
                j.last_finish
                    .get(o.as_str())
                    .copied()
                    .map_or(0.0, unix_seconds),
            );
        }
    }
    let by_name: BTreeMap<&str, &JobStatus> = status
        .jobs
        .iter()
        .map(|j| (j.name.as_str(), j.as_ref()))
        .collect();
    t.family(
        "cronwarden_next_fire_timestamp_seconds",
        "gauge",
        "When the job is next due (unix seconds); 0 while none is planned (paused, or not yet armed).",
    );
    for job in mx.jobs.keys() {
        let next = by_name
            .get(job.as_str())
            .filter(|j| !j.paused)
            .and_then(|j| j.next_fire_at);
        t.sample(
            "cronwarden_next_fire_timestamp_seconds",
            &[(JOB_LABEL, job)],
            next.map_or(0.0, unix_seconds),
        );
    }
    t.family(
        "cronwarden_running_runs",
        "gauge",
        "Runs of the job in flight now.",
    );
    for job in mx.jobs.keys() {
        let n = by_name.get(job.as_str()).map_or(0, |j| j.running.len());
        t.sample("cronwarden_running_runs", &[(JOB_LABEL, job)], n as f64);
    }
    t.family(
        "cronwarden_fire_delay_seconds",
        "histogram",
        "Delay from a scheduled fire time to the run's start, over all jobs (trigger schedule only).",
    );
    t.histogram(
        "cronwarden_fire_delay_seconds",
        &[],
        FIRE_DELAY_BUCKETS,
        &mx.fire_delay,
    );
    t.family(
        "cronwarden_run_duration_seconds",
        "histogram",
        "Duration of finished runs, by job.",
    );
    for (job, j) in mx.jobs.iter() {
        t.histogram(
            "cronwarden_run_duration_seconds",
            &[(JOB_LABEL, job)],
            RUN_DURATION_BUCKETS,
            &j.duration,
        );
    }
    t.family(
        "cronwarden_run_cpu_seconds_total",
        "counter",
        "CPU time of finished runs by job (from each run's cgroup; 0 without cgroups), since the supervisor started.",
    );
    for (job, j) in mx.jobs.iter() {
        t.sample(
            "cronwarden_run_cpu_seconds_total",
            &[(JOB_LABEL, job)],
            j.cpu_usec as f64 / 1e6,
        );
    }
}

/// Restarts and heartbeat age, over every worker.
fn worker_series(t: &mut Text, restarts: u64, mx: &Counters, now: Instant) {
    t.family(
        "cronwarden_worker_restarts_total",
        "counter",
        "Workers started after the first one (crashes, stalls, replacements).",
    );
    t.sample("cronwarden_worker_restarts_total", &[], restarts as f64);
    t.family(
        "cronwarden_worker_heartbeat_age_seconds",
        "gauge",
        "Time since the last heartbeat of any worker (since the supervisor started, before the first).",
    );
    let since = mx.last_heartbeat.unwrap_or(mx.started);
    t.sample(
        "cronwarden_worker_heartbeat_age_seconds",
        &[],
        now.saturating_duration_since(since).as_secs_f64(),
    );
}

fn alerts_open(t: &mut Text, alerts: &[Alert]) {
    t.family("cronwarden_alerts_open", "gauge", "Open alerts by kind.");
    // Every kind is exposed, 0 when closed, so that rules can match on it.
    let mut open: BTreeMap<AlertKind, u64> = AlertKind::ALL
        .iter()
        .filter(|k| **k != AlertKind::Test)
        .map(|k| (*k, 0))
        .collect();
    for a in alerts {
        *open.entry(a.kind).or_default() += 1;
    }
    for (kind, n) in &open {
        t.sample(
            "cronwarden_alerts_open",
            &[("kind", kind.as_str())],
            *n as f64,
        );
    }
}

/// Store writes, pings and dropped log lines: the processes' own health.
fn process_series(t: &mut Text, mx: &Counters) {
    t.family(
        "cronwarden_store_write_seconds",
        "histogram",
        "Latency of the worker's store write transactions (one per loop turn that has something to record).",
    );
    let mut writes = mx.past_workers.store_write_seconds.clone();
    writes.add(&mx.current_worker.store_write_seconds);
    if writes.counts.is_empty() {
        writes = Histogram::new(STORE_WRITE_BUCKETS);
    }
    t.histogram(
        "cronwarden_store_write_seconds",
        &[],
        STORE_WRITE_BUCKETS,
        &writes,
    );
    t.family(
        "cronwarden_pings_total",
        "counter",
        "Outbound pings (job ping_url, host heartbeat_url) by result: ok, failed (after retries), dropped (queue full).",
    );
    for (target, stats) in [
        ("job", &crate::pings::JOB_PINGS),
        ("heartbeat", &crate::pings::HEARTBEAT_PINGS),
    ] {
        for (result, n) in [
            ("ok", &stats.ok),
            ("failed", &stats.failed),
            ("dropped", &stats.dropped),
        ] {
            let n = n.load(std::sync::atomic::Ordering::Relaxed);
            t.sample(
                "cronwarden_pings_total",
                &[("target", target), ("result", result)],
                n as f64,
            );
        }
    }
    t.family(
        "cronwarden_log_lines_dropped_total",
        "counter",
        "Log lines the non-blocking log file writer dropped because it fell behind, by process.",
    );
    t.sample(
        "cronwarden_log_lines_dropped_total",
        &[("process", "supervisor")],
        cronwarden_shared::stats::log_lines_dropped() as f64,
    );
    t.sample(
        "cronwarden_log_lines_dropped_total",
        &[("process", "worker")],
        (mx.past_workers.log_lines_dropped + mx.current_worker.log_lines_dropped) as f64,
    );
}

/// The `/metrics` response.
pub(crate) fn response(snapshot: &Snapshot) -> Response<Full<Bytes>> {
    let text = render(&snapshot.status, &snapshot.counters, Instant::now());
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, CONTENT_TYPE)
        .body(Full::new(Bytes::from(text)))
        .expect("valid response")
}

fn plain(code: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(format!("{msg}\n"))))
        .expect("valid response")
}

/// Why the metrics listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for metrics on {addr}: {source}")]
pub struct ListenError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

pub fn bind_tcp(addr: SocketAddr) -> Result<std::net::TcpListener, ListenError> {
    let l = std::net::TcpListener::bind(addr).map_err(|source| ListenError { addr, source })?;
    l.set_nonblocking(true)
        .map_err(|source| ListenError { addr, source })?;
    Ok(l)
}

/// Serves `GET /metrics` (and nothing else) on TCP, with the status
/// socket's connection cap and header timeout, until the task is dropped.
pub(crate) async fn serve_tcp(listener: std::net::TcpListener, snapshots: Snapshots) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("metrics listener unusable: {e}");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(server::MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("metrics accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let snapshots = snapshots.clone();
        tokio::task::spawn_local(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let snapshot = snapshots.borrow().clone();
                async move {
                    Ok::<_, Infallible>(match (req.method(), req.uri().path()) {
                        (&Method::GET, "/metrics") => response(&snapshot),
                        (&Method::GET, "/") => {
                            let page = crate::page::page_param(req.uri());
                            crate::page::response(snapshot, page.as_deref()).await
                        }
                        (_, "/metrics") => {
                            plain(StatusCode::METHOD_NOT_ALLOWED, "only GET /metrics")
                        }
                        _ => plain(
                            StatusCode::NOT_FOUND,
                            "only GET /metrics and GET / are served here",
                        ),
                    })
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(server::HEADER_TIMEOUT)
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!("metrics connection ended: {e}");
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let mut t = Text(String::new());
        t.sample("x_total", &[("job", "we\"ird")], 2.0);
        assert_eq!(t.0, "x_total{job=\"we\\\"ird\"} 2\n");
    }

    #[test]
    fn run_cpu_time_adds_up_by_job() {
        use cronwarden_shared::status::{Outcome, RunRecord, Trigger};
        let mut mx = Counters::default();
        mx.jobs.insert_for_test("burn");
        for (id, cpu) in [(1, Some(1_500_000)), (2, None), (3, Some(250_000))] {
            let mut r = RunRecord::new(id, "burn", vec![], Trigger::Manual, Outcome::Success);
            r.contain.cpu_usec = cpu;
            mx.finished(&r);
        }
        let status: StatusReport = serde_json::from_value(serde_json::json!({
            "state": "ok", "reasons": [], "jobs": [], "alerts": [],
            "supervisor": {"pid": 1, "version": "x", "started_at": "2026-01-01T00:00:00Z"},
            "worker": {"pid": null, "started_at": null, "restarts": 0, "heartbeat_age_ms": null,
                       "last_good_turn_age_ms": null, "heartbeat_seq": null, "malformed_events": 0},
        }))
        .unwrap();
        let mut t = Text(String::new());
        job_series(&mut t, &status, &mx);
        assert!(
            t.0.contains("cronwarden_run_cpu_seconds_total{cronjob=\"burn\"} 1.75\n"),
            "{}",
            t.0
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_in_inf() {
        let b = [1.0, 2.0];
        let mut h = Histogram::new(&b);
        for v in [0.5, 1.5, 1.7, 9.0] {
            h.observe(&b, v);
        }
        let mut t = Text(String::new());
        t.histogram("d_seconds", &[("job", "a")], &b, &h);
        assert_eq!(
            t.0,
            "d_seconds_bucket{job=\"a\",le=\"1\"} 1\n\
             d_seconds_bucket{job=\"a\",le=\"2\"} 3\n\
             d_seconds_bucket{job=\"a\",le=\"+Inf\"} 4\n\
             d_seconds_sum{job=\"a\"} 12.7\n\
             d_seconds_count{job=\"a\"} 4\n"
        );
    }
}
