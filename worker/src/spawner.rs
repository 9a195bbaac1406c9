//! The threads that start jobs' processes, one per core, so the loop only
//! hands starts over: everything a start costs (the run's cgroup, the
//! job's account and environment, its pipes, the clone and the wait for its
//! exec) happens here, in parallel, and a burst of simultaneous fires
//! starts as fast as the machine can exec (issue 18: on the loop, each
//! start waited for the one before).
//!
//! A start is a closure; its result comes back to the awaiting run on a
//! oneshot channel. The threads are made at the first start and live as
//! long as the worker; they run in the runtime's context, so a process
//! spawned through tokio is registered with its reactor as usual. One more
//! thread removes finished runs' cgroups, so a burst's ends neither hold
//! the loop nor make a blocking-pool thread each.

use std::sync::{mpsc, Arc, Mutex, OnceLock};

type Start = Box<dyn FnOnce() + Send>;

/// Each thread's stack: a start needs little, and the child of a vfork-like
/// clone borrows 64 KiB of it until its exec (see `sys::spawn_into_cgroup`).
const STACK: usize = 512 * 1024;

/// At most this many threads, whatever the number of cores.
const MAX_THREADS: usize = 8;

struct Pool {
    tx: Mutex<mpsc::Sender<Start>>,
}

impl Pool {
    /// `threads` threads named `name-N`, in the runtime's context; `None`
    /// if not one could be made.
    fn new(name: &str, threads: usize) -> Option<Pool> {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let (tx, rx) = mpsc::channel::<Start>();
        let rx = Arc::new(Mutex::new(rx));
        let mut made = 0;
        for i in 0..threads {
            let (rx, handle) = (rx.clone(), handle.clone());
            let thread = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .stack_size(STACK)
                .spawn(move || {
                    let _rt = handle.enter();
                    loop {
                        // The lock is held only while taking one start.
                        let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok(start) = next else { return };
                        // A panic is the start's failure (its sender is
                        // dropped, the run sees an error), not the thread's.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(start));
                    }
                });
            match thread {
                Ok(_) => made += 1,
                Err(e) => tracing::warn!("cannot start a {name} thread: {e}"),
            }
        }
        (made > 0).then(|| Pool { tx: Mutex::new(tx) })
    }

    /// Runs `f` on one of the pool's threads (on tokio's blocking pool if
    /// there is no pool); its result, once done.
    async fn run<T: Send + 'static>(
        pool: Option<&Pool>,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::io::Result<T> {
        let Some(pool) = pool else {
            return tokio::task::spawn_blocking(f)
                .await
                .map_err(std::io::Error::other);
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Start = Box::new(move || {
            let _ = tx.send(f());
        });
        pool.tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job)
            .map_err(|_| std::io::Error::other("the pool's threads are gone"))?;
        rx.await
            .map_err(|_| std::io::Error::other("a task panicked on its pool thread"))
    }
}

/// Runs `start` on a spawner thread (one per core, made at the first
/// start); its result, once done.
pub(crate) async fn off_loop<T: Send + 'static>(
    start: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    static STARTS: OnceLock<Option<Pool>> = OnceLock::new();
    let threads = std::thread::available_parallelism()
        .map_or(2, usize::from)
        .clamp(1, MAX_THREADS);
    Pool::run(
        STARTS
            .get_or_init(|| Pool::new("spawner", threads))
            .as_ref(),
        start,
    )
    .await
}

/// Runs `cleanup` (a finished run's cgroup removal) on the one cleanup
/// thread: off the loop, off the spawner threads, and without a new
/// blocking-pool thread for each of a burst's ends.
pub(crate) async fn cleanup<T: Send + 'static>(
    cleanup: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    static CLEANUP: OnceLock<Option<Pool>> = OnceLock::new();
    Pool::run(
        CLEANUP.get_or_init(|| Pool::new("cleanup", 1)).as_ref(),
        cleanup,
    )
    .await
}
