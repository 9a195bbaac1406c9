//! A bounded queue between the supervisor's loop and one delivery thread
//! (alert sinks, job pings, the host heartbeat).
//!
//! Pushing never blocks: a full queue drops its oldest item and says so,
//! so a dead receiver costs memory bounded by the capacity and never time
//! on the loop. The thread blocks in [`BoundedQueue::pop`]; after
//! [`BoundedQueue::close`] it drains what is left, then gets `None`.

use std::{
    collections::VecDeque,
    sync::{Arc, Condvar, Mutex, MutexGuard},
    time::Instant,
};

/// What [`BoundedQueue::pop_until`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Popped<T> {
    Item(T),
    /// The deadline passed with the queue empty.
    TimedOut,
    /// Closed and drained.
    Closed,
}

struct Inner<T> {
    items: VecDeque<T>,
    closed: bool,
}

pub struct BoundedQueue<T> {
    inner: Arc<(Mutex<Inner<T>>, Condvar)>,
    cap: usize,
}

impl<T> Clone for BoundedQueue<T> {
    fn clone(&self) -> Self {
        BoundedQueue {
            inner: self.inner.clone(),
            cap: self.cap,
        }
    }
}

impl<T> BoundedQueue<T> {
    pub fn new(cap: usize) -> Self {
        BoundedQueue {
            inner: Arc::new((
                Mutex::new(Inner {
                    items: VecDeque::new(),
                    closed: false,
                }),
                Condvar::new(),
            )),
            cap: cap.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        self.inner.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `item`; returns true when the oldest item was dropped for it.
    pub fn push(&self, item: T) -> bool {
        let mut q = self.lock();
        let dropped = q.items.len() >= self.cap;
        if dropped {
            q.items.pop_front();
        }
        q.items.push_back(item);
        drop(q);
        self.inner.1.notify_one();
        dropped
    }

    /// The next item, waiting for one; `None` once closed and drained.
    pub fn pop(&self) -> Option<T> {
        match self.pop_until(None) {
            Popped::Item(i) => Some(i),
            _ => None,
        }
    }

    /// The next item, waiting for one until `deadline` at most (for ever
    /// when `None`): a thread that must also act at a time of its own
    /// (re-sending what failed) waits here.
    pub fn pop_until(&self, deadline: Option<Instant>) -> Popped<T> {
        let mut q = self.lock();
        loop {
            if let Some(i) = q.items.pop_front() {
                return Popped::Item(i);
            }
            if q.closed {
                return Popped::Closed;
            }
            q = match deadline {
                None => self.inner.1.wait(q).unwrap_or_else(|p| p.into_inner()),
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Popped::TimedOut;
                    }
                    self.inner
                        .1
                        .wait_timeout(q, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }

    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Looks at the queued items in place (tests check which were dropped).
    #[cfg(test)]
    pub fn inspect<R>(&self, f: impl FnOnce(&VecDeque<T>) -> R) -> R {
        f(&self.lock().items)
    }

    pub fn close(&self) {
        self.lock().closed = true;
        self.inner.1.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_drops_the_oldest_and_close_drains() {
        let q = BoundedQueue::new(2);
        assert!(!q.push(1));
        assert!(!q.push(2));
        assert!(q.push(3), "the third push drops the oldest");
        q.close();
        assert_eq!((q.pop(), q.pop(), q.pop()), (Some(2), Some(3), None));
    }

    #[test]
    fn pop_until_times_out_on_an_empty_queue() {
        let q: BoundedQueue<u8> = BoundedQueue::new(1);
        let at = Instant::now() + std::time::Duration::from_millis(20);
        assert_eq!(q.pop_until(Some(at)), Popped::TimedOut);
        assert!(Instant::now() >= at);
        q.push(7);
        assert_eq!(
            q.pop_until(Some(at)),
            Popped::Item(7),
            "an item beats a past deadline"
        );
    }

    #[test]
    fn pop_waits_for_a_push_from_another_thread() {
        let q = BoundedQueue::new(4);
        let q2 = q.clone();
        let t = std::thread::spawn(move || q2.pop());
        q.push("x");
        assert_eq!(t.join().unwrap(), Some("x"));
    }
}
