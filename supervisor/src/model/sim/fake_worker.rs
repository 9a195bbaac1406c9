//! The fake worker: a small model of the real worker's turn (it takes
//! due fires, arms the next, heartbeats with the digest of its arming,
//! writes each fire's line a little after the heartbeat) and of its store
//! (records held while the store fails, written when it recovers).
//!
//! Like the real worker (`worker/src/plan/clock_step.rs`), it reports a
//! clock jump together with its arming, and after a backward step (seen
//! in a turn, or at its start: the real one checks every stored arming
//! when configured) a job whose schedule repeats within the span stepped
//! back is armed on the new clock, a second pass over the span as in a
//! DST fold. Its fake of the rule of `worker/src/plan/arming.rs` covers
//! only that case: it never stores an arming its schedule cannot produce.

use std::{collections::BTreeMap, time::Duration};

use cronwarden_shared::{
    stats::WorkerStats,
    status::{ClockJump, ClockJumpKind, Outcome, RunRecord, SkipReason, Trigger},
    wire::{Armed, ArmedDigest, Event},
};
use jiff::{SignedDuration, Timestamp};

use super::{faults::Kind, World, HEARTBEAT};

pub(super) struct FakeRun {
    pub(super) id: u64,
    pub(super) job: String,
    pub(super) covers: Vec<Timestamp>,
    /// When it was started (monotonic), and when it ends (`None`: hung).
    pub(super) started: Duration,
    pub(super) ends: Option<Duration>,
}

/// The fake worker: a model of the real one's turn.
pub(super) struct Worker {
    pub(super) pid: u32,
    pub(super) alive: bool,
    /// What it has armed, by job: its cursor, kept in the "store" across
    /// workers.
    pub(super) arming: BTreeMap<String, Option<Timestamp>>,
    /// The last scheduled time each job accounted, kept in the store too:
    /// a clock behind it was stepped back.
    pub(super) last: BTreeMap<String, Timestamp>,
    pub(super) runs: Vec<FakeRun>,
    /// Fire lines not written yet: (when, line); the process starts after
    /// the turn, so its line follows the turn's heartbeat.
    pub(super) starting: Vec<(Duration, Event)>,
    pub(super) next_beat: Duration,
    pub(super) seq: u64,
    /// When it was started: a pause begun before stops it, not its
    /// replacement.
    pub(super) spawned: Duration,
    pub(super) last_clocks: Option<(Duration, Timestamp)>,
}

/// One record the fake worker wrote: the scheduled times from `first` to
/// `last` (a catch-up covers every time between), for the exactly-once
/// check.
#[derive(Debug, Clone)]
pub(super) struct Record {
    pub(super) job: String,
    pub(super) first: Timestamp,
    pub(super) last: Timestamp,
    /// Which pass over the schedule it belongs to (see [`Pass`]).
    pub(super) pass: usize,
}

/// A job armed back for a second pass over a span the clock was stepped
/// back over: the records of the pass before tile the schedule up to
/// `left` (its arming then), the next pass starts at `to`.
#[derive(Debug, Clone)]
pub(super) struct Pass {
    pub(super) job: String,
    pub(super) left: Option<Timestamp>,
    pub(super) to: Timestamp,
}

/// The fake worker's store, kept across workers (as the real file is).
#[derive(Default)]
pub(super) struct Store {
    pub(super) written: Vec<Record>,
    /// Records taken while the store fails, written when it recovers.
    pub(super) held: Vec<Record>,
    /// Where each job's first scheduled time was, for the ledger.
    pub(super) first_armed: BTreeMap<String, Option<Timestamp>>,
    /// Second passes, in order.
    pub(super) passes: Vec<Pass>,
}

impl Store {
    fn pass_of(&self, job: &str) -> usize {
        self.passes.iter().filter(|p| p.job == job).count()
    }
}

impl World {
    pub(super) fn spawn(&mut self) {
        self.next_pid += 1;
        let pid = self.next_pid;
        let (now, wall) = (self.now(), self.wall());
        self.m.worker_spawned_at(pid, now, wall);
        self.worker.pid = pid;
        self.worker.alive = true;
        self.worker.runs.clear();
        self.worker.starting.clear();
        self.worker.seq = 0;
        self.worker.spawned = self.mono;
        self.worker.next_beat = self.mono;
        self.worker.last_clocks = None;
        // The real worker checks each stored arming when configured: a
        // clock stepped back while no worker ran is met here.
        self.second_passes(wall);
        self.report_schedule();
        self.write(Event::Hello {
            pid,
            version: "sim".into(),
            started_at: wall,
        });
    }

    /// The `schedule` line: what it has armed, by job.
    pub(super) fn report_schedule(&mut self) {
        let jobs = self
            .worker
            .arming
            .iter()
            .map(|(n, a)| Armed {
                job: n.clone(),
                next_fire_at: *a,
                paused: false,
            })
            .collect();
        self.write(Event::Schedule { jobs });
    }

    /// Arms each job whose schedule repeats within a span the clock was
    /// stepped back over for a second pass over it (see the module doc).
    pub(super) fn second_passes(&mut self, now: Timestamp) {
        let names: Vec<String> = self.worker.arming.keys().cloned().collect();
        for name in names {
            self.second_pass(&name, now);
        }
    }

    pub(super) fn second_pass(&mut self, name: &str, now: Timestamp) {
        let Some(&last) = self.worker.last.get(name) else {
            return;
        };
        if last <= now {
            return;
        }
        let schedule = self.m.jobs[name].spec.schedule.clone();
        // An @every cadence is kept: anchored on the last accounted time,
        // moved back by whole periods to no later than now.
        let period = schedule
            .every()
            .and_then(|p| SignedDuration::try_from(p).ok());
        let anchor = period.map(|p| {
            let mut a = last;
            while a > now {
                a -= p;
            }
            a
        });
        let Some(first) = schedule.next_after(now, anchor) else {
            return;
        };
        let armed = self.worker.arming.get(name).copied().flatten();
        if armed.is_some_and(|a| a <= first) {
            return;
        }
        // A schedule that fires once in the span keeps its arming: a
        // fixed-time fire already recorded is not run twice.
        let second = schedule.next_after(first, anchor.map(|_| first));
        if second.is_none_or(|s| s > last) {
            return;
        }
        self.store.passes.push(Pass {
            job: name.to_string(),
            left: armed,
            to: first,
        });
        self.worker.arming.insert(name.to_string(), Some(first));
        let pass_last = period.map_or(now, |p| first - p);
        self.worker.last.insert(name.to_string(), pass_last);
    }

    /// Whether the worker turns: alive, and not paused (a pause begun
    /// before it was started stopped its predecessor).
    pub(super) fn worker_turns(&self) -> bool {
        let paused = self
            .active(Kind::WorkerPause)
            .is_some_and(|(_, f)| f.start >= self.worker.spawned);
        self.worker.alive && !paused
    }

    /// One turn of the fake worker.
    pub(super) fn worker_turn(&mut self) {
        if !self.worker_turns() {
            return;
        }
        let (mono, wall) = (self.mono, self.wall());
        // A clock jump, as the real worker reports it.
        if let Some((pm, pw)) = self.worker.last_clocks.replace((mono, wall)) {
            let jump = wall.duration_since(pw) - SignedDuration::try_from(mono - pm).unwrap();
            if jump.abs() > SignedDuration::from_secs(1) {
                self.last_jump = mono;
                let kind = if self
                    .faults
                    .iter()
                    .any(|f| f.kind == Kind::Suspend && f.start <= mono && f.start > pm)
                {
                    ClockJumpKind::Suspend
                } else {
                    ClockJumpKind::Step
                };
                if jump.is_negative() {
                    self.second_passes(wall);
                }
                let jump_ms = jump.as_millis() as i64;
                self.write(Event::ClockJump(ClockJump {
                    at: wall,
                    jump_ms,
                    jobs_due: 0,
                    fires_due: 0,
                    kind,
                }));
                self.report_schedule();
            }
        }
        // Fire lines of processes that have started by now (a run's
        // fire line always comes before its finish line).
        let mut starting = std::mem::take(&mut self.worker.starting);
        starting.sort_by_key(|(t, _)| *t);
        let (now, later): (Vec<_>, Vec<_>) = starting.into_iter().partition(|(t, _)| *t <= mono);
        self.worker.starting = later;
        for (_, ev) in now {
            self.write(ev);
        }
        // Runs that ended.
        let mut ended = vec![];
        self.worker.runs.retain(|r| {
            let done = r.ends.is_some_and(|e| e <= mono);
            if done {
                ended.push((r.id, r.job.clone(), r.covers.clone(), r.started));
            }
            !done
        });
        for (id, job, covers, started) in ended {
            let mut run = RunRecord::new(id, &job, covers, Trigger::Schedule, Outcome::Success);
            run.started_at = Some(wall - (mono - started));
            run.finished_at = Some(wall);
            run.exit_code = Some(0);
            run.stdout_bytes = 1;
            self.write(Event::Finish { run });
        }
        // Due fires: taken all at once (a catch-up covers them), armed for
        // the next fire after now.
        let dropped = self.active(Kind::DroppedFires).map(|(i, f)| (i, f.job));
        let hung = self.active(Kind::HungRun).and_then(|(_, f)| f.job);
        let names: Vec<String> = self.worker.arming.keys().cloned().collect();
        for name in names {
            let Some(Some(first)) = self.worker.arming.get(&name).copied() else {
                continue;
            };
            if first > wall {
                continue;
            }
            let schedule = self.m.jobs[&name].spec.schedule.clone();
            let mut last = first;
            let mut n = 1;
            while let Some(t) = schedule.next_after(last, Some(last)) {
                if t > wall || n >= 20_000 {
                    break;
                }
                last = t;
                n += 1;
            }
            let next = schedule.next_after(wall.max(last), Some(last));
            self.worker.arming.insert(name.clone(), next);
            self.worker.last.insert(name.clone(), last);
            let covers = if first == last {
                vec![first]
            } else {
                vec![first, last]
            };
            // Whatever becomes of its line, the taken fire has its record.
            let rec = Record {
                job: name.clone(),
                first,
                last,
                pass: self.store.pass_of(&name),
            };
            if self.active(Kind::StoreFailure).is_some() {
                self.store.held.push(rec);
            } else {
                self.store.written.push(rec);
            }
            if let Some((i, Some(job))) = dropped {
                if job == name {
                    self.first_dropped.entry(i).or_insert(mono);
                    continue;
                }
            }
            let id = self.next_run_id;
            self.next_run_id += 1;
            if self.worker.runs.iter().any(|r| r.job == name) {
                self.write(Event::Skip {
                    job: name.clone(),
                    run_id: id,
                    scheduled_at: last,
                    reason: SkipReason::Overlap,
                    busy_run_id: None,
                    next_fire_at: next,
                });
                continue;
            }
            // Shorter than the shortest period: a healthy job never overlaps.
            let starts = mono + self.rng.ms(0, 300);
            let ends = if hung == Some(name.as_str()) {
                None
            } else {
                Some(starts + self.rng.ms(50, 600))
            };
            self.worker.runs.push(FakeRun {
                id,
                job: name.clone(),
                covers: covers.clone(),
                started: mono,
                ends,
            });
            self.worker.starting.push((
                starts,
                Event::Fire {
                    job: name.clone(),
                    run_id: id,
                    scheduled_at: Some(last),
                    trigger: if covers.len() > 1 {
                        Trigger::Catchup
                    } else {
                        Trigger::Schedule
                    },
                    covers,
                    pid: 10_000 + id as u32,
                    pipes: vec![],
                    started_at: wall,
                    next_fire_at: next,
                },
            ));
        }
        let failing = self.active(Kind::StoreFailure).is_some();
        if !failing && !self.store.held.is_empty() {
            // Recovered: the held writes go in, in order.
            let held = std::mem::take(&mut self.store.held);
            self.store.written.extend(held);
        }
        if mono >= self.worker.next_beat {
            self.worker.seq += 1;
            let armed = ArmedDigest::of(self.worker.arming.iter().map(|(n, a)| (n.as_str(), *a)));
            self.write(Event::Heartbeat {
                seq: self.worker.seq,
                at: wall,
                last_good_turn_at: Some(wall),
                running: self.worker.runs.len() as u32,
                store_error: failing.then(|| "disk I/O error (simulated)".to_string()),
                armed: Some(armed),
                progress: vec![],
                stats: Some(WorkerStats {
                    writes_held: self.store.held.len() as u64,
                    ..WorkerStats::default()
                }),
            });
            self.worker.next_beat = mono + HEARTBEAT;
        }
    }
}
