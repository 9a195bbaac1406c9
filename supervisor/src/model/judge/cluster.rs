//! The shared ledger's conditions (store = postgres), from the worker's
//! last report of it: this host's clock off the database's beyond the
//! bound, and jobs whose definition here differs from most live hosts'.
//! Both degrade: fires run early or late against the other hosts, or not
//! at all here, and only an operator can mend either.

use cronwarden_shared::{
    alert_kind::AlertKind,
    status::{Severity, State},
    wire::ClusterHealth,
};
use serde_json::json;

use super::worker::condition;
use crate::alerts::Condition;

pub(super) fn conditions(h: Option<&ClusterHealth>) -> Vec<Condition> {
    let Some(h) = h else {
        return vec![];
    };
    let mut out = vec![];
    if let Some(skew) = h.skew_ms.filter(|s| s.unsigned_abs() > h.skew_bound_ms) {
        let way = if skew > 0 { "ahead of" } else { "behind" };
        out.push(condition(
            AlertKind::ClusterClockSkew,
            Severity::Warning,
            State::Degraded,
            format!(
                "host {}'s clock is {} ms {way} the shared ledger's database (bound {} ms): its fires are early or late against the other hosts'",
                h.host,
                skew.unsigned_abs(),
                h.skew_bound_ms
            ),
            json!({"host": h.host, "skew_ms": skew, "bound_ms": h.skew_bound_ms}),
            true,
        ));
    }
    for d in &h.differs {
        let mut c = condition(
            AlertKind::JobDefinitionDiffers,
            Severity::Warning,
            State::Degraded,
            format!(
                "job {}: host {}'s definition (hash {}) differs from the one most live hosts hold ({}): its fires are not claimed here",
                d.job, h.host, d.ours, d.theirs
            ),
            json!({"host": h.host, "ours": d.ours, "theirs": d.theirs}),
            true,
        );
        c.job = Some(d.job.clone());
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use cronwarden_shared::{config::Config, wire::DefinitionDiffers, wire::Event};
    use jiff::Timestamp;
    use tokio::time::Instant;

    use super::*;
    use crate::model::{judge::tests::notices, Evaluation, Model};

    /// The kinds of one evaluation's notices of `event` (opened, resolved).
    fn kinds(e: &Evaluation, event: &str) -> Vec<AlertKind> {
        notices(e)
            .into_iter()
            .filter(|(ev, ..)| ev == event)
            .map(|(_, kind, _)| kind)
            .collect()
    }

    fn health(skew_ms: Option<i64>, differs: &[&str]) -> ClusterHealth {
        ClusterHealth {
            host: "h1".into(),
            skew_ms,
            skew_bound_ms: 2000,
            differs: differs
                .iter()
                .map(|j| DefinitionDiffers {
                    job: j.to_string(),
                    ours: "aaaa".into(),
                    theirs: "bbbb".into(),
                })
                .collect(),
            peers: vec![],
        }
    }

    #[test]
    fn skew_within_the_bound_either_way_or_unmeasured_is_no_condition() {
        for s in [None, Some(0), Some(2000), Some(-2000), Some(-1999)] {
            assert!(conditions(Some(&health(s, &[]))).is_empty(), "{s:?}");
        }
        assert!(conditions(None).is_empty());
    }

    #[test]
    fn skew_beyond_the_bound_degrades_and_says_which_way() {
        let c = conditions(Some(&health(Some(-2001), &[])));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].kind, AlertKind::ClusterClockSkew);
        assert_eq!(c[0].state, State::Degraded);
        assert!(c[0].alert);
        assert!(c[0].summary.contains("2001 ms behind"), "{}", c[0].summary);
        assert_eq!(c[0].details["skew_ms"], -2001);
        let c = conditions(Some(&health(Some(5000), &[])));
        assert!(
            c[0].summary.contains("5000 ms ahead of"),
            "{}",
            c[0].summary
        );
    }

    #[test]
    fn each_differing_job_is_its_own_condition() {
        let c = conditions(Some(&health(None, &["a", "b"])));
        let jobs: Vec<_> = c.iter().map(|c| c.job.as_deref()).collect();
        assert_eq!(jobs, [Some("a"), Some("b")]);
        assert!(c.iter().all(|c| c.kind == AlertKind::JobDefinitionDiffers
            && c.state == State::Degraded
            && c.summary.contains("aaaa")
            && c.summary.contains("bbbb")));
    }

    /// Through the model: the report opens the alerts and degrades the
    /// status; the next report without them resolves them; a new worker
    /// forgets the old one's report.
    #[test]
    fn reports_open_and_resolve_the_alerts() {
        let config = Config::parse(
            Path::new("/x/cronwarden.toml"),
            "[[job]]\nname = \"a\"\nschedule = \"@every 1h\"\nshell = \"true\"\n",
        )
        .unwrap();
        let mut m = Model::for_test(config);
        let t0 = Instant::now();
        let wall: Timestamp = "2026-12-03T12:00:00Z".parse().unwrap();
        m.apply(Event::Cluster(health(Some(3000), &["a"])), t0);
        let e = m.evaluate(t0, wall);
        let opened = kinds(&e, "opened");
        assert!(opened.contains(&AlertKind::ClusterClockSkew), "{opened:?}");
        assert!(
            opened.contains(&AlertKind::JobDefinitionDiffers),
            "{opened:?}"
        );
        let s = m.status(t0, wall);
        assert!(
            s.reasons.iter().any(|r| r.contains("differs")),
            "{:?}",
            s.reasons
        );
        m.apply(Event::Cluster(health(Some(10), &[])), t0);
        let e = m.evaluate(t0, wall);
        let resolved = kinds(&e, "resolved");
        assert!(
            resolved.contains(&AlertKind::ClusterClockSkew),
            "{resolved:?}"
        );
        assert!(
            resolved.contains(&AlertKind::JobDefinitionDiffers),
            "{resolved:?}"
        );
        // The status lists the peers of the last report, the only source.
        let mut with_peer = health(Some(3000), &[]);
        with_peer.peers = vec![cronwarden_shared::cluster::Peer {
            host: "h2".into(),
            last_seen: wall,
            skew_ms: 1,
            claimed_last_hour: 9,
            alive: true,
        }];
        m.apply(Event::Cluster(with_peer.clone()), t0);
        assert_eq!(m.status(t0, wall).peers, with_peer.peers);
        m.worker_spawned_at(7, t0, wall);
        assert!(m.cluster.is_none());
        assert!(m.status(t0, wall).peers.is_empty());
    }
}
