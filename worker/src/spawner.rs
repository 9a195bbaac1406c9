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
//! spawned through tokio is registered with its reactor as usual.

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

/// The pool, made at the first start (in the runtime's context); `None`
/// if not one thread could be made, and starts then go to tokio's
/// blocking pool.
fn pool() -> Option<&'static Pool> {
    static POOL: OnceLock<Option<Pool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let threads = std::thread::available_parallelism()
            .map_or(2, usize::from)
            .clamp(1, MAX_THREADS);
        let (tx, rx) = mpsc::channel::<Start>();
        let rx = Arc::new(Mutex::new(rx));
        let mut made = 0;
        for i in 0..threads {
            let (rx, handle) = (rx.clone(), handle.clone());
            let thread = std::thread::Builder::new()
                .name(format!("spawner-{i}"))
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
                Err(e) => tracing::warn!("cannot start a spawner thread: {e}"),
            }
        }
        (made > 0).then(|| Pool { tx: Mutex::new(tx) })
    })
    .as_ref()
}

/// Runs `start` on a spawner thread; its result, once done.
pub(crate) async fn off_loop<T: Send + 'static>(
    start: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    let Some(pool) = pool() else {
        return tokio::task::spawn_blocking(start)
            .await
            .map_err(std::io::Error::other);
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Start = Box::new(move || {
        let _ = tx.send(start());
    });
    pool.tx
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(job)
        .map_err(|_| std::io::Error::other("the spawner threads are gone"))?;
    rx.await
        .map_err(|_| std::io::Error::other("a start panicked on its spawner thread"))
}
