//! A job's output, line by line as it arrives: into cronwarden's log
//! (`log_output`, on by default, as supercronic does) and to the supervisor
//! for `cronwarden logs -f`.
//!
//! The worker logs the lines itself, as it logs everything else: straight
//! to the stderr it inherited from the supervisor (the journal, a
//! container's log) and to the daily files, with the run's `job`, `run_id`
//! and `stream` as fields. A job can write far faster than any log can
//! take, so every line passed on is charged to one budget per worker
//! ([`LogBudget`], [`BUDGET_LINES`] per [`BUDGET_WINDOW`], shared by all
//! runs): a line over the budget is neither logged nor sent, only counted
//! against its run, and the count is logged (a warning naming job and run)
//! with the next line let through and when the run ends. The run's record
//! still counts every byte and keeps the tails; `keep_output` still keeps
//! everything.
//!
//! A line is cut at [`LINE_MAX`] bytes (the rest follows as further
//! lines), invalid UTF-8 is replaced and control characters other than tab
//! are escaped, so a job cannot forge log lines or terminal sequences.

use std::{cell::RefCell, collections::BTreeMap, fmt::Write as _, time::Duration};

use cronwarden_shared::{
    log_budget::LogBudget,
    wire::{Event, OutputStream},
};
use tokio::time::Instant;

use crate::events::EventTx;

/// The longest line passed on, in bytes; a longer one is cut into pieces.
pub(crate) const LINE_MAX: usize = 4096;
/// At most this many output lines per [`BUDGET_WINDOW`], all runs together.
pub(crate) const BUDGET_LINES: u32 = 2000;
pub(crate) const BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// Cuts a byte stream into lines of at most [`LINE_MAX`] bytes, holding at
/// most one partial line.
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Feeds a chunk; `line` gets every line it completes (without `\n`
    /// or a `\r` before it).
    pub fn push(&mut self, chunk: &[u8], line: &mut impl FnMut(&[u8])) {
        for piece in chunk.split_inclusive(|b| *b == b'\n') {
            let ends = piece.last() == Some(&b'\n');
            let body = if ends {
                &piece[..piece.len() - 1]
            } else {
                piece
            };
            self.partial.extend_from_slice(body);
            while self.partial.len() > LINE_MAX {
                line(&self.partial[..LINE_MAX]);
                self.partial.drain(..LINE_MAX);
            }
            if ends {
                if self.partial.last() == Some(&b'\r') {
                    self.partial.pop();
                }
                line(&self.partial);
                self.partial.clear();
            }
        }
    }

    /// The last line, when the stream ended without a newline.
    pub fn finish(&mut self, line: &mut impl FnMut(&[u8])) {
        if !self.partial.is_empty() {
            line(&self.partial);
            self.partial.clear();
        }
    }
}

/// A line as it goes to the log: invalid UTF-8 replaced, control
/// characters other than tab escaped (`\u{1b}`).
pub(crate) fn printable(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if !text.chars().any(|c| c.is_control() && c != '\t') {
        return text.into_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() && c != '\t' {
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Which run a stream belongs to, and where its lines go.
#[derive(Clone)]
pub(crate) struct Tap {
    pub job: String,
    pub run_id: u64,
    pub stream: OutputStream,
    /// The job's `log_output`.
    pub log: bool,
    pub events: EventTx,
}

/// The worker's budget and what it held back, per run.
struct Book {
    budget: LogBudget,
    /// Lines held back per run since the last report: (job, for the log,
    /// for the follow ring).
    held: BTreeMap<u64, Held>,
}

#[derive(Default)]
struct Held {
    job: String,
    unlogged: u64,
    unsent: u64,
}

thread_local! {
    // One budget per worker: its runs' output is read on the loop's one
    // thread (a current-thread runtime), so this is the worker's only one.
    static BOOK: RefCell<Book> = RefCell::new(Book {
        budget: LogBudget::new(BUDGET_LINES, BUDGET_WINDOW),
        held: BTreeMap::new(),
    });
}

impl Tap {
    /// Passes one line on, within the budget.
    pub fn line(&self, bytes: &[u8]) {
        let admitted = BOOK.with_borrow_mut(|b| match b.budget.admit(Instant::now()) {
            Some(suppressed) => {
                if suppressed > 0 {
                    report_held(&mut b.held, None);
                }
                Some(
                    b.held
                        .get_mut(&self.run_id)
                        .map_or(0, |h| std::mem::take(&mut h.unsent)),
                )
            }
            None => {
                let h = b.held.entry(self.run_id).or_insert_with(|| Held {
                    job: self.job.clone(),
                    ..Held::default()
                });
                h.unlogged += 1;
                h.unsent += 1;
                None
            }
        });
        let Some(held_back) = admitted else { return };
        let line = printable(bytes);
        if self.log {
            tracing::info!(
                target: "job_output",
                job = %self.job,
                run_id = self.run_id,
                stream = self.stream.as_str(),
                "{line}"
            );
        }
        self.events.send(Event::Output {
            job: self.job.clone(),
            run_id: self.run_id,
            stream: self.stream,
            line,
            held_back,
        });
    }
}

/// The run ended: says what of its output was held back, if anything.
pub(crate) fn run_ended(run_id: u64) {
    BOOK.with_borrow_mut(|b| report_held(&mut b.held, Some(run_id)));
}

/// Logs the held-back counts (of one run, or all) and forgets those
/// runs' log counts; a run's entry goes once nothing is owed to anyone.
fn report_held(held: &mut BTreeMap<u64, Held>, only: Option<u64>) {
    for (run_id, h) in held.iter_mut() {
        if only.is_some_and(|o| o != *run_id) || h.unlogged == 0 {
            continue;
        }
        tracing::warn!(
            job = %h.job,
            run_id = *run_id,
            held_back = h.unlogged,
            "{} output lines of this run held back by the output log budget \
             (at most {BUDGET_LINES} lines per {}s); the run's record counts every byte",
            h.unlogged,
            BUDGET_WINDOW.as_secs()
        );
        h.unlogged = 0;
    }
    match only {
        Some(id) => {
            held.remove(&id);
        }
        None => held.retain(|_, h| h.unsent > 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut s = LineSplitter::default();
        let mut out = vec![];
        for c in chunks {
            s.push(c, &mut |l| out.push(l.to_vec()));
        }
        s.finish(&mut |l| out.push(l.to_vec()));
        out
    }

    #[test]
    fn lines_are_cut_at_newlines_across_chunks_and_at_the_limit() {
        assert_eq!(
            lines_of(&[b"a\nb", b"c\r\n\nd"]),
            [&b"a"[..], b"bc", b"", b"d"]
        );
        let long = vec![b'x'; LINE_MAX * 2 + 10];
        let mut with_nl = long.clone();
        with_nl.push(b'\n');
        let got = lines_of(&[&with_nl[..100], &with_nl[100..]]);
        assert_eq!(
            got.iter().map(Vec::len).collect::<Vec<_>>(),
            [LINE_MAX, LINE_MAX, 10]
        );
        let exact = vec![b'y'; LINE_MAX];
        let got = lines_of(&[&exact, b"\n"]);
        assert_eq!(got, [exact], "a line of exactly the limit is one line");
        assert!(lines_of(&[b""]).is_empty());
    }

    #[test]
    fn control_characters_are_escaped_tabs_kept() {
        assert_eq!(printable(b"a\tb"), "a\tb");
        assert_eq!(printable(b"\x1b[31mred\r"), "\\u{1b}[31mred\\r");
        assert_eq!(printable(b"caf\xc3\xa9 \xff"), "café \u{fffd}");
    }
}
