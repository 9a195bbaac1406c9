//! The CLI's side of the status socket: one HTTP request, bounded in time.

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
    #[error("bad reply from {path}: {detail}")]
    Protocol {
        path: std::path::PathBuf,
        detail: String,
    },
}

/// `GET path` on the socket; returns the HTTP status and body.
pub(crate) async fn get(
    socket: &Path,
    path: &str,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), ClientError> {
    request(socket, hyper::Method::GET, path, timeout).await
}

/// One request on the socket; returns the HTTP status and body.
pub(crate) async fn request(
    socket: &Path,
    method: hyper::Method,
    path: &str,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), ClientError> {
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
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "cronwarden")
            .body(Empty::new())
            .map_err(|e| proto(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| proto(e.to_string()))?;
        let code = resp.status().as_u16();
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
