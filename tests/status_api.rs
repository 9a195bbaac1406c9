//! The status from the published snapshot: `GET /v1/status` is a summary
//! whose counts match the jobs, `GET /v1/jobs` pages through every job once
//! in name order with its filters, a bad parameter is a 400 naming it, and
//! the CLI's `status` and `jobs` show what they always showed.

use std::{collections::BTreeMap, io::Read, io::Write, time::Duration};

use serde_json::Value;

use crate::util::{wait_until, Env};

const LONG: Duration = Duration::from_secs(120);

/// More jobs than one page of the CLI (1,000), and names that need encoding.
const NUMBERED: usize = 2100;
const ODD: [&str; 3] = ["db backup", "db+x", "dbé"];
const PAUSED: [&str; 3] = ["job-00007", "job-01500", "db backup"];

fn config() -> String {
    let mut body = String::new();
    let names = (0..NUMBERED)
        .map(|i| format!("job-{i:05}"))
        .chain(ODD.iter().map(|s| s.to_string()));
    for name in names {
        body.push_str(&format!(
            "[[job]]\nname = {name:?}\nschedule = \"@yearly\"\nshell = \"true\"\n"
        ));
    }
    body
}

fn all_names() -> Vec<String> {
    let mut names: Vec<String> = (0..NUMBERED)
        .map(|i| format!("job-{i:05}"))
        .chain(ODD.iter().map(|s| s.to_string()))
        .collect();
    names.sort();
    names
}

/// A GET on the socket: (status code, the `cronwarden-next-after` header, body).
fn get(env: &Env, path: &str) -> (u16, Option<String>, String) {
    let mut s = std::os::unix::net::UnixStream::connect(env.state_dir().join("cronwarden.sock"))
        .expect("the socket accepts");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = vec![];
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).expect("UTF-8 reply");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head");
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let next = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("cronwarden-next-after")
            .then(|| v.trim().to_string())
    });
    (code, next, body.to_string())
}

fn get_json(env: &Env, path: &str) -> Value {
    let (code, _, body) = get(env, path);
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

fn names(jobs: &Value) -> Vec<String> {
    jobs.as_array()
        .expect("an array of jobs")
        .iter()
        .map(|j| j["name"].as_str().unwrap().to_string())
        .collect()
}

/// Follows the cursor from `path` (which has a `limit`), page by page.
fn every_page(env: &Env, path: &str, limit: usize) -> Vec<String> {
    let mut seen = vec![];
    let mut next: Option<String> = None;
    for _ in 0..=NUMBERED + ODD.len() {
        let url = match &next {
            Some(after) => format!("{path}&after={after}"),
            None => path.to_string(),
        };
        let (code, n, body) = get(env, &url);
        assert_eq!(code, 200, "GET {url}: {body}");
        let page = names(&serde_json::from_str(&body).unwrap());
        assert!(page.len() <= limit, "GET {url}: {} jobs", page.len());
        if n.is_some() {
            assert_eq!(page.len(), limit, "a page before the last is full: {url}");
        }
        seen.extend(page);
        next = n;
        if next.is_none() {
            return seen;
        }
    }
    panic!("the cursor never ran out from {path}");
}

#[test]
fn the_summary_counts_the_jobs_and_pages_cover_each_once_in_order() {
    let env = Env::new(&config());
    let _sup = env.start();
    env.wait_ok(LONG);
    let conf = env.config.to_str().unwrap();
    for name in PAUSED {
        let out = env.cmd(&["pause", name, "--config", conf]);
        assert!(out.status.success(), "pause {name}: {out:?}");
    }
    let summary = wait_until("the summary counts the paused jobs", LONG, || {
        let s = get_json(&env, "/v1/status");
        (s["jobs_by_state"]["paused"] == PAUSED.len()).then_some(s)
    });
    let total = NUMBERED + ODD.len();
    assert!(
        summary.get("jobs").is_none(),
        "no per-job list in the summary"
    );
    assert_eq!(summary["jobs_total"], total);
    for key in [
        "state",
        "reasons",
        "supervisor",
        "worker",
        "alerts",
        "sinks",
        "clock_jumps",
    ] {
        assert!(summary.get(key).is_some(), "summary lacks {key}: {summary}");
    }
    // The counts are those of the jobs themselves (the full form; nothing
    // here changes state between the two reads).
    let full = get_json(&env, "/v1/status?jobs=all");
    let mut counted: BTreeMap<String, u64> = BTreeMap::new();
    for j in full["jobs"].as_array().unwrap() {
        *counted
            .entry(j["state"].as_str().unwrap().into())
            .or_default() += 1;
    }
    let by_state = summary["jobs_by_state"].as_object().unwrap();
    for (state, n) in by_state {
        assert_eq!(
            counted.get(state).copied().unwrap_or(0),
            n.as_u64().unwrap(),
            "state {state}: {summary}"
        );
    }
    assert_eq!(
        by_state.values().map(|n| n.as_u64().unwrap()).sum::<u64>(),
        total as u64
    );

    // Every job once, in name order, whatever the page size.
    assert_eq!(
        names(&get_json(&env, "/v1/jobs")),
        all_names(),
        "no limit: every job"
    );
    for limit in [1000, 333] {
        assert_eq!(
            every_page(&env, &format!("/v1/jobs?limit={limit}"), limit),
            all_names(),
            "limit {limit}"
        );
    }

    // Filters.
    let mut paused: Vec<String> = PAUSED.iter().map(|s| s.to_string()).collect();
    paused.sort();
    assert_eq!(names(&get_json(&env, "/v1/jobs?state=paused")), paused);
    assert_eq!(every_page(&env, "/v1/jobs?state=paused&limit=2", 2), paused);
    assert_eq!(
        names(&get_json(&env, "/v1/jobs?prefix=db")),
        ["db backup", "db+x", "dbé"]
    );
    assert_eq!(
        names(&get_json(&env, "/v1/jobs?prefix=db%20")),
        ["db backup"]
    );
    let hundred = every_page(&env, "/v1/jobs?prefix=job-015&state=idle&limit=30", 30);
    let want: Vec<String> = (1500..1600)
        .map(|i| format!("job-{i:05}"))
        .filter(|n| n != "job-01500")
        .collect();
    assert_eq!(hundred, want);
    assert_eq!(
        get_json(&env, "/v1/jobs/db%20backup")["state"],
        "paused",
        "GET /v1/jobs/NAME stays"
    );

    // A bad parameter is a 400 naming it.
    for (path, field) in [
        ("/v1/jobs?limit=0", "limit:"),
        ("/v1/jobs?limit=many", "limit:"),
        ("/v1/jobs?state=asleep", "state:"),
        ("/v1/jobs?after=%zz", "after:"),
        ("/v1/jobs?page=2", "page:"),
        ("/v1/status?jobs=some", "jobs:"),
        ("/v1/status?verbose=1", "verbose:"),
    ] {
        let (code, _, body) = get(&env, path);
        assert_eq!(code, 400, "GET {path}: {body}");
        let e: Value = serde_json::from_str(&body).unwrap();
        let msg = e["error"].as_str().unwrap();
        assert!(msg.starts_with(field), "GET {path}: {msg}");
    }

    // The CLI pages through too: every job, as the full form has them.
    let out = env.cmd(&["jobs", "--json", "--config", conf]);
    assert!(out.status.success(), "{out:?}");
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(names(&cli), all_names());
    let (code, status) = env.status();
    assert_eq!(code, 0);
    assert_eq!(names(&status.unwrap()["jobs"]), all_names());
}

/// What changes between two reads of a healthy supervisor: the ages.
fn without_ages(mut v: Value) -> Value {
    for k in ["heartbeat_age_ms", "last_good_turn_age_ms", "heartbeat_seq"] {
        v["worker"][k] = Value::Null;
    }
    v
}

#[test]
fn cli_status_and_jobs_show_what_they_always_showed() {
    let env = Env::new(
        "[[job]]\nname = \"b-nightly\"\nschedule = \"0 3 * * *\"\nshell = \"true\"\n\
         [[job]]\nname = \"a-hourly\"\nschedule = \"@hourly\"\nshell = \"true\"\n",
    );
    let _sup = env.start();
    env.wait_ok(LONG);
    let conf = env.config.to_str().unwrap();
    // `status --json` is the whole report, as `GET /v1/status` was and
    // `?jobs=all` still is.
    let (code, cli) = env.status();
    assert_eq!(code, 0);
    let full = get_json(&env, "/v1/status?jobs=all");
    assert_eq!(without_ages(cli.unwrap()), without_ages(full));
    // `jobs --json` is the array `GET /v1/jobs` was.
    let out = env.cmd(&["jobs", "--json", "--config", conf]);
    assert!(out.status.success(), "{out:?}");
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cli, get_json(&env, "/v1/jobs"));
    assert_eq!(names(&cli), ["a-hourly", "b-nightly"]);
    // People see the same table in both commands.
    let text = |args: &[&str]| {
        let out = env.cmd(args);
        String::from_utf8(out.stdout).unwrap()
    };
    let status = text(&["status", "--config", conf]);
    let jobs = text(&["jobs", "--config", conf]);
    assert!(status.starts_with("state: ok\n"), "{status}");
    assert!(status.contains("supervisor: pid "), "{status}");
    for out in [&status, &jobs] {
        let rows: Vec<Vec<&str>> = out
            .lines()
            .skip_while(|l| !l.starts_with("JOB"))
            .take(3)
            .map(|l| l.split_whitespace().take(3).collect())
            .collect();
        assert_eq!(
            rows,
            [
                vec!["JOB", "STATE", "SCHEDULE"],
                vec!["a-hourly", "idle", "@hourly"],
                vec!["b-nightly", "idle", "0"],
            ],
            "{out}"
        );
    }
    // The probe needs the summary only, and says the same as before.
    let out = env.cmd(&["status", "--probe", "--config", conf]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("live: worker pid "));
}
