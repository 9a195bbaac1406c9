//! The one integration-test binary (as ripgrep does): every test runs the
//! real `cronwarden` binary against real processes, pipes, signals, sockets
//! and files. No mocks.

mod util;

mod alerts;
mod cli;
mod hostile;
mod ledger;
mod supervisor;
mod wedge;
