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
//! while it lives and no peer could take it over.

use std::{
    collections::VecDeque,
    sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError},
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
}

impl Link {
    /// Starts the thread; its answers come on the returned receiver.
    pub fn start(cfg: ClusterConfig) -> (Link, mpsc::Receiver<Answer>) {
        let (tx, rx) = sync_channel(QUEUE);
        let (answers, answers_rx) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("alert-owners".into())
            .spawn(move || run(&cfg, &rx, &answers))
            .expect("spawn alert ownership thread");
        (Link { tx }, answers_rx)
    }

    /// Queues a question; never waits.
    pub fn ask(&self, ask: Ask) {
        if let Err(TrySendError::Full(a)) = self.tx.try_send(ask) {
            tracing::warn!(
                "alert ownership: {QUEUE} questions wait for the database; dropped {a:?} (alerts go out without an owner meanwhile)"
            );
        }
    }
}

fn job(key: &Key) -> &str {
    key.1.as_deref().unwrap_or("")
}

/// The thread: one connection, made (again) when needed; questions in
/// order, failed releases first.
fn run(cfg: &ClusterConfig, rx: &Receiver<Ask>, answers: &mpsc::Sender<Answer>) {
    let mut ledger: Option<Ledger> = None;
    let mut releases: VecDeque<Key> = VecDeque::new();
    let mut failing: Option<String> = None;
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
            Err(RecvTimeoutError::Disconnected) => return,
        };
        // An alert open again takes (or keeps) its row: its old release
        // must not delete it.
        if let Some(Ask::Own(k)) = &ask {
            releases.retain(|r| r != k);
        }
        if let Some(Ask::Release(k)) = &ask {
            releases.push_back(k.clone());
        }
        let connected = match ledger.as_mut() {
            Some(l) => Ok(l),
            None => Ledger::connect(cfg).map(|l| ledger.insert(l)),
        };
        let l = match connected {
            Ok(l) => l,
            Err(e) => {
                if let Some(Ask::Own(key)) = ask {
                    let owner = Err(e.to_string());
                    if answers.blocking_send(Answer { key, owner }).is_err() {
                        return;
                    }
                }
                report(Err(e), &mut ledger);
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
