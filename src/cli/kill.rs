//! `cronwarden kill JOB [RUN]`: ends a run in progress (RUN, or every run
//! of JOB in progress). The worker sends SIGTERM to the run's process
//! group, SIGKILL after the job's `kill_grace`, and records the run
//! `killed` "by operator (uid N)", N the caller's uid as the socket saw it.
//! A control call: allowed to whoever may `trigger` or `pause`.

use std::{io::Write, process::ExitCode};

use hyper::Method;
use serde_json::Value;

use super::{
    args::Conn,
    request::{call, enc},
};

pub(crate) fn kill(conn: &Conn, job: &str, run: Option<u64>) -> anyhow::Result<ExitCode> {
    let query = run.map(|id| format!("?run={id}")).unwrap_or_default();
    call(
        conn,
        Method::POST,
        format!("/v1/jobs/{}/kill{query}", enc(job)),
        |o: &mut dyn Write, v: Value| {
            let which = match (run, v["run_id"].as_u64()) {
                (Some(id), _) => format!("run {id}"),
                (None, Some(id)) => format!("run {id} (and any other run of {job} in progress)"),
                (None, None) => format!("every run of {job} in progress"),
            };
            writeln!(
                o,
                "stopping {which}: SIGTERM to its process group now, SIGKILL after its kill_grace"
            )?;
            Ok(0)
        },
    )
}
