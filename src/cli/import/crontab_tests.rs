//! The crontab converter against crontab(5)'s own examples, a Debian
//! /etc/crontab and the corners of `%`, environment lines and names:
//! each output must load as a config and mean what cron meant.

use super::*;

fn conv(text: &str, system: bool) -> Conversion {
    convert(
        text,
        &Options {
            system,
            source: "test".into(),
            timezone: Some("UTC".into()),
            safe_defaults: false,
        },
    )
}

fn parsed(c: &Conversion) -> cronwarden_shared::config::Config {
    cronwarden_shared::config::Config::parse(std::path::Path::new("imported.toml"), &c.toml)
        .unwrap_or_else(|e| panic!("{e}\n{}", c.toml))
}

#[test]
fn system_format_is_detected_by_path() {
    use std::path::Path;
    assert!(is_system_path(Path::new("/etc/crontab")));
    assert!(is_system_path(Path::new("/etc/cron.d/backup")));
    assert!(!is_system_path(Path::new("/etc/cron.daily/backup")));
    assert!(!is_system_path(Path::new("/home/me/crontab")));
}

#[test]
fn percent_splits_command_and_stdin() {
    assert_eq!(
        split_percent(r#"mail -s "It's 10pm" joe%Joe,%%Where are your kids?%"#),
        (
            r#"mail -s "It's 10pm" joe"#.to_string(),
            Some("Joe,\n\nWhere are your kids?\n".to_string())
        )
    );
    assert_eq!(
        split_percent(r"date +\%Y-\%m-\%d"),
        ("date +%Y-%m-%d".to_string(), None)
    );
    assert_eq!(
        split_percent(r"cat%a\%b%c"),
        ("cat".to_string(), Some("a%b\nc".to_string()))
    );
    // Other backslashes are the shell's business.
    assert_eq!(
        split_percent(r"echo a\ b"),
        (r"echo a\ b".to_string(), None)
    );
}

#[test]
fn env_lines_as_cron_reads_them() {
    assert_eq!(
        env_line("PATH=/usr/bin:/bin"),
        Some(("PATH".into(), "/usr/bin:/bin".into()))
    );
    assert_eq!(env_line("A = \"b c\" "), Some(("A".into(), "b c".into())));
    assert_eq!(env_line("MAILTO=''"), Some(("MAILTO".into(), "".into())));
    assert_eq!(env_line("'X Y'=1"), Some(("X Y".into(), "1".into())));
    assert_eq!(env_line("0 * * * * A=1 cmd"), None);
    assert_eq!(env_line("@daily cmd"), None);
}

#[test]
fn names_come_from_the_working_program() {
    assert_eq!(
        job_name("cd / && run-parts --report /etc/cron.hourly"),
        "run-parts-cron.hourly"
    );
    assert_eq!(
        job_name("test -x /usr/sbin/anacron || ( cd / && run-parts --report /etc/cron.daily )"),
        "run-parts-cron.daily"
    );
    assert_eq!(
        job_name("$HOME/bin/daily.job >> $HOME/tmp/out 2>&1"),
        "daily.job"
    );
    assert_eq!(job_name(r#"mail -s "It's 10pm" joe"#), "mail");
    assert_eq!(
        job_name("FOO=1 nice -n 10 /usr/local/bin/backup.sh"),
        "backup.sh"
    );
    assert_eq!(
        job_name("if [ -x /x ]; then /usr/bin/x > /dev/null; fi"),
        "x"
    );
    assert_eq!(job_name("cd /"), "job");
}

#[test]
fn crontab5_examples_translate_with_stdin_and_unique_names() {
    let c = conv(include_str!("../../../tests/data/crontab5"), false);
    let config = parsed(&c);
    let got: Vec<(&str, &str)> = config
        .jobs
        .iter()
        .map(|j| (j.name.as_str(), j.schedule.expr()))
        .collect();
    assert_eq!(
        got,
        [
            ("daily.job", "5 0 * * *"),
            ("monthly", "15 14 1 * *"),
            ("mail", "0 22 * * 1-5"),
            ("echo", "23 0-23/2 * * *"),
            ("echo-2", "5 4 * * sun"),
            ("echo-3", "0 */4 1 * mon"),
            ("echo-4", "0 0 1,15 * 3"),
            ("at-boot", "@reboot"),
            ("echo-5", "@daily"),
        ]
    );
    // SHELL=/bin/bash: argv with that shell; MAILTO: a comment, counted.
    let mail = config.job("mail").unwrap();
    assert_eq!(
        mail.command.argv(),
        [
            "/bin/bash",
            "-c",
            "printf '%s' 'Joe,\n\nWhere are your kids?\n' | { mail -s \"It's 10pm\" joe\n}"
        ]
    );
    assert_eq!(mail.env.get("SHELL").map(String::as_str), Some("/bin/bash"));
    assert!(
        c.toml
            .contains("# not translated: cronwarden sends no mail"),
        "{}",
        c.toml
    );
    assert!(c.toml.contains("kind = \"exec\""), "{}", c.toml);
    assert!(c.toml.contains("schedule = \"@reboot\""), "{}", c.toml);
    let lines: Vec<usize> = c.untranslated.iter().map(|(n, _)| *n).collect();
    assert_eq!(lines.len(), 1, "{:?}", c.untranslated);
    // The original line is a comment above its job.
    assert!(c.toml.contains("# 5 0 * * *       $HOME/bin/daily.job >> $HOME/tmp/out 2>&1\n[[job]]\nname = \"daily.job\""), "{}", c.toml);
    assert!(c.toml.contains("\n# state_dir = "), "{}", c.toml);
}

#[test]
fn debian_system_crontab_translates_completely() {
    let c = conv(include_str!("../../../tests/data/debian-crontab"), true);
    assert!(c.untranslated.is_empty(), "{:?}", c.untranslated);
    let config = parsed(&c);
    let names: Vec<&str> = config.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "run-parts-cron.hourly",
            "run-parts-cron.daily",
            "run-parts-cron.weekly",
            "run-parts-cron.monthly"
        ]
    );
    let daily = config.job("run-parts-cron.daily").unwrap();
    assert_eq!(daily.schedule.expr(), "25 6 * * *");
    // SHELL=/bin/sh is cronwarden's own shell; PATH goes to the env.
    assert_eq!(
        daily.command,
        cronwarden_shared::config::JobCommand::Shell(
            "test -x /usr/sbin/anacron || ( cd / && run-parts --report /etc/cron.daily )".into()
        )
    );
    assert_eq!(
        daily.env.get("PATH").map(String::as_str),
        Some("/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin")
    );
}

#[test]
fn system_user_column_and_zones() {
    let c = conv(
        "CRON_TZ=Europe/Berlin\n30 2 * * * backup /usr/local/bin/backup\n@hourly root /bin/true\n",
        true,
    );
    let config = parsed(&c);
    let backup = config.job("backup").unwrap();
    assert_eq!(backup.timezone, "Europe/Berlin");
    assert!(
        backup.env.is_empty(),
        "CRON_TZ is not exported: {:?}",
        backup.env
    );
    if config_has_user_key() {
        assert!(c.toml.contains("\nuser = \"backup\"\n"), "{}", c.toml);
    } else {
        assert!(c.toml.contains("# user = \"backup\""), "{}", c.toml);
        assert_eq!(c.untranslated.len(), 1, "{:?}", c.untranslated);
    }
    // root needs no user line.
    assert!(!c.toml.contains("\"root\""), "{}", c.toml);
}

#[test]
fn lines_cron_and_cronwarden_read_differently_stay_comments() {
    let c = conv(
        "TZ=Mars/Olympus\n0 0 */2 * 1 /bin/a\n0 0 */2 * */3 /bin/c\n61 * * * * /bin/b\n* * *\nMAILTO=\"\"\n\
         0 0 */2 * * /bin/ok\n0 0 * * */2 /bin/ok\n",
        false,
    );
    let config = parsed(&c);
    // A starred step beside a bare `*` means the same to both.
    assert_eq!(config.jobs.len(), 2, "{}", c.toml);
    assert_eq!(c.untranslated.len(), 5, "{:?}", c.untranslated);
    assert!(c.toml.contains("AND day-of-week"), "{}", c.toml);
    assert!(
        c.toml.contains("no mail: nothing to translate"),
        "{}",
        c.toml
    );
}
