//! Retries (`retries`, `retry_delay`, `retry_backoff`): a run that ends
//! `failed` or `timeout` is started again after a delay growing by the
//! backoff, until the job's retries are spent. A retry is a run of its own
//! (trigger `retry`, no `scheduled_at`, no `covers`), so every fire still
//! has exactly one record of its own and retries never count as fires.
//!
//! What is never retried: a killed run (stopped on purpose), a lost run
//! (its worker died), a skip. A retry waiting when the worker stops or dies
//! is not run (the next worker knows nothing of it), nor one that comes due
//! while the job is paused, removed or running again: the newer run
//! stands for the fire. A later run of the job that ends replaces any
//! retry still waiting.

use std::{collections::BTreeMap, time::Duration};

use cronwarden_shared::{
    config::JobSpec,
    status::{Outcome, RunRecord, Trigger},
    store::Write,
};
use jiff::{SignedDuration, Timestamp};

use super::{Effects, Plan, Spawn};

/// The retries a plan keeps: the attempt of each run in flight that is a
/// retry, and the retry each job waits for.
#[derive(Debug, Default)]
pub(crate) struct Retries {
    /// Run id → its attempt (1 for the first retry). Runs of a fire itself
    /// are attempt 0 and not kept.
    attempts: BTreeMap<u64, u32>,
    /// Job → (when, attempt) of its waiting retry.
    waiting: BTreeMap<String, (Timestamp, u32)>,
}

/// Whether a run that ended so is worth starting again.
pub(crate) fn retryable(outcome: Outcome) -> bool {
    matches!(outcome, Outcome::Failed | Outcome::Timeout)
}

impl Retries {
    /// A run of `spec`'s job ended: forget its attempt and any retry still
    /// waiting, and arm the next retry when this one may have it.
    pub fn finished(&mut self, spec: &JobSpec, run_id: u64, outcome: Outcome, now: Timestamp) {
        let attempt = self.attempts.remove(&run_id).unwrap_or(0);
        self.waiting.remove(&spec.name);
        if !retryable(outcome) || attempt >= spec.retry.retries {
            return;
        }
        let next = attempt + 1;
        let delay = spec.retry.delay_before(next);
        let at = SignedDuration::try_from(delay)
            .ok()
            .and_then(|d| now.checked_add(d).ok())
            .unwrap_or(Timestamp::MAX);
        tracing::info!(
            job = %spec.name,
            run = run_id,
            attempt = next,
            of = spec.retry.retries,
            delay_ms = delay.as_millis() as u64,
            "run failed: retrying"
        );
        self.waiting.insert(spec.name.clone(), (at, next));
    }

    /// Forgets a run (of a job a reload removed).
    pub fn forget(&mut self, run_id: u64) {
        self.attempts.remove(&run_id);
    }

    /// The earliest waiting retry.
    pub fn earliest(&self) -> Option<Timestamp> {
        self.waiting.values().map(|(at, _)| *at).min()
    }

    /// Takes the retries due at `now`: (job, attempt).
    fn take_due(&mut self, now: Timestamp) -> Vec<(String, u32)> {
        let due: Vec<(String, u32)> = self
            .waiting
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(n, (_, a))| (n.clone(), *a))
            .collect();
        for (n, _) in &due {
            self.waiting.remove(n);
        }
        due
    }
}

impl Plan {
    /// Starts the retries due at `now`, each a run with trigger `retry`.
    pub(super) fn fire_retries(&mut self, now: Timestamp, fx: &mut Effects) {
        for (name, attempt) in self.retries.take_due(now) {
            let Some(job) = self.jobs.get(&name) else {
                continue;
            };
            let why = if job.paused {
                Some("the job is paused")
            } else if !job.running.is_empty() {
                Some("the job is running again")
            } else {
                None
            };
            if let Some(why) = why {
                tracing::info!(job = %name, attempt, "retry not run: {why}");
                continue;
            }
            let run_id = self.alloc_id(fx);
            let Some(job) = self.jobs.get_mut(&name) else {
                continue;
            };
            let mut record =
                RunRecord::new(run_id, &name, vec![], Trigger::Retry, Outcome::Running);
            record.started_at = Some(now);
            job.running.push(run_id);
            self.retries.attempts.insert(run_id, attempt);
            fx.writes.push(Write::Insert(record.clone()));
            fx.spawns.push(Spawn {
                record,
                job: job.spec.clone(),
                next_fire_at: job.next,
                delay: Duration::ZERO,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use cronwarden_shared::config::Config;

    use super::*;
    use crate::plan::wanted_rows;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn plan_of(extra: &str, t0: Timestamp) -> (Plan, Config) {
        let text = format!(
            "[[job]]\nname = \"j\"\nschedule = \"@every 1h\"\ncommand = [\"true\"]\n{extra}\n"
        );
        let config = Config::parse(std::path::Path::new("/tmp/c.toml"), &text).expect("config");
        let mut rows = wanted_rows(&config, t0);
        rows[0].next_run_at = Some(t0);
        let mut plan = Plan::new(1, 0);
        plan.configure(&config, rows, t0, &mut Effects::default());
        (plan, config)
    }

    /// Ends the one spawned run with `outcome` at `at`; returns its record.
    fn end(plan: &mut Plan, fx: Effects, outcome: Outcome, at: Timestamp) -> RunRecord {
        assert_eq!(fx.spawns.len(), 1, "{fx:?}");
        let mut rec = fx.spawns.into_iter().next().unwrap().record;
        rec.outcome = outcome;
        rec.finished_at = Some(at);
        plan.finished(rec.clone(), at, &mut Effects::default());
        rec
    }

    #[test]
    fn a_failing_fire_is_retried_with_backoff_then_given_up() {
        let t0 = ts("2026-11-24T10:00:00Z");
        let (mut plan, _) = plan_of(
            "retries = 2\nretry_delay = \"10s\"\nretry_backoff = 3.0",
            t0,
        );
        let mut fx = Effects::default();
        plan.fire_due(t0, &mut fx);
        let first = end(&mut plan, fx, Outcome::Failed, ts("2026-11-24T10:00:01Z"));
        assert_eq!(first.trigger, Trigger::Schedule);
        assert_eq!(plan.earliest_fire(), Some(ts("2026-11-24T10:00:11Z")));

        let mut fx = Effects::default();
        plan.fire_due(ts("2026-11-24T10:00:10Z"), &mut fx);
        assert!(fx.spawns.is_empty(), "a retry before its delay");
        plan.fire_due(ts("2026-11-24T10:00:11Z"), &mut fx);
        let retry = &fx.spawns[0].record;
        assert_eq!(retry.trigger, Trigger::Retry);
        assert_eq!(retry.scheduled_at, None);
        assert!(retry.covers.is_empty());
        end(&mut plan, fx, Outcome::Timeout, ts("2026-11-24T10:00:12Z"));
        // The second retry waits three times as long.
        assert_eq!(plan.earliest_fire(), Some(ts("2026-11-24T10:00:42Z")));
        let mut fx = Effects::default();
        plan.fire_due(ts("2026-11-24T10:00:42Z"), &mut fx);
        end(&mut plan, fx, Outcome::Failed, ts("2026-11-24T10:00:43Z"));
        // Retries spent: the next thing is the next fire.
        assert_eq!(plan.earliest_fire(), Some(ts("2026-11-24T11:00:00Z")));
    }

    #[test]
    fn success_killed_and_lost_runs_are_not_retried() {
        for outcome in [Outcome::Success, Outcome::Killed, Outcome::Lost] {
            let t0 = ts("2026-11-24T10:00:00Z");
            let (mut plan, _) = plan_of("retries = 3", t0);
            let mut fx = Effects::default();
            plan.fire_due(t0, &mut fx);
            end(&mut plan, fx, outcome, ts("2026-11-24T10:00:01Z"));
            assert_eq!(
                plan.earliest_fire(),
                Some(ts("2026-11-24T11:00:00Z")),
                "{outcome:?}"
            );
        }
    }

    #[test]
    fn no_retries_by_default_and_none_while_paused() {
        let t0 = ts("2026-11-24T10:00:00Z");
        let (mut plan, _) = plan_of("", t0);
        let mut fx = Effects::default();
        plan.fire_due(t0, &mut fx);
        end(&mut plan, fx, Outcome::Failed, ts("2026-11-24T10:00:01Z"));
        assert_eq!(plan.earliest_fire(), Some(ts("2026-11-24T11:00:00Z")));

        let (mut plan, _) = plan_of("retries = 1", t0);
        let mut fx = Effects::default();
        plan.fire_due(t0, &mut fx);
        end(&mut plan, fx, Outcome::Failed, ts("2026-11-24T10:00:01Z"));
        plan.command(
            cronwarden_shared::wire::Command::Pause {
                job: "j".into(),
                request: None,
            },
            t0,
            &mut Effects::default(),
        );
        let mut fx = Effects::default();
        plan.fire_due(ts("2026-11-24T10:00:30Z"), &mut fx);
        assert!(fx.spawns.is_empty(), "a retry of a paused job ran");
    }
}
