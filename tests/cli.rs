//! `next` and `check`: schedules and config validation, through the CLI.

use crate::util::{Env, BIN};
use std::process::Command;

fn next(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).arg("next").args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn fires(expr: &str, tz: &str, from: &str, n: usize) -> Vec<String> {
    let (code, out, err) = next(&[expr, "--tz", tz, "--from", from, "-n", &n.to_string()]);
    assert_eq!(code, 0, "next {expr:?} failed: {err}");
    out.lines().map(str::to_string).collect()
}

/// Hand-checked against the tz database: Europe/Berlin changes on
/// 2026-03-29 (02:00 CET -> 03:00 CEST) and 2026-10-25 (03:00 CEST -> 02:00
/// CET); America/New_York on 2026-03-08 and 2026-11-01.
#[test]
fn next_dst_gap_fires_once_after_the_gap() {
    assert_eq!(
        fires("30 2 * * *", "Europe/Berlin", "2026-03-28T00:00:00Z", 3),
        [
            "2026-03-28T02:30:00+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-03-30T02:30:00+02:00"
        ]
    );
    assert_eq!(
        fires(
            "0,30 2 * * *",
            "America/New_York",
            "2026-03-08T06:00:00Z",
            2
        ),
        ["2026-03-08T03:00:00-04:00", "2026-03-09T02:00:00-04:00"]
    );
}

#[test]
fn next_dst_fold_fixed_hour_once_star_hour_both_passes() {
    assert_eq!(
        fires("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 2),
        ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
    );
    assert_eq!(
        fires("0 * * * *", "Europe/Berlin", "2026-10-24T23:30:00Z", 3),
        [
            "2026-10-25T02:00:00+02:00",
            "2026-10-25T02:00:00+01:00",
            "2026-10-25T03:00:00+01:00"
        ]
    );
    assert_eq!(
        fires("30 1 * * *", "America/New_York", "2026-11-01T00:00:00Z", 2),
        ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
    );
}

#[test]
fn next_or_rule_seconds_every_leap_day_nicknames() {
    // Day-of-month 1 OR Monday.
    assert_eq!(
        fires("0 9 1 * mon", "UTC", "2026-11-24T00:00:00Z", 3),
        [
            "2026-11-30T09:00:00+00:00",
            "2026-12-01T09:00:00+00:00",
            "2026-12-07T09:00:00+00:00"
        ]
    );
    assert_eq!(
        fires("15,45 * * * * *", "UTC", "2026-11-24T10:00:30Z", 3),
        [
            "2026-11-24T10:00:45+00:00",
            "2026-11-24T10:01:15+00:00",
            "2026-11-24T10:01:45+00:00"
        ]
    );
    assert_eq!(
        fires("@every 1h 30m", "UTC", "2026-11-24T10:00:00Z", 2),
        ["2026-11-24T11:30:00+00:00", "2026-11-24T13:00:00+00:00"]
    );
    assert_eq!(
        fires("0 12 29 2 *", "UTC", "2026-11-24T00:00:00Z", 2),
        ["2028-02-29T12:00:00+00:00", "2032-02-29T12:00:00+00:00"]
    );
    assert_eq!(
        fires("@weekly", "UTC", "2026-11-24T00:00:00Z", 1),
        ["2026-11-29T00:00:00+00:00"]
    );
    // Strictly after FROM.
    assert_eq!(
        fires("0 0 * * *", "UTC", "2026-11-24T00:00:00Z", 1),
        ["2026-11-25T00:00:00+00:00"]
    );
}

#[test]
fn next_rejects_bad_input_with_exit_2() {
    for args in [
        &["61 * * * *"][..],
        &["* * * *"],
        &["@fortnightly"],
        &["* * * * *", "--tz", "Mars/Olympus"],
        &["* * * * *", "--from", "yesterday"],
    ] {
        let (code, _, err) = next(args);
        assert_eq!(code, 2, "{args:?}");
        assert!(!err.is_empty(), "{args:?} printed no error");
    }
}

#[test]
fn check_prints_three_next_fires_per_job() {
    let env = Env::new(
        "timezone = \"Europe/Berlin\"\n[[job]]\nname = \"nightly\"\nschedule = \"0 3 * * *\"\ncommand = [\"true\"]\n\
         [[job]]\nname = \"ny\"\nschedule = \"@hourly\"\ntimezone = \"America/New_York\"\nshell = \"true\"\ntimeout = \"30m\"\n",
    );
    let out = env.cmd(&["check", "--config", env.config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].ends_with("ok, 2 job(s)"), "{text}");
    assert!(lines[1].starts_with("nightly"), "{text}");
    for l in &lines[2..5] {
        assert!(l.trim_start().contains("T03:00:00+0"), "{text}");
    }
    assert!(lines[5].starts_with("ny"), "{text}");
    for l in &lines[6..9] {
        assert!(l.contains(":00:00-0"), "{text}");
    }
}

/// Each class of config error: exit 2, and the message names the file, the
/// job and the key.
#[test]
fn check_and_run_report_every_error_with_file_job_and_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "schedule = \"@daily\"\ncommand = [\"true\"]\nretry = 3\n",
            "a",
            "retry",
        ),
        ("schedule = \"@daily\"\ncommand = []\n", "a", "command"),
        (
            "schedule = \"@daily\"\ncommand = [\"true\"]\ntimeout = \"ages\"\n",
            "a",
            "timeout",
        ),
        // Issue 13: once a panic (exit 101) adding timeout + kill_grace.
        (
            "schedule = \"@daily\"\ncommand = [\"true\"]\nkill_grace = \"18446744073709551615s\"\n",
            "a",
            "kill_grace",
        ),
        (
            "schedule = \"* * 32 * *\"\ncommand = [\"true\"]\n",
            "a",
            "schedule",
        ),
        (
            "schedule = \"@daily\"\ncommand = [\"true\"]\ntimezone = \"Europe/Atlantis\"\n",
            "a",
            "timezone",
        ),
    ];
    for (body, job, key) in cases {
        let env = Env::new(&format!("[[job]]\nname = \"{job}\"\n{body}"));
        let file = env.config.to_str().unwrap().to_string();
        for sub in ["check", "run"] {
            let out = env.cmd(&[sub, "--config", &file]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{sub} {body:?}: {err}");
            let want = format!("{file}: job \"{job}\": key \"{key}\":");
            assert!(
                err.contains(&want),
                "{sub} {body:?}: want {want:?} in {err}"
            );
        }
    }
    // Duplicates, and several errors at once: all are listed.
    let env = Env::new(
        "[[job]]\nname = \"x\"\nschedule = \"@daily\"\ncommand = [\"true\"]\n\
         [[job]]\nname = \"x\"\nschedule = \"@daily\"\ncommand = [\"true\"]\n\
         [[job]]\nname = \"y\"\nschedule = \"nope\"\ncommand = [\"true\"]\n",
    );
    let out = env.cmd(&["check", "--config", env.config.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("job \"x\": key \"name\": duplicate job name"),
        "{err}"
    );
    assert!(err.contains("job \"y\": key \"schedule\""), "{err}");
}

#[test]
fn check_of_a_missing_file_names_it() {
    let out = Command::new(BIN)
        .args(["check", "--config", "/nonexistent/cw.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/cw.toml"));
}
