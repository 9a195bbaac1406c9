//! `cronwarden import`: a crontab translated into cronwarden TOML.
//!
//! Both formats of crontab(5) are read: the user format (`m h dom mon dow
//! command`) and the system format with a user column (`/etc/crontab`,
//! `/etc/cron.d/*`). The translation follows what cron itself does with a
//! line, so the imported job fires at the same times and runs the same shell
//! text:
//!
//! - environment lines apply to the entries *after* them (cron snapshots its
//!   environment per entry); `CRON_TZ`/`TZ` become the job's `timezone`,
//!   `SHELL` other than `/bin/sh` becomes `command = [SHELL, "-c", ...]`, the
//!   rest the job's `env`;
//! - `%` per crontab(5): an unescaped `%` ends the command, the rest is its
//!   stdin with further `%` turned into newlines, `\%` is a literal `%`.
//!   cronwarden jobs read `/dev/null`, so the stdin text is fed with
//!   `printf '%s' '<text>' | { <command>\n}`: exact bytes (a here-doc would
//!   add a final newline), no delimiter that could collide with the text,
//!   and the brace group makes the pipe feed the whole command list;
//! - `@reboot` becomes `schedule = "@reboot"` (once per boot);
//! - whatever has no equivalent (`MAILTO`, a user column when the
//!   config has no `user` key, a schedule cronwarden reads differently)
//!   becomes a `#` comment that says why, and is counted in
//!   [`Conversion::untranslated`].
//!
//! - cron's run semantics are kept: every job gets `timeout = "none"` and
//!   `overlap = "allow"` (cron neither bounds a run nor holds a fire back
//!   while the last run is busy), each with a comment naming the safer
//!   choice. A nightly backup that took 2 h under cron must not be killed
//!   at 1 h after migrating. With `--safe-defaults` the job gets those safer
//!   choices instead ([`SAFE_TIMEOUT`], `overlap = "skip"`), each with a
//!   comment naming what cron did; for a job that fires more often than
//!   that timeout (plus the kill grace) the timeout is cut below the
//!   shortest interval between fires, so that a run that takes its full
//!   timeout never skips the next fire (what `check` would warn of).
//!
//! Invariant: the output always parses as a cronwarden config (the job
//! names are unique, without `/`); only comments carry what did not translate.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use std::time::Duration;

use jiff::{tz::TimeZone, Timestamp};

use cronwarden_shared::schedule::Schedule;

/// The timeout `--safe-defaults` gives a job (cronwarden's default).
const SAFE_TIMEOUT: Duration = Duration::from_secs(3600);
/// cronwarden's default `kill_grace`, which the busy flag also waits out.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// How to read the crontab.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// The system format: a user column between the schedule and the command.
    pub(crate) system: bool,
    /// Where the text came from, for the header comment.
    pub(crate) source: String,
    /// The zone cron matched the fields in (the host's local zone), as an
    /// IANA name; `None` when it is not known.
    pub(crate) timezone: Option<String>,
    /// cronwarden's safer run limits instead of cron's (`--safe-defaults`).
    pub(crate) safe_defaults: bool,
}

/// The TOML, and what could not be translated.
#[derive(Debug, Clone)]
pub(crate) struct Conversion {
    pub(crate) toml: String,
    /// `(line number, why)` for every line that became (partly) a comment.
    pub(crate) untranslated: Vec<(usize, String)>,
}

/// Whether this build's config has a per-job `user` key. Asked of the
/// validator itself, so `import` starts emitting `user = "..."` the day the
/// key exists, without a second place to update.
fn config_has_user_key() -> bool {
    let probe =
        "[[job]]\nname = \"probe\"\nschedule = \"@daily\"\nshell = \"true\"\nuser = \"root\"\n";
    match cronwarden_shared::config::Config::parse(std::path::Path::new("probe.toml"), probe) {
        Ok(_) => true,
        Err(errors) => !errors.0.iter().any(|e| e.key == "user"),
    }
}

/// Whether a path is one cron reads in the system format: `/etc/crontab`
/// and the files under `/etc/cron.d`.
pub(crate) fn is_system_path(path: &std::path::Path) -> bool {
    path == std::path::Path::new("/etc/crontab") || path.starts_with("/etc/cron.d/")
}

/// Translates a crontab.
pub(crate) fn convert(text: &str, opts: &Options) -> Conversion {
    let mut c = Converter {
        out: String::new(),
        untranslated: vec![],
        names: BTreeSet::new(),
        env: BTreeMap::new(),
        shell: None,
        tz: None,
        gap: false,
        has_user_key: config_has_user_key(),
        safe_defaults: opts.safe_defaults,
    };
    c.header(opts);
    for (i, line) in text.lines().enumerate() {
        c.line(i + 1, line, opts.system);
    }
    Conversion {
        toml: c.out,
        untranslated: c.untranslated,
    }
}

struct Converter {
    out: String,
    untranslated: Vec<(usize, String)>,
    names: BTreeSet<String>,
    /// The environment as of the current line (cron's per-entry snapshot).
    env: BTreeMap<String, String>,
    /// `SHELL`, when set to something other than `/bin/sh`.
    shell: Option<String>,
    /// `CRON_TZ` or `TZ`, when set to a known zone.
    tz: Option<String>,
    /// A blank line is due before the next output (after the header or a
    /// job), so the crontab's comments stay with the entry they precede.
    gap: bool,
    has_user_key: bool,
    safe_defaults: bool,
}

impl Converter {
    fn header(&mut self, opts: &Options) {
        let format = if opts.system {
            "system format, with a user column"
        } else {
            "user format"
        };
        let limits = if opts.safe_defaults {
            "# With --safe-defaults, each job gets cronwarden's safer run limits: a timeout\n\
             # and overlap = \"skip\" (a fire is skipped while the previous run is busy).\n\
             # Under cron a run had no time limit and runs could overlap: each job says\n\
             # how to get that back."
        } else {
            "# Each job keeps cron's behaviour: no time limit (timeout = \"none\") and a\n\
             # fire starts even while the previous run is busy (overlap = \"allow\").\n\
             # Each job names cronwarden's safer choice; `import --safe-defaults` gives\n\
             # every job those instead."
        };
        let _ = writeln!(
            self.out,
            "# Imported from {} ({format}) by `cronwarden import`.\n\
             # Check it with `cronwarden check --config FILE`.\n\
             {limits}\n\
             # cron also ran commands in the user's home directory: set working_dir\n\
             # where a command relies on that.",
            opts.source
        );
        self.out.push_str("# state_dir = \"/var/lib/cronwarden\"\n");
        self.gap = true;
        match &opts.timezone {
            Some(tz) => {
                let _ = writeln!(
                    self.out,
                    "timezone = {}    # cron matched the fields in the host's local time",
                    quote(tz)
                );
            }
            None => self.out.push_str(
                "# timezone = \"...\"    # cron matched the fields in the host's local time; name its zone here\n",
            ),
        }
    }

    fn start(&mut self) {
        if std::mem::take(&mut self.gap) {
            self.out.push('\n');
        }
    }

    fn comment_untranslated(&mut self, n: usize, line: &str, why: String) {
        self.start();
        let _ = writeln!(self.out, "# line {n}: {}", line.trim());
        let _ = writeln!(self.out, "# not translated: {why}");
        self.untranslated.push((n, why));
    }

    fn line(&mut self, n: usize, raw: &str, system: bool) {
        let line = raw.trim_start();
        if line.trim().is_empty() {
            return;
        }
        self.start();
        if let Some(comment) = line.strip_prefix('#') {
            let _ = writeln!(self.out, "#{}", comment.trim_end());
            return;
        }
        if let Some((name, value)) = env_line(line) {
            self.env_line(n, raw, name, value);
            return;
        }
        self.entry(n, raw, line, system);
    }

    fn env_line(&mut self, n: usize, raw: &str, name: String, value: String) {
        match name.as_str() {
            "MAILTO" if value.is_empty() => {
                // Mail turned off: cronwarden sends none either.
                let _ = writeln!(self.out, "# {}  (no mail: nothing to translate)", raw.trim());
            }
            "MAILTO" => self.comment_untranslated(
                n,
                raw,
                format!(
                    "cronwarden sends no mail; to hear about failures add an alert sink, e.g.\n\
                     # [[alert]]\n# kind = \"exec\"\n# command = [\"sh\", \"-c\", \"mail -s 'cronwarden alert' {}\"]",
                    value.replace('\'', "")
                ),
            ),
            "MAILFROM" | "CONTENT_TYPE" | "CONTENT_TRANSFER_ENCODING" => self.comment_untranslated(
                n,
                raw,
                format!("{name} shapes cron's mail, and cronwarden sends none (see [[alert]])"),
            ),
            "RANDOM_DELAY" => self.comment_untranslated(
                n,
                raw,
                "cronwarden has no random start delay".into(),
            ),
            "CRON_TZ" | "TZ" => {
                if TimeZone::get(&value).is_ok() {
                    self.tz = Some(value.clone());
                    let _ = writeln!(
                        self.out,
                        "# {}  (the timezone of the jobs below)",
                        raw.trim()
                    );
                } else {
                    self.comment_untranslated(
                        n,
                        raw,
                        format!("unknown time zone {value:?}; the jobs below keep the default zone"),
                    );
                }
                // cron exports TZ to the job; CRON_TZ only steers the schedule.
                if name == "TZ" {
                    self.env.insert(name, value);
                }
            }
            "SHELL" => {
                let _ = writeln!(self.out, "# {}  (the shell of the jobs below)", raw.trim());
                self.shell = (value != "/bin/sh").then(|| value.clone());
                self.env.insert(name, value);
            }
            _ => {
                let _ = writeln!(self.out, "# {}  (in the env of the jobs below)", raw.trim());
                self.env.insert(name, value);
            }
        }
    }

    fn entry(&mut self, n: usize, raw: &str, line: &str, system: bool) {
        let (schedule, rest) = if line.starts_with('@') {
            let (nick, rest) = split_word(line);
            if !nick.eq_ignore_ascii_case("@reboot")
                && !cronwarden_shared::schedule::NICKNAMES
                    .iter()
                    .any(|k| k.eq_ignore_ascii_case(nick))
            {
                return self.comment_untranslated(n, raw, format!("unknown nickname {nick}"));
            }
            (nick.to_ascii_lowercase(), rest)
        } else {
            let mut fields = vec![];
            let mut rest = line;
            for _ in 0..5 {
                let (f, r) = split_word(rest);
                if f.is_empty() {
                    return self.comment_untranslated(
                        n,
                        raw,
                        "not a crontab entry (expected 5 time fields and a command)".into(),
                    );
                }
                fields.push(f);
                rest = r;
            }
            if let Some(why) = dom_dow_differs(fields[2], fields[4]) {
                return self.comment_untranslated(n, raw, why);
            }
            (fields.join(" "), rest)
        };
        let (user, command) = if system {
            let (u, r) = split_word(rest);
            (Some(u), r)
        } else {
            (None, rest)
        };
        let command = command.trim_end();
        if command.is_empty() {
            return self.comment_untranslated(n, raw, "no command".into());
        }
        let zone = self.tz.clone();
        let tz = TimeZone::get(zone.as_deref().unwrap_or("UTC")).unwrap_or(TimeZone::UTC);
        if let Err(e) = Schedule::parse(&schedule, &tz) {
            return self.comment_untranslated(n, raw, e.to_string());
        }
        let (cmd, stdin) = split_percent(command);
        if cmd.trim().is_empty() {
            return self.comment_untranslated(n, raw, "no command before the first %".into());
        }
        let script = match &stdin {
            // An empty stdin reads as end-of-file at once, as /dev/null does.
            Some(input) if !input.is_empty() => {
                format!("printf '%s' {} | {{ {}\n}}", sh_quote(input), cmd)
            }
            _ => cmd.clone(),
        };
        let name = self.unique_name(&job_name(&cmd));

        self.start();
        let _ = writeln!(self.out, "# {}", raw.trim());
        self.out.push_str("[[job]]\n");
        let _ = writeln!(self.out, "name = {}", quote(&name));
        let _ = writeln!(self.out, "schedule = {}", quote(&schedule));
        if let Some(tz) = &zone {
            let _ = writeln!(self.out, "timezone = {}", quote(tz));
        }
        match &self.shell {
            None => {
                let _ = writeln!(self.out, "shell = {}", quote(&script));
            }
            Some(sh) => {
                let argv = toml::Value::Array(vec![
                    sh.as_str().into(),
                    "-c".into(),
                    script.as_str().into(),
                ]);
                let _ = writeln!(self.out, "command = {argv}");
            }
        }
        if !self.env.is_empty() {
            let table: toml::Table = self
                .env
                .iter()
                .map(|(k, v)| (k.clone(), toml::Value::String(v.clone())))
                .collect();
            let _ = writeln!(self.out, "env = {}", toml::Value::Table(table));
        }
        self.limits(&schedule, &tz);
        if let Some(user) = user.filter(|u| *u != "root") {
            if self.has_user_key {
                let _ = writeln!(self.out, "user = {}", quote(user));
            } else {
                let _ = writeln!(
                    self.out,
                    "# user = {}    # not translated: this cronwarden has no per-job user; the job runs as cronwarden's user",
                    quote(user)
                );
                self.untranslated.push((
                    n,
                    format!("runs as {user} under cron; this cronwarden has no per-job user"),
                ));
            }
        }
        self.gap = true;
    }

    /// The job's `timeout` and `overlap`: cron's (the default) or the
    /// safer ones, each saying what the other choice is.
    fn limits(&mut self, schedule: &str, tz: &TimeZone) {
        if self.safe_defaults {
            let timeout = Schedule::parse(schedule, tz)
                .ok()
                .and_then(|s| shortest_period(&s))
                .map_or(SAFE_TIMEOUT, safe_timeout);
            let _ = writeln!(
                self.out,
                "timeout = {}    # safer than cron; cron's behaviour: timeout = \"none\" (no time limit)",
                quote(&duration_text(timeout))
            );
            self.out.push_str(
                "overlap = \"skip\"    # safer than cron; cron's behaviour: overlap = \"allow\" (runs may overlap)\n",
            );
        } else {
            let _ = writeln!(
                self.out,
                "timeout = \"none\"    # as under cron; safer: timeout = {} (killed after that)",
                quote(&duration_text(SAFE_TIMEOUT))
            );
            self.out.push_str(
                "overlap = \"allow\"    # as under cron; safer: overlap = \"skip\" (no fire while a run is busy)\n",
            );
        }
    }

    fn unique_name(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut i = 2;
        while self.names.contains(&name) {
            name = format!("{base}-{i}");
            i += 1;
        }
        self.names.insert(name.clone());
        name
    }
}

/// A TOML string literal.
/// The shortest interval between a schedule's fires over the next ones
/// (a bounded look: a rare shorter gap may be missed, which only makes the
/// timeout longer than it could be, as cronwarden's default is).
fn shortest_period(s: &Schedule) -> Option<Duration> {
    if let Some(d) = s.every() {
        return Some(d);
    }
    let mut prev = s.next_after(Timestamp::now(), None)?;
    let mut best: Option<Duration> = None;
    for _ in 0..500 {
        let Some(next) = s.next_after(prev, None) else {
            break;
        };
        let gap = Duration::try_from(next.duration_since(prev)).ok()?;
        best = Some(best.map_or(gap, |b| b.min(gap)));
        prev = next;
    }
    best
}

/// [`SAFE_TIMEOUT`], or less for a job that fires more often: short enough
/// that timeout plus kill grace ends before the next fire, in whole minutes
/// when it is a minute or more.
fn safe_timeout(period: Duration) -> Duration {
    if period > SAFE_TIMEOUT + KILL_GRACE {
        return SAFE_TIMEOUT;
    }
    // Strictly below the period: the busy flag must be released before it.
    let room = period.saturating_sub(KILL_GRACE + Duration::from_secs(1));
    let secs = room.as_secs().max(1);
    Duration::from_secs(if secs >= 60 { secs / 60 * 60 } else { secs })
}

/// A duration as the config reads it: `1h`, `59m`, `49s`.
fn duration_text(d: Duration) -> String {
    let s = d.as_secs();
    if s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// `s` as one single-quoted sh word.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The first whitespace-separated word and the rest (leading blanks removed).
fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

/// `NAME = value` as cron reads it: the name runs up to `=` or a blank
/// (quoted names are allowed), the value is trimmed and loses one pair of
/// matching quotes. A line whose first word is followed by something other
/// than `=` is an entry, not an assignment.
fn env_line(line: &str) -> Option<(String, String)> {
    let (name, rest) = match line.chars().next()? {
        q @ ('"' | '\'') => {
            let end = line[1..].find(q)? + 1;
            (&line[1..end], &line[end + 1..])
        }
        _ => {
            let end = line.find(|c: char| c == '=' || c.is_whitespace())?;
            (&line[..end], &line[end..])
        }
    };
    if name.is_empty() {
        return None;
    }
    let value = rest.trim_start().strip_prefix('=')?.trim();
    let value = match value.chars().next() {
        Some(q @ ('"' | '\'')) if value.len() >= 2 && value.ends_with(q) => {
            &value[1..value.len() - 1]
        }
        _ => value,
    };
    Some((name.to_string(), value.to_string()))
}

/// Splits a command at its first unescaped `%` (crontab(5)): the command
/// with `\%` made `%`, and the stdin text, if any, with unescaped `%` made
/// newlines and `\%` made `%`. Other backslashes stay, as cron leaves them.
fn split_percent(command: &str) -> (String, Option<String>) {
    let mut cmd = String::new();
    let mut chars = command.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'%') => {
                cmd.push('%');
                chars.next();
            }
            '%' => {
                let mut input = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' if chars.peek() == Some(&'%') => {
                            input.push('%');
                            chars.next();
                        }
                        '%' => input.push('\n'),
                        c => input.push(c),
                    }
                }
                return (cmd, Some(input));
            }
            c => cmd.push(c),
        }
    }
    (cmd, None)
}

/// vixie cron counts a day field as unrestricted when it *starts* with `*`
/// (`*/2` too), and then ANDs the two day fields; cronwarden treats only a
/// bare `*` as unrestricted and ORs. The line is left untranslated rather
/// than silently firing on other days.
fn dom_dow_differs(dom: &str, dow: &str) -> Option<String> {
    // Both count as restricted for cronwarden (neither is a bare `*`), and
    // vixie sees a star in at least one: AND there, OR here.
    if dom != "*" && dow != "*" && (dom.starts_with('*') || dow.starts_with('*')) {
        Some(format!(
            "cron fires when day-of-month {dom:?} AND day-of-week {dow:?} match (a field starting \
             with * counts as unrestricted), cronwarden when either does; write the days out explicitly"
        ))
    } else {
        None
    }
}

/// A job name from a command: the first program that does real work (not
/// `cd`, `test`, ...), its basename, plus the basename of its first path
/// argument (`run-parts-cron.daily`); sanitized to `[A-Za-z0-9._-]`.
pub(crate) fn job_name(command: &str) -> String {
    const SETUP: &[&str] = &[
        "cd", "test", "[", "[[", "true", ":", "sleep", "export", "umask", "set", "source", ".",
        "fi", "done", "esac", "ulimit",
    ];
    const PREFIX: &[&str] = &[
        "if", "then", "else", "elif", "do", "while", "until", "!", "{", "}", "exec", "nice",
        "ionice", "nohup", "time", "sudo", "env", "command", "chronic", "flock",
    ];
    for segment in shell_segments(command) {
        let mut words = segment
            .iter()
            .map(String::as_str)
            .skip_while(|w| {
                PREFIX.contains(w)
                    || w.starts_with('-')
                    || is_assignment(w)
                    || w.parse::<u32>().is_ok()
            })
            .peekable();
        let Some(program) = words.next() else {
            continue;
        };
        if SETUP.contains(&program) {
            continue;
        }
        let mut name = basename(program).to_string();
        let mut redirect = false;
        for w in words {
            if redirect {
                redirect = false;
                continue;
            }
            if w.starts_with(['>', '<'])
                || w.trim_start_matches(char::is_numeric)
                    .starts_with(['>', '<'])
            {
                // `> file` takes the next word; `>file` and `2>&1` do not.
                redirect = w
                    .trim_start_matches(char::is_numeric)
                    .trim_start_matches(['>', '<', '&'])
                    .is_empty();
                continue;
            }
            if w.starts_with('-') {
                continue;
            }
            if w.contains('/') && !basename(w).is_empty() {
                name = format!("{name}-{}", basename(w));
            }
            break;
        }
        let clean = sanitize(&name);
        if !clean.is_empty() {
            return clean;
        }
    }
    "job".into()
}

fn is_assignment(w: &str) -> bool {
    match w.split_once('=') {
        Some((k, _)) => !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        None => false,
    }
}

fn basename(w: &str) -> &str {
    w.trim_end_matches('/').rsplit('/').next().unwrap_or(w)
}

fn sanitize(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
            c
        } else {
            '-'
        };
        if !(c == '-' && out.ends_with('-')) {
            out.push(c);
        }
    }
    out.trim_matches(['-', '.']).to_string()
}

/// The simple commands of a shell line, as word lists: split at `;`, `&`,
/// `|`, `(`, `)` outside quotes. Quotes are removed from words; `$VAR`
/// stays as written. Good enough for naming, not a shell parser.
fn shell_segments(s: &str) -> Vec<Vec<String>> {
    let mut segments = vec![];
    let mut words: Vec<String> = vec![];
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars().peekable();
    let end_word = |word: &mut String, in_word: &mut bool, words: &mut Vec<String>| {
        if *in_word {
            words.push(std::mem::take(word));
            *in_word = false;
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                in_word = true;
                for d in chars.by_ref() {
                    if d == c {
                        break;
                    }
                    word.push(d);
                }
            }
            '\\' => {
                in_word = true;
                if let Some(d) = chars.next() {
                    word.push(d);
                }
            }
            ';' | '|' | '(' | ')' | '\n' => {
                end_word(&mut word, &mut in_word, &mut words);
                segments.push(std::mem::take(&mut words));
            }
            // `2>&1` and `>&2` keep their `&`; a lone `&` or `&&` separates.
            '&' if !word.ends_with('>') => {
                end_word(&mut word, &mut in_word, &mut words);
                segments.push(std::mem::take(&mut words));
            }
            c if c.is_whitespace() => end_word(&mut word, &mut in_word, &mut words),
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    end_word(&mut word, &mut in_word, &mut words);
    segments.push(words);
    segments.retain(|s| !s.is_empty());
    segments
}

#[cfg(test)]
#[path = "crontab_tests.rs"]
mod tests;
