//! The plan's index of jobs by the start of their armed fire (its nominal
//! time plus the job's jitter offset, see [`super::jitter`]), so that a
//! turn looks at the jobs due and nothing else, and the loop's next
//! wake-up is the index's first entry (issue #18: at 10,000 jobs, walking
//! every job at each turn and for each wake-up was most of an idle
//! worker's work).
//!
//! The index holds one entry per job with an armed fire and no other.
//! [`Plan::arm`] is the one place a job's armed fire changes, and keeps
//! its entry true; a configuration, which may change any job's jitter,
//! empties the index and arms every job again.

use std::collections::BTreeSet;

use jiff::Timestamp;

use super::{jitter, Plan};

/// (start of the armed fire, job name), earliest first.
#[derive(Debug, Default)]
pub(crate) struct Starts(BTreeSet<(Timestamp, String)>);

impl Starts {
    /// Every job left the plan (a configuration re-arms those it keeps).
    pub fn clear(&mut self) {
        self.0.clear();
    }

    fn moved(&mut self, name: &str, from: Option<Timestamp>, to: Option<Timestamp>) {
        if from == to {
            return;
        }
        if let Some(from) = from {
            self.0.remove(&(from, name.to_string()));
        }
        if let Some(to) = to {
            self.0.insert((to, name.to_string()));
        }
    }

    /// The earliest start of an armed fire.
    pub fn first(&self) -> Option<Timestamp> {
        self.0.first().map(|(t, _)| *t)
    }

    /// The earliest start of an armed fire after `t`.
    pub fn first_after(&self, t: Timestamp) -> Option<Timestamp> {
        let after = t.checked_add(jiff::SignedDuration::from_nanos(1)).ok()?;
        self.0
            .range((after, String::new())..)
            .next()
            .map(|(s, _)| *s)
    }

    /// The jobs whose armed fire starts at or before `now`, earliest first.
    pub fn due(&self, now: Timestamp) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .take_while(move |(t, _)| *t <= now)
            .map(|(_, n)| n.as_str())
    }
}

impl Plan {
    /// Arms `name` at `to` (`None`: nothing more to fire). Every change of
    /// a job's armed fire goes through here, so the index stays true.
    pub(super) fn arm(&mut self, name: &str, to: Option<Timestamp>) {
        let Some(job) = self.jobs.get_mut(name) else {
            return;
        };
        let start = |t: Option<Timestamp>| t.map(|t| jitter::start_of(&job.spec, t));
        self.starts.moved(name, start(job.next), start(to));
        job.next = to;
    }

    /// Panics unless the index is exactly what the jobs' armed fires give.
    #[cfg(test)]
    pub(crate) fn check_starts(&self) {
        let want: BTreeSet<(Timestamp, String)> = self
            .jobs
            .iter()
            .filter_map(|(n, j)| Some((jitter::start_of(&j.spec, j.next?), n.clone())))
            .collect();
        assert_eq!(self.starts.0, want, "the index of starts went stale");
    }
}

#[cfg(test)]
mod tests {
    //! The index against the jobs' armed fires after each change that
    //! moves one: a fire of a job armed earlier than the index says would
    //! be missed (or later: fired early), so each test also fires and
    //! looks at which jobs' fires were claimed.

    use std::{sync::Arc, time::Duration};

    use cronwarden_shared::{config::Config, store::Write};

    use super::*;
    use crate::{
        clock::Clocks,
        plan::{wanted_rows, Effects},
    };

    /// 2030-01-01T00:00:00Z.
    const T0: i64 = 1_893_456_000;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(T0 + s).unwrap()
    }

    fn config(jobs: &[(&str, &str, &str)]) -> Config {
        let text: String = jobs
            .iter()
            .map(|(name, schedule, extra)| {
                format!("[[job]]\nname = \"{name}\"\nschedule = \"{schedule}\"\nshell = \"true\"\n{extra}\n")
            })
            .collect();
        Config::parse(std::path::Path::new("/tmp/c.toml"), &text).expect("config")
    }

    fn configure(plan: &mut Plan, config: &Config, now: Timestamp) {
        plan.configure(
            config,
            wanted_rows(config, now),
            now,
            &mut Effects::default(),
        );
        plan.check_starts();
    }

    /// The jobs whose fires were claimed at `now` (run or skipped).
    fn fire(plan: &mut Plan, now: Timestamp) -> Vec<String> {
        let mut fx = Effects::default();
        plan.fire_due(now, &mut fx);
        plan.check_starts();
        fx.writes
            .into_iter()
            .filter_map(|w| match w {
                Write::Claim { job, .. } => Some(job),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_turn_fires_only_the_due_jobs_and_the_wake_up_is_the_first_start() {
        let mut plan = Plan::new(1, 0);
        let c = config(&[
            ("hourly", "@hourly", ""),
            ("minutely", "0 * * * * *", ""),
            ("daily", "@daily", ""),
        ]);
        configure(&mut plan, &c, ts(30));
        assert_eq!(plan.earliest_fire(), Some(ts(60)));
        assert!(fire(&mut plan, ts(59)).is_empty());
        assert_eq!(fire(&mut plan, ts(60)), ["minutely"]);
        assert_eq!(plan.earliest_fire(), Some(ts(120)));
        assert_eq!(fire(&mut plan, ts(3600)), ["hourly", "minutely"]);
        assert_eq!(plan.earliest_fire(), Some(ts(3660)));
    }

    #[test]
    fn a_reload_that_moves_a_job_earlier_moves_its_entry() {
        let mut plan = Plan::new(1, 0);
        configure(&mut plan, &config(&[("j", "@hourly", "")]), ts(30));
        assert_eq!(plan.earliest_fire(), Some(ts(3600)));
        // Another schedule: re-armed from now, a minute ahead.
        configure(&mut plan, &config(&[("j", "0 * * * * *", "")]), ts(40));
        assert_eq!(plan.earliest_fire(), Some(ts(60)));
        assert_eq!(fire(&mut plan, ts(60)), ["j"]);
    }

    #[test]
    fn a_reload_that_changes_the_jitter_moves_the_start() {
        let mut c = config(&[("j", "@hourly", "jitter = \"30m\"")]);
        Arc::make_mut(&mut c.jobs[0]).jitter_offset = Duration::from_secs(600);
        let mut plan = Plan::new(1, 0);
        configure(&mut plan, &c, ts(30));
        assert_eq!(plan.earliest_fire(), Some(ts(3600 + 600)));
        // Same schedule, so the armed fire stays; only its start moves.
        Arc::make_mut(&mut c.jobs[0]).jitter_offset = Duration::from_secs(60);
        configure(&mut plan, &c, ts(40));
        assert_eq!(plan.earliest_fire(), Some(ts(3600 + 60)));
        assert!(fire(&mut plan, ts(3600 + 59)).is_empty());
        assert_eq!(fire(&mut plan, ts(3600 + 60)), ["j"]);
    }

    #[test]
    fn a_step_back_rearms_a_repeating_job_earlier_and_it_fires() {
        let mut plan = Plan::new(1, 0);
        configure(&mut plan, &config(&[("j", "* * * * * *", "")]), ts(599));
        let clocks = |wall, mono| Clocks {
            wall,
            mono: Duration::from_secs(mono),
            boot: Duration::from_secs(mono),
        };
        plan.observe_clocks(clocks(ts(599), 1000), &mut Effects::default());
        plan.observe_clocks(clocks(ts(600), 1001), &mut Effects::default());
        assert_eq!(fire(&mut plan, ts(600)), ["j"]);
        assert_eq!(plan.earliest_fire(), Some(ts(601)));
        // The wall clock is set back 10 minutes while no time passes.
        plan.observe_clocks(clocks(ts(0), 1001), &mut Effects::default());
        plan.check_starts();
        assert_eq!(plan.earliest_fire(), Some(ts(1)));
        assert!(fire(&mut plan, ts(0)).is_empty());
        assert_eq!(fire(&mut plan, ts(1)), ["j"]);
    }

    #[test]
    fn a_removed_job_leaves_the_index() {
        let mut plan = Plan::new(1, 0);
        let both = [("a", "0 * * * * *", ""), ("b", "@hourly", "")];
        configure(&mut plan, &config(&both), ts(30));
        configure(&mut plan, &config(&both[1..]), ts(31));
        assert_eq!(plan.earliest_fire(), Some(ts(3600)));
        assert!(fire(&mut plan, ts(60)).is_empty());
    }
}
