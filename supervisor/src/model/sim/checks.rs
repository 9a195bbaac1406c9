//! The invariants checked after every step (no false alarm, no silent
//! miss) and at the end of a seed (every scheduled fire has exactly one
//! record).

use std::{cell::RefCell, time::Duration};

use cronwarden_shared::{alert_kind::AlertKind, status::StatusReport};

use super::{
    fake_worker::{Pass, Record},
    faults::{excuses, Kind},
    World, EXCUSE_WINDOW, HEARTBEAT, KILL_MARGIN, RUN_BOUND, STALL_AFTER, STEP, UNREPORTED_AFTER,
};

impl World {
    /// A job's status shared from an earlier evaluation (see
    /// `JobObs::status`) is the one a fresh build would report now.
    pub(super) fn check_reported(&self, status: &StatusReport) {
        for (reported, (name, j)) in status.jobs.iter().zip(&self.m.jobs) {
            let mut fresh = j.clone();
            fresh.reported = RefCell::new(None);
            let fresh = fresh.status(name, reported.state);
            if **reported != *fresh {
                self.fail(format!(
                    "{name}: reported {reported:?}, built afresh {fresh:?}"
                ));
            }
        }
    }

    pub(super) fn check_excused(&self, kind: AlertKind, what: &str) {
        if kind == AlertKind::Test {
            return;
        }
        // A supervisor pause prolongs what an earlier fault left behind by
        // its length: nothing was acted on. (A backward step prolongs
        // nothing: every job here repeats within any span stepped back, so
        // the worker arms it for a second pass on the new clock.)
        let back = |from: Duration| -> Duration {
            self.faults
                .iter()
                .filter(|f| f.start >= from && f.start <= self.mono)
                .map(|f| match f.kind {
                    Kind::SupervisorPause => f.end - f.start,
                    _ => Duration::ZERO,
                })
                .sum()
        };
        let ok = self.faults.iter().any(|f| {
            // An instant fault acts at the step its start falls in.
            excuses(kind).contains(&f.kind)
                && f.start < self.mono + STEP
                && self.mono <= f.end + EXCUSE_WINDOW + back(f.start)
        });
        if !ok {
            self.fail(format!("{what}, with no fault that could cause it"));
        }
    }

    /// The detection bounds that have come by now.
    pub(super) fn check_detected(&mut self) {
        let step = STEP + Duration::from_millis(1);
        for i in 0..self.faults.len() {
            let f = self.faults[i].clone();
            let due = match f.kind {
                Kind::WorkerPause if f.end - f.start > STALL_AFTER + HEARTBEAT + step => {
                    f.start + STALL_AFTER + step
                }
                Kind::DroppedFires => {
                    let Some(first) = self.first_dropped.get(&i) else {
                        continue;
                    };
                    let from = (*first).max(self.last_jump.min(f.end));
                    let due = from + UNREPORTED_AFTER + HEARTBEAT + step;
                    if due > f.end {
                        // Re-based by a clock jump too late to be checked.
                        continue;
                    }
                    due
                }
                // The first heartbeat of the failing store says so.
                Kind::StoreFailure if f.end - f.start > HEARTBEAT + step => {
                    f.start + HEARTBEAT + step
                }
                _ => continue,
            };
            // Checked once, at the first step at or after the bound.
            if !(due <= self.mono && self.mono < due + STEP) {
                continue;
            }
            self.stats.detections_checked += 1;
            match f.kind {
                Kind::WorkerPause
                    if !self
                        .replaced
                        .iter()
                        .any(|(_, t)| *t >= f.start && *t <= due) =>
                {
                    self.fail(format!(
                        "worker paused at {:?} not replaced by {due:?}",
                        f.start
                    ));
                }
                Kind::StoreFailure => {
                    let seen = self
                        .opened
                        .iter()
                        .any(|(k, _, t)| *k == AlertKind::StoreError && *t >= f.start)
                        || self
                            .m
                            .alerts
                            .list()
                            .iter()
                            .any(|a| a.kind == AlertKind::StoreError);
                    if !seen {
                        self.fail(format!(
                            "store failing from {:?} not alerted by {due:?}",
                            f.start
                        ));
                    }
                }
                Kind::DroppedFires => {
                    let job = f.job.unwrap();
                    let seen = self.opened.iter().any(|(k, j, t)| {
                        *t >= f.start
                            && (*k == AlertKind::WorkerMisarmed
                                || (*k == AlertKind::JobLate && j.as_deref() == Some(job)))
                    }) || self
                        .m
                        .alerts
                        .list()
                        .iter()
                        .any(|a| a.kind == AlertKind::JobLate && a.job.as_deref() == Some(job));
                    if !seen {
                        self.fail(format!(
                            "fires of {job} dropped from {:?} not alerted by {due:?}",
                            f.start
                        ));
                    }
                }
                _ => {}
            }
        }
        // A hung run is killed within its bound of when its line was read.
        for r in &self.worker.runs {
            if r.ends.is_some() {
                continue;
            }
            if let Some(read) = self.read_fire.get(&r.id) {
                if self.mono > *read + RUN_BOUND + KILL_MARGIN + step
                    && self.active(Kind::SupervisorPause).is_none()
                {
                    self.fail(format!("hung run {} of {} not killed", r.id, r.job));
                }
            }
        }
    }

    /// Every scheduled time from each job's first arming up to its
    /// current one ends in exactly one record per pass over it: the
    /// records of a job's pass, in order, tile its schedule from where the
    /// pass started to the arming it left (the next pass's, or the current
    /// one) with no gap and no overlap, and nothing is still held once the
    /// store has recovered. A second pass (the clock stepped back over a
    /// span the schedule repeats in) starts before the pass it follows
    /// left off.
    pub(super) fn check_exactly_once(&mut self) {
        if self.active(Kind::StoreFailure).is_none() && !self.store.held.is_empty() {
            self.fail(format!(
                "{} records still held after the store recovered",
                self.store.held.len()
            ));
        }
        let all: Vec<Record> = self
            .store
            .written
            .iter()
            .chain(&self.store.held)
            .cloned()
            .collect();
        for (name, first) in self.store.first_armed.clone() {
            let schedule = self.m.jobs[&name].spec.schedule.clone();
            let passes: Vec<Pass> = self
                .store
                .passes
                .iter()
                .filter(|p| p.job == name)
                .cloned()
                .collect();
            let mut start = first;
            for pass in 0..=passes.len() {
                let (left, next) = match passes.get(pass) {
                    Some(p) => (p.left, Some(p.to)),
                    None => (self.worker.arming.get(&name).copied().flatten(), None),
                };
                let mut recs: Vec<&Record> = all
                    .iter()
                    .filter(|r| r.job == name && r.pass == pass)
                    .collect();
                recs.sort_by_key(|r| r.first);
                let mut expect = start;
                for r in &recs {
                    if Some(r.first) != expect {
                        self.fail(format!(
                            "job {name}, pass {pass}: a record starts at {}, the ledger expected {:?} \
                             (a scheduled time missed or recorded twice)",
                            r.first,
                            expect.map(|t| t.to_string())
                        ));
                    }
                    expect = schedule.next_after(r.last, Some(r.last));
                }
                if expect != left {
                    self.fail(format!(
                        "job {name}, pass {pass}: records end before {:?}, but the worker armed it for {:?}",
                        expect.map(|t| t.to_string()),
                        left.map(|t| t.to_string())
                    ));
                }
                if let Some(to) = next {
                    if left.is_some_and(|l| l <= to) {
                        self.fail(format!(
                            "job {name}: a second pass from {to} does not go back before {:?}",
                            left.map(|t| t.to_string())
                        ));
                    }
                }
                start = next;
                self.stats.records += recs.len() as u64;
            }
        }
    }
}
