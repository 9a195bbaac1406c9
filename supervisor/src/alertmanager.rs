//! The Alertmanager sink's wire format: an alert notice as one alert of
//! Alertmanager's `POST /api/v2/alerts`, pure (the sink thread sends it).
//!
//! Alertmanager treats an alert as firing until its `endsAt`, so an open
//! alert is pushed with `endsAt` a few re-push intervals ahead and pushed
//! again every interval while it stays open (the sink's `repeat_after`,
//! through the sinks' own reminder cadence): if cronwarden dies, its alerts
//! resolve by themselves within [`ENDS_AFTER_PUSHES`] intervals instead of
//! firing forever (Prometheus does the same with its `resend_delay`). A
//! resolve is the same alert with `endsAt` = the time it resolved.

use std::time::Duration;

use cronwarden_shared::status::AlertNotice;
use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Map, Value};

/// How many re-push intervals ahead `endsAt` is set while an alert is open:
/// a missed push or two is no resolve.
pub const ENDS_AFTER_PUSHES: u32 = 4;

/// The path alerts are pushed to, under the sink's `url`.
pub const PATH: &str = "/api/v2/alerts";

/// `base` (Alertmanager's address) joined with [`PATH`].
pub fn endpoint(base: &str) -> String {
    format!("{}{PATH}", base.trim_end_matches('/'))
}

/// The request body for notice `n` at `now`, for a sink that re-pushes
/// every `every`: a list of one alert. Labels identify the alert (one per
/// kind, job and host, as cronwarden's own alert book does); the summary
/// and the rest are annotations, which Alertmanager does not group on.
pub fn body(n: &AlertNotice, now: Timestamp, every: Duration) -> Value {
    let mut labels = Map::new();
    labels.insert("alertname".into(), n.kind.as_str().into());
    if let Some(job) = &n.job {
        labels.insert("cronjob".into(), job.as_str().into());
    }
    labels.insert("severity".into(), n.severity.as_str().into());
    labels.insert("instance".into(), n.host.as_str().into());
    let ends_at = if n.event == "resolved" {
        // The resolve time itself, never later than now: an endsAt in the
        // future would keep it firing until then.
        n.resolved_at.unwrap_or(now).min(now)
    } else {
        let ahead = SignedDuration::try_from(every * ENDS_AFTER_PUSHES)
            .unwrap_or(SignedDuration::from_secs(3600));
        now.checked_add(ahead).unwrap_or(now)
    };
    json!([{
        "labels": labels,
        "annotations": {
            "summary": n.summary,
            "event": n.event,
        },
        // An alert restored after a restart, or resolved at once, must not
        // start after it ends.
        "startsAt": n.opened_at.min(ends_at).to_string(),
        "endsAt": ends_at.to_string(),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use cronwarden_shared::{alert_kind::AlertKind, status::Severity};

    fn notice(event: &str, job: Option<&str>) -> AlertNotice {
        AlertNotice {
            event: event.into(),
            kind: AlertKind::JobFailing,
            job: job.map(str::to_string),
            severity: Severity::Warning,
            summary: "job backup failed".into(),
            opened_at: "2026-12-01T03:00:00Z".parse().unwrap(),
            resolved_at: None,
            host: "db1".into(),
            details: Value::Null,
        }
    }

    #[test]
    fn an_open_alert_ends_four_pushes_ahead_and_a_resolve_ends_when_it_resolved() {
        let now: Timestamp = "2026-12-01T03:05:00Z".parse().unwrap();
        let open = body(
            &notice("opened", Some("backup")),
            now,
            Duration::from_secs(60),
        );
        assert_eq!(
            open,
            json!([{
                "labels": { "alertname": "job_failing", "cronjob": "backup", "severity": "warning", "instance": "db1" },
                "annotations": { "summary": "job backup failed", "event": "opened" },
                "startsAt": "2026-12-01T03:00:00Z",
                "endsAt": "2026-12-01T03:09:00Z",
            }])
        );
        let mut resolved = notice("resolved", None);
        resolved.resolved_at = Some("2026-12-01T03:04:00Z".parse().unwrap());
        let r = body(&resolved, now, Duration::from_secs(60));
        assert_eq!(r[0]["endsAt"], "2026-12-01T03:04:00Z");
        assert!(
            r[0]["labels"].get("cronjob").is_none(),
            "a worker alert has no job"
        );
        // No resolve time known: now.
        let r = body(&notice("resolved", None), now, Duration::from_secs(60));
        assert_eq!(r[0]["endsAt"], "2026-12-01T03:05:00Z");
    }

    #[test]
    fn the_endpoint_joins_with_one_slash() {
        assert_eq!(endpoint("http://am:9093/"), "http://am:9093/api/v2/alerts");
        assert_eq!(endpoint("http://am:9093"), "http://am:9093/api/v2/alerts");
    }
}
