//! No arithmetic on config values or clocks can panic, as a property: the
//! pure plan driven with the extreme values the config accepts (durations
//! up to 365 d, counts up to `u32::MAX`) and with clocks at the edges of
//! what jiff represents (years -9999 and 9999), stepped by up to centuries
//! either way, with runs ending, triggers, pauses and a shutdown. A panic
//! fails the case; so does a turn that does unbounded work (each input is
//! timed).

use std::{
    path::Path,
    time::{Duration, Instant},
};

use cronwarden_shared::{config::Config, status::Outcome, wire::Command};
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;

use super::{wanted_rows, Effects, Plan, Spawn};
use crate::clock::Clocks;

const SCHEDULES: &[&str] = &[
    "* * * * * *",
    "@every 100ms",
    "@every 365d",
    "0 0 29 2 *",
    "@yearly",
    "59 59 23 31 12 *",
];

const DURATIONS: &[&str] = &[
    "1ns",
    "1ms",
    "1s",
    "1h",
    "364d",
    "365d",
    "8760h",
    "31536000s",
];

#[derive(Debug, Clone)]
enum Step {
    /// The wall clock moves by this many seconds (the monotonic clocks by
    /// their own amount, forward only).
    Wall(i64, u64),
    FinishAll,
    Trigger,
    Pause,
    Resume,
}

fn step() -> impl Strategy<Value = Step> {
    let jump = prop_oneof![
        4 => -5i64..=5,
        2 => -100_000i64..=100_000,
        1 => Just(100 * 365 * 86_400i64),
        1 => Just(-100 * 365 * 86_400i64),
        1 => Just(i64::MAX),
        1 => Just(i64::MIN),
    ];
    let mono = prop_oneof![0u64..=5, Just(u32::MAX as u64), Just(u64::MAX / 4)];
    prop_oneof![
        6 => (jump, mono).prop_map(|(w, m)| Step::Wall(w, m)),
        2 => Just(Step::FinishAll),
        1 => Just(Step::Trigger),
        1 => Just(Step::Pause),
        1 => Just(Step::Resume),
    ]
}

fn start() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        Just(Timestamp::MIN),
        Just(Timestamp::MAX),
        Just(Timestamp::UNIX_EPOCH),
        (Timestamp::MIN.as_second()..=Timestamp::MAX.as_second())
            .prop_map(|s| Timestamp::from_second(s).unwrap()),
    ]
}

/// One input must not take long: every loop over fires is bounded.
fn timed(what: &str, f: impl FnOnce()) -> Result<(), TestCaseError> {
    let began = Instant::now();
    f();
    prop_assert!(
        began.elapsed() < Duration::from_secs(5),
        "{what} took {:?}",
        began.elapsed()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn extreme_config_values_and_clocks_never_panic_the_plan(
        schedule in proptest::sample::select(SCHEDULES),
        overlap in proptest::sample::select(&["skip", "queue", "allow", "replace"][..]),
        timeout in proptest::sample::select(DURATIONS),
        kill_grace in proptest::sample::select(DURATIONS),
        misfire_grace in proptest::sample::select(DURATIONS),
        late_after in proptest::sample::select(DURATIONS),
        wall in start(),
        steps in proptest::collection::vec(step(), 1..16),
    ) {
        let text = format!(
            "[[job]]\nname = \"x\"\nschedule = \"{schedule}\"\nshell = \"true\"\noverlap = \"{overlap}\"\n\
             timeout = \"{timeout}\"\nkill_grace = \"{kill_grace}\"\nmisfire_grace = \"{misfire_grace}\"\n\
             late_after = \"{late_after}\"\nalert_after_failures = 4294967295\n\
             overlap_alert_after = 4294967295\nretention = 4294967295\nkeep_output = 4294967295\n\
             zero_output_alert_after = 4294967295\n"
        );
        let config = Config::parse(Path::new("x.toml"), &text).unwrap();
        let mut clocks = Clocks { wall, mono: Duration::ZERO, boot: Duration::ZERO };
        let mut plan = Plan::new(1, 0);
        let mut running: Vec<Spawn> = vec![];
        let carry = |fx: Effects, running: &mut Vec<Spawn>| running.extend(fx.spawns);
        timed("configure", || {
            let mut fx = Effects::default();
            plan.configure(&config, wanted_rows(&config, clocks.wall), clocks.wall, &mut fx);
            carry(fx, &mut running);
        })?;
        for s in &steps {
            match *s {
                Step::Wall(secs, mono) => {
                    let d = SignedDuration::from_secs(secs);
                    clocks.wall = clocks.wall.checked_add(d).unwrap_or(if secs > 0 {
                        Timestamp::MAX
                    } else {
                        Timestamp::MIN
                    });
                    clocks.mono = clocks.mono.saturating_add(Duration::from_secs(mono));
                    clocks.boot = clocks.boot.saturating_add(Duration::from_secs(mono));
                    timed("a turn", || {
                        let mut fx = Effects::default();
                        plan.observe_clocks(clocks, &mut fx);
                        plan.fire_due(clocks.wall, &mut fx);
                        plan.check_starts();
                        carry(fx, &mut running);
                    })?;
                }
                Step::FinishAll => {
                    for s in std::mem::take(&mut running) {
                        let mut r = s.record;
                        r.finished_at = Some(clocks.wall);
                        r.outcome = Outcome::Failed;
                        r.exit_code = Some(1);
                        timed("a finish", || {
                            let mut fx = Effects::default();
                            plan.finished(r, clocks.wall, &mut fx);
                            carry(fx, &mut running);
                        })?;
                    }
                }
                Step::Trigger | Step::Pause | Step::Resume => {
                    let job = "x".to_string();
                    let cmd = match s {
                        Step::Trigger => Command::Trigger { job, request: Some(1) },
                        Step::Pause => Command::Pause { job, request: Some(1) },
                        _ => Command::Resume { job, request: Some(1) },
                    };
                    timed("a command", || {
                        let mut fx = Effects::default();
                        plan.command(cmd, clocks.wall, &mut fx);
                        carry(fx, &mut running);
                    })?;
                }
            }
        }
        timed("shutdown", || {
            let mut fx = Effects::default();
            plan.shutdown(clocks.wall, &mut fx);
        })?;
        let _ = plan.longest_kill_grace();
    }
}
