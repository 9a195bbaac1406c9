//! Several hosts on one PostgreSQL ledger (issue 19), end to end, for
//! what the hosts share beyond the fires: one alert per condition of a
//! job's fires across hosts (delivered by its owner only, taken over when
//! the owner dies or resolves; every host pages when the ledger cannot
//! say who owns it), and `cronwarden audit` across hosts.

use std::{fs, path::Path, time::Duration};

use nix::sys::signal::Signal;

use crate::{
    multihost::{database, signal_host, worker_pid, PgCluster},
    util::{now_unix, wait_until, Env, Supervisor},
};

const LONG: Duration = Duration::from_secs(60);

/// A host whose per-second job fails until `flag` exists, with an exec
/// sink appending "host event kind job" to `sent` (shared by the hosts).
fn failing_host(name: &str, url: &str, flag: &Path, sent: &Path) -> Env {
    Env::new(&format!(
        "store = {url:?}\nhost = {name:?}\nlease = \"3s\"\n\
         [[job]]\nname = \"flaky\"\nschedule = \"* * * * * *\"\noverlap = \"allow\"\n\
         shell = 'test -e {flag}'\n\
         [[alert]]\nkind = \"exec\"\ncommand = [\"sh\", \"-c\", \"echo \\\"$CRONWARDEN_ALERT_HOST $CRONWARDEN_ALERT_EVENT $CRONWARDEN_ALERT_KIND $CRONWARDEN_ALERT_JOB\\\" >> {sent}\"]\n",
        flag = flag.display(),
        sent = sent.display()
    ))
}

/// Hosts `names` of [`failing_host`] on a database of their own, with the
/// directory of the flag (`fixed`, absent) and the pages (`sent`).
/// `None` (the test is skipped) where no cluster can be started.
fn failing_hosts(names: &[&str]) -> Option<(PgCluster, tempfile::TempDir, Vec<Env>)> {
    let (pg, url) = database()?;
    let dir = tempfile::tempdir().unwrap();
    let (flag, sent) = (dir.path().join("fixed"), dir.path().join("sent"));
    let hosts = names
        .iter()
        .map(|h| failing_host(h, &url, &flag, &sent))
        .collect();
    Some((pg, dir, hosts))
}

/// The open `job_failing` alert of a host's status.
fn failing_alert(env: &Env) -> Option<serde_json::Value> {
    let s = env.status().1?;
    s["alerts"]
        .as_array()?
        .iter()
        .find(|a| a["kind"] == "job_failing" && a["job"] == "flaky")
        .cloned()
}

/// The `job_failing` notices delivered, in order: (host, event).
fn delivered(sent: &Path) -> Vec<(String, String)> {
    fs::read_to_string(sent)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.get(2) == Some(&"job_failing")).then(|| (w[0].to_string(), w[1].to_string()))
        })
        .collect()
}

fn opened_by(events: &[(String, String)]) -> Vec<&str> {
    events
        .iter()
        .filter(|e| e.1 == "opened")
        .map(|e| e.0.as_str())
        .collect()
}

/// The owner every host in `hosts` names for its open `job_failing`
/// alert, once they all have it open and agree on one that is not `not`.
fn agreed_owner(hosts: &[&Env], not: &str) -> String {
    wait_until("every host shows job_failing with one owner", LONG, || {
        let owners: Vec<String> = hosts
            .iter()
            .map(|h| failing_alert(h)?["owner"].as_str().map(String::from))
            .collect::<Option<_>>()?;
        owners
            .iter()
            .all(|o| *o == owners[0] && o != not)
            .then(|| owners[0].clone())
    })
}

#[test]
fn a_job_failing_on_every_host_is_paged_once_and_taken_over_when_its_owner_dies() {
    let names = ["h0", "h1", "h2"];
    let Some((pg, dir, hosts)) = failing_hosts(&names) else {
        return;
    };
    let (flag, sent) = (dir.path().join("fixed"), dir.path().join("sent"));
    let mut sups: Vec<Supervisor> = hosts.iter().map(Env::start).collect();
    let workers: Vec<u32> = hosts.iter().map(worker_pid).collect();

    // Every host has the condition open; one owns it and pages, once.
    let all: Vec<&Env> = hosts.iter().collect();
    let owner = agreed_owner(&all, "");
    let first = wait_until("the owner's page", LONG, || {
        let d = delivered(&sent);
        (!d.is_empty()).then_some(d)
    });
    assert_eq!(opened_by(&first), [owner.as_str()], "{first:?}");
    assert_eq!(first.len(), 1, "{first:?}");

    // The owner dies, worker and all: once its lease runs out another
    // host takes the alert over and pages from there.
    let dead = names.iter().position(|n| *n == owner).unwrap();
    signal_host(&sups[dead], workers[dead], Signal::SIGKILL);
    let _ = sups[dead].child.wait();
    let after = wait_until("a peer takes the alert over", LONG, || {
        let d = delivered(&sent);
        (d.len() > 1).then_some(d)
    });
    assert_eq!(after[1].1, "opened", "{after:?}");
    assert_ne!(after[1].0, owner, "{after:?}");
    let living: Vec<&Env> = (0..3).filter(|i| *i != dead).map(|i| &hosts[i]).collect();
    assert_eq!(agreed_owner(&living, &owner), after[1].0);
    assert_eq!(opened_by(&delivered(&sent)).len(), 2, "{after:?}");

    // Fixed: the alert resolves on every host; the pages end resolved,
    // and never two were open at once (a host that still had it open
    // when the owner resolved takes it over: a hand-over).
    fs::write(&flag, "").unwrap();
    wait_until("job_failing resolved on every living host", LONG, || {
        living
            .iter()
            .all(|h| h.open_alerts().iter().all(|(k, _)| k != "job_failing"))
            .then_some(())
    });
    let events = wait_until("the last page resolved", LONG, || {
        let d = delivered(&sent);
        (d.last().is_some_and(|e| e.1 == "resolved")).then_some(d)
    });
    let mut open = 0;
    for (i, (host, event)) in events.iter().enumerate().skip(1) {
        match event.as_str() {
            "opened" => open += 1,
            "resolved" => open -= 1,
            e => panic!("unexpected event {e}: {events:?}"),
        }
        assert!(
            (0..=1).contains(&open) && *host != owner,
            "page {i} leaves {open} open: {events:?}"
        );
    }
    assert_eq!(open, 0, "{events:?}");
    drop(pg);
}

/// The ledger cannot say who owns an alert (here its table is gone while
/// the fires are still claimed): every host with the condition pages
/// (fail open), and shows no owner.
#[test]
fn without_an_answer_on_ownership_every_host_pages() {
    let Some((pg, dir, hosts)) = failing_hosts(&["h0", "h1"]) else {
        return;
    };
    let (flag, sent) = (dir.path().join("fixed"), dir.path().join("sent"));
    fs::write(&flag, "").unwrap();
    let _sups: Vec<Supervisor> = hosts.iter().map(Env::start).collect();
    for h in &hosts {
        h.wait_ok(LONG);
    }
    // Once a host has made the tables.
    let mut db = pg.client("cw");
    wait_until("the ledger's tables", LONG, || {
        db.batch_execute("ALTER TABLE cw_alerts RENAME TO cw_alerts_gone")
            .ok()
    });
    fs::remove_file(&flag).unwrap();
    let pages = wait_until("both hosts page job_failing", LONG, || {
        let d = delivered(&sent);
        let mut by: Vec<&str> = opened_by(&d);
        by.sort_unstable();
        (by == ["h0", "h1"]).then(|| d.clone())
    });
    assert_eq!(pages.len(), 2, "{pages:?}");
    for h in &hosts {
        let a = failing_alert(h);
        assert!(a.as_ref().is_some_and(|a| a["owner"].is_null()), "{a:?}");
    }
}

/// `cronwarden audit JOB` with a postgres `store`: the job's fires across
/// hosts from the ledger, each with the host that ran it.
#[test]
fn audit_across_hosts_proves_each_fire_once_and_names_the_hosts() {
    let Some((_pg, url)) = database() else {
        return;
    };
    let hosts: Vec<Env> = ["h0", "h1"]
        .iter()
        .map(|h| {
            Env::new(&format!(
                "store = {url:?}\nhost = {h:?}\nlease = \"3s\"\n\
                 [[job]]\nname = \"tick\"\nschedule = \"* * * * * *\"\noverlap = \"allow\"\n\
                 shell = \"true\"\n"
            ))
        })
        .collect();
    let _sups: Vec<Supervisor> = hosts.iter().map(Env::start).collect();
    for h in &hosts {
        h.wait_ok(LONG);
    }
    let from = now_unix() + 1;
    let to = from + 5;
    // The window is over, and its last fire claimed and finished.
    wait_until("the window's fires run", LONG, || {
        (now_unix() > to + 2).then_some(())
    });
    let rfc = |t: i64| jiff::Timestamp::from_second(t).unwrap().to_string();
    let config = hosts[1].config.to_str().unwrap().to_string();
    let args = [
        "audit",
        "tick",
        "--config",
        &config,
        "--from",
        &rfc(from),
        "--to",
        &rfc(to),
    ];
    let out = hosts[1].cmd(&[&args[..], &["--json"]].concat());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "audit --json: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(report["expected"], 6, "{report:#}");
    let fires = report["fires"].as_array().unwrap();
    assert_eq!(fires.len(), 6, "{report:#}");
    for (i, f) in fires.iter().enumerate() {
        assert_eq!(f["scheduled_for"], rfc(from + i as i64), "{report:#}");
        assert!(["h0", "h1"].contains(&f["host"].as_str().unwrap()), "{f}");
        assert_eq!(f["state"], "finished", "{f}");
    }
    // Before any host ran it: every time missing, exit 1.
    let (before, before_end) = (rfc(from - 30), rfc(from - 21));
    let out = hosts[0].cmd(&[
        "audit",
        "tick",
        "--config",
        &config,
        "--from",
        &before,
        "--to",
        &before_end,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("MISSING 10"), "{text}");
    let text = hosts[1].cmd(&args);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("exactly once"), "{text}");
    assert!(
        fires
            .iter()
            .all(|f| text.contains(f["host"].as_str().unwrap())),
        "{text}"
    );
}
