//! Alert sinks: where alerts reach people.
//!
//! Every sink has its own thread and a bounded queue: a slow or broken
//! sink delays only itself, never the supervisor's loop or another sink. A
//! full queue drops its oldest notice and counts it. Each delivery attempt
//! is bounded by the sink's `timeout`; failures are retried with
//! exponential backoff, then recorded in the sink's health (shown in the
//! status); a sink that keeps failing raises `alert_delivery_failed`, which
//! goes to the other sinks.
//!
//! - `exec`: argv, with the notice as JSON on stdin and as
//!   `CRONWARDEN_ALERT_*` variables; killed (whole group) at its timeout.
//!   Its exit status comes from the supervisor's reaper ([`Reaper`]).
//! - `webhook`: HTTP POST with ureq (JSON, or `{"text": …}` for chat tools),
//!   headers optionally read from the environment.

use std::{
    io::Write,
    os::unix::process::CommandExt,
    process::{Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::Duration,
};

use cronwarden_shared::{
    config::{HeaderValue, SinkKind, SinkSpec, WebhookFormat},
    status::{AlertNotice, SinkHealth},
};
use jiff::Timestamp;
use nix::sys::signal::Signal;

use crate::{queue::BoundedQueue, reaper::Reaper, spawn};

const QUEUE_CAP: usize = 256;
/// Consecutive failed notices after which a sink counts as failing.
pub const FAILING_AFTER: u32 = 2;

/// One sink's answer to a test alert.
pub type TestResult = (String, Result<(), String>);

struct Item {
    notice: AlertNotice,
    /// For `alerts test`: where to report the outcome.
    report: Option<mpsc::Sender<TestResult>>,
}

struct Sink {
    spec: SinkSpec,
    queue: BoundedQueue<Item>,
    health: Arc<Mutex<SinkHealth>>,
}

pub struct Sinks {
    sinks: Vec<Sink>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sinks {
    pub fn start(specs: &[SinkSpec], reaper: &Reaper) -> Sinks {
        let sinks = specs
            .iter()
            .map(|spec| {
                let queue = BoundedQueue::new(QUEUE_CAP);
                let health = Arc::new(Mutex::new(SinkHealth {
                    name: spec.name.clone(),
                    kind: match spec.kind {
                        SinkKind::Exec { .. } => "exec".into(),
                        SinkKind::Webhook { .. } => "webhook".into(),
                    },
                    ..SinkHealth::default()
                }));
                let (q, h, s, r) = (queue.clone(), health.clone(), spec.clone(), reaper.clone());
                std::thread::Builder::new()
                    .name(format!("sink-{}", spec.name))
                    .spawn(move || run(s, q, h, r))
                    .expect("spawn sink thread");
                Sink {
                    spec: spec.clone(),
                    queue,
                    health,
                }
            })
            .collect();
        Sinks { sinks }
    }

    /// Queues a notice on every sink whose filters accept it.
    pub fn dispatch(&self, n: &AlertNotice) {
        for s in &self.sinks {
            if accepts(&s.spec, n) {
                enqueue(
                    s,
                    Item {
                        notice: n.clone(),
                        report: None,
                    },
                );
            }
        }
    }

    /// Sends `n` through every sink regardless of filters; the receiver
    /// gets one (sink, result) per sink.
    pub fn test(&self, n: &AlertNotice) -> (usize, mpsc::Receiver<TestResult>) {
        let (tx, rx) = mpsc::channel();
        for s in &self.sinks {
            enqueue(
                s,
                Item {
                    notice: n.clone(),
                    report: Some(tx.clone()),
                },
            );
        }
        (self.sinks.len(), rx)
    }

    /// The longest a test delivery can take on any sink.
    pub fn test_bound(&self) -> Duration {
        self.sinks
            .iter()
            .map(|s| s.spec.timeout * (s.spec.retries + 1) + backoff_total(s.spec.retries))
            .max()
            .unwrap_or_default()
            + Duration::from_secs(2)
    }

    pub fn health(&self) -> Vec<SinkHealth> {
        self.sinks
            .iter()
            .map(|s| {
                let mut h = lock(&s.health).clone();
                h.queued = s.queue.len();
                h
            })
            .collect()
    }
}

impl Drop for Sinks {
    fn drop(&mut self) {
        for s in &self.sinks {
            s.queue.close();
        }
    }
}

fn accepts(spec: &SinkSpec, n: &AlertNotice) -> bool {
    if n.severity < spec.min_severity {
        return false;
    }
    if let Some(kinds) = &spec.kinds {
        if !kinds.contains(&n.kind) {
            return false;
        }
    }
    if let Some(jobs) = &spec.jobs {
        if !n.job.as_ref().is_some_and(|j| jobs.contains(j)) {
            return false;
        }
    }
    // A failing sink is not told about its own failure.
    if n.kind == "alert_delivery_failed"
        && n.details["sinks"]
            .as_array()
            .is_some_and(|a| a.iter().any(|s| *s == *spec.name))
    {
        return false;
    }
    true
}

fn enqueue(s: &Sink, item: Item) {
    if s.queue.push(item) {
        lock(&s.health).dropped += 1;
        tracing::warn!(sink = %s.spec.name, "alert queue full; dropped the oldest notice");
    }
}

pub(crate) fn backoff(attempt: u32) -> Duration {
    (Duration::from_millis(500) * 2u32.saturating_pow(attempt)).min(Duration::from_secs(30))
}

fn backoff_total(retries: u32) -> Duration {
    (0..retries).map(backoff).sum()
}

fn run(spec: SinkSpec, queue: BoundedQueue<Item>, health: Arc<Mutex<SinkHealth>>, reaper: Reaper) {
    let agent = ureq::AgentBuilder::new().timeout(spec.timeout).build();
    while let Some(item) = queue.pop() {
        let mut result = Err(String::new());
        for attempt in 0..=spec.retries {
            result = deliver(&spec, &agent, &reaper, &item.notice);
            match &result {
                Ok(()) => break,
                Err(e) if attempt < spec.retries => {
                    tracing::warn!(sink = %spec.name, attempt = attempt + 1, "alert delivery failed: {e}; retrying");
                    std::thread::sleep(backoff(attempt));
                }
                Err(_) => {}
            }
        }
        {
            let mut h = lock(&health);
            match &result {
                Ok(()) => {
                    h.delivered += 1;
                    h.last_success = Some(Timestamp::now());
                    h.consecutive_failures = 0;
                }
                Err(e) => {
                    h.failed += 1;
                    h.consecutive_failures += 1;
                    h.last_error = Some(e.clone());
                    h.last_error_at = Some(Timestamp::now());
                    tracing::error!(sink = %spec.name, kind = %item.notice.kind, "alert not delivered after {} attempt(s): {e}", spec.retries + 1);
                }
            }
        }
        if let Some(r) = item.report {
            let _ = r.send((spec.name.clone(), result));
        }
    }
}

fn text(n: &AlertNotice) -> String {
    let icon = match n.event.as_str() {
        "resolved" => "RESOLVED",
        _ => match n.severity {
            cronwarden_shared::status::Severity::Critical => "CRITICAL",
            cronwarden_shared::status::Severity::Warning => "WARNING",
            cronwarden_shared::status::Severity::Info => "INFO",
        },
    };
    format!("[cronwarden {}] {icon} {}: {}", n.host, n.kind, n.summary)
}

fn deliver(
    spec: &SinkSpec,
    agent: &ureq::Agent,
    reaper: &Reaper,
    n: &AlertNotice,
) -> Result<(), String> {
    match &spec.kind {
        SinkKind::Webhook {
            url,
            format,
            headers,
        } => {
            let body = match format {
                WebhookFormat::Json => serde_json::to_string(n).map_err(|e| e.to_string())?,
                WebhookFormat::Slack => serde_json::json!({ "text": text(n) }).to_string(),
            };
            let mut req = agent.post(url).set("Content-Type", "application/json");
            for (k, v) in headers {
                let value = match v {
                    HeaderValue::Literal(s) => s.clone(),
                    // Read at delivery, never logged.
                    HeaderValue::Env(var) => std::env::var(var).map_err(|_| {
                        format!("header {k}: environment variable {var} is not set")
                    })?,
                };
                req = req.set(k, &value);
            }
            match req.send_string(&body) {
                Ok(_) => Ok(()),
                Err(ureq::Error::Status(code, _)) => Err(format!("HTTP {code} from the webhook")),
                Err(e) => Err(format!("webhook: {}", e.kind())),
            }
        }
        SinkKind::Exec { argv } => {
            let mut cmd = Command::new(&argv[0]);
            cmd.args(&argv[1..])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .process_group(0)
                .env("CRONWARDEN_ALERT_EVENT", &n.event)
                .env("CRONWARDEN_ALERT_KIND", &n.kind)
                .env("CRONWARDEN_ALERT_JOB", n.job.as_deref().unwrap_or(""))
                .env("CRONWARDEN_ALERT_SEVERITY", n.severity.as_str())
                .env("CRONWARDEN_ALERT_SUMMARY", &n.summary)
                .env("CRONWARDEN_ALERT_OPENED_AT", n.opened_at.to_string())
                .env(
                    "CRONWARDEN_ALERT_RESOLVED_AT",
                    n.resolved_at.map(|t| t.to_string()).unwrap_or_default(),
                )
                .env("CRONWARDEN_ALERT_HOST", &n.host);
            // std's spawn reaps a child that failed to exec itself; our reaper
            // may get there first, which std answers with a panic. Contained.
            let spawned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cmd.spawn()))
                .map_err(|_| format!("cannot start {:?}", argv[0]))?;
            let mut child = spawned.map_err(|e| format!("cannot start {:?}: {e}", argv[0]))?;
            let pid = child.id();
            let status = reaper.watch(pid);
            if let Some(mut stdin) = child.stdin.take() {
                // A sink that does not read its stdin must not block us: the
                // notice is small (well under a pipe's buffer).
                let _ = stdin.write_all(&serde_json::to_vec(n).unwrap_or_default());
            }
            // `child` is dropped without wait(): the reaper owns its status.
            drop(child);
            match status.recv_timeout(spec.timeout) {
                Ok(0) => Ok(()),
                Ok(code) => Err(format!("{:?} exited with status {code}", argv[0])),
                Err(_) => {
                    spawn::signal_group(pid, Signal::SIGKILL);
                    let _ = status.recv_timeout(Duration::from_secs(2));
                    Err(format!(
                        "{:?} did not finish within {}s; killed",
                        argv[0],
                        spec.timeout.as_secs()
                    ))
                }
            }
        }
    }
}
