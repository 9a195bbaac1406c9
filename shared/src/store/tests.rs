use super::*;
use crate::status::{Containment, Outcome, Trigger};

fn row(name: &str, next: &str) -> JobRow {
    JobRow {
        name: name.into(),
        schedule: "* * * * *".into(),
        timezone: "UTC".into(),
        next_run_at: Some(next.parse().unwrap()),
        last_scheduled_at: None,
        paused: false,
    }
}

fn run(id: u64, job: &str, outcome: Outcome) -> RunRecord {
    let mut r = RunRecord::new(
        id,
        job,
        vec!["2026-11-24T10:00:00Z".parse().unwrap()],
        Trigger::Schedule,
        outcome,
    );
    r.started_at = Some(Timestamp::now());
    r
}

/// A v1 store (as written before containment) is migrated in place to
/// the current schema: its runs read back with no containment and not
/// `may_repeat`, and new records keep theirs.
#[test]
fn a_v1_store_migrates_and_containment_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    {
        let c = Connection::open(&path).unwrap();
        c.execute_batch(SCHEMA_V1).unwrap();
        c.execute_batch(
            "INSERT INTO meta (key, value) VALUES ('schema_version', '1');
             INSERT INTO runs (id, job, trigger, outcome) VALUES (1, 'old', 'manual', 'success');",
        )
        .unwrap();
    }
    let mut s = Store::open(&path).unwrap();
    let old = s.runs("old", 10).unwrap();
    assert_eq!(old.len(), 1);
    assert_eq!(old[0].contain, Containment::default());
    assert!(!old[0].may_repeat);
    let mut r = run(2, "new", Outcome::Success);
    r.may_repeat = true;
    r.contain = Containment {
        cgroup: Some("/sys/fs/cgroup/x/run-2".into()),
        cpu_usec: Some(1_000_000),
        memory_peak: None,
        leftovers_killed: Some(3),
        output_holder: Some("42 (sleep)".into()),
        pgid: Some(42),
        leader_start: Some(12345),
    };
    s.apply(&[Write::Insert(r.clone())]).unwrap();
    drop(s);
    let s = Store::open_readonly(&path).unwrap();
    assert_eq!(s.runs("new", 10).unwrap()[0].contain, r.contain);
    assert!(s.runs("new", 10).unwrap()[0].may_repeat);
    let v: String = s
        .conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(v, "3");
}

/// Only a worker that ended without marking itself stopped leaves its
/// successor in doubt; a new store has no predecessor.
#[test]
fn worker_live_says_whether_the_previous_worker_ended_with_its_writes_stored() {
    let mut s = Store::open_in_memory().unwrap();
    assert!(!s.mark_worker_live().unwrap(), "a new store");
    assert!(
        s.mark_worker_live().unwrap(),
        "the previous worker was killed"
    );
    s.mark_worker_stopped().unwrap();
    assert!(
        !s.mark_worker_live().unwrap(),
        "the previous worker stopped"
    );
}

#[test]
fn reconcile_removes_ghosts_keeps_history_and_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let mut s = Store::open(&path).unwrap();
    s.reconcile(&[
        row("a", "2026-11-24T10:00:00Z"),
        row("b", "2026-11-24T10:00:00Z"),
    ])
    .unwrap();
    s.apply(&[Write::Insert(run(1, "b", Outcome::Success))])
        .unwrap();
    let got = s.reconcile(&[row("a", "2026-11-25T00:00:00Z")]).unwrap();
    // Unchanged schedule: the stored next fire wins over a recomputed one.
    assert_eq!(
        got[0].next_run_at,
        Some("2026-11-24T10:00:00Z".parse().unwrap())
    );
    assert_eq!(s.jobs().unwrap().len(), 1, "ghost row of b survived");
    assert_eq!(s.runs("b", 10).unwrap().len(), 1, "history of b lost");
}

#[test]
fn claim_is_compare_and_set() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join(FILE_NAME)).unwrap();
    s.reconcile(&[row("a", "2026-11-24T10:00:00Z")]).unwrap();
    let t0: Timestamp = "2026-11-24T10:00:00Z".parse().unwrap();
    let t1: Timestamp = "2026-11-24T10:01:00Z".parse().unwrap();
    let claim = |from| Write::Claim {
        job: "a".into(),
        from: Some(from),
        to: Some(t1),
        last_scheduled_at: Some(t0),
        rearm: None,
    };
    assert!(s
        .apply(&[claim(t0), Write::Insert(run(1, "a", Outcome::Success))])
        .unwrap());
    // The same claim again fails and takes its insert with it.
    assert!(!s
        .apply(&[claim(t0), Write::Insert(run(2, "a", Outcome::Success))])
        .unwrap());
    assert_eq!(s.runs("a", 10).unwrap().len(), 1);
}

#[test]
fn running_rows_become_lost_on_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let mut s = Store::open(&path).unwrap();
    s.apply(&[Write::Insert(run(7, "a", Outcome::Running))])
        .unwrap();
    assert!(s.is_running(7).unwrap());
    drop(s);
    let mut s = Store::open(&path).unwrap();
    let lost = s.recover_lost().unwrap();
    assert_eq!(lost.len(), 1);
    assert_eq!(s.runs("a", 1).unwrap()[0].outcome, Outcome::Lost);
    assert_eq!(s.max_run_id().unwrap(), 7);
}

#[test]
fn a_file_that_is_not_a_store_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let junk = b"this is not a database, it is a shopping list\n".repeat(100);
    std::fs::write(&path, &junk).unwrap();
    let err = Store::open(&path).err().expect("junk accepted");
    assert!(err.to_string().contains(path.to_str().unwrap()), "{err}");
    assert!(err.to_string().contains("left untouched"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), junk);
}

#[test]
fn prune_keeps_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join(FILE_NAME)).unwrap();
    let writes: Vec<Write> = (1..=30)
        .map(|i| {
            Write::Finish({
                let mut r = run(i, "a", Outcome::Success);
                r.finished_at = Some(Timestamp::now());
                r
            })
        })
        .collect();
    s.apply(&writes).unwrap();
    s.prune("a", 10).unwrap();
    let runs = s.runs("a", 100).unwrap();
    assert_eq!(runs.len(), 10);
    assert_eq!(runs[0].id, 30);
}

/// A skip found to be a peer's fire is removed; a run is never removed
/// that way, and a row already gone is no error.
#[test]
fn forget_removes_a_skip_and_only_a_skip() {
    let mut s = Store::open_in_memory().unwrap();
    s.apply(&[
        Write::Insert(run(1, "a", Outcome::Skipped)),
        Write::Insert(run(2, "a", Outcome::Success)),
    ])
    .unwrap();
    s.apply(&[
        Write::Forget { run_id: 1 },
        Write::Forget { run_id: 2 },
        Write::Forget { run_id: 3 },
    ])
    .unwrap();
    let ids: Vec<u64> = s.runs("a", 10).unwrap().iter().map(|r| r.id).collect();
    assert_eq!(ids, [2]);
}

#[test]
fn jobs_over_retention_names_exactly_the_jobs_with_more_records() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join(FILE_NAME)).unwrap();
    // a: 12 records, b: 10, c: 3, gone: 50 (left the config).
    let mut id = 0;
    let mut writes = vec![];
    for (job, n) in [("a", 12), ("b", 10), ("c", 3), ("gone", 50)] {
        for _ in 0..n {
            id += 1;
            let mut r = run(id, job, Outcome::Success);
            r.finished_at = Some(Timestamp::now());
            writes.push(Write::Finish(r));
        }
    }
    s.apply(&writes).unwrap();
    let keep = |job: &str| match job {
        "gone" => None,
        _ => Some(10),
    };
    let mut over = s.jobs_over_retention(keep).unwrap();
    over.sort();
    assert_eq!(over, vec!["a".to_string()]);
    // Once pruned, nobody is over.
    s.prune("a", 10).unwrap();
    assert!(s.jobs_over_retention(keep).unwrap().is_empty());
    // An empty store: nobody.
    let empty = Store::open(&dir.path().join("other.db")).unwrap();
    assert!(empty.jobs_over_retention(keep).unwrap().is_empty());
}
