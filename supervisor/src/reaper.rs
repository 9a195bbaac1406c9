//! The one reaping owner's registry. The supervisor reaps every child with
//! `waitpid(-1)` (it must, as a subreaper); a thread that starts a child of
//! its own (an `exec` alert sink) registers the pid here and receives the
//! exit status from the reaper instead of calling `wait` itself, which
//! would race the reaper for it.

use std::{
    collections::HashMap,
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

enum Entry {
    Waiting(mpsc::Sender<i32>),
    /// Reaped before anyone asked (the child was quicker than its
    /// registration); kept briefly.
    Exited(i32, Instant),
}

#[derive(Clone, Default)]
pub struct Reaper(Arc<Mutex<HashMap<u32, Entry>>>);

const KEEP_UNCLAIMED: Duration = Duration::from_secs(30);

impl Reaper {
    /// Asks for `pid`'s exit status (a wait code: exit status or 128+signal).
    pub fn watch(&self, pid: u32) -> mpsc::Receiver<i32> {
        let (tx, rx) = mpsc::channel();
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match map.remove(&pid) {
            Some(Entry::Exited(code, _)) => {
                let _ = tx.send(code);
            }
            _ => {
                map.insert(pid, Entry::Waiting(tx));
            }
        }
        rx
    }

    /// Called by the reaper for every child it reaps that is not the worker.
    pub fn reaped(&self, pid: u32, code: i32) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match map.remove(&pid) {
            Some(Entry::Waiting(tx)) => {
                let _ = tx.send(code);
            }
            _ => {
                // Unclaimed (an orphaned job process, mostly): remember it
                // briefly in case a registration is on its way.
                map.retain(
                    |_, e| !matches!(e, Entry::Exited(_, at) if at.elapsed() > KEEP_UNCLAIMED),
                );
                if map.len() < 10_000 {
                    map.insert(pid, Entry::Exited(code, Instant::now()));
                }
            }
        }
    }
}
