//! The endpoints: a request's decoded path and method to its answer, from
//! the published snapshot, the loop (control calls) or the store (history,
//! audits), each bounded in time.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use cronwarden_shared::{
    percent,
    schedule::Schedule,
    status::ErrorReply,
    store::{Store, StoreError},
};
use http_body_util::Full;
use hyper::{body::Incoming, header, Method, Request, Response, StatusCode};
use jiff::Timestamp;
use serde::Serialize;
use tokio::sync::oneshot;

use super::{may_control, Peer, Shared, MAX_BODY, STORE_TIMEOUT};
use crate::{
    audit::{audit, AuditReport, AuditStop, Bounds, MAX_FIRES},
    control::{ControlOp, ControlRequest},
    jobs_page,
};

/// How long a control call may wait for the main loop and the worker.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

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

pub(super) fn error(code: StatusCode, msg: String) -> Response<Full<Bytes>> {
    json(code, &ErrorReply { error: msg })
}

/// A query parameter, decoded leniently: its values (numbers, RFC 3339
/// instants, a schedule, a zone) are parsed next, and a mangled one fails
/// there with the parameter's name; `+` stays `+` (an offset).
fn query(req: &Request<Incoming>, key: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| percent::decode_lenient_str(v))
    })
}

/// Answers one request of this instance's own clients: limits, the
/// control check, then the endpoint its decoded path names.
pub(super) async fn route(
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
    let decoded: Result<Vec<String>, String> = path
        .split('/')
        .skip(1)
        .map(percent::decode_strict)
        .collect();
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
