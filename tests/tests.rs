//! The one integration-test binary (as ripgrep does): every test runs the
//! real `cronwarden` binary against real processes, pipes, signals, sockets
//! and files. No mocks.

mod util;

mod alertmanager;
mod alerts;
mod cli;
mod clock;
mod contain;
mod container;
mod dropin;
mod edge;
mod hardening;
mod hostile;
mod human;
mod import;
mod ledger;
mod ledger_store;
mod logs;
mod metrics;
mod multihost;
mod multihost_alerts;
mod once;
mod once2;
mod operator;
mod opsday;
mod output;
mod package;
mod page;
mod pings;
mod sched;
mod status_api;
mod supervisor;
mod suptime;
mod truth;
mod wedge;
