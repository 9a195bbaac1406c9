//! Prometheus metrics from a running supervisor: the counters say what
//! happened, the exposition passes `promtool check metrics`, and the TCP
//! listener serves the same text and nothing else.

use std::{process::Stdio, time::Duration};

use crate::util::{http_get, sample, skip, wait_until, Env};

const LONG: Duration = Duration::from_secs(40);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tcp_get(port: u16, path: &str) -> Option<(u16, String)> {
    let s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    Some(http_get(s, path))
}

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
            "cronwarden_runs_total{job=\"bad\",outcome=\"failed\"}",
        ) == Some(2.0)
            && sample(&text, "cronwarden_fire_delay_seconds_count").is_some_and(|n| n >= 1.0)
            && sample(&text, "cronwarden_store_write_seconds_count").is_some_and(|n| n >= 1.0))
        .then_some(text)
    });
    assert_eq!(
        sample(
            &text,
            "cronwarden_runs_total{job=\"ok\",outcome=\"success\"}"
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "cronwarden_runs_total{job=\"ok\",outcome=\"failed\"}"
        ),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "cronwarden_runs_total{job=\"bad\",outcome=\"success\"}"
        ),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "cronwarden_run_duration_seconds_count{job=\"ok\"}"),
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
        "cronwarden_last_success_timestamp_seconds{job=\"ok\"}",
    )
    .unwrap();
    assert!(
        (exposed - last.as_millisecond() as f64 / 1000.0).abs() < 1.0,
        "{exposed} vs {last}"
    );
    assert!(sample(
        &text,
        "cronwarden_last_success_timestamp_seconds{job=\"bad\"}"
    )
    .is_none());
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
            "cronwarden_runs_total{job=\"ok\",outcome=\"success\"}"
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
