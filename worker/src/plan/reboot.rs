//! `@reboot` jobs: each fires once per boot, when the worker is configured
//! in a boot the job has not fired in yet. The boot it fired in is stored
//! ([`Write::RebootFired`]) in the transaction of its run's record, which
//! commits before the run starts, so a worker (or supervisor) restarted in
//! the same boot finds it and does not fire the job again; a new boot
//! (another boot id) fires it again.
//!
//! When the store's word is unknown (it fails at configuration), nothing
//! fires: a job could fire twice in one boot otherwise. The run goes
//! through the same rules as any due fire (paused: skipped; overlap).

use std::collections::BTreeMap;

use cronwarden_shared::store::Write;
use jiff::Timestamp;

use super::{Effects, Plan};

/// This boot and the boot each `@reboot` job last fired in.
#[derive(Debug, Default)]
pub(crate) struct Boot {
    id: Option<String>,
    /// `None`: unknown (the store could not say).
    fired: Option<BTreeMap<String, String>>,
}

impl Plan {
    /// The current boot id and the store's record of the boot each
    /// `@reboot` job last fired in, read before each configuration.
    pub fn set_boot(&mut self, id: Option<String>, fired: Option<BTreeMap<String, String>>) {
        self.boot = Boot { id, fired };
    }

    /// What the store must hold again for the `@reboot` jobs that fired in
    /// this boot (a store recreated under a running worker, see
    /// [`Plan::restore`]).
    pub(super) fn reboot_restore(&self) -> Vec<Write> {
        let (Some(id), Some(fired)) = (&self.boot.id, &self.boot.fired) else {
            return vec![];
        };
        self.jobs
            .keys()
            .filter(|n| fired.get(*n) == Some(id))
            .map(|n| Write::RebootFired {
                job: n.clone(),
                boot_id: id.clone(),
            })
            .collect()
    }

    /// Fires each `@reboot` job that has not fired in this boot.
    pub(super) fn fire_reboots(&mut self, now: Timestamp, fx: &mut Effects) {
        let names: Vec<String> = self
            .jobs
            .values()
            .filter(|j| j.spec.schedule.is_reboot())
            .map(|j| j.spec.name.clone())
            .collect();
        if names.is_empty() {
            return;
        }
        let Some(id) = self.boot.id.clone() else {
            return;
        };
        let Some(fired) = self.boot.fired.as_mut() else {
            tracing::warn!(
                jobs = names.len(),
                "the store cannot say which boot @reboot jobs last fired in: not firing them"
            );
            return;
        };
        let due: Vec<String> = names
            .into_iter()
            .filter(|n| fired.get(n) != Some(&id))
            .collect();
        for name in &due {
            fired.insert(name.clone(), id.clone());
        }
        for name in due {
            tracing::info!(job = %name, boot_id = %id, "@reboot: first start in this boot");
            self.dispatch(&name, vec![now], now, fx);
            fx.writes.push(Write::RebootFired {
                job: name,
                boot_id: id.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use cronwarden_shared::{config::Config, status::Trigger};

    use super::*;
    use crate::plan::wanted_rows;

    fn config() -> Config {
        let text = "[[job]]\nname = \"r\"\nschedule = \"@reboot\"\ncommand = [\"true\"]\n\
                    [[job]]\nname = \"h\"\nschedule = \"@hourly\"\ncommand = [\"true\"]\n";
        Config::parse(std::path::Path::new("/tmp/c.toml"), text).expect("config")
    }

    fn configure(plan: &mut Plan, now: Timestamp) -> Effects {
        let config = config();
        let mut fx = Effects::default();
        plan.configure(&config, wanted_rows(&config, now), now, &mut fx);
        fx
    }

    fn fired(fx: &Effects) -> Vec<(String, String)> {
        fx.writes
            .iter()
            .filter_map(|w| match w {
                Write::RebootFired { job, boot_id } => Some((job.clone(), boot_id.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn fires_once_per_boot() {
        let now: Timestamp = "2026-11-24T10:00:00Z".parse().unwrap();
        let mut plan = Plan::new(1, 0);
        plan.set_boot(Some("b1".into()), Some(BTreeMap::new()));
        let fx = configure(&mut plan, now);
        assert_eq!(fx.spawns.len(), 1);
        assert_eq!(fx.spawns[0].record.job, "r");
        assert_eq!(fx.spawns[0].record.trigger, Trigger::Schedule);
        assert_eq!(fired(&fx), [("r".to_string(), "b1".to_string())]);
        // The record is written before the boot, in the same batch.
        let insert = fx.writes.iter().position(|w| matches!(w, Write::Insert(_)));
        assert!(insert.is_some());

        // A reload in the same boot: nothing.
        let fx = configure(&mut plan, now);
        assert!(fx.spawns.is_empty() && fired(&fx).is_empty());

        // A new worker in the same boot, told by the store: nothing.
        let mut plan = Plan::new(10, 0);
        let stored = BTreeMap::from([("r".to_string(), "b1".to_string())]);
        plan.set_boot(Some("b1".into()), Some(stored.clone()));
        assert!(configure(&mut plan, now).spawns.is_empty());

        // A store recreated under this worker gets the boot back.
        assert!(matches!(
            &plan.restore().1[..],
            [Write::ReserveIds { .. }, Write::RebootFired { job, boot_id }, ..]
                if job == "r" && boot_id == "b1"
        ));

        // Another boot: it fires again.
        let mut plan = Plan::new(20, 0);
        plan.set_boot(Some("b2".into()), Some(stored));
        assert_eq!(configure(&mut plan, now).spawns.len(), 1);
    }

    #[test]
    fn nothing_fires_when_the_boot_or_the_store_is_unknown() {
        let now: Timestamp = "2026-11-24T10:00:00Z".parse().unwrap();
        let mut plan = Plan::new(1, 0);
        plan.set_boot(None, Some(BTreeMap::new()));
        assert!(configure(&mut plan, now).spawns.is_empty());
        plan.set_boot(Some("b1".into()), None);
        assert!(configure(&mut plan, now).spawns.is_empty());
    }
}
