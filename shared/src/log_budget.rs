//! A log budget: at most `burst` lines per `window`, the first line after a
//! quiet spell saying how many were held back.
//!
//! Used wherever a peer can make cronwarden log at will (a worker
//! spewing malformed event lines, a flood of connections over the cap, a
//! job writing a flood of output lines): the
//! log stays honest (every held-back line is counted) and small. Pure: the
//! caller passes the monotonic `now`.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub struct LogBudget {
    burst: u32,
    window: Duration,
    window_start: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl LogBudget {
    pub fn new(burst: u32, window: Duration) -> LogBudget {
        LogBudget {
            burst,
            window,
            window_start: None,
            used: 0,
            suppressed: 0,
        }
    }

    /// `Some(lines held back since the last one logged)` if this one may be
    /// logged, `None` if it must be held back.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        if self
            .window_start
            .is_none_or(|s| now.saturating_duration_since(s) >= self.window)
        {
            self.window_start = Some(now);
            self.used = 0;
        }
        if self.used < self.burst {
            self.used += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_budget_holds_back_a_flood_and_says_how_much() {
        let mut b = LogBudget::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        let admitted: Vec<_> = (0..1000).map(|_| b.admit(t0)).collect();
        assert_eq!(admitted.iter().filter(|a| a.is_some()).count(), 3);
        assert_eq!(b.admit(t0 + Duration::from_secs(61)), Some(997));
        assert_eq!(b.admit(t0 + Duration::from_secs(61)), Some(0));
    }
}
