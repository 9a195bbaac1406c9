//! `GET /v1/jobs` by pages: the query (`limit`, `after`, `state`,
//! `prefix`), which jobs of a snapshot a page holds, and its body.
//!
//! Jobs come in name order; `after=NAME` starts a page after that name, so a
//! cursor stays valid across snapshots and reloads (a job added or removed
//! between two pages is seen or not, and no other job is seen twice or
//! missed). The body is a JSON array, one job a line, from the snapshot's
//! cached per-job JSON ([`Snapshot::job_json`]); the cursor of the next page
//! is the header [`NEXT_HEADER`], absent on the last page. Without `limit`
//! every matching job is returned, as `GET /v1/jobs` always did.

use bytes::{BufMut, Bytes, BytesMut};
use cronwarden_shared::status::JobState;

use crate::snapshot::Snapshot;

/// The reply header that carries the next page's `after` (percent-encoded);
/// absent when this page is the last.
pub const NEXT_HEADER: &str = "cronwarden-next-after";
/// The largest `limit` a page may ask for.
pub const MAX_LIMIT: usize = 10_000;

/// What a `GET /v1/jobs` asks for.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct JobsQuery {
    pub(crate) limit: Option<usize>,
    pub(crate) after: Option<String>,
    /// Any of these states (empty: any state).
    pub(crate) states: Vec<JobState>,
    pub(crate) prefix: Option<String>,
}

/// Parses the query string; an error names the parameter at fault.
pub(crate) fn parse(query: Option<&str>) -> Result<JobsQuery, String> {
    let mut q = JobsQuery::default();
    let mut seen: Vec<String> = vec![];
    for kv in query.unwrap_or("").split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let k = decode(k).map_err(|e| format!("parameter name {e}"))?;
        let v = decode(v).map_err(|e| format!("{k}: {e}"))?;
        if seen.contains(&k) {
            return Err(format!("{k}: given more than once"));
        }
        match k.as_str() {
            "limit" => match v.parse::<usize>() {
                Ok(l) if (1..=MAX_LIMIT).contains(&l) => q.limit = Some(l),
                _ => {
                    return Err(format!(
                        "limit: {v:?} is not a number from 1 to {MAX_LIMIT}"
                    ))
                }
            },
            "after" => q.after = Some(v),
            "prefix" => q.prefix = Some(v),
            "state" => {
                for s in v.split(',') {
                    match JobState::parse(s) {
                        Some(s) => q.states.push(s),
                        None => {
                            let all: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
                            return Err(format!(
                                "state: {s:?} is not a job state (one or more of {}, comma-separated)",
                                all.join(", ")
                            ));
                        }
                    }
                }
            }
            _ => {
                return Err(format!(
                    "{k}: unknown parameter (expected limit, after, state, prefix)"
                ))
            }
        }
        seen.push(k);
    }
    Ok(q)
}

/// Percent-decodes a query component (`+` is a plus: job names may hold one).
fn decode(s: &str) -> Result<String, String> {
    cronwarden_shared::percent::decode_strict(s)
}

/// Percent-encodes a job name for [`NEXT_HEADER`] (and a URL).
pub(crate) fn encode(s: &str) -> String {
    cronwarden_shared::percent::encode_component(s)
}

/// One page: positions in `status.jobs`, and the name to continue after
/// when more jobs match.
#[derive(Debug, PartialEq)]
pub(crate) struct Page {
    pub(crate) positions: Vec<usize>,
    pub(crate) next: Option<String>,
}

/// The jobs of `snap` that `q` asks for, in name order.
pub(crate) fn select(snap: &Snapshot, q: &JobsQuery) -> Page {
    let jobs = &snap.status.jobs;
    let order = snap.by_name();
    let name = |i: u32| jobs[i as usize].name.as_str();
    // Where to start: after the cursor, and not before the prefix.
    let mut start = 0;
    if let Some(after) = &q.after {
        start = order.partition_point(|i| name(*i) <= after.as_str());
    }
    if let Some(p) = &q.prefix {
        start = start.max(order.partition_point(|i| name(*i) < p.as_str()));
    }
    let limit = q.limit.unwrap_or(usize::MAX);
    let mut positions = vec![];
    let mut next = None;
    for &i in &order[start..] {
        let job = &jobs[i as usize];
        if let Some(p) = &q.prefix {
            // Names with the prefix are contiguous in name order.
            if !job.name.starts_with(p.as_str()) {
                break;
            }
        }
        if !q.states.is_empty() && !q.states.contains(&job.state) {
            continue;
        }
        if positions.len() == limit {
            let last: usize = *positions.last().expect("limit is at least 1");
            next = Some(jobs[last].name.clone());
            break;
        }
        positions.push(i as usize);
    }
    Page { positions, next }
}

/// The page's body: a JSON array, one job a line.
pub(crate) fn body(snap: &Snapshot, page: &Page) -> Bytes {
    let parts: Vec<&Bytes> = page.positions.iter().map(|i| snap.job_json(*i)).collect();
    let mut out = BytesMut::with_capacity(parts.iter().map(|b| b.len() + 2).sum::<usize>() + 4);
    out.put_slice(b"[");
    for (k, part) in parts.iter().enumerate() {
        out.put_slice(if k == 0 { b"\n" } else { b",\n" });
        out.put_slice(part);
    }
    out.put_slice(if parts.is_empty() { b"]\n" } else { b"\n]\n" });
    out.freeze()
}

#[cfg(test)]
#[path = "jobs_page_tests.rs"]
mod tests;
