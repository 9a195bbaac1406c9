//! Peer for scripts/bench: tokio-cron-scheduler firing the bench's recorder
//! every second, the way an application embedding it would.
//!
//! usage: bench-tokio-cron RECORDER OUTFILE N
//!
//! One `Job::new_async("* * * * * *")` that spawns RECORDER OUTFILE with
//! CRONWARDEN_SCHEDULED_FOR set to the nominal second, N times, then exits.
//! tokio-cron-scheduler does not hand a job its scheduled time; the job takes
//! the whole second it starts in, which is exact as long as a fire is less
//! than 1 s late (it never runs a cron job early; it polls every 500 ms). The
//! job's own start (ns) is appended to OUTFILE.wake, to split the delay into
//! scheduler wake-up and process spawn. A bound of its own (N + 10 s) stops it
//! whatever happens.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_cron_scheduler::{Job, JobScheduler};

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

/// RFC 3339 UTC of a whole second since the epoch (civil-from-days).
fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: {} RECORDER OUTFILE N", args[0]);
        std::process::exit(2);
    }
    let (recorder, out) = (args[1].clone(), args[2].clone());
    let n: u64 = args[3].parse().expect("N");
    let wake_path = format!("{out}.wake");
    let count = Arc::new(AtomicU64::new(0));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<()>(1);

    let sched = JobScheduler::new().await.expect("scheduler");
    let c = count.clone();
    let job = Job::new_async("* * * * * *", move |_uuid, _l| {
        let woke = now_ns();
        let (recorder, out, wake_path) = (recorder.clone(), out.clone(), wake_path.clone());
        let (c, done_tx) = (c.clone(), done_tx.clone());
        Box::pin(async move {
            let nominal = (woke / 1_000_000_000) as i64;
            let child = tokio::process::Command::new(&recorder)
                .arg(&out)
                .env("CRONWARDEN_SCHEDULED_FOR", rfc3339(nominal))
                .env("CRONWARDEN_JOB", "tokio-cron")
                .stdin(std::process::Stdio::null())
                .spawn();
            if let Ok(mut child) = child {
                let _ = child.wait().await;
            }
            if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&wake_path) {
                let _ = writeln!(f, "{} {}", nominal as u128 * 1_000_000_000, woke);
            }
            if c.fetch_add(1, Ordering::SeqCst) + 1 >= n {
                let _ = done_tx.try_send(());
            }
        })
    })
    .expect("job");
    sched.add(job).await.expect("add");
    sched.start().await.expect("start");
    let _ = tokio::time::timeout(Duration::from_secs(n + 10), done_rx.recv()).await;
    std::process::exit(if count.load(Ordering::SeqCst) >= n { 0 } else { 3 });
}
