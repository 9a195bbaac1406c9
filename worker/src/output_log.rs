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
//! everything. The lines for followers use only the spare half of the
//! event queue (`EventTx::send_spare`): a supervisor that stops reading
//! loses output lines (counted, and said to the follower) before it could
//! lose a `finish`.
//!
//! A line is cut at [`LINE_MAX`] bytes (the rest follows as further
//! lines), invalid UTF-8 is replaced and control characters other than tab
//! are escaped, so a job cannot forge log lines or terminal sequences; a
//! line with a NUL byte is binary and logged as its size.

use std::{cell::RefCell, collections::BTreeMap, time::Duration};

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
    /// or a `\r` before it). A line is handed on from the chunk itself
    /// when it can be: only the start of a line split across reads is
    /// copied (a job writing gigabytes costs a scan, not a copy).
    pub fn push(&mut self, mut chunk: &[u8], line: &mut impl FnMut(&[u8])) {
        while !chunk.is_empty() {
            let room = LINE_MAX - self.partial.len();
            // A newline right after `room` bytes still ends a line of
            // exactly LINE_MAX.
            let window = &chunk[..chunk.len().min(room + 1)];
            match memchr::memchr(b'\n', window) {
                Some(i) => {
                    let whole = if self.partial.is_empty() {
                        &chunk[..i]
                    } else {
                        self.partial.extend_from_slice(&chunk[..i]);
                        &self.partial[..]
                    };
                    line(whole.strip_suffix(b"\r").unwrap_or(whole));
                    self.partial.clear();
                    chunk = &chunk[i + 1..];
                }
                None if chunk.len() > room => {
                    if self.partial.is_empty() {
                        line(&chunk[..room]);
                    } else {
                        self.partial.extend_from_slice(&chunk[..room]);
                        line(&self.partial);
                        self.partial.clear();
                    }
                    chunk = &chunk[room..];
                }
                None => {
                    self.partial.extend_from_slice(chunk);
                    return;
                }
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
/// characters other than tab escaped (`\u{1b}`); a line with a NUL byte is
/// binary data, said by its size (escaping it would make each byte five,
/// and nobody reads it in a log).
pub(crate) fn printable(bytes: &[u8]) -> String {
    if memchr::memchr(0, bytes).is_some() {
        return format!("[{} bytes of binary output]", bytes.len());
    }
    let text = String::from_utf8_lossy(bytes);
    if !text.chars().any(|c| c.is_control() && c != '\t') {
        return text.into_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() && c != '\t' {
            out.extend(c.escape_default());
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
    /// Passes one line on, within the budget; whether it was.
    pub fn line(&self, bytes: &[u8]) -> bool {
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
        let Some(held_back) = admitted else {
            return false;
        };
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
        let sent = self.events.send_spare(Event::Output {
            job: self.job.clone(),
            run_id: self.run_id,
            stream: self.stream,
            line,
            held_back,
        });
        if !sent {
            // Told to the follower with the next line that gets through.
            BOOK.with_borrow_mut(|b| {
                b.held
                    .entry(self.run_id)
                    .or_insert_with(|| Held {
                        job: self.job.clone(),
                        ..Held::default()
                    })
                    .unsent += held_back + 1;
            });
        }
        true
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

    /// The lines of a whole stream, cut the plain way.
    fn oracle(stream: &[u8]) -> Vec<Vec<u8>> {
        let mut out = vec![];
        let mut segments: Vec<&[u8]> = stream.split(|b| *b == b'\n').collect();
        let last = segments.pop().unwrap_or_default();
        let pieces = |seg: &[u8]| -> Vec<Vec<u8>> {
            if seg.is_empty() {
                return vec![vec![]];
            }
            seg.chunks(LINE_MAX).map(<[u8]>::to_vec).collect()
        };
        for seg in segments {
            let mut p = pieces(seg);
            let end = p.last_mut().unwrap();
            if end.last() == Some(&b'\r') {
                end.pop();
            }
            out.extend(p);
        }
        if !last.is_empty() {
            out.extend(pieces(last));
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn any_chunking_cuts_the_lines_the_oracle_cuts(
            parts in proptest::collection::vec(
                (0usize..6000, proptest::sample::select(vec![&b"\n"[..], b"\r\n", b"\r", b""])),
                0..6,
            ),
            cuts in proptest::collection::vec(1usize..9000, 1..8),
        ) {
            let mut stream = vec![];
            for (n, end) in &parts {
                stream.extend(std::iter::repeat_n(b'x', *n));
                stream.extend_from_slice(end);
            }
            let mut chunks = vec![];
            let mut rest = &stream[..];
            for c in cuts.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (a, b) = rest.split_at((*c).min(rest.len()));
                chunks.push(a);
                rest = b;
            }
            proptest::prop_assert_eq!(lines_of(&chunks), oracle(&stream));
        }
    }

    #[test]
    fn control_characters_are_escaped_tabs_kept() {
        assert_eq!(printable(b"a\tb"), "a\tb");
        assert_eq!(printable(b"\x1b[31mred\r"), "\\u{1b}[31mred\\r");
        assert_eq!(printable(b"caf\xc3\xa9 \xff"), "café \u{fffd}");
        assert_eq!(printable(b"ab\0c"), "[4 bytes of binary output]");
    }
}
