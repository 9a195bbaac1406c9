//! The connection budget of the status socket: at most
//! [`MAX_CONNECTIONS`] served at once (and [`MAX_CONTROL_CONNECTIONS`] more
//! for peers that may make control calls), a bounded wait for a slot, then
//! a 503 written without reading the request. The accept loop never waits
//! on a client.

use std::{convert::Infallible, sync::Arc, time::Duration};

use cronwarden_shared::status::ErrorReply;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::UnixListener, sync::Semaphore, time::Instant};

use super::{handle, may_control, Peer, Shared, MAX_HEAD};

/// At most this many connections are served at once (for peers that may
/// make control calls, [`MAX_CONTROL_CONNECTIONS`] more).
pub const MAX_CONNECTIONS: usize = 256;
/// Slots only peers that may make control calls take (root, cronwarden's
/// user, `control_group`); when these are taken they share the others.
pub const MAX_CONTROL_CONNECTIONS: usize = 32;

/// A connection beyond the cap waits this long for a slot, then gets a 503.
/// Waiting at all absorbs a burst of honest clients; waiting briefly means
/// that a flood never leaves a client hanging (the kernel backlog would keep
/// one waiting until a slot frees, which under a flood is past its timeout).
pub const OVERFLOW_WAIT: Duration = Duration::from_secs(1);
/// At most this many connections wait for a slot; beyond that a new one is
/// closed at once, so a flood costs a bounded number of descriptors.
const MAX_WAITING: usize = 256;
/// The whole request head must arrive within this time (hyper's timer: it
/// runs from the first read of a head, on new and idle kept-alive
/// connections alike, so an idle or slowloris client holds a slot no longer).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves until the task is dropped. The accept loop itself never waits on
/// a client: each connection, or its refusal, is a task of its own.
pub(crate) async fn serve(listener: UnixListener, shared: Shared) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let control_slots = Arc::new(Semaphore::new(MAX_CONTROL_CONNECTIONS));
    let waiting = Arc::new(Semaphore::new(MAX_WAITING));
    let control_waiting = Arc::new(Semaphore::new(MAX_CONTROL_CONNECTIONS));
    let mut refusals = crate::log_budget::LogBudget::new(5, Duration::from_secs(60));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok((s, _)) => {
                let peer = s.peer_cred().ok().map(|c| Peer {
                    uid: c.uid(),
                    gid: c.gid(),
                    pid: c.pid(),
                });
                (s, peer)
            }
            Err(e) => {
                tracing::warn!("status socket accept failed: {e}");
                // EMFILE and friends: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        let controller = {
            let snap = shared.snapshots.borrow();
            may_control(peer, snap.config.control_group.as_ref()).is_ok()
        };
        let permit = if controller {
            control_slots.clone().try_acquire_owned().ok()
        } else {
            None
        }
        .or_else(|| slots.clone().try_acquire_owned().ok());
        let mut wait = None;
        if permit.is_none() {
            if let Some(suppressed) = refusals.admit(Instant::now()) {
                tracing::warn!(
                    suppressed,
                    "status socket: {MAX_CONNECTIONS} connections open; a new one waits {} for a slot, then gets 503",
                    cronwarden_shared::timefmt::human_duration(OVERFLOW_WAIT)
                );
            }
            // Controllers wait in a queue of their own too.
            let queue = if controller {
                &control_waiting
            } else {
                &waiting
            };
            match queue.clone().try_acquire_owned() {
                Ok(w) => wait = Some(w),
                Err(_) => continue,
            }
        }
        let slots = slots.clone();
        let control_slots = controller.then(|| control_slots.clone());
        tokio::task::spawn_local(async move {
            let permit = match permit {
                Some(p) => p,
                None => {
                    // A controller takes whichever slot frees first.
                    let any = async {
                        match control_slots {
                            Some(c) => tokio::select! {
                                p = c.acquire_owned() => p,
                                p = slots.acquire_owned() => p,
                            },
                            None => slots.acquire_owned().await,
                        }
                    };
                    match tokio::time::timeout(OVERFLOW_WAIT, any).await {
                        Ok(Ok(p)) => p,
                        _ => return refuse_busy(stream).await,
                    }
                }
            };
            drop(wait);
            let svc = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(req, &shared, peer).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                // The read buffer alone does not cap a head that arrives whole.
                .max_header_size(MAX_HEAD)
                .max_buf_size(MAX_HEAD)
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!("status connection ended: {e}");
            }
            drop(permit);
        });
    }
}

/// A 503 written without reading the request, bounded in time: a client
/// that does not read cannot keep even its refusal going.
async fn refuse_busy(mut stream: tokio::net::UnixStream) {
    use tokio::io::AsyncWriteExt;
    let body = serde_json::to_vec(&ErrorReply {
        error: format!(
            "too many connections to the status socket (at most {MAX_CONNECTIONS}); try again"
        ),
    })
    .expect("serializes");
    let mut reply = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    reply.extend_from_slice(&body);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(&reply).await?;
        stream.shutdown().await
    })
    .await;
}
