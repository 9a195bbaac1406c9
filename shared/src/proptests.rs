//! Property tests of what parses untrusted text: the cron parser, the config
//! loader and the NDJSON framing/decoding of the event pipe. No input may
//! panic, hang or make them hold memory without bound; accepted schedules
//! behave (strictly increasing fires) and mean the same in a config file.
//!
//! Inputs are small so that thousands of cases run in seconds in a debug
//! build; each case's time is bounded explicitly.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use bytes::BytesMut;
use jiff::{tz::TimeZone, Timestamp};
use proptest::prelude::*;
use tokio_util::codec::Decoder;

use crate::{
    config::Config,
    schedule::Schedule,
    wire::{decode_event, encode, Event, Frame, LineCodec},
};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Zones with the awkward transitions: DST both ways, 30- and 45-minute
/// offsets and shifts, a negative DST (Dublin), a two-hour DST (Troll) and
/// a skipped calendar day (Apia, 2011-12-30).
const ZONES: &[&str] = &[
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "America/St_Johns",
    "Pacific/Chatham",
    "Pacific/Apia",
    "Europe/Dublin",
    "Antarctica/Troll",
    "Africa/Casablanca",
];

// ---- cron parser ----

fn field_item() -> impl Strategy<Value = String> {
    let num = prop_oneof![
        8 => (0u32..62).prop_map(|n| n.to_string()),
        1 => any::<u32>().prop_map(|n| n.to_string()),
        1 => Just("-1".to_string()),
        1 => Just("007".to_string()),
    ];
    let name = prop_oneof![
        "(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)",
        "(mon|tue|wed|thu|fri|sat|sun|MON|Sun)",
        "[a-zA-Z]{1,4}",
    ];
    let atom = prop_oneof![
        4 => Just("*".to_string()),
        6 => num.clone(),
        2 => name,
        1 => "(\\?|L|W|LW|[0-9]{1,2}L|[0-9]{1,2}W|[0-9]#[0-9]|#|-|/|)",
    ];
    let ranged = prop_oneof![
        3 => atom.clone(),
        2 => (atom.clone(), atom.clone()).prop_map(|(a, b)| format!("{a}-{b}")),
    ];
    prop_oneof![
        3 => ranged.clone(),
        2 => (ranged, num).prop_map(|(a, s)| format!("{a}/{s}")),
    ]
}

fn field() -> impl Strategy<Value = String> {
    proptest::collection::vec(field_item(), 1..4).prop_map(|items| items.join(","))
}

/// A field that is mostly valid for its position (`lo..=hi`), with names
/// where cron has them: most expressions built of these are accepted, so
/// the fire properties get exercised, not just the error paths.
fn valid_field(lo: u32, hi: u32, names: &'static [&'static str]) -> BoxedStrategy<String> {
    let n = lo..=hi;
    let step = 1..=(hi / 2).max(1);
    let item = prop_oneof![
        4 => n.clone().prop_map(|v| v.to_string()),
        2 => (n.clone(), n.clone()).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        2 => step.clone().prop_map(|s| format!("*/{s}")),
        1 => (n.clone(), n, step).prop_map(|(a, b, s)| format!("{}-{}/{s}", a.min(b), a.max(b))),
        1 => proptest::sample::select(if names.is_empty() { &["*/2"][..] } else { names })
            .prop_map(String::from),
    ];
    // croner refuses a bare `*` inside a list (`*,5`), vixie cron does not;
    // lists here leave it out so that most expressions are accepted.
    prop_oneof![
        4 => Just("*".to_string()),
        6 => proptest::collection::vec(item, 1..3).prop_map(|items| items.join(",")),
        1 => field_item(),
    ]
    .boxed()
}

const MONTHS: &[&str] = &[
    "jan", "FEB", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "Dec",
];
const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "SAT"];

/// Cron-shaped expressions with wild fields, nicknames and intervals.
fn wild_expr() -> impl Strategy<Value = String> {
    let five = (
        valid_field(0, 59, &[]),
        valid_field(0, 23, &[]),
        valid_field(1, 31, &[]),
        valid_field(1, 12, MONTHS),
        valid_field(0, 7, DAYS),
    )
        .prop_map(|(a, b, c, d, e)| format!("{a} {b} {c} {d} {e}"));
    let six = (valid_field(0, 59, &[]), five.clone()).prop_map(|(s, f)| format!("{s} {f}"));
    let cron = prop_oneof![
        6 => five,
        3 => six,
        2 => proptest::collection::vec(field(), 0..9).prop_map(|f| f.join(" ")),
    ];
    let nickname =
        "@(yearly|annually|monthly|weekly|daily|midnight|hourly|HOURLY|reboot|every|everyday)";
    let unit = "(ns|us|ms|s|sec|m|min|h|hr|d|day|w|y|M|)";
    let every = (
        proptest::collection::vec(
            (prop_oneof![0u64..100, any::<u64>()], unit).prop_map(|(n, u)| format!("{n}{u}")),
            0..4,
        ),
        "[ \t]{0,3}",
    )
        .prop_map(|(parts, sp)| format!("@every{sp} {}", parts.join(" ")));
    prop_oneof![8 => cron, 1 => nickname.prop_map(String::from), 2 => every]
}

/// A start instant: anywhere in 1970..2100, or within hours of one of the
/// zone's transitions, where the slow path of the fire computation runs.
fn start(tz: &TimeZone, secs: i64, near_transition: bool, offset: i64) -> Timestamp {
    let t = Timestamp::from_second(secs).unwrap();
    if near_transition {
        if let Some(tr) = tz.following(t).next() {
            if let Ok(s) = tr
                .timestamp()
                .checked_add(jiff::SignedDuration::from_secs(offset))
            {
                return s;
            }
        }
    }
    t
}

/// Parses and, if accepted, checks the fires: strictly increasing and
/// after the start, all within a time bound.
fn check_fires(expr: &str, zone: &str, from: Timestamp) -> Result<Option<Vec<Timestamp>>, String> {
    let tz = TimeZone::get(zone).unwrap();
    let began = Instant::now();
    let Ok(s) = Schedule::parse(expr, &tz) else {
        return Ok(None);
    };
    let mut fires = vec![];
    let mut t = from;
    for _ in 0..12 {
        let anchor = s.every().map(|_| from);
        let Some(next) = s.next_after(t, anchor) else {
            break;
        };
        if next <= t {
            return Err(format!(
                "{expr:?} in {zone}: fire {next} after {t} is not later"
            ));
        }
        fires.push(next);
        t = next;
    }
    let took = began.elapsed();
    if took > Duration::from_secs(2) {
        return Err(format!(
            "{expr:?} in {zone} from {from}: 12 fires took {took:?}"
        ));
    }
    Ok(Some(fires))
}

/// The same expression in a config file: accepted, and the job's schedule
/// gives the same fires.
fn check_in_config(
    expr: &str,
    zone: &str,
    from: Timestamp,
    fires: &[Timestamp],
) -> Result<(), String> {
    let path = Path::new("/etc/cronwarden/prop.toml");
    let text = format!(
        "state_dir = \"/tmp/unused\"\n[[job]]\nname = \"j\"\nschedule = {}\ntimezone = {}\nshell = \"true\"\n",
        toml::Value::String(expr.into()),
        toml::Value::String(zone.into()),
    );
    let config =
        Config::parse(path, &text).map_err(|e| format!("{expr:?} rejected in a config: {e}"))?;
    let s = &config.jobs[0].schedule;
    let mut t = from;
    for want in fires {
        let got = s.next_after(t, s.every().map(|_| from));
        if got != Some(*want) {
            return Err(format!(
                "{expr:?} in {zone}: config says {got:?}, direct parse {want}"
            ));
        }
        t = *want;
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(5000))]

    #[test]
    fn any_string_is_a_schedule_or_an_error(expr in "\\PC{0,40}|[ -~]{0,40}", zone in proptest::sample::select(ZONES)) {
        let from = Timestamp::from_second(1_800_000_000).unwrap();
        check_fires(&expr, zone, from).map_err(TestCaseError::fail)?;
    }
}

proptest! {
    #![proptest_config(config(4000))]

    #[test]
    fn accepted_schedules_fire_strictly_later_each_time_and_mean_the_same_in_a_config(
        expr in wild_expr(),
        zone in proptest::sample::select(ZONES),
        secs in 0i64..4_102_444_800,
        near in any::<bool>(),
        offset in -6 * 3600i64..6 * 3600,
    ) {
        let tz = TimeZone::get(zone).unwrap();
        let from = start(&tz, secs, near, offset);
        if let Some(fires) = check_fires(&expr, zone, from).map_err(TestCaseError::fail)? {
            check_in_config(&expr, zone, from, &fires).map_err(TestCaseError::fail)?;
        }
    }
}

proptest! {
    #![proptest_config(config(1000))]

    /// Near DST changes, where the walk runs, its tighter start finds the
    /// same fire as the plain walk from three hours back.
    #[test]
    fn the_walk_from_its_tight_start_finds_what_the_full_walk_finds(
        expr in wild_expr(),
        zone in proptest::sample::select(&ZONES[1..]),
        secs in 0i64..4_102_444_800,
        offset in -4 * 3600i64..4 * 3600,
    ) {
        let tz = TimeZone::get(zone).unwrap();
        let Ok(s) = Schedule::parse(&expr, &tz) else { return Ok(()) };
        if s.every().is_some() {
            return Ok(());
        }
        let mut t = start(&tz, secs, true, offset);
        for _ in 0..3 {
            let fast = s.next_after(t, None);
            prop_assert_eq!(fast, s.next_after_by_full_walk(t), "{:?} in {} after {}", expr, zone, t);
            let Some(next) = fast else { break };
            t = next;
        }
    }
}

// ---- config loader ----

/// The config's own key lists (so a key added there is fuzzed here too),
/// plus one unknown key each.
static TOP_KEYS: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
    let known = crate::config::TOP_KEYS
        .iter()
        .chain(crate::config::integrations::KEYS)
        .chain(crate::config::cluster::KEYS);
    known.copied().chain(["bogus"]).collect()
});
static JOB_KEYS: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
    let known = crate::config::job::JOB_KEYS.iter().copied();
    known.chain(["nope"]).collect()
});
const ALERT_KEYS: &[&str] = &[
    "name",
    "kind",
    "url",
    "command",
    "format",
    "headers",
    "timeout",
    "retries",
    "kinds",
    "jobs",
    "min_severity",
];

/// Strings a config might hold: valid values of some key, and not.
const STRINGS: &[&str] = &[
    "1s",
    "30s",
    "1h 30m",
    "none",
    "0s",
    "5",
    "-1s",
    "1ms",
    "99999999999h",
    "x",
    "",
    "* * * * *",
    "@hourly",
    "@every 1s",
    "0 3 * * *",
    "61 * * * *",
    "UTC",
    "Europe/Berlin",
    "Mars/Olympus",
    "skip",
    "queue",
    "replace",
    "allow",
    "webhook",
    "exec",
    "slack",
    "json",
    "http://127.0.0.1:1/x",
    "ftp://x",
    "env:HOME",
    "env:",
    "critical",
    "job_late",
    "a/b",
    "/bin/true",
    "relative/dir",
    "ü",
    "\u{0}",
    "\u{feff}",
];

/// Scalars a config might hold, plausible and not.
fn scalar() -> impl Strategy<Value = toml::Value> {
    use toml::Value;
    prop_oneof![
        4 => proptest::sample::select(STRINGS).prop_map(|s| Value::String(s.into())),
        1 => proptest::collection::vec(any::<char>(), 0..8)
            .prop_map(|c| Value::String(c.into_iter().collect())),
        1 => any::<i64>().prop_map(Value::Integer),
        2 => (-5i64..10).prop_map(Value::Integer),
        1 => any::<f64>().prop_map(Value::Float),
        1 => any::<bool>().prop_map(Value::Boolean),
        1 => Just(Value::Datetime("1979-05-27T07:32:00Z".parse().unwrap())),
    ]
}

fn value() -> impl Strategy<Value = toml::Value> {
    scalar().prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(toml::Value::Array),
            proptest::collection::btree_map(proptest::sample::select(&JOB_KEYS[..]), inner, 0..4)
                .prop_map(|m| toml::Value::Table(
                    m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
                )),
        ]
    })
}

fn table_of(keys: &'static [&'static str]) -> impl Strategy<Value = toml::Table> {
    proptest::collection::vec((proptest::sample::select(keys), value()), 0..8)
        .prop_map(|kv| kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// A config document: known and unknown keys with values of any type, and
/// `[[job]]`/`[[alert]]` arrays (sometimes of non-tables).
fn document() -> impl Strategy<Value = toml::Table> {
    let jobs =
        proptest::collection::vec(table_of(&JOB_KEYS[..]).prop_map(toml::Value::Table), 0..4);
    let alerts = proptest::collection::vec(table_of(ALERT_KEYS).prop_map(toml::Value::Table), 0..3);
    let watchdog = table_of(&[
        "heartbeat_interval",
        "stall_after",
        "late_after",
        "failing_restart_after",
        "x",
    ]);
    (table_of(&TOP_KEYS[..]), jobs, alerts, watchdog, any::<u8>()).prop_map(
        |(mut top, jobs, alerts, wd, pick)| {
            if pick & 1 == 1 {
                top.insert("job".into(), toml::Value::Array(jobs));
            }
            if pick & 2 == 2 {
                top.insert("alert".into(), toml::Value::Array(alerts));
            }
            if pick & 4 == 4 {
                top.insert("watchdog".into(), toml::Value::Table(wd));
            }
            top
        },
    )
}

/// Every error names the file; an error list is never empty.
fn check_config(path: &Path, text: &str) -> Result<(), TestCaseError> {
    let began = Instant::now();
    let result = Config::parse(path, text);
    prop_assert!(
        began.elapsed() < Duration::from_secs(2),
        "took {:?}",
        began.elapsed()
    );
    if let Err(errors) = result {
        prop_assert!(!errors.0.is_empty());
        for e in &errors.0 {
            prop_assert_eq!(&e.file, path);
            prop_assert!(
                e.to_string().starts_with(&path.display().to_string()),
                "{}",
                e
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn any_config_table_is_loaded_or_refused_naming_the_file(doc in document()) {
        let text = toml::to_string(&doc).unwrap_or_default();
        check_config(Path::new("/etc/cronwarden/a b/ü.toml"), &text)?;
    }

    #[test]
    fn any_toml_ish_text_is_loaded_or_refused_naming_the_file(
        lines in proptest::collection::vec(
            prop_oneof![
                "[a-z_]{1,12} = (\"[^\"\n]{0,20}\"|[0-9]{1,4}|true|\\[\\]|\\{\\}|'[^'\n]{0,10}')",
                "\\[\\[?(job|alert|watchdog|x)\\]\\]?",
                "(name|schedule|shell|command) = \"[^\"\n]{0,20}\"",
                "\\PC{0,30}",
                "[\\x00-\\x7f]{0,30}",
            ],
            0..12,
        ),
    ) {
        check_config(Path::new("cronwarden.toml"), &lines.join("\n"))?;
    }
}

// ---- NDJSON framing and event decoding ----

/// What the frames of `input` must be: every complete line of at most `max`
/// bytes (its `\r` counted, then stripped), `TooLong` for each longer one;
/// an unterminated tail as it is, or `TooLong`.
fn reference(input: &[u8], max: usize) -> Vec<Frame> {
    let mut out = vec![];
    let mut parts: Vec<&[u8]> = input.split(|b| *b == b'\n').collect();
    let tail = parts.pop().unwrap_or_default();
    for l in parts {
        if l.len() > max {
            out.push(Frame::TooLong);
        } else {
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            out.push(Frame::Line(bytes::Bytes::copy_from_slice(l)));
        }
    }
    if tail.len() > max {
        out.push(Frame::TooLong);
    } else if !tail.is_empty() {
        out.push(Frame::Line(bytes::Bytes::copy_from_slice(tail)));
    }
    out
}

/// Bytes rich in `\n` and `\r`, cheap to generate (a byte each, mapped).
fn stream_bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..300).prop_map(|raw| {
        raw.into_iter()
            .map(|b| match b % 16 {
                0..=3 => b'\n',
                4 => b'\r',
                5..=10 => b'a',
                _ => b,
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(config(5000))]

    /// However the bytes arrive, the frames are the reference's, and the
    /// codec never holds more than `max` bytes between reads.
    #[test]
    fn line_codec_frames_any_bytes_in_any_chunks_within_its_bound(
        input in stream_bytes(),
        max in 1usize..24,
        cuts in proptest::collection::vec(1usize..40, 1..40),
    ) {
        let mut codec = LineCodec::new(max);
        let mut buf = BytesMut::new();
        let mut frames = vec![];
        let mut rest = &input[..];
        let mut cuts = cuts.iter().cycle();
        while !rest.is_empty() {
            let n = (*cuts.next().unwrap()).min(rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                frames.push(f);
            }
            prop_assert!(buf.len() <= max, "holding {} bytes, max {}", buf.len(), max);
        }
        while let Some(f) = codec.decode_eof(&mut buf).unwrap() {
            frames.push(f);
        }
        prop_assert_eq!(frames, reference(&input, max));
    }

    /// Arbitrary bytes, and corrupted or truncated real events, decode to
    /// an event or an error, never a panic.
    #[test]
    fn any_line_decodes_to_an_event_or_an_error(
        junk in proptest::collection::vec(any::<u8>(), 0..200),
        seq in any::<u64>(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        cut in any::<usize>(),
    ) {
        let _ = decode_event(Frame::Line(junk.into()));
        let _ = decode_event(Frame::TooLong);
        let good = Event::Heartbeat {
            seq,
            at: Timestamp::from_second(1_800_000_000).unwrap(),
            last_good_turn_at: None,
            running: 0,
            store_error: Some("disk full".into()),
            armed: None,
            progress: vec![],
            stats: None,
        };
        let mut line = encode(&good);
        line.pop();
        prop_assert_eq!(decode_event(Frame::Line(line.clone().into())).unwrap(), good);
        for (at, b) in flips {
            let i = at % line.len();
            line[i] = b;
        }
        line.truncate(cut % (line.len() + 1));
        let _ = decode_event(Frame::Line(line.into()));
    }
}

/// A 10 MiB line fed through the codec in pipe-sized reads is dropped as it
/// arrives: reported once, never held whole, and the next line is intact.
#[test]
fn a_ten_mib_line_is_never_buffered_whole() {
    let max = crate::wire::MAX_LINE;
    let mut codec = LineCodec::new(max);
    let mut buf = BytesMut::new();
    let mut frames = vec![];
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..160 {
        buf.extend_from_slice(&chunk);
        while let Some(f) = codec.decode(&mut buf).unwrap() {
            frames.push(f);
        }
        assert!(buf.len() <= max);
    }
    buf.extend_from_slice(b"\n{\"type\":\"schedule\",\"jobs\":[]}\n");
    while let Some(f) = codec.decode(&mut buf).unwrap() {
        frames.push(f);
    }
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(frames[0], Frame::TooLong);
    assert_eq!(
        decode_event(frames[1].clone()).unwrap(),
        Event::Schedule { jobs: vec![] }
    );
}

// ---- extreme durations and counts ----

/// A year, the documented bound of every duration key, in nanoseconds.
const YEAR_NS: u128 = 365 * 24 * 3600 * 1_000_000_000;

/// (suffix, nanoseconds per unit): the oracle's own table of units.
const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
    ("d", 86_400_000_000_000),
];

fn extreme_number() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(365),
        Just(8_760),
        Just(525_600),
        Just(31_536_000),
        Just(31_536_001),
        Just(u32::MAX as u64),
        Just(u64::MAX / 1_000_000_000),
        Just(u64::MAX),
        any::<u64>(),
        0u64..100_000,
    ]
}

fn extreme_count() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(i64::MIN),
        Just(-1i64),
        Just(0),
        Just(1),
        Just(u32::MAX as i64),
        Just(u32::MAX as i64 + 1),
        Just(i64::MAX),
        any::<i64>(),
    ]
}

proptest! {
    #![proptest_config(config(2000))]

    /// Every job duration key at any magnitude in any unit, and every count
    /// key at any integer: accepted with exactly the value written when the
    /// oracle (its own unit table, in 128-bit nanoseconds) says it is in
    /// (0, 365 d] or 1..=u32::MAX, otherwise refused with an error naming
    /// the job and the key; never a panic.
    #[test]
    fn extreme_durations_and_counts_are_taken_exactly_or_refused_naming_the_key(
        key in proptest::sample::select(&["timeout", "kill_grace", "misfire_grace", "late_after"][..]),
        n in extreme_number(),
        unit in proptest::sample::select(UNITS),
        count_key in proptest::sample::select(&[
            "zero_output_alert_after", "alert_after_failures", "overlap_alert_after",
            "retention", "keep_output",
        ][..]),
        count in extreme_count(),
    ) {
        let text = format!(
            "[[job]]\nname = \"x\"\nschedule = \"@daily\"\nshell = \"true\"\n\
             {key} = \"{n}{}\"\n{count_key} = {count}\n",
            unit.0
        );
        let ns = n as u128 * unit.1;
        let duration_ok = ns > 0 && ns <= YEAR_NS;
        let count_ok = (1..=u32::MAX as i64).contains(&count);
        match Config::parse(Path::new("x.toml"), &text) {
            Ok(c) => {
                prop_assert!(duration_ok && count_ok, "accepted {key}={n}{} {count_key}={count}", unit.0);
                let j = &c.jobs[0];
                let got = match key {
                    "timeout" => j.timeout.unwrap(),
                    "kill_grace" => j.kill_grace,
                    "misfire_grace" => j.misfire_grace,
                    _ => j.late_after,
                };
                prop_assert_eq!(got.as_nanos(), ns);
                let got_count = match count_key {
                    "zero_output_alert_after" => j.zero_output_alert_after.unwrap(),
                    "alert_after_failures" => j.alert_after_failures,
                    "overlap_alert_after" => j.overlap_alert_after,
                    "retention" => j.retention,
                    _ => j.keep_output.unwrap(),
                };
                prop_assert_eq!(got_count as i64, count);
            }
            Err(errors) => {
                prop_assert!(!(duration_ok && count_ok), "refused {key}={n}{}: {}", unit.0, errors);
                let named: Vec<&str> = errors.0.iter().map(|e| e.key.as_str()).collect();
                if !duration_ok {
                    prop_assert!(named.contains(&key), "{key} not named: {}", errors);
                }
                if !count_ok {
                    prop_assert!(named.contains(&count_key), "{count_key} not named: {}", errors);
                }
                for e in &errors.0 {
                    prop_assert_eq!(e.job.as_deref(), Some("x"));
                }
            }
        }
    }
}
