//! `import` and `completions`: a crontab in, a config `check` accepts out.

use crate::util::{Env, BIN};
use std::{
    io::Write,
    process::{Command, Stdio},
};

fn data(name: &str) -> String {
    format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Imports `args`, writes the TOML beside the test and checks it: returns
/// import's exit code, its TOML and `check`'s stdout.
fn import_and_check(env: &Env, args: &[&str]) -> (i32, String, String) {
    let out = env.cmd(&[&["import"][..], args].concat());
    let toml = String::from_utf8(out.stdout).unwrap();
    // Every line left as a comment is also named on stderr.
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in toml.lines().filter_map(|l| l.strip_prefix("# line ")) {
        let n = line.split(':').next().unwrap();
        assert!(
            stderr.contains(&format!(": line {n}: not translated: ")),
            "{stderr}"
        );
    }
    let file = env.path("imported.toml");
    std::fs::write(&file, &toml).unwrap();
    let check = env.cmd(&["check", "--config", file.to_str().unwrap()]);
    let report = String::from_utf8_lossy(&check.stdout).into_owned();
    assert_eq!(
        check.status.code(),
        Some(0),
        "check refused the import:\n{toml}\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
    (out.status.code().unwrap_or(-1), toml, report)
}

/// `check` prints `NAME  "EXPR" ...` for each job.
fn assert_job(report: &str, name: &str, expr: &str) {
    let want = format!("{name}  {expr:?}");
    assert!(
        report.lines().any(|l| l.starts_with(&want)),
        "no {want:?} in check's output:\n{report}"
    );
}

#[test]
fn import_debian_system_crontab_translates_every_line() {
    let env = Env::new("");
    let (code, toml, report) =
        import_and_check(&env, &["--system", "--tz", "UTC", &data("debian-crontab")]);
    assert_eq!(code, 0, "{toml}");
    assert!(report.contains("ok, 4 job(s)"), "{report}");
    for (name, expr) in [
        ("run-parts-cron.hourly", "17 * * * *"),
        ("run-parts-cron.daily", "25 6 * * *"),
        ("run-parts-cron.weekly", "47 6 * * 7"),
        ("run-parts-cron.monthly", "52 6 1 * *"),
    ] {
        assert_job(&report, name, expr);
    }
    assert!(
        toml.contains("shell = \"test -x /usr/sbin/anacron || ( cd / && run-parts --report /etc/cron.daily )\""),
        "{toml}"
    );
    assert!(toml.contains("# state_dir = "), "{toml}");
}

#[test]
fn import_crontab5_examples_exit_1_for_the_lines_left_as_comments() {
    let env = Env::new("");
    let (code, toml, report) =
        import_and_check(&env, &["--tz", "Europe/Berlin", &data("crontab5")]);
    assert_eq!(code, 1, "MAILTO is not translatable:\n{toml}");
    assert!(report.contains("ok, 9 job(s)"), "{report}");
    for (name, expr) in [
        ("daily.job", "5 0 * * *"),
        ("monthly", "15 14 1 * *"),
        ("mail", "0 22 * * 1-5"),
        ("echo", "23 0-23/2 * * *"),
        ("echo-2", "5 4 * * sun"),
        ("echo-3", "0 */4 1 * mon"),
        ("echo-4", "0 0 1,15 * 3"),
        ("at-boot", "@reboot"),
        ("echo-5", "@daily"),
    ] {
        assert_job(&report, name, expr);
    }
    assert!(toml.contains("timezone = \"Europe/Berlin\""), "{toml}");
    assert!(!toml.contains("# line 18: @reboot"), "{toml}");
    assert!(toml.contains("# line 5: MAILTO=paul"), "{toml}");
}

/// The `%` stdin of crontab(5) reaches the command byte for byte when the
/// imported job's shell text runs.
#[test]
fn import_percent_stdin_reaches_the_command() {
    let env = Env::new("");
    let out_file = env.path("stdin.txt");
    let crontab = format!(
        "0 22 * * 1-5 cat > {}%Joe,%%Where are your kids?\\%%\n",
        out_file.display()
    );
    let mut child = Command::new(BIN)
        .args(["import", "-", "--tz", "UTC"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(crontab.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let toml = String::from_utf8(out.stdout).unwrap();
    std::fs::write(env.path("imported.toml"), &toml).unwrap();
    let check = env.cmd(&[
        "check",
        "--config",
        env.path("imported.toml").to_str().unwrap(),
    ]);
    assert_eq!(check.status.code(), Some(0), "{toml}");
    // Run the job's shell text as the runner would: /bin/sh -c, stdin /dev/null.
    let doc: toml::Table = toml.parse().unwrap();
    let script = doc["job"][0]["shell"].as_str().unwrap();
    let status = Command::new("/bin/sh")
        .args(["-c", script])
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{script}");
    assert_eq!(
        std::fs::read_to_string(&out_file).unwrap(),
        "Joe,\n\nWhere are your kids?%\n"
    );
}

#[test]
fn import_of_an_unreadable_file_exits_2() {
    let out = Command::new(BIN)
        .args(["import", "/nonexistent/crontab"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/crontab"));
}

#[test]
fn completions_for_every_shell_name_the_subcommands() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        for sub in [
            "run",
            "check",
            "import",
            "status",
            "jobs",
            "runs",
            "completions",
        ] {
            assert!(text.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    let out = Command::new(BIN)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("complete -F _cronwarden"), "{text}");
}
