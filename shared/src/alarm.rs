//! A loop's one timer, kept by the kernel: a timerfd in the runtime's own
//! poll, armed for the loop's next deadline. A wait of any length is one
//! wake-up, at the instant asked for. tokio's timer wheel, which the loops
//! used before, wakes a long sleeper at every level it cascades through
//! (the idle worker woke two or three times for each one-second heartbeat)
//! and rounds each deadline up to its next millisecond; an idle process's
//! CPU is mostly its wake-ups (issue 18).
//!
//! The clock is CLOCK_MONOTONIC, the clock of `std::time::Instant` and
//! tokio's `Instant` on Linux: it stops while the host is suspended, as
//! the loops' other timers do, and a step of the wall clock does not move
//! it.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Duration,
};

use tokio::{io::unix::AsyncFd, time::Instant};

/// A timerfd registered with the current runtime.
pub struct Alarm {
    fd: AsyncFd<OwnedFd>,
}

impl Alarm {
    /// A disarmed alarm; must be made inside a runtime with I/O enabled.
    pub fn new() -> io::Result<Alarm> {
        // SAFETY: timerfd_create takes integer arguments only; the
        // descriptor it returns is ours alone, owned from here on.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` was just created and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: the OwnedFd is valid and open, and stays so, unchanged,
        // for as long as the AsyncFd owns it.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Alarm { fd })
    }

    /// Returns at `deadline` (at once if it has passed); never for `None`.
    /// Cancel-safe: a wait dropped before its deadline leaves nothing that
    /// ends a later one early (each call arms the timer anew, which resets
    /// its count of expirations).
    pub async fn sleep_until(&mut self, deadline: Option<Instant>) {
        let Some(deadline) = deadline else {
            return std::future::pending().await;
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        if self.arm(left).is_err() {
            // Cannot happen with a valid descriptor and a finite time;
            // should it, the runtime's own timer still keeps the deadline.
            return tokio::time::sleep_until(deadline).await;
        }
        loop {
            let Ok(mut ready) = self.fd.readable().await else {
                return tokio::time::sleep_until(deadline).await;
            };
            let mut count = [0u8; 8];
            // SAFETY: reads at most 8 bytes into a buffer of 8.
            let n = unsafe {
                libc::read(
                    self.fd.get_ref().as_raw_fd(),
                    count.as_mut_ptr().cast(),
                    count.len(),
                )
            };
            if n == 8 {
                return;
            }
            // Readiness left over from an earlier arming that was not
            // waited out: the timer has not expired since it was re-armed.
            ready.clear_ready();
            if Instant::now() >= deadline {
                return;
            }
        }
    }

    /// Arms the timer `after` from now, once (no interval).
    fn arm(&self, after: Duration) -> io::Result<()> {
        let value = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs().min(i64::MAX as u64 / 2) as libc::time_t,
                // Never all zero, which would disarm it.
                tv_nsec: libc::c_long::from(after.subsec_nanos().max(1)),
            },
        };
        // SAFETY: `value` is a valid itimerspec; the old value is not asked for.
        let r = unsafe {
            libc::timerfd_settime(
                self.fd.get_ref().as_raw_fd(),
                0,
                &value,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn returns_at_its_deadline_not_before() {
        rt().block_on(async {
            let mut alarm = Alarm::new().unwrap();
            for ms in [1u64, 30, 120] {
                let deadline = Instant::now() + Duration::from_millis(ms);
                alarm.sleep_until(Some(deadline)).await;
                assert!(Instant::now() >= deadline, "woke before {ms} ms");
            }
        });
    }

    #[test]
    fn a_past_deadline_returns_at_once() {
        rt().block_on(async {
            let mut alarm = Alarm::new().unwrap();
            let past = Instant::now() - Duration::from_millis(5);
            tokio::time::timeout(Duration::from_secs(5), alarm.sleep_until(Some(past)))
                .await
                .expect("a past deadline returns at once");
        });
    }

    #[test]
    fn a_wait_dropped_early_does_not_end_the_next_one_early() {
        rt().block_on(async {
            let mut alarm = Alarm::new().unwrap();
            // Armed for 10 ms, abandoned after 1 ms; it expires unread.
            let first = Instant::now() + Duration::from_millis(10);
            let _ = tokio::time::timeout(Duration::from_millis(1), alarm.sleep_until(Some(first)))
                .await;
            tokio::time::sleep_until(first + Duration::from_millis(5)).await;
            // The stale expiry must not end this later wait.
            let second = Instant::now() + Duration::from_millis(80);
            alarm.sleep_until(Some(second)).await;
            assert!(Instant::now() >= second);
        });
    }

    #[test]
    fn none_never_returns() {
        rt().block_on(async {
            let mut alarm = Alarm::new().unwrap();
            let waited =
                tokio::time::timeout(Duration::from_millis(50), alarm.sleep_until(None)).await;
            assert!(waited.is_err());
        });
    }
}
