//! The connection to one worker process: starting it with its pipes, reading
//! its event lines, reaping exited children, and the restart backoff.
//!
//! Invariants: commands are written by a task of their own, so a worker that
//! stops reading its stdin blocks that task, never the supervisor's loop;
//! event lines are framed with a maximum length, so a worker cannot make the
//! supervisor buffer without bound; every wait here has a bound. What an
//! exit or a line *means* is decided by the loop and the model, not here.

use std::{os::fd::BorrowedFd, path::Path, time::Duration};

use cronwarden_shared::wire::{encode, Command, Frame, LineCodec, MAX_LINE};
use futures_util::StreamExt;
use nix::{
    sys::wait::{waitpid, WaitPidFlag, WaitStatus},
    unistd::Pid,
};
use tokio::{io::AsyncWriteExt, net::unix::pipe, sync::mpsc};
use tokio_util::codec::FramedRead;

use crate::spawn;

/// A running worker as the loop sees it.
pub(crate) struct WorkerConn {
    pub(crate) pid: u32,
    /// `None` once the pipe ended (EOF or a read error); SIGCHLD or the
    /// stall deadline tells the rest.
    pub(crate) events: Option<FramedRead<pipe::Receiver, LineCodec>>,
    pub(crate) commands: mpsc::Sender<Command>,
    /// Set when we killed it, to say why in the status.
    pub(crate) killed_because: Option<String>,
}

/// How the loop starts a worker: what every worker gets the same.
pub(crate) struct Launch<'a> {
    pub(crate) exe: &'a Path,
    pub(crate) lock: BorrowedFd<'a>,
    pub(crate) log_json: bool,
    pub(crate) log_files: Option<(&'a Path, u32)>,
}

impl WorkerConn {
    /// Starts a worker whose run ids begin at `first_run_id` and queues
    /// `first` as its first commands (`adopt`s, then `configure`).
    pub(crate) fn start(
        launch: &Launch<'_>,
        first_run_id: u64,
        first: Vec<Command>,
    ) -> std::io::Result<WorkerConn> {
        let spawned = spawn::spawn_worker(
            launch.exe,
            launch.lock,
            first_run_id,
            launch.log_json,
            launch.log_files,
        )?;
        let events = match pipe::Receiver::from_owned_fd(spawned.events) {
            Ok(r) => Some(FramedRead::new(r, LineCodec::new(MAX_LINE))),
            Err(e) => {
                tracing::error!("worker event pipe unusable: {e}");
                None
            }
        };
        let (tx, mut rx) = mpsc::channel::<Command>(1024);
        match pipe::Sender::from_owned_fd(spawned.commands) {
            Ok(mut w) => {
                tokio::task::spawn_local(async move {
                    while let Some(cmd) = rx.recv().await {
                        if w.write_all(&encode(&cmd)).await.is_err() {
                            return;
                        }
                    }
                });
            }
            Err(e) => tracing::error!("worker command pipe unusable: {e}"),
        }
        for cmd in first {
            let _ = tx.try_send(cmd);
        }
        Ok(WorkerConn {
            pid: spawned.pid,
            events,
            commands: tx,
            killed_because: None,
        })
    }
}

/// The worker's next event line; pending forever while there is no worker
/// or its pipe has ended, so a `select!` arm on it simply never fires.
pub(crate) async fn next_line(w: &mut Option<WorkerConn>) -> Option<std::io::Result<Frame>> {
    match w.as_mut().and_then(|w| w.events.as_mut()) {
        Some(ev) => ev.next().await,
        None => std::future::pending().await,
    }
}

/// Reaps every child that has exited, without blocking: the worker, an
/// orphaned job reparented to us (we are a subreaper), a sink's child.
pub(crate) fn reap_exited() -> impl Iterator<Item = (u32, WaitStatus)> {
    std::iter::from_fn(
        || match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => None,
            Ok(status) => status.pid().map(|p| (p.as_raw() as u32, status)),
        },
    )
}

/// How a worker ended, for the log and the status ("exited with code 1").
pub(crate) fn how_it_ended(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exited with code {code}"),
        WaitStatus::Signaled(_, s, _) => format!("was killed by {s}"),
        WaitStatus::Stopped(_, s) => format!("was stopped by {s}"),
        WaitStatus::Continued(_) => "was continued".into(),
        // ptrace stops and StillAlive: not an end, but never Debug text.
        _ => "changed state".into(),
    }
}

/// A wait code as a shell reports it: the exit status, or 128 + signal.
pub(crate) fn wait_code(status: WaitStatus) -> i32 {
    match status {
        WaitStatus::Exited(_, c) => c,
        WaitStatus::Signaled(_, sig, _) => 128 + sig as i32,
        _ => -1,
    }
}

/// Waits up to a second for `pid` to be reapable and reaps it, never
/// blocking: a process in D state may not die at once.
pub(crate) async fn reap_within_a_second(pid: u32) {
    for _ in 0..100 {
        if !matches!(
            waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG)),
            Ok(WaitStatus::StillAlive)
        ) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Restart backoff: the first restart is immediate (a crashed worker is
/// replaced within milliseconds); repeated crashes back off exponentially
/// from 100 ms to 30 s; a worker that stayed up a minute resets it.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    failures: u32,
}

impl Backoff {
    const HEALTHY_AFTER: Duration = Duration::from_secs(60);
    const CAP: Duration = Duration::from_secs(30);

    pub(crate) fn next_delay(&mut self, lived: Duration) -> Duration {
        if lived >= Self::HEALTHY_AFTER {
            self.failures = 0;
        }
        let delay = match self.failures {
            0 => Duration::ZERO,
            n => (Duration::from_millis(100) * 2u32.saturating_pow(n - 1)).min(Self::CAP),
        };
        self.failures = self.failures.saturating_add(1);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_immediate_then_exponential_then_capped_and_resets() {
        let mut b = Backoff::default();
        let short = Duration::from_millis(10);
        assert_eq!(b.next_delay(short), Duration::ZERO);
        assert_eq!(b.next_delay(short), Duration::from_millis(100));
        assert_eq!(b.next_delay(short), Duration::from_millis(200));
        for _ in 0..20 {
            b.next_delay(short);
        }
        assert_eq!(b.next_delay(short), Duration::from_secs(30));
        assert_eq!(b.next_delay(Duration::from_secs(120)), Duration::ZERO);
    }
}
