//! Every job, read from the supervisor page by page (`GET /v1/jobs?limit=`
//! with the `after` cursor), for `cronwarden jobs` and the jobs table of
//! `cronwarden status`. A page is small enough to cost the supervisor
//! little, whatever the number of jobs.

use std::{io::Write, path::Path, process::ExitCode, time::Duration};

use cronwarden_shared::status::{ErrorReply, JobStatus};
use jiff::Timestamp;
use tokio::time::Instant;

use super::{args::Conn, client, render, request};

/// Jobs asked for per request.
const PAGE: usize = 1000;
/// How long `cronwarden jobs` may take to read every page.
const LIMIT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub(crate) enum JobsError {
    #[error(transparent)]
    Client(#[from] client::ClientError),
    #[error("{0}")]
    Refused(String),
    #[error("unexpected reply from {socket}: {detail}")]
    Bad { socket: String, detail: String },
}

/// Every job, in name order, within `limit` for all pages together.
pub(crate) async fn all(
    socket: &Path,
    state_dir: Option<&Path>,
    limit: Duration,
) -> Result<Vec<JobStatus>, JobsError> {
    let deadline = Instant::now() + limit;
    let bad = |detail: String| JobsError::Bad {
        socket: socket.display().to_string(),
        detail,
    };
    let mut jobs: Vec<JobStatus> = vec![];
    loop {
        let mut path = format!("/v1/jobs?limit={PAGE}");
        if let Some(last) = jobs.last() {
            path.push_str(&format!("&after={}", request::enc(&last.name)));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let (code, body) =
            client::request_checked(socket, state_dir, hyper::Method::GET, &path, left).await?;
        if !(200..300).contains(&code) {
            return Err(JobsError::Refused(
                serde_json::from_slice::<ErrorReply>(&body)
                    .map(|r| r.error)
                    .unwrap_or_else(|_| format!("HTTP {code}: {}", String::from_utf8_lossy(&body))),
            ));
        }
        let page: Vec<JobStatus> = serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))?;
        if let (Some(last), Some(first)) = (jobs.last(), page.first()) {
            // A page must move on, or the loop would never end.
            if first.name <= last.name {
                return Err(bad(format!(
                    "the page after {:?} starts at {:?}",
                    last.name, first.name
                )));
            }
        }
        let n = page.len();
        jobs.extend(page);
        // Fewer than asked: the last page. More: a supervisor that does not
        // page, which sent every job.
        if n != PAGE {
            return Ok(jobs);
        }
    }
}

/// `cronwarden jobs`: the jobs table (`--json`: the array of every job).
pub(crate) fn jobs(conn: &Conn) -> anyhow::Result<ExitCode> {
    let (socket, state_dir) = match request::socket_for(conn) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let jobs = match rt.block_on(all(&socket, state_dir.as_deref(), LIMIT)) {
        Ok(j) => j,
        Err(JobsError::Client(e)) => {
            eprintln!("cronwarden: {e} (is `cronwarden run` running?)");
            return Ok(ExitCode::from(3));
        }
        Err(e) => {
            eprintln!("cronwarden: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let mut out = std::io::stdout().lock();
    if conn.json {
        let mut body = serde_json::to_vec_pretty(&jobs)?;
        body.push(b'\n');
        out.write_all(&body)?;
        return Ok(ExitCode::SUCCESS);
    }
    let code = render::status::jobs(&mut out, &jobs, Timestamp::now(), render::stdout_color())?;
    Ok(ExitCode::from(code))
}
