//! The one integration-test binary (as ripgrep does): every test runs the
//! real `cronwarden` binary against real processes, pipes, signals, sockets
//! and files. No mocks.

mod util;

mod alertmanager;
mod alerts;
mod cli;
mod container;
mod edge;
mod hardening;
mod hostile;
mod human;
mod import;
mod ledger;
mod logs;
mod metrics;
mod once;
mod operator;
mod package;
mod page;
mod pings;
mod status_api;
mod supervisor;
mod truth;
mod wedge;
