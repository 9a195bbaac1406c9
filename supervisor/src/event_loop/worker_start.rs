//! Starting the worker, and what its exit means: its runs' process
//! groups killed, its replacement scheduled with backoff; or, when a
//! reload changed the shared ledger, its planned replacement at once; and
//! its bounded stop when we shut down.

use std::time::Duration;

use cronwarden_shared::{timefmt::human_duration, wire::Command};
use tokio::time::Instant;

use nix::sys::signal::Signal;

use super::{sleep_until_opt, Supervisor};
use crate::spawn;
use crate::worker_conn::{self, next_line, Launch, WorkerConn};

impl Supervisor {
    pub(super) fn start_worker(&mut self) {
        self.restart_at = None;
        // Saturating: the id comes from what a worker reported, which must
        // never be able to crash the supervisor.
        let first_run_id = self.model.max_run_id.saturating_add(1);
        let configure = Command::Configure {
            path: self.config().path.clone(),
            source: self.source.text.clone(),
            dropins: self.source.dropins.clone(),
        };
        let launch = Launch {
            exe: &self.exe,
            lock: self.lock.as_fd(),
            log_json: self.log_json,
            log_files: self.log_files.as_ref().map(|(d, n)| (d.as_path(), *n)),
        };
        // What the previous worker may have held in memory goes first.
        let mut first = self.model.held.adopt_commands();
        if !self.model.held.is_empty() {
            tracing::warn!(
                records = self.model.held.len(),
                dropped = self.model.held.dropped,
                "handing the previous worker's writes not confirmed stored to the new worker"
            );
        }
        first.push(configure);
        let w = match WorkerConn::start(&launch, first_run_id, first) {
            Ok(w) => w,
            Err(e) => {
                let delay = self
                    .backoff
                    .next_delay(Duration::ZERO)
                    .max(Duration::from_millis(100));
                tracing::error!(
                    "cannot start the worker: {e}; retrying in {}",
                    human_duration(delay)
                );
                self.model
                    .worker_gone(format!("could not be started: {e}"), true, &[]);
                self.restart_at = Some(Instant::now() + delay);
                return;
            }
        };
        tracing::info!(pid = w.pid, "worker started");
        self.model.worker_spawned(w.pid);
        self.worker = Some(w);
    }

    /// Reaps every exited child: the worker (then schedules its
    /// replacement) and any orphaned job process reparented to us.
    pub(super) fn reap(&mut self) {
        for (pid, status) in worker_conn::reap_exited() {
            if self.worker.as_ref().is_some_and(|w| w.pid == pid) {
                self.worker_exited(worker_conn::how_it_ended(status));
            } else {
                // A sink's child, or an orphan reparented to us.
                self.reaper.reaped(pid, worker_conn::wait_code(status));
                tracing::debug!(
                    pid,
                    how = worker_conn::how_it_ended(status),
                    "reaped a child"
                );
            }
        }
    }

    /// A reload changed what the worker claims on (`store`, `host`,
    /// `lease`; its claim thread connects once, at start): the worker is
    /// asked to stop as at shutdown (its runs stopped within their kill
    /// grace, their ends recorded in both ledgers) and, once it exited, a
    /// new one starts at once on the new config, without backoff and
    /// without counting as a crash. While it stops it sends no heartbeat,
    /// so it is not judged (as at shutdown: no stall, no replacement);
    /// `until` ([`Supervisor::stop_deadline`] of the config its runs were
    /// started under) bounds the stop instead. With no worker running, the
    /// next start reads the new config anyway.
    pub(super) fn replace_worker(&mut self, why: String, until: Instant) {
        let Some(w) = &self.worker else { return };
        tracing::warn!(
            pid = w.pid,
            "{why}: restarting the worker on the new shared ledger (its runs are stopped)"
        );
        let _ = w.commands.try_send(Command::Shutdown);
        crate::spawn::signal(w.pid, nix::sys::signal::Signal::SIGTERM);
        self.replacing = Some(Replacing {
            why,
            pid: w.pid,
            until: Some(until),
        });
    }

    /// The worker being replaced did not stop within its bound: it is
    /// killed, and its exit starts the replacement as any other.
    pub(super) fn replacement_overdue(&mut self) {
        let Some(r) = self.replacing.as_mut() else {
            return;
        };
        r.until = None;
        tracing::error!(
            pid = r.pid,
            "worker did not stop in time for its replacement; killing it and its jobs"
        );
        crate::spawn::signal(r.pid, nix::sys::signal::Signal::SIGKILL);
    }

    /// How long a worker asked to stop now may take, its runs being stopped
    /// within their kill grace: the longest grace in the config in force,
    /// plus 10 s for the records and its exit.
    pub(super) fn stop_deadline(&self) -> Instant {
        let grace = self.config().jobs.iter().map(|j| j.kill_grace).max();
        Instant::now() + grace.unwrap_or_default() + Duration::from_secs(10)
    }

    pub(super) fn worker_exited(&mut self, how: String) {
        let Some(w) = self.worker.take() else { return };
        let how = w.killed_because.unwrap_or(how);
        self.pending.clear();
        // Its runs, reported or not, are our children now.
        let reparented = crate::run_groups::reparented_runs();
        self.run_groups.adopt(&reparented);
        let replaced = self.replacing.take().filter(|r| r.pid == w.pid);
        if let Some(Replacing { why, .. }) = replaced.filter(|_| !self.stopping) {
            let groups = self.model.worker_gone(how.clone(), false, &reparented);
            let parents = [w.pid, std::process::id()];
            for g in &groups {
                self.run_groups.kill(*g, &parents);
            }
            self.run_groups.clear();
            tracing::info!(
                pid = w.pid,
                "worker {how}; starting its replacement ({why})"
            );
            self.start_worker();
            self.publish_soon();
            return;
        }
        if self.stopping {
            let lost = self.model.worker_gone(how.clone(), false, &reparented);
            // Orphaned runs are ours now (subreaper), or still the worker's.
            let parents = [w.pid, std::process::id()];
            for g in &lost {
                self.run_groups.kill(*g, &parents);
            }
            self.run_groups.clear();
            tracing::info!(pid = w.pid, "worker {how}");
            self.publish();
            return;
        }
        let lived = self
            .model
            .worker
            .spawned
            .map(|s| s.elapsed())
            .unwrap_or_default();
        let groups = self.model.worker_gone(how.clone(), true, &reparented);
        let parents = [w.pid, std::process::id()];
        for g in &groups {
            // Orphaned runs: kill the whole group; we reap them as subreaper.
            self.run_groups.kill(*g, &parents);
        }
        self.run_groups.clear();
        let delay = self.backoff.next_delay(lived);
        tracing::error!(
            pid = w.pid,
            lost_runs = groups.len(),
            "worker {how}; restarting in {}",
            human_duration(delay)
        );
        self.restart_at = Some(Instant::now() + delay);
        if delay.is_zero() {
            // Now, not through the loop's timer: tokio's rounds up to the
            // next millisecond and wakes on its driver's turn, which made
            // the restart after a crash slower than runit's (issue 18).
            // Before the snapshot, not after it: an evaluation with its
            // alerts takes longer than the spawn, and the snapshot then
            // shows the crash and the new worker at once.
            self.start_worker();
        }
        self.publish();
    }
}

impl Supervisor {
    /// Asks the worker to stop its jobs (within their kill grace) and exit,
    /// by command and by `stop_with`, the signal that stopped us; kills
    /// whatever is left after a bound.
    pub(super) async fn shutdown(
        &mut self,
        sigchld: &mut tokio::signal::unix::Signal,
        stop_with: Signal,
    ) {
        self.stopping = true;
        self.restart_at = None;
        let Some(w) = &self.worker else { return };
        let pid = w.pid;
        let _ = w.commands.try_send(Command::Shutdown);
        spawn::signal(pid, stop_with);
        let until = self.stop_deadline();
        while self.worker.is_some() {
            let publish_at = self.publish_deadline();
            tokio::select! {
                _ = sigchld.recv() => self.reap(),
                _ = sleep_until_opt(publish_at) => self.publish(),
                line = next_line(&mut self.worker) => self.on_line(line),
                _ = tokio::time::sleep_until(until) => {
                    tracing::error!(pid, "worker did not stop in time; killing it and its jobs");
                    spawn::signal(pid, Signal::SIGKILL);
                    for g in self.model.running_groups() {
                        self.run_groups.kill(g, &[pid, std::process::id()]);
                    }
                    // Reap it before we go, without ever blocking unbounded.
                    worker_conn::reap_within_a_second(pid).await;
                    self.worker = None;
                }
            }
        }
        self.reap();
    }
}

/// A worker stopping to be replaced at once (see
/// [`Supervisor::replace_worker`]).
#[derive(Debug)]
pub(super) struct Replacing {
    /// Why, for the log.
    why: String,
    pid: u32,
    /// When it is killed if it has not exited (`None` once it was).
    pub(super) until: Option<Instant>,
}
