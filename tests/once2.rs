//! Exactly once through store faults (issue 14), continued: the per-job
//! choice between running and holding a fire the store cannot commit.
//! Checked, as in `once.rs`, from the jobs' own stamps.

use std::{collections::BTreeSet, time::Duration};

use crate::{
    once::{assert_ran_once, stamping_job, stamps},
    util::{assert_accounted, now_unix, unix, wait_until, Env},
};

const LONG: Duration = Duration::from_secs(60);

/// `on_store_failure = "hold"`: while the store cannot commit, the job's
/// fires do not run; they are recorded skipped (`store_unavailable`) once
/// it writes again. A job with the default (`run`) runs through it. Both
/// have one record per fire and every run that ran has its own.
#[test]
fn a_held_job_skips_while_the_store_fails_and_a_running_one_runs() {
    let env = Env::new("");
    let stamp_file = env.path("stamps");
    let config = "[watchdog]\nheartbeat_interval = \"200ms\"\nstall_after = \"5s\"\n".to_string()
        + &stamping_job("runs", "* * * * * *", &stamp_file, "", "true")
        + &stamping_job(
            "holds",
            "* * * * * *",
            &stamp_file,
            "on_store_failure = \"hold\"",
            "true",
        );
    env.write_config(&config);
    // Every store write of the worker's journal fails at first.
    let mut sup = env.start_with(&[("FAILPOINTS", "store::apply=25*return")]);
    wait_until("the store recovers", LONG, || {
        sup.log()
            .contains("store writes succeed again")
            .then_some(())
    });
    let recovered = now_unix();
    wait_until("fires after the recovery are recorded", LONG, || {
        ["runs", "holds"]
            .iter()
            .all(|j| {
                env.rows(j).iter().any(|r| {
                    r.scheduled_at
                        .as_deref()
                        .is_some_and(|s| unix(s) > recovered + 1)
                })
            })
            .then_some(())
    });
    assert_eq!(sup.stop(LONG), 0);
    let stopped = now_unix();

    let stamped = stamps(&stamp_file);
    assert_ran_once(&stamped);
    let held = env.rows("holds");
    let unavailable: Vec<i64> = held
        .iter()
        .filter(|r| r.skip_reason.as_deref() == Some("store_unavailable"))
        .flat_map(|r| r.covers.iter().map(|c| unix(c)))
        .collect();
    assert!(
        !unavailable.is_empty(),
        "no fire of the held job was skipped store_unavailable: {held:#?}"
    );
    let ran: BTreeSet<i64> = stamped
        .iter()
        .filter(|s| s.job == "holds")
        .flat_map(|s| s.covers.iter().copied())
        .collect();
    for t in &unavailable {
        assert!(!ran.contains(t), "held fire {t} ran anyway");
    }
    // The running job ran in the same seconds.
    let ran_through: BTreeSet<i64> = stamped
        .iter()
        .filter(|s| s.job == "runs")
        .flat_map(|s| s.covers.iter().copied())
        .collect();
    assert!(
        unavailable.iter().any(|t| ran_through.contains(t)),
        "the default job did not run while the store failed"
    );
    for job in ["runs", "holds"] {
        let rows = env.rows(job);
        let first = rows
            .iter()
            .filter_map(|r| r.scheduled_at.as_deref().map(unix))
            .min()
            .unwrap();
        let (from, to) = (first - 1, stopped - 1);
        let expected: Vec<i64> = (from + 1..to).collect();
        assert_accounted(&rows, &expected, from, to, job);
        let ids: BTreeSet<i64> = rows.iter().map(|r| r.id).collect();
        for s in stamped.iter().filter(|s| s.job == job) {
            assert!(ids.contains(&s.id), "{job}: run {} has no record", s.id);
        }
    }
}
