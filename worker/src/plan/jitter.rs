//! A jittered job's fires, shifted: a fire keeps its nominal time (its
//! claim, its record's `scheduled_at`, the armed time reported to the
//! supervisor) and starts [`JobSpec::jitter_offset`] later. The misfire
//! grace counts from that start, so a jitter longer than the grace does
//! not turn every fire into a misfire.

use cronwarden_shared::config::JobSpec;
use jiff::Timestamp;

/// When the fire nominally at `nominal` starts.
pub(crate) fn start_of(spec: &JobSpec, nominal: Timestamp) -> Timestamp {
    cronwarden_shared::jitter::start_of(nominal, spec.jitter_offset)
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use cronwarden_shared::config::Config;

    use super::*;
    use crate::plan::{Effects, Plan};

    fn config(jitter: &str) -> Config {
        let text = format!(
            "[[job]]\nname = \"j\"\nschedule = \"@every 1h\"\ncommand = [\"true\"]\njitter = \"{jitter}\"\n"
        );
        Config::parse(std::path::Path::new("/tmp/c.toml"), &text).expect("config")
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_jittered_fire_starts_at_its_offset_and_keeps_its_nominal_time() {
        let mut config = config("30m");
        Arc::make_mut(&mut config.jobs[0]).jitter_offset = Duration::from_secs(600);
        let t0 = ts("2026-11-24T10:00:00Z");
        let mut rows = crate::plan::wanted_rows(&config, t0);
        let nominal = ts("2026-11-24T11:00:00Z");
        rows[0].next_run_at = Some(nominal);
        let mut plan = Plan::new(1, 0);
        let mut fx = Effects::default();
        plan.configure(&config, rows, t0, &mut fx);
        assert_eq!(plan.earliest_fire(), Some(ts("2026-11-24T11:10:00Z")));

        // Due nominally, but not yet at its start.
        let mut fx = Effects::default();
        plan.fire_due(ts("2026-11-24T11:09:59Z"), &mut fx);
        assert!(fx.spawns.is_empty() && fx.writes.is_empty());

        let start = ts("2026-11-24T11:10:00Z");
        let mut fx = Effects::default();
        plan.fire_due(start, &mut fx);
        assert_eq!(fx.spawns.len(), 1);
        let rec = &fx.spawns[0].record;
        assert_eq!(rec.scheduled_at, Some(nominal));
        assert_eq!(rec.started_at, Some(start));
        // The next fire is armed at its nominal time.
        assert_eq!(
            plan.armed().next().and_then(|(_, t)| t),
            Some(ts("2026-11-24T12:00:00Z"))
        );
    }

    #[test]
    fn the_grace_counts_from_the_start() {
        let mut config = config("2h");
        Arc::make_mut(&mut config.jobs[0]).jitter_offset = Duration::from_secs(5400);
        Arc::make_mut(&mut config.jobs[0]).misfire_grace = Duration::from_secs(60);
        let t0 = ts("2026-11-24T10:00:00Z");
        let mut rows = crate::plan::wanted_rows(&config, t0);
        rows[0].next_run_at = Some(ts("2026-11-24T11:00:00Z"));
        let mut plan = Plan::new(1, 0);
        plan.configure(&config, rows, t0, &mut Effects::default());
        // 90 minutes after the nominal time, 30 s after the start: a run.
        let mut fx = Effects::default();
        plan.fire_due(ts("2026-11-24T12:30:30Z"), &mut fx);
        assert_eq!(fx.spawns.len(), 1);
    }
}
