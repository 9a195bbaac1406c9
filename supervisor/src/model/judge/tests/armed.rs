//! The armed cross-check under load (fire lines that follow the
//! heartbeat, or come turns late), fires taken but never reported, and a
//! replacement worker's arming from its predecessor's cursor.

use super::*;

/// `n` per-second jobs, `j00`..: a fake worker arms each for the next
/// second, takes each second's fires in one turn, heartbeats at the end of
/// the turn with the digest of its own arming, and writes each fire's line
/// after the heartbeat, some of them as late as `lag` of the next turns.
/// Returns the misarmed notices seen, evaluating after every heartbeat
/// (the loop's tick, phase-locked with the fires: the worst case), and
/// after every fire line too if `every_line`.
fn per_second_jobs_under_load(n: usize, seconds: u64, lag: u64, every_line: bool) -> Vec<String> {
    let mut config = String::new();
    for i in 0..n {
        config.push_str(&format!(
            "[[job]]\nname = \"j{i:02}\"\nschedule = \"* * * * * *\"\nshell = \"true\"\n"
        ));
    }
    let mut s = Sim::with(&config);
    let names: Vec<String> = (0..n).map(|i| format!("j{i:02}")).collect();
    let second = |k: u64| ts("2026-12-03T10:00:00Z") + secs(k as f64);
    s.spawn(10).hello(10);
    s.apply(Event::Schedule {
        jobs: names
            .iter()
            .map(|n| Armed {
                job: n.clone(),
                next_fire_at: Some(second(1)),
                paused: false,
            })
            .collect(),
    });
    let mut seen = vec![];
    let mut note = |e: Evaluation| {
        for (ev, kind, job) in notices(&e) {
            if matches!(kind, AlertKind::WorkerMisarmed | AlertKind::JobMisarmed) {
                seen.push(format!("{ev} {kind:?} {job:?}"));
            }
        }
    };
    // Lines written but not yet read: (second it becomes readable, line).
    let mut pending: Vec<(u64, Event)> = vec![];
    let mut run_id = 0;
    for k in 1..=seconds {
        // The turn at second k (+1ms), its heartbeat (+2ms): every job is
        // now armed for k+1.
        s.at(secs(k as f64 + 0.002));
        let digest = ArmedDigest::of(names.iter().map(|n| (n.as_str(), Some(second(k + 1)))));
        let wall = s.wall();
        s.beat_with(k, Some(wall), None, Some(digest));
        note(s.evaluate());
        for (i, name) in names.iter().enumerate() {
            run_id += 1;
            let at = second(k);
            pending.push((
                k + ((i as u64 + k) % (lag + 1)),
                Event::Fire {
                    job: name.clone(),
                    run_id,
                    scheduled_at: Some(at),
                    covers: vec![at],
                    trigger: Trigger::Schedule,
                    pid: 1000 + run_id as u32,
                    pipes: vec![],
                    started_at: at,
                    next_fire_at: Some(second(k + 1)),
                },
            ));
        }
        // The fire lines readable by now (after the heartbeat), one by one.
        s.at(secs(k as f64 + 0.5));
        let (now, later): (Vec<_>, Vec<_>) = pending.drain(..).partition(|(at, _)| *at <= k);
        pending = later;
        for (_, ev) in now {
            s.apply(ev);
            if every_line {
                note(s.evaluate());
            }
        }
    }
    seen
}

#[test]
fn one_per_second_job_is_never_misarmed_when_its_fire_line_follows_the_heartbeat() {
    assert_eq!(
        per_second_jobs_under_load(1, 60, 0, false),
        Vec::<String>::new()
    );
    // Every other second, the fire line comes after the next turn's heartbeat.
    assert_eq!(
        per_second_jobs_under_load(1, 60, 1, true),
        Vec::<String>::new()
    );
}

#[test]
fn fifty_per_second_jobs_are_never_misarmed_with_fire_lines_up_to_two_turns_late() {
    assert_eq!(
        per_second_jobs_under_load(50, 80, 2, true),
        Vec::<String>::new()
    );
    assert_eq!(
        per_second_jobs_under_load(50, 80, 0, false),
        Vec::<String>::new()
    );
}

#[test]
fn fires_taken_but_never_reported_are_misarmed_after_the_unreported_bound() {
    let mut s = Sim::with(
        "[[job]]\nname = \"fine\"\nschedule = \"* * * * * *\"\nshell = \"true\"\n\
         [[job]]\nname = \"victim\"\nschedule = \"* * * * * *\"\nshell = \"true\"\n",
    );
    let second = |k: u64| ts("2026-12-03T10:00:00Z") + secs(k as f64);
    s.spawn(10).hello(10);
    s.apply(Event::Schedule {
        jobs: ["fine", "victim"]
            .map(|n| Armed {
                job: n.into(),
                next_fire_at: Some(second(1)),
                paused: false,
            })
            .to_vec(),
    });
    let mut opened_at = None;
    for k in 1..=20u64 {
        s.at(secs(k as f64 + 0.002));
        let digest = ArmedDigest::of([
            ("fine", Some(second(k + 1))),
            ("victim", Some(second(k + 1))),
        ]);
        let wall = s.wall();
        s.beat_with(k, Some(wall), None, Some(digest));
        // Only `fine`'s fire is ever reported.
        s.apply(Event::Fire {
            job: "fine".into(),
            run_id: k,
            scheduled_at: Some(second(k)),
            covers: vec![second(k)],
            trigger: Trigger::Schedule,
            pid: 1000 + k as u32,
            pipes: vec![],
            started_at: second(k),
            next_fire_at: Some(second(k + 1)),
        });
        let e = s.evaluate();
        if notices(&e).contains(&("opened".into(), AlertKind::WorkerMisarmed, None)) {
            opened_at = Some(k);
            let c = summary(&s.judge(), AlertKind::WorkerMisarmed);
            assert!(c.contains("victim (due at 2026-12-03T10:00:01Z)"), "{c}");
            assert!(!c.contains("fine"), "{c}");
        }
    }
    // Taken at the heartbeat of second 1 (t = 1.002s); reported after more
    // than 10s: at the evaluation of second 12 (t = 12.002s), not before.
    assert_eq!(opened_at, Some(12));
}

#[test]
fn a_fire_line_overtaken_by_a_later_skip_does_not_move_the_arming_back() {
    let mut s = Sim::new();
    s.up(10);
    // The fire of 10:01:00 is taken (armed 10:02:00) but its process is
    // slow to start; the turn at 10:02:00 skips for overlap (armed
    // 10:03:00), and only then the fire line comes, armed 10:02:00.
    s.at(secs(120.0)).skip_overlap(2, "2026-12-03T10:02:00Z", 1);
    s.fire(1, "2026-12-03T10:01:00Z", 4711);
    assert_eq!(s.m.jobs["a"].next_fire_at, Some(ts("2026-12-03T10:03:00Z")));
    s.evaluate();
    s.at(secs(124.0)).beat(2);
    assert!(!kinds(&s.judge()).contains(&AlertKind::JobMisarmed));
}

/// A replacement worker arms `a` from the store's cursor, which its
/// predecessor moved past fires whose lines died with it.
fn replaced_worker_arming(at: &str) -> Sim {
    let mut s = Sim::new();
    s.up(10);
    // 10:01 and 10:02 were taken by worker 10, their lines lost.
    s.at(secs(150.0));
    let (now, wall) = (s.now(), s.wall());
    s.m.worker_gone_at("was killed by signal 9".into(), true, &[], now, wall);
    s.spawn(11);
    s.apply(Event::Schedule {
        jobs: vec![Armed {
            job: "a".into(),
            next_fire_at: Some(ts(at)),
            paused: false,
        }],
    });
    s.hello(11).beat(1);
    s
}

#[test]
fn a_replacement_expects_from_the_arming_its_predecessor_left() {
    // Started at 10:02:30: the schedule's next fire is 10:03:00.
    let mut s = replaced_worker_arming("2026-12-03T10:03:00Z");
    assert_eq!(
        s.m.jobs["a"].expected_next,
        Some(ts("2026-12-03T10:03:00Z"))
    );
    s.evaluate();
    s.at(secs(175.0)).beat(2);
    let e = s.evaluate();
    assert!(
        !notices(&e)
            .iter()
            .any(|(_, k, _)| matches!(k, AlertKind::JobLate | AlertKind::JobMisarmed)),
        "{:?}",
        notices(&e)
    );
}

#[test]
fn a_replacement_armed_a_day_ahead_is_still_misarmed_and_late() {
    let mut s = replaced_worker_arming("2026-12-04T10:03:00Z");
    // Our expectation stays 10:01:00, which it never fires.
    assert_eq!(
        s.m.jobs["a"].expected_next,
        Some(ts("2026-12-03T10:01:00Z"))
    );
    s.evaluate();
    s.tick_to(secs(154.0));
    s.at(secs(154.0)).beat(2);
    let e = s.evaluate();
    assert!(notices(&e).contains(&("opened".into(), AlertKind::JobMisarmed, Some("a".into()))));
    // Late 30s (late_after) after its hello, at 150s.
    s.at(secs(180.1)).beat(3);
    assert!(kinds(&s.judge()).contains(&AlertKind::JobLate));
}
