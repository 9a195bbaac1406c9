//! What the CLI prints for people: aligned tables, relative times ("in
//! 3m 20s", "2h 5m ago") and state words in colour.
//!
//! Colour is decided once, by [`color_enabled`]: only when stdout is a
//! terminal and `NO_COLOR` is unset or empty (`CLICOLOR_FORCE` forces it,
//! e.g. for a pager; `NO_COLOR` still wins). Column widths are computed on
//! the plain text, so a coloured table lines up exactly as a plain one, and
//! a plain one contains no escape code at all. Widths are display widths
//! (Unicode's East Asian Width, as a terminal draws them): a CJK character
//! or an emoji takes two columns, a combining mark none. `--json` output never comes
//! through here: programs get the socket's JSON unchanged.
//!
//! This module holds the pieces every view uses; each command's view is a
//! submodule:
//!
//! - [`status`]: `status`, and the jobs table it shares with `jobs`;
//! - [`runs`]: `runs JOB`;
//! - [`alerts`]: `alerts` (open or all) and `alerts test`;
//! - [`audit`]: `audit JOB`;
//! - [`check`]: `check`, for people and as JSON.
//!
//! The socket views take the typed replies of `cronwarden_shared::status`,
//! so a renamed field fails the build here rather than printing `-`.

pub(crate) mod alerts;
pub(crate) mod audit;
pub(crate) mod check;
pub(crate) mod runs;
pub(crate) mod status;

use std::{io::Write, time::Duration};

use cronwarden_shared::timefmt::human_duration;
use jiff::Timestamp;
use unicode_width::UnicodeWidthStr;

/// Whether to colour: `NO_COLOR` (non-empty) never, `CLICOLOR_FORCE`
/// (non-empty, not `0`) always, otherwise only on a terminal.
pub(crate) fn color_enabled(
    stdout_is_tty: bool,
    no_color: Option<&str>,
    force: Option<&str>,
) -> bool {
    if no_color.is_some_and(|v| !v.is_empty()) {
        return false;
    }
    if force.is_some_and(|v| !v.is_empty() && v != "0") {
        return true;
    }
    stdout_is_tty
}

/// The ANSI colour a state word is shown in, if any.
fn paint(word: &str) -> Option<&'static str> {
    Some(match word {
        "ok" | "success" | "delivered" | "holds" => "32",
        "running" => "36",
        "degraded" | "late" | "paused" | "killed" | "skipped" | "warning" | "open" => "33",
        "stalled" | "down" | "failing" | "wedged" | "failed" | "timeout" | "lost" | "critical"
        | "BROKEN" | "FAILED" => "31",
        _ => return None,
    })
}

/// A word in its colour (first word decides: "skipped (overlap)").
pub(crate) fn colored(text: &str, color: bool) -> String {
    let first = text.split_whitespace().next().unwrap_or_default();
    match paint(first).filter(|_| color) {
        Some(code) => format!("\x1b[{code}m{text}\x1b[0m"),
        None => text.to_string(),
    }
}

/// Whether stdout gets colour: a terminal, and the environment allows it.
pub(crate) fn stdout_color() -> bool {
    use std::io::IsTerminal;
    color_enabled(
        std::io::stdout().is_terminal(),
        std::env::var("NO_COLOR").ok().as_deref(),
        std::env::var("CLICOLOR_FORCE").ok().as_deref(),
    )
}

/// An aligned table: columns two spaces apart, widths from the plain text;
/// the cells of the `painted` columns are coloured after padding.
pub(crate) fn table(
    out: &mut dyn Write,
    header: &[&str],
    rows: &[Vec<String>],
    painted: &[usize],
    color: bool,
) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.width()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.width());
        }
    }
    let head: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for (i, row) in std::iter::once(&head).chain(rows).enumerate() {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (col, (c, w)) in row.iter().zip(&widths).enumerate() {
            if col > 0 {
                line.push_str("  ");
            }
            let pad = if col == last {
                String::new()
            } else {
                " ".repeat(w.saturating_sub(c.width()))
            };
            if i > 0 && painted.contains(&col) {
                line.push_str(&colored(c, color));
            } else {
                line.push_str(c);
            }
            line.push_str(&pad);
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// "in 3m", "in 3m 20s", "2h 5m ago", "-" when there is no time.
pub(crate) fn relative(t: Option<Timestamp>, now: Timestamp) -> String {
    let Some(t) = t else { return "-".into() };
    let d = t.duration_since(now);
    let abs = Duration::try_from(d.abs()).unwrap_or_default();
    // Whole seconds are enough for people; "3m 0s" reads as "3m".
    let text =
        human_duration(Duration::from_secs(abs.as_secs()).max(abs.min(Duration::from_secs(1))));
    let text = text
        .strip_suffix(" 0s")
        .or_else(|| text.strip_suffix(" 0m"))
        .or_else(|| text.strip_suffix(" 0h"))
        .unwrap_or(&text)
        .to_string();
    if d.is_negative() {
        format!("{text} ago")
    } else {
        format!("in {text}")
    }
}

/// How long a run has been going: "3m 20s" (whole seconds), or "-".
pub(crate) fn elapsed(started: Option<Timestamp>, now: Timestamp) -> String {
    started
        .and_then(|t| Duration::try_from(now.duration_since(t)).ok())
        .map(|d| human_duration(Duration::from_secs(d.as_secs())))
        .unwrap_or_else(|| "-".into())
}

/// "3m 20s ago", or "never" when there is no age.
fn ago(ms: Option<u64>) -> String {
    ms.map(|ms| format!("{} ago", human_duration(Duration::from_millis(ms))))
        .unwrap_or_else(|| "never".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(color_enabled(true, None, None));
        assert!(!color_enabled(false, None, None));
        assert!(!color_enabled(true, Some("1"), None));
        // An empty NO_COLOR does not count (no-color.org).
        assert!(color_enabled(true, Some(""), None));
        assert!(color_enabled(false, None, Some("1")));
        assert!(!color_enabled(false, None, Some("0")));
        assert!(!color_enabled(false, Some("1"), Some("1")));
    }

    #[test]
    fn coloured_tables_align_like_plain_ones() {
        let rows = vec![
            vec!["backup".to_string(), "failing".into(), "in 3m".into()],
            vec!["x".to_string(), "ok".into(), "2h 5m ago".into()],
        ];
        let render = |color| {
            let mut buf = vec![];
            table(&mut buf, &["JOB", "STATE", "NEXT"], &rows, &[1], color).unwrap();
            String::from_utf8(buf).unwrap()
        };
        let plain = render(false);
        assert_eq!(
            plain,
            "JOB     STATE    NEXT\nbackup  failing  in 3m\nx       ok       2h 5m ago\n"
        );
        let coloured = render(true);
        assert!(coloured.contains("\x1b[31mfailing\x1b[0m"), "{coloured:?}");
        let stripped = coloured
            .replace("\x1b[31m", "")
            .replace("\x1b[32m", "")
            .replace("\x1b[0m", "");
        assert_eq!(stripped, plain);
    }

    #[test]
    fn tables_align_wide_characters_by_display_width() {
        let rows = vec![
            vec!["备份".to_string(), "ok".into()],
            vec!["🚀-deploy".to_string(), "failing".into()],
            vec!["plain".to_string(), "idle".into()],
        ];
        let mut buf = vec![];
        table(&mut buf, &["JOB", "STATE"], &rows, &[], false).unwrap();
        let text = String::from_utf8(buf).unwrap();
        // Every STATE starts in the same terminal column.
        let columns: Vec<usize> = text
            .lines()
            .map(|l| {
                let state = l.rfind("  ").unwrap() + 2;
                l[..state].width()
            })
            .collect();
        assert!(
            columns.iter().all(|c| *c == columns[0]),
            "{text}\n{columns:?}"
        );
        assert_eq!(columns[0], "🚀-deploy  ".width(), "{text}");
    }

    #[test]
    fn relative_times() {
        let now: Timestamp = "2026-12-01T12:00:00Z".parse().unwrap();
        let at = |s: &str| Some(s.parse::<Timestamp>().unwrap());
        assert_eq!(relative(at("2026-12-01T12:03:00Z"), now), "in 3m");
        assert_eq!(relative(at("2026-12-01T12:03:20.5Z"), now), "in 3m 20s");
        assert_eq!(relative(at("2026-12-01T11:59:59.9Z"), now), "100ms ago");
        assert_eq!(relative(at("2026-12-01T09:55:00Z"), now), "2h 5m ago");
        assert_eq!(relative(None, now), "-");
    }
}
