//! A job's output: every byte is counted, only the last few KiB are kept,
//! so a job writing gigabytes costs counters and a small buffer.

use std::collections::VecDeque;

use tokio::io::{AsyncRead, AsyncReadExt};

/// How much of each stream's end is kept with the run.
pub const TAIL_BYTES: usize = 4096;

#[derive(Debug, Default)]
pub struct Captured {
    pub bytes: u64,
    tail: VecDeque<u8>,
}

impl Captured {
    pub fn push(&mut self, chunk: &[u8]) {
        self.bytes += chunk.len() as u64;
        let keep = chunk.len().min(TAIL_BYTES);
        let chunk = &chunk[chunk.len() - keep..];
        let overflow = (self.tail.len() + chunk.len()).saturating_sub(TAIL_BYTES);
        self.tail.drain(..overflow);
        self.tail.extend(chunk);
    }

    /// The kept tail as text (invalid UTF-8 replaced).
    pub fn tail(&self) -> String {
        let (a, b) = self.tail.as_slices();
        let mut v = Vec::with_capacity(a.len() + b.len());
        v.extend_from_slice(a);
        v.extend_from_slice(b);
        String::from_utf8_lossy(&v).into_owned()
    }
}

/// What a run has written so far, shared with the scheduler so the
/// heartbeat can say when a stuck run last wrote anything, and what.
#[derive(Debug, Default)]
pub struct Progress {
    pub bytes: u64,
    pub last_output_at: Option<jiff::Timestamp>,
    pub last_line: String,
}

impl Progress {
    fn saw(&mut self, chunk: &[u8]) {
        self.bytes += chunk.len() as u64;
        self.last_output_at = Some(jiff::Timestamp::now());
        let text = String::from_utf8_lossy(chunk);
        let trimmed = text.trim_end_matches(['\n', '\r']);
        if let Some(line) = trimmed.rsplit('\n').next().filter(|l| !l.is_empty()) {
            self.last_line = line.chars().take(200).collect();
        }
    }
}

pub type SharedProgress = std::rc::Rc<std::cell::RefCell<Progress>>;

/// Reads `r` to EOF into a [`Captured`], noting progress. A read error ends
/// the capture (what was read so far is kept).
pub async fn capture<R: AsyncRead + Unpin>(mut r: R, progress: SharedProgress) -> Captured {
    let mut c = Captured::default();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return c,
            Ok(n) => {
                c.push(&buf[..n]);
                progress.borrow_mut().saw(&buf[..n]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_everything_keeps_the_end() {
        let mut c = Captured::default();
        for _ in 0..1000 {
            c.push(b"0123456789");
        }
        c.push(b"END");
        assert_eq!(c.bytes, 10_003);
        let t = c.tail();
        assert_eq!(t.len(), TAIL_BYTES);
        assert!(t.ends_with("789END"));
        let mut big = Captured::default();
        big.push(&vec![b'x'; TAIL_BYTES * 3]);
        assert_eq!(big.bytes, (TAIL_BYTES * 3) as u64);
        assert_eq!(big.tail().len(), TAIL_BYTES);
    }
}
