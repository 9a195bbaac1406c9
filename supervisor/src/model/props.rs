//! Property test of the supervisor's event handling: any sequence of event
//! lines (junk, and well-formed events with wild values: unknown jobs, ids
//! at the limits, instants at the ends of time, finishes without fires)
//! decoded and applied to the model, with the worker coming and going, never
//! panics, and the status and the judgement stay computable.

use std::time::Duration;

use cronwarden_shared::{
    config::Config,
    wire::{decode_event, Frame},
};
use jiff::Timestamp;
use proptest::prelude::*;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::Model;

fn model() -> Model {
    let text = "state_dir = \"/tmp/cw-model-props\"\n\
        [[job]]\nname = \"a\"\nschedule = \"* * * * * *\"\nshell = \"true\"\n\
        [[job]]\nname = \"b\"\nschedule = \"@every 1s\"\nshell = \"true\"\ntimeout = \"none\"\nzero_output_alert_after = 1\n";
    let config = Config::parse(std::path::Path::new("/tmp/cw.toml"), text).unwrap();
    Model::for_test(config)
}

fn instant() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(json!("2026-11-22T10:00:00Z")),
        Just(json!(Timestamp::MIN.to_string())),
        Just(json!(Timestamp::MAX.to_string())),
        (-5_000_000_000i64..5_000_000_000)
            .prop_map(|s| json!(Timestamp::from_second(s).unwrap().to_string())),
        Just(Value::Null),
    ]
    .boxed()
}

fn id() -> BoxedStrategy<Value> {
    prop_oneof![
        (0u64..5).prop_map(|n| json!(n)),
        Just(json!(u64::MAX)),
        any::<u64>().prop_map(|n| json!(n)),
    ]
    .boxed()
}

fn job() -> BoxedStrategy<Value> {
    proptest::sample::select(&["a", "b", "ghost", "", "a/b"][..])
        .prop_map(|j| json!(j))
        .boxed()
}

/// Event objects with every field drawn wide; some fail to decode (a null
/// where an instant is required), which is fine: they count as bad lines.
fn event() -> impl Strategy<Value = Value> {
    let run = (
        id(),
        job(),
        proptest::collection::vec(instant(), 0..3),
        proptest::sample::select(
            &["success", "failed", "timeout", "killed", "lost", "skipped"][..],
        ),
        any::<u64>(),
        prop_oneof![Just(0u64), any::<u64>()],
        instant(),
    )
        .prop_map(|(id, job, covers, outcome, dur, bytes, at)| {
            json!({ "id": id, "job": job, "scheduled_at": at, "covers": covers,
                    "trigger": "schedule", "started_at": at, "finished_at": at,
                    "outcome": outcome, "skip_reason": null, "exit_code": 1, "signal": null,
                    "duration_ms": dur, "stdout_bytes": bytes, "stderr_bytes": 0 })
        });
    prop_oneof![
        (any::<u32>(), instant()).prop_map(|(pid, at)| json!({"type": "hello", "pid": pid, "version": "x", "started_at": at})),
        (any::<u64>(), instant(), instant(), any::<u32>(), id(), any::<u64>()).prop_map(|(seq, at, good, running, run, digest)| {
            json!({"type": "heartbeat", "seq": seq, "at": at, "last_good_turn_at": good, "running": running,
                   "armed": {"jobs": running, "digest": digest},
                   "progress": [{"run_id": run, "bytes": seq, "last_output_at": good, "last_line": "x"}]})
        }),
        (job(), instant(), any::<bool>()).prop_map(|(job, at, paused)| json!({"type": "schedule", "jobs": [{"job": job, "next_fire_at": at, "paused": paused}]})),
        (job(), id(), instant(), proptest::collection::vec(instant(), 0..3), any::<u32>(), instant())
            .prop_map(|(job, run, at, covers, pid, next)| json!({"type": "fire", "job": job, "run_id": run,
                "scheduled_at": at, "covers": covers, "trigger": "schedule", "pid": pid,
                "started_at": at, "next_fire_at": next})),
        (job(), id(), instant(), instant()).prop_map(|(job, run, at, next)| json!({"type": "skip", "job": job,
            "run_id": run, "scheduled_at": at, "reason": "overlap", "busy_run_id": run, "next_fire_at": next})),
        (job(), id(), proptest::collection::vec(instant(), 0..3), instant()).prop_map(|(job, run, covers, next)|
            json!({"type": "queued", "job": job, "run_id": run, "covers": covers, "next_fire_at": next})),
        run.prop_map(|r| json!({"type": "finish", "run": r})),
        (any::<i64>(), any::<u32>(), instant()).prop_map(|(ms, due, at)| json!({"type": "clock_jump",
            "at": at, "jump_ms": ms, "jobs_due": due})),
        Just(json!({"type": "command_failed", "command": "x", "error": "y"})),
    ]
}

#[derive(Debug, Clone)]
enum Step {
    Line(Vec<u8>),
    Spawned(u32),
    Gone(bool),
    Wait(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => event().prop_map(|v| Step::Line(serde_json::to_vec(&v).unwrap())),
        1 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(Step::Line),
        1 => any::<u32>().prop_map(Step::Spawned),
        1 => any::<bool>().prop_map(Step::Gone),
        1 => (0u64..20_000).prop_map(Step::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_event_stream_leaves_the_model_usable(steps in proptest::collection::vec(step(), 1..25)) {
        let mut m = model();
        let mut now = Instant::now();
        m.worker_spawned(42);
        for s in steps {
            match s {
                Step::Line(bytes) => {
                    if let Ok(ev) = decode_event(Frame::Line(bytes.into())) {
                        m.apply(ev, now);
                    }
                }
                Step::Spawned(pid) => m.worker_spawned(pid),
                Step::Gone(crash) => {
                    let _ = m.worker_gone("test".into(), crash, &[]);
                }
                Step::Wait(ms) => now += Duration::from_millis(ms),
            }
            let wall = Timestamp::now();
            let before = m.status(now, wall);
            let evaluation = m.evaluate(now, wall);
            prop_assert!(serde_json::to_vec(&evaluation.status).is_ok());
            prop_assert!(serde_json::to_vec(&before).is_ok());
        }
    }
}
