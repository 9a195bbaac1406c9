//! The Alertmanager sink against a real Alertmanager (Debian's
//! `prometheus-alertmanager`, started by the test on a free port with its
//! own storage), read back with `amtool alert query`: an alert opens with
//! cronwarden's labels, is pushed again before its `endsAt` while open, and
//! is resolved by a push with `endsAt` = now.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use crate::util::{free_port, skip, wait_until, Env};

const LONG: Duration = Duration::from_secs(60);

/// A running Alertmanager, stopped (by its own pid) when dropped.
struct Alertmanager {
    child: Child,
    url: String,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts Alertmanager in `dir`; `None` when it is not installed.
fn start_alertmanager(dir: &Path) -> Option<Alertmanager> {
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        "route:\n  receiver: \"null\"\nreceivers:\n  - name: \"null\"\n",
    )
    .unwrap();
    let port = free_port();
    let child = match Command::new("prometheus-alertmanager")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        // No gossip port: this one stands alone.
        .arg("--cluster.listen-address=")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("alertmanager.log")).unwrap())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("cannot start prometheus-alertmanager: {e}"),
    };
    let am = Alertmanager {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    wait_until("Alertmanager ready", LONG, || {
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        (crate::util::http_get(s, "/-/ready").0 == 200).then_some(())
    });
    Some(am)
}

/// The active alerts `amtool alert query` lists for `matchers`.
fn amtool_query(am: &Alertmanager, matchers: &[&str]) -> Vec<Value> {
    let out = Command::new("amtool")
        .args(["alert", "query", "-o", "json"])
        .arg(format!("--alertmanager.url={}", am.url))
        .args(matchers)
        .output()
        .expect("amtool runs");
    assert!(
        out.status.success(),
        "amtool alert query failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("amtool's JSON")
}

fn ts(v: &Value) -> jiff::Timestamp {
    v.as_str().expect("a time").parse().expect("RFC 3339")
}

fn trigger(env: &Env, job: &str) {
    let out = env.cmd(&["trigger", job, "-c", env.config.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn alerts_open_repush_and_resolve_in_a_real_alertmanager() {
    let dir = tempfile::tempdir().unwrap();
    let Some(am) = start_alertmanager(dir.path()) else {
        return skip("prometheus-alertmanager not installed; .ci/run installs it");
    };
    if Command::new("amtool").arg("--version").output().is_err() {
        return skip("amtool not installed; .ci/run installs it (package prometheus-alertmanager)");
    }
    let env = Env::new("");
    let fixed = env.path("fixed");
    env.write_config(&format!(
        "[[alert]]\nname = \"am\"\nkind = \"alertmanager\"\nurl = \"{}\"\nrepeat_after = \"10s\"\n\
         [[job]]\nname = \"flaky\"\nschedule = \"@yearly\"\nshell = \"test -e {}\"\n",
        am.url,
        fixed.display()
    ));
    let _sup = env.start();
    env.wait_ok(LONG);
    trigger(&env, "flaky");

    // Opened: one alert with cronwarden's labels, ending ahead of now.
    let matchers = ["alertname=job_failing", "cronjob=flaky"];
    let first = wait_until("job_failing in Alertmanager", LONG, || {
        amtool_query(&am, &matchers).into_iter().next()
    });
    let labels = &first["labels"];
    assert_eq!(labels["alertname"], "job_failing", "{first}");
    assert_eq!(labels["cronjob"], "flaky", "{first}");
    assert_eq!(labels["severity"], "warning", "{first}");
    let host = nix::unistd::gethostname().unwrap();
    assert_eq!(labels["instance"], host.to_str().unwrap(), "{first}");
    assert_eq!(first["status"]["state"], "active", "{first}");
    assert!(
        first["annotations"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("flaky")),
        "{first}"
    );
    let opened = ts(&first["startsAt"]);
    let first_end = ts(&first["endsAt"]);
    assert!(first_end > opened, "{first}");

    // Open: pushed again before it ends, so its endsAt moves on and it
    // stays active.
    let again = wait_until("a re-push moving endsAt on", LONG, || {
        amtool_query(&am, &matchers)
            .into_iter()
            .find(|a| ts(&a["endsAt"]) > first_end)
    });
    assert_eq!(again["status"]["state"], "active", "{again}");
    assert_eq!(ts(&again["startsAt"]), opened, "one alert, not a new one");
    assert_eq!(amtool_query(&am, &matchers).len(), 1);

    // Resolved: a success closes job_failing, and the push that says so
    // (endsAt = now) takes it out of the active alerts before the endsAt
    // the last re-push had set.
    std::fs::write(&fixed, "").unwrap();
    trigger(&env, "flaky");
    let last_end = amtool_query(&am, &matchers)
        .first()
        .map(|a| ts(&a["endsAt"]))
        .unwrap_or(first_end);
    wait_until("job_failing resolved in Alertmanager", LONG, || {
        amtool_query(&am, &matchers).is_empty().then_some(())
    });
    assert!(
        jiff::Timestamp::now() < last_end,
        "gone before its endsAt ({last_end}): resolved by the push, not by expiry"
    );
    let h = &env.status().1.unwrap()["sinks"][0];
    assert_eq!(h["kind"], "alertmanager", "{h}");
    assert_eq!(h["failed"], 0, "{h}");
}
