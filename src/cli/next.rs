//! `cronwarden next`: a schedule's next fires, computed by the same code
//! the worker fires with, so what it prints is what will happen.

use std::{io::Write, process::ExitCode};

use cronwarden_shared::{schedule::Schedule, timefmt::rfc3339_in};
use jiff::{tz::TimeZone, Timestamp};
use serde_json::Value;

/// Prints the next `n` fires of `expr` in `tz` strictly after `from`
/// (default: now); exit 2 for an unknown zone, instant or expression.
pub(crate) fn next(
    expr: &str,
    tz: &str,
    from: Option<&str>,
    n: usize,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let zone = match TimeZone::get(tz) {
        Ok(z) => z,
        Err(_) => {
            eprintln!("cronwarden: --tz: unknown time zone {tz:?}");
            return Ok(ExitCode::from(2));
        }
    };
    let start: Timestamp = match from {
        None => Timestamp::now(),
        Some(s) => match s.parse::<Timestamp>() {
            Ok(t) => t,
            Err(e) => {
                eprintln!("cronwarden: --from: {s:?} is not an RFC 3339 instant: {e}");
                return Ok(ExitCode::from(2));
            }
        },
    };
    let schedule = match Schedule::parse(expr, &zone) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cronwarden: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    if schedule.is_reboot() && !json {
        // No instants to list; say so rather than print nothing.
        eprintln!("cronwarden: @reboot fires once per boot, at no fixed time");
    }
    let mut out = std::io::stdout().lock();
    let mut t = start;
    let mut fires = vec![];
    for _ in 0..n {
        // As `check` and the scheduler do: a fresh @every cadence starts on
        // the next whole second after FROM, not at FROM's fraction.
        let Some(next) = schedule.next_after(t, None) else {
            break;
        };
        fires.push(rfc3339_in(next, &zone));
        t = next;
    }
    if json {
        writeln!(out, "{}", Value::from(fires))?;
    } else {
        for f in fires {
            writeln!(out, "{f}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
