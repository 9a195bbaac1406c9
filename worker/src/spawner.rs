//! The threads that start jobs' processes, two per core, so the loop only
//! hands starts over: everything a start costs (the run's cgroup, the
//! job's account and environment, its pipes, the clone and the wait for its
//! exec) happens here, in parallel, and a burst of simultaneous fires
//! starts as fast as the machine can exec (issue 18: on the loop, each
//! start waited for the one before).
//!
//! A start is a closure; its result comes back to the awaiting run on a
//! oneshot channel. The threads are made at the first start and live as
//! long as the worker. A start can hang before its exec (a `working_dir`
//! on a dead network mount, an account lookup that never answers), and
//! with a vfork-like clone its thread hangs with it: when every thread has
//! been inside one start for over [`STUCK`], a new start adds a thread, so
//! hung starts never hold the others (at most [`MAX_THREADS`] in all); they run in the runtime's context, so a process
//! spawned through tokio is registered with its reactor as usual. One more
//! thread reads what finished runs cost, so a burst's ends neither hold
//! the loop nor make a blocking-pool thread each; and one removes their
//! emptied cgroups once no start is in flight (at most [`QUIET_WITHIN`]
//! later): an rmdir takes the kernel's cgroup lock that every start's
//! mkdir and clone3 take too, and its CPU is better spent after a burst
//! than inside it (issue 18).

use std::{
    sync::{mpsc, Arc, Condvar, Mutex, OnceLock},
    time::{Duration, Instant},
};

type Start = Box<dyn FnOnce() + Send>;

/// Each thread's stack: a start needs little, and the child of a vfork-like
/// clone borrows 64 KiB of it until its exec (see `sys::spawn_into_cgroup`).
const STACK: usize = 512 * 1024;

/// At most this many threads start jobs at first, whatever the number of
/// cores.
const BASE_THREADS: usize = 8;
/// Start threads per core: a thread is suspended from its clone until
/// the child's exec (vfork-like), and waits on the kernel's cgroup lock,
/// so one per core left cores idle in a burst (issue 18).
const THREADS_PER_CORE: usize = 2;
/// The longest an emptied cgroup's removal waits for the starts in
/// flight to be done: under a steady stream of starts it happens this
/// late, never later, so removals keep pace.
pub(crate) const QUIET_WITHIN: Duration = Duration::from_secs(1);
/// A thread inside one start this long is taken as hung (a start takes
/// about a millisecond).
const STUCK: Duration = Duration::from_secs(1);
/// The pool grows past hung starts up to this many threads; beyond, starts
/// wait for one to come back.
const MAX_THREADS: usize = 64;

struct Pool {
    tx: Mutex<mpsc::Sender<Start>>,
    rx: Arc<Mutex<mpsc::Receiver<Start>>>,
    handle: tokio::runtime::Handle,
    name: String,
    /// Per thread: since when it has been inside a start (`None`: idle,
    /// or waiting at a [`Gate`]).
    busy: Busy,
    /// [`STUCK`], but for the tests.
    stuck_after: Duration,
}

impl Pool {
    /// `threads` threads named `name-N`, in the runtime's context; `None`
    /// if not one could be made.
    fn new(name: &str, threads: usize) -> Option<Pool> {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let (tx, rx) = mpsc::channel::<Start>();
        let pool = Pool {
            tx: Mutex::new(tx),
            rx: Arc::new(Mutex::new(rx)),
            handle,
            name: name.to_string(),
            busy: Arc::default(),
            stuck_after: STUCK,
        };
        for _ in 0..threads {
            pool.add_thread();
        }
        let made = !lock(&pool.busy).is_empty();
        made.then_some(pool)
    }

    /// One more thread taking starts; a warning if it cannot be made.
    fn add_thread(&self) {
        let mut busy = lock(&self.busy);
        let i = busy.len();
        let (rx, handle, slots) = (self.rx.clone(), self.handle.clone(), self.busy.clone());
        let thread = std::thread::Builder::new()
            .name(format!("{}-{i}", self.name))
            .stack_size(STACK)
            .spawn(move || {
                let _rt = handle.enter();
                BUSY.with(|b| *b.borrow_mut() = Some((slots.clone(), i)));
                loop {
                    // The lock is held only while taking one start.
                    let next = lock(&rx).recv();
                    let Ok(start) = next else { return };
                    lock(&slots)[i] = Some(Instant::now());
                    // A panic is the start's failure (its sender is
                    // dropped, the run sees an error), not the thread's.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(start));
                    lock(&slots)[i] = None;
                }
            });
        match thread {
            Ok(_) => busy.push(None),
            Err(e) => tracing::warn!("cannot start a {} thread: {e}", self.name),
        }
    }

    /// Whether every thread has been inside one start for over [`STUCK`]:
    /// a start handed over now would wait for a hung one.
    fn all_stuck(&self) -> bool {
        let now = Instant::now();
        lock(&self.busy)
            .iter()
            .all(|since| since.is_some_and(|t| now.duration_since(t) > self.stuck_after))
    }

    /// Hands `f` to one of the pool's threads (to tokio's blocking pool if
    /// there is no pool) at once, before the returned future is first
    /// polled: the loop starts a burst's first runs while it commits the
    /// rest (issue 18). The future gives `f`'s result, once done; dropped,
    /// the result is dropped on the thread that made it.
    fn run<T: Send + 'static>(
        pool: Option<&Pool>,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> impl std::future::Future<Output = std::io::Result<T>> + 'static {
        let handed = match pool {
            None => Err(tokio::task::spawn_blocking(f)),
            Some(pool) => Ok(pool.hand_over(f)),
        };
        async move {
            match handed {
                Ok(rx) => rx?
                    .await
                    .map_err(|_| std::io::Error::other("a task panicked on its pool thread")),
                Err(blocking) => blocking.await.map_err(std::io::Error::other),
            }
        }
    }

    /// [`Pool::run`]'s hand-over: `f` queued for the threads, and a thread
    /// added when every one is inside a hung start.
    fn hand_over<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::io::Result<tokio::sync::oneshot::Receiver<T>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Start = Box::new(move || {
            // Nobody waits any more (the run's task was dropped: the
            // worker is going): a start queued early is not made at all.
            if !tx.is_closed() {
                let _ = tx.send(f());
            }
        });
        lock(&self.tx)
            .send(job)
            .map_err(|_| std::io::Error::other("the pool's threads are gone"))?;
        if self.all_stuck() && lock(&self.busy).len() < MAX_THREADS {
            tracing::warn!(
                "every {} thread has been inside one start for over {STUCK:?}: adding one",
                self.name
            );
            self.add_thread();
        }
        Ok(rx)
    }

    /// Hands `f` over without waiting for it (dropped if the threads are
    /// gone).
    fn submit(&self, f: impl FnOnce() + Send + 'static) {
        let _ = lock(&self.tx).send(Box::new(f));
    }
}

/// A start handed over before its run's record is committed: its thread
/// prepares what it can (the cgroup, the environment, the pipes) while the
/// loop commits, then waits here, before the clone, for the loop's word
/// (issue 18: with the preparation after the commit, a fire's start came
/// that much later). The word comes through the [`GateKey`]: opened once
/// the record is committed, or once the supervisor has its copy of the
/// claim; dropped unopened (the run is gone), it says no. Never given up
/// and begun again: a second start of the same run would meet the first
/// one's cleanup in the same cgroup.
#[derive(Clone, Default)]
pub(crate) struct Gate(Arc<(Mutex<Option<bool>>, Condvar)>);

/// The loop's side of a [`Gate`].
pub(crate) struct GateKey(Gate);

/// A gate and its key.
pub(crate) fn gate() -> (Gate, GateKey) {
    let gate = Gate::default();
    (gate.clone(), GateKey(gate))
}

impl Gate {
    /// Decides `go` if undecided; returns the decision that stands.
    fn decide(&self, go: bool) -> bool {
        let (word, changed) = &*self.0;
        let mut word = lock(word);
        let stands = *word.get_or_insert(go);
        changed.notify_all();
        stands
    }

    /// On the thread: waits for the word, at most `bound` (far past any
    /// commit or claim copy: only a loop frozen that long, whose run then
    /// fails to start, rather than hold the thread for ever). Whether to
    /// start.
    pub(crate) fn wait(&self, bound: Duration) -> bool {
        // Waiting for the loop is not being inside a hung start: the pool
        // must not grow for it.
        let _idle = Idle::here();
        let (word, changed) = &*self.0;
        drop(
            changed
                .wait_timeout_while(lock(word), bound, |w| w.is_none())
                .unwrap_or_else(|e| e.into_inner()),
        );
        self.decide(false)
    }
}

/// The longest a start waits at its gate: far past the loop's bound on a
/// commit (twice 50 ms) and on the supervisor's copy of a claim (1 s).
const GATE_BOUND: Duration = Duration::from_secs(60);

/// What holds a start, prepared, before its clone: the loop's word on its
/// record (a [`Gate`]), and the instant it was planned for (see
/// `scheduler/fire.rs`).
pub(crate) struct Hold {
    pub gate: Option<Gate>,
    pub not_before: Option<Instant>,
}

impl Hold {
    /// On the thread: whether the start may go on past its gate (no gate:
    /// it may); once it may, not before its instant (waited for as idle:
    /// it is no hung start).
    pub(crate) fn through(&self) -> bool {
        if !self.gate.as_ref().is_none_or(|g| g.wait(GATE_BOUND)) {
            return false;
        }
        if let Some(at) = self.not_before {
            let _idle = Idle::here();
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
        }
        true
    }
}

/// Why a start held at its gate did not go on.
pub(crate) fn not_committed() -> std::io::Error {
    std::io::Error::other(format!(
        "not started: neither its record nor its claim was confirmed within {GATE_BOUND:?}"
    ))
}

thread_local! {
    /// A pool thread's own entry in its pool's `busy` list.
    static BUSY: std::cell::RefCell<Option<(Busy, usize)>> = const { std::cell::RefCell::new(None) };
}

type Busy = Arc<Mutex<Vec<Option<Instant>>>>;

/// While alive, this pool thread counts as idle (not inside a start);
/// dropped, as inside one since then.
struct Idle;

impl Idle {
    fn here() -> Idle {
        mark(None);
        Idle
    }
}

impl Drop for Idle {
    fn drop(&mut self) {
        mark(Some(Instant::now()));
    }
}

/// Sets this pool thread's entry (no-op off the pool's threads).
fn mark(since: Option<Instant>) {
    BUSY.with(|b| {
        if let Some((busy, i)) = &*b.borrow() {
            if let Some(slot) = lock(busy).get_mut(*i) {
                *slot = since;
            }
        }
    });
}

impl GateKey {
    /// The start may go on.
    pub(crate) fn open(self) {
        self.0.decide(true);
    }

    /// Another hand that may open the gate (never close it): the store
    /// writer's, which opens it as soon as the record is committed,
    /// without a hop through the loop.
    pub(crate) fn opener(&self) -> Opener {
        Opener(self.0.clone())
    }
}

/// Opens a [`Gate`] once the start may go on; dropped unused, it decides
/// nothing (the [`GateKey`] still does).
pub(crate) struct Opener(Gate);

impl Opener {
    pub(crate) fn open(self) {
        self.0.decide(true);
    }
}

impl Drop for GateKey {
    fn drop(&mut self) {
        // No-op once opened.
        self.0.decide(false);
    }
}

/// How many starts are handed over and not done: removals wait for none.
struct InFlight {
    n: Mutex<usize>,
    none: Condvar,
}

static IN_FLIGHT: InFlight = InFlight {
    n: Mutex::new(0),
    none: Condvar::new(),
};

/// One start counted in an [`InFlight`] until dropped (done, or dropped
/// unrun with its closure).
struct Counted(&'static InFlight);

impl InFlight {
    fn count(&'static self) -> Counted {
        *lock(&self.n) += 1;
        Counted(self)
    }

    /// Waits until no start is in flight, or until `until`.
    fn quiet_or(&self, until: Instant) {
        let left = until.saturating_duration_since(Instant::now());
        drop(
            self.none
                .wait_timeout_while(lock(&self.n), left, |n| *n > 0)
                .unwrap_or_else(|e| e.into_inner()),
        );
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut n = lock(&self.0.n);
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.0.none.notify_all();
        }
    }
}

/// Hands `start` to a spawner thread (two per core, made at the first
/// start) at once, before the returned future is first polled; its
/// result, once done.
pub(crate) fn off_loop<T: Send + 'static>(
    start: impl FnOnce() -> T + Send + 'static,
) -> impl std::future::Future<Output = std::io::Result<T>> + 'static {
    static STARTS: OnceLock<Option<Pool>> = OnceLock::new();
    let counted = IN_FLIGHT.count();
    Pool::run(
        STARTS
            .get_or_init(|| {
                // Asked once: std reads /proc/self/cgroup and the CPU
                // quota's files each time (three opens, on the loop, at
                // every start: issue 18).
                let threads = std::thread::available_parallelism()
                    .map_or(2, usize::from)
                    .saturating_mul(THREADS_PER_CORE)
                    .clamp(1, BASE_THREADS);
                Pool::new("spawner", threads)
            })
            .as_ref(),
        move || {
            let _counted = counted;
            start()
        },
    )
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

/// The thread that removes emptied cgroups; `None` if it cannot start.
fn remover() -> Option<&'static Pool> {
    static REMOVER: OnceLock<Option<Pool>> = OnceLock::new();
    REMOVER.get_or_init(|| Pool::new("cgroup-rm", 1)).as_ref()
}

/// Runs `remove` (an emptied cgroup's rmdir) on the remover thread once no
/// start is in flight, and at the latest [`QUIET_WITHIN`] from now; nothing
/// waits for it. Without that thread, on the calling thread at once.
pub(crate) fn remove_when_quiet(remove: impl FnOnce() + Send + 'static) {
    let until = Instant::now() + QUIET_WITHIN;
    match remover() {
        Some(pool) => pool.submit(move || {
            IN_FLIGHT.quiet_or(until);
            remove();
        }),
        None => remove(),
    }
}

/// Waits (at most `within`) for the removals handed over so far: at exit,
/// so the instance directory can go too.
pub(crate) async fn removals_done(within: Duration) {
    if let Some(pool) = remover() {
        let _ = tokio::time::timeout(within, Pool::run(Some(pool), || ())).await;
    }
}

/// A lock that a panic elsewhere does not poison for good: what it guards
/// (a queue's end, a list of instants) stays consistent at every step.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_flight() -> &'static InFlight {
        Box::leak(Box::new(InFlight {
            n: Mutex::new(0),
            none: Condvar::new(),
        }))
    }

    /// A start waiting at its gate goes on at the loop's word only; a key
    /// dropped unopened stops it; a thread past its bound does not start.
    #[test]
    fn a_gate_passes_a_start_only_on_the_loops_word() {
        let waiting = |g: Gate| std::thread::spawn(move || g.wait(Duration::from_secs(60)));
        let (g, key) = gate();
        let t = waiting(g);
        key.open();
        assert!(t.join().unwrap());
        let (g, key) = gate();
        let t = waiting(g);
        drop(key);
        assert!(!t.join().unwrap());
        let (g, key) = gate();
        assert!(!g.wait(Duration::from_millis(1)), "went on without a word");
        key.open();
        assert!(
            !g.wait(Duration::from_secs(60)),
            "opened after its thread gave up"
        );
    }

    /// While a start is in flight, a removal waits, but never past its
    /// bound: under a steady stream of starts removals still keep pace.
    #[test]
    fn a_removal_waits_for_starts_in_flight_up_to_its_bound() {
        let starts = in_flight();
        let _start = starts.count();
        let t0 = Instant::now();
        starts.quiet_or(t0 + Duration::from_millis(100));
        let waited = t0.elapsed();
        assert!(waited >= Duration::from_millis(100), "waited {waited:?}");
        assert!(waited < Duration::from_secs(30), "waited {waited:?}");
    }

    /// The last start done, a waiting removal goes at once, long before
    /// its bound; with none in flight it does not wait at all.
    #[test]
    fn a_removal_goes_once_the_starts_are_done() {
        let starts = in_flight();
        let t0 = Instant::now();
        starts.quiet_or(t0 + Duration::from_secs(60));
        assert!(t0.elapsed() < Duration::from_secs(30), "none in flight");
        let start = starts.count();
        let waiter = std::thread::spawn(move || {
            let t0 = Instant::now();
            starts.quiet_or(t0 + Duration::from_secs(60));
            t0.elapsed()
        });
        drop(start);
        let waited = waiter.join().unwrap();
        assert!(waited < Duration::from_secs(30), "waited {waited:?}");
        assert_eq!(*lock(&starts.n), 0);
    }

    /// A thread waiting at a gate (for the loop's commit, or the claim's
    /// copy) is not a hung start: the pool does not grow for it.
    #[tokio::test]
    async fn a_start_waiting_at_its_gate_is_not_taken_as_hung() {
        let mut pool = Pool::new("test-gated", 1).unwrap();
        // Any time inside a start counts as stuck here.
        pool.stuck_after = Duration::ZERO;
        let pool: &'static Pool = Box::leak(Box::new(pool));
        let (g, key) = gate();
        let (entered_tx, entered_rx) = std::sync::mpsc::channel::<()>();
        let start = pool
            .hand_over(move || {
                entered_tx.send(()).unwrap();
                g.wait(Duration::from_secs(60))
            })
            .unwrap();
        entered_rx.recv().unwrap();
        // Inside the start until it reaches its gate; then idle for as
        // long as it waits there.
        let until = Instant::now() + Duration::from_secs(30);
        while pool.all_stuck() {
            assert!(Instant::now() < until, "waiting at its gate, taken as hung");
            std::thread::yield_now();
        }
        assert_eq!(lock(&pool.busy).len(), 1);
        key.open();
        assert!(start.await.unwrap(), "the start went on past its gate");
    }

    /// Two threads hung inside starts (as on a dead mount) do not hold a
    /// third start: the pool grows past them.
    #[tokio::test]
    async fn hung_starts_do_not_hold_the_next_one() {
        let mut pool = Pool::new("test-spawner", 2).unwrap();
        // Any time inside a start counts as stuck here: the test waits for
        // the starts to be entered, not for the clock.
        pool.stuck_after = Duration::ZERO;
        // The pool lives as long as the test's threads: leaked on purpose.
        let pool: &'static Pool = Box::leak(Box::new(pool));
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let (entered_tx, mut entered_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let hung: Vec<_> = (0..2)
            .map(|_| {
                let (rx, entered) = (release_rx.clone(), entered_tx.clone());
                tokio::spawn(Pool::run(Some(pool), move || {
                    let _ = entered.send(());
                    let _ = lock(&rx).recv();
                }))
            })
            .collect();
        for _ in 0..2 {
            tokio::time::timeout(Duration::from_secs(10), entered_rx.recv())
                .await
                .expect("both starts entered their threads");
        }
        assert!(pool.all_stuck(), "both threads are inside their starts");
        let third = tokio::time::timeout(Duration::from_secs(10), Pool::run(Some(pool), || 7))
            .await
            .expect("the third start waited for the hung ones")
            .unwrap();
        assert_eq!(third, 7);
        assert_eq!(lock(&pool.busy).len(), 3);
        drop(release_tx);
        for h in hung {
            h.await.unwrap().unwrap();
        }
    }
}
