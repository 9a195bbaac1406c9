//! Formatting of instants for people and programs: RFC 3339, always with an
//! explicit offset, so `next` and `check` output can be compared as text.

use jiff::{tz::TimeZone, Timestamp};

/// An instant in UTC to the second, e.g. `2026-03-29T01:00:00Z`: for
/// summaries and log messages, where nanoseconds are noise to a person.
pub fn to_second(ts: Timestamp) -> String {
    ts.round(jiff::Unit::Second).unwrap_or(ts).to_string()
}

/// RFC 3339 in the given zone, e.g. `2026-03-29T03:00:00+02:00`; fractional
/// seconds appear only when the instant has them (`@every 1500ms`).
pub fn rfc3339_in(ts: Timestamp, tz: &TimeZone) -> String {
    let z = ts.to_zoned(tz.clone());
    if z.subsec_nanosecond() == 0 {
        z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    } else {
        z.strftime("%Y-%m-%dT%H:%M:%S%.f%:z").to_string()
    }
}

/// A duration for people: `850ms`, `12s`, `3m 20s`, `2h 5m`, `3d 4h`.
pub fn human_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis() as u64;
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86399 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_offset_and_optional_fraction() {
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        let ts: Timestamp = "2026-03-29T01:00:00Z".parse().unwrap();
        assert_eq!(rfc3339_in(ts, &tz), "2026-03-29T03:00:00+02:00");
        let ts: Timestamp = "2026-01-01T00:00:00.5Z".parse().unwrap();
        assert_eq!(
            rfc3339_in(ts, &TimeZone::UTC),
            "2026-01-01T00:00:00.5+00:00"
        );
    }

    #[test]
    fn human_durations() {
        use std::time::Duration;
        assert_eq!(human_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(human_duration(Duration::from_secs(200)), "3m 20s");
        assert_eq!(human_duration(Duration::from_secs(7500)), "2h 5m");
    }
}
