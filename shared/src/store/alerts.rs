//! The alert history: the supervisor records every alert that opens and
//! resolves; `alerts` reads it back (the open ones at start).

use jiff::Timestamp;
use rusqlite::params;

use super::{ts_parse, ts_text, Store, StoreError};
use crate::status::{AlertNotice, Severity};

impl Store {
    /// Records an alert that opened.
    pub fn alert_opened(&mut self, a: &AlertNotice) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO alerts (kind, job, severity, opened_at, summary, details) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![a.kind.as_str(), a.job, a.severity.as_str(), ts_text(a.opened_at), a.summary, a.details.to_string()],
            )
            .map(|_| ())
            .map_err(self.sql("recording an alert"))
    }

    /// Records that an open alert resolved.
    pub fn alert_resolved(&mut self, a: &AlertNotice) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE alerts SET resolved_at = ?3, summary = ?4 WHERE kind = ?1 AND job IS ?2 AND resolved_at IS NULL",
                params![a.kind.as_str(), a.job, a.resolved_at.map(ts_text), a.summary],
            )
            .map(|_| ())
            .map_err(self.sql("resolving an alert"))
    }

    /// Alerts, newest first; only the open ones unless `all`.
    pub fn alerts(&self, all: bool, limit: u32) -> Result<Vec<AlertNotice>, StoreError> {
        let sql = format!(
            "SELECT kind, job, severity, opened_at, resolved_at, summary, details FROM alerts {} ORDER BY id DESC LIMIT ?1",
            if all { "" } else { "WHERE resolved_at IS NULL" }
        );
        let mut st = self
            .conn
            .prepare(&sql)
            .map_err(self.sql("reading alerts"))?;
        let rows = st
            .query_map([limit as i64], |r| {
                let severity = match r.get::<_, String>(2)?.as_str() {
                    "critical" => Severity::Critical,
                    "info" => Severity::Info,
                    _ => Severity::Warning,
                };
                let resolved_at = ts_parse(r.get(4)?);
                Ok(AlertNotice {
                    event: if resolved_at.is_some() {
                        "resolved"
                    } else {
                        "opened"
                    }
                    .into(),
                    kind: r.get::<_, String>(0)?.parse().map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(
                            0,
                            rusqlite::types::Type::Text,
                            Box::new(e),
                        )
                    })?,
                    job: r.get(1)?,
                    severity,
                    opened_at: ts_parse(r.get(3)?).unwrap_or_else(Timestamp::now),
                    resolved_at,
                    summary: r.get(5)?,
                    host: String::new(),
                    details: serde_json::from_str(&r.get::<_, String>(6)?).unwrap_or_default(),
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(self.sql("reading alerts"))?;
        Ok(rows)
    }
}
