//! Prometheus metrics from a running supervisor: the counters say what
//! happened, the exposition passes `promtool check metrics`, and the TCP
//! listener serves the same text and nothing else.

use std::{process::Stdio, time::Duration};

use crate::util::{free_port, sample, skip, tcp_get, wait_until, Env};

const LONG: Duration = Duration::from_secs(40);

/// Triggers `job` and waits for that run's record to be finished.
fn trigger_and_wait(env: &Env, job: &str, runs_before: usize) {
    let out = env.cmd(&["trigger", job, "-c", env.config.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(
        &format!("run {} of {job} finished", runs_before + 1),
        LONG,
        || {
            let rows = env.rows(job);
            (rows.len() == runs_before + 1 && rows.iter().all(|r| r.outcome != "running"))
                .then_some(())
        },
    );
}

#[test]
fn counters_match_the_runs_and_promtool_accepts_the_exposition() {
    let port = free_port();
    let env = Env::new(&format!(
        "metrics_listen = \"127.0.0.1:{port}\"\n\
         [[job]]\nname = \"ok\"\nschedule = \"@yearly\"\nshell = \"echo fine\"\n\
         [[job]]\nname = \"bad\"\nschedule = \"@yearly\"\nshell = \"exit 3\"\n\
         [[job]]\nname = \"tick\"\nschedule = \"* * * * * *\"\nshell = \"true\"\n"
    ));
    let _sup = env.start();
    env.wait_ok(LONG);
    for n in 0..3 {
        trigger_and_wait(&env, "ok", n);
    }
    for n in 0..2 {
        trigger_and_wait(&env, "bad", n);
    }
    // The counters follow the finish events; wait for the last one to land.
    let text = wait_until("runs counted", LONG, || {
        let (code, text) = env.socket_get("/metrics")?;
        assert_eq!(code, 200, "{text}");
        (sample(
            &text,
            "cronwarden_runs_total{cronjob=\"bad\",outcome=\"failed\"}",
        ) == Some(2.0)
            && sample(&text, "cronwarden_fire_delay_seconds_count").is_some_and(|n| n >= 1.0)
            && sample(&text, "cronwarden_store_write_seconds_count").is_some_and(|n| n >= 1.0))
        .then_some(text)
    });
    assert_eq!(
        sample(
            &text,
            "cronwarden_runs_total{cronjob=\"ok\",outcome=\"success\"}"
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "cronwarden_runs_total{cronjob=\"ok\",outcome=\"failed\"}"
        ),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "cronwarden_runs_total{cronjob=\"bad\",outcome=\"success\"}"
        ),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "cronwarden_run_duration_seconds_count{cronjob=\"ok\"}"
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(sample(&text, "cronwarden_up"), Some(1.0));
    assert_eq!(
        sample(&text, "cronwarden_build_info{version=\"0.1.0\"}"),
        Some(1.0)
    );
    assert_eq!(sample(&text, "cronwarden_worker_restarts_total"), Some(0.0));
    assert!(
        sample(&text, "cronwarden_worker_heartbeat_age_seconds").unwrap() < 5.0,
        "{text}"
    );
    // `bad` failed: job_failing is open, so the state is degraded.
    assert_eq!(
        sample(&text, "cronwarden_alerts_open{kind=\"job_failing\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "cronwarden_state{state=\"degraded\"}"),
        Some(1.0),
        "{text}"
    );
    // The last success is the finish time of ok's last run, to the second.
    let last: jiff::Timestamp = env
        .db()
        .query_row(
            "SELECT max(finished_at) FROM runs WHERE job = 'ok'",
            [],
            |r| r.get::<_, String>(0),
        )
        .unwrap()
        .parse()
        .unwrap();
    let exposed = sample(
        &text,
        "cronwarden_last_success_timestamp_seconds{cronjob=\"ok\"}",
    )
    .unwrap();
    assert!(
        (exposed - last.as_millisecond() as f64 / 1000.0).abs() < 1.0,
        "{exposed} vs {last}"
    );
    // Never succeeded: 0, so that `time() - x > limit` fires for it.
    assert_eq!(
        sample(
            &text,
            "cronwarden_last_success_timestamp_seconds{cronjob=\"bad\"}"
        ),
        Some(0.0),
        "{text}"
    );
    // The last run by outcome: bad's last failure is its newest record;
    // outcomes that never happened are 0.
    let last_failed: jiff::Timestamp = env
        .db()
        .query_row(
            "SELECT max(finished_at) FROM runs WHERE job = 'bad'",
            [],
            |r| r.get::<_, String>(0),
        )
        .unwrap()
        .parse()
        .unwrap();
    let exposed = sample(
        &text,
        "cronwarden_last_run_timestamp_seconds{cronjob=\"bad\",outcome=\"failed\"}",
    )
    .unwrap();
    assert!(
        (exposed - last_failed.as_millisecond() as f64 / 1000.0).abs() < 1.0,
        "{exposed} vs {last_failed}"
    );
    for (job, outcome) in [("bad", "success"), ("bad", "timeout"), ("ok", "failed")] {
        assert_eq!(
            sample(
                &text,
                &format!(
                    "cronwarden_last_run_timestamp_seconds{{cronjob=\"{job}\",outcome=\"{outcome}\"}}"
                )
            ),
            Some(0.0),
            "{job} {outcome}: {text}"
        );
    }
    // The next fire is the one the status reports.
    let status = env.status().1.unwrap();
    let next: jiff::Timestamp = crate::util::job(&status, "ok")["next_fire_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        sample(
            &text,
            "cronwarden_next_fire_timestamp_seconds{cronjob=\"ok\"}"
        ),
        Some(next.as_second() as f64),
        "{text}"
    );
    assert_eq!(
        sample(&text, "cronwarden_running_runs{cronjob=\"ok\"}"),
        Some(0.0),
        "{text}"
    );
    for family in [
        "cronwarden_runs_total",
        "cronwarden_fire_delay_seconds",
        "cronwarden_store_write_seconds",
    ] {
        assert!(text.contains(&format!("# HELP {family} ")), "{family}");
        assert!(text.contains(&format!("# TYPE {family} ")), "{family}");
    }

    // The TCP listener serves the same metrics, and only them.
    let (code, tcp) = tcp_get(port, "/metrics").expect("metrics_listen answers");
    assert_eq!(code, 200);
    assert_eq!(
        sample(
            &tcp,
            "cronwarden_runs_total{cronjob=\"ok\",outcome=\"success\"}"
        ),
        Some(3.0)
    );
    let (code, _) = tcp_get(port, "/v1/status").unwrap();
    assert_eq!(code, 404, "the TCP listener serves /metrics only");

    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Err(e) => skip(&format!(
            "promtool not runnable here ({e}); .ci/run installs it"
        )),
        Ok(mut child) => {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool check metrics failed:\n{}{}\n{text}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn an_unbindable_metrics_address_stops_run_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let env = Env::new(&format!(
        "metrics_listen = \"{addr}\"\n[[job]]\nname = \"a\"\nschedule = \"@yearly\"\nshell = \"true\"\n"
    ));
    let mut sup = env.start();
    let status = wait_until("run exits", LONG, || sup.child.try_wait().unwrap());
    assert_eq!(status.code(), Some(1));
    let log = sup.log();
    assert!(
        log.contains(&format!("cannot listen for metrics on {addr}")),
        "{log}"
    );
    assert!(
        !env.state_dir().join("cronwarden.sock").exists(),
        "no socket left behind"
    );
}

#[test]
fn every_job_has_its_series_before_its_first_run_and_running_runs_are_counted() {
    let env = Env::new(
        "[[job]]\nname = \"fresh\"\nschedule = \"@yearly\"\nshell = \"true\"\n\
         [[job]]\nname = \"slow\"\nschedule = \"@yearly\"\nshell = \"sleep 60\"\n",
    );
    let _sup = env.start();
    env.wait_ok(LONG);
    let (_, text) = env.socket_get("/metrics").expect("metrics answer");
    // A job that never ran: its timestamps are 0, not absent, so that
    // `time() - x` rules fire for it; its counters are 0.
    let zero = [
        "cronwarden_last_success_timestamp_seconds{cronjob=\"fresh\"}".to_string(),
        "cronwarden_running_runs{cronjob=\"fresh\"}".into(),
        "cronwarden_runs_total{cronjob=\"fresh\",outcome=\"success\"}".into(),
        "cronwarden_skips_total{cronjob=\"fresh\",reason=\"overlap\"}".into(),
        "cronwarden_run_duration_seconds_count{cronjob=\"fresh\"}".into(),
    ]
    .into_iter()
    .chain(["success", "failed", "timeout", "killed", "lost"].map(|o| {
        format!("cronwarden_last_run_timestamp_seconds{{cronjob=\"fresh\",outcome=\"{o}\"}}")
    }));
    for series in zero {
        assert_eq!(sample(&text, &series), Some(0.0), "{series}: {text}");
    }
    let next = sample(
        &text,
        "cronwarden_next_fire_timestamp_seconds{cronjob=\"fresh\"}",
    )
    .expect("next fire exposed");
    assert!(
        next > crate::util::now_unix() as f64,
        "a yearly job is due in the future: {next}"
    );
    let out = env.cmd(&["trigger", "slow", "-c", env.config.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("the slow run counted as running", LONG, || {
        let (_, text) = env.socket_get("/metrics")?;
        (sample(&text, "cronwarden_running_runs{cronjob=\"slow\"}") == Some(1.0)).then_some(())
    });
    // Paused: no next fire is planned, so the series says 0.
    let out = env.cmd(&["pause", "fresh", "-c", env.config.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("a paused job's next fire exposed as 0", LONG, || {
        let (_, text) = env.socket_get("/metrics")?;
        (sample(
            &text,
            "cronwarden_next_fire_timestamp_seconds{cronjob=\"fresh\"}",
        ) == Some(0.0))
        .then_some(())
    });
}

fn example(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(path)
}

/// Runs promtool with `args` in `dir`; `None` when promtool is not here.
fn promtool(dir: &std::path::Path, args: &[&str]) -> Option<std::process::Output> {
    match std::process::Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
    {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("cannot run promtool: {e}"),
    }
}

fn assert_promtool_ok(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_example_alert_rules_pass_promtool_check_and_their_unit_tests() {
    let dir = example("prometheus");
    let Some(out) = promtool(&dir, &["check", "rules", "rules.yml"]) else {
        return skip("promtool not installed; .ci/run installs it");
    };
    assert_promtool_ok(&out, "promtool check rules rules.yml");
    let out = promtool(&dir, &["test", "rules", "rules_test.yml"]).unwrap();
    assert_promtool_ok(&out, "promtool test rules rules_test.yml");
}

/// Every `cronwarden_*` name in `text`.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("cronwarden_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The PromQL of every panel target in a Grafana dashboard.
fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<String> {
    let panels = dashboard["panels"].as_array().expect("panels");
    panels
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| {
            t["expr"]
                .as_str()
                .expect("a target with an expr")
                .to_string()
        })
        .collect()
}

#[test]
fn the_dashboard_and_the_rules_name_only_metrics_a_live_exposition_has() {
    let dashboard_text = std::fs::read_to_string(example("grafana/cronwarden.json")).unwrap();
    let dashboard: serde_json::Value =
        serde_json::from_str(&dashboard_text).expect("the dashboard is valid JSON");
    let exprs = dashboard_exprs(&dashboard);
    assert!(exprs.len() >= 10, "{exprs:?}");
    let rules = std::fs::read_to_string(example("prometheus/rules.yml")).unwrap();

    let env = Env::new("[[job]]\nname = \"a\"\nschedule = \"@yearly\"\nshell = \"true\"\n");
    let _sup = env.start();
    env.wait_ok(LONG);
    let (_, text) = env.socket_get("/metrics").expect("metrics answer");
    let exposed: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    for (what, source) in [("dashboard", exprs.join("\n")), ("rules.yml", rules)] {
        let names = metric_names(&source);
        assert!(names.len() >= 5, "{what}: {names:?}");
        for name in names {
            assert!(
                exposed.contains(name.as_str()),
                "{what} uses {name}, which cronwarden does not expose: {exposed:?}"
            );
        }
        // Per-job series are selected by `cronjob`: a `job` matcher on our
        // series would select the scrape job, never one of ours.
        for selector in source.split("cronwarden_").skip(1) {
            let name_end = selector
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(selector.len());
            let Some(matchers) = selector[name_end..].strip_prefix('{') else {
                continue;
            };
            let matchers = &matchers[..matchers.find('}').unwrap_or(matchers.len())];
            assert!(
                !matchers.split(',').any(|m| m.trim().starts_with("job")),
                "{what}: a job matcher on cronwarden_{selector}"
            );
        }
    }

    // The dashboard's PromQL parses: promtool checks it as recording rules,
    // with Grafana's variables replaced by what they expand to.
    let rules: String = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let e = e
                .replace("$__rate_interval", "5m")
                .replace("$instance", ".*")
                .replace("$cronjob", ".*");
            format!(
                "      - record: dashboard:expr{i}\n        expr: {}\n",
                serde_json::to_string(&e).unwrap()
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("dashboard.yml"),
        format!("groups:\n  - name: dashboard\n    rules:\n{rules}"),
    )
    .unwrap();
    let Some(out) = promtool(dir.path(), &["check", "rules", "dashboard.yml"]) else {
        return skip("promtool not installed; .ci/run installs it");
    };
    assert_promtool_ok(&out, "promtool check rules on the dashboard's expressions");
}
