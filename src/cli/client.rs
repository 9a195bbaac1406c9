//! The CLI's side of the status socket: one HTTP request, bounded in time.
//!
//! A client that knows its config's state directory sends it
//! ([`request_checked`]); the answering supervisor refuses (409) if it is
//! another instance's, and the reply's own identity header is compared
//! too, so another instance's answer is an error (exit 3), never "ok".

use std::{path::Path, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    #[error("cannot connect to {path}: {source}")]
    Connect {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path} did not answer within {secs}s")]
    Timeout { path: std::path::PathBuf, secs: u64 },
    #[error("{path} is served by another cronwarden instance (pid {pid}, state directory {theirs}), not the one of this config (state directory {ours}); two instances share one `socket =` path")]
    OtherInstance {
        path: std::path::PathBuf,
        pid: String,
        theirs: String,
        ours: String,
    },
    #[error("bad reply from {path}: {detail}")]
    Protocol {
        path: std::path::PathBuf,
        detail: String,
    },
}

/// One request on the socket; returns the HTTP status and body. For a
/// caller with no config to check the instance against.
#[allow(dead_code)]
pub(crate) async fn request(
    socket: &Path,
    method: hyper::Method,
    path: &str,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), ClientError> {
    request_checked(socket, None, method, path, timeout).await
}

/// One request on the socket, to the instance of `state_dir` only (when
/// given): any other instance's answer is [`ClientError::OtherInstance`].
pub(crate) async fn request_checked(
    socket: &Path,
    state_dir: Option<&Path>,
    method: hyper::Method,
    path: &str,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), ClientError> {
    use cronwarden_shared::identity::{EXPECT_HEADER, PID_HEADER, STATE_DIR_HEADER};
    let ours = state_dir.map(cronwarden_shared::identity::of_dir);
    let proto = |detail: String| ClientError::Protocol {
        path: socket.into(),
        detail,
    };
    let work = async {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|source| ClientError::Connect {
                path: socket.into(),
                source,
            })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                .await
                .map_err(|e| proto(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "cronwarden");
        if let Some(o) = &ours {
            req = req.header(EXPECT_HEADER, o.as_str());
        }
        let req = req.body(Empty::new()).map_err(|e| proto(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| proto(e.to_string()))?;
        let code = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        // A supervisor without the header predates the check: its answer
        // is taken as before.
        if let (Some(ours), Some(theirs)) = (&ours, header(STATE_DIR_HEADER)) {
            if *ours != theirs {
                return Err(ClientError::OtherInstance {
                    path: socket.into(),
                    pid: header(PID_HEADER).unwrap_or_else(|| "unknown".into()),
                    theirs: cronwarden_shared::identity::decode_lossy(&theirs),
                    ours: cronwarden_shared::identity::decode_lossy(ours),
                });
            }
        }
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| proto(e.to_string()))?;
        Ok((code, body.to_bytes().to_vec()))
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(ClientError::Timeout {
            path: socket.into(),
            secs: timeout.as_secs(),
        }),
    }
}
