//! `cronwarden run` and the hidden `cronwarden worker`: the two long-lived
//! roles of the one binary. Each sets up its logging (stderr, and the daily
//! files of `log_dir`) and hands over to its library crate.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use crate::logs;

/// `cronwarden run`: the supervisor, in the foreground.
pub(crate) fn supervisor(config: PathBuf, log_json: bool) -> anyhow::Result<ExitCode> {
    // One read of the file: the log files, the model and the worker all
    // come from the same bytes. An invalid config is reported after the
    // logging is set up, as `run` reports any other refusal.
    let loaded = cronwarden_supervisor::load_config(&config);
    let files = loaded.as_ref().ok().and_then(|(c, _)| {
        c.integrations
            .log_dir
            .clone()
            .map(|d| (d, c.integrations.log_retention))
    });
    let _guard = logs::init(
        log_json,
        "supervisor",
        files.as_ref().map(|(d, r)| (d.as_path(), *r)),
    );
    let ran = loaded.and_then(|(config, source)| {
        cronwarden_supervisor::run(cronwarden_supervisor::RunOptions {
            config,
            source,
            log_json,
        })
    });
    match ran {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("cronwarden: {e}");
            Ok(ExitCode::from(e.exit_code()))
        }
    }
}

/// `cronwarden worker`: the scheduler, started by the supervisor with
/// its event pipe, its share of the lock, the next run id and where to log.
pub(crate) fn worker(
    events_fd: i32,
    lock_fd: Option<i32>,
    first_run_id: u64,
    log_files: Option<(&Path, u32)>,
    log_json: bool,
) -> ExitCode {
    let _guard = logs::init(log_json, "worker", log_files);
    cronwarden_worker::main(cronwarden_worker::WorkerArgs {
        events_fd,
        lock_fd,
        first_run_id,
    })
}
