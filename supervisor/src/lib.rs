//! The supervisor: `cronwarden run`, in the foreground.
//!
//! - `setup`: `run`: config, state directory, lock, store, then the loop;
//! - `event_loop`: the one task that owns the model and acts: event lines,
//!   evaluation, alerts, worker replacement, reload, control calls;
//! - `worker_conn`: one worker: spawn, event lines, reaping, backoff;
//! - `spawn`: starting the worker; subreaper; the only `unsafe` here;
//!   signalling a run's group only if it is still the run's;
//! - `run_groups`: each run's group leader's identity (pid and start
//!   time), recorded when its fire line is read, checked before a signal;
//! - `model`: what was observed of the worker and the jobs; `model::judge`
//!   the pure judgement over it: conditions, and the actions the loop
//!   takes (replace the worker, kill a run, ask for the armed schedule);
//! - `alerts`: the alert book (one alert per condition), notices and
//!   their recorder; `ownership`: on several hosts, which host delivers
//!   an alert of a job's fires (`owner_link`: its thread on the shared
//!   ledger); `sinks`: delivering notices (`alertmanager`: the
//!   Alertmanager sink's wire format); `pings`: job and host
//!   pings to dead-man's-switch services;
//! - `forensics`: what a wedged or timed-out run is doing (from `/proc`);
//! - `snapshot`: what the loop publishes and the socket serves;
//! - `server`: the status socket; `jobs_page`: `GET /v1/jobs` by pages
//!   (query, selection, body); `control`: the control calls it
//!   forwards to the loop; `metrics`: `/metrics`; `page`: the HTML status
//!   page (`GET /`);
//! - [`lock`]: one supervisor per state directory;
//! - `notify`: systemd readiness, watchdog and status line; `reaper`:
//!   exit statuses for the threads that start children of their own;
//!   `queue`: the bounded queues to the sink and ping threads;
//!   `log_budget`: rate-limited log lines;
//! - `audit`: the ledger audit a socket request asks for;
//! - `binary`: whether our executable was replaced on disk (an upgrade
//!   that awaits a restart), for the status.
//! - `follow`: the newest output lines of recent runs, for `logs -f`.
//!
//! The supervisor never runs jobs and never blocks on them: it reads the
//! worker's events, watches the heartbeat against `stall_after`, replaces a
//! worker that died or wedged (first restart at once, then exponential
//! backoff), kills and records the runs a dead worker leaves behind, and
//! answers on the socket from a snapshot the loop publishes. Every wait
//! in its loop has a bound.

mod alertmanager;
mod alerts;
mod audit;
mod binary;
mod control;
mod event_loop;
mod follow;
mod forensics;
mod jobs_page;
pub mod lock;
mod log_budget;
mod metrics;
mod model;
mod notify;
mod owner_link;
mod ownership;
mod page;
mod pings;
mod queue;
mod reaper;
mod run_groups;
mod server;
mod setup;
mod sinks;
mod snapshot;
mod spawn;
mod worker_conn;

pub use setup::{run, RunOptions, SupervisorError};
