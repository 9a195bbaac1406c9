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
//!
//! JSON lines are flat: an event's fields sit beside `timestamp`, `level`
//! and `message`, not nested under `fields`, so `jq .job` and a log
//! shipper's field mapping work on them directly. (Whether a field is a
//! JSON number or a string is decided where it is logged: `pid = 7` is a
//! number, `pid = ?Some(7)` Debug text.)
//!
//! Under journald (sd-daemon(3): `JOURNAL_STREAM` names the device and
//! inode of the stream stderr is connected to) every stderr line starts
//! with its syslog priority, `<3>` error, `<4>` warning, `<6>` info, `<7>`
//! debug and trace: journald strips the prefix and stores the priority, so
//! `journalctl -p warning -u cronwarden` finds the warnings and alerts.
//! The check compares the device and inode with stderr's own, as the man
//! page asks: a child whose stderr was redirected elsewhere while it
//! inherited the variable writes no prefixes into a file or a pipe. The
//! log files never get prefixes.

use std::{io::IsTerminal, os::unix::fs::MetadataExt, path::Path};

use tracing::{Event, Level, Subscriber};
use tracing_appender::{
    non_blocking::{NonBlockingBuilder, WorkerGuard},
    rolling::{RollingFileAppender, Rotation},
};
use tracing_subscriber::{
    fmt::{
        self,
        format::{FormatEvent, FormatFields, Writer},
        FmtContext,
    },
    layer::SubscriberExt,
    registry::LookupSpan,
    util::SubscriberInitExt,
    EnvFilter, Layer,
};

/// Lines buffered for the file writer before it starts dropping.
const BUFFERED_LINES: usize = 16_384;

type Boxed = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;

/// Installs the global subscriber. The guard flushes the file writer when
/// dropped: keep it until the process ends.
pub fn init(json: bool, who: &'static str, files: Option<(&Path, u32)>) -> Option<WorkerGuard> {
    let filter =
        EnvFilter::try_from_env("CRONWARDEN_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let journal = stderr_is_journal();
    let mut layers: Vec<Boxed> = vec![if json {
        let format = fmt::format().json().flatten_event(true);
        fmt::layer()
            .json()
            .flatten_event(true)
            .event_format(Prioritized {
                inner: format,
                on: journal,
            })
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        // Colour only for a person at a terminal: the journal, a pipe or a
        // file gets plain text (escape codes there are noise to grep).
        let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        let format = fmt::format().with_target(false).with_ansi(ansi);
        fmt::layer()
            .with_ansi(ansi)
            .event_format(Prioritized {
                inner: format,
                on: journal,
            })
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
                    fmt::layer()
                        .json()
                        .flatten_event(true)
                        .with_writer(writer)
                        .boxed()
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

/// The syslog priority of a level, as sd-daemon(3) prefixes it.
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// Whether stderr is the journal's stream: `JOURNAL_STREAM` is
/// `<device>:<inode>` of it (sd-daemon(3)), compared with stderr's own.
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    let Some(var) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return false;
    };
    journal_stream_matches(&var.to_string_lossy(), meta.dev(), meta.ino())
}

fn journal_stream_matches(var: &str, dev: u64, ino: u64) -> bool {
    var.split_once(':')
        .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
        .is_some_and(|(d, i)| d == dev && i == ino)
}

/// An event format that starts each line with its syslog priority when
/// `on` (stderr is the journal), and is `inner` unchanged otherwise.
struct Prioritized<F> {
    inner: F,
    on: bool,
}

impl<S, N, F> FormatEvent<S, N> for Prioritized<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        if self.on {
            write!(writer, "<{}>", priority(event.metadata().level()))?;
        }
        self.inner.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_follow_sd_daemon() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
        assert_eq!(priority(&Level::TRACE), 7);
    }

    #[test]
    fn journal_stream_is_device_and_inode() {
        assert!(journal_stream_matches("8:1234", 8, 1234));
        assert!(!journal_stream_matches("8:1234", 8, 1235));
        assert!(!journal_stream_matches("8", 8, 1234));
        assert!(!journal_stream_matches("x:y", 8, 1234));
        assert!(!journal_stream_matches("", 0, 0));
    }
}
