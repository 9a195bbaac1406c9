//! A job's fixed start delay (`jitter`): the same offset in `[0, jitter)`
//! for a given host and job every time it is computed, like systemd's
//! `FixedRandomDelay`. Hosts running the same config spread out; one host's
//! job keeps its cadence across restarts. The worker delays each fire by
//! it and the supervisor expects each fire that much after its nominal
//! time, so both compute it here, from the same inputs.

use std::time::Duration;

/// The offset of `job` on `host` within `[0, jitter)`, to the millisecond
/// (zero when `jitter` is under a millisecond).
///
/// FNV-1a, not std's hasher: its output is fixed by its definition, so an
/// upgrade of the compiler cannot move every job's start.
pub fn offset(host: &str, job: &str, jitter: Duration) -> Duration {
    let span = jitter.as_millis() as u64;
    if span == 0 {
        return Duration::ZERO;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    // The separator keeps ("ab", "c") and ("a", "bc") apart.
    for b in host.bytes().chain([0u8]).chain(job.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    Duration::from_millis(h % span)
}

/// When a fire nominally at `nominal` starts, `offset` later (the far
/// future when that is past the end of time).
pub fn start_of(nominal: jiff::Timestamp, offset: Duration) -> jiff::Timestamp {
    jiff::SignedDuration::try_from(offset)
        .ok()
        .and_then(|d| nominal.checked_add(d).ok())
        .unwrap_or(jiff::Timestamp::MAX)
}

/// This machine's host name (empty when it cannot be read: every job then
/// still gets a fixed offset, the one of the empty host name).
pub fn host() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_within_the_jitter_and_fixed() {
        let j = Duration::from_secs(300);
        for job in ["a", "backup", "db dump", "é"] {
            let o = offset("host1", job, j);
            assert!(o < j, "{job}: {o:?}");
            assert_eq!(o, offset("host1", job, j));
        }
        assert_eq!(offset("h", "a", Duration::ZERO), Duration::ZERO);
        assert_eq!(offset("h", "a", Duration::from_micros(900)), Duration::ZERO);
        assert_eq!(offset("h", "a", Duration::from_millis(1)), Duration::ZERO);
    }

    #[test]
    fn hosts_and_jobs_spread() {
        // An independent oracle: the offsets of many jobs cover the range
        // roughly evenly (a constant or a prefix-only hash would not).
        let j = Duration::from_secs(100);
        let mut buckets = [0u32; 10];
        for i in 0..1000 {
            let o = offset("host", &format!("job{i}"), j);
            buckets[(o.as_secs() / 10) as usize] += 1;
        }
        assert!(buckets.iter().all(|&n| n > 50), "{buckets:?}");
        assert_ne!(offset("ab", "c", j), offset("a", "bc", j));
    }
}
