//! The supervisor's own connection to the shared ledger (store =
//! postgres), for the alert ownership of [`crate::ownership`]: a thread
//! of its own asks the database, in order, and answers on a channel the
//! loop reads, so the loop never waits for the database. Every statement
//! is bounded by the ledger's statement timeout; the loop bounds its own
//! wait for an answer (`ownership::ANSWER_WITHIN`) and delivers without
//! one.
//!
//! A release that fails is kept and tried again before the next question
//! (and every few seconds), or the row would hold the alert for this host
//! while it lives and no peer could take it over. For the same reason a
//! release is never dropped: releases have a queue of their own without a
//! bound (one per alert resolved, each a key), only questions of
//! ownership, which the loop asks again, can be dropped on a full queue.

use std::{
    collections::VecDeque,
    sync::mpsc::{
        channel, sync_channel, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError,
    },
    time::Duration,
};

use cronwarden_shared::{
    cluster::{Ledger, LedgerError},
    config::ClusterConfig,
};
use tokio::sync::mpsc;

use crate::ownership::{Ask, Key};

/// Questions waiting for the thread at most; beyond, the newest is
/// dropped (the loop delivers without an answer, and asks again).
const QUEUE: usize = 1024;
/// How often failed releases are tried again while nothing is asked.
const RETRY_EVERY: Duration = Duration::from_secs(3);

/// The ledger's answer to [`Ask::Own`]: the owner, or why there is none.
#[derive(Debug)]
pub struct Answer {
    pub key: Key,
    pub owner: Result<String, String>,
}

pub struct Link {
    tx: SyncSender<Ask>,
    releases: Sender<Key>,
    /// Questions dropped on a full queue (logged at powers of two).
    dropped: std::cell::Cell<u64>,
}

impl Link {
    /// Starts the thread; its answers come on the returned receiver.
    pub fn start(cfg: ClusterConfig) -> (Link, mpsc::Receiver<Answer>) {
        let (tx, rx) = sync_channel(QUEUE);
        let (releases, releases_rx) = channel();
        let (answers, answers_rx) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("alert-owners".into())
            .spawn(move || run(&cfg, &rx, &releases_rx, &answers))
            .expect("spawn alert ownership thread");
        (
            Link {
                tx,
                releases,
                dropped: Default::default(),
            },
            answers_rx,
        )
    }

    /// Queues a question; never waits.
    pub fn ask(&self, ask: Ask) {
        let ask = match ask {
            Ask::Release(key) => {
                // The thread is gone only when the loop dropped the link.
                let _ = self.releases.send(key);
                return;
            }
            ask => ask,
        };
        if let Err(TrySendError::Full(a)) = self.tx.try_send(ask) {
            let dropped = self.dropped.get() + 1;
            self.dropped.set(dropped);
            if dropped.is_power_of_two() {
                tracing::warn!(
                    dropped,
                    "alert ownership: {QUEUE} questions wait for the database; dropped {a:?} (alerts go out without an owner meanwhile)"
                );
            }
        }
    }
}

fn job(key: &Key) -> &str {
    key.1.as_deref().unwrap_or("")
}

/// The thread: one connection, made (again) when needed; questions in
/// order, failed releases first.
fn run(
    cfg: &ClusterConfig,
    rx: &Receiver<Ask>,
    release_rx: &Receiver<Key>,
    answers: &mpsc::Sender<Answer>,
) {
    let mut ledger: Option<Ledger> = None;
    let mut releases: VecDeque<Key> = VecDeque::new();
    let mut failing: Option<String> = None;
    // A database that cannot be reached is tried again after RETRY_EVERY,
    // not once per question: meanwhile questions are answered at once
    // with the last error (the loop then delivers without an owner).
    let mut down_since: Option<(std::time::Instant, String)> = None;
    let mut report = |r: Result<(), LedgerError>, ledger: &mut Option<Ledger>| match r {
        Ok(()) => {
            if failing.take().is_some() {
                tracing::info!("alert ownership: the shared ledger answers again");
            }
        }
        Err(e) => {
            let e = e.to_string();
            if failing.as_deref() != Some(e.as_str()) {
                tracing::warn!("alert ownership: {e}; alerts go out without an owner meanwhile");
            }
            failing = Some(e);
            *ledger = None;
        }
    };
    loop {
        let ask = match rx.recv_timeout(RETRY_EVERY) {
            Ok(a) => Some(a),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                // The loop let go of the link (a reload): its releases
                // are tried once more, or their rows would hold alerts
                // this host no longer has.
                releases.extend(release_rx.try_iter());
                if let Some(l) = ledger.as_mut() {
                    for k in releases {
                        let _ = l.close_alert(k.0.as_str(), job(&k));
                    }
                }
                return;
            }
        };
        // Releases sent before this question are taken first, so that an
        // alert open again takes (or keeps) its row: its old release must
        // not delete it.
        releases.extend(release_rx.try_iter());
        if let Some(Ask::Own(k)) = &ask {
            releases.retain(|r| r != k);
        }
        let connected = match (ledger.as_mut(), &down_since) {
            (Some(l), _) => Ok(l),
            (None, Some((at, e))) if at.elapsed() < RETRY_EVERY => Err(e.clone()),
            (None, _) => Ledger::connect(cfg).map(|l| ledger.insert(l)).map_err(|e| {
                let text = e.to_string();
                down_since = Some((std::time::Instant::now(), text.clone()));
                report(Err(e), &mut None);
                text
            }),
        };
        let l = match connected {
            Ok(l) => {
                down_since = None;
                l
            }
            Err(e) => {
                if let Some(Ask::Own(key)) = ask {
                    if answers
                        .blocking_send(Answer { key, owner: Err(e) })
                        .is_err()
                    {
                        return;
                    }
                }
                continue;
            }
        };
        let mut result = Ok(());
        while let Some(k) = releases.front() {
            match l.close_alert(k.0.as_str(), job(k)) {
                Ok(()) => {
                    releases.pop_front();
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if let Some(Ask::Own(key)) = ask {
            let owner = match &result {
                // The connection just failed: the answer is that error.
                Err(e) => Err(e.to_string()),
                Ok(()) => l.own_alert(key.0.as_str(), job(&key)).map_err(|e| {
                    let text = e.to_string();
                    result = Err(e);
                    text
                }),
            };
            if answers.blocking_send(Answer { key, owner }).is_err() {
                return;
            }
        }
        report(result, &mut ledger);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cronwarden_shared::alert_kind::AlertKind;

    /// A database nobody serves: every question is answered with the
    /// error (the second from the remembered one, without connecting), so
    /// the loop delivers without an owner.
    #[test]
    fn an_unreachable_database_answers_with_its_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (link, mut answers) = Link::start(ClusterConfig {
            url: format!("postgres://nobody@127.0.0.1:{port}/none"),
            host: "h0".into(),
            lease: Duration::from_secs(30),
        });
        let key = (AlertKind::JobFailing, Some("j".to_string()));
        for _ in 0..2 {
            link.ask(Ask::Release(key.clone()));
            link.ask(Ask::Own(key.clone()));
            let a = answers.blocking_recv().expect("an answer");
            assert_eq!(a.key, key);
            let e = a.owner.unwrap_err();
            assert!(e.contains("connect"), "{e}");
        }
    }
}
