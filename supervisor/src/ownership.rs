//! One alert per condition across hosts (store = postgres): which host
//! delivers a cluster-wide alert (`AlertKind::cluster_wide`: conditions of
//! a job's fires, which any host may run) to the sinks. The host that
//! opens such an alert asks the ledger to own it (`cw_alerts`, one row per
//! kind and job); only the owner delivers it (opened, reminders,
//! resolved), the others show it with its owner. A host with the
//! condition open that does not own it asks again every [`ASK_AGAIN`]: it
//! takes the alert over once the owner resolved it (the row is deleted) or
//! died (its lease ran out), and then delivers it as opened (a hand-over).
//!
//! The book is pure: it decides what to deliver and what to ask; the
//! asking happens on the thread of [`crate::owner_link`], whose answers
//! come back through [`Owners::answer`]. An opened notice waits at most
//! [`ANSWER_WITHIN`] for an answer, then goes out anyway (fail open: a
//! duplicate page beats a silent one). A single host has no book, and
//! per-host kinds pass through it untouched.

use std::{collections::BTreeMap, time::Duration};

use cronwarden_shared::status::AlertNotice;
use tokio::time::Instant;

use crate::alerts::AlertBook;
pub use crate::alerts::Key;

/// How long an opened notice waits for the ledger's answer before it is
/// delivered anyway.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(2);
/// How often a host that does not own an open alert asks again (and how
/// long an unanswered question waits before it is asked again).
pub const ASK_AGAIN: Duration = Duration::from_secs(3);

/// What the book wants of the ledger, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// Take the alert if no live host holds it; answer its owner.
    Own(Key),
    /// This host's condition cleared: give the alert up.
    Release(Key),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Owner {
    /// Asked, no answer yet (or the last question failed).
    Unknown,
    Me,
    Peer(String),
}

#[derive(Debug)]
struct Entry {
    owner: Owner,
    asked_at: Instant,
    /// This host told its sinks the alert opened (as its owner, or
    /// because the ledger did not answer in time): its reminders and its
    /// resolve go out too.
    delivered: bool,
    /// The opened notice, held until the ledger answers.
    held: Option<AlertNotice>,
    /// Open at start: `delivered` is assumed, until the ledger answers.
    restored: bool,
}

/// What to do after the book changed: notices for the sinks (already
/// recorded and logged where they came from) and questions for the ledger.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    pub deliver: Vec<AlertNotice>,
    pub asks: Vec<Ask>,
    /// Opened notices delivered without an answer (fail open), for the log.
    pub unanswered: Vec<AlertNotice>,
    /// Alerts this host took over from a peer, for the log.
    pub taken_over: Vec<AlertNotice>,
}

#[derive(Debug)]
pub struct Owners {
    host: String,
    entries: BTreeMap<Key, Entry>,
}

fn key_of(n: &AlertNotice) -> Key {
    (n.kind, n.job.clone())
}

impl Owners {
    /// The book of `host`, with the cluster-wide alerts open at start
    /// (restored from the store): they count as delivered, as on a single
    /// host, until the ledger names a peer as their owner.
    pub fn new(host: String, open: &[Key], now: Instant) -> (Owners, Vec<Ask>) {
        let mut entries = BTreeMap::new();
        let mut asks = vec![];
        for key in open.iter().filter(|k| k.0.cluster_wide()) {
            entries.insert(
                key.clone(),
                Entry {
                    owner: Owner::Unknown,
                    asked_at: now,
                    delivered: true,
                    held: None,
                    restored: true,
                },
            );
            asks.push(Ask::Own(key.clone()));
        }
        (Owners { host, entries }, asks)
    }

    /// Takes the notices of one evaluation: what the sinks get now and
    /// what to ask the ledger.
    pub fn notices(&mut self, notices: Vec<AlertNotice>, now: Instant) -> Outcome {
        let mut out = Outcome::default();
        for n in notices {
            if !n.kind.cluster_wide() {
                out.deliver.push(n);
                continue;
            }
            let key = key_of(&n);
            match n.event.as_str() {
                "opened" => {
                    out.asks.push(Ask::Own(key.clone()));
                    self.entries.insert(
                        key,
                        Entry {
                            owner: Owner::Unknown,
                            asked_at: now,
                            delivered: false,
                            held: Some(n),
                            restored: false,
                        },
                    );
                }
                "resolved" => {
                    // Released whatever the book knew: deleting a row this
                    // host does not hold changes nothing.
                    out.asks.push(Ask::Release(key.clone()));
                    if self.entries.remove(&key).is_none_or(|e| e.delivered) {
                        out.deliver.push(n);
                    }
                }
                _ => {
                    if self.delivers(&n) {
                        out.deliver.push(n);
                    }
                }
            }
        }
        out
    }

    /// Whether this host delivers `n`'s alert (its reminders, for the
    /// sinks that keep their own cadence). An alert the book does not
    /// know is delivered: better twice than never.
    pub fn delivers(&self, n: &AlertNotice) -> bool {
        !n.kind.cluster_wide() || self.entries.get(&key_of(n)).is_none_or(|e| e.delivered)
    }

    /// The ledger's answer to [`Ask::Own`]: the owner, or why it could not
    /// say. `book` gives the opened notice of an alert taken over.
    pub fn answer(
        &mut self,
        key: &Key,
        owner: Result<String, String>,
        book: &AlertBook,
    ) -> Outcome {
        let mut out = Outcome::default();
        let Some(e) = self.entries.get_mut(key) else {
            // Resolved meanwhile: its release is queued behind this answer.
            return out;
        };
        let restored = e.restored;
        e.restored = restored && owner.is_err();
        match owner {
            Ok(h) if h == self.host => {
                e.owner = Owner::Me;
                if !e.delivered {
                    e.delivered = true;
                    match e.held.take() {
                        Some(n) => out.deliver.push(n),
                        None => {
                            if let Some(n) = book.opened_notice(key) {
                                out.taken_over.push(n.clone());
                                out.deliver.push(n);
                            }
                        }
                    }
                }
            }
            Ok(h) => {
                e.owner = Owner::Peer(h);
                e.held = None;
                // Restored as delivered, but a peer holds it: its resolve
                // is the peer's to send. (One this host did deliver, not
                // knowing, it resolves too: no page is left open.)
                if restored {
                    e.delivered = false;
                }
            }
            Err(_) => {
                e.owner = Owner::Unknown;
                if let Some(n) = e.held.take() {
                    e.delivered = true;
                    out.unanswered.push(n.clone());
                    out.deliver.push(n);
                }
            }
        }
        out
    }

    /// Once a second: opened notices unanswered for [`ANSWER_WITHIN`] go
    /// out; alerts this host does not own are asked for again.
    pub fn tick(&mut self, now: Instant) -> Outcome {
        let mut out = Outcome::default();
        for (key, e) in &mut self.entries {
            let waited = now.saturating_duration_since(e.asked_at);
            if waited >= ANSWER_WITHIN {
                if let Some(n) = e.held.take() {
                    e.delivered = true;
                    out.unanswered.push(n.clone());
                    out.deliver.push(n);
                }
            }
            if e.owner != Owner::Me && waited >= ASK_AGAIN {
                e.asked_at = now;
                out.asks.push(Ask::Own(key.clone()));
            }
        }
        out
    }

    /// The host that delivers the alert, when the ledger said.
    pub fn owner(&self, key: &Key) -> Option<&str> {
        match &self.entries.get(key)?.owner {
            Owner::Me => Some(&self.host),
            Owner::Peer(h) => Some(h),
            Owner::Unknown => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::Condition;
    use cronwarden_shared::alert_kind::AlertKind;
    use cronwarden_shared::status::{Severity, State};
    use jiff::Timestamp;

    fn cond(kind: AlertKind) -> Condition {
        Condition {
            kind,
            job: Some("j".into()),
            severity: Severity::Warning,
            state: State::Degraded,
            summary: format!("{kind}"),
            details: serde_json::Value::Null,
            alert: true,
        }
    }

    fn key(kind: AlertKind) -> Key {
        (kind, Some("j".into()))
    }

    fn events(o: &Outcome) -> Vec<(AlertKind, &str)> {
        o.deliver
            .iter()
            .map(|n| (n.kind, n.event.as_str()))
            .collect()
    }

    /// A host and its alert book, judged at `t0 + s` seconds.
    struct Host {
        book: AlertBook,
        owners: Owners,
        t0: Instant,
    }

    impl Host {
        fn new(name: &str) -> Host {
            let t0 = Instant::now();
            let (owners, asks) = Owners::new(name.into(), &[], t0);
            assert!(asks.is_empty());
            Host {
                book: AlertBook::new(vec![]),
                owners,
                t0,
            }
        }

        fn at(&self, s: u64) -> Instant {
            self.t0 + Duration::from_secs(s)
        }

        fn judge(&mut self, conds: &[Condition], s: u64) -> Outcome {
            let notices = self.book.update(conds, Timestamp::now(), None);
            self.owners.notices(notices, self.at(s))
        }

        fn answer(&mut self, k: AlertKind, owner: Result<&str, &str>) -> Outcome {
            let owner = owner.map(str::to_string).map_err(str::to_string);
            self.owners.answer(&key(k), owner, &self.book)
        }
    }

    #[test]
    fn per_host_kinds_pass_through_and_the_owner_alone_delivers() {
        let mut h = Host::new("h0");
        let out = h.judge(
            &[cond(AlertKind::StoreError), cond(AlertKind::JobFailing)],
            0,
        );
        assert_eq!(events(&out), [(AlertKind::StoreError, "opened")]);
        assert_eq!(out.asks, [Ask::Own(key(AlertKind::JobFailing))]);
        assert_eq!(h.owners.owner(&key(AlertKind::JobFailing)), None);
        let out = h.answer(AlertKind::JobFailing, Ok("h0"));
        assert_eq!(events(&out), [(AlertKind::JobFailing, "opened")]);
        assert_eq!(h.owners.owner(&key(AlertKind::JobFailing)), Some("h0"));
        // The owner is not asked again, and resolves and releases.
        assert_eq!(h.owners.tick(h.at(10)), Outcome::default());
        let out = h.judge(&[], 11);
        assert_eq!(
            events(&out),
            [
                (AlertKind::JobFailing, "resolved"),
                (AlertKind::StoreError, "resolved")
            ]
        );
        assert_eq!(out.asks, [Ask::Release(key(AlertKind::JobFailing))]);
    }

    #[test]
    fn a_peer_owned_alert_is_shown_not_delivered_and_taken_over_when_freed() {
        let mut h = Host::new("h1");
        let c = [cond(AlertKind::JobLate)];
        h.judge(&c, 0);
        assert!(h.answer(AlertKind::JobLate, Ok("h0")).deliver.is_empty());
        assert_eq!(h.owners.owner(&key(AlertKind::JobLate)), Some("h0"));
        // Nothing when the answer window passes: a peer delivers it.
        assert_eq!(h.owners.tick(h.at(2)), Outcome::default());
        let again = h.owners.tick(h.at(ASK_AGAIN.as_secs()));
        assert_eq!(again.asks, [Ask::Own(key(AlertKind::JobLate))]);
        assert!(again.deliver.is_empty());
        // The owner resolved (or died): this host takes it over.
        let out = h.answer(AlertKind::JobLate, Ok("h1"));
        assert_eq!(events(&out), [(AlertKind::JobLate, "opened")]);
        assert_eq!(out.taken_over.len(), 1);
        let out = h.judge(&[], 9);
        assert_eq!(events(&out), [(AlertKind::JobLate, "resolved")]);
    }

    #[test]
    fn a_non_owner_resolves_silently() {
        let mut h = Host::new("h1");
        h.judge(&[cond(AlertKind::JobTimeout)], 0);
        h.answer(AlertKind::JobTimeout, Ok("h0"));
        let out = h.judge(&[], 1);
        assert!(out.deliver.is_empty(), "{out:?}");
        assert_eq!(out.asks, [Ask::Release(key(AlertKind::JobTimeout))]);
        // A late answer for a resolved alert changes nothing.
        assert_eq!(
            h.answer(AlertKind::JobTimeout, Ok("h1")),
            Outcome::default()
        );
    }

    #[test]
    fn an_unanswered_open_goes_out_after_the_bound_and_so_does_its_resolve() {
        let mut h = Host::new("h0");
        h.judge(&[cond(AlertKind::JobLost)], 0);
        assert!(h.owners.tick(h.at(1)).deliver.is_empty());
        let out = h.owners.tick(h.at(ANSWER_WITHIN.as_secs()));
        assert_eq!(events(&out), [(AlertKind::JobLost, "opened")]);
        assert_eq!(out.unanswered.len(), 1);
        assert!(h.owners.tick(h.at(3)).deliver.is_empty(), "sent twice");
        // A later answer naming a peer sends nothing more, and the resolve
        // of the page this host did send follows.
        assert!(h.answer(AlertKind::JobLost, Ok("h1")).deliver.is_empty());
        assert_eq!(events(&h.judge(&[], 4)), [(AlertKind::JobLost, "resolved")]);
    }

    #[test]
    fn a_failed_question_fails_open_at_once() {
        let mut h = Host::new("h0");
        h.judge(&[cond(AlertKind::JobFailing)], 0);
        let out = h.answer(AlertKind::JobFailing, Err("connection refused"));
        assert_eq!(events(&out), [(AlertKind::JobFailing, "opened")]);
        assert_eq!(h.owners.owner(&key(AlertKind::JobFailing)), None);
        let reminder = AlertNotice {
            event: "reminder".into(),
            ..out.deliver[0].clone()
        };
        assert!(h.owners.delivers(&reminder));
    }

    #[test]
    fn restored_alerts_stay_delivered_unless_a_peer_owns_them() {
        let t0 = Instant::now();
        let open = [key(AlertKind::JobFailing), (AlertKind::StoreError, None)];
        let (mut owners, asks) = Owners::new("h0".into(), &open, t0);
        assert_eq!(asks, [Ask::Own(key(AlertKind::JobFailing))]);
        let book = AlertBook::new(vec![]);
        assert!(owners
            .answer(&key(AlertKind::JobFailing), Ok("h1".into()), &book)
            .deliver
            .is_empty());
        let mut n = AlertBook::new(vec![])
            .update(&[cond(AlertKind::JobFailing)], Timestamp::now(), None)
            .remove(0);
        n.event = "resolved".into();
        let out = owners.notices(vec![n], t0);
        assert!(
            out.deliver.is_empty(),
            "a peer's alert resolved here: {out:?}"
        );
    }
}
