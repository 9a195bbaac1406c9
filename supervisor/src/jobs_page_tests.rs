use std::{path::PathBuf, sync::Arc};

use cronwarden_shared::{
    config::Config,
    status::{JobState, JobStatus, StatusReport, Streaks},
};
use proptest::prelude::*;

use super::*;
use crate::model::Model;

fn snapshot(jobs: &[(String, JobState)]) -> Snapshot {
    let dir = std::env::temp_dir();
    let text = format!("state_dir = {:?}\n", dir.display().to_string());
    let config = Config::parse(&dir.join("cw-page.toml"), &text).unwrap();
    let model = Model::for_test(config.clone());
    let mut status: StatusReport =
        model.status(tokio::time::Instant::now(), jiff::Timestamp::now());
    status.jobs = jobs
        .iter()
        .map(|(name, state)| {
            std::sync::Arc::new(JobStatus {
                name: name.clone(),
                schedule: "@hourly".into(),
                timezone: "UTC".into(),
                state: *state,
                paused: false,
                next_fire_at: None,
                last_run: None,
                streaks: Streaks::default(),
                running: vec![],
            })
        })
        .collect();
    Snapshot::from_parts(
        status,
        model.counters.clone(),
        Arc::new(config),
        PathBuf::new(),
    )
}

fn state() -> impl Strategy<Value = JobState> {
    prop::sample::select(JobState::ALL.to_vec())
}

/// Names from a small alphabet, so prefixes and cursors hit often; in any
/// order (the snapshot sorts them), unique.
fn jobs() -> impl Strategy<Value = Vec<(String, JobState)>> {
    prop::collection::btree_map("[ab+%é]{1,4}", state(), 0..40)
        .prop_map(|m| m.into_iter().collect::<Vec<_>>())
        .prop_shuffle()
}

proptest! {
    /// Following the cursor from the first page yields exactly the jobs a
    /// plain filter of the sorted list does (the oracle), each once, in
    /// name order, and every page but the last is full.
    #[test]
    fn pages_cover_the_filtered_jobs_once_in_order(
        jobs in jobs(),
        limit in 1usize..7,
        states in prop::collection::vec(state(), 0..3),
        prefix in prop::option::of("[ab+%é]{0,2}"),
    ) {
        let snap = snapshot(&jobs);
        let mut oracle: Vec<&(String, JobState)> = jobs
            .iter()
            .filter(|(n, s)| {
                (states.is_empty() || states.contains(s))
                    && prefix.as_ref().is_none_or(|p| n.starts_with(p.as_str()))
            })
            .collect();
        oracle.sort_by(|a, b| a.0.cmp(&b.0));
        let mut seen = vec![];
        let mut after = None;
        for _ in 0..=jobs.len() + 1 {
            let q = JobsQuery { limit: Some(limit), after: after.clone(), states: states.clone(), prefix: prefix.clone() };
            let page = select(&snap, &q);
            let names: Vec<String> = page.positions.iter().map(|i| snap.status.jobs[*i].name.clone()).collect();
            if page.next.is_some() {
                prop_assert_eq!(names.len(), limit);
                prop_assert_eq!(page.next.as_ref(), names.last());
            }
            seen.extend(names);
            after = page.next;
            if after.is_none() {
                break;
            }
        }
        prop_assert!(after.is_none(), "the cursor never ran out");
        let oracle: Vec<String> = oracle.into_iter().map(|(n, _)| n.clone()).collect();
        prop_assert_eq!(seen, oracle);
    }

    /// The body is a JSON array of exactly the page's jobs.
    #[test]
    fn the_body_is_the_pages_jobs(jobs in jobs(), limit in 1usize..50) {
        let snap = snapshot(&jobs);
        let page = select(&snap, &JobsQuery { limit: Some(limit), ..JobsQuery::default() });
        let back: Vec<JobStatus> = serde_json::from_slice(&body(&snap, &page)).unwrap();
        let want: Vec<JobStatus> = page.positions.iter().map(|i| (*snap.status.jobs[*i]).clone()).collect();
        prop_assert_eq!(back, want);
    }

    /// A cursor survives encoding into the header and decoding from a query.
    #[test]
    fn a_cursor_round_trips(name in "\\PC{1,12}") {
        let q = parse(Some(&format!("after={}", encode(&name)))).unwrap();
        prop_assert_eq!(q.after, Some(name));
    }
}

#[test]
fn bad_parameters_name_the_field() {
    for (query, field) in [
        ("limit=0", "limit:"),
        ("limit=10001", "limit:"),
        ("limit=x", "limit:"),
        ("state=asleep", "state:"),
        ("state=idle,", "state:"),
        ("after=%zz", "after:"),
        ("prefix=%FF", "prefix:"),
        ("limit=1&limit=2", "limit:"),
        ("page=2", "page:"),
    ] {
        let e = parse(Some(query)).unwrap_err();
        assert!(e.starts_with(field), "{query}: {e}");
    }
    assert_eq!(
        parse(Some("limit=5&state=late,failing&prefix=db%20&after=db%20a")).unwrap(),
        JobsQuery {
            limit: Some(5),
            after: Some("db a".into()),
            states: vec![JobState::Late, JobState::Failing],
            prefix: Some("db ".into()),
        }
    );
    assert_eq!(parse(None).unwrap(), JobsQuery::default());
}

#[test]
fn a_job_is_found_by_name_and_its_json_is_cached() {
    let snap = snapshot(&[("b".into(), JobState::Idle), ("a".into(), JobState::Late)]);
    let i = snap.job_position("a").unwrap();
    assert_eq!(snap.status.jobs[i].name, "a");
    assert_eq!(snap.job_position("c"), None);
    // The same bytes, not a second serialisation.
    assert_eq!(snap.job_json(i).as_ptr(), snap.job_json(i).as_ptr());
    assert_eq!(snap.summary_json().as_ptr(), snap.summary_json().as_ptr());
}
