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

use std::{
    convert::Infallible, os::unix::fs::PermissionsExt, path::Path, sync::Arc, time::Duration,
};

use bytes::Bytes;
use cronwarden_shared::{schedule::Schedule, status::ErrorReply};
use http_body_util::Full;
use hyper::{body::Incoming, header, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use jiff::Timestamp;
use serde::Serialize;
use tokio::{net::UnixListener, sync::Semaphore, time::Instant};

use std::sync::atomic::{AtomicBool, Ordering};

use crate::{
    audit::{audit, AuditReport, AuditStop, Bounds, MAX_FIRES},
    control::{ControlOp, ControlRequest},
    jobs_page,
    snapshot::Snapshots,
};
use cronwarden_shared::{
    account, identity,
    store::{Store, StoreError},
};
use tokio::sync::{mpsc, oneshot};

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

/// How long a control call may wait for the main loop and the worker.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);
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

fn json<T: Serialize>(code: StatusCode, body: &T) -> Response<Full<Bytes>> {
    let mut bytes = serde_json::to_vec_pretty(body).expect("status types serialize");
    bytes.push(b'\n');
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .expect("valid response")
}

/// Why `GET /v1/status?{q}` is refused, naming the parameter.
fn status_param_error(q: &str) -> String {
    let first = q.split('&').next().unwrap_or(q);
    match first.split_once('=') {
        Some(("jobs", v)) => format!("jobs: {v:?} is not \"all\" (jobs=all gives the whole report with every job)"),
        _ => format!(
            "{}: unknown parameter (GET /v1/status takes only jobs=all, for the whole report with every job)",
            first.split('=').next().unwrap_or(first)
        ),
    }
}

/// A 200 with JSON a snapshot has serialised already.
fn cached(body: Bytes) -> Response<Full<Bytes>> {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .expect("valid response")
}

fn error(code: StatusCode, msg: String) -> Response<Full<Bytes>> {
    json(code, &ErrorReply { error: msg })
}

/// A query parameter, undecoded (values here are numbers and RFC 3339
/// instants, which need no percent-decoding beyond `%3A` and `+`).
fn query(req: &Request<Incoming>, key: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

/// `%XX` escapes decoded (`+` stays `+`: an RFC 3339 offset); a broken
/// escape or invalid UTF-8 is kept as it is, to fail as a bad value.
fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| v.to_string())
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

/// A path segment, percent-decoded: the CLI encodes every byte of a job
/// name outside `A-Za-z0-9-_.~`.
fn decode_segment(seg: &str) -> Result<String, String> {
    let bytes = seg.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(b) => out.push(b),
                None => return Err(format!("{seg:?}: '%' not followed by two hex digits")),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{seg:?}: not UTF-8 once decoded"))
}

/// Answers one request of this instance's own clients: limits, the
/// control check, then the endpoint its decoded path names.
async fn route(
    req: Request<Incoming>,
    shared: &Shared,
    peer: Option<Peer>,
) -> Response<Full<Bytes>> {
    if let Some(len) = declared_body_len(&req).filter(|l| *l > MAX_BODY) {
        let mut r = error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body of {len} bytes; at most {MAX_BODY} are accepted"),
        );
        // The body stays unread, so the connection cannot be reused.
        r.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        return r;
    }
    let path = req.uri().path().trim_end_matches('/').to_string();
    let decoded: Result<Vec<String>, String> =
        path.split('/').skip(1).map(decode_segment).collect();
    let decoded = match decoded {
        Ok(d) => d,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("path segment {e}")),
    };
    let parts: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let method = req.method().clone();
    // One snapshot for the whole request, so its answers agree.
    let snap = shared.snapshots.borrow().clone();
    if method == Method::POST {
        if let Err(why) = may_control(peer, snap.config.control_group.as_ref()) {
            tracing::warn!(
                uid = peer.map(|p| p.uid),
                pid = peer.and_then(|p| p.pid),
                "refused {method} {path}: {why}"
            );
            return error(StatusCode::FORBIDDEN, format!("{method} {path}: {why}"));
        }
    }
    let status = &snap.status;
    let known = |name: &str| snap.config.job(name).is_some();
    match (method.clone(), parts.as_slice()) {
        // `/` only: `*` (asterisk-form) also has no segments.
        (Method::GET, []) if path.is_empty() => {
            crate::page::response(snap.clone(), crate::page::page_param(req.uri()).as_deref()).await
        }
        (Method::GET, ["v1", "status"]) => match req.uri().query().unwrap_or("") {
            "" => cached(snap.summary_json()),
            "jobs=all" => cached(snap.full_json()),
            q => error(StatusCode::BAD_REQUEST, status_param_error(q)),
        },
        (Method::GET, ["metrics"]) => crate::metrics::response(&snap),
        (Method::GET, ["v1", "jobs"]) => match jobs_page::parse(req.uri().query()) {
            Ok(q) => {
                let page = jobs_page::select(&snap, &q);
                let mut r = cached(jobs_page::body(&snap, &page));
                if let Some(v) = page
                    .next
                    .and_then(|n| header::HeaderValue::from_str(&jobs_page::encode(&n)).ok())
                {
                    r.headers_mut().insert(jobs_page::NEXT_HEADER, v);
                }
                r
            }
            Err(e) => error(StatusCode::BAD_REQUEST, e),
        },
        (Method::GET, ["v1", "alerts"]) => {
            if query(&req, "all").is_some_and(|v| v == "1" || v == "true") {
                let path = snap.store_path.clone();
                read_store(move || Store::open_readonly(&path)?.alerts(true, 1000)).await
            } else {
                json(StatusCode::OK, &status.alerts)
            }
        }
        (Method::GET, ["v1", "jobs", name]) => match snap.job_position(name) {
            Some(i) => json(StatusCode::OK, &status.jobs[i]),
            None => error(StatusCode::NOT_FOUND, format!("no job named {name:?}")),
        },
        (Method::GET, ["v1", "jobs", name, "runs"]) => {
            let limit = match query(&req, "limit").map(|l| l.parse::<u32>()) {
                None => 50,
                Some(Ok(l)) if (1..=10_000).contains(&l) => l,
                Some(_) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "limit: expected a number from 1 to 10000".into(),
                    )
                }
            };
            let name = name.to_string();
            let path = snap.store_path.clone();
            // History of removed jobs stays readable, so no `known` check.
            read_store(move || Store::open_readonly(&path)?.runs(&name, limit)).await
        }
        (Method::GET, ["v1", "jobs", name, "audit"]) => {
            // A removed job's ledger stays in the store; its schedule is
            // gone with the config, so the caller names the former one.
            let schedule = match (snap.config.job(name), query(&req, "schedule")) {
                (_, Some(expr)) => {
                    let zone =
                        query(&req, "timezone").unwrap_or_else(|| snap.config.timezone.clone());
                    let parsed = jiff::tz::TimeZone::get(&zone)
                        .map_err(|_| format!("timezone: unknown time zone {zone:?}"))
                        .and_then(|tz| {
                            Schedule::parse(&expr, &tz).map_err(|e| format!("schedule: {e}"))
                        });
                    match parsed {
                        Ok(s) => s,
                        Err(e) => return error(StatusCode::BAD_REQUEST, e),
                    }
                }
                (Some(spec), None) => spec.schedule.clone(),
                (None, None) => {
                    return error(
                        StatusCode::NOT_FOUND,
                        format!(
                            "no job named {name:?} in the running config; to audit a removed \
                             job's records, give its former schedule: \
                             cronwarden audit {name} --schedule EXPR"
                        ),
                    )
                }
            };
            // An unparsable bound is a 400 naming the parameter.
            let parse = |k: &str| -> Result<Option<Timestamp>, String> {
                match query(&req, k) {
                    None => Ok(None),
                    Some(v) => v
                        .parse()
                        .map(Some)
                        .map_err(|e| format!("{k}: {v:?} is not an RFC 3339 instant: {e}")),
                }
            };
            let (from, to) = match (parse("from"), parse("to")) {
                (Ok(f), Ok(t)) => (f, t),
                (Err(e), _) | (_, Err(e)) => return error(StatusCode::BAD_REQUEST, e),
            };
            let path = snap.store_path.clone();
            // Set when this handler goes (the reply timed out, the client
            // left): the audit stops computing.
            let cancelled = Arc::new(AtomicBool::new(false));
            let _cancel = CancelOnDrop(cancelled.clone());
            let name = name.to_string();
            let job = name.clone();
            let work = move || audit_job(&path, &job, &schedule, from, to, &cancelled);
            match tokio::time::timeout(STORE_TIMEOUT, tokio::task::spawn_blocking(work)).await {
                Ok(Ok(Ok(Ok(report)))) => json(StatusCode::OK, &report),
                Ok(Ok(Ok(Err(AuditStop::TooManyFires { max })))) => error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "from, to: the window holds more than {max} scheduled times of job {name:?}, \
                         the most one audit computes; narrow it with from and to"
                    ),
                ),
                Ok(Ok(Ok(Err(AuditStop::Cancelled)))) | Err(_) => error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the audit took longer than {}s and was stopped", STORE_TIMEOUT.as_secs()),
                ),
                Ok(Ok(Err(e))) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
                Ok(Err(e)) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("audit failed: {e}"),
                ),
            }
        }
        (Method::POST, ["v1", "jobs", name, op @ ("trigger" | "pause" | "resume")]) => {
            if !known(name) {
                return error(StatusCode::NOT_FOUND, format!("no job named {name:?}"));
            }
            let name = name.to_string();
            let op = match *op {
                "trigger" => ControlOp::Trigger(name),
                "pause" => ControlOp::Pause(name),
                _ => ControlOp::Resume(name),
            };
            control(shared, op).await
        }
        (Method::POST, ["v1", "jobs", name, "kill"]) => {
            if !known(name) {
                return error(StatusCode::NOT_FOUND, format!("no job named {name:?}"));
            }
            let run_id = match query(&req, "run").map(|r| r.parse::<u64>()) {
                None => None,
                Some(Ok(id)) => Some(id),
                Some(Err(_)) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "run: expected a run id (a number)".into(),
                    )
                }
            };
            let op = ControlOp::Kill {
                job: name.to_string(),
                run_id,
                uid: peer.map(|p| p.uid),
            };
            control(shared, op).await
        }
        (Method::GET, ["v1", "jobs", name, "runs", id]) => {
            let id = match *id {
                "last" => None,
                n => match n.parse::<u64>() {
                    Ok(n) => Some(n),
                    Err(_) => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            format!("{n:?}: expected a run id (a number) or \"last\""),
                        )
                    }
                },
            };
            let name = name.to_string();
            let path = snap.store_path.clone();
            let found = store_value(move || Store::open_readonly(&path)?.run(&name, id));
            let found = match found.await {
                Ok(found) => found,
                Err(response) => return response,
            };
            match found {
                Some(run) => json(StatusCode::OK, &run),
                None => error(
                    StatusCode::NOT_FOUND,
                    match id {
                        Some(id) => format!("job {:?} has no run {id}", parts[2]),
                        None => format!("job {:?} has no run yet", parts[2]),
                    },
                ),
            }
        }
        (Method::GET, ["v1", "jobs", name, "runs", id, "output"]) => {
            let Ok(run_id) = id.parse::<u64>() else {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("{id:?}: expected a run id (a number)"),
                );
            };
            let after = match query(&req, "after").map(|a| a.parse::<u64>()) {
                None => 0,
                Some(Ok(a)) => a,
                Some(Err(_)) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "after: expected a sequence number".into(),
                    )
                }
            };
            let op = ControlOp::Output {
                job: name.to_string(),
                run_id,
                after,
            };
            control(shared, op).await
        }
        (Method::POST, ["v1", "reload"]) => control(shared, ControlOp::Reload).await,
        (Method::POST, ["v1", "alerts", "test"]) => control(shared, ControlOp::AlertTest).await,
        (_, ["v1", "status" | "jobs" | "alerts", ..]) | (_, ["v1", "reload"]) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} {path}: method not allowed"),
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            format!("{method} {path}: no such endpoint (try GET /v1/status)"),
        ),
    }
}

/// The `content-length` of a request (hyper has already refused a
/// malformed one with 400).
fn declared_body_len(req: &Request<Incoming>) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

async fn control(shared: &Shared, op: ControlOp) -> Response<Full<Bytes>> {
    let what = op.name();
    // A test alert waits for every sink's retries; the rest answer at once.
    let limit = if op == ControlOp::AlertTest {
        Duration::from_secs(300)
    } else {
        CONTROL_TIMEOUT
    };
    let (tx, rx) = oneshot::channel();
    if shared
        .control
        .send(ControlRequest { op, reply: tx })
        .await
        .is_err()
    {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the supervisor is shutting down".into(),
        );
    }
    match tokio::time::timeout(limit, rx).await {
        Ok(Ok(reply)) => json(
            StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK),
            &reply.body,
        ),
        Ok(Err(_)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{what}: the worker went away before answering; try again"),
        ),
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            format!("{what}: no answer within {}s", limit.as_secs()),
        ),
    }
}

/// Runs a store read on the blocking pool, bounded in time: a slow disk
/// delays only this request, never the supervisor's loop.
async fn read_store<T: Serialize + Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Response<Full<Bytes>> {
    match tokio::time::timeout(STORE_TIMEOUT, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(Ok(v))) => json(StatusCode::OK, &v),
        Ok(Ok(Err(e))) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Ok(Err(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("store read failed: {e}"),
        ),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store read took longer than {}s", STORE_TIMEOUT.as_secs()),
        ),
    }
}

/// [`read_store`], for a handler that looks at the value before answering.
async fn store_value<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Response<Full<Bytes>>> {
    match tokio::time::timeout(STORE_TIMEOUT, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(Ok(v))) => Ok(v),
        Ok(Ok(Err(e))) => Err(error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
        Ok(Err(e)) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("store read failed: {e}"),
        )),
        Err(_) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store read took longer than {}s", STORE_TIMEOUT.as_secs()),
        )),
    }
}

/// The audit of one job over `[from, to]` (default: the last 24 hours, not
/// before the job's first record, up to a few seconds ago so that fires
/// happening right now are not counted as missing).
fn audit_job(
    path: &std::path::Path,
    name: &str,
    schedule: &Schedule,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    cancelled: &AtomicBool,
) -> Result<Result<AuditReport, AuditStop>, StoreError> {
    let store = Store::open_readonly(path)?;
    let now = Timestamp::now();
    let to = to.unwrap_or_else(|| now - jiff::SignedDuration::from_secs(5));
    let day_ago = now - jiff::SignedDuration::from_hours(24);
    let records = store.runs_between(name, from.unwrap_or(day_ago), to)?;
    let first = records.iter().flat_map(|r| r.covers.iter()).min().copied();
    let from = from.unwrap_or_else(|| first.map_or(day_ago, |f| f.max(day_ago)));
    let anchor = schedule.every().and(first);
    Ok(audit(
        name,
        schedule,
        anchor,
        &records,
        from,
        to,
        &Bounds {
            max_fires: MAX_FIRES,
            cancelled,
        },
    ))
}

/// Sets its flag when dropped.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
