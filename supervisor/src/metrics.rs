//! Prometheus metrics: the text exposition format (version 0.0.4), written
//! by hand and checked with `promtool check metrics` in the tests.
//!
//! Served at `GET /metrics` on the status socket and, with
//! `metrics_listen`, on a TCP listener that serves nothing else. Both are
//! read-only views of the in-memory model: rendering never touches the
//! store, the worker or the network.
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
    cell::RefCell, collections::BTreeMap, convert::Infallible, fmt::Write, net::SocketAddr, rc::Rc,
    sync::Arc, time::Duration,
};

use bytes::Bytes;
use cronwarden_shared::{
    alert_kind::AlertKind,
    config::Config,
    stats::{Histogram, WorkerStats, STORE_WRITE_BUCKETS},
    status::{Outcome, RunRecord, SkipReason, State, Trigger},
    VERSION,
};
use http_body_util::Full;
use hyper::{body::Incoming, header, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use jiff::Timestamp;
use tokio::{net::TcpListener, sync::Semaphore, time::Instant};

use crate::{model::Model, server};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Delay from a fire's scheduled instant to its start: sub-millisecond when
/// healthy, seconds when the host or the worker is struggling.
const FIRE_DELAY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];
/// Run durations, from a quick check to a six-hour batch.
const RUN_DURATION_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0,
];

const RUN_OUTCOMES: &[Outcome] = &[
    Outcome::Success,
    Outcome::Failed,
    Outcome::Timeout,
    Outcome::Killed,
    Outcome::Lost,
];
const SKIP_REASONS: &[SkipReason] = &[
    SkipReason::Overlap,
    SkipReason::Misfire,
    SkipReason::Paused,
    SkipReason::WorkerDown,
    SkipReason::Removed,
];

fn reason_str(r: SkipReason) -> &'static str {
    match r {
        SkipReason::Overlap => "overlap",
        SkipReason::Misfire => "misfire",
        SkipReason::Paused => "paused",
        SkipReason::WorkerDown => "worker_down",
        SkipReason::Removed => "removed",
    }
}

#[derive(Debug, Default, Clone)]
struct JobMetrics {
    runs: BTreeMap<&'static str, u64>,
    skips: BTreeMap<&'static str, u64>,
    last_success: Option<Timestamp>,
    duration: Histogram,
}

/// What the supervisor counts as events arrive.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    jobs: BTreeMap<String, JobMetrics>,
    fire_delay: Histogram,
    /// The last heartbeat from any worker (not reset by a restart, so the
    /// age keeps growing while no worker beats).
    last_heartbeat: Option<Instant>,
    /// Figures of workers that have been replaced, and of the current one.
    past_workers: WorkerStats,
    current_worker: WorkerStats,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            jobs: BTreeMap::new(),
            fire_delay: Histogram::new(FIRE_DELAY_BUCKETS),
            last_heartbeat: None,
            past_workers: WorkerStats::default(),
            current_worker: WorkerStats::default(),
        }
    }
}

impl Metrics {
    /// Keeps the series of configured jobs only.
    pub fn set_jobs(&mut self, config: &Config) {
        self.jobs.retain(|name, _| config.job(name).is_some());
        for j in &config.jobs {
            self.jobs.entry(j.name.clone()).or_default();
        }
    }

    fn job(&mut self, name: &str) -> Option<&mut JobMetrics> {
        self.jobs.get_mut(name)
    }

    /// The last success found in a job's stored history (newest first).
    pub fn seed(&mut self, job: &str, newest_first: &[RunRecord]) {
        let last = newest_first
            .iter()
            .find(|r| r.outcome == Outcome::Success)
            .and_then(|r| r.finished_at);
        if let Some(j) = self.job(job) {
            j.last_success = j.last_success.max(last);
        }
    }

    pub fn fired(
        &mut self,
        trigger: Trigger,
        scheduled_at: Option<Timestamp>,
        started_at: Timestamp,
    ) {
        // Catch-up runs are late by design and manual ones have no
        // schedule: only on-time fires measure the scheduler.
        if let (Trigger::Schedule, Some(s)) = (trigger, scheduled_at) {
            let delay = started_at.duration_since(s).as_secs_f64().max(0.0);
            self.fire_delay.observe(FIRE_DELAY_BUCKETS, delay);
        }
    }

    pub fn skipped(&mut self, job: &str, reason: SkipReason) {
        if let Some(j) = self.job(job) {
            *j.skips.entry(reason_str(reason)).or_default() += 1;
        }
    }

    /// A run ended (counted once: the model calls this after its own
    /// de-duplication of lost runs).
    pub fn finished(&mut self, run: &RunRecord) {
        let Some(j) = self.job(&run.job) else { return };
        *j.runs.entry(run.outcome.as_str()).or_default() += 1;
        if run.outcome == Outcome::Success {
            j.last_success = j.last_success.max(run.finished_at);
        }
        if let Some(ms) = run.duration_ms {
            j.duration.observe(RUN_DURATION_BUCKETS, ms as f64 / 1000.0);
        }
    }

    pub fn heartbeat(&mut self, now: Instant, stats: Option<&WorkerStats>) {
        self.last_heartbeat = Some(now);
        if let Some(s) = stats {
            self.current_worker = s.clone();
        }
    }

    /// A new worker starts from zero: carry the previous one's figures.
    pub fn worker_replaced(&mut self) {
        let w = std::mem::take(&mut self.current_worker);
        self.past_workers
            .store_write_seconds
            .add(&w.store_write_seconds);
        self.past_workers.log_lines_dropped += w.log_lines_dropped;
    }
}

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

/// The whole exposition, computed now.
pub fn render(m: &mut Model, now: Instant, wall: Timestamp) -> String {
    let status = m.status(now, wall);
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

    let mx = &m.metrics;
    t.family(
        "cronwarden_runs_total",
        "counter",
        "Finished runs by job and outcome, since the supervisor started.",
    );
    for (job, j) in &mx.jobs {
        for o in RUN_OUTCOMES {
            let n = j.runs.get(o.as_str()).copied().unwrap_or(0);
            t.sample(
                "cronwarden_runs_total",
                &[("job", job), ("outcome", o.as_str())],
                n as f64,
            );
        }
    }
    t.family(
        "cronwarden_skips_total",
        "counter",
        "Scheduled fires that did not run, by job and reason, since the supervisor started.",
    );
    for (job, j) in &mx.jobs {
        for r in SKIP_REASONS {
            let r = reason_str(*r);
            let n = j.skips.get(r).copied().unwrap_or(0);
            t.sample(
                "cronwarden_skips_total",
                &[("job", job), ("reason", r)],
                n as f64,
            );
        }
    }
    t.family(
        "cronwarden_last_success_timestamp_seconds",
        "gauge",
        "When the job's last successful run finished (unix seconds); absent if it never succeeded.",
    );
    for (job, j) in &mx.jobs {
        if let Some(ts) = j.last_success {
            t.sample(
                "cronwarden_last_success_timestamp_seconds",
                &[("job", job)],
                ts.as_nanosecond() as f64 / 1e9,
            );
        }
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
    for (job, j) in &mx.jobs {
        t.histogram(
            "cronwarden_run_duration_seconds",
            &[("job", job)],
            RUN_DURATION_BUCKETS,
            &j.duration,
        );
    }
    t.family(
        "cronwarden_worker_restarts_total",
        "counter",
        "Workers started after the first one (crashes, stalls, replacements).",
    );
    t.sample(
        "cronwarden_worker_restarts_total",
        &[],
        m.worker.restarts as f64,
    );
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
    t.family("cronwarden_alerts_open", "gauge", "Open alerts by kind.");
    // Every kind is exposed, 0 when closed, so that rules can match on it.
    let mut open: BTreeMap<AlertKind, u64> = AlertKind::ALL
        .iter()
        .filter(|k| **k != AlertKind::Test)
        .map(|k| (*k, 0))
        .collect();
    for a in &status.alerts {
        *open.entry(a.kind).or_default() += 1;
    }
    for (kind, n) in &open {
        t.sample(
            "cronwarden_alerts_open",
            &[("kind", kind.as_str())],
            *n as f64,
        );
    }
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
    t.0
}

/// The `/metrics` response.
pub fn response(model: &Rc<RefCell<Model>>) -> Response<Full<Bytes>> {
    let text = render(&mut model.borrow_mut(), Instant::now(), Timestamp::now());
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
pub async fn serve_tcp(listener: std::net::TcpListener, model: Rc<RefCell<Model>>) {
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
        let model = model.clone();
        tokio::task::spawn_local(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let model = model.clone();
                async move {
                    Ok::<_, Infallible>(match (req.method(), req.uri().path()) {
                        (&Method::GET, "/metrics") => response(&model),
                        (_, "/metrics") => {
                            plain(StatusCode::METHOD_NOT_ALLOWED, "only GET /metrics")
                        }
                        _ => plain(StatusCode::NOT_FOUND, "only GET /metrics is served here"),
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
