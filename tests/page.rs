//! The status page (`GET /`): one self-contained HTML page drawn from the
//! same snapshot as `/v1/status`, with a 24-hour strip of marks per job.
//! The marks are read back and compared with the ledger (the `runs` table
//! read directly), first from the served HTML, then from the DOM headless
//! Chromium builds of it (with a screenshot kept under target/tmp).

use std::{collections::BTreeMap, process::Command, time::Duration};

use crate::util::*;

const LONG: Duration = Duration::from_secs(60);

/// `name="value"` of an attribute inside one tag's text.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    Some(&tag[at..at + tag[at..].find('"')?])
}

/// Per strip (job): the newest record id it covers and its record counts
/// per outcome, summed over its marks.
type Strips = BTreeMap<String, (i64, BTreeMap<String, i64>)>;

fn strips(html: &str) -> Strips {
    let mut out = Strips::new();
    for chunk in html.split("<div class=\"strip\"").skip(1) {
        let chunk = &chunk[..chunk.find("</div>").expect("strip closes")];
        let head = &chunk[..chunk.find('>').unwrap()];
        let job = attr(head, "data-job")
            .expect("strip names its job")
            .to_string();
        let upto: i64 = attr(head, "data-upto").unwrap().parse().unwrap();
        let mut counts = BTreeMap::new();
        for mark in chunk.split("<span class=\"mark").skip(1) {
            let tag = &mark[..mark.find('>').unwrap()];
            for kv in attr(tag, "data-counts").unwrap().split(' ') {
                let (k, n) = kv.split_once('=').unwrap();
                *counts.entry(k.to_string()).or_default() += n.parse::<i64>().unwrap();
            }
            assert!(
                attr(tag, "title").is_some_and(|t| t.contains("run ")),
                "{tag}"
            );
        }
        out.insert(job, (upto, counts));
    }
    out
}

/// The ledger's counts per outcome of `job`'s records up to id `upto`.
fn ledger(env: &Env, job: &str, upto: i64) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for r in env.rows(job).into_iter().filter(|r| r.id <= upto) {
        *counts.entry(r.outcome).or_default() += 1;
    }
    counts
}

fn trigger_and_wait(env: &Env, job: &str, runs_before: usize) {
    let out = env.cmd(&["trigger", job, "-c", env.config.to_str().unwrap()]);
    assert!(out.status.success(), "trigger {job}: {out:?}");
    wait_until(&format!("{job}'s run {runs_before} finished"), LONG, || {
        let rows = env.rows(job);
        (rows.len() == runs_before + 1 && rows.iter().all(|r| r.outcome != "running")).then_some(())
    });
}

/// A running instance with a known ledger: `ok` 3 successes, `bad` 2
/// failures, `slow` one timeout, `tick` successes and overlap skips (then
/// paused, so its only new records are final `paused` skips).
fn settled() -> (Env, Supervisor, u16) {
    let port = free_port();
    let env = Env::new(&format!(
        "metrics_listen = \"127.0.0.1:{port}\"\n\
         [[job]]\nname = \"ok\"\nschedule = \"@yearly\"\nshell = \"true\"\n\
         [[job]]\nname = \"bad\"\nschedule = \"@yearly\"\nshell = \"exit 3\"\n\
         [[job]]\nname = \"slow\"\nschedule = \"@yearly\"\nshell = \"sleep 30\"\ntimeout = \"1s\"\nkill_grace = \"1s\"\n\
         [[job]]\nname = \"tick\"\nschedule = \"* * * * * *\"\nshell = \"sleep 1.5\"\noverlap = \"skip\"\n"
    ));
    let sup = env.start();
    env.wait_ok(LONG);
    for n in 0..3 {
        trigger_and_wait(&env, "ok", n);
    }
    for n in 0..2 {
        trigger_and_wait(&env, "bad", n);
    }
    trigger_and_wait(&env, "slow", 0);
    wait_until("tick ran and skipped", LONG, || {
        let rows = env.rows("tick");
        let n = |o: &str| rows.iter().filter(|r| r.outcome == o).count();
        (n("success") >= 2 && n("skipped") >= 1).then_some(())
    });
    let out = env.cmd(&["pause", "tick", "-c", env.config.to_str().unwrap()]);
    assert!(out.status.success(), "pause tick: {out:?}");
    wait_until("tick's last run ended", LONG, || {
        env.rows("tick")
            .iter()
            .all(|r| r.outcome != "running")
            .then_some(())
    });
    (env, sup, port)
}

fn assert_strips_match_the_ledger(env: &Env, html: &str) {
    let strips = strips(html);
    assert_eq!(
        strips.keys().cloned().collect::<Vec<_>>(),
        ["bad", "ok", "slow", "tick"],
        "one strip per job"
    );
    for (job, (upto, counts)) in &strips {
        assert_eq!(
            counts,
            &ledger(env, job, *upto),
            "{job}'s marks against the ledger"
        );
    }
    assert_eq!(strips["ok"].1.get("success"), Some(&3));
    assert_eq!(strips["bad"].1.get("failed"), Some(&2));
    assert_eq!(strips["slow"].1.get("timeout"), Some(&1));
    assert!(strips["tick"].1.get("skipped").is_some_and(|n| *n >= 1));
}

#[test]
fn the_status_page_shows_state_alerts_and_every_record_as_a_mark() {
    let (env, _sup, port) = settled();
    let (code, html) = env.socket_get("/").expect("socket answers");
    assert_eq!(code, 200, "{html}");
    assert!(html.starts_with("<!doctype html>"), "{html}");
    assert!(!html.contains("<script"), "no scripts");
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http"),
        "no external assets"
    );
    // The state is the snapshot's, as `/v1/status` gives it.
    let (_, status) = env.status();
    let state = status.unwrap()["state"].as_str().unwrap().to_string();
    assert!(html.contains(&format!("data-state=\"{state}\"")), "{html}");
    // `bad` failed twice in a row: whatever alerts are open are listed.
    let alerts = env.open_alerts();
    for (kind, _) in &alerts {
        assert!(
            html.contains(&format!("data-kind=\"{kind}\"")),
            "{kind} in {html}"
        );
    }
    assert_strips_match_the_ledger(&env, &html);
    // The same page on the metrics listener.
    let (code, tcp) = tcp_get(port, "/").expect("metrics listener answers");
    assert_eq!(code, 200);
    assert_strips_match_the_ledger(&env, &tcp);
    // A bad page number names the parameter.
    let (code, body) = env.socket_get("/?page=x").unwrap();
    assert_eq!(code, 400);
    assert!(body.contains("page must be a number"), "{body}");
}

#[test]
fn headless_chromium_renders_the_marks_of_the_ledger() {
    let Some(chromium) = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
    else {
        return skip("headless_chromium_renders_the_marks_of_the_ledger: no chromium (Debian package chromium)");
    };
    let (env, _sup, port) = settled();
    let url = format!("http://127.0.0.1:{port}/");
    let profile = env.path("chromium-profile");
    let browse = |extra: &[&str]| {
        Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(&url)
            .output()
            .expect("chromium runs")
    };
    let out = browse(&["--dump-dom"]);
    let dom = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        dom.contains("<div class=\"strip\""),
        "chromium built no strips: {out:?}"
    );
    assert_strips_match_the_ledger(&env, &dom);
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = browse(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1400,700",
        "--hide-scrollbars",
    ]);
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot ({e}): {out:?}"));
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5_000,
        "a real screenshot"
    );
}
