//! Alerts: one per condition (kind + job), opened when the condition
//! appears and resolved when it clears, never re-sent every tick.
//!
//! The book is evaluated by the supervisor's loop; what it opens and
//! resolves is logged at once and handed to the [`Recorder`] thread, which
//! writes the history to the store off the loop (a slow disk never delays
//! heartbeat processing). Open alerts are reloaded at start, so a restart
//! neither duplicates an alert nor forgets one: a condition that still holds
//! stays open, one that cleared is resolved once.

use cronwarden_shared::alert_kind::AlertKind;
use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc::{channel, Sender},
        Arc,
    },
};

use cronwarden_shared::{
    status::{Alert, AlertNotice, Severity, State},
    store::Store,
};
use jiff::Timestamp;
use serde_json::Value;

/// Something wrong, as computed from observations.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub kind: AlertKind,
    pub job: Option<String>,
    pub severity: Severity,
    /// What it does to the overall state.
    pub state: State,
    pub summary: String,
    pub details: Value,
    /// Whether it is alerted (a worker that is merely starting is `down`
    /// in the status but is no alert).
    pub alert: bool,
}

#[derive(Debug, Clone)]
struct Open {
    severity: Severity,
    summary: String,
    details: Value,
    opened_at: Timestamp,
    /// When the last notice (opened or reminder) went out.
    notified_at: Timestamp,
}

pub type Key = (AlertKind, Option<String>);

#[derive(Debug, Default)]
pub struct AlertBook {
    open: BTreeMap<Key, Open>,
    host: String,
}

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

impl AlertBook {
    pub fn new(restored: Vec<AlertNotice>) -> Self {
        let mut open = BTreeMap::new();
        for a in restored {
            open.insert(
                (a.kind, a.job),
                Open {
                    severity: a.severity,
                    summary: a.summary,
                    details: a.details,
                    opened_at: a.opened_at,
                    notified_at: Timestamp::now(),
                },
            );
        }
        AlertBook {
            open,
            host: hostname(),
        }
    }

    fn notice(
        &self,
        event: &str,
        key: &Key,
        o: &Open,
        resolved_at: Option<Timestamp>,
    ) -> AlertNotice {
        AlertNotice {
            event: event.into(),
            kind: key.0,
            job: key.1.clone(),
            severity: o.severity,
            summary: o.summary.clone(),
            opened_at: o.opened_at,
            resolved_at,
            host: self.host.clone(),
            details: o.details.clone(),
        }
    }

    /// Brings the open set in line with `conditions`; returns what opened,
    /// what is due a reminder (every `repeat_after`, when set) and what
    /// resolved.
    pub fn update(
        &mut self,
        conditions: &[Condition],
        now: Timestamp,
        repeat_after: Option<std::time::Duration>,
    ) -> Vec<AlertNotice> {
        let repeat = repeat_after.and_then(|d| jiff::SignedDuration::try_from(d).ok());
        let mut out = vec![];
        let mut current: BTreeMap<Key, &Condition> = BTreeMap::new();
        for c in conditions.iter().filter(|c| c.alert) {
            current.entry((c.kind, c.job.clone())).or_insert(c);
        }
        for (key, c) in &current {
            match self.open.get_mut(key) {
                Some(o) => {
                    // Still open: keep the summary fresh for the status; no
                    // notice unless a reminder is due.
                    o.summary = c.summary.clone();
                    o.details = c.details.clone();
                    o.severity = o.severity.max(c.severity);
                    if repeat.is_some_and(|r| now.duration_since(o.notified_at) >= r) {
                        o.notified_at = now;
                        let o = o.clone();
                        out.push(self.notice("reminder", key, &o, None));
                    }
                }
                None => {
                    let o = Open {
                        severity: c.severity,
                        summary: c.summary.clone(),
                        details: c.details.clone(),
                        opened_at: now,
                        notified_at: now,
                    };
                    out.push(self.notice("opened", key, &o, None));
                    self.open.insert(key.clone(), o);
                }
            }
        }
        let gone: Vec<Key> = self
            .open
            .keys()
            .filter(|k| !current.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(o) = self.open.remove(&key) {
                out.push(self.notice("resolved", &key, &o, Some(now)));
            }
        }
        out
    }

    /// This host's name in its notices: the machine's, or its `host` in
    /// the shared ledger (store = postgres), so a receiver can tell the
    /// hosts apart.
    pub fn set_host(&mut self, host: String) {
        self.host = host;
    }

    /// An open alert as an `opened` notice (an alert this host takes over
    /// from a peer, see `ownership`).
    pub fn opened_notice(&self, key: &Key) -> Option<AlertNotice> {
        let o = self.open.get(key)?;
        Some(self.notice("opened", key, o, None))
    }

    /// The open alerts' keys.
    pub fn keys(&self) -> Vec<Key> {
        self.open.keys().cloned().collect()
    }

    /// The open alerts as `reminder` notices, for the sinks that keep
    /// their own reminder cadence.
    pub fn reminders(&self) -> Vec<AlertNotice> {
        self.open
            .iter()
            .map(|(key, o)| self.notice("reminder", key, o, None))
            .collect()
    }

    /// The open alerts, for the status.
    pub fn list(&self) -> Vec<Alert> {
        self.open
            .iter()
            .map(|((kind, job), o)| Alert {
                kind: *kind,
                job: job.clone(),
                severity: o.severity,
                opened_at: o.opened_at,
                resolved_at: None,
                summary: o.summary.clone(),
                owner: None,
            })
            .collect()
    }
}

/// Logs a notice the way operators grep for it. Every notice is at WARN or
/// above, so that `CRONWARDEN_LOG=warn` (or a log shipper keeping only
/// warnings) still sees every alert and every recovery: a critical alert
/// (opened or still open) is an ERROR, the rest (info news such as a
/// restart, warnings, resolves) a WARN.
pub fn log(n: &AlertNotice) {
    let job = n.job.as_deref().unwrap_or("-");
    match (n.event.as_str(), n.severity) {
        ("resolved", _) => {
            tracing::warn!(kind = %n.kind, job, event = %n.event, "alert resolved: {}", n.summary)
        }
        ("reminder", Severity::Critical) => {
            tracing::error!(kind = %n.kind, job, event = %n.event, "alert still open: {}", n.summary)
        }
        ("reminder", _) => {
            tracing::warn!(kind = %n.kind, job, event = %n.event, "alert still open: {}", n.summary)
        }
        (_, Severity::Critical) => {
            tracing::error!(kind = %n.kind, job, event = %n.event, "alert: {}", n.summary)
        }
        _ => tracing::warn!(kind = %n.kind, job, event = %n.event, "alert: {}", n.summary),
    }
}

/// At most this many alert notices are held while the store fails; beyond,
/// the oldest are dropped and counted.
pub const MAX_HELD_NOTICES: usize = 10_000;
/// The longest wait between two retries of held notices.
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// Alert notices not yet written to the history, in order: held while the
/// store fails and retried (issue 14: `store_error` itself never reached
/// the alerts table, and resolves were lost), like the worker's writes.
#[derive(Debug, Default)]
pub struct HistoryQueue {
    held: std::collections::VecDeque<AlertNotice>,
    /// Notices dropped beyond [`MAX_HELD_NOTICES`].
    pub dropped: u64,
}

impl HistoryQueue {
    pub fn push(&mut self, n: AlertNotice) {
        if !matches!(n.event.as_str(), "opened" | "resolved") {
            return;
        }
        self.held.push_back(n);
        if self.held.len() > MAX_HELD_NOTICES {
            self.held.pop_front();
            self.dropped += 1;
            tracing::error!(
                dropped = self.dropped,
                "alert history: the store has failed too long; the oldest held notice is dropped"
            );
        }
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Writes the held notices in order until one fails; that one and the
    /// rest stay held. The error, if any.
    pub fn drain<E>(
        &mut self,
        mut write: impl FnMut(&AlertNotice) -> Result<(), E>,
    ) -> Result<(), E> {
        while let Some(n) = self.held.front() {
            write(n)?;
            self.held.pop_front();
        }
        Ok(())
    }
}

/// The most notices waiting for the history thread.
const HISTORY_QUEUE: usize = 4096;

/// Writes alert history to the store on its own thread.
pub struct Recorder {
    /// Unbounded, bounded by `queued`: std's bounded channel allocates
    /// and writes all its slots up front (740 KiB here, a tenth of the
    /// idle supervisor's memory, issue 18).
    tx: Sender<AlertNotice>,
    queued: Arc<AtomicUsize>,
}

impl Recorder {
    pub fn start(store: PathBuf) -> Recorder {
        let (tx, rx) = channel::<AlertNotice>();
        let queued = Arc::new(AtomicUsize::new(0));
        let q = queued.clone();
        std::thread::Builder::new()
            .name("alert-history".into())
            .spawn(move || record_history(&store, rx, &q))
            .expect("spawn alert history thread");
        Recorder { tx, queued }
    }

    pub fn record(&self, n: AlertNotice) {
        if self.queued.fetch_add(1, Ordering::SeqCst) >= HISTORY_QUEUE {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            tracing::error!(kind = %n.kind, "alert history queue full; this notice is not stored");
        } else if self.tx.send(n).is_err() {
            self.queued.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// The history thread: every notice is queued, then the queue written in
/// order; while the store fails the queue is held and retried with
/// backoff (new notices join it meanwhile).
fn record_history(
    store: &std::path::Path,
    rx: std::sync::mpsc::Receiver<AlertNotice>,
    queued: &AtomicUsize,
) {
    use std::sync::mpsc::RecvTimeoutError;
    let mut db: Option<Store> = None;
    let mut queue = HistoryQueue::default();
    let mut retry = std::time::Duration::from_millis(250);
    let mut failing: Option<String> = None;
    loop {
        let next = if queue.len() == 0 {
            rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
        } else {
            rx.recv_timeout(retry)
        };
        let closed = matches!(next, Err(RecvTimeoutError::Disconnected));
        let taken = |n| {
            queued.fetch_sub(1, Ordering::SeqCst);
            n
        };
        match next {
            Ok(n) => queue.push(taken(n)),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) if queue.len() == 0 => return,
            // The supervisor is stopping: one last try below, then done.
            Err(RecvTimeoutError::Disconnected) => {}
        }
        while let Ok(n) = rx.try_recv() {
            queue.push(taken(n));
        }
        let written = (|| {
            if db.is_none() {
                db = Some(Store::open(store)?);
            }
            let s = db.as_mut().expect("opened above");
            queue.drain(|n| match n.event.as_str() {
                "resolved" => s.alert_resolved(n),
                _ => s.alert_opened(n),
            })
        })();
        match written {
            Ok(()) => {
                if failing.take().is_some() {
                    tracing::info!(
                        "alert history: the store writes again; the held notices are stored"
                    );
                }
                retry = std::time::Duration::from_millis(250);
            }
            Err(e) => {
                let e = e.to_string();
                if failing.as_deref() != Some(e.as_str()) {
                    tracing::error!(
                        held = queue.len(),
                        "alert history: {e}; the notices are held and retried"
                    );
                }
                failing = Some(e);
                db = None;
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
        if closed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(kind: AlertKind, job: Option<&str>) -> Condition {
        Condition {
            kind,
            job: job.map(str::to_string),
            severity: Severity::Warning,
            state: State::Degraded,
            summary: format!("{kind} summary"),
            details: Value::Null,
            alert: true,
        }
    }

    #[test]
    fn opens_once_resolves_once() {
        let mut b = AlertBook::new(vec![]);
        let now = Timestamp::now();
        let c = [cond(AlertKind::JobLate, Some("a"))];
        let first = b.update(&c, now, None);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].event, "opened");
        assert!(
            b.update(&c, now, None).is_empty(),
            "re-alerted a persisting condition"
        );
        let gone = b.update(&[], now, None);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].event, "resolved");
        assert!(b.update(&[], now, None).is_empty());
    }

    #[test]
    fn reminders_come_every_repeat_after() {
        let mut b = AlertBook::new(vec![]);
        let t0 = Timestamp::now();
        let c = [cond(AlertKind::JobLate, Some("a"))];
        let every = Some(std::time::Duration::from_secs(60));
        assert_eq!(b.update(&c, t0, every)[0].event, "opened");
        assert!(b
            .update(&c, t0 + jiff::SignedDuration::from_secs(30), every)
            .is_empty());
        let r = b.update(&c, t0 + jiff::SignedDuration::from_secs(61), every);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].event, "reminder");
        assert!(b
            .update(&c, t0 + jiff::SignedDuration::from_secs(90), every)
            .is_empty());
    }

    #[test]
    fn restored_alerts_are_not_reopened() {
        let now = Timestamp::now();
        let mut b = AlertBook::new(vec![]);
        let opened = b.update(&[cond(AlertKind::WorkerStalled, None)], now, None);
        let mut again = AlertBook::new(opened);
        assert!(again
            .update(&[cond(AlertKind::WorkerStalled, None)], now, None)
            .is_empty());
        assert_eq!(again.update(&[], now, None)[0].event, "resolved");
    }

    #[test]
    fn history_is_held_in_order_while_the_store_fails() {
        let mut book = AlertBook::new(vec![]);
        let mut q = HistoryQueue::default();
        let at = Timestamp::from_second(1_893_456_000).unwrap();
        for n in book.update(&[cond(AlertKind::StoreError, None)], at, None) {
            q.push(n);
        }
        for n in book.update(&[], at, None) {
            q.push(n);
        }
        assert_eq!(q.len(), 2);
        let fail: Result<(), &str> = q.drain(|_| Err("disk full"));
        assert_eq!(fail, Err("disk full"));
        assert_eq!(q.len(), 2, "nothing is lost while the store fails");
        let mut written = vec![];
        q.drain(|n| {
            written.push((n.kind, n.event.clone()));
            Ok::<(), &str>(())
        })
        .unwrap();
        assert_eq!(
            written,
            [
                (AlertKind::StoreError, "opened".to_string()),
                (AlertKind::StoreError, "resolved".to_string())
            ]
        );
        assert_eq!(q.len(), 0);
    }
}
