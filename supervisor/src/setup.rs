//! `cronwarden run`: everything before the loop, in the order that makes a
//! failure leave nothing behind.
//!
//! The config is validated first (an invalid one exits 2, as `check`), then
//! the state directory is created and the lock taken (one supervisor per
//! state directory), then the store is opened and read, so a corrupt or
//! unreadable store stops `run` with an error naming the file instead of a
//! worker crash loop. Only then does the process become a subreaper and
//! hand everything to the loop ([`crate::event_loop`]), which binds the
//! socket and starts the first worker.

use std::{path::PathBuf, sync::Arc};

use cronwarden_shared::{
    config::{Config, ConfigErrors, Source},
    status::SupervisorInfo,
    store::{self, Store},
    VERSION,
};
use jiff::Timestamp;
use tokio::task::LocalSet;

use crate::{
    alerts,
    event_loop::{Prepared, Supervisor},
    lock, metrics,
    model::Model,
    notify, pings, reaper, server, sinks, spawn,
};

/// Why `run` could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("cannot create state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    #[error(transparent)]
    Server(#[from] server::ServerError),
    #[error(transparent)]
    Metrics(#[from] metrics::ListenError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
}

impl SupervisorError {
    /// Exit code: 2 for an invalid config (as `check`), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            SupervisorError::Config(_) => 2,
            _ => 1,
        }
    }
}

/// Options of `cronwarden run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The config, and the texts it was parsed from (what each worker
    /// runs), from one read of the files: see [`Config::read`].
    pub config: Config,
    pub source: Source,
    pub log_json: bool,
}

/// Runs the supervisor until SIGTERM/SIGINT.
pub fn run(opts: RunOptions) -> Result<(), SupervisorError> {
    let RunOptions {
        config,
        source,
        log_json,
    } = opts;
    std::fs::DirBuilder::new()
        .recursive(true)
        .create(&config.state_dir)
        .map_err(|source| SupervisorError::StateDir {
            path: config.state_dir.clone(),
            source,
        })?;
    let started_at = Timestamp::now();
    let lock = lock::acquire_waiting(
        &config.lock_path(),
        &lock::Holder {
            pid: std::process::id(),
            version: VERSION.into(),
            socket: config.socket.clone(),
            started_at,
        },
        previous_generation_wait(&config),
        |held| {
            tracing::warn!(
                "waiting up to {}s for the previous generation to exit: {held}",
                previous_generation_wait(&config).as_secs()
            )
        },
    )?;
    // Opened (and migrated) here first, so a corrupt or unreadable store
    // stops `run` with an error naming the file instead of a worker crash loop.
    let store_path = config.state_dir.join(store::FILE_NAME);
    let (restored, history) = {
        let store = Store::open(&store_path)?;
        let mut history = vec![];
        for j in &config.jobs {
            history.push((j.name.clone(), store.runs(&j.name, 200)?));
        }
        (store.alerts(false, 10_000)?, history)
    };
    spawn::become_subreaper().map_err(|source| SupervisorError::Io {
        what: "becoming a child subreaper",
        source,
    })?;
    let exe = std::fs::read_link("/proc/self/exe").map_err(|source| SupervisorError::Io {
        what: "finding our own executable",
        source,
    })?;
    let reaper = reaper::Reaper::default();
    let sink_specs = config.sinks.clone();
    let host_beat = pings::HostBeat::from_config(&config);
    // Log files are opened at start (by the CLI, before the config reaches
    // us); every worker gets the same ones, whatever a reload says.
    let log_files = config
        .integrations
        .log_dir
        .clone()
        .map(|d| (d, config.integrations.log_retention));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| SupervisorError::Io {
            what: "starting the runtime",
            source,
        })?;
    let mut book = alerts::AlertBook::new(restored);
    if let Some(c) = &config.cluster {
        book.set_host(c.host.clone());
    }
    let mut model = Model::new(
        Arc::new(config),
        SupervisorInfo {
            pid: std::process::id(),
            version: VERSION.into(),
            started_at,
            binary_replaced: None,
        },
        book,
    );
    for (job, runs) in history {
        model.seed_history(&job, &runs);
    }
    let supervisor = Supervisor::new(Prepared {
        model,
        recorder: alerts::Recorder::start(store_path),
        notifier: notify::Notifier::from_env(),
        sinks: sinks::Sinks::start(&sink_specs, &reaper),
        reaper,
        source,
        exe,
        lock,
        log_json,
        log_files,
        host_beat,
    });
    rt.block_on(LocalSet::new().run_until(supervisor.main_loop()))
}

/// How long `run` waits for what is left of a dead supervisor (its worker,
/// which stops its jobs within their `kill_grace`, then exits) before it
/// gives up: the longest `kill_grace`, plus a margin, capped.
fn previous_generation_wait(config: &Config) -> std::time::Duration {
    const MARGIN: std::time::Duration = std::time::Duration::from_secs(15);
    const CAP: std::time::Duration = std::time::Duration::from_secs(300);
    let grace = config.jobs.iter().map(|j| j.kill_grace).max();
    grace.unwrap_or_default().saturating_add(MARGIN).min(CAP)
}

#[cfg(test)]
mod tests {
    use std::{
        fs::{File, OpenOptions},
        io::Write,
        os::unix::fs::OpenOptionsExt,
        path::Path,
        time::{Duration, Instant},
    };

    use nix::sys::stat::Mode;

    use super::*;

    fn text(job: &str) -> String {
        format!("[[job]]\nname = {job:?}\nschedule = \"@daily\"\nshell = \"true\"\n")
    }

    /// The FIFO's write end, once some reader has it open.
    fn writer(path: &Path) -> Option<File> {
        OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .ok()
    }

    #[test]
    fn the_model_and_the_workers_get_the_config_of_one_read() {
        // A FIFO as the config file gives each open its own text: the
        // file rewritten between two reads, deterministically.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cronwarden.toml");
        nix::unistd::mkfifo(&path, Mode::S_IRUSR | Mode::S_IWUSR).unwrap();
        let fifo = path.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(5);
            let pause = || std::thread::sleep(Duration::from_millis(1));
            let mut first = loop {
                match writer(&fifo) {
                    Some(f) => break f,
                    None if Instant::now() < deadline => pause(),
                    None => return,
                }
            };
            first.write_all(text("first").as_bytes()).unwrap();
            drop(first);
            // Until the first reader has gone (then no writer can open)...
            while writer(&fifo).is_some() && Instant::now() < deadline {
                pause();
            }
            // ...then another text for any later reader.
            while Instant::now() < deadline {
                if let Some(mut f) = writer(&fifo) {
                    let _ = f.write_all(text("second").as_bytes());
                    return;
                }
                pause();
            }
        });
        let (config, source) = Config::read(&path).unwrap();
        let worker_sees = Config::parse_source(&path, &source).unwrap();
        let names = |c: &Config| c.jobs.iter().map(|j| j.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&config), ["first"]);
        assert_eq!(names(&worker_sees), names(&config));
    }
}
