//! What cronwarden's supervisor and worker must agree on, kept in one place so
//! they can never drift apart:
//!
//! - [`config`]: the TOML model and its validation (every error names the
//!   file, the job and the key);
//! - [`schedule`]: cron expressions and `@every` intervals mapped to instants
//!   under the DST rules of DESIGN.md;
//! - [`wire`]: the NDJSON events (worker → supervisor) and commands
//!   (supervisor → worker);
//! - [`status`]: the JSON shapes users see on the socket and in the CLI;
//! - [`stats`]: what the worker measures for the supervisor's metrics.
//!
//! Nothing here does I/O beyond reading a config file.

pub mod account;
pub mod alert_kind;
pub mod config;
pub mod crontab;
pub mod explain;
pub mod lint;
pub mod render;
pub mod schedule;
pub mod stats;
pub mod status;
pub mod store;
pub mod timefmt;
pub mod wire;

/// The version both processes report; supervisor and worker are one binary.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[cfg(test)]
mod proptests;
