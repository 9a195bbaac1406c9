//! The CLI for people: `check`'s explanations and lints, the tables of
//! `jobs`, `runs`, `status` and `alerts` with relative times, colour only
//! where it belongs, and examples in `--help`.

use std::{
    process::{Command, Output, Stdio},
    time::Duration,
};

use crate::util::{job, wait_until, Env, BIN};

const LONG: Duration = Duration::from_secs(30);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn check_explains_each_schedule_beside_its_next_fires() {
    let env = Env::new(
        "timezone = \"Europe/Berlin\"\n\
         [[job]]\nname = \"nightly\"\nschedule = \"0 3 * * *\"\nshell = \"true\"\n\
         [[job]]\nname = \"quarter\"\nschedule = \"*/15 * * * *\"\nshell = \"true\"\ntimeout = \"10m\"\n\
         [[job]]\nname = \"odd\"\nschedule = \"23 0-23/2 * * *\"\ntimezone = \"UTC\"\nshell = \"true\"\n\
         [[job]]\nname = \"tick\"\nschedule = \"@every 90s\"\nshell = \"true\"\ntimeout = \"1m\"\n",
    );
    let out = env.cmd(&["check", "--config", env.config.to_str().unwrap()]);
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("warning:"),
        "{}",
        text(&out.stderr)
    );
    for want in [
        "nightly  \"0 3 * * *\"  at 03:00 every day (Europe/Berlin)",
        "quarter  \"*/15 * * * *\"  every 15 minutes (Europe/Berlin)",
        "odd  \"23 0-23/2 * * *\"  at minute 23 past every 2nd hour (UTC)",
        "tick  \"@every 90s\"  every 90s",
    ] {
        assert!(
            report.lines().any(|l| l == want),
            "no {want:?} in\n{report}"
        );
    }
    // Each next fire says how far away it is.
    let fire = report.lines().nth(2).unwrap();
    assert!(fire.contains("T03:00:00+01:00  in "), "{report}");

    let out = env.cmd(&["check", "--json", "--config", env.config.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(
        v["jobs"][0]["explanation"],
        "at 03:00 every day (Europe/Berlin)"
    );
    assert_eq!(v["jobs"][0]["next"].as_array().unwrap().len(), 3);
    assert_eq!(v["warnings"], serde_json::json!([]));
}

#[test]
fn check_warns_of_dst_skip_streaks_and_pile_ups_and_still_exits_0() {
    let mut body = String::from(
        "[[job]]\nname = \"gap\"\nschedule = \"30 2 * * *\"\ntimezone = \"Europe/Berlin\"\nshell = \"true\"\n\
         [[job]]\nname = \"streak\"\nschedule = \"1-59/5 * * * *\"\ntimeout = \"10m\"\nshell = \"true\"\n",
    );
    for i in 0..10 {
        body +=
            &format!("[[job]]\nname = \"pile{i}\"\nschedule = \"0 4 * * *\"\nshell = \"true\"\n");
    }
    let env = Env::new(&body);
    let file = env.config.to_str().unwrap();
    let out = env.cmd(&["check", "--config", file]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        text(&out.stdout).contains("ok, 12 job(s), 4 warning(s)"),
        "{}",
        text(&out.stdout)
    );
    for want in [
        format!("warning: {file}: job \"gap\": key \"schedule\": 02:30:00 on "),
        format!(
            "warning: {file}: job \"streak\": key \"timeout\": timeout (10m 0s) plus kill_grace (10s) is not shorter"
        ),
        format!(
            "warning: {file}: job \"pile0\": key \"schedule\": 10 jobs fire at the same instant"
        ),
    ] {
        assert!(err.contains(&want), "no {want:?} in\n{err}");
    }
    assert!(err.contains("does not exist in Europe/Berlin"), "{err}");
    assert!(err.contains("happens twice in Europe/Berlin"), "{err}");

    // The same jobs without the problems: no warning.
    let mut body = String::from(
        "[[job]]\nname = \"gap\"\nschedule = \"30 3 * * *\"\ntimezone = \"Europe/Berlin\"\nshell = \"true\"\n\
         [[job]]\nname = \"streak\"\nschedule = \"*/5 * * * *\"\ntimeout = \"4m\"\nshell = \"true\"\n",
    );
    for i in 0..10 {
        body +=
            &format!("[[job]]\nname = \"pile{i}\"\nschedule = \"{i} 4 * * *\"\nshell = \"true\"\n");
    }
    env.write_config(&body);
    let out = env.cmd(&["check", "--config", file]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        !text(&out.stderr).contains("warning"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("ok, 12 job(s)\n"),
        "{}",
        text(&out.stdout)
    );
}

fn run_with(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .envs(vars.iter().copied())
        .current_dir(env.dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The byte offset of each header word, which every row's cells must share.
fn assert_aligned(table: &str, header: &[&str]) {
    let mut lines = table.lines();
    let head = lines.next().unwrap();
    let cols: Vec<usize> = header
        .iter()
        .map(|h| head.find(h).unwrap_or_else(|| panic!("no {h} in {head:?}")))
        .collect();
    assert!(cols.windows(2).all(|w| w[0] < w[1]), "{head:?}");
    for row in lines {
        for c in &cols[1..] {
            assert!(
                row.len() > *c && &row[c - 2..*c] == "  " && !row[*c..].starts_with(' '),
                "column at {c} is not aligned in\n{table}"
            );
        }
    }
}

#[test]
fn tables_align_with_relative_times_and_colour_only_on_request() {
    let env = Env::new(
        "[[job]]\nname = \"tick\"\nschedule = \"* * * * * *\"\nshell = \"echo hi\"\n\
         [[job]]\nname = \"a-much-longer-job-name\"\nschedule = \"@daily\"\nshell = \"true\"\n",
    );
    let _sup = env.start();
    env.wait_ok(LONG);
    wait_until("tick ran twice", LONG, || {
        let (_, s) = env.status();
        let s = s?;
        (job(&s, "tick")["last_run"]["id"].as_u64()? >= 2).then_some(())
    });
    let config = env.config.to_str().unwrap();

    let jobs = run_with(&env, &["jobs", "--config", config], &[]);
    let table = text(&jobs.stdout);
    assert_eq!(jobs.status.code(), Some(0), "{table}");
    assert_aligned(
        &table,
        &["JOB", "STATE", "SCHEDULE", "NEXT", "LAST RUN", "ENDED"],
    );
    let tick = table.lines().find(|l| l.starts_with("tick ")).unwrap();
    assert!(tick.contains(" in ") && tick.contains(" ago"), "{table}");
    assert!(tick.contains("success"), "{table}");
    assert!(
        !table.contains('\x1b'),
        "escape codes on a pipe:\n{table:?}"
    );

    let runs = run_with(&env, &["runs", "tick", "--config", config], &[]);
    let table = text(&runs.stdout);
    assert_eq!(runs.status.code(), Some(0), "{table}");
    assert_aligned(
        &table,
        &["RUN", "SCHEDULED", "TRIGGER", "OUTCOME", "EXIT", "TOOK"],
    );
    assert!(table.lines().nth(1).unwrap().contains(" ago"), "{table}");
    assert!(!table.contains('\x1b'), "{table:?}");

    let status = run_with(&env, &["status", "--config", config], &[]);
    let report = text(&status.stdout);
    assert!(report.starts_with("state: ok\n"), "{report}");
    assert!(!report.contains('\x1b'), "{report:?}");

    // Forced colour paints the state words, and the columns still line up
    // once the escapes are taken out; NO_COLOR beats it.
    let forced = run_with(
        &env,
        &["jobs", "--config", config],
        &[("CLICOLOR_FORCE", "1")],
    );
    let coloured = text(&forced.stdout);
    assert!(coloured.contains("\x1b[32msuccess\x1b[0m"), "{coloured:?}");
    let plain = coloured
        .replace("\x1b[0m", "")
        .replace("\x1b[32m", "")
        .replace("\x1b[36m", "");
    assert_aligned(
        &plain,
        &["JOB", "STATE", "SCHEDULE", "NEXT", "LAST RUN", "ENDED"],
    );
    for args in [
        &["jobs", "--config", config][..],
        &["runs", "tick", "--config", config],
        &["status", "--config", config],
    ] {
        let out = run_with(&env, args, &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]);
        assert!(
            !out.stdout.contains(&0x1b),
            "{args:?}: {:?}",
            text(&out.stdout)
        );
    }

    // On a real terminal (script(1) gives the command a pty), colour is on
    // by default and off with NO_COLOR.
    let on_tty = |no_color: bool| {
        let mut cmd = Command::new("script");
        cmd.args([
            "-qec",
            &format!("{BIN} status --config {config}"),
            "/dev/null",
        ])
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .stdin(Stdio::null());
        if no_color {
            cmd.env("NO_COLOR", "1");
        }
        text(&cmd.output().unwrap().stdout)
    };
    assert!(
        on_tty(false).contains("\x1b[32mok\x1b[0m"),
        "{:?}",
        on_tty(false)
    );
    assert!(!on_tty(true).contains('\x1b'), "{:?}", on_tty(true));

    // --json is the socket's JSON.
    let out = run_with(&env, &["jobs", "--json", "--config", config], &[]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v.as_array().unwrap().iter().any(|j| j["name"] == "tick"));
}

#[test]
fn help_shows_examples_for_every_command() {
    for sub in [
        "run",
        "check",
        "next",
        "status",
        "jobs",
        "runs",
        "trigger",
        "pause",
        "resume",
        "reload",
        "audit",
        "alerts",
        "import",
        "completions",
    ] {
        let out = Command::new(BIN).args([sub, "--help"]).output().unwrap();
        let help = text(&out.stdout);
        assert!(
            help.contains("Examples:\n  cronwarden "),
            "{sub} --help has no examples:\n{help}"
        );
    }
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(text(&out.stdout).contains("Examples:"));
}

#[test]
fn check_json_lists_errors_of_an_invalid_config() {
    let env = Env::new("[[job]]\nname = \"a\"\nschedule = \"61 * * * *\"\nshell = \"true\"\n");
    let out = env.cmd(&["check", "--json", "--config", env.config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["errors"][0]["job"], "a");
    assert_eq!(v["errors"][0]["key"], "schedule");
}

#[test]
fn next_json_is_an_array_of_the_instants() {
    let out = Command::new(BIN)
        .args([
            "next",
            "0 3 * * *",
            "--tz",
            "Europe/Berlin",
            "--from",
            "2026-12-01T00:00:00Z",
            "-n",
            "2",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v,
        serde_json::json!(["2026-12-01T03:00:00+01:00", "2026-12-02T03:00:00+01:00"])
    );
}
