//! The config's own tests (the keys' are beside their modules).

use super::{parse_errors as errors, *};

#[test]
fn minimal_config_gets_documented_defaults() {
    let c = Config::parse(
        Path::new("/etc/cw/cronwarden.toml"),
        "state_dir = \"state\"\n[[job]]\nname = \"a\"\nschedule = \"* * * * *\"\ncommand = [\"true\"]\n",
    )
    .unwrap();
    assert_eq!(c.state_dir, Path::new("/etc/cw/state"));
    assert_eq!(c.socket, Path::new("/etc/cw/state/cronwarden.sock"));
    let j = &c.jobs[0];
    assert_eq!(j.timeout, Some(Duration::from_secs(3600)));
    assert_eq!(j.kill_grace, Duration::from_secs(10));
    assert_eq!(j.misfire_grace, Duration::from_secs(3600));
    assert_eq!(j.overlap, Overlap::Skip);
    assert_eq!(j.timezone, "UTC");
    assert_eq!(j.retention, 1000);
    assert_eq!(c.watchdog, Watchdog::default());
}

#[test]
fn every_error_is_reported_with_file_job_and_key() {
    let errs = errors(
        r#"
        timezone = "Mars/Olympus"
        [watchdog]
        stall_after = "soon"
        [[job]]
        name = "a"
        schedule = "61 * * * *"
        command = []
        tiemout = "5m"
        [[job]]
        name = "b"
        schedule = "@every 1m"
        shell = "true"
        timeout = "forever"
        [[job]]
        name = "b"
        schedule = "@daily"
        command = ["true"]
        "#,
    );
    let want = [
        "/etc/cw.toml: key \"timezone\": unknown time zone \"Mars/Olympus\"",
        "/etc/cw.toml: key \"watchdog.stall_after\": invalid duration \"soon\"",
        "/etc/cw.toml: job \"a\": key \"tiemout\": unknown key",
        "/etc/cw.toml: job \"a\": key \"command\": must not be empty",
        "/etc/cw.toml: job \"b\": key \"timeout\": invalid duration \"forever\"",
        "/etc/cw.toml: job \"b\": key \"name\": duplicate job name",
    ];
    for w in want {
        assert!(
            errs.iter().any(|e| e.starts_with(w)),
            "missing {w:?} in {errs:#?}"
        );
    }
    // Job "a" schedule: the default zone is invalid, so it is not parsed;
    // the zone error above stands for it.
    assert_eq!(errs.len(), want.len(), "{errs:#?}");
}

#[test]
fn only_the_default_state_dir_may_get_the_runtime_socket() {
    let own = Path::new("/srv/cw/state");
    assert_eq!(default_socket(own), own.join("cronwarden.sock"));
    let dflt = Path::new(DEFAULT_STATE_DIR);
    let want = if Path::new(RUNTIME_DIR).is_dir() {
        PathBuf::from(RUNTIME_SOCKET)
    } else {
        dflt.join("cronwarden.sock")
    };
    assert_eq!(default_socket(dflt), want);
}

#[test]
fn toml_syntax_error_names_the_line() {
    let errs = errors("state_dir = \"x\"\n[[job]\n");
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("/etc/cw.toml: line 2: invalid TOML"),
        "{errs:?}"
    );
}

#[test]
fn an_oversized_file_is_refused_naming_it() {
    let big = format!("# {}\n", "x".repeat(MAX_CONFIG_BYTES));
    let errs = errors(&big);
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("/etc/cw.toml: the file is"), "{errs:?}");
}

/// `Config::job` against a scan of the list (the oracle): every name in
/// any order, a name not there, and a job pushed after the config was read.
#[test]
fn a_job_is_found_by_its_name_whatever_the_order() {
    let names = ["m", "b", "z", "a", "q", "c", "y"];
    let text: String = names
        .iter()
        .map(|n| format!("[[job]]\nname = \"{n}\"\nschedule = \"@daily\"\ncommand = [\"true\"]\n"))
        .collect();
    let mut c = Config::parse(Path::new("/etc/cw.toml"), &text).unwrap();
    for n in names.iter().chain(&["", "aa", "zz", "n"]) {
        let scan = c.jobs.iter().find(|j| j.name == *n).map(|j| j.name.clone());
        assert_eq!(c.job(n).map(|j| j.name.clone()), scan, "{n}");
    }
    let mut late = (*c.jobs[0]).clone();
    late.name = "late".into();
    c.jobs.insert(0, Arc::new(late));
    for n in names.iter().chain(&["late"]) {
        assert_eq!(c.job(n).map(|j| j.name.as_str()), Some(*n));
    }
}
