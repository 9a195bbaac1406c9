//! Alert sinks: where alerts reach people.
//!
//! Every sink has its own thread and a bounded queue: a slow or broken
//! sink delays only itself, never the supervisor's loop or another sink. A
//! full queue drops its oldest notice and counts it. Each delivery attempt
//! is bounded by the sink's `timeout`; failures are retried with
//! exponential backoff, then recorded in the sink's health (shown in the
//! status); a sink that keeps failing raises `alert_delivery_failed`, which
//! goes to the other sinks. A notice that failed is held and re-sent (from
//! 1s, doubling to 30s) until the sink takes it: the receiver gets what it
//! missed, in order, and the sink's recovery is seen (which resolves
//! `alert_delivery_failed`) even if no new alert comes to prove it.
//!
//! - `exec`: argv, with the notice as JSON on stdin and as
//!   `CRONWARDEN_ALERT_*` variables; killed (whole group) at its timeout.
//!   Its exit status comes from the supervisor's reaper ([`Reaper`]).
//! - `webhook`: HTTP POST with ureq (JSON, or `{"text": …}` for chat tools),
//!   headers optionally read from the environment.
//! - `alertmanager`: HTTP POST of the alert to Alertmanager's
//!   `/api/v2/alerts` ([`crate::alertmanager`]); the sink always keeps its
//!   own reminder cadence (`repeat_after`, default 1m), which re-pushes
//!   every open alert before its `endsAt`.

use cronwarden_shared::alert_kind::AlertKind;
use std::{
    collections::{BTreeMap, VecDeque},
    io::Write,
    os::unix::process::CommandExt,
    process::{Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use cronwarden_shared::{
    config::{HeaderValue, SinkKind, SinkSpec, WebhookFormat},
    proc_identity::ProcIdentity,
    status::{AlertNotice, SinkHealth},
};
use jiff::Timestamp;
use nix::sys::signal::Signal;

use crate::{
    alertmanager,
    queue::{BoundedQueue, Popped},
    reaper::Reaper,
    spawn,
};

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

/// An alert's key: kind and job.
type Key = (AlertKind, Option<String>);

struct Sink {
    spec: SinkSpec,
    queue: BoundedQueue<Item>,
    health: Arc<Mutex<SinkHealth>>,
    /// For a sink with its own `repeat_after`: when each open alert it
    /// accepted was last sent to it.
    notified: Mutex<BTreeMap<Key, Timestamp>>,
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
                        SinkKind::Alertmanager { .. } => "alertmanager".into(),
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
                    notified: Mutex::new(BTreeMap::new()),
                }
            })
            .collect();
        Sinks { sinks }
    }

    /// Queues a notice on every sink whose filters accept it.
    /// A sink with its own `repeat_after` takes no global reminders: it
    /// gets its own from [`Sinks::remind`].
    pub fn dispatch(&self, n: &AlertNotice) {
        for s in &self.sinks {
            if !accepts(&s.spec, n) {
                continue;
            }
            if s.spec.repeat_after.is_some() {
                let key = (n.kind, n.job.clone());
                let mut notified = lock(&s.notified);
                match n.event.as_str() {
                    "reminder" => continue,
                    "resolved" => {
                        notified.remove(&key);
                    }
                    _ => {
                        notified.insert(key, Timestamp::now());
                    }
                }
            }
            enqueue(
                s,
                Item {
                    notice: n.clone(),
                    report: None,
                },
            );
        }
    }

    /// Whether any sink keeps its own reminder cadence.
    pub fn reminds(&self) -> bool {
        self.sinks
            .iter()
            .any(|s| matches!(s.spec.repeat_after, Some(Some(_))))
    }

    /// Queues a reminder of every alert in `open` (notices of the open
    /// alerts, as `reminder`s) on each sink with its own `repeat_after`
    /// that was last told of it that long ago. An alert the sink has not
    /// been told of in this run (opened before a restart or a reload)
    /// counts from now, as the global reminders do.
    pub fn remind(&self, open: &[AlertNotice], now: Timestamp) {
        for s in &self.sinks {
            let Some(Some(every)) = s.spec.repeat_after else {
                continue;
            };
            let Ok(every) = jiff::SignedDuration::try_from(every) else {
                continue;
            };
            let mut notified = lock(&s.notified);
            notified.retain(|(kind, job), _| open.iter().any(|n| n.kind == *kind && n.job == *job));
            for n in open.iter().filter(|n| accepts(&s.spec, n)) {
                let at = notified.entry((n.kind, n.job.clone())).or_insert(now);
                if now.duration_since(*at) >= every {
                    *at = now;
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

    /// Sends `notice` through every sink and returns the wait for the
    /// results, to be run off the loop (a slow sink then delays only the
    /// caller): `{"ok", "sinks": {name: {"ok", "error"}}, "configured"}`.
    pub fn test_report(&self, notice: &AlertNotice) -> impl FnOnce() -> serde_json::Value + Send {
        let (n, results) = self.test(notice);
        let (bound, names) = (self.test_bound(), self.names());
        move || {
            let deadline = std::time::Instant::now() + bound;
            let mut out = serde_json::Map::new();
            for _ in 0..n {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                match results.recv_timeout(left) {
                    Ok((name, r)) => {
                        out.insert(
                            name,
                            match r {
                                Ok(()) => serde_json::json!({ "ok": true }),
                                Err(e) => serde_json::json!({ "ok": false, "error": e }),
                            },
                        );
                    }
                    Err(_) => break,
                }
            }
            // A sink too busy to answer in time is a failure to show,
            // not a line to leave out.
            for name in names {
                out.entry(name).or_insert_with(|| {
                    serde_json::json!({ "ok": false, "error": format!(
                        "no result within {}s: the sink is busy with earlier notices (see its queue in the status)",
                        bound.as_secs()
                    ) })
                });
            }
            let all_ok = out.len() == n && out.values().all(|v| v["ok"] == true);
            serde_json::json!({ "ok": all_ok, "sinks": out, "configured": n })
        }
    }

    /// The sinks' names, in config order.
    pub fn names(&self) -> Vec<String> {
        self.sinks.iter().map(|s| s.spec.name.clone()).collect()
    }

    /// The longest a test delivery can take on any sink, behind one
    /// delivery already under way (a failing sink is often re-sending).
    pub fn test_bound(&self) -> Duration {
        self.sinks
            .iter()
            .map(|s| s.spec.timeout * (s.spec.retries + 2) + backoff_total(s.spec.retries))
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
    if n.kind == AlertKind::AlertDeliveryFailed
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

/// A notice that failed every attempt waits this long before it is tried
/// again, doubling up to [`RESEND_MAX`]: a sink that comes back gets what
/// it missed, and its recovery is noticed even when nothing new is sent.
const RESEND_FIRST: Duration = Duration::from_secs(1);
const RESEND_MAX: Duration = Duration::from_secs(30);

/// One sink's thread: delivers its queue in order. A notice that fails all
/// its attempts is held (bounded, oldest dropped and counted) and re-sent
/// later; while some are held, new notices queue behind them so that a
/// receiver never sees a resolve before its open.
fn run(spec: SinkSpec, queue: BoundedQueue<Item>, health: Arc<Mutex<SinkHealth>>, reaper: Reaper) {
    let agent = ureq::AgentBuilder::new().timeout(spec.timeout).build();
    let mut held: VecDeque<AlertNotice> = VecDeque::new();
    let mut resend_wait = RESEND_FIRST;
    let mut resend_at: Option<Instant> = None;
    loop {
        let flush = match queue.pop_until(resend_at) {
            Popped::Closed => {
                if !held.is_empty() {
                    tracing::warn!(sink = %spec.name, held = held.len(), "sink stopped with undelivered notices");
                }
                return;
            }
            Popped::Item(item) => match item {
                Item {
                    notice,
                    report: Some(report),
                } => {
                    // `alerts test` wants an answer now, and a test notice is
                    // not worth re-sending: it is tried once (with retries),
                    // and a success proves the sink is back for the held ones.
                    let result = attempts(&spec, &agent, &reaper, &notice, spec.retries);
                    record(&spec, &health, &notice, &result);
                    let ok = result.is_ok();
                    let _ = report.send((spec.name.clone(), result));
                    ok && !held.is_empty()
                }
                Item { notice, .. } => {
                    if held.len() >= QUEUE_CAP {
                        held.pop_front();
                        lock(&health).dropped += 1;
                        tracing::warn!(sink = %spec.name, "too many undelivered notices; dropped the oldest");
                    }
                    held.push_back(notice);
                    // Counted before the try, which may take its timeout.
                    lock(&health).undelivered = held.len();
                    true
                }
            },
            Popped::TimedOut => true,
        };
        if flush {
            // The first try of a notice gets the sink's retries; a re-send is
            // a retry already, and is tried once.
            while let Some(n) = held.front() {
                let first = resend_at.is_none();
                let result = attempts(
                    &spec,
                    &agent,
                    &reaper,
                    n,
                    if first { spec.retries } else { 0 },
                );
                record(&spec, &health, n, &result);
                if result.is_ok() {
                    held.pop_front();
                    resend_at = None;
                    resend_wait = RESEND_FIRST;
                } else {
                    resend_at = Some(Instant::now() + resend_wait);
                    resend_wait = (resend_wait * 2).min(RESEND_MAX);
                    break;
                }
            }
        }
        lock(&health).undelivered = held.len();
    }
}

/// Delivers `n`, trying again `retries` times with backoff.
fn attempts(
    spec: &SinkSpec,
    agent: &ureq::Agent,
    reaper: &Reaper,
    n: &AlertNotice,
    retries: u32,
) -> Result<(), String> {
    let mut attempt = 0;
    loop {
        match deliver(spec, agent, reaper, n) {
            Ok(()) => return Ok(()),
            Err(e) if attempt < retries => {
                tracing::warn!(sink = %spec.name, attempt = attempt + 1, "alert delivery failed: {e}; retrying");
                std::thread::sleep(backoff(attempt));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

fn record(
    spec: &SinkSpec,
    health: &Mutex<SinkHealth>,
    n: &AlertNotice,
    result: &Result<(), String>,
) {
    let mut h = lock(health);
    match result {
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
            tracing::error!(sink = %spec.name, kind = %n.kind, event = %n.event, "alert not delivered: {e}");
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

/// POSTs a JSON `body` with `headers`; `peer` names the receiver in errors.
fn post_json(
    agent: &ureq::Agent,
    url: &str,
    headers: &[(String, HeaderValue)],
    body: &str,
    peer: &str,
) -> Result<(), String> {
    let mut req = agent.post(url).set("Content-Type", "application/json");
    for (k, v) in headers {
        let value = match v {
            HeaderValue::Literal(s) => s.clone(),
            // Read at delivery, never logged.
            HeaderValue::Env(var) => std::env::var(var)
                .map_err(|_| format!("header {k}: environment variable {var} is not set"))?,
        };
        req = req.set(k, &value);
    }
    match req.send_string(body) {
        Ok(_) => Ok(()),
        Err(ureq::Error::Status(code, _)) => Err(format!("HTTP {code} from the {peer}")),
        Err(e) => Err(format!("{peer}: {}", e.kind())),
    }
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
            post_json(agent, url, headers, &body, "webhook")
        }
        SinkKind::Alertmanager { url, headers } => {
            let every = spec
                .repeat_after
                .flatten()
                .unwrap_or(cronwarden_shared::config::ALERTMANAGER_REPEAT);
            let body = alertmanager::body(n, Timestamp::now(), every).to_string();
            post_json(
                agent,
                &alertmanager::endpoint(url),
                headers,
                &body,
                "Alertmanager",
            )
        }
        SinkKind::Exec { argv } => {
            let mut cmd = Command::new(&argv[0]);
            cmd.args(&argv[1..])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .process_group(0)
                .env("CRONWARDEN_ALERT_EVENT", &n.event)
                .env("CRONWARDEN_ALERT_KIND", n.kind.as_str())
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
            // Taken at once: by the timeout the reaper may have reaped it
            // and the kernel given its pid to someone else. One that has
            // already exited has no identity and needs no signal.
            let leader = ProcIdentity::of(pid);
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
                    if let Some(leader) = &leader {
                        spawn::signal_identified_group(leader, Signal::SIGKILL);
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use cronwarden_shared::status::Severity;

    fn notice(i: usize) -> AlertNotice {
        AlertNotice {
            event: "opened".into(),
            kind: AlertKind::JobFailing,
            job: Some(format!("j{i}")),
            severity: Severity::Warning,
            summary: format!("n{i}"),
            opened_at: Timestamp::now(),
            resolved_at: None,
            host: "h".into(),
            details: serde_json::Value::Null,
        }
    }

    fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A webhook sink whose receiver never accepts: the kernel completes
    /// the connection, the request is written, and the answer never comes,
    /// so the sink thread stays in its first delivery while its queue
    /// fills behind it, for the test to look at.
    fn stuck(
        name: &str,
        listener: &std::net::TcpListener,
        repeat_after: Option<Option<Duration>>,
    ) -> SinkSpec {
        SinkSpec {
            name: name.into(),
            kind: SinkKind::Webhook {
                url: format!("http://{}/hook", listener.local_addr().unwrap()),
                format: WebhookFormat::Json,
                headers: vec![],
            },
            timeout: Duration::from_secs(120),
            retries: 0,
            kinds: None,
            jobs: None,
            min_severity: Severity::Info,
            repeat_after,
        }
    }

    fn queued(sinks: &Sinks) -> Vec<usize> {
        sinks.health().iter().map(|h| h.queued).collect()
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_it() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let sinks = Sinks::start(&[stuck("slow", &listener, None)], &Reaper::default());
        sinks.dispatch(&notice(0));
        wait_for("the sink thread to take the first notice", || {
            sinks.health()[0].queued == 0
        });
        let extra = 44;
        for i in 1..=QUEUE_CAP + extra {
            sinks.dispatch(&notice(i));
        }
        let h = &sinks.health()[0];
        assert_eq!((h.dropped, h.queued), (extra as u64, QUEUE_CAP), "{h:?}");
        assert_eq!((h.delivered, h.failed), (0, 0), "{h:?}");
        let summaries = |i: Option<&Item>| i.map(|i| i.notice.summary.clone());
        let (front, back) = sinks.sinks[0]
            .queue
            .inspect(|q| (summaries(q.front()), summaries(q.back())));
        assert_eq!(
            front,
            Some(format!("n{}", extra + 1)),
            "not the oldest were dropped"
        );
        assert_eq!(back, Some(format!("n{}", QUEUE_CAP + extra)));
    }

    #[test]
    fn a_sink_with_its_own_repeat_after_gets_its_own_reminders_only() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let minute = Duration::from_secs(60);
        let sinks = Sinks::start(
            &[
                stuck("own", &listener, Some(Some(minute))),
                stuck("global", &listener, None),
                stuck("never", &listener, Some(None)),
            ],
            &Reaper::default(),
        );
        assert!(sinks.reminds());
        let opened = notice(1);
        sinks.dispatch(&opened);
        wait_for("every sink thread busy with the opened notice", || {
            queued(&sinks) == [0, 0, 0]
        });
        let reminder = AlertNotice {
            event: "reminder".into(),
            ..opened.clone()
        };
        let t0 = Timestamp::now();
        let at = |s: i64| t0 + jiff::SignedDuration::from_secs(s);
        sinks.remind(std::slice::from_ref(&reminder), at(30));
        assert_eq!(queued(&sinks), [0, 0, 0], "reminded before its time");
        sinks.remind(std::slice::from_ref(&reminder), at(61));
        assert_eq!(queued(&sinks), [1, 0, 0]);
        sinks.remind(std::slice::from_ref(&reminder), at(90));
        assert_eq!(queued(&sinks), [1, 0, 0], "reminded twice in a minute");
        // A global reminder reaches only the sink that follows the global
        // cadence.
        sinks.dispatch(&reminder);
        assert_eq!(queued(&sinks), [1, 1, 0]);
        // Resolved: no more reminders, whatever the time.
        sinks.dispatch(&AlertNotice {
            event: "resolved".into(),
            resolved_at: Some(at(100)),
            ..opened.clone()
        });
        assert_eq!(queued(&sinks), [2, 2, 1]);
        sinks.remind(&[], at(500));
        sinks.remind(std::slice::from_ref(&reminder), at(501));
        assert_eq!(
            queued(&sinks),
            [2, 2, 1],
            "an alert seen again after its resolve counts from then"
        );
    }
}
