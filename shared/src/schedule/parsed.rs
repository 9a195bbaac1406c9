//! Parsed cron expressions, kept for the few in use: a bounded cache.
//!
//! A `croner::Cron` takes about 5 KiB (its year field alone is a 5,000-byte
//! bitfield, even with years disallowed). Held by every schedule, even
//! shared between the schedules of the same text, that was 5 KiB per job
//! in each process when expressions differ (issue 18: 50 MB per process at
//! 10,000 jobs). A `Schedule` now keeps only its text, and the parse is
//! made when a fire time is asked for: the worker asks once per fire (and
//! at arming), the supervisor once per fire it reads, so the last
//! [`CAPACITY`] parses kept here serve every fire of the schedules that
//! fire often, and a miss costs one parse per fire (release build: a next
//! fire takes ~0.6 µs with the parse kept, ~18 µs with a parse). Arming
//! every job (start, reload) misses for each distinct expression: at
//! 10,000 distinct ones, ~0.35 s more CPU at start in the worker and
//! ~0.15 s in the supervisor, and none per heartbeat or turn.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

/// How many parses are kept: enough for every distinct expression of a
/// busy config's frequent schedules (the bench's 10,000 per-minute jobs
/// have 60), about 5 KiB each.
pub(super) const CAPACITY: usize = 128;

struct Cache {
    map: HashMap<Arc<str>, (Arc<croner::Cron>, u64)>,
    /// Bumped at each use; an entry's stamp is its last use.
    clock: u64,
    capacity: usize,
}

impl Cache {
    fn get(&mut self, expr: &str) -> Option<Arc<croner::Cron>> {
        self.clock += 1;
        let (c, used) = self.map.get_mut(expr)?;
        *used = self.clock;
        Some(c.clone())
    }

    fn insert(&mut self, expr: &Arc<str>, cron: &Arc<croner::Cron>) {
        self.clock += 1;
        if self.map.len() >= self.capacity && !self.map.contains_key(expr) {
            // O(capacity), only on a miss, which also pays for a parse.
            let oldest = self
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.map.remove(&k);
            }
        }
        self.map.insert(expr.clone(), (cron.clone(), self.clock));
    }
}

static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

/// The parse of `expr`, from the cache or made by `parse` (outside the
/// lock) and kept, the least recently used entry evicted when full.
pub(super) fn cron(
    expr: &Arc<str>,
    parse: impl FnOnce(&str) -> Result<croner::Cron, String>,
) -> Result<Arc<croner::Cron>, String> {
    if let Some(c) = with_cache(|cache| cache.get(expr)) {
        return Ok(c);
    }
    let c = Arc::new(parse(expr)?);
    keep(expr, &c);
    Ok(c)
}

/// Keeps a parse just made (by `Schedule::parse`, which validates with it).
pub(super) fn keep(expr: &Arc<str>, cron: &Arc<croner::Cron>) {
    with_cache(|cache| cache.insert(expr, cron));
}

fn with_cache<R>(f: impl FnOnce(&mut Cache) -> R) -> R {
    // A panic elsewhere while the lock was held leaves a consistent map.
    let mut guard = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
    f(guard.get_or_insert_with(|| Cache {
        map: HashMap::new(),
        clock: 0,
        capacity: CAPACITY,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(e: &str) -> Arc<croner::Cron> {
        Arc::new(e.parse::<croner::Cron>().unwrap())
    }

    #[test]
    fn a_parse_is_reused_and_the_least_recently_used_goes_first() {
        let mut cache = Cache {
            map: HashMap::new(),
            clock: 0,
            capacity: 4,
        };
        let expr = |i: usize| -> Arc<str> { format!("{i} 9 9 9 *").into() };
        let first = p(&expr(0));
        cache.insert(&expr(0), &first);
        assert!(Arc::ptr_eq(&cache.get(&expr(0)).unwrap(), &first));
        // Fill it with others, using the first all along: it stays.
        for i in 1..=4 {
            cache.insert(&expr(i), &p(&expr(i)));
            assert!(cache.get(&expr(0)).is_some(), "the one in use was evicted");
            assert!(cache.map.len() <= 4);
        }
        // The least recently used (expr(1)) went; the newest are there.
        assert!(cache.get(&expr(1)).is_none());
        assert!((2..=4).all(|i| cache.get(&expr(i)).is_some()));
    }

    #[test]
    fn a_bad_expression_is_an_error_and_not_kept() {
        let bad: Arc<str> = "bad".into();
        let p = |e: &str| e.parse::<croner::Cron>().map_err(|e| e.to_string());
        assert!(cron(&bad, p).is_err());
        assert!(with_cache(|c| c.get("bad")).is_none());
    }
}
