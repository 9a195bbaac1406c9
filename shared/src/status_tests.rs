//! The JSON of every shape in [`super`], pinned: a renamed or retyped field
//! fails here before it reaches a user.

use super::*;
use serde_json::json;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn run() -> RunRecord {
    RunRecord {
        id: 17,
        job: "backup".into(),
        scheduled_at: Some(ts("2026-11-22T03:00:00Z")),
        covers: vec![ts("2026-11-22T03:00:00Z")],
        trigger: Trigger::Schedule,
        started_at: Some(ts("2026-11-22T03:00:00.001Z")),
        finished_at: Some(ts("2026-11-22T03:00:00.813Z")),
        outcome: Outcome::Success,
        skip_reason: None,
        exit_code: Some(0),
        signal: None,
        duration_ms: Some(812),
        stdout_bytes: 120,
        stderr_bytes: 0,
        error: None,
        stdout_tail: String::new(),
        stderr_tail: String::new(),
        contain: Containment::default(),
        may_repeat: false,
    }
}

#[test]
fn run_record_json_is_pinned() {
    assert_eq!(
        serde_json::to_value(run()).unwrap(),
        json!({ "id": 17, "job": "backup", "scheduled_at": "2026-11-22T03:00:00Z",
                "covers": ["2026-11-22T03:00:00Z"], "trigger": "schedule",
                "started_at": "2026-11-22T03:00:00.001Z", "finished_at": "2026-11-22T03:00:00.813Z",
                "outcome": "success", "skip_reason": null, "exit_code": 0, "signal": null,
                "duration_ms": 812, "stdout_bytes": 120, "stderr_bytes": 0,
                "cpu_usec": null, "memory_peak": null })
    );
}

#[test]
fn status_json_is_pinned() {
    let s = StatusReport {
        state: State::Degraded,
        reasons: vec!["job backup is late".into()],
        supervisor: SupervisorInfo {
            pid: 41,
            version: "0.1.0".into(),
            started_at: ts("2026-11-22T10:00:00Z"),
            binary_replaced: None,
        },
        worker: WorkerInfo {
            pid: Some(42),
            started_at: Some(ts("2026-11-22T10:00:00Z")),
            restarts: 0,
            heartbeat_age_ms: Some(180),
            last_good_turn_age_ms: Some(180),
            heartbeat_seq: Some(7),
            malformed_events: 0,
        },
        jobs: vec![Arc::new(JobStatus {
            name: "backup".into(),
            schedule: "0 3 * * *".into(),
            timezone: "UTC".into(),
            state: JobState::Late,
            paused: false,
            next_fire_at: Some(ts("2026-11-23T03:00:00Z")),
            last_run: None,
            streaks: Streaks::default(),
            running: vec![],
        })],
        alerts: vec![Alert {
            kind: AlertKind::JobLate,
            job: Some("backup".into()),
            severity: Severity::Warning,
            opened_at: ts("2026-11-22T03:01:00Z"),
            resolved_at: None,
            summary: "backup has not fired since 03:00 (5m late)".into(),
            owner: None,
        }],
        sinks: vec![],
        clock_jumps: vec![ClockJump {
            at: ts("2026-11-22T09:00:00Z"),
            jump_ms: 3_600_000,
            jobs_due: 2,
            fires_due: 61,
            kind: ClockJumpKind::Suspend,
        }],
        peers: vec![crate::cluster::Peer {
            host: "db-b".into(),
            last_seen: ts("2026-11-22T09:59:58Z"),
            skew_ms: -12,
            claimed_last_hour: 30,
            alive: true,
        }],
    };
    assert_eq!(
        serde_json::to_value(&s).unwrap(),
        json!({ "state": "degraded", "reasons": ["job backup is late"],
          "supervisor": { "pid": 41, "version": "0.1.0", "started_at": "2026-11-22T10:00:00Z" },
          "worker": { "pid": 42, "started_at": "2026-11-22T10:00:00Z", "restarts": 0,
                      "heartbeat_age_ms": 180, "last_good_turn_age_ms": 180,
                      "heartbeat_seq": 7, "malformed_events": 0 },
          "jobs": [ { "name": "backup", "schedule": "0 3 * * *", "timezone": "UTC",
                      "state": "late", "paused": false, "next_fire_at": "2026-11-23T03:00:00Z",
                      "last_run": null, "running": [],
                      "streaks": { "failures": 0, "zero_output": 0, "overlap_skips": 0 } } ],
          "alerts": [ { "kind": "job_late", "job": "backup", "severity": "warning",
                        "opened_at": "2026-11-22T03:01:00Z", "resolved_at": null,
                        "summary": "backup has not fired since 03:00 (5m late)" } ],
          "sinks": [],
          "clock_jumps": [ { "at": "2026-11-22T09:00:00Z", "jump_ms": 3600000, "jobs_due": 2,
                             "fires_due": 61, "kind": "suspend" } ],
          "peers": [ { "host": "db-b", "last_seen": "2026-11-22T09:59:58Z", "skew_ms": -12,
                       "claimed_last_hour": 30, "alive": true } ] })
    );
    let back: StatusReport = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
    assert_eq!(back, s);
}

#[test]
fn summary_counts_every_state_and_round_trips() {
    let job = |name: &str, state| JobStatus {
        name: name.into(),
        schedule: "@hourly".into(),
        timezone: "UTC".into(),
        state,
        paused: false,
        next_fire_at: None,
        last_run: None,
        streaks: Streaks::default(),
        running: vec![],
    };
    let at = ts("2026-11-22T10:00:00Z");
    let report = StatusReport {
        state: State::Ok,
        reasons: vec![],
        supervisor: SupervisorInfo {
            pid: 1,
            version: "0.1.0".into(),
            started_at: at,
            binary_replaced: None,
        },
        worker: WorkerInfo {
            pid: None,
            started_at: None,
            restarts: 0,
            heartbeat_age_ms: None,
            last_good_turn_age_ms: None,
            heartbeat_seq: None,
            malformed_events: 0,
        },
        jobs: vec![
            Arc::new(job("a", JobState::Late)),
            Arc::new(job("b", JobState::Idle)),
            Arc::new(job("c", JobState::Late)),
        ],
        alerts: vec![],
        sinks: vec![],
        clock_jumps: vec![],
        peers: vec![],
    };
    let v = serde_json::to_value(report.summary()).unwrap();
    assert_eq!(v["jobs_total"], 3);
    assert_eq!(
        v["jobs_by_state"],
        json!({ "idle": 1, "running": 0, "late": 2, "paused": 0, "failing": 0, "wedged": 0 })
    );
    assert!(v.get("jobs").is_none(), "no per-job list: {v}");
    let back: StatusSummary = serde_json::from_value(v).unwrap();
    assert_eq!(back.clone().with_jobs(report.jobs.clone()), report);
    for s in JobState::ALL {
        assert_eq!(JobState::parse(s.as_str()), Some(s));
    }
    assert_eq!(JobState::parse("asleep"), None);
}

#[test]
fn clock_jump_without_the_new_fields_decodes_as_a_step() {
    let old: ClockJump = serde_json::from_value(
        json!({ "at": "2026-11-22T09:00:00Z", "jump_ms": -5000, "jobs_due": 0 }),
    )
    .unwrap();
    assert_eq!(old.kind, ClockJumpKind::Step);
    assert_eq!(old.fires_due, 0);
}

#[test]
fn alert_notice_json_is_pinned() {
    let n = AlertNotice {
        event: "opened".into(),
        kind: AlertKind::WorkerStalled,
        job: None,
        severity: Severity::Critical,
        summary: "worker 42 sent no heartbeat for 5.2s; restarting it".into(),
        opened_at: ts("2026-11-22T10:00:00Z"),
        resolved_at: None,
        host: "db1".into(),
        details: json!({}),
    };
    assert_eq!(
        serde_json::to_value(&n).unwrap(),
        json!({ "event": "opened", "kind": "worker_stalled", "job": null, "severity": "critical",
                "summary": "worker 42 sent no heartbeat for 5.2s; restarting it",
                "opened_at": "2026-11-22T10:00:00Z", "resolved_at": null, "host": "db1", "details": { } })
    );
}

#[test]
fn sink_health_json_is_pinned() {
    let h = SinkHealth {
        name: "pager".into(),
        kind: "webhook".into(),
        delivered: 12,
        failed: 3,
        dropped: 44,
        queued: 256,
        undelivered: 1,
        last_success: Some(ts("2026-11-22T10:00:00Z")),
        last_error: Some("HTTP 500 from the webhook".into()),
        last_error_at: Some(ts("2026-11-22T10:05:00Z")),
        consecutive_failures: 2,
    };
    assert_eq!(
        serde_json::to_value(&h).unwrap(),
        json!({ "name": "pager", "kind": "webhook", "delivered": 12, "failed": 3,
                "dropped": 44, "queued": 256, "undelivered": 1,
                "last_success": "2026-11-22T10:00:00Z",
                "last_error": "HTTP 500 from the webhook",
                "last_error_at": "2026-11-22T10:05:00Z", "consecutive_failures": 2 })
    );
}

#[test]
fn exit_codes_follow_the_contract() {
    assert_eq!(State::Ok.exit_code(), 0);
    assert_eq!(State::Degraded.exit_code(), 1);
    assert_eq!(State::Stalled.exit_code(), 2);
    assert_eq!(State::Down.exit_code(), 2);
}

#[test]
fn log_words_are_the_json_words() {
    use SkipReason::*;
    for r in [Overlap, Misfire, Paused, WorkerDown, Removed] {
        assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
    }
    for k in [ClockJumpKind::Step, ClockJumpKind::Suspend] {
        assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
    }
}
