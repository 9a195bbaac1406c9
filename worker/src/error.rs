//! The worker's errors, each naming what it is about (a descriptor, a
//! path, a job, a program), so a log line alone says where to look.
//!
//! Two kinds, as in watchexec: those that end the worker before its loop
//! starts (a missing descriptor, a refused config, an unusable store) are
//! returned from [`crate::scheduler::run`]; those at runtime (a job that
//! cannot start, a store write that fails) are recorded — in the run's
//! record, in the heartbeat's `store_error` — and the loop goes on.

use std::{io, path::PathBuf};

use cronwarden_shared::{config::ConfigErrors, store::StoreError};

#[derive(Debug, thiserror::Error)]
pub(crate) enum WorkerError {
    /// A descriptor the supervisor should have passed is missing or unusable.
    #[error("{what} descriptor {fd}: {source}")]
    Descriptor {
        what: &'static str,
        fd: i32,
        source: io::Error,
    },
    #[error("stdin is not a pipe from the supervisor: {0}")]
    StdinNotAPipe(io::Error),
    #[error("event pipe: {0}")]
    EventPipe(io::Error),
    #[error("SIGTERM handler: {0}")]
    Signal(io::Error),
    #[error("the loop's timer (timerfd): {0}")]
    Timer(io::Error),
    #[error("configuration refused:\n{source}")]
    ConfigRefused { path: PathBuf, source: ConfigErrors },
    #[error("expected a configure command first, got {0}")]
    NotConfigured(String),
    #[error("the supervisor closed the command pipe before configuring")]
    SupervisorGone,
    #[error("no configuration within {0}s")]
    NoConfiguration(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store file was lost and no store could be reopened yet.
    #[error("no store is open (its file was lost; reopening is retried every second)")]
    StoreUnavailable,
    /// The `store::apply` fail point.
    #[error("store write failed (injected fault)")]
    InjectedStoreFault,
    #[error("cannot run as the configured user/group: {0}")]
    Credentials(String),
    /// A job's program could not be started (the job is named by the
    /// record it lands in).
    #[error("cannot start {program:?}: {source}")]
    Spawn { program: String, source: io::Error },
}
