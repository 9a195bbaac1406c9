//! The control calls the socket forwards to the loop (and a reload,
//! which SIGHUP asks for too): answered here, or passed to the worker and
//! answered when its reply line comes.

use std::sync::Arc;

use cronwarden_shared::{config::Config, wire::Command};
use jiff::Timestamp;

use super::{test_notice, Supervisor};
use crate::{
    control::{ControlOp, ControlReply, ControlRequest},
    pings, sinks,
};

impl Supervisor {
    /// Re-reads the config. A valid one replaces the running config (the
    /// worker reconciles its schedule and the store; a changed `store`,
    /// `host` or `lease` restarts the worker on it); an invalid one is
    /// refused, logged, shown in the status, and the running one stays.
    pub(super) fn reload(&mut self, why: &str) -> Result<usize, String> {
        let path = self.config().path.clone();
        let loaded = Config::read(&path).map_err(|e| e.to_string());
        match loaded {
            Ok((config, source)) => {
                let jobs = config.jobs.len();
                if config.sinks != self.config().sinks {
                    self.sinks = sinks::Sinks::start(&config.sinks, &self.reaper);
                }
                if !self
                    .host_beat
                    .as_ref()
                    .is_some_and(|h| h.same_target(&config))
                {
                    self.host_beat = pings::HostBeat::from_config(&config);
                }
                let old = &self.config().integrations;
                if (old.metrics_listen, &old.log_dir, old.log_retention)
                    != (
                        config.integrations.metrics_listen,
                        &config.integrations.log_dir,
                        config.integrations.log_retention,
                    )
                {
                    tracing::warn!("{why}: metrics_listen, log_dir and log_retention take effect at the next start");
                }
                self.reload_shared_alerts(&self.config(), &config);
                // The worker's claim thread connects once, at its start:
                // another ledger (`store`), name (`host`) or `lease` takes
                // a new worker (see `replace_worker`).
                let reconnect = self.config().cluster != config.cluster;
                // The runs the worker stops were given the old config's grace.
                let until = self.stop_deadline();
                {
                    let m = &mut self.model;
                    m.set_config(Arc::new(config));
                    m.reload_error = None;
                }
                self.source = source.clone();
                if reconnect {
                    self.replace_worker(format!("{why}: store, host or lease changed"), until);
                } else if let Some(w) = &self.worker {
                    let _ = w.commands.try_send(Command::Configure {
                        path: path.clone(),
                        source: source.text,
                        dropins: source.dropins,
                    });
                }
                tracing::info!(jobs, "{why}: configuration reloaded");
                Ok(jobs)
            }
            Err(e) => {
                tracing::error!(
                    "{why}: configuration refused, the running one stays in force:\n{e}"
                );
                self.model.reload_error = Some((Timestamp::now(), e.clone()));
                Err(e)
            }
        }
    }

    /// A control call from the socket.
    pub(super) fn control(&mut self, req: ControlRequest) {
        let ControlRequest { op, reply } = req;
        if op == ControlOp::AlertTest {
            let report = self.sinks.test_report(&test_notice());
            tokio::task::spawn_blocking(move || {
                let _ = reply.send(ControlReply::ok(report()));
            });
            return;
        }
        if op == ControlOp::Reload {
            let reloaded = self.reload("reload request");
            // Before the answer: a status read right after it shows the
            // new jobs, or the refusal.
            self.publish();
            let _ = reply.send(match reloaded {
                Ok(jobs) => ControlReply::ok(
                    serde_json::json!({ "ok": true, "op": "reload", "jobs": jobs }),
                ),
                Err(e) => ControlReply::error(422, e),
            });
            return;
        }
        if let ControlOp::Output { job, run_id, after } = &op {
            // Answered from what the loop holds: no worker round trip.
            let running = self
                .model
                .jobs
                .get(job)
                .is_some_and(|j| j.running.contains_key(run_id));
            let read = self.follow.read(job, *run_id, *after, running);
            let _ = reply.send(match serde_json::to_value(read) {
                Ok(body) => ControlReply::ok(body),
                Err(e) => ControlReply::error(500, format!("output of run {run_id}: {e}")),
            });
            return;
        }
        let up = self.model.worker.hello;
        let Some(w) = self.worker.as_ref().filter(|_| up) else {
            let _ = reply.send(ControlReply::error(
                503,
                "the worker is not running right now (restarting); try again",
            ));
            return;
        };
        let request = Some(self.next_request);
        let cmd = match &op {
            ControlOp::Trigger(job) => Command::Trigger {
                job: job.clone(),
                request,
            },
            ControlOp::Pause(job) => Command::Pause {
                job: job.clone(),
                request,
            },
            ControlOp::Resume(job) => Command::Resume {
                job: job.clone(),
                request,
            },
            ControlOp::Kill { job, run_id, uid } => Command::Kill {
                job: job.clone(),
                run_id: *run_id,
                uid: *uid,
                request,
            },
            ControlOp::Reload | ControlOp::AlertTest | ControlOp::Output { .. } => {
                unreachable!("handled above")
            }
        };
        if w.commands.try_send(cmd).is_err() {
            let _ = reply.send(ControlReply::error(
                503,
                "the worker's command queue is full; try again",
            ));
            return;
        }
        // Replies never come for requests to a worker that died: drop them
        // then (their callers get "went away") and bound the map anyway.
        self.pending.retain(|_, (_, r)| !r.is_closed());
        self.pending.insert(self.next_request, (op, reply));
        self.next_request += 1;
    }
}
