//! The status page: `GET /` on the status socket and on `metrics_listen`.
//! One self-contained HTML page (no scripts, styles inline, no external
//! assets) with the state and its reasons, the open alerts, and per job a
//! 24-hour strip of its fires.
//!
//! The state, the alerts and the jobs come from the same published snapshot
//! as `GET /v1/status`; only the strips read the store (the light
//! [`Store::marks`] read, on the blocking pool, bounded in rows per job and
//! in time by the caller). Reading is here, drawing is in [`html`], which is
//! pure.

mod html;

use std::{collections::BTreeMap, path::Path};

use cronwarden_shared::{
    alert_kind::AlertKind,
    status::StatusReport,
    store::{RunMark, Store, StoreError},
};
use jiff::{SignedDuration, Timestamp};

pub(crate) use html::render;

/// Jobs per page (`?page=N` for the rest).
pub(crate) const PAGE_JOBS: usize = 100;
/// The strips span this long, ending now.
pub(crate) const WINDOW: SignedDuration = SignedDuration::from_hours(24);
/// One mark per this much time: a job firing less often than every ten
/// minutes gets one mark per run.
pub(crate) const BUCKET: SignedDuration = SignedDuration::from_mins(10);
/// Buckets in a strip.
pub(crate) const BUCKETS: usize = (WINDOW.as_secs() / BUCKET.as_secs()) as usize;
/// Records read per job at most (a per-second job has 86,400 a day); past
/// it the strip says where it was cut.
pub(crate) const MARKS_PER_JOB: usize = 100_000;

/// Every record (and every `job_late` opening) in one ten-minute bucket.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Bucket {
    /// Records per outcome.
    pub(crate) counts: BTreeMap<&'static str, u32>,
    /// The newest record in the bucket.
    pub(crate) newest: Option<RunMark>,
    /// `job_late` alerts that opened in the bucket: their summaries.
    pub(crate) late: Vec<String>,
}

/// One job's strip.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Strip {
    pub(crate) job: String,
    /// Index 0 is the oldest bucket.
    pub(crate) buckets: Vec<Bucket>,
    /// The newest record id read (0 when none), so a reader can compare the
    /// strip with the ledger up to it.
    pub(crate) upto: u64,
    /// The window start the strip really reaches when the row cap cut it.
    pub(crate) cut_at: Option<Timestamp>,
}

/// What the page shows besides the snapshot.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PageData {
    pub(crate) now: Timestamp,
    pub(crate) page: usize,
    pub(crate) strips: Vec<Strip>,
}

/// Which bucket a time falls in, if it is in the window ending at `now`.
pub(crate) fn bucket_of(at: Timestamp, now: Timestamp) -> Option<usize> {
    let from = now.checked_sub(WINDOW).ok()?;
    if at < from || at > now {
        return None;
    }
    let secs = at.duration_since(from).as_secs();
    Some(((secs / BUCKET.as_secs()) as usize).min(BUCKETS - 1))
}

impl Strip {
    fn new(job: &str) -> Strip {
        Strip {
            job: job.to_string(),
            buckets: vec![Bucket::default(); BUCKETS],
            upto: 0,
            cut_at: None,
        }
    }

    fn add(&mut self, m: RunMark, now: Timestamp) {
        let Some(i) = bucket_of(m.at, now) else {
            return;
        };
        self.upto = self.upto.max(m.id);
        let b = &mut self.buckets[i];
        *b.counts.entry(m.outcome.as_str()).or_default() += 1;
        if b.newest.as_ref().is_none_or(|n| n.id < m.id) {
            b.newest = Some(m);
        }
    }
}

/// Reads the strips of page `page` of the snapshot's jobs (blocking: run it
/// on the blocking pool).
pub(crate) fn load(
    store_path: &Path,
    report: &StatusReport,
    page: usize,
    now: Timestamp,
    deadline: std::time::Instant,
) -> Result<PageData, StoreError> {
    let store = Store::open_readonly(store_path)?;
    let from = now.checked_sub(WINDOW).unwrap_or(now);
    let mut strips: Vec<Strip> = Vec::new();
    for job in report.jobs.iter().skip(page * PAGE_JOBS).take(PAGE_JOBS) {
        // The reply gives up after the store bound; so does the work.
        if std::time::Instant::now() >= deadline {
            break;
        }
        let mut strip = Strip::new(&job.name);
        let mut oldest = None;
        let cut = store.marks(&job.name, from, MARKS_PER_JOB, |m| {
            oldest = Some(m.at);
            strip.add(m, now);
        })?;
        if cut {
            strip.cut_at = oldest;
        }
        strips.push(strip);
    }
    for a in store.alerts(true, 1000)? {
        if a.kind != AlertKind::JobLate {
            continue;
        }
        let (Some(job), Some(i)) = (a.job.as_ref(), bucket_of(a.opened_at, now)) else {
            continue;
        };
        if let Some(s) = strips.iter_mut().find(|s| &s.job == job) {
            s.buckets[i].late.push(a.summary);
        }
    }
    Ok(PageData { now, page, strips })
}

/// `GET /` (and `GET /?page=N`): the page, or a short plain-text error. The
/// store read runs on the blocking pool within the socket's store bound.
pub(crate) async fn response(
    snap: std::sync::Arc<crate::snapshot::Snapshot>,
    page: Option<&str>,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    use hyper::{header, Response, StatusCode};
    let text = |code: StatusCode, body: String| {
        Response::builder()
            .status(code)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .expect("valid response")
    };
    let page = match page.map(str::parse::<usize>) {
        None => 0,
        Some(Ok(p)) if p <= snap.status.jobs.len() / PAGE_JOBS => p,
        Some(_) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "GET /: page must be a number from 0 to {}\n",
                    snap.status.jobs.len() / PAGE_JOBS
                ),
            )
        }
    };
    let now = Timestamp::now();
    let s = snap.clone();
    let deadline = std::time::Instant::now() + crate::server::STORE_TIMEOUT;
    let read =
        tokio::task::spawn_blocking(move || load(&s.store_path, &s.status, page, now, deadline));
    match tokio::time::timeout(crate::server::STORE_TIMEOUT, read).await {
        Ok(Ok(Ok(data))) => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
            .body(http_body_util::Full::new(bytes::Bytes::from(render(
                &snap.status,
                &data,
            ))))
            .expect("valid response"),
        Ok(Ok(Err(e))) => text(StatusCode::SERVICE_UNAVAILABLE, format!("GET /: {e}\n")),
        Ok(Err(e)) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("GET /: store read failed: {e}\n"),
        ),
        Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "GET /: the store read took longer than {}s\n",
                crate::server::STORE_TIMEOUT.as_secs()
            ),
        ),
    }
}

/// The `page` query parameter of a request for the page.
pub(crate) fn page_param(uri: &hyper::Uri) -> Option<String> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == "page").then(|| v.to_string())
    })
}
