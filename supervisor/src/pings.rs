//! Outbound pings to dead-man's-switch services (healthchecks.io, Cronitor,
//! Dead Man's Snitch and the like): per job `ping_url` (healthchecks.io's
//! scheme) or `ping_start_url`/`ping_success_url`/`ping_failure_url`
//! templates (any scheme), and the whole-host `heartbeat_url`.
//!
//! Pings are sent by the supervisor, from the worker's `fire` and `finish`
//! events (and the runs it records `lost` itself), not by the worker's
//! runner: the runner then never waits on a network peer, and a run the
//! worker took down with it still gets its `/fail`. Each kind has its own
//! thread and bounded queue ([`BoundedQueue`], as the alert sinks):
//! job pings keep their order (a run's `/start` before its result), and a
//! slow job-ping receiver cannot delay the host heartbeat, or the reverse.
//! Every request is bounded by [`TIMEOUT`] and retried twice; a ping that
//! still fails is logged and dropped (the receiving service alerts on the
//! missing ping, which is its whole point).

use std::{
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use cronwarden_shared::{
    config::{expand_ping, ping_target, Config, PingVars},
    status::{Outcome, RunRecord},
    timefmt::human_duration,
};
use tokio::time::Instant;

use crate::queue::BoundedQueue;

/// Bound on one ping request.
pub const TIMEOUT: Duration = Duration::from_secs(10);
const RETRIES: u32 = 2;
const QUEUE_CAP: usize = 256;
/// Each output tail in a finish ping's body is cut to this many bytes.
pub const TAIL_BYTES: usize = 4096;

/// A run started or ended, as the model saw it.
#[derive(Debug, Clone)]
pub enum RunEvent {
    Started { job: String, run_id: u64 },
    Finished(Box<RunRecord>),
}

/// What became of the pings of one kind, for the metrics.
#[derive(Debug, Default)]
pub struct PingStats {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
}

impl PingStats {
    const fn new() -> PingStats {
        PingStats {
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }
}

/// Job pings and host heartbeats since the supervisor started (one
/// supervisor per process, so process-wide counters).
pub static JOB_PINGS: PingStats = PingStats::new();
pub static HEARTBEAT_PINGS: PingStats = PingStats::new();

/// One request: GET without a body, POST (text/plain) with one.
#[derive(Debug, Clone, PartialEq)]
pub struct Ping {
    pub url: String,
    pub body: Option<String>,
}

/// A delivery thread and its queue.
pub struct Pinger {
    queue: BoundedQueue<Ping>,
    name: &'static str,
    /// Pings queued or in flight, for a bounded flush at shutdown.
    pending: Arc<AtomicUsize>,
    stats: &'static PingStats,
}

impl Pinger {
    pub fn start(name: &'static str, cap: usize, stats: &'static PingStats) -> Pinger {
        let queue = BoundedQueue::new(cap);
        let pending = Arc::new(AtomicUsize::new(0));
        let (q, p) = (queue.clone(), pending.clone());
        std::thread::Builder::new()
            .name(format!("ping-{name}"))
            .spawn(move || run(name, q, p, stats))
            .expect("spawn ping thread");
        Pinger {
            queue,
            name,
            pending,
            stats,
        }
    }

    pub fn send(&self, ping: Ping) {
        if self.queue.push(ping) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                pinger = self.name,
                "ping queue full; dropped the oldest ping"
            );
        } else {
            self.pending.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Waits (at most `limit`) for queued pings to be sent: at shutdown,
    /// so that the `/fail` of a run stopped on the way out is not lost.
    pub fn flush(&self, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        while self.pending.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        self.queue.close();
    }
}

fn run(
    name: &'static str,
    queue: BoundedQueue<Ping>,
    pending: Arc<AtomicUsize>,
    stats: &'static PingStats,
) {
    let agent = ureq::AgentBuilder::new().timeout(TIMEOUT).build();
    while let Some(p) = queue.pop() {
        let mut last = String::new();
        for attempt in 0..=RETRIES {
            let r = match &p.body {
                None => agent.get(&p.url).call(),
                Some(b) => agent
                    .post(&p.url)
                    .set("Content-Type", "text/plain; charset=utf-8")
                    .send_string(b),
            };
            match r {
                Ok(_) => {
                    tracing::debug!(pinger = name, url = %p.url, "pinged");
                    last.clear();
                    break;
                }
                Err(ureq::Error::Status(code, _)) => last = format!("HTTP {code}"),
                Err(e) => last = e.kind().to_string(),
            }
            if attempt < RETRIES {
                std::thread::sleep(crate::sinks::backoff(attempt));
            }
        }
        if last.is_empty() {
            stats.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(pinger = name, url = %p.url, "ping failed after {} attempts: {last}", RETRIES + 1);
        }
        pending.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Cuts `s` to its last `max` bytes, on a character boundary.
fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut i = s.len() - max;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

/// The exit status a template's `{exit_code}` says: the code, or as the
/// shell reports a run killed by signal N, 128 + N; 1 for a failure with
/// neither (lost with its worker, could not start); 0 for a success.
fn exit_status(run: &RunRecord) -> i32 {
    match (run.exit_code, run.signal) {
        (Some(c), _) => c,
        (None, Some(sig)) => sig.saturating_add(128),
        (None, None) if run.outcome == Outcome::Success => 0,
        (None, None) => 1,
    }
}

/// The ping a run event asks for, if its job has pings. With `ping_url`
/// (healthchecks.io's scheme): `/start` at start; at the end the bare URL
/// for a success and `/fail` for anything else. With templates: the
/// event's template, filled, and nothing appended. Start pings are GETs;
/// finish pings POST the outcome, exit status and output tails.
pub fn job_ping(config: &Config, ev: &RunEvent) -> Option<Ping> {
    let (name, run_id, finished) = match ev {
        RunEvent::Started { job, run_id } => (job.as_str(), *run_id, None),
        RunEvent::Finished(run) => (run.job.as_str(), run.id, Some(run.as_ref())),
    };
    let job = config.job(name)?;
    let ok = finished.is_some_and(|r| r.outcome == Outcome::Success);
    let url = match (&job.ping_url, finished) {
        (Some(base), None) => ping_target(base, "start"),
        (Some(base), Some(_)) => ping_target(base, if ok { "" } else { "fail" }),
        (None, _) => {
            let t = &job.ping_templates;
            let template = match finished {
                None => t.start.as_deref(),
                Some(_) if ok => t.success.as_deref(),
                Some(_) => t.failure.as_deref(),
            }?;
            let vars = PingVars {
                job: name,
                run_id,
                exit_code: finished.map(exit_status),
            };
            match expand_ping(template, vars) {
                Ok(url) => url,
                // Validated with the config; kept from a panic all the same.
                Err(e) => {
                    tracing::warn!(job = name, "ping template not usable: {e}");
                    return None;
                }
            }
        }
    };
    Some(Ping {
        url,
        body: finished.map(finish_body),
    })
}

fn finish_body(run: &RunRecord) -> String {
    let mut b = format!("job {} run {}: {}", run.job, run.id, run.outcome.as_str());
    match (run.exit_code, run.signal) {
        (Some(c), _) => b.push_str(&format!(", exit code {c}")),
        (None, Some(s)) => b.push_str(&format!(", killed by signal {s}")),
        (None, None) => {}
    }
    if let Some(ms) = run.duration_ms {
        b.push_str(&format!(
            ", after {}",
            human_duration(Duration::from_millis(ms))
        ));
    }
    b.push('\n');
    if let Some(e) = &run.error {
        b.push_str(&format!("error: {e}\n"));
    }
    for (name, text, total) in [
        ("stdout", &run.stdout_tail, run.stdout_bytes),
        ("stderr", &run.stderr_tail, run.stderr_bytes),
    ] {
        if !text.is_empty() {
            let t = tail(text, TAIL_BYTES);
            b.push_str(&format!(
                "--- {name} (last {} of {total} bytes) ---\n{t}",
                t.len()
            ));
            if !t.ends_with('\n') {
                b.push('\n');
            }
        }
    }
    b
}

/// The whole-host dead man's switch: `heartbeat_url` every interval while
/// the state is ok, `<url>/fail` with the status summary while it is not.
/// A change between ok and not-ok is sent at once rather than at the next
/// interval, so an outage is reported within a second of being seen.
/// While the first worker starts (as long as the watchdog gives it, at
/// least 10s) a not-ok state is not sent: a restart of cronwarden itself is
/// not an outage, but a worker that never comes up is.
pub struct HostBeat {
    url: String,
    interval: Duration,
    last: Option<(Instant, bool)>,
    quiet_until: Instant,
    pinger: Pinger,
}

impl HostBeat {
    pub fn from_config(config: &Config) -> Option<HostBeat> {
        let i = &config.integrations;
        Some(HostBeat {
            url: i.heartbeat_url.clone()?,
            interval: i.heartbeat_interval,
            last: None,
            quiet_until: Instant::now() + config.watchdog.stall_after.max(Duration::from_secs(10)),
            // The newest state is what matters: a short queue.
            pinger: Pinger::start("heartbeat", 4, &HEARTBEAT_PINGS),
        })
    }

    pub fn same_target(&self, config: &Config) -> bool {
        let i = &config.integrations;
        i.heartbeat_url.as_deref() == Some(self.url.as_str())
            && i.heartbeat_interval == self.interval
    }

    /// Called from the supervisor's loop each time the status is computed.
    pub fn observe(&mut self, now: Instant, ok: bool, summary: impl FnOnce() -> String) {
        let due = match self.last {
            None => ok || now >= self.quiet_until,
            Some((at, was_ok)) => {
                was_ok != ok || now.saturating_duration_since(at) >= self.interval
            }
        };
        if !due {
            return;
        }
        self.last = Some((now, ok));
        self.pinger.send(if ok {
            Ping {
                url: self.url.clone(),
                body: None,
            }
        } else {
            Ping {
                url: ping_target(&self.url, "fail"),
                body: Some(summary()),
            }
        });
    }
}

/// Job pings for the runs the model saw, through one queue.
pub struct JobPings {
    pinger: Option<Pinger>,
}

impl JobPings {
    pub fn new() -> JobPings {
        JobPings { pinger: None }
    }

    pub fn flush(&self, limit: Duration) {
        if let Some(p) = &self.pinger {
            p.flush(limit);
        }
    }

    pub fn dispatch(&mut self, config: &Config, events: Vec<RunEvent>) {
        for ev in events {
            if let Some(p) = job_ping(config, &ev) {
                self.pinger
                    .get_or_insert_with(|| Pinger::start("jobs", QUEUE_CAP, &JOB_PINGS))
                    .send(p);
            }
        }
    }
}

impl Default for JobPings {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cronwarden_shared::status::Trigger;
    use std::path::Path;

    fn config() -> Config {
        Config::parse(
            Path::new("c.toml"),
            "[[job]]\nname = \"a\"\nschedule = \"@daily\"\nshell = \"true\"\nping_url = \"http://h/p/\"\n\
             [[job]]\nname = \"quiet\"\nschedule = \"@daily\"\nshell = \"true\"\n",
        )
        .unwrap()
    }

    #[test]
    fn start_success_and_fail_urls_and_bodies() {
        let c = config();
        let start = job_ping(
            &c,
            &RunEvent::Started {
                job: "a".into(),
                run_id: 1,
            },
        )
        .unwrap();
        assert_eq!(
            start,
            Ping {
                url: "http://h/p/start".into(),
                body: None
            }
        );
        let mut run = RunRecord::new(1, "a", vec![], Trigger::Manual, Outcome::Success);
        run.exit_code = Some(0);
        let ok = job_ping(&c, &RunEvent::Finished(Box::new(run.clone()))).unwrap();
        assert_eq!(ok.url, "http://h/p/");
        run.outcome = Outcome::Failed;
        run.exit_code = Some(3);
        run.stderr_tail = format!("{}boom\n", "x".repeat(10_000));
        run.stderr_bytes = 10_005;
        let fail = job_ping(&c, &RunEvent::Finished(Box::new(run))).unwrap();
        assert_eq!(fail.url, "http://h/p/fail");
        let body = fail.body.unwrap();
        assert!(
            body.starts_with("job a run 1: failed, exit code 3"),
            "{body}"
        );
        assert!(
            body.contains("--- stderr (last 4096 of 10005 bytes) ---"),
            "{body}"
        );
        assert!(body.ends_with("boom\n"));
        assert!(body.len() < TAIL_BYTES + 200, "bounded: {}", body.len());
        assert_eq!(
            job_ping(
                &c,
                &RunEvent::Started {
                    job: "quiet".into(),
                    run_id: 2
                }
            ),
            None
        );
    }

    #[test]
    fn templates_are_filled_per_event_and_nothing_is_appended() {
        let c = Config::parse(
            Path::new("c.toml"),
            "[[job]]\nname = \"db backup\"\nschedule = \"@daily\"\nshell = \"true\"\n\
             ping_start_url = \"http://hc/p/start?rid={run_uuid}\"\n\
             ping_success_url = \"http://hc/p/{exit_code}?rid={run_uuid}\"\n\
             ping_failure_url = \"http://cr/p/{job}?state=fail&series={run_id}&status_code={exit_code}\"\n\
             [[job]]\nname = \"snitch\"\nschedule = \"@daily\"\nshell = \"true\"\n\
             ping_success_url = \"http://nosnch/abc\"\n",
        )
        .unwrap();
        let start = job_ping(
            &c,
            &RunEvent::Started {
                job: "db backup".into(),
                run_id: 42,
            },
        )
        .unwrap();
        assert_eq!(
            start,
            Ping {
                url: format!(
                    "http://hc/p/start?rid={}",
                    cronwarden_shared::config::run_uuid("db backup", 42)
                ),
                body: None
            }
        );
        let mut run = RunRecord::new(42, "db backup", vec![], Trigger::Manual, Outcome::Success);
        run.exit_code = Some(0);
        let ok = job_ping(&c, &RunEvent::Finished(Box::new(run.clone()))).unwrap();
        assert_eq!(
            ok.url,
            format!(
                "http://hc/p/0?rid={}",
                cronwarden_shared::config::run_uuid("db backup", 42)
            )
        );
        assert!(ok.body.is_some());
        // Killed by SIGTERM (a timeout): 143, as a shell says.
        run.outcome = Outcome::Timeout;
        run.exit_code = None;
        run.signal = Some(15);
        let fail = job_ping(&c, &RunEvent::Finished(Box::new(run.clone()))).unwrap();
        assert_eq!(
            fail.url,
            "http://cr/p/db%20backup?state=fail&series=42&status_code=143"
        );
        // Lost with its worker: neither code nor signal.
        run.outcome = Outcome::Lost;
        run.signal = None;
        let lost = job_ping(&c, &RunEvent::Finished(Box::new(run))).unwrap();
        assert!(lost.url.ends_with("status_code=1"), "{}", lost.url);
        // Only the events with a template are pinged.
        let snitch_start = RunEvent::Started {
            job: "snitch".into(),
            run_id: 1,
        };
        assert_eq!(job_ping(&c, &snitch_start), None);
        let mut failed = RunRecord::new(2, "snitch", vec![], Trigger::Manual, Outcome::Failed);
        failed.exit_code = Some(1);
        assert_eq!(job_ping(&c, &RunEvent::Finished(Box::new(failed))), None);
    }

    #[test]
    fn tails_cut_on_char_boundaries() {
        assert_eq!(tail("héllo", 4), "llo");
        assert_eq!(tail("abc", 10), "abc");
    }
}
