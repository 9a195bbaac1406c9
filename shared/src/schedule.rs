//! Schedules: when a job fires.
//!
//! Three kinds: cron expressions (vixie/OCPS 1.0 with an optional leading
//! seconds field and the `@hourly`… nicknames), `@every <duration>`, and
//! `@reboot` (once per boot: it has no fire instants, and the worker fires
//! it when it starts in a boot the job has not fired in yet).
//!
//! Cron fields match *local wall time* in the job's zone. croner does the
//! field matching on civil (zone-less) date-times only; mapping a matching
//! wall time to instants is done here, because the DST rules of DESIGN.md
//! differ from croner's own in a few gap/fold cases:
//!
//! - a wall time skipped by a DST gap fires once, at the first instant after
//!   the gap (as cronie does; never dropped);
//! - a wall time repeated by a DST fold fires once, at its first occurrence,
//!   unless the hour field starts with `*`: such schedules keep their
//!   real-time cadence and fire in both passes.
//!
//! Invariant: `next_after(t)` is strictly greater than `t`, and iterating it
//! yields every fire exactly once, in increasing order.

use std::{sync::Arc, time::Duration};

use croner::parser::{CronParser, Seconds, Year};
use jiff::{
    civil::DateTime,
    tz::{AmbiguousOffset, TimeZone},
    SignedDuration, Timestamp, ToSpan,
};

/// Why an expression is not a schedule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("invalid cron expression {expr:?}: {reason}")]
    Cron { expr: String, reason: String },
    #[error("invalid interval {expr:?}: {reason} (expected e.g. \"@every 5m\")")]
    Every { expr: String, reason: String },
    #[error("{expr:?} never fires (no date matches it)")]
    NeverFires { expr: String },
}

mod parsed;

#[derive(Debug, Clone)]
enum Kind {
    /// The expression is the schedule's text; its parse is made on use
    /// (`parsed.rs`), so a job costs its text, not 5 KiB of parse.
    Cron {
        /// The hour field starts with `*`: fire in both passes of a fold.
        hour_star: bool,
    },
    Every(Duration),
    Reboot,
}

/// A parsed schedule bound to its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Shared by the copies (config, plan, model).
    expr: Arc<str>,
    kind: Kind,
    tz: TimeZone,
}

/// How far back in wall time a fold's second pass can reach. Real zones
/// repeat at most two hours (double summer time); three is a safe margin.
const FOLD_REACH_HOURS: i64 = 3;

impl Schedule {
    /// Parses `expr` for the zone `tz`.
    pub fn parse(expr: &str, tz: &TimeZone) -> Result<Schedule, ScheduleError> {
        let trimmed = expr.trim();
        let text: Arc<str> = trimmed.into();
        let kind = if trimmed.eq_ignore_ascii_case("@reboot") {
            Kind::Reboot
        } else if let Some(rest) = strip_prefix_ci(trimmed, "@every") {
            let rest = rest.trim();
            if rest.is_empty() {
                return Err(ScheduleError::Every {
                    expr: expr.into(),
                    reason: "missing duration".into(),
                });
            }
            let period = humantime::parse_duration(rest).map_err(|e| ScheduleError::Every {
                expr: expr.into(),
                reason: e.to_string(),
            })?;
            if period < Duration::from_millis(100) {
                return Err(ScheduleError::Every {
                    expr: expr.into(),
                    reason: "interval must be at least 100ms".into(),
                });
            }
            Kind::Every(period)
        } else {
            // Validated here, and kept for the first fire asked next.
            let cron = parse_cron(trimmed).map_err(|reason| ScheduleError::Cron {
                expr: expr.into(),
                reason,
            })?;
            parsed::keep(&text, &Arc::new(cron));
            Kind::Cron {
                hour_star: hour_field_is_star(trimmed),
            }
        };
        let s = Schedule {
            expr: text,
            kind,
            tz: tz.clone(),
        };
        if let Kind::Cron { .. } = s.kind {
            // croner rejects impossible dates (e.g. 30 February) only when
            // searching; a schedule that never fires is a config error.
            if s.next_after(Timestamp::now(), None).is_none() {
                return Err(ScheduleError::NeverFires { expr: expr.into() });
            }
        }
        Ok(s)
    }

    /// The expression as written (trimmed).
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The zone cron fields are matched in.
    pub fn timezone(&self) -> &TimeZone {
        &self.tz
    }

    /// The interval of an `@every` schedule.
    pub fn every(&self) -> Option<Duration> {
        match self.kind {
            Kind::Every(d) => Some(d),
            Kind::Cron { .. } | Kind::Reboot => None,
        }
    }

    /// Whether this is `@reboot`: once per boot, never at an instant.
    pub fn is_reboot(&self) -> bool {
        matches!(self.kind, Kind::Reboot)
    }

    /// The first wall time in `[from, to)` that the cron fields match,
    /// whether or not it exists in the zone (`None` for `@every`): how
    /// `check` finds fixed times that fall into a DST gap or fold.
    pub fn first_wall_match(&self, from: DateTime, to: DateTime) -> Option<DateTime> {
        match &self.kind {
            Kind::Cron { .. } => self
                .cron()?
                .find_next_occurrence(&from, true)
                .ok()
                .filter(|w| *w < to),
            Kind::Every(_) | Kind::Reboot => None,
        }
    }

    /// The parse of a cron schedule's text (see `parsed.rs`). It was
    /// validated when the schedule was made, so `None` (a parse failing
    /// now) cannot happen; it would mean no fire rather than a panic.
    fn cron(&self) -> Option<Arc<croner::Cron>> {
        parsed::cron(&self.expr, parse_cron).ok()
    }

    /// Whether the hour field starts with `*` (such a schedule keeps its
    /// real-time cadence through a DST fold); false for `@every`.
    pub fn hour_star(&self) -> bool {
        matches!(
            self.kind,
            Kind::Cron {
                hour_star: true,
                ..
            }
        )
    }

    /// The first fire strictly after `after`.
    ///
    /// `anchor` matters only for `@every`: fires are `anchor + k·period`, so a
    /// restarted worker keeps the cadence of the last scheduled time. Without
    /// an anchor the first fire is one period after `after` rounded up to a
    /// whole second.
    pub fn next_after(&self, after: Timestamp, anchor: Option<Timestamp>) -> Option<Timestamp> {
        match &self.kind {
            Kind::Every(period) => every_next(after, anchor, *period),
            Kind::Cron { hour_star } => cron_next(&*self.cron()?, *hour_star, &self.tz, after),
            Kind::Reboot => None,
        }
    }

    /// Every fire in `(from, to]`, in order.
    pub fn fires_between(
        &self,
        from: Timestamp,
        to: Timestamp,
        anchor: Option<Timestamp>,
    ) -> impl Iterator<Item = Timestamp> + '_ {
        let mut cursor = from;
        std::iter::from_fn(move || {
            let next = self.next_after(cursor, anchor.or(Some(from)))?;
            if next > to {
                return None;
            }
            cursor = next;
            Some(next)
        })
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    // `get`, not indexing: the text is the user's and may split a character
    // where the prefix ends.
    if s.get(..prefix.len())?.eq_ignore_ascii_case(prefix) {
        let rest = &s[prefix.len()..];
        // `@everyday` is not `@every day`.
        if rest.is_empty() || rest.starts_with(char::is_whitespace) {
            return Some(rest);
        }
    }
    None
}

/// The cron nicknames (vixie cron's), besides `@every <duration>`.
pub const NICKNAMES: &[&str] = &[
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];

fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    let fields = expr.split_whitespace().count();
    if !expr.starts_with('@') && !(5..=6).contains(&fields) {
        return Err(format!(
            "expected 5 fields (minute hour day-of-month month day-of-week) \
             or 6 with a leading seconds field, found {fields}"
        ));
    }
    if expr.starts_with('@') && !NICKNAMES.iter().any(|k| k.eq_ignore_ascii_case(expr)) {
        return Err(format!(
            "unknown nickname; expected one of {}, @reboot or @every <duration>",
            NICKNAMES.join(", ")
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        // vixie semantics: day-of-month OR day-of-week when both are restricted.
        .dom_and_dow(false)
        .build()
        .parse(expr)
        .map_err(|e| out_of_range(expr).unwrap_or_else(|| e.to_string()))
}

/// The cron fields in order, with the values each accepts.
const FIELDS: [(&str, u32, u32); 6] = [
    ("seconds", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
];

/// The first number outside its field's range, named with the field and
/// the range (croner says only "Number out of bounds").
fn out_of_range(expr: &str) -> Option<String> {
    let parts: Vec<&str> = expr.split_whitespace().collect();
    let fields = if parts.len() == 6 {
        &FIELDS[..]
    } else {
        &FIELDS[1..]
    };
    for (part, (name, lo, hi)) in parts.iter().zip(fields) {
        for item in part.split(',') {
            // A step (`*/90`) and an nth weekday (`5#3`) are not values
            // of the field.
            let values = item.split(['/', '#']).next().unwrap_or_default();
            for n in values.split(|c: char| !c.is_ascii_digit()) {
                let Ok(n) = n.parse::<u64>() else {
                    continue;
                };
                if n < u64::from(*lo) || n > u64::from(*hi) {
                    return Some(format!(
                        "{name} field: {n} is out of range {lo}-{hi} (in {part:?})"
                    ));
                }
            }
        }
    }
    None
}

/// Whether the hour field starts with `*` (nicknames expanded as cron does).
fn hour_field_is_star(expr: &str) -> bool {
    if expr.starts_with('@') {
        return expr.eq_ignore_ascii_case("@hourly");
    }
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let hour = if fields.len() == 6 {
        fields[2]
    } else {
        fields[1]
    };
    hour.starts_with('*')
}

fn every_next(after: Timestamp, anchor: Option<Timestamp>, period: Duration) -> Option<Timestamp> {
    let period = SignedDuration::try_from(period).ok()?;
    let Some(anchor) = anchor else {
        // A fresh cadence starts on a whole second: fire times stay
        // readable (10:00:15, not 10:00:15.200207046) at the cost of at
        // most one second.
        let whole = after
            .round(
                jiff::TimestampRound::new()
                    .smallest(jiff::Unit::Second)
                    .mode(jiff::RoundMode::Ceil),
            )
            .ok()?;
        return whole.checked_add(period).ok();
    };
    if after < anchor {
        return Some(anchor);
    }
    let elapsed = after.duration_since(anchor);
    let periods = elapsed.as_nanos() / period.as_nanos() + 1;
    let offset = SignedDuration::from_nanos(i64::try_from(periods * period.as_nanos()).ok()?);
    anchor.checked_add(offset).ok()
}

/// The instants a matching wall time stands for under the DST rules.
fn resolve(tz: &TimeZone, wall: DateTime, hour_star: bool) -> ([Option<Timestamp>; 2], usize) {
    match tz.to_ambiguous_timestamp(wall).offset() {
        AmbiguousOffset::Unambiguous { offset } => ([offset.to_timestamp(wall).ok(), None], 1),
        AmbiguousOffset::Gap { after, .. } => {
            // `wall` does not exist: fire at the first instant after the gap,
            // which is the transition itself.
            let probe = after.to_timestamp(wall).ok();
            let t = probe.and_then(|p| tz.following(p).next().map(|tr| tr.timestamp()));
            ([t, None], 1)
        }
        AmbiguousOffset::Fold { before, after } => {
            let first = before.to_timestamp(wall).ok();
            if hour_star {
                ([first, after.to_timestamp(wall).ok()], 2)
            } else {
                ([first, None], 1)
            }
        }
    }
}

fn cron_next(
    cron: &croner::Cron,
    hour_star: bool,
    tz: &TimeZone,
    after: Timestamp,
) -> Option<Timestamp> {
    let reach = SignedDuration::from_hours(FOLD_REACH_HOURS);
    let wall_after = tz.to_datetime(after);
    // Fast path: no transition anywhere near, so wall time and instants move
    // together and the next matching wall time is the answer.
    let candidate = cron.find_next_occurrence(&wall_after, false).ok()?;
    let near_transition = after
        .checked_sub(reach)
        .ok()
        .and_then(|from| tz.following(from).next())
        .map(|tr| tr.timestamp());
    let (instants, _) = resolve(tz, candidate, hour_star);
    let first = instants[0]?;
    match near_transition {
        None => return Some(first),
        Some(tr) if tr > first.checked_add(reach).ok()? => return Some(first),
        _ => {}
    }
    // Slow path, near a transition: a fold's second pass can put a wall time
    // *earlier* than wall(after) at an instant later than `after`, so walk
    // matching wall times from the earliest that can still fire after
    // `after`, and keep the earliest instant past it. Earliest instants never
    // decrease as wall time increases, so once one passes the best found,
    // nothing later can beat it.
    walk_from(cron, hour_star, tz, after, walk_start(tz, after)?)
}

/// The earliest wall time whose fires can come after `after`: a fire at
/// instant t under offset o has wall time t + o, and t is later than both
/// `after` and the start of o's period. Starting the walk anywhere earlier
/// only costs time: starting three hours back (as this once did) made a
/// per-second schedule take ~10,000 steps per fire for hours around every
/// DST change, which the property tests measured at ~200 ms a fire.
/// Transitions beyond three days need no look: offsets differ by at most 26
/// hours, so their wall times lie beyond `after + 2 days` anyway.
fn walk_start(tz: &TimeZone, after: Timestamp) -> Option<DateTime> {
    let horizon = after.checked_add(SignedDuration::from_hours(72)).ok()?;
    let mut start = tz.to_offset(after).to_datetime(after);
    for tr in tz.following(after) {
        if tr.timestamp() > horizon {
            break;
        }
        start = start.min(tr.offset().to_datetime(tr.timestamp()));
    }
    // The walk looks strictly after its cursor; a fire may sit exactly at a
    // transition, so step back one nanosecond.
    start.checked_sub(1.nanosecond()).ok()
}

fn walk_from(
    cron: &croner::Cron,
    hour_star: bool,
    tz: &TimeZone,
    after: Timestamp,
    mut cursor: DateTime,
) -> Option<Timestamp> {
    let mut best: Option<Timestamp> = None;
    for _ in 0..200_000 {
        let wall = cron.find_next_occurrence(&cursor, false).ok()?;
        let (instants, n) = resolve(tz, wall, hour_star);
        let earliest = instants[0]?;
        if best.is_some_and(|b| earliest > b) {
            break;
        }
        for t in instants[..n].iter().flatten() {
            if *t > after && best.is_none_or(|b| *t < b) {
                best = Some(*t);
            }
        }
        cursor = fold_skip(tz, wall, &instants, hour_star, after).unwrap_or(wall);
    }
    best
}

/// Where the walk may go on from a wall time inside a fold. The fold's
/// later wall times can win only by their first pass (their second-pass
/// instants come later than this one's, or are no fires at all when the hour
/// field is fixed), and a first pass lies after `after` only from wall time
/// `after + offset before the fold` on. Skipping there, but never past the
/// fold's end, spares a per-second schedule 3,600 steps a fire.
fn fold_skip(
    tz: &TimeZone,
    wall: DateTime,
    instants: &[Option<Timestamp>; 2],
    hour_star: bool,
    after: Timestamp,
) -> Option<DateTime> {
    let AmbiguousOffset::Fold { before, .. } = tz.to_ambiguous_timestamp(wall).offset() else {
        return None;
    };
    if hour_star && instants[1].is_none_or(|t| t <= after) {
        return None;
    }
    let transition = tz.following(instants[0]?).next()?.timestamp();
    let fold_end = before.to_datetime(transition);
    let target = before.to_datetime(after).min(fold_end);
    Some(target.checked_sub(1.nanosecond()).ok()?.max(wall))
}

impl Schedule {
    /// The next fire by the plain walk from three hours back in wall time
    /// (this module's algorithm before the walk got its tighter start): the
    /// reference the property tests compare [`Schedule::next_after`] with.
    #[cfg(test)]
    pub(crate) fn next_after_by_full_walk(&self, after: Timestamp) -> Option<Timestamp> {
        match &self.kind {
            Kind::Every(_) | Kind::Reboot => None,
            Kind::Cron { hour_star } => {
                let cron = self.cron()?;
                let start = self
                    .tz
                    .to_datetime(after)
                    .checked_sub(FOLD_REACH_HOURS.hours())
                    .ok()?;
                walk_from(&cron, *hour_star, &self.tz, after, start)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_out_of_range_value_names_its_field_and_range() {
        let err = |e: &str| Schedule::parse(e, &TimeZone::UTC).unwrap_err().to_string();
        let e = err("61 * * * *");
        assert!(e.contains("minute field: 61 is out of range 0-59"), "{e}");
        let e = err("0 0 24 * * *");
        assert!(e.contains("hour field: 24 is out of range 0-23"), "{e}");
        let e = err("0 0 1-32 * *");
        assert!(
            e.contains("day-of-month field: 32 is out of range 1-31"),
            "{e}"
        );
        let e = err("0 0 * 13 *");
        assert!(e.contains("month field: 13 is out of range 1-12"), "{e}");
        let e = err("0 0 * * 8");
        assert!(
            e.contains("day-of-week field: 8 is out of range 0-7"),
            "{e}"
        );
    }

    fn next_n(expr: &str, tz: &str, from: &str, n: usize) -> Vec<String> {
        let tz = TimeZone::get(tz).unwrap();
        let s = Schedule::parse(expr, &tz).unwrap();
        let mut t: Timestamp = from.parse().unwrap();
        let mut out = vec![];
        for _ in 0..n {
            t = s.next_after(t, None).unwrap();
            out.push(crate::timefmt::rfc3339_in(t, &tz));
        }
        out
    }

    #[test]
    fn berlin_gap_fires_once_at_end_of_gap() {
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST.
        assert_eq!(
            next_n("30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z", 2),
            ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]
        );
        // Every quarter hour inside the gap collapses onto 03:00, once.
        assert_eq!(
            next_n("*/15 2,3 * * *", "Europe/Berlin", "2026-03-29T00:50:00Z", 3),
            [
                "2026-03-29T03:00:00+02:00",
                "2026-03-29T03:15:00+02:00",
                "2026-03-29T03:30:00+02:00"
            ]
        );
    }

    #[test]
    fn berlin_fold_fixed_hour_fires_once_star_hour_twice() {
        // 2026-10-25: 03:00 CEST falls back to 02:00 CET.
        assert_eq!(
            next_n("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 2),
            ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
        );
        assert_eq!(
            next_n("30 * * * *", "Europe/Berlin", "2026-10-24T23:00:00Z", 3),
            [
                "2026-10-25T01:30:00+02:00",
                "2026-10-25T02:30:00+02:00",
                "2026-10-25T02:30:00+01:00"
            ]
        );
    }

    #[test]
    fn new_york_gap_and_fold() {
        // 2026-03-08 02:00 EST -> 03:00 EDT; 2026-11-01 02:00 EDT -> 01:00 EST.
        assert_eq!(
            next_n("15 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", 1),
            ["2026-03-08T03:00:00-04:00"]
        );
        assert_eq!(
            next_n("15 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", 2),
            ["2026-11-01T01:15:00-04:00", "2026-11-02T01:15:00-05:00"]
        );
        assert_eq!(
            next_n(
                "*/30 * * * *",
                "America/New_York",
                "2026-11-01T05:10:00Z",
                3
            ),
            [
                "2026-11-01T01:30:00-04:00",
                "2026-11-01T01:00:00-05:00",
                "2026-11-01T01:30:00-05:00"
            ]
        );
    }

    #[test]
    fn starting_inside_first_pass_still_sees_second_pass() {
        // From 01:50 EDT (first pass), the next */30 is 01:00 EST, a wall
        // time earlier than the starting one.
        assert_eq!(
            next_n(
                "*/30 * * * *",
                "America/New_York",
                "2026-11-01T05:50:00Z",
                1
            ),
            ["2026-11-01T01:00:00-05:00"]
        );
    }

    #[test]
    fn dom_or_dow_when_both_restricted() {
        // 13th of the month OR a Friday.
        assert_eq!(
            next_n("0 0 13 * 5", "UTC", "2026-11-01T00:00:00Z", 4),
            [
                "2026-11-06T00:00:00+00:00",
                "2026-11-13T00:00:00+00:00",
                "2026-11-20T00:00:00+00:00",
                "2026-11-27T00:00:00+00:00"
            ]
        );
        assert_eq!(
            next_n("0 0 1 * MON", "UTC", "2026-11-25T00:00:00Z", 2),
            ["2026-11-30T00:00:00+00:00", "2026-12-01T00:00:00+00:00"]
        );
        // Only day-of-week restricted: AND with the star, so Mondays only.
        assert_eq!(
            next_n("0 0 * * 1", "UTC", "2026-11-24T00:00:00Z", 1),
            ["2026-11-30T00:00:00+00:00"]
        );
    }

    #[test]
    fn sunday_is_0_and_7_names_ranges_steps() {
        let a = next_n("0 12 * * 0", "UTC", "2026-11-24T00:00:00Z", 2);
        let b = next_n("0 12 * * 7", "UTC", "2026-11-24T00:00:00Z", 2);
        let c = next_n("0 12 * * sun", "UTC", "2026-11-24T00:00:00Z", 2);
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a[0], "2026-11-29T12:00:00+00:00");
        assert_eq!(
            next_n(
                "0 9-17/4 * jan-mar mon-fri",
                "UTC",
                "2026-11-24T00:00:00Z",
                3
            ),
            [
                "2027-01-01T09:00:00+00:00",
                "2027-01-01T13:00:00+00:00",
                "2027-01-01T17:00:00+00:00"
            ]
        );
    }

    #[test]
    fn seconds_field_nicknames_every_and_leap_day() {
        assert_eq!(
            next_n("*/20 * * * * *", "UTC", "2026-11-24T10:00:05Z", 3),
            [
                "2026-11-24T10:00:20+00:00",
                "2026-11-24T10:00:40+00:00",
                "2026-11-24T10:01:00+00:00"
            ]
        );
        assert_eq!(
            next_n("@hourly", "UTC", "2026-11-24T10:00:00Z", 1),
            ["2026-11-24T11:00:00+00:00"]
        );
        assert_eq!(
            next_n("@every 90s", "UTC", "2026-11-24T10:00:00Z", 2),
            ["2026-11-24T10:01:30+00:00", "2026-11-24T10:03:00+00:00"]
        );
        assert_eq!(
            next_n("0 0 29 2 *", "UTC", "2026-01-01T00:00:00Z", 2),
            ["2028-02-29T00:00:00+00:00", "2032-02-29T00:00:00+00:00"]
        );
    }

    #[test]
    fn every_keeps_its_anchor_cadence() {
        let s = Schedule::parse("@every 10m", &TimeZone::UTC).unwrap();
        let anchor: Timestamp = "2026-11-24T10:00:00Z".parse().unwrap();
        let after: Timestamp = "2026-11-24T10:25:00Z".parse().unwrap();
        assert_eq!(
            s.next_after(after, Some(anchor)).unwrap().to_string(),
            "2026-11-24T10:30:00Z"
        );
    }

    #[test]
    fn rejects_bad_expressions_with_reasons() {
        for bad in [
            "",
            "* * * *",
            "61 * * * *",
            "* * * * * * *",
            "@sometimes",
            "@every",
            "@every soon",
            "@every 1ms",
            "0 0 30 2 *",
        ] {
            assert!(
                Schedule::parse(bad, &TimeZone::UTC).is_err(),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn per_second_schedules_near_transitions_walk_little_and_agree_with_the_full_walk() {
        // Found by the property test: every second, just before Kathmandu's
        // 1986 shift from +05:30 to +05:45, took ~200 ms a fire; and the
        // second pass of a fold (where the walk skips ahead) must lose nothing.
        for (expr, zone, from) in [
            (
                "* * * * 3-12,8-11/3 *",
                "Asia/Kathmandu",
                "1985-12-31T17:48:09Z",
            ),
            ("* * * * * *", "America/New_York", "2026-11-01T05:59:30Z"),
            ("* * * * * *", "America/New_York", "2026-11-01T06:30:00Z"),
            ("*/7 * 1 * * *", "America/New_York", "2026-11-01T06:30:00Z"),
            ("* * * * * *", "Europe/Berlin", "2026-03-29T00:59:58Z"),
            (
                "*/20 * 1 * * *",
                "Australia/Lord_Howe",
                "2026-04-04T14:00:00Z",
            ),
        ] {
            let tz = TimeZone::get(zone).unwrap();
            let s = Schedule::parse(expr, &tz).unwrap();
            let mut t: Timestamp = from.parse().unwrap();
            let from = t;
            for _ in 0..15 {
                let next = s.next_after(t, None).unwrap();
                assert_eq!(
                    Some(next),
                    s.next_after_by_full_walk(t),
                    "{expr} {zone} after {t}"
                );
                assert!(next > t);
                t = next;
            }
            let (mut t, began) = (from, std::time::Instant::now());
            for _ in 0..200 {
                t = s.next_after(t, None).unwrap();
            }
            eprintln!("{expr} in {zone}: 200 fires in {:?}", began.elapsed());
        }
    }

    #[test]
    fn non_ascii_text_is_an_error_not_a_panic() {
        // Found by the property test: "@every" sliced inside the 'Ⱥ'.
        for bad in ["B\u{1bc75}Ⱥ=", "@évery 5s", "ÿÿÿÿÿÿ"] {
            assert!(Schedule::parse(bad, &TimeZone::UTC).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn fires_between_is_strictly_increasing_and_complete() {
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        let s = Schedule::parse("*/10 * * * *", &tz).unwrap();
        let from: Timestamp = "2026-10-24T22:00:00Z".parse().unwrap();
        let to: Timestamp = "2026-10-25T04:00:00Z".parse().unwrap();
        let fires: Vec<_> = s.fires_between(from, to, None).collect();
        // 6 real hours with a */10 cadence that keeps real time through the fold.
        assert_eq!(fires.len(), 36);
        assert!(fires
            .windows(2)
            .all(|w| w[1].duration_since(w[0]) == SignedDuration::from_mins(10)));
    }
}

#[cfg(test)]
mod reboot_tests {
    use super::*;

    #[test]
    fn reboot_parses_and_never_fires_at_an_instant() {
        for expr in ["@reboot", " @REBOOT "] {
            let s = Schedule::parse(expr, &TimeZone::UTC).unwrap();
            assert!(s.is_reboot());
            assert_eq!(s.expr(), expr.trim());
            assert_eq!(s.next_after(Timestamp::now(), None), None);
            assert_eq!(s.every(), None);
        }
        assert!(!Schedule::parse("@hourly", &TimeZone::UTC)
            .unwrap()
            .is_reboot());
        assert!(Schedule::parse("@rebooted", &TimeZone::UTC).is_err());
    }
}
