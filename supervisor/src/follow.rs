//! The recent output lines of runs, for `cronwarden logs -f`.
//!
//! The worker sends each line of a run's output it passes on (within its
//! output log budget) as an `output` event; the loop keeps the newest
//! [`RING_LINES`] (at most [`RING_BYTES`]) of each run, for at most
//! [`RUNS`] runs, the oldest run's ring dropped first. A follower polls
//! with the sequence number it has seen and gets what came after, and
//! whether the run still runs: the worker sends a run's `finish` after its
//! last line, so once the model has the run finished, the ring is
//! complete. Bounded: memory is at most `RUNS × RING_BYTES`, whatever
//! the jobs write. Pure: no clock, no I/O.

use std::collections::{BTreeMap, VecDeque};

use cronwarden_shared::{
    status::{FollowLine, FollowReply},
    wire::OutputStream,
};

/// Lines kept per run.
pub(crate) const RING_LINES: usize = 1000;
/// Bytes of lines kept per run.
pub(crate) const RING_BYTES: usize = 256 * 1024;
/// Runs whose lines are kept.
pub(crate) const RUNS: usize = 64;

#[derive(Debug, Default)]
pub(crate) struct Rings {
    runs: BTreeMap<u64, Ring>,
    /// Run ids by when their first line came, oldest first.
    order: VecDeque<u64>,
}

#[derive(Debug)]
struct Ring {
    job: String,
    /// The sequence number the next line gets (1 for the first).
    next: u64,
    lines: VecDeque<FollowLine>,
    bytes: usize,
}

impl Rings {
    /// Keeps one line of `run_id`.
    pub(crate) fn push(
        &mut self,
        job: &str,
        run_id: u64,
        stream: OutputStream,
        line: String,
        held_back: u64,
    ) {
        if !self.runs.contains_key(&run_id) {
            while self.order.len() >= RUNS {
                if let Some(old) = self.order.pop_front() {
                    self.runs.remove(&old);
                }
            }
            self.order.push_back(run_id);
        }
        let ring = self.runs.entry(run_id).or_insert_with(|| Ring {
            job: job.to_string(),
            next: 1,
            lines: VecDeque::new(),
            bytes: 0,
        });
        if ring.job != job {
            // A run id names one run of one job; a line that says
            // otherwise is the worker's confusion, not a new run.
            return;
        }
        ring.bytes += line.len();
        ring.lines.push_back(FollowLine {
            seq: ring.next,
            stream,
            line,
            held_back,
        });
        ring.next += 1;
        while ring.lines.len() > RING_LINES || ring.bytes > RING_BYTES {
            match ring.lines.pop_front() {
                Some(l) => ring.bytes -= l.line.len(),
                None => break,
            }
        }
    }

    /// The lines of `job`'s run `run_id` after sequence number `after`.
    pub(crate) fn read(&self, job: &str, run_id: u64, after: u64, running: bool) -> FollowReply {
        let ring = self.runs.get(&run_id).filter(|r| r.job == job);
        let lines: Vec<FollowLine> = ring
            .map(|r| r.lines.iter().filter(|l| l.seq > after).cloned().collect())
            .unwrap_or_default();
        let first_kept = ring
            .and_then(|r| r.lines.front().map(|l| l.seq))
            .unwrap_or(after + 1);
        FollowReply {
            job: job.to_string(),
            run_id,
            running,
            missed: first_kept.saturating_sub(after + 1),
            next: ring.map_or(after, |r| (r.next - 1).max(after)),
            lines,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(r: &FollowReply) -> Vec<u64> {
        r.lines.iter().map(|l| l.seq).collect()
    }

    #[test]
    fn a_follower_gets_what_came_after_and_what_it_missed() {
        let mut rings = Rings::default();
        for i in 0..RING_LINES + 5 {
            rings.push("a", 7, OutputStream::Stdout, format!("line {i}"), 0);
        }
        let all = rings.read("a", 7, 0, true);
        assert_eq!(all.lines.len(), RING_LINES);
        assert_eq!(all.missed, 5, "the oldest five fell out of the ring");
        assert_eq!(all.next, (RING_LINES + 5) as u64);
        assert_eq!(all.lines[0].line, "line 5");
        rings.push("a", 7, OutputStream::Stderr, "late".into(), 3);
        let more = rings.read("a", 7, all.next, false);
        assert_eq!(seqs(&more), [all.next + 1]);
        assert_eq!((more.missed, more.lines[0].held_back), (0, 3));
        assert!(!more.running);
        let none = rings.read("a", 7, more.next, false);
        assert!(none.lines.is_empty());
        assert_eq!(none.next, more.next);
        let other = rings.read("b", 7, 0, false);
        assert!(other.lines.is_empty(), "run 7 is job a's, not b's");
    }

    #[test]
    fn memory_is_bounded_by_runs_and_bytes() {
        let mut rings = Rings::default();
        let big = "x".repeat(100 * 1024);
        for run in 0..(RUNS as u64 + 10) {
            for _ in 0..5 {
                rings.push("a", run, OutputStream::Stdout, big.clone(), 0);
            }
        }
        assert_eq!(rings.runs.len(), RUNS);
        assert!(!rings.runs.contains_key(&0), "the oldest runs went first");
        assert!(rings.runs.values().all(|r| r.bytes <= RING_BYTES));
        assert_eq!(rings.read("a", 0, 0, false).lines.len(), 0);
    }
}
