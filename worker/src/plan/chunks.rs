//! Firing a turn in chunks ([`Plan::fire_due_at_most`]) against firing it
//! whole ([`Plan::fire_due`]), the oracle: the loop commits and starts a
//! burst chunk by chunk (issue 18), which is sound only if the chunks,
//! put end to end, are exactly the whole turn's effects, and no fire's
//! claim and record land in two chunks (two transactions).

use std::collections::BTreeSet;

use cronwarden_shared::{config::Config, status::Outcome, store::Write};
use jiff::Timestamp;
use proptest::prelude::*;

use super::{wanted_rows, Effects, Plan};

/// 2030-01-01T00:00:00Z.
const T0: i64 = 1_893_456_000;

fn ts(s: i64) -> Timestamp {
    Timestamp::from_second(T0 + s).unwrap()
}

const SCHEDULES: [&str; 4] = [
    "* * * * * *",
    "*/2 * * * * *",
    "*/3 * * * * *",
    "0 * * * * *",
];
const OVERLAPS: [&str; 4] = ["skip", "queue", "replace", "allow"];

fn config(jobs: &[(usize, usize, bool)]) -> Config {
    let text: String = jobs
        .iter()
        .enumerate()
        .map(|(i, (schedule, overlap, _))| {
            format!(
                "[[job]]\nname = \"j{i:03}\"\nschedule = \"{}\"\nshell = \"true\"\noverlap = \"{}\"\n",
                SCHEDULES[*schedule], OVERLAPS[*overlap]
            )
        })
        .collect();
    Config::parse(std::path::Path::new("/tmp/c.toml"), &text).expect("config")
}

/// The job a write is about, for the writes that belong to one fire.
fn job_of(w: &Write) -> Option<&str> {
    match w {
        Write::Claim { job, .. } => Some(job),
        Write::Insert(r) => Some(&r.job),
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Over several turns (runs that end or go on, so fires run, queue,
    /// replace or skip), every chunk size gives the whole turn's effects
    /// in the same order, each chunk adds at most its number of spawns,
    /// and no job's writes of one turn are split between two chunks.
    #[test]
    fn chunks_end_to_end_are_the_whole_turn(
        jobs in prop::collection::vec((0..4usize, 0..4usize, any::<bool>()), 1..40),
        chunk in 1..12usize,
        turns in 1..6i64,
    ) {
        let c = config(&jobs);
        let (mut whole, mut chunked) = (Plan::new(1, 0), Plan::new(1, 0));
        for p in [&mut whole, &mut chunked] {
            p.configure(&c, wanted_rows(&c, ts(0)), ts(0), &mut Effects::default());
        }
        for turn in 1..=turns {
            let now = ts(turn);
            let mut want = Effects::default();
            whole.fire_due(now, &mut want);
            let mut got = Effects::default();
            let mut seen: BTreeSet<String> = BTreeSet::new();
            loop {
                let mut fx = Effects::default();
                let more = chunked.fire_due_at_most(now, &mut fx, chunk);
                prop_assert!(fx.spawns.len() <= chunk);
                let here: BTreeSet<String> =
                    fx.writes.iter().filter_map(job_of).map(str::to_string).collect();
                prop_assert!(here.is_disjoint(&seen), "a job's writes in two chunks");
                seen.extend(here);
                for s in &fx.spawns {
                    let recorded = fx.writes.iter().any(
                        |w| matches!(w, Write::Insert(r) if r.id == s.record.id),
                    );
                    prop_assert!(recorded, "run {} spawned without its record", s.record.id);
                }
                got.writes.extend(fx.writes);
                got.events.extend(fx.events);
                got.stops.extend(fx.stops);
                got.spawns.extend(fx.spawns);
                if !more {
                    break;
                }
            }
            prop_assert_eq!(format!("{:?}", got.writes), format!("{:?}", want.writes));
            prop_assert_eq!(format!("{:?}", got.events), format!("{:?}", want.events));
            prop_assert_eq!(format!("{:?}", got.stops), format!("{:?}", want.stops));
            prop_assert_eq!(format!("{:?}", got.spawns), format!("{:?}", want.spawns));
            chunked.check_starts();
            // Runs of the jobs flagged to end do, in both plans alike.
            for p in [&mut whole, &mut chunked] {
                for s in &want.spawns {
                    let i: usize = s.record.job[1..].parse().unwrap();
                    if jobs[i].2 {
                        let mut r = s.record.clone();
                        r.outcome = Outcome::Success;
                        p.finished(r, now, &mut Effects::default());
                    }
                }
            }
        }
    }
}

/// Jobs far behind (more missed fires than one turn takes: each is still
/// due once fired) are fired once in a chunked turn, as in a whole one,
/// not again in every later chunk.
#[test]
fn a_job_still_due_once_fired_is_not_fired_again_by_the_next_chunk() {
    let c = config(&[(0, 3, false); 9]);
    let (mut whole, mut chunked) = (Plan::new(1, 0), Plan::new(1, 0));
    for p in [&mut whole, &mut chunked] {
        p.configure(&c, wanted_rows(&c, ts(0)), ts(0), &mut Effects::default());
    }
    // 11,000 fires missed, 10,000 taken in a turn: each job is still due
    // once fired, and the newest fires are within the misfire grace (1 h).
    let now = ts(11_000);
    let mut want = Effects::default();
    whole.fire_due(now, &mut want);
    let mut got = Effects::default();
    let mut chunks = 0;
    loop {
        let mut fx = Effects::default();
        let more = chunked.fire_due_at_most(now, &mut fx, 8);
        got.writes.extend(fx.writes);
        got.spawns.extend(fx.spawns);
        if !more {
            break;
        }
        chunks += 1;
        assert!(chunks < 5, "the turn never ends");
    }
    assert_eq!(chunks, 1, "nine fires in chunks of eight");
    let claims = |fx: &Effects| {
        fx.writes
            .iter()
            .filter(|w| matches!(w, Write::Claim { .. }))
            .count()
    };
    assert_eq!((claims(&want), claims(&got)), (9, 9));
    assert_eq!(got.writes.len(), want.writes.len());
    assert_eq!(format!("{:?}", got.spawns), format!("{:?}", want.spawns));
}
