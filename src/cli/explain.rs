//! Schedules in words, for `cronwarden check`: "at 03:00 every day
//! (Europe/Berlin)", "every 15 minutes", "at minute 23 past every 2nd hour".
//!
//! Invariant: a phrase is never wrong. Common shapes get natural phrasing;
//! anything else gets a generic but exact one built field by field, and an
//! expression this module cannot read (it was accepted by the schedule
//! parser, which knows more syntax) is quoted rather than guessed at. Day
//! fields follow cronwarden's rule: when both day-of-month and day-of-week
//! are restricted (anything but a bare `*`), a day matching either fires.

use cronwarden_shared::schedule::Schedule;

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// One comma-separated part of a field.
#[derive(Debug, Clone, PartialEq)]
enum Item {
    Value(u32),
    Range(u32, u32),
    /// `start-end/step`; `*/n` is `Step(min, max, n)`.
    Step(u32, u32, u32),
}

/// A parsed field: `*` (any), or its items.
#[derive(Debug, Clone, PartialEq)]
enum Field {
    Any,
    Items(Vec<Item>),
}

impl Field {
    fn single(&self) -> Option<u32> {
        match self {
            Field::Items(items) => match items.as_slice() {
                [Item::Value(v)] => Some(*v),
                _ => None,
            },
            Field::Any => None,
        }
    }

    /// Every value, when the field is a list of plain values.
    fn values(&self) -> Option<Vec<u32>> {
        match self {
            Field::Items(items) => items
                .iter()
                .map(|i| match i {
                    Item::Value(v) => Some(*v),
                    _ => None,
                })
                .collect(),
            Field::Any => None,
        }
    }

    /// `*/n` over the whole range.
    fn star_step(&self, min: u32, max: u32) -> Option<u32> {
        match self {
            Field::Items(items) => match items.as_slice() {
                [Item::Step(a, b, n)] if *a == min && *b == max => Some(*n),
                _ => None,
            },
            Field::Any => None,
        }
    }
}

fn parse_value(s: &str, names: &[&str], offset: u32) -> Option<u32> {
    if let Ok(v) = s.parse() {
        return Some(v);
    }
    let lower = s.to_ascii_lowercase();
    names
        .iter()
        .position(|n| n[..3].eq_ignore_ascii_case(&lower))
        .map(|i| i as u32 + offset)
}

fn parse_field(s: &str, min: u32, max: u32, names: &[&str], offset: u32) -> Option<Field> {
    if s == "*" || s == "?" {
        return Some(Field::Any);
    }
    let mut items = vec![];
    for part in s.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, st)) => (r, Some(st.parse::<u32>().ok().filter(|n| *n > 0)?)),
            None => (part, None),
        };
        let (a, b) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (
                parse_value(a, names, offset)?,
                parse_value(b, names, offset)?,
            )
        } else {
            let v = parse_value(range, names, offset)?;
            // `a/n` runs from a to the end of the field.
            (v, if step.is_some() { max } else { v })
        };
        if a < min || b > max || a > b {
            return None;
        }
        items.push(match step {
            Some(n) => Item::Step(a, b, n),
            None if a == b => Item::Value(a),
            None => Item::Range(a, b),
        });
    }
    Some(Field::Items(items))
}

fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// "a", "a and b", "a, b and c".
fn join(parts: &[String]) -> String {
    match parts {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// The items of a field as words: "1, 15 and 20 through 25".
fn items_words(field: &Field, unit: &str, show: &dyn Fn(u32) -> String) -> String {
    let Field::Items(items) = field else {
        return format!("every {unit}");
    };
    let parts: Vec<String> = items
        .iter()
        .map(|i| match i {
            Item::Value(v) => show(*v),
            Item::Range(a, b) => format!("{} through {}", show(*a), show(*b)),
            Item::Step(a, b, n) => format!(
                "every {} {unit} from {} through {}",
                ordinal(*n),
                show(*a),
                show(*b)
            ),
        })
        .collect();
    join(&parts)
}

fn num(v: u32) -> String {
    v.to_string()
}

/// The phrase for a schedule, with its zone for cron expressions.
pub(crate) fn explain(schedule: &Schedule, tz_name: &str) -> String {
    let expr = schedule.expr();
    if schedule.is_reboot() {
        return "once per boot, when cronwarden's worker first starts in it".into();
    }
    if let Some(rest) = expr
        .get(..6)
        .filter(|p| p.eq_ignore_ascii_case("@every"))
        .map(|_| expr[6..].trim())
    {
        return format!("every {rest}");
    }
    format!("{} ({tz_name})", explain_cron(expr))
}

/// The phrase for a cron expression or nickname, without the zone.
pub(crate) fn explain_cron(expr: &str) -> String {
    let expanded = match expr.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *".to_string(),
        "@monthly" => "0 0 1 * *".into(),
        "@weekly" => "0 0 * * 0".into(),
        "@daily" | "@midnight" => "0 0 * * *".into(),
        "@hourly" => "0 * * * *".into(),
        _ => expr.to_string(),
    };
    let fields: Vec<&str> = expanded.split_whitespace().collect();
    let (sec, rest) = match fields.len() {
        6 => (Some(fields[0]), &fields[1..]),
        5 => (None, &fields[..]),
        _ => return format!("on the cron schedule {expr:?}"),
    };
    let parsed = (|| {
        Some((
            match sec {
                Some(s) => parse_field(s, 0, 59, &[], 0)?,
                None => Field::Items(vec![Item::Value(0)]),
            },
            parse_field(rest[0], 0, 59, &[], 0)?,
            parse_field(rest[1], 0, 23, &[], 0)?,
            parse_field(rest[2], 1, 31, &[], 0)?,
            parse_field(rest[3], 1, 12, &MONTHS, 1)?,
            parse_field(rest[4], 0, 7, &DAYS, 0)?,
        ))
    })();
    let Some((sec, min, hour, dom, mon, dow)) = parsed else {
        return format!("on the cron schedule {expr:?}");
    };
    // `*/1` is `*` in the time and month fields (not in the day fields,
    // where it counts as a restriction for the either-day rule).
    let star = |f: Field, min: u32, max: u32| match f.star_step(min, max) {
        Some(1) => Field::Any,
        _ => f,
    };
    let (sec, min, hour, mon) = (
        star(sec, 0, 59),
        star(min, 0, 59),
        star(hour, 0, 23),
        star(mon, 1, 12),
    );
    let (time, clock) = time_words(&sec, &min, &hour);
    let days = day_words(&dom, &mon, &dow);
    match days {
        // "every 15 minutes", not "every 15 minutes every day".
        None if !clock => time,
        None => format!("{time} every day"),
        Some(days) => format!("{time} {days}"),
    }
}

/// The time-of-day part, and whether it is a list of clock times (which
/// reads better followed by "every day").
fn time_words(sec: &Field, min: &Field, hour: &Field) -> (String, bool) {
    let two = |v: u32| format!("{v:02}");
    // A few fixed clock times: "at 03:00", "at 09:30 and 18:30".
    if let (Some(ss), Some(ms), Some(hs)) = (sec.values(), min.values(), hour.values()) {
        if ss.len() * ms.len() * hs.len() <= 6 {
            let mut times = vec![];
            for h in &hs {
                for m in &ms {
                    for s in &ss {
                        times.push(if *s == 0 && ss.len() == 1 {
                            format!("{h:02}:{m:02}")
                        } else {
                            format!("{h:02}:{m:02}:{s:02}")
                        });
                    }
                }
            }
            return (format!("at {}", join(&times)), true);
        }
    }
    let every_n = |f: &Field, unit: &str, max: u32| -> Option<String> {
        if *f == Field::Any {
            return Some(format!("every {unit}"));
        }
        let n = f.star_step(0, max)?;
        Some(if n == 1 {
            format!("every {unit}")
        } else if (max + 1) % n == 0 {
            format!("every {n} {unit}s")
        } else {
            format!("every {} {unit}", ordinal(n))
        })
    };
    // The minute (and second) part.
    let sec_zero = sec.single() == Some(0);
    let (lead, min_is_single) = if sec_zero {
        match (every_n(min, "minute", 59), min.values()) {
            (Some(p), _) => (p, false),
            (None, Some(vs)) => (
                format!(
                    "at minute{} {}",
                    if vs.len() > 1 { "s" } else { "" },
                    items_words(min, "minute", &num)
                ),
                true,
            ),
            (None, None) => (format!("at {}", items_words(min, "minute", &num)), true),
        }
    } else {
        let s = match (every_n(sec, "second", 59), sec.values()) {
            (Some(p), _) => p,
            (None, Some(vs)) => format!(
                "at second{} {}",
                if vs.len() > 1 { "s" } else { "" },
                items_words(sec, "second", &num)
            ),
            (None, None) => format!("at {}", items_words(sec, "second", &num)),
        };
        let cadence = s.starts_with("every");
        let m = match min {
            Field::Any if cadence => String::new(),
            Field::Any => " of every minute".to_string(),
            _ => match every_n(min, "minute", 59) {
                Some(p) => format!(" of {p}"),
                None => format!(" of minute {}", items_words(min, "minute", &num)),
            },
        };
        (format!("{s}{m}"), !matches!(min, Field::Any))
    };
    // The hour part: "past" a fixed minute, "during" a cadence.
    let hour_words = match hour {
        Field::Any if min_is_single => "past every hour".to_string(),
        Field::Any => String::new(),
        _ => {
            let word = if min_is_single { "past" } else { "during" };
            if let Some(n) = hour.star_step(0, 23).filter(|n| *n > 1) {
                format!("{word} every {} hour", ordinal(n))
            } else if let Some(h) = hour.single() {
                if min_is_single {
                    format!("past hour {h}")
                } else {
                    format!("from {}:00 through {}:59", two(h), two(h))
                }
            } else {
                format!("{word} hours {}", items_words(hour, "hour", &num))
            }
        }
    };
    if hour_words.is_empty() {
        (lead, false)
    } else {
        (format!("{lead} {hour_words}"), false)
    }
}

/// The day part, or `None` for every day of every month.
fn day_words(dom: &Field, mon: &Field, dow: &Field) -> Option<String> {
    let month_name = |v: u32| MONTHS[(v - 1) as usize].to_string();
    let day_name = |v: u32| DAYS[(v % 7) as usize].to_string();
    let months = match mon {
        Field::Any => None,
        _ => Some(items_words(mon, "month", &month_name)),
    };
    let dom_words = |of: &str| {
        let dom_list = items_words(dom, "day", &num);
        match &months {
            None => format!("on day {dom_list} of {of} month"),
            Some(m) => format!("on day {dom_list} of {m}"),
        }
    };
    let in_months = months
        .as_ref()
        .map(|m| format!(" in {m}"))
        .unwrap_or_default();
    match (dom, dow) {
        (Field::Any, Field::Any) => months.as_ref().map(|m| format!("every day in {m}")),
        (_, Field::Any) => Some(dom_words("every")),
        (Field::Any, _) => Some(format!(
            "on {}{in_months}",
            items_words(dow, "day", &day_name)
        )),
        // The months bound both day fields: a comma keeps them off the last.
        _ => Some(format!(
            "{} and on every {}{}",
            match &months {
                None => dom_words("the"),
                Some(_) => format!("on day {} of the month", items_words(dom, "day", &num)),
            },
            items_words(dow, "day", &day_name),
            in_months.replacen(' ', ", ", 1)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::tz::TimeZone;

    #[test]
    fn phrases_for_a_table_of_expressions() {
        let cases = [
            ("0 3 * * *", "at 03:00 every day"),
            ("*/15 * * * *", "every 15 minutes"),
            ("* * * * *", "every minute"),
            ("23 0-23/2 * * *", "at minute 23 past every 2nd hour"),
            ("23 */2 * * *", "at minute 23 past every 2nd hour"),
            ("5 0 * * *", "at 00:05 every day"),
            ("15 14 1 * *", "at 14:15 on day 1 of every month"),
            ("0 22 * * 1-5", "at 22:00 on Monday through Friday"),
            ("5 4 * * sun", "at 04:05 on Sunday"),
            (
                "0 */4 1 * mon",
                "at minute 0 past every 4th hour on day 1 of the month and on every Monday",
            ),
            (
                "0 0 1,15 * 3",
                "at 00:00 on day 1 and 15 of the month and on every Wednesday",
            ),
            ("30 9,18 * * *", "at 09:30 and 18:30 every day"),
            ("0 * * * *", "at minute 0 past every hour"),
            ("@hourly", "at minute 0 past every hour"),
            ("@daily", "at 00:00 every day"),
            ("@weekly", "at 00:00 on Sunday"),
            ("@monthly", "at 00:00 on day 1 of every month"),
            ("@yearly", "at 00:00 on day 1 of January"),
            ("*/7 * * * *", "every 7th minute"),
            ("*/10 2 * * *", "every 10 minutes from 02:00 through 02:59"),
            (
                "0,30 9-17 * * mon-fri",
                "at minutes 0 and 30 past hours 9 through 17 on Monday through Friday",
            ),
            ("30 * * * * *", "at second 30 of every minute"),
            (
                "*/10 5 * * * *",
                "every 10 seconds of minute 5 past every hour",
            ),
            ("*/1 */1 * * *", "every minute"),
            (
                "0 0 1-7 * 1",
                "at 00:00 on day 1 through 7 of the month and on every Monday",
            ),
            ("*/20 * * * * *", "every 20 seconds"),
            ("30 0 12 * * *", "at 12:00:30 every day"),
            ("0 0 * 1,7 *", "at 00:00 every day in January and July"),
            ("0 12 * * 7", "at 12:00 on Sunday"),
            (
                "0 8 1 6-8 mon",
                "at 08:00 on day 1 of the month and on every Monday, in June through August",
            ),
            ("0 0 29 2 *", "at 00:00 on day 29 of February"),
            (
                "0 9 * */3 *",
                "at 09:00 every day in every 3rd month from January through December",
            ),
            // Syntax beyond this module: quoted, never guessed.
            ("0 0 L * *", "on the cron schedule \"0 0 L * *\""),
        ];
        for (expr, want) in cases {
            assert_eq!(explain_cron(expr), want, "{expr}");
        }
    }

    #[test]
    fn zone_for_cron_interval_as_written_for_every() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        let s = Schedule::parse("0 3 * * *", &berlin).unwrap();
        assert_eq!(
            explain(&s, "Europe/Berlin"),
            "at 03:00 every day (Europe/Berlin)"
        );
        let s = Schedule::parse("@every 90s", &berlin).unwrap();
        assert_eq!(explain(&s, "Europe/Berlin"), "every 90s");
        let s = Schedule::parse("@reboot", &berlin).unwrap();
        assert!(explain(&s, "Europe/Berlin").starts_with("once per boot"));
    }
}
