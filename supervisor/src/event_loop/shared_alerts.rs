//! Delivering alerts: every notice on a single host; on several hosts
//! (store = postgres) the cluster-wide ones through their owner (see
//! [`crate::ownership`], whose questions go to [`crate::owner_link`]'s
//! thread and whose answers come back to the loop here).

use cronwarden_shared::{
    config::Config,
    status::{AlertNotice, StatusReport},
};
use tokio::{sync::mpsc, time::Instant};

use super::Supervisor;
use crate::{
    alerts::AlertBook,
    owner_link::{Answer, Link},
    ownership::{Outcome, Owners},
};

/// The ownership book and the thread that asks the ledger for it.
pub(crate) struct SharedAlerts {
    owners: Owners,
    link: Link,
    answers: mpsc::Receiver<Answer>,
}

impl SharedAlerts {
    /// `None` for a single host. The alerts open at start are asked for
    /// at once.
    pub(crate) fn start(config: &Config, book: &AlertBook) -> Option<SharedAlerts> {
        let cluster = config.cluster.clone()?;
        let (owners, asks) = Owners::new(cluster.host.clone(), &book.keys(), Instant::now());
        let (link, answers) = Link::start(cluster);
        for a in asks {
            link.ask(a);
        }
        Some(SharedAlerts {
            owners,
            link,
            answers,
        })
    }
}

/// The next answer of the ledger; never, for a single host.
pub(super) async fn next_answer(shared: &mut Option<SharedAlerts>) -> Option<Answer> {
    match shared {
        Some(s) => s.answers.recv().await,
        None => std::future::pending().await,
    }
}

impl Supervisor {
    /// Sends one evaluation's notices (already logged and recorded) to the
    /// sinks: all of them, or on several hosts those this host delivers.
    pub(super) fn deliver(&mut self, notices: Vec<AlertNotice>) {
        match self.shared_alerts.as_mut() {
            None => {
                for n in &notices {
                    self.sinks.dispatch(n);
                }
            }
            Some(s) => {
                let out = s.owners.notices(notices, Instant::now());
                self.carry_out(out);
            }
        }
        if self.sinks.reminds() {
            let mut open = self.model.alerts.reminders();
            if let Some(s) = &self.shared_alerts {
                open.retain(|n| s.owners.delivers(n));
            }
            self.sinks.remind(&open, jiff::Timestamp::now());
        }
    }

    pub(super) fn on_owner_answer(&mut self, a: Answer) {
        let Some(s) = self.shared_alerts.as_mut() else {
            return;
        };
        let out = s.owners.answer(&a.key, a.owner, &self.model.alerts);
        self.carry_out(out);
        // The owner shows in the status.
        self.publish_soon();
    }

    /// Once a second: unanswered opens go out, peers' alerts are asked
    /// for again.
    pub(super) fn owners_tick(&mut self) {
        if let Some(s) = self.shared_alerts.as_mut() {
            let out = s.owners.tick(Instant::now());
            self.carry_out(out);
        }
    }

    fn carry_out(&mut self, out: Outcome) {
        let Some(s) = self.shared_alerts.as_ref() else {
            return;
        };
        for a in out.asks {
            s.link.ask(a);
        }
        for n in &out.unanswered {
            tracing::warn!(kind = %n.kind, job = n.job.as_deref().unwrap_or("-"),
                "the shared ledger did not say which host owns this alert within {}s: delivering it from here (a duplicate beats a silent alert)",
                crate::ownership::ANSWER_WITHIN.as_secs());
        }
        for n in &out.taken_over {
            tracing::warn!(kind = %n.kind, job = n.job.as_deref().unwrap_or("-"),
                "this host now owns the alert (its owner resolved it or went silent): delivering it from here");
        }
        for n in &out.deliver {
            self.sinks.dispatch(n);
        }
    }

    /// Names the owner of each cluster-wide alert in the status.
    pub(super) fn annotate_owners(&self, status: &mut StatusReport) {
        if let Some(s) = &self.shared_alerts {
            for a in &mut status.alerts {
                a.owner = s.owners.owner(&(a.kind, a.job.clone())).map(String::from);
            }
        }
    }

    /// A reload that changes `store`, `host` or `lease` reconnects.
    pub(super) fn reload_shared_alerts(&mut self, old: &Config, new: &Config) {
        if old.cluster != new.cluster {
            let host = new.cluster.as_ref().map(|c| c.host.clone());
            self.model
                .alerts
                .set_host(host.unwrap_or_else(crate::alerts::hostname));
            self.shared_alerts = SharedAlerts::start(new, &self.model.alerts);
        }
    }
}
