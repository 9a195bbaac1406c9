//! `cronwarden status`: the supervisor's own verdict, as an exit code a
//! monitoring check can use: 0 ok, 1 degraded, 2 stalled or down, 3
//! unknown. "Unknown" says why (no socket, no answer, a bad answer) and, if
//! the lock is held by a process that does not answer, names its pid, so a
//! wedged supervisor is told apart from a stopped one.

use std::{io::Write, path::PathBuf, process::ExitCode, time::Duration};

use cronwarden_shared::{config::Config, status::StatusReport};
use cronwarden_supervisor::lock;
use jiff::Timestamp;

use super::{args::Conn, client, render};

/// The exit code when the state cannot be known.
const UNKNOWN: u8 = 3;

/// How long the supervisor has to answer: a healthy one answers in
/// milliseconds, and a monitoring check must not hang.
const LIMIT: Duration = Duration::from_secs(5);

pub(crate) fn status(conn: &Conn) -> anyhow::Result<ExitCode> {
    let (socket, lock_path) = match &conn.socket {
        Some(s) => (s.clone(), None),
        None => match Config::locate(&conn.config) {
            Ok((socket, lock)) => (socket, Some(lock)),
            Err(e) => {
                eprintln!("cronwarden: status unknown: cannot find the socket:\n{e}");
                return Ok(ExitCode::from(UNKNOWN));
            }
        },
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (code, body) = match rt.block_on(client::get(&socket, "/v1/status", LIMIT)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cronwarden: status unknown: {e}{}", holder(lock_path));
            return Ok(ExitCode::from(UNKNOWN));
        }
    };
    let report: StatusReport = match serde_json::from_slice(&body) {
        Ok(r) if code == 200 => r,
        _ => {
            eprintln!(
                "cronwarden: status unknown: HTTP {code} from {}: {}",
                socket.display(),
                String::from_utf8_lossy(&body)
            );
            return Ok(ExitCode::from(UNKNOWN));
        }
    };
    let mut out = std::io::stdout().lock();
    if conn.json {
        out.write_all(&body)?;
    } else {
        render::status::status(&mut out, &report, Timestamp::now(), render::stdout_color())?;
    }
    Ok(ExitCode::from(report.state.exit_code()))
}

/// Who holds the lock, when the socket did not answer.
fn holder(lock_path: Option<PathBuf>) -> String {
    lock_path
        .filter(|p| lock::is_held(p))
        .map(|p| match lock::read_holder(&p) {
            Ok(h) => format!(
                "; the lock {} is held by pid {} which does not answer",
                p.display(),
                h.pid
            ),
            Err(_) => format!(
                "; the lock {} is held by a process that does not answer",
                p.display()
            ),
        })
        .unwrap_or_else(|| "; no supervisor is running".into())
}
