//! The fault schedule of a seed: which faults, when, for how long, and
//! which alerts each can excuse.

use std::time::Duration;

use cronwarden_shared::alert_kind::AlertKind;
use jiff::SignedDuration;

use super::LENGTH;

/// SplitMix64: small, fast, and the same everywhere.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub(super) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    pub(super) fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.range(lo, hi))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Kind {
    WallForward,
    WallBackward,
    Suspend,
    SupervisorPause,
    WorkerPause,
    WorkerDeath,
    DelayedLines,
    DroppedFires,
    HungRun,
    /// The store fails (every write held), then recovers.
    StoreFailure,
}

pub(super) const KINDS: [Kind; 10] = [
    Kind::WallForward,
    Kind::WallBackward,
    Kind::Suspend,
    Kind::SupervisorPause,
    Kind::WorkerPause,
    Kind::WorkerDeath,
    Kind::DelayedLines,
    Kind::DroppedFires,
    Kind::HungRun,
    Kind::StoreFailure,
];

#[derive(Debug, Clone)]
pub(super) struct Fault {
    pub(super) kind: Kind,
    /// On the fake monotonic clock, since the start.
    pub(super) start: Duration,
    pub(super) end: Duration,
    /// The wall clock's step, for steps and suspends.
    pub(super) by: SignedDuration,
    pub(super) job: Option<&'static str>,
}

pub(super) const JOBS: [&str; 3] = ["every", "five", "sec"];

/// The schedule of one seed: hiding faults one after another with healthy
/// gaps between them, clock steps and suspends anywhere.
pub(super) fn schedule(rng: &mut Rng) -> Vec<Fault> {
    let mut out = vec![];
    let mut t = Duration::from_secs(rng.range(3, 10));
    while t + Duration::from_secs(25) < LENGTH {
        let kind = KINDS[rng.range(3, 9) as usize];
        let (len, job) = match kind {
            Kind::SupervisorPause => (rng.ms(500, 30_000), None),
            Kind::WorkerPause => (rng.ms(500, 9_000), None),
            Kind::WorkerDeath => (Duration::ZERO, None),
            Kind::DelayedLines => (rng.ms(200, 6_000), None),
            Kind::DroppedFires => (
                Duration::from_secs(20),
                Some(JOBS[rng.range(0, 2) as usize]),
            ),
            Kind::HungRun => (
                Duration::from_secs(20),
                Some(JOBS[rng.range(0, 2) as usize]),
            ),
            Kind::StoreFailure => (rng.ms(500, 15_000), None),
            _ => unreachable!(),
        };
        out.push(Fault {
            kind,
            start: t,
            end: t + len,
            by: SignedDuration::ZERO,
            job,
        });
        t += len + Duration::from_secs(rng.range(5, 25));
    }
    for _ in 0..rng.range(0, 3) {
        let at = rng.ms(1_000, LENGTH.as_millis() as u64 - 1_000);
        let kind = KINDS[rng.range(0, 2) as usize];
        let by = match kind {
            Kind::WallForward => {
                SignedDuration::from_millis(rng.range(1_500, 3 * 3_600_000) as i64)
            }
            Kind::WallBackward => -SignedDuration::from_millis(rng.range(1_500, 900_000) as i64),
            _ => SignedDuration::from_millis(rng.range(5_000, 2 * 3_600_000) as i64),
        };
        out.push(Fault {
            kind,
            start: at,
            end: at,
            by,
            job: None,
        });
    }
    out.sort_by_key(|f| f.start);
    out
}

pub(super) fn name(k: Kind) -> &'static str {
    match k {
        Kind::WallForward => "wall_forward",
        Kind::WallBackward => "wall_backward",
        Kind::Suspend => "suspend",
        Kind::SupervisorPause => "supervisor_pause",
        Kind::WorkerPause => "worker_pause",
        Kind::WorkerDeath => "worker_death",
        Kind::DelayedLines => "delayed_lines",
        Kind::DroppedFires => "dropped_fires",
        Kind::HungRun => "hung_run",
        Kind::StoreFailure => "store_failure",
    }
}

/// Fault kinds that can cause an alert of `kind` (or a replacement).
pub(super) fn excuses(kind: AlertKind) -> &'static [Kind] {
    use Kind::*;
    match kind {
        AlertKind::WorkerStalled | AlertKind::WorkerHeartbeatOverdue | AlertKind::WorkerFailing => {
            &[WorkerPause, WorkerDeath, DelayedLines]
        }
        // A worker that keeps misarming a job after a re-arm (it drops
        // fires) is replaced too.
        AlertKind::WorkerDown | AlertKind::WorkerRestarted | AlertKind::WorkerCrashLoop => {
            &[WorkerPause, WorkerDeath, DelayedLines, DroppedFires]
        }
        AlertKind::JobLate => &[WorkerPause, WorkerDeath, DelayedLines, DroppedFires],
        AlertKind::WorkerMisarmed | AlertKind::JobMisarmed => &[DroppedFires],
        // A worker replaced (paused, its lines held back past stall_after,
        // or misarming) loses its runs in flight.
        AlertKind::JobLost => &[WorkerPause, WorkerDeath, DelayedLines, DroppedFires],
        AlertKind::JobFailing => &[
            WorkerPause,
            WorkerDeath,
            DelayedLines,
            HungRun,
            DroppedFires,
        ],
        AlertKind::JobTimeout | AlertKind::JobOverlapStreak => &[HungRun],
        AlertKind::ClockJumped => &[WallForward, WallBackward, Suspend],
        AlertKind::StoreError => &[StoreFailure],
        _ => &[],
    }
}
