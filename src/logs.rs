//! Logging: to stderr always, and, when `log_dir` is set, also to daily
//! files `<log_dir>/cronwarden.YYYY-MM-DD.log` keeping `log_retention` of
//! them (tracing-appender prunes the oldest at each rollover).
//!
//! The file writer is tracing-appender's non-blocking one in lossy mode: a
//! slow or full disk makes it drop lines (counted, and exposed as
//! `cronwarden_log_lines_dropped_total`) rather than stall the supervisor's
//! loop. Stderr stays a plain blocking writer, as before (the journal or a
//! terminal reads it).
//!
//! The worker opens its own appender on the same directory and prefix
//! (the supervisor passes `--log-dir` and `--log-retention`), so both
//! processes' lines land in the same daily file: the file is opened with
//! O_APPEND and each event is one write, so lines never interleave mid-line.
//! That is simpler than piping the worker's stderr through the supervisor,
//! and a wedged supervisor cannot then lose the worker's last words.

use std::{io::IsTerminal, path::Path};

use tracing_appender::{
    non_blocking::{NonBlockingBuilder, WorkerGuard},
    rolling::{RollingFileAppender, Rotation},
};
use tracing_subscriber::{fmt, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer};

/// Lines buffered for the file writer before it starts dropping.
const BUFFERED_LINES: usize = 16_384;

type Boxed = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;

/// Installs the global subscriber. The guard flushes the file writer when
/// dropped: keep it until the process ends.
pub fn init(json: bool, who: &'static str, files: Option<(&Path, u32)>) -> Option<WorkerGuard> {
    let filter =
        EnvFilter::try_from_env("CRONWARDEN_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let mut layers: Vec<Boxed> = vec![if json {
        fmt::layer().json().with_writer(std::io::stderr).boxed()
    } else {
        // Colour only for a person at a terminal: the journal, a pipe or a
        // file gets plain text (escape codes there are noise to grep).
        let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        fmt::layer()
            .with_target(false)
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .boxed()
    }];
    let mut guard = None;
    let mut failed = None;
    if let Some((dir, retention)) = files {
        match open(dir, retention) {
            Ok(appender) => {
                let (writer, g) = NonBlockingBuilder::default()
                    .lossy(true)
                    .buffered_lines_limit(BUFFERED_LINES)
                    .thread_name("log-file")
                    .finish(appender);
                let counter = writer.error_counter();
                cronwarden_shared::stats::set_log_drop_source(move || {
                    counter.dropped_lines() as u64
                });
                layers.push(if json {
                    fmt::layer().json().with_writer(writer).boxed()
                } else {
                    fmt::layer()
                        .with_target(false)
                        .with_ansi(false)
                        .with_writer(writer)
                        .boxed()
                });
                guard = Some(g);
            }
            Err(e) => failed = Some(format!("{}: {e}", dir.display())),
        }
    }
    tracing_subscriber::registry()
        .with(layers)
        .with(filter)
        .init();
    if let Some(e) = failed {
        // Not fatal: stderr still has every line, and the operator sees why.
        tracing::error!(who, "cannot write log files in {e}; logging to stderr only");
    }
    tracing::debug!(who, "logging");
    guard
}

fn open(dir: &Path, retention: u32) -> Result<RollingFileAppender, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    RollingFileAppender::builder()
        .rotation(Rotation::DAILY)
        .filename_prefix("cronwarden")
        .filename_suffix("log")
        .max_log_files(retention.max(1) as usize)
        .build(dir)
        .map_err(|e| e.to_string())
}
