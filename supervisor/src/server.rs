//! The status socket: HTTP/1.1 with JSON bodies on a Unix socket, so
//! `curl --unix-socket` works.
//!
//! The socket is created with a restrictive umask in effect and then chmod'ed
//! to 0660 before it accepts anything. Connections are capped and each has a
//! header read timeout, so no client can hold the supervisor; handlers only
//! read the in-memory model and never wait on the worker, a job or a disk.

use std::{
    cell::RefCell, convert::Infallible, os::unix::fs::PermissionsExt, path::Path, rc::Rc,
    sync::Arc, time::Duration,
};

use bytes::Bytes;
use cronwarden_shared::status::ErrorReply;
use http_body_util::Full;
use hyper::{body::Incoming, header, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use jiff::Timestamp;
use serde::Serialize;
use tokio::{net::UnixListener, sync::Semaphore, time::Instant};

use crate::model::Model;

/// At most this many connections are served at once; more wait in the
/// listen backlog.
pub const MAX_CONNECTIONS: usize = 256;
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot create socket directory {path}: {source}")]
    Dir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot bind status socket {path}: {source}")]
    Bind {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Binds the socket. The caller holds the state lock, so an existing socket
/// file is a leftover of a dead supervisor and is replaced.
pub fn bind(path: &Path) -> Result<UnixListener, ServerError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| ServerError::Dir {
            path: dir.into(),
            source,
        })?;
    }
    let _ = std::fs::remove_file(path);
    // No window in which the socket is more open than 0660.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o117));
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound.map_err(|source| ServerError::Bind {
        path: path.into(),
        source,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(|source| {
        ServerError::Bind {
            path: path.into(),
            source,
        }
    })?;
    Ok(listener)
}

/// Serves until the task is dropped.
pub async fn serve(listener: UnixListener, model: Rc<RefCell<Model>>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("status socket accept failed: {e}");
                // EMFILE and friends: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let model = model.clone();
        tokio::task::spawn_local(async move {
            let svc = hyper::service::service_fn(move |req| {
                let model = model.clone();
                async move { Ok::<_, Infallible>(handle(req, &model)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!("status connection ended: {e}");
            }
            drop(permit);
        });
    }
}

fn json<T: Serialize>(code: StatusCode, body: &T) -> Response<Full<Bytes>> {
    let mut bytes = serde_json::to_vec_pretty(body).expect("status types serialize");
    bytes.push(b'\n');
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .expect("valid response")
}

fn error(code: StatusCode, msg: String) -> Response<Full<Bytes>> {
    json(code, &ErrorReply { error: msg })
}

fn handle(req: Request<Incoming>, model: &Rc<RefCell<Model>>) -> Response<Full<Bytes>> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let parts: Vec<&str> = path.split('/').skip(1).collect();
    if req.method() != Method::GET {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "{} {path}: only GET is served by this version",
                req.method()
            ),
        );
    }
    let m = model.borrow();
    let status = || m.status(Instant::now(), Timestamp::now());
    match parts.as_slice() {
        ["v1", "status"] => json(StatusCode::OK, &status()),
        ["v1", "jobs"] => json(StatusCode::OK, &status().jobs),
        ["v1", "jobs", name] => match status().jobs.into_iter().find(|j| j.name == *name) {
            Some(j) => json(StatusCode::OK, &j),
            None => error(StatusCode::NOT_FOUND, format!("no job named {name:?}")),
        },
        ["v1", "jobs", name, "runs"] => match m.jobs.get(*name) {
            // Until the store lands only the last run is kept in memory.
            Some(j) => json(StatusCode::OK, &j.last_run.iter().collect::<Vec<_>>()),
            None => error(StatusCode::NOT_FOUND, format!("no job named {name:?}")),
        },
        _ => error(
            StatusCode::NOT_FOUND,
            format!("GET {path}: no such endpoint (try /v1/status)"),
        ),
    }
}
