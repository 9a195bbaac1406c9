//! The `[[job]]` keys that shape when a job's runs start beyond its
//! schedule: `jitter` (a fixed per-host start delay) and `retries`,
//! `retry_delay`, `retry_backoff` (a failed or timed-out run started
//! again). Every error names the job and the key.

use std::time::Duration;

use toml::{Table, Value};

use super::validate::Validator;

/// The most retries of one fire: beyond this, a failing job is a job to fix.
pub const MAX_RETRIES: u32 = 100;
/// The longest wait before a retry, however far the backoff grows.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);

/// When a failed run is started again.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// How many times one fire is retried (0: never).
    pub retries: u32,
    /// The wait before the first retry.
    pub delay: Duration,
    /// Each further wait is the previous one times this (at least 1).
    pub backoff: f64,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            retries: 0,
            delay: Duration::from_secs(10),
            backoff: 2.0,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (1 for the first), at most
    /// [`MAX_RETRY_DELAY`].
    pub fn delay_before(&self, attempt: u32) -> Duration {
        let factor = self
            .backoff
            .powi(attempt.saturating_sub(1).min(1000) as i32);
        let secs = self.delay.as_secs_f64() * factor;
        if !secs.is_finite() || secs >= MAX_RETRY_DELAY.as_secs_f64() {
            return MAX_RETRY_DELAY;
        }
        Duration::from_secs_f64(secs).min(MAX_RETRY_DELAY)
    }
}

pub(super) struct SchedKeys {
    pub jitter: Duration,
    pub retry: RetryPolicy,
}

impl Validator {
    pub(super) fn sched_keys(&mut self, label: &str, t: &Table) -> SchedKeys {
        let j = Some(label);
        let jitter = self
            .duration(j, "jitter", t.get("jitter"), false)
            .flatten()
            .unwrap_or(Duration::ZERO);
        let mut retry = RetryPolicy::default();
        match t.get("retries") {
            None => {}
            Some(Value::Integer(n)) if (0..=MAX_RETRIES as i64).contains(n) => {
                retry.retries = *n as u32
            }
            Some(other) => self.err(
                Some(label.into()),
                "retries",
                format!("must be an integer from 0 to {MAX_RETRIES}, found {other}"),
            ),
        }
        if let Some(d) = self
            .duration(j, "retry_delay", t.get("retry_delay"), false)
            .flatten()
        {
            retry.delay = d;
        }
        match t.get("retry_backoff") {
            None => {}
            Some(v) => {
                let f = match v {
                    Value::Float(f) => Some(*f),
                    Value::Integer(n) => Some(*n as f64),
                    _ => None,
                };
                match f {
                    Some(f) if (1.0..=10.0).contains(&f) => retry.backoff = f,
                    _ => self.err(
                        Some(label.into()),
                        "retry_backoff",
                        format!("must be a number from 1 to 10, found {v}"),
                    ),
                }
            }
        }
        SchedKeys { jitter, retry }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(keys: &str) -> String {
        let text = format!(
            "[[job]]\nname = \"j\"\nschedule = \"@hourly\"\ncommand = [\"true\"]\n{keys}\n"
        );
        match crate::config::Config::parse(std::path::Path::new("c.toml"), &text) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn keys_are_checked_and_errors_name_job_and_key() {
        assert_eq!(
            errors("jitter = \"365d\"\nretries = 0\nretry_backoff = 1"),
            ""
        );
        let e = errors("jitter = \"366d\"");
        assert!(
            e.contains("\"j\"") && e.contains("jitter") && e.contains("365d"),
            "{e}"
        );
        for (keys, key) in [
            ("retries = -1", "retries"),
            ("retries = 101", "retries"),
            ("retries = \"2\"", "retries"),
            ("retry_delay = \"0s\"", "retry_delay"),
            ("retry_backoff = 0.5", "retry_backoff"),
            ("retry_backoff = \"2\"", "retry_backoff"),
        ] {
            let e = errors(keys);
            assert!(e.contains(key) && e.contains("\"j\""), "{keys}: {e}");
        }
        let config = crate::config::Config::parse(
            std::path::Path::new("c.toml"),
            "[[job]]\nname = \"j\"\nschedule = \"@hourly\"\ncommand = [\"true\"]\njitter = \"10m\"\n",
        )
        .unwrap();
        let j = &config.jobs[0];
        assert_eq!(j.jitter, Duration::from_secs(600));
        assert_eq!(
            j.jitter_offset,
            crate::jitter::offset(&crate::jitter::host(), "j", j.jitter)
        );
        assert_eq!(j.retry, RetryPolicy::default());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            retries: 5,
            delay: Duration::from_secs(10),
            backoff: 2.0,
        };
        assert_eq!(p.delay_before(1), Duration::from_secs(10));
        assert_eq!(p.delay_before(2), Duration::from_secs(20));
        assert_eq!(p.delay_before(3), Duration::from_secs(40));
        assert_eq!(p.delay_before(100), MAX_RETRY_DELAY);
        assert_eq!(p.delay_before(u32::MAX), MAX_RETRY_DELAY);
        let flat = RetryPolicy {
            backoff: 1.0,
            ..p.clone()
        };
        assert_eq!(flat.delay_before(50), Duration::from_secs(10));
    }
}
