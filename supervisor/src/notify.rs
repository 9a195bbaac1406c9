//! systemd's notify protocol: READY=1 once the worker has said hello,
//! WATCHDOG=1 from the supervisor's own loop at half of `WATCHDOG_USEC`
//! (so systemd restarts a supervisor whose loop wedged), STATUS= with a
//! one-line summary when it changes, STOPPING=1 on shutdown.
//!
//! Without `NOTIFY_SOCKET` every call is a no-op. Sends are datagrams on a
//! Unix socket: they never block the loop.

use std::time::Duration;

use sd_notify::NotifyState;

#[derive(Debug, Default)]
pub struct Notifier {
    enabled: bool,
    ready: bool,
    last_status: String,
    /// How often to ping, when systemd watches us.
    pub watchdog: Option<Duration>,
}

/// Half of `WATCHDOG_USEC`, as `sd_watchdog_enabled(3)` decides: enabled
/// when it is set, unless `WATCHDOG_PID` names another process. (The
/// sd-notify crate also requires `WATCHDOG_PID` to be set; libsystemd does
/// not.)
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC")
        .ok()?
        .parse()
        .ok()
        .filter(|u| *u > 0)?;
    if let Some(pid) = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
    {
        if pid != std::process::id() {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

impl Notifier {
    pub fn from_env() -> Notifier {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
        let watchdog = enabled.then(watchdog_interval).flatten();
        Notifier {
            enabled,
            ready: false,
            last_status: String::new(),
            watchdog,
        }
    }

    fn send(&self, states: &[NotifyState]) {
        if self.enabled {
            if let Err(e) = sd_notify::notify(false, states) {
                tracing::warn!("sd_notify: {e}");
            }
        }
    }

    pub fn ready(&mut self) {
        if !self.ready {
            self.ready = true;
            self.send(&[NotifyState::Ready]);
        }
    }

    pub fn watchdog_ping(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    pub fn status(&mut self, line: String) {
        if line != self.last_status {
            self.send(&[NotifyState::Status(&line)]);
            self.last_status = line;
        }
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping]);
    }
}
