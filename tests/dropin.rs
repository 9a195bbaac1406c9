//! Drop-in files (`cronwarden.d/*.toml` beside `cronwarden.toml`): jobs and
//! sinks a package or configuration management adds without editing the
//! main file. `check` reads them; a running scheduler runs their jobs and
//! re-reads the directory on reload; every error names the drop-in.

use std::{fs, path::PathBuf, time::Duration};

use crate::util::{wait_until, Env};

const LONG: Duration = Duration::from_secs(40);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn dropin_dir(env: &Env) -> PathBuf {
    let d = env.path("cronwarden.d");
    fs::create_dir_all(&d).unwrap();
    d
}

/// A job appending its name to `<dir>/<file>` every second.
fn ticking(env: &Env, name: &str, file: &str) -> String {
    format!(
        "[[job]]\nname = \"{name}\"\nschedule = \"@every 1s\"\nshell = \"echo {name} >> {}\"\n",
        env.path(file).display()
    )
}

fn yearly(name: &str) -> String {
    format!("[[job]]\nname = \"{name}\"\nschedule = \"@yearly\"\nshell = \"true\"\n")
}

fn job_names(status: &serde_json::Value) -> Vec<String> {
    let mut names: Vec<String> = status["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn check_reads_drop_ins_and_names_the_file_of_each_error() {
    let env = Env::new(&yearly("main"));
    let config = env.config.to_str().unwrap().to_string();
    let d = dropin_dir(&env);
    fs::write(d.join("10-backup.toml"), yearly("backup")).unwrap();
    // Not a drop-in: an editor's backup and a package manager's leftover.
    fs::write(d.join("10-backup.toml~"), "not toml [[[").unwrap();
    fs::write(d.join("20-x.toml.dpkg-old"), "not toml [[[").unwrap();
    let out = env.cmd(&["check", "--config", &config]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(stdout.contains("ok, 2 job(s)"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "drop-in {}: 1 job(s)",
            d.join("10-backup.toml").display()
        )),
        "{stdout}"
    );

    let out = env.cmd(&["check", "--json", "--config", &config]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["dropins"],
        serde_json::json!([d.join("10-backup.toml")]),
        "{v}"
    );
    assert_eq!(v["jobs"][1]["name"], "backup", "{v}");
    assert_eq!(
        v["jobs"][1]["file"],
        serde_json::json!(d.join("10-backup.toml")),
        "{v}"
    );

    // A lint warning about a drop-in job names the drop-in.
    let streak = d.join("20-streak.toml");
    fs::write(
        &streak,
        "[[job]]\nname = \"streak\"\nschedule = \"* * * * *\"\ntimeout = \"5m\"\nshell = \"true\"\n",
    )
    .unwrap();
    let out = env.cmd(&["check", "--config", &config]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "warning: {}: job \"streak\": key \"timeout\"",
            streak.display()
        )),
        "{stderr}"
    );
    fs::remove_file(&streak).unwrap();

    // An error in a drop-in names the drop-in, the job and the key.
    let bad = d.join("30-bad.toml");
    fs::write(
        &bad,
        "[[job]]\nname = \"report\"\nschedule = \"@daily\"\ncommand = [\"true\"]\ntiemout = \"5m\"\n",
    )
    .unwrap();
    let out = env.cmd(&["check", "--config", &config]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: job \"report\": key \"tiemout\": unknown key",
            bad.display()
        )),
        "{stderr}"
    );

    // A name defined twice is refused naming both files.
    fs::write(&bad, yearly("backup")).unwrap();
    let out = env.cmd(&["check", "--config", &config]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: job \"backup\": key \"name\": duplicate job name: already defined in {}",
            bad.display(),
            d.join("10-backup.toml").display()
        )),
        "{stderr}"
    );
}

#[test]
fn drop_in_jobs_run_and_the_directory_is_reread_on_reload() {
    let env = Env::new(&yearly("main"));
    let config = env.config.to_str().unwrap().to_string();
    let d = dropin_dir(&env);
    fs::write(d.join("10-a.toml"), ticking(&env, "a", "a.out")).unwrap();
    let _sup = env.start();
    let s = env.wait_ok(LONG);
    assert_eq!(job_names(&s), ["a", "main"]);
    // The worker got the drop-in too: its job runs.
    wait_until("the drop-in job ran", LONG, || {
        (!env.lines("a.out").is_empty()).then_some(())
    });

    // A new drop-in, picked up by reload.
    fs::write(d.join("20-b.toml"), ticking(&env, "b", "b.out")).unwrap();
    let out = env.cmd(&["reload", "--config", &config]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    wait_until("the reloaded drop-in job ran", LONG, || {
        (!env.lines("b.out").is_empty()).then_some(())
    });
    assert_eq!(job_names(&env.wait_ok(LONG)), ["a", "b", "main"]);

    // A broken drop-in is refused naming it; the running config stays.
    let bad = d.join("30-bad.toml");
    fs::write(
        &bad,
        "[[job]]\nname = \"c\"\nschedule = \"61 * * * *\"\nshell = \"true\"\n",
    )
    .unwrap();
    let out = env.cmd(&["reload", "--config", &config]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{}: job \"c\": key \"schedule\"", bad.display())),
        "{stderr}"
    );
    let (_, s) = env.status();
    let s = s.unwrap();
    assert_eq!(job_names(&s), ["a", "b", "main"]);
    assert!(s.to_string().contains("30-bad.toml"), "{s}");

    // Removing the drop-ins removes their jobs at the next reload.
    fs::remove_file(&bad).unwrap();
    fs::remove_file(d.join("20-b.toml")).unwrap();
    let out = env.cmd(&["reload", "--config", &config]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(job_names(&env.wait_ok(LONG)), ["a", "main"]);
}
