//! What cronwarden's supervisor and worker must agree on, kept in one place so
//! they can never drift apart. Both processes are one binary; this crate is
//! the vocabulary they share.
//!
//! - [`config`]: the TOML model and its validation, by concern: the types
//!   and loading (`config/mod.rs`), the generic key checks (`validate`), the
//!   `[[job]]` keys (`job`), the `[[alert]]` sinks (`sinks`), metrics,
//!   host heartbeat and log files (`integrations`), the `<name>.d/*.toml`
//!   drop-ins (`dropin`). Every error names the
//!   file, the job and the key;
//! - [`schedule`]: cron expressions and `@every` intervals mapped to instants
//!   under the DST rules of DESIGN.md;
//! - [`wire`]: the NDJSON events (worker → supervisor) and commands
//!   (supervisor → worker), and their bounded line codec;
//! - [`status`]: the JSON shapes users see on the socket and in the CLI
//!   (status report, run records, alerts, audit reports);
//! - [`alert_kind`]: the one list of alert kinds, used by config validation,
//!   the detectors, the metrics and the sinks;
//! - [`log_budget`]: at most so many log lines per window, counting the
//!   rest (the supervisor's floods and the jobs' output lines);
//! - [`stats`]: what the worker measures for the supervisor's metrics, and
//!   the dropped-log-lines counter both processes keep;
//! - [`held_copy`]: the supervisor's second copy of the worker's writes
//!   not yet confirmed stored, handed to the next worker (`adopt`);
//! - [`store`]: the SQLite store (`<state_dir>/cronwarden.db`): job state,
//!   run records, alert history;
//! - [`timefmt`]: durations and instants written for people, in logs and
//!   summaries;
//! - [`account`]: users and groups, for a job's `user`/`group` and for who
//!   may make control calls on the socket;
//! - [`identity`]: which instance answers on a socket: its state directory,
//!   written into an HTTP header and compared by clients.
//! - [`proc_identity`]: a process named by pid and start time, checked
//!   before every signal so a reused pid is never signalled;
//! - [`percent`]: percent-encoding of a job name in a URL;
//! - [`jitter`]: a job's fixed start delay per host (`jitter`), computed
//!   alike by the worker and the supervisor;
//! - [`heap`]: freed heap pages given back (`malloc_trim`), after a
//!   config's TOML tree and with the start-up pages;
//! - [`footprint`]: start-up's pages handed back once a process runs
//!   (the executable's pages idle does not use, the heap's free pages);
//! - [`alarm`]: the loops' one timer, a timerfd in the runtime's poll (one
//!   wake-up per deadline); with [`heap`] and [`footprint`], the only
//!   `unsafe` in this crate;
//! - `test_skip`: for tests of every crate, the one way to say a test was
//!   skipped (counted by `.ci/run`).
//!
//! I/O: [`store`] reads and writes its SQLite file; [`config`] reads the
//! config file ([`config::Config::load`], [`config::Config::locate`]) and
//! resolves `user`/`group` names; [`account`] queries the user and group
//! databases (NSS) and reads `/proc/<pid>/status` for a peer's groups; [`proc_identity`]
//! reads `/proc/<pid>/stat` and sends signals; [`footprint`] reads `/proc/self/smaps` and unmaps
//! pages of the executable; [`alarm`] arms a timerfd. Everything else computes on
//! values: no files, sockets or processes. (Some read the wall clock:
//! [`schedule::Schedule::parse`] refuses an expression with no future fire,
//! and the store stamps the rows it writes.)

pub mod account;
pub mod alarm;
pub mod alert_kind;
pub mod cluster;
pub mod config;
pub mod footprint;
pub mod heap;
pub mod held_copy;
pub mod identity;
pub mod jitter;
pub mod log_budget;
pub mod percent;
pub mod proc_identity;
pub mod schedule;
pub mod stats;
pub mod status;
pub mod store;
#[doc(hidden)]
pub mod test_skip;
pub mod timefmt;
pub mod wire;

/// The version both processes report; supervisor and worker are one binary.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[cfg(test)]
mod proptests;
