//! The event pipe to the supervisor.
//!
//! The scheduling loop never writes to the pipe itself: it hands events to a
//! bounded queue and a writer task drains it, so a supervisor that stops
//! reading (SIGSTOP, overload) can never block the loop. When the queue is
//! full, events are dropped; the supervisor's own model (past-due checks)
//! notices what it did not hear.

use std::os::fd::OwnedFd;

use cronwarden_shared::wire::{encode, Event};
use tokio::{io::AsyncWriteExt, net::unix::pipe, sync::mpsc};

const QUEUE: usize = 65_536;

#[derive(Clone)]
pub(crate) struct EventTx {
    tx: mpsc::Sender<Item>,
}

/// An event, and who waits until it is in the pipe.
type Item = (Event, Option<tokio::sync::oneshot::Sender<()>>);

impl EventTx {
    /// Queues an event; never blocks. Returns false if it was dropped.
    pub fn send(&self, ev: Event) -> bool {
        self.tx.try_send((ev, None)).is_ok()
    }

    /// Queues an event; the receiver resolves once it (and every event
    /// before it) is written to the pipe, where it outlives a `kill -9`
    /// of this process. It never resolves if the event was dropped or the
    /// pipe broke.
    pub fn send_written(&self, ev: Event) -> tokio::sync::oneshot::Receiver<()> {
        let (done, written) = tokio::sync::oneshot::channel();
        let _ = self.tx.try_send((ev, Some(done)));
        written
    }

    /// Queues an event that may be lost (a job's output line for
    /// followers) only while at least half the queue is free, so a
    /// supervisor that stops reading for a while still finds room for the
    /// events it judges by. Returns false if it was dropped.
    pub fn send_spare(&self, ev: Event) -> bool {
        self.tx.capacity() >= QUEUE / 2 && self.send(ev)
    }
}

/// Starts the writer task on `fd`. The returned receiver resolves when the
/// pipe is broken (the supervisor is gone).
#[allow(clippy::type_complexity)]
pub(crate) fn start(
    fd: OwnedFd,
) -> std::io::Result<(
    EventTx,
    tokio::sync::oneshot::Receiver<()>,
    tokio::task::JoinHandle<()>,
)> {
    let mut sender = pipe::Sender::from_owned_fd(fd)?;
    let (tx, mut rx) = mpsc::channel::<Item>(QUEUE);
    let (broken_tx, broken_rx) = tokio::sync::oneshot::channel();
    let writer = tokio::task::spawn_local(async move {
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut junk_written = false;
        while let Some((ev, done)) = rx.recv().await {
            buf.clear();
            buf.extend_from_slice(&encode(&ev));
            let mut waiting: Vec<_> = done.into_iter().collect();
            // Batch whatever else is already queued into one write.
            while buf.len() < 60 * 1024 {
                match rx.try_recv() {
                    Ok((ev, done)) => {
                        buf.extend_from_slice(&encode(&ev));
                        waiting.extend(done);
                    }
                    Err(_) => break,
                }
            }
            if let Err(e) = sender.write_all(&buf).await {
                tracing::error!("event pipe to the supervisor is broken ({e}); shutting down");
                let _ = broken_tx.send(());
                return;
            }
            for done in waiting {
                let _ = done.send(());
            }
            // Fault injection, once, after the first batch (the hello):
            // what a corrupted or confused writer could put on the pipe.
            if !junk_written && fail::eval("worker::junk_events", |_| ()).is_some() {
                junk_written = true;
                if let Err(e) = sender.write_all(&junk_lines()).await {
                    tracing::error!("event pipe to the supervisor is broken ({e}); shutting down");
                    let _ = broken_tx.send(());
                    return;
                }
            }
        }
    });
    Ok((EventTx { tx }, broken_rx, writer))
}

/// The lines `worker::junk_events` writes: binary junk, a 10 MiB line
/// (ten times the limit), invalid UTF-8 inside otherwise valid JSON, and a
/// line that is JSON but no event. Four bad lines; the next batch is good.
fn junk_lines() -> Vec<u8> {
    let mut junk = b"\x00\x01\x02\xfe\xff binary junk \x1b[2J\x7f\n".to_vec();
    junk.extend(std::iter::repeat_n(b'x', 10 * 1024 * 1024));
    junk.push(b'\n');
    junk.extend_from_slice(b"{\"type\":\"heartbeat\",\"seq\":\"\xc3\x28\xa0\xa1\"}\n");
    junk.extend_from_slice(b"{\"type\":\"no_such_event\"}\n");
    junk
}
