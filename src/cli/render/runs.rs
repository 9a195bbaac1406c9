//! `cronwarden runs JOB`: a job's records, newest first, skipped fires
//! included with their reason.

use std::{io::Write, time::Duration};

use cronwarden_shared::{
    status::{Outcome, RunRecord, SkipReason},
    timefmt::human_duration,
};
use jiff::Timestamp;

use super::{elapsed, relative, table};

/// `cronwarden runs JOB`.
pub(crate) fn runs(
    out: &mut dyn Write,
    runs: &[RunRecord],
    now: Timestamp,
    color: bool,
) -> std::io::Result<u8> {
    if runs.is_empty() {
        writeln!(out, "no runs")?;
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let outcome = match r.skip_reason {
                Some(reason) => format!("skipped ({})", reason_word(reason)),
                None => r.outcome.as_str().to_string(),
            };
            let exit = match (r.exit_code, r.signal) {
                (Some(c), _) => format!("exit {c}"),
                (_, Some(sig)) => format!("signal {sig}"),
                _ => "-".into(),
            };
            vec![
                r.id.to_string(),
                relative(r.scheduled_at.or(r.started_at), now),
                // Said where the catch-up is read: it may repeat fires a
                // killed worker ran unrecorded (issue 14).
                if r.may_repeat {
                    format!("{} (may repeat)", r.trigger.as_str())
                } else {
                    r.trigger.as_str().to_string()
                },
                outcome,
                exit,
                match (r.duration_ms, r.outcome) {
                    (Some(d), _) => human_duration(Duration::from_millis(d)),
                    // In flight: how long so far.
                    (None, Outcome::Running) => {
                        format!("{} so far", elapsed(r.started_at, now))
                    }
                    (None, _) => "-".into(),
                },
                format!("{}/{}", r.stdout_bytes, r.stderr_bytes),
                cpu_text(r.contain.cpu_usec),
                r.contain
                    .leftovers_killed
                    .map_or_else(|| "-".into(), |n| n.to_string()),
            ]
        })
        .collect();
    table(
        out,
        &[
            "RUN",
            "SCHEDULED",
            "TRIGGER",
            "OUTCOME",
            "EXIT",
            "TOOK",
            "OUT/ERR BYTES",
            "CPU",
            "LEFTOVERS KILLED",
        ],
        &rows,
        &[3],
        color,
    )?;
    Ok(0)
}

/// CPU time as seconds with two decimals (`-` without a cgroup).
fn cpu_text(usec: Option<u64>) -> String {
    usec.map_or_else(|| "-".into(), |u| format!("{:.2}s", u as f64 / 1e6))
}

/// The reason as the JSON names it (`SkipReason::as_str`, which a test
/// holds to serde's word), so `runs` and `--json` say the same.
fn reason_word(reason: SkipReason) -> String {
    reason.as_str().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_run_shows_how_long_it_has_been_going() {
        let now: Timestamp = "2026-12-01T12:00:00Z".parse().unwrap();
        let mut r = RunRecord::new(
            9,
            "backup",
            vec!["2026-12-01T11:57:00Z".parse().unwrap()],
            cronwarden_shared::status::Trigger::Schedule,
            Outcome::Running,
        );
        r.started_at = Some("2026-12-01T11:56:40Z".parse().unwrap());
        let mut buf = vec![];
        runs(&mut buf, &[r], now, false).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.contains("running  -     3m 20s so far"), "{text}");
    }

    #[test]
    fn a_catch_up_that_may_repeat_fires_says_so_and_others_do_not() {
        let now: Timestamp = "2026-12-01T12:00:00Z".parse().unwrap();
        let covers = vec![
            "2026-12-01T11:58:00Z".parse().unwrap(),
            "2026-12-01T11:59:00Z".parse().unwrap(),
        ];
        let mut r = RunRecord::new(
            9,
            "backup",
            covers,
            cronwarden_shared::status::Trigger::Catchup,
            Outcome::Success,
        );
        let text = |r: &RunRecord| {
            let mut buf = vec![];
            runs(&mut buf, std::slice::from_ref(r), now, false).unwrap();
            String::from_utf8(buf).unwrap()
        };
        assert!(!text(&r).contains("may repeat"), "{}", text(&r));
        assert!(!serde_json::to_string(&r).unwrap().contains("may_repeat"));
        r.may_repeat = true;
        assert!(text(&r).contains("catchup (may repeat)"), "{}", text(&r));
        assert!(serde_json::to_string(&r)
            .unwrap()
            .contains("\"may_repeat\":true"));
    }

    #[test]
    fn skip_reasons_read_as_the_json_names_them() {
        assert_eq!(reason_word(SkipReason::WorkerDown), "worker_down");
        assert_eq!(reason_word(SkipReason::Overlap), "overlap");
    }
}
