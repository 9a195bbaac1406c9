//! One command's round trip on the status socket: find the socket, send
//! the request through [`super::client`], then print the reply (`--json`:
//! the body unchanged; otherwise decoded into its type and shown) and turn
//! it into an exit code: 0 done, 1 refused, 3 nobody answers (or another
//! instance than this config's does).
//!
//! `status` has exit codes of its own and does not come through here;
//! `jobs` reads page after page ([`super::jobs`]).

use std::{io::Write, path::PathBuf, process::ExitCode, time::Duration};

use cronwarden_shared::status::ErrorReply;
use hyper::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{args::Conn, client, discover};

/// How long a call may take unless the command says otherwise.
const LIMIT: Duration = Duration::from_secs(15);

/// One call on the socket within [`LIMIT`]; see [`call_within`].
pub(crate) fn call<T: DeserializeOwned>(
    conn: &Conn,
    method: Method,
    path: String,
    show: impl FnOnce(&mut dyn Write, T) -> std::io::Result<u8>,
) -> anyhow::Result<ExitCode> {
    call_within(conn, method, path, LIMIT, show)
}

/// One call on the socket. Prints the JSON with `--json`, else the reply
/// decoded as `T` through `show`, whose result is the exit code.
pub(crate) fn call_within<T: DeserializeOwned>(
    conn: &Conn,
    method: Method,
    path: String,
    limit: Duration,
    show: impl FnOnce(&mut dyn Write, T) -> std::io::Result<u8>,
) -> anyhow::Result<ExitCode> {
    let (socket, state_dir) = match socket_for(conn) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (code, body) = match rt.block_on(client::request_checked(
        &socket,
        state_dir.as_deref(),
        method,
        &path,
        limit,
    )) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cronwarden: {e} (is `cronwarden run` running?)");
            return Ok(ExitCode::from(3));
        }
    };
    let mut out = std::io::stdout().lock();
    if !(200..300).contains(&code) {
        let msg = serde_json::from_slice::<ErrorReply>(&body)
            .map(|r| r.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        eprintln!("cronwarden: {msg}");
        if conn.json {
            out.write_all(&body)?;
        }
        return Ok(ExitCode::from(1));
    }
    if conn.json {
        out.write_all(&body)?;
        // The audit's verdict is its exit code, with --json too.
        let verdict: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        return Ok(ExitCode::from(u8::from(
            verdict["ok"] == Value::Bool(false),
        )));
    }
    match serde_json::from_slice::<T>(&body) {
        Ok(reply) => Ok(ExitCode::from(show(&mut out, reply)?)),
        Err(e) => {
            // Said, not shown as an empty table: a CLI and a supervisor of
            // different versions must not look like "no jobs".
            eprintln!(
                "cronwarden: unexpected reply from {}: {e}",
                socket.display()
            );
            Ok(ExitCode::from(1))
        }
    }
}

/// `trigger`, `pause` or `resume` one job.
pub(crate) fn job_op(conn: &Conn, job: &str, op: &'static str) -> anyhow::Result<ExitCode> {
    call(
        conn,
        Method::POST,
        format!("/v1/jobs/{}/{op}", enc(job)),
        |o, v: Value| {
            match op {
                "trigger" => writeln!(o, "triggered: run {}", v["run_id"])?,
                _ => writeln!(o, "{op}d")?,
            }
            Ok(0)
        },
    )
}

/// Resolves the socket (see [`super::discover`]) and, when it comes from a
/// config, that config's state directory (the instance that must answer);
/// exit 3 when there is none.
pub(crate) fn socket_for(conn: &Conn) -> Result<(PathBuf, Option<PathBuf>), ExitCode> {
    discover::socket(conn.socket.as_deref(), conn.config.as_deref())
        .map(|t| {
            let dir = t
                .lock
                .as_deref()
                .and_then(|l| l.parent())
                .map(PathBuf::from);
            (t.socket, dir)
        })
        .map_err(|e| {
            eprintln!("cronwarden: cannot find the socket: {e}");
            ExitCode::from(3)
        })
}

/// Percent-encodes a job name for a URL path.
pub(crate) fn enc(s: &str) -> String {
    cronwarden_shared::percent::encode_component(s)
}
