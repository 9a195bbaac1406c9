//! Parsed cron expressions, shared: one copy per distinct expression.
//!
//! A `croner::Cron` takes about 5 KiB (its year field alone is a 5,000-byte
//! bitfield, even with years disallowed), and every job's schedule was
//! held twice in each process (the config and the loop's own copy): with
//! 10,000 jobs that was 100 MB per process (issue 18). A `Schedule` holds
//! its cron behind an `Arc`, so copies share it, and jobs with the same
//! expression share one parse. The pattern does not depend on the time
//! zone (kept beside it in the `Schedule`), so the text alone is the key.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError, Weak},
};

static CRONS: Mutex<Option<HashMap<String, Weak<croner::Cron>>>> = Mutex::new(None);

/// The parse of `expr`, shared with every live schedule of the same text;
/// `parse` only when there is none.
pub(super) fn cron(
    expr: &str,
    parse: impl FnOnce(&str) -> Result<croner::Cron, String>,
) -> Result<Arc<croner::Cron>, String> {
    // A panic elsewhere while the lock was held leaves a consistent map.
    let mut guard = CRONS.lock().unwrap_or_else(PoisonError::into_inner);
    let map = guard.get_or_insert_with(HashMap::new);
    if let Some(c) = map.get(expr).and_then(Weak::upgrade) {
        return Ok(c);
    }
    let c = Arc::new(parse(expr)?);
    // Entries whose schedules are all gone (a reload dropped them) are
    // swept whenever the map reaches a power of two (from 64): amortised,
    // and the map stays within about twice the live expressions.
    if map.len() >= 64 && map.len().is_power_of_two() {
        map.retain(|_, w| w.strong_count() > 0);
    }
    map.insert(expr.to_string(), Arc::downgrade(&c));
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_parse_per_expression_while_it_lives() {
        let p = |e: &str| e.parse::<croner::Cron>().map_err(|e| e.to_string());
        let a = cron("7 7 7 * *", p).unwrap();
        let b = cron("7 7 7 * *", |_| panic!("parsed twice")).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let c = cron("8 7 7 * *", p).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        drop((a, b));
        // Gone: parsed again.
        let mut parsed = false;
        cron("7 7 7 * *", |e| {
            parsed = true;
            p(e)
        })
        .unwrap();
        assert!(parsed);
        assert!(cron("bad", p).is_err());
    }
}
