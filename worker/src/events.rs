//! The event pipe to the supervisor.
//!
//! The scheduling loop never writes to the pipe itself: it hands events to a
//! bounded queue and a writer task drains it, so a supervisor that stops
//! reading (SIGSTOP, overload) can never block the loop. When the queue is
//! full, events are dropped; the supervisor's own model (past-due checks)
//! notices what it did not hear.

use std::{
    io::Write,
    os::fd::{AsFd, AsRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::ThreadId,
};

use cronwarden_shared::wire::{encode, Event};
use tokio::{io::AsyncWriteExt, net::unix::pipe, sync::mpsc};

const QUEUE: usize = 65_536;

#[derive(Clone)]
pub(crate) struct EventTx {
    tx: mpsc::Sender<Item>,
    now: Arc<Now>,
}

/// What [`EventTx::write_now`] needs: the pipe (the writer task's own,
/// non-blocking), the thread the writer task runs on, and whether the
/// task holds events it has not finished writing.
struct Now {
    pipe: Option<std::fs::File>,
    thread: ThreadId,
    writing: AtomicBool,
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

    /// Writes `ev` into the pipe at once, from the writer task's thread
    /// (the loop's), when no event is queued or half-written before it
    /// and its line fits in one pipe write, which is atomic: either the
    /// whole line is in the pipe, where it outlives a `kill -9` of this
    /// process, or nothing is (the pipe is full: it never blocks). Whether
    /// it was written; if not, nothing was, and the caller queues it.
    pub fn write_now(&self, ev: &Event) -> bool {
        let now = &*self.now;
        let Some(mut pipe) = now.pipe.as_ref() else {
            return false;
        };
        if std::thread::current().id() != now.thread
            || now.writing.load(Ordering::Relaxed)
            || self.tx.capacity() != self.tx.max_capacity()
        {
            return false;
        }
        let line = encode(ev);
        line.len() <= PIPE_BUF && matches!(pipe.write(&line), Ok(n) if n == line.len())
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
    let direct = fd.try_clone().ok();
    let mut sender = pipe::Sender::from_owned_fd(fd)?;
    // Set non-blocking for the sender above (the two share the flag), or
    // no direct writes: they must never block the loop.
    let pipe = direct
        .filter(|d| nonblocking(d.as_fd()))
        .map(std::fs::File::from);
    let now = Arc::new(Now {
        pipe,
        thread: std::thread::current().id(),
        writing: AtomicBool::new(false),
    });
    let (tx, mut rx) = mpsc::channel::<Item>(QUEUE);
    let writing = now.clone();
    let (broken_tx, broken_rx) = tokio::sync::oneshot::channel();
    let writer = tokio::task::spawn_local(async move {
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut junk_written = false;
        while let Some((ev, done)) = rx.recv().await {
            // Until its last byte is written, a direct write would cut in.
            writing.writing.store(true, Ordering::Relaxed);
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
            // (Left set when the pipe broke: nothing more goes in.)
            writing.writing.store(false, Ordering::Relaxed);
        }
    });
    Ok((EventTx { tx, now }, broken_rx, writer))
}

/// The most a pipe takes in one atomic write (POSIX: at least 512; Linux:
/// a page).
const PIPE_BUF: usize = libc::PIPE_BUF;

fn nonblocking(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL).is_ok_and(|f| {
        nix::fcntl::OFlag::from_bits_truncate(f).contains(nix::fcntl::OFlag::O_NONBLOCK)
    })
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

#[cfg(test)]
mod tests {
    use std::{io::Read, os::fd::OwnedFd};

    use super::*;

    fn failed(n: usize, error_len: usize) -> Event {
        Event::CommandFailed {
            command: format!("c{n}"),
            error: "e".repeat(error_len),
        }
    }

    /// The events in what was read, in order; panics on a partial line.
    fn lines(read: &mut std::fs::File) -> Vec<Event> {
        let mut bytes = vec![];
        let mut buf = [0u8; 65536];
        while let Ok(n) = read.read(&mut buf) {
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&buf[..n]);
        }
        assert!(bytes.is_empty() || bytes.ends_with(b"\n"), "a partial line");
        bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).expect("a whole event per line"))
            .collect()
    }

    /// Writes `ev` directly once the writer task is idle (deadline: 60 s).
    async fn written_once_idle(tx: &EventTx, ev: &Event) {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !tx.write_now(ev) {
            assert!(
                std::time::Instant::now() < until,
                "the writer never went idle"
            );
            tokio::task::yield_now().await;
        }
    }

    fn pipe() -> (std::fs::File, OwnedFd) {
        let (r, w) = nix::unistd::pipe().unwrap();
        nix::fcntl::fcntl(
            r.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .unwrap();
        (std::fs::File::from(r), w)
    }

    /// A direct write goes in whole, and only when no event is queued or
    /// half-written before it, from the writer's own thread: an event
    /// never overtakes another (issue 18: the claims' copies).
    #[tokio::test(flavor = "current_thread")]
    async fn a_direct_write_never_overtakes_nor_cuts_into_another() {
        let (mut read, write) = pipe();
        tokio::task::LocalSet::new()
            .run_until(async move {
                let (tx, _broken, _writer) = start(write).unwrap();
                assert!(tx.write_now(&failed(1, 10)), "idle: written at once");
                assert_eq!(lines(&mut read), vec![failed(1, 10)]);

                // Queued, and the writer task not yet run: the direct
                // write would overtake it.
                assert!(tx.send(failed(2, 10)));
                assert!(!tx.write_now(&failed(3, 10)));
                written_once_idle(&tx, &failed(3, 10)).await;
                assert_eq!(lines(&mut read), vec![failed(2, 10), failed(3, 10)]);

                // Another thread's write could cut into the task's.
                let other = tx.clone();
                let refused = std::thread::spawn(move || other.write_now(&failed(4, 10)))
                    .join()
                    .unwrap();
                assert!(!refused, "written from another thread");

                // Too long for one atomic write.
                assert!(!tx.write_now(&failed(5, PIPE_BUF)));
                assert_eq!(lines(&mut read), vec![]);

                // A full pipe: refused, never a part of a line.
                let mut n = 0;
                while tx.write_now(&failed(n, 100)) {
                    n += 1;
                }
                assert!(n > 10, "the pipe took {n} lines");
                let got = lines(&mut read);
                assert_eq!(got, (0..n).map(|i| failed(i, 100)).collect::<Vec<_>>());
            })
            .await;
    }

    /// While the writer task has a batch not yet wholly in the pipe (the
    /// supervisor is slow to read), direct writes wait behind it.
    #[tokio::test(flavor = "current_thread")]
    async fn a_half_written_batch_holds_direct_writes_back() {
        let (mut read, write) = pipe();
        let mut raw = vec![];
        let mut drain = |read: &mut std::fs::File, at_most: usize| {
            let mut buf = vec![0u8; at_most];
            if let Ok(n) = read.read(&mut buf) {
                raw.extend_from_slice(&buf[..n]);
            }
        };
        tokio::task::LocalSet::new()
            .run_until(async {
                let (tx, _broken, _writer) = start(write).unwrap();
                while tx.write_now(&failed(0, 100)) {}
                // Room for part of a batch longer than one atomic write.
                drain(&mut read, 2000);
                assert!(tx.send(failed(1, 2 * PIPE_BUF)));
                tokio::task::yield_now().await;
                assert!(!tx.write_now(&failed(2, 10)), "cut into the batch");
                let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
                while !tx.write_now(&failed(2, 10)) {
                    assert!(std::time::Instant::now() < until, "the batch never went in");
                    drain(&mut read, 65536);
                    tokio::task::yield_now().await;
                }
            })
            .await;
        drain(&mut read, 65536);
        let mut rest = std::io::Cursor::new(raw);
        let mut text = vec![];
        rest.read_to_end(&mut text).unwrap();
        let got: Vec<Event> = text
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).expect("a whole event per line"))
            .filter(|e| *e != failed(0, 100))
            .collect();
        assert_eq!(got, vec![failed(1, 2 * PIPE_BUF), failed(2, 10)]);
    }
}
