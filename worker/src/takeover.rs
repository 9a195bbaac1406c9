//! Taking the store over at start: open it, record the predecessor's runs
//! in flight as lost and reserve run ids, off the loop and retried with
//! backoff while the store fails, heartbeating meanwhile with the exact
//! cause, so a locked or read-only store is `store_error`, never a crash
//! loop or a stall (issue 14). Commands that arrive while it waits are
//! kept for the scheduler.

use std::time::Duration;

use cronwarden_shared::{
    config::{Config, Source},
    status::RunRecord,
    store::{self, Store, StoreError, Write},
    wire::{AdoptedCursor, Command, Event},
};
use tokio::{sync::mpsc, time::Instant};

use crate::{clock::wall_now, error::WorkerError, events::EventTx, plan};

/// What a worker takes over from its predecessor at start.
pub(crate) struct TakeOver {
    pub(crate) store: Store,
    /// Runs the predecessor left in flight, now recorded lost.
    pub(crate) lost: Vec<RunRecord>,
    /// Run ids from here on are the new worker's: above every stored id
    /// and every id a dead worker reserved, even one whose records never
    /// reached the store (issue 14: run 341 reused).
    pub(crate) first_run_id: u64,
    /// Reserved (committed) up to here.
    pub(crate) reserved: u64,
    /// The previous worker was killed (or stopped with writes unstored)
    /// and no supervisor that watched it handed anything over: fires it
    /// ran may have left no trace (see `Plan::in_doubt_through`).
    pub(crate) in_doubt: bool,
}

/// What the supervisor kept of the previous worker's writes, not
/// confirmed stored (`adopt` commands before `configure`): written when
/// the store is taken over, before anything is planned.
#[derive(Default)]
pub(crate) struct Adoption {
    records: Vec<RunRecord>,
    cursors: Vec<AdoptedCursor>,
    /// An `adopt` came, even an empty one: the supervisor watched the
    /// previous worker, and what it ran is accounted.
    witnessed: bool,
}

impl Adoption {
    pub(crate) fn add(&mut self, records: Vec<RunRecord>, cursors: Vec<AdoptedCursor>) {
        self.witnessed = true;
        self.records.extend(records);
        self.cursors.extend(cursors);
    }
}

/// How long a store write from the loop waits for another connection's
/// lock (issue 14: a 5 s busy timeout equal to `stall_after` got the
/// worker killed as stalled by a 14 s backup lock).
pub(crate) const LOOP_BUSY_TIMEOUT: Duration = Duration::from_millis(100);

/// The longest wait between two start-up attempts on a failing store.
const TAKE_OVER_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Opens the store, records the predecessor's runs in flight as lost and
/// reserves run ids; all of it on a blocking thread, retried with backoff
/// while it fails (a store locked by a backup, a read-only or full disk),
/// so the worker does not exit into a crash loop: while it waits it sends
/// heartbeats whose `store_error` says why, with the exact cause (path,
/// errno). Its loop turns (waiting) complete, so they count as good: a
/// replacement could not fix the disk either. A store that is not a
/// cronwarden database, or is too new, is refused at once (it names the
/// file). Commands that arrive meanwhile are kept for the scheduler (a
/// `configure` replaces the config); `Ok(None)`: the worker was told to
/// stop (`stop`, a shutdown command, the supervisor gone).
pub(crate) async fn take_over_store(
    config: &mut Config,
    first_run_id: u64,
    adoption: Adoption,
    events: &EventTx,
    cmd_rx: &mut mpsc::Receiver<Command>,
    replay: &mut Vec<Command>,
    stop: &mut (impl std::future::Future<Output = &'static str> + Unpin),
) -> Result<Option<TakeOver>, WorkerError> {
    let path = config.state_dir.join(store::FILE_NAME);
    let mut backoff = Duration::from_millis(100);
    let mut seq = 0u64;
    let adoption = std::sync::Arc::new(adoption);
    loop {
        let p = path.clone();
        let a = adoption.clone();
        let mut attempt = tokio::task::spawn_blocking(move || take_over(&p, first_run_id, &a));
        let result = loop {
            let beat = config.watchdog.heartbeat_interval;
            tokio::select! {
                biased;
                why = &mut *stop => {
                    tracing::info!("{why} while taking over the store");
                    abandon(attempt).await;
                    return Ok(None);
                }
                r = &mut attempt => break r,
                cmd = cmd_rx.recv() => if !hold_command(cmd, config, replay) {
                    abandon(attempt).await;
                    return Ok(None);
                },
                _ = tokio::time::sleep(beat) => {
                    seq += 1;
                    waiting_heartbeat(events, seq, "taking over the store is slow (it may be locked)".into());
                }
            }
        };
        let error = match result {
            Ok(Ok(t)) => {
                if seq > 0 {
                    tracing::info!(path = %path.display(), "the store is usable again; starting");
                }
                return Ok(Some(t));
            }
            Ok(Err(e @ (StoreError::Corrupt { .. } | StoreError::TooNew { .. }))) => {
                return Err(e.into())
            }
            Ok(Err(e)) => format!("{e}{}", writable_cause(&path)),
            Err(e) => format!("store {}: the start-up task failed: {e}", path.display()),
        };
        tracing::error!(
            retry_in_ms = backoff.as_millis() as u64,
            "cannot take over the store: {error}"
        );
        seq += 1;
        waiting_heartbeat(events, seq, format!("cannot take over the store: {error}"));
        let until = Instant::now() + backoff;
        while Instant::now() < until {
            let beat = config
                .watchdog
                .heartbeat_interval
                .min(until - Instant::now());
            tokio::select! {
                biased;
                why = &mut *stop => {
                    tracing::info!("{why} while taking over the store");
                    return Ok(None);
                }
                cmd = cmd_rx.recv() => if !hold_command(cmd, config, replay) {
                    return Ok(None);
                },
                _ = tokio::time::sleep(beat) => {
                    seq += 1;
                    waiting_heartbeat(events, seq, format!("cannot take over the store: {error}"));
                }
            }
        }
        backoff = (backoff * 2).min(TAKE_OVER_BACKOFF_MAX);
    }
}

/// How long a worker told to stop while it takes over the store waits for
/// the attempt in flight. The exit would wait for its blocking thread
/// anyway; the bound keeps it under the supervisor's stop deadline (the
/// longest kill grace + 10 s).
const ABANDON_WITHIN: Duration = Duration::from_secs(8);

/// A take-over given up (the worker is told to stop) whose attempt still
/// completes marks this worker in charge of the store; it scheduled
/// nothing, so the mark is taken back: the next worker must not take a
/// stop for a kill and doubt its first catch-up (issue 18's CI: a
/// supervisor stopped within moments of its start). Unless this worker
/// was in doubt itself (it followed a killed one): the doubt is handed on.
async fn abandon(attempt: tokio::task::JoinHandle<Result<TakeOver, StoreError>>) {
    let Ok(Ok(Ok(mut t))) = tokio::time::timeout(ABANDON_WITHIN, attempt).await else {
        return;
    };
    if t.in_doubt {
        return;
    }
    let marked = tokio::task::spawn_blocking(move || t.store.mark_worker_stopped()).await;
    if let Ok(Err(e)) = marked {
        tracing::warn!("{e}: the next worker will take this one for killed");
    }
}

/// The blocking part of [`take_over_store`].
fn take_over(
    path: &std::path::Path,
    first_run_id: u64,
    adoption: &Adoption,
) -> Result<TakeOver, StoreError> {
    let mut store = Store::open(path)?;
    if !adoption.records.is_empty() || !adoption.cursors.is_empty() {
        // Before the lost runs are recovered: an adopted start whose
        // worker died is one of them.
        let done = store.adopt(&adoption.records, &adoption.cursors)?;
        tracing::info!(
            records = done.records,
            cursors = done.cursors,
            offered = adoption.records.len(),
            "adopted the previous worker's writes kept by the supervisor"
        );
    }
    let lost = store.recover_lost()?;
    let first_run_id = first_run_id.max(store.first_free_run_id()?);
    let reserved = plan::reserve_at_start(first_run_id);
    store.apply(&[Write::ReserveIds { upto: reserved }])?;
    // From here on the store is written from the loop: a lock held by
    // another connection (a backup) must fail a write quickly (held and
    // retried by the journal, reported as store_error), never block the
    // loop until the supervisor takes the worker for stalled.
    store.set_busy_timeout(LOOP_BUSY_TIMEOUT)?;
    // Fault injection: a take-over still in flight when the worker is told
    // to stop.
    fail::fail_point!("store::take_over");
    // Last: a retried take-over must not read this attempt's own mark.
    let killed = store.mark_worker_live()?;
    let in_doubt = killed && !adoption.witnessed;
    if in_doubt {
        tracing::warn!(
            "the previous worker was killed and no supervisor kept its writes: \
             the first catch-up of each job may repeat fires it ran while the store \
             could not commit, and is recorded may_repeat"
        );
    }
    Ok(TakeOver {
        store,
        lost,
        first_run_id,
        reserved,
        in_doubt,
    })
}

/// Why a store path cannot be written, as the system says it (errno),
/// or nothing when it can: the file if it exists, else its directory.
fn writable_cause(path: &std::path::Path) -> String {
    use nix::unistd::{access, AccessFlags};
    let target = if path.exists() {
        path
    } else {
        path.parent().unwrap_or(path)
    };
    match access(target, AccessFlags::W_OK) {
        Ok(()) => String::new(),
        Err(errno) => format!(" ({} is not writable: {errno})", target.display()),
    }
}

/// A command that arrives while the store is being taken over: a
/// configure replaces the config the loop will start with, any other is
/// kept to be replayed once the loop runs. False on shutdown or a closed
/// command pipe.
fn hold_command(cmd: Option<Command>, config: &mut Config, replay: &mut Vec<Command>) -> bool {
    match cmd {
        None | Some(Command::Shutdown) => return false,
        Some(Command::Configure {
            path,
            source,
            dropins,
        }) => match Config::parse_source(&path, &Source::of(source, dropins)) {
            Ok(c) => *config = c,
            Err(e) => tracing::warn!("configure refused while taking over the store: {e}"),
        },
        Some(cmd) => replay.push(cmd),
    }
    true
}

/// A heartbeat while the worker waits for its store: alive, turning, and
/// saying why it does not schedule yet.
fn waiting_heartbeat(events: &EventTx, seq: u64, store_error: String) {
    let now = wall_now();
    events.send(Event::Heartbeat {
        seq,
        at: now,
        last_good_turn_at: Some(now),
        running: 0,
        store_error: Some(store_error),
        armed: None,
        progress: vec![],
        stats: None,
    });
}
