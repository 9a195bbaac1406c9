//! The status socket: HTTP/1.1 with JSON bodies on a Unix socket, so
//! `curl --unix-socket` works.
//!
//! The socket is created with a restrictive umask in effect and then chmod'ed
//! to 0660 (group `socket_group` when set) before it accepts anything; its
//! directory, when it is the state directory or one cronwarden created, is
//! 0750 with the same group. So who may connect is decided by the file
//! system: anyone who can connect may read. Control calls (every POST) are
//! decided per request from the peer's credentials (SO_PEERCRED): root,
//! cronwarden's own user, or a member of `control_group`; anyone else gets
//! 403 with the reason, and the refusal is logged.
//!
//! Connections are capped and each has a header read timeout, so no client
//! can hold the supervisor. Peers that may make control calls have slots
//! of their own ([`MAX_CONTROL_CONNECTIONS`]) before they share the
//! readers' ones, so readers holding every reader slot cannot starve
//! root's `pause`.
//!
//! Every reply names the instance that gives it (headers
//! [`identity::STATE_DIR_HEADER`] and [`identity::PID_HEADER`]), and a
//! request that names the state directory it expects
//! ([`identity::EXPECT_HEADER`]) is refused with 409 by any
//! other instance before anything is done: a client never takes another
//! instance's answer for its own. [`bind`] never replaces a socket that a
//! live process still serves.
//!
//! Job names arrive percent-encoded in the path; each segment is decoded
//! before it is matched. Reads are served from the loop's latest
//! snapshot ([`crate::snapshot`]): a handler computes nothing and never
//! touches the model, and the socket has a thread and runtime of its own
//! ([`spawn`]), so no reader waits for an evaluation of the loop, nor the
//! loop for a reader; `GET /v1/status` is the summary and `GET /v1/jobs`
//! pages through the jobs ([`crate::jobs_page`]), both from JSON the
//! snapshot serialised once. Control calls go to the loop over a channel and wait
//! for it within a bound; history reads go to the store on the blocking
//! pool, also bounded. No handler waits on the worker, a job or a disk
//! without a bound.

use std::{os::unix::fs::PermissionsExt, path::Path, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, header, Request, Response, StatusCode};
use tokio::net::UnixListener;

use crate::{control::ControlRequest, snapshot::Snapshots};
use cronwarden_shared::{account, identity};
use tokio::sync::{mpsc, oneshot};

mod budget;
mod routes;

pub(crate) use budget::serve;
pub use budget::{HEADER_TIMEOUT, MAX_CONNECTIONS};
#[cfg(test)]
use budget::{MAX_CONTROL_CONNECTIONS, OVERFLOW_WAIT};
use routes::{error, route};

/// A request head larger than this gets 431.
pub const MAX_HEAD: usize = 64 * 1024;
/// A request whose declared body is larger gets 413, unread. No endpoint
/// takes a body; an unread one is never buffered (hyper reads a body only
/// on demand and closes the connection when the handler leaves it unread).
pub const MAX_BODY: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot create socket directory {path}: {source}")]
    Dir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the status socket {path} is served by another live process{}; refusing to replace it (give this instance its own `socket =` or stop the other)", other_text(*.pid))]
    InUse {
        path: std::path::PathBuf,
        pid: Option<i32>,
    },
    #[error("cannot bind status socket {path}: {source}")]
    Bind {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

fn other_text(pid: Option<i32>) -> String {
    match pid {
        None => String::new(),
        Some(pid) => {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| {
                    String::from_utf8_lossy(&b)
                        .split('\0')
                        .filter(|a| !a.is_empty())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            if cmdline.is_empty() {
                format!(" (pid {pid})")
            } else {
                format!(" (pid {pid}: {cmdline})")
            }
        }
    }
}

/// Whether a process serves the socket at `path`: a connection is accepted
/// (or queued: a full backlog is someone's too). `Some(pid)` of the server
/// when the kernel says who it is. A stopped (SIGSTOPped) server still
/// counts: the kernel queues the connection for it.
fn served_by(path: &Path) -> Option<Option<i32>> {
    use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, UnixAddr};
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ok()?;
    let addr = UnixAddr::new(path).ok()?;
    match socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr) {
        Ok(()) => Some(
            socket::getsockopt(&fd, sockopt::PeerCredentials)
                .ok()
                .map(|c| c.pid()),
        ),
        Err(nix::errno::Errno::EAGAIN) => Some(None),
        Err(_) => None,
    }
}

/// Binds the socket. The caller holds the state lock, so an existing socket
/// file is a leftover of a dead supervisor and is replaced, unless a live
/// process still serves it: another instance (another state directory)
/// configured with the same `socket =` path, whose socket is not ours to
/// take.
pub fn bind(
    path: &Path,
    state_dir: &Path,
    group: Option<u32>,
) -> Result<UnixListener, ServerError> {
    if let Some(dir) = path.parent() {
        let existed = dir.exists();
        let dir_err = |source| ServerError::Dir {
            path: dir.into(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(dir_err)?;
        // A directory the operator chose for the socket (/run, /tmp) keeps
        // its mode; the state directory (which also holds the store) and
        // one made here are closed to everyone outside the socket's group.
        if !existed || dir == state_dir {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))
                .map_err(dir_err)?;
            if group.is_some() {
                std::os::unix::fs::chown(dir, None, group).map_err(dir_err)?;
            }
        }
    }
    if let Some(pid) = served_by(path) {
        return Err(ServerError::InUse {
            path: path.into(),
            pid,
        });
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
    let bind_err = |source| ServerError::Bind {
        path: path.into(),
        source,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(bind_err)?;
    if group.is_some() {
        std::os::unix::fs::chown(path, None, group).map_err(bind_err)?;
    }
    Ok(listener)
}

/// Who is at the other end of a connection, from SO_PEERCRED.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

/// Whether `peer` may make control calls: root, cronwarden's own user, or
/// a member of `control_group` (its primary group, or a supplementary one
/// of the connecting process). `None` (no credentials) may not.
fn may_control(peer: Option<Peer>, control_group: Option<&(String, u32)>) -> Result<(), String> {
    let me = nix::unistd::Uid::effective().as_raw();
    let allowed = match control_group {
        Some((name, _)) => format!("root, uid {me} and members of group {name:?}"),
        None => format!("root and uid {me}; set control_group to allow a group"),
    };
    let Some(p) = peer else {
        return Err(format!(
            "the peer's credentials are unknown; control calls are for {allowed}"
        ));
    };
    // The uid first: reading the peer's groups from /proc is needed only
    // for someone else.
    let member = || {
        control_group.is_some_and(|(_, gid)| {
            p.gid == *gid
                || p.pid
                    .is_some_and(|pid| account::process_groups(pid).contains(gid))
        })
    };
    if p.uid == 0 || p.uid == me || member() {
        Ok(())
    } else {
        Err(format!(
            "uid {} may not make control calls (allowed: {allowed})",
            p.uid
        ))
    }
}

/// What request handlers share: the loop's latest snapshot and the way to
/// the loop for control calls.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) snapshots: Snapshots,
    pub(crate) control: mpsc::Sender<ControlRequest>,
}

/// How long a history read may take before the caller gets a 503.
pub(crate) const STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// The socket served from a thread of its own; [`ServerThread::abort`]
/// stops it.
pub(crate) struct ServerThread {
    stop: Option<oneshot::Sender<()>>,
}

impl ServerThread {
    /// Stops accepting and drops the connections in flight (the thread
    /// ends on its own; nothing waits for it).
    pub(crate) fn abort(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serves `listener` on a thread of its own, with its own runtime: a
/// request is answered while the loop evaluates (with ten thousand jobs an
/// evaluation takes tens of milliseconds, which a reader on the loop's
/// thread would wait for). Handlers read only the published snapshot and
/// reach the loop over the control channel, so they need nothing of its
/// thread.
pub(crate) fn spawn(
    listener: UnixListener,
    shared: Shared,
) -> Result<ServerThread, std::io::Error> {
    let listener = listener.into_std()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("status-socket".into())
        .spawn(move || {
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                let listener = match UnixListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("status socket: cannot serve: {e}");
                        return;
                    }
                };
                tokio::select! {
                    () = serve(listener, shared) => {}
                    _ = stopped => {}
                }
            });
        })?;
    Ok(ServerThread { stop: Some(stop) })
}

/// Serves one request, its reply marked with this instance's identity.
async fn handle(
    req: Request<Incoming>,
    shared: &Shared,
    peer: Option<Peer>,
) -> Response<Full<Bytes>> {
    let ours = identity::of_dir(&shared.snapshots.borrow().config.state_dir);
    let expected = req
        .headers()
        .get(identity::EXPECT_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut r = match expected {
        Some(e) if e != ours => error(
            StatusCode::CONFLICT,
            format!(
                "this is the cronwarden of state directory {} (pid {}), not of {}",
                identity::decode_lossy(&ours),
                std::process::id(),
                identity::decode_lossy(&e)
            ),
        ),
        _ => route(req, shared, peer).await,
    };
    if let Ok(v) = header::HeaderValue::from_str(&ours) {
        r.headers_mut().insert(identity::STATE_DIR_HEADER, v);
    }
    r.headers_mut().insert(
        identity::PID_HEADER,
        header::HeaderValue::from(std::process::id()),
    );
    r
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
