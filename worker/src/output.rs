//! A job's output: every byte is counted, only the last few KiB are kept,
//! so a job writing gigabytes costs counters and a small buffer.
//!
//! With `keep_output = N`, each stream of a run is also written whole to
//! `<state_dir>/output/<job>/<run id>.stdout|.stderr` (up to
//! [`FILE_MAX`] bytes each), and only the newest N runs' files are kept.
//! The writes go through tokio's file API (the blocking pool), so a slow
//! disk slows that run's capture, never the worker's loop. Each line is
//! also handed to the run's [`Tap`] as it completes (`output_log`).

use std::collections::VecDeque;

use std::path::Path;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::output_log::{LineSplitter, Tap};

/// How much of each stream's end is kept with the run.
pub(crate) const TAIL_BYTES: usize = 4096;
/// At most this much of one stream of one run goes to its output file.
pub(crate) const FILE_MAX: u64 = 64 << 20;

#[derive(Debug, Default)]
pub(crate) struct Captured {
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
pub(crate) struct Progress {
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

pub(crate) type SharedProgress = std::rc::Rc<std::cell::RefCell<Progress>>;

/// Reads `r` to EOF into a [`Captured`], noting progress, copying the
/// first `file_max` bytes to `file` when there is one, and passing each
/// line to `tap` as it completes. A read error ends the capture (what was
/// read so far is kept); a write error ends only the copy.
pub(crate) async fn capture<R: AsyncRead + Unpin>(
    mut r: R,
    progress: SharedProgress,
    mut file: Option<tokio::fs::File>,
    file_max: u64,
    tap: Option<Tap>,
) -> Captured {
    let mut c = Captured::default();
    let mut buf = vec![0u8; 16 * 1024];
    let mut lines = LineSplitter::default();
    let passed = std::cell::Cell::new(false);
    let mut pass_on = |line: &[u8]| {
        if let Some(t) = &tap {
            passed.set(t.line(line) | passed.get());
        }
    };
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Some(f) = file.as_mut() {
                    let room = file_max.saturating_sub(c.bytes).min(n as u64) as usize;
                    if room > 0 && f.write_all(&buf[..room]).await.is_err() {
                        file = None;
                    }
                }
                c.push(&buf[..n]);
                progress.borrow_mut().saw(&buf[..n]);
                lines.push(&buf[..n], &mut pass_on);
                if passed.replace(false) {
                    // Logging a chunk's lines is real work on the loop's
                    // thread, and a pipe that is always ready would let
                    // this task keep it for many chunks: the scheduler
                    // (and its heartbeat) gets a turn after each.
                    tokio::task::yield_now().await;
                }
            }
        }
    }
    lines.finish(&mut pass_on);
    if let Some(mut f) = file {
        // tokio hands writes to the blocking pool: wait until they are done.
        let _ = f.flush().await;
    }
    c
}

/// Opens the output files of run `run_id` in `dir` (created, mode 0640: the
/// output may hold what the job's env holds). `None` for a file that cannot
/// be opened, with a warning: the run goes on without it.
pub(crate) async fn open_files(
    dir: &Path,
    run_id: u64,
) -> (Option<tokio::fs::File>, Option<tokio::fs::File>) {
    if let Err(e) = tokio::fs::create_dir_all(dir).await {
        tracing::warn!(dir = %dir.display(), "cannot create the output directory: {e}");
        return (None, None);
    }
    let open = |stream: &'static str| async move {
        let path = dir.join(format!("{run_id}.{stream}"));
        match tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o640)
            .open(&path)
            .await
        {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot open the output file: {e}");
                None
            }
        }
    };
    (open("stdout").await, open("stderr").await)
}

/// Deletes the output files of all but the newest `keep` runs in `dir`
/// (files named `<run id>.stdout|.stderr`; nothing else is touched).
pub(crate) fn prune_files(dir: &Path, keep: usize) -> std::io::Result<usize> {
    let mut runs: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_name()?.to_str()?;
            let (id, ext) = name.split_once('.')?;
            (ext == "stdout" || ext == "stderr").then_some((id.parse().ok()?, path))
        })
        .collect();
    let mut ids: Vec<u64> = runs.iter().map(|(id, _)| *id).collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids.dedup();
    let Some(&oldest_kept) = ids.get(keep.saturating_sub(1)) else {
        return Ok(0);
    };
    runs.retain(|(id, _)| *id < oldest_kept);
    for (_, path) in &runs {
        std::fs::remove_file(path)?;
    }
    Ok(runs.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_files_are_capped_and_only_the_newest_runs_kept() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for id in [7u64, 8, 9, 10] {
            let (out, err) = rt.block_on(open_files(dir.path(), id));
            let data = [b'x'; 100];
            let c = rt.block_on(capture(&data[..], SharedProgress::default(), out, 60, None));
            assert_eq!(c.bytes, 100, "every byte counted");
            rt.block_on(capture(&b"e"[..], SharedProgress::default(), err, 60, None));
        }
        assert_eq!(
            std::fs::read(dir.path().join("10.stdout")).unwrap().len(),
            60,
            "capped"
        );
        assert_eq!(std::fs::read(dir.path().join("10.stderr")).unwrap(), b"e");
        std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        assert_eq!(prune_files(dir.path(), 2).unwrap(), 4);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "10.stderr",
                "10.stdout",
                "9.stderr",
                "9.stdout",
                "notes.txt"
            ]
        );
        assert_eq!(prune_files(dir.path(), 2).unwrap(), 0);
    }

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
