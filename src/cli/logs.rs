//! `cronwarden logs JOB [RUN]`: a run's output, the job's stdout on
//! stdout and its stderr on stderr (as `docker logs` does), so a pipe or a
//! redirection keeps them apart.
//!
//! A finished run prints what the store kept: the whole output when the
//! job has `keep_output` and its files are readable here
//! (`<state_dir>/output/<job>/<run>.stdout|.stderr`, read directly, not
//! through the socket: they may be large), else the last 4 KiB of each
//! stream kept with the record, with a note when that is not all of it.
//!
//! `-f` follows a running run live until it ends. The supervisor keeps the
//! newest lines of each recent run as the worker passes them on (the lines
//! within the output log budget, whatever `log_output` says); `logs -f`
//! polls `GET /v1/jobs/{job}/runs/{id}/output?after=SEQ` every
//! [`POLL`] and prints what came after the last line it printed, saying
//! when lines fell out of the supervisor's ring before it read them. The
//! run has ended when the supervisor no longer has it running and its
//! record is complete; a follower that saw none of its lines then prints
//! the stored output instead. Polling keeps the socket's requests short
//! and bounded, as every other request is.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use cronwarden_shared::{
    status::{ErrorReply, FollowReply, JobStatus, Outcome, RunRecord},
    wire::OutputStream,
};
use serde::de::DeserializeOwned;

use super::{args::Conn, client, discover, request::enc};

/// How often a follower asks for new lines.
const POLL: Duration = Duration::from_millis(250);
/// How long one request may take.
const LIMIT: Duration = Duration::from_secs(15);
/// How long a follower waits for a record the supervisor no longer has
/// running to be completed in the store (written by the worker's next turn).
const SETTLE: Duration = Duration::from_secs(60);

/// Why `logs` stopped early: the exit code and what to say.
struct Stop(u8, String);

impl From<client::ClientError> for Stop {
    fn from(e: client::ClientError) -> Stop {
        match e {
            // Another instance answered: what it says is not about us.
            client::ClientError::OtherInstance { .. } => Stop(3, e.to_string()),
            e => Stop(3, format!("{e} (is `cronwarden run` running?)")),
        }
    }
}

impl From<std::io::Error> for Stop {
    fn from(e: std::io::Error) -> Stop {
        Stop(1, format!("cannot write the output: {e}"))
    }
}

/// The socket and, when a config was read, the state directory.
struct Where {
    socket: PathBuf,
    state_dir: Option<PathBuf>,
}

pub(crate) fn logs(conn: &Conn, job: &str, run: Option<u64>, follow: bool) -> ExitCode {
    let place = match conn.socket.as_deref() {
        Some(s) => Ok(Where {
            socket: s.into(),
            state_dir: None,
        }),
        None => discover::socket(None, conn.config.as_deref()).map(|t| Where {
            socket: t.socket,
            state_dir: t.lock.and_then(|l| l.parent().map(Path::to_path_buf)),
        }),
    };
    let place = match place {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cronwarden: cannot find the socket: {e}");
            return ExitCode::from(3);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cronwarden: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(logs_async(&place, job, run, follow, conn.json)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Stop(code, msg)) => {
            eprintln!("cronwarden: {msg}");
            ExitCode::from(code)
        }
    }
}

async fn logs_async(
    place: &Where,
    job: &str,
    run: Option<u64>,
    follow: bool,
    json: bool,
) -> Result<(), Stop> {
    let run_id = match (run, follow) {
        (Some(id), _) => id,
        // The newest run in progress, else the last run.
        (None, true) => match newest_running(place, job).await? {
            Some(id) => id,
            None => {
                get::<RunRecord>(place, &format!("/v1/jobs/{}/runs/last", enc(job)))
                    .await?
                    .id
            }
        },
        (None, false) => {
            get::<RunRecord>(place, &format!("/v1/jobs/{}/runs/last", enc(job)))
                .await?
                .id
        }
    };
    let record = get::<RunRecord>(place, &format!("/v1/jobs/{}/runs/{run_id}", enc(job))).await?;
    if json {
        // The record as the store has it (tails included).
        let text = serde_json::to_string_pretty(&record).map_err(|e| Stop(1, e.to_string()))?;
        writeln!(std::io::stdout(), "{text}")?;
        return Ok(());
    }
    if record.outcome != Outcome::Running {
        return stored(place, &record);
    }
    live(place, job, run_id, follow).await
}

/// Prints a running run's lines as the supervisor has them; with
/// `follow`, keeps printing until the run ends.
async fn live(place: &Where, job: &str, run_id: u64, follow: bool) -> Result<(), Stop> {
    let mut after = 0;
    let mut printed = false;
    let mut settling: Option<Instant> = None;
    loop {
        let path = format!("/v1/jobs/{}/runs/{run_id}/output?after={after}", enc(job));
        let reply = get::<FollowReply>(place, &path).await?;
        printed |= !reply.lines.is_empty();
        print_lines(&reply)?;
        after = reply.next;
        if !follow {
            eprintln!(
                "cronwarden: run {run_id} of {job} is still running; `cronwarden logs -f {job} {run_id}` follows it"
            );
            return Ok(());
        }
        if !reply.running {
            let path = format!("/v1/jobs/{}/runs/{run_id}", enc(job));
            let record = get::<RunRecord>(place, &path).await?;
            if record.outcome != Outcome::Running {
                return if printed {
                    Ok(())
                } else {
                    stored(place, &record)
                };
            }
            // Not started yet (its start not yet reported), or ended and
            // not yet written: either way, soon.
            let since = *settling.get_or_insert_with(Instant::now);
            if since.elapsed() > SETTLE {
                return Err(Stop(
                    1,
                    format!(
                        "run {run_id} of {job} is recorded running but the supervisor has not seen it run for {}s; stopped following",
                        SETTLE.as_secs()
                    ),
                ));
            }
        } else {
            settling = None;
        }
        tokio::time::sleep(POLL).await;
    }
}

fn print_lines(reply: &FollowReply) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    if reply.missed > 0 {
        writeln!(
            err,
            "cronwarden: {} lines of run {} no longer kept by the supervisor (it keeps the newest of each run)",
            reply.missed, reply.run_id
        )?;
    }
    for l in &reply.lines {
        if l.held_back > 0 {
            writeln!(
                err,
                "cronwarden: {} lines held back by the output log budget",
                l.held_back
            )?;
        }
        match l.stream {
            OutputStream::Stdout => writeln!(out, "{}", l.line)?,
            OutputStream::Stderr => writeln!(err, "{}", l.line)?,
        }
    }
    out.flush()?;
    err.flush()
}

/// A finished run's output: its `keep_output` files when they are there
/// and readable, else the tails its record keeps.
fn stored(place: &Where, record: &RunRecord) -> Result<(), Stop> {
    let files = place.state_dir.as_ref().map(|d| {
        let base = d.join("output").join(&record.job);
        (
            base.join(format!("{}.stdout", record.id)),
            base.join(format!("{}.stderr", record.id)),
        )
    });
    if let Some((out, err)) = files {
        if let (Ok(mut o), Ok(mut e)) = (std::fs::File::open(&out), std::fs::File::open(&err)) {
            std::io::copy(&mut o, &mut std::io::stdout().lock())?;
            std::io::copy(&mut e, &mut std::io::stderr().lock())?;
            return Ok(());
        }
    }
    let mut o = std::io::stdout().lock();
    o.write_all(record.stdout_tail.as_bytes())?;
    o.flush()?;
    std::io::stderr().write_all(record.stderr_tail.as_bytes())?;
    for (name, bytes, tail) in [
        ("stdout", record.stdout_bytes, &record.stdout_tail),
        ("stderr", record.stderr_bytes, &record.stderr_tail),
    ] {
        if bytes > tail.len() as u64 {
            eprintln!(
                "cronwarden: run {} wrote {bytes} bytes to {name}; only its last {} are kept (keep_output keeps it all)",
                record.id,
                tail.len()
            );
        }
    }
    Ok(())
}

async fn newest_running(place: &Where, job: &str) -> Result<Option<u64>, Stop> {
    let status = get::<JobStatus>(place, &format!("/v1/jobs/{}", enc(job))).await?;
    Ok(status.running.iter().map(|r| r.run_id).max())
}

/// One GET, decoded; an error reply is its message (exit 1).
async fn get<T: DeserializeOwned>(place: &Where, path: &str) -> Result<T, Stop> {
    let (code, body) = client::request_checked(
        &place.socket,
        place.state_dir.as_deref(),
        hyper::Method::GET,
        path,
        LIMIT,
    )
    .await?;
    if !(200..300).contains(&code) {
        let msg = serde_json::from_slice::<ErrorReply>(&body)
            .map(|r| r.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        return Err(Stop(1, msg));
    }
    serde_json::from_slice(&body).map_err(|e| {
        Stop(
            1,
            format!(
                "unexpected reply from {} to {path}: {e}",
                place.socket.display()
            ),
        )
    })
}
