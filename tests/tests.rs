//! The one integration-test binary (as ripgrep does): every test runs the
//! real `cronwarden` binary against real processes, pipes, signals, sockets
//! and files. No mocks.

mod util;

mod alerts;
mod cli;
mod contain;
mod hardening;
mod hostile;
mod human;
mod import;
mod ledger;
mod logs;
mod metrics;
mod once;
mod operator;
mod pings;
mod supervisor;
mod truth;
mod wedge;
