//! Alerts reach people: real sinks (an HTTP receiver on 127.0.0.1, an exec
//! command writing a file), exactly once per open and resolve.

use std::{
    fs,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;

use crate::util::{alive, kill, read_pids, wait_until, Env, Receiver, Reply};

const LONG: Duration = Duration::from_secs(40);

fn count(r: &Receiver, event: &str, kind: &str) -> usize {
    r.events()
        .iter()
        .filter(|(e, k)| e == event && k == kind)
        .count()
}

#[test]
fn stalled_worker_posts_one_open_and_one_resolve() {
    let hook = Receiver::start(vec![]);
    let env = Env::new(&format!(
        "[watchdog]\nheartbeat_interval = \"250ms\"\nstall_after = \"2s\"\n\
         [[job]]\nname = \"a\"\nschedule = \"* * * * * *\"\nshell = \"echo a\"\n\
         [[alert]]\nkind = \"webhook\"\nurl = \"{}\"\ntimeout = \"2s\"\n",
        hook.url
    ));
    let _sup = env.start();
    let pid = env.wait_ok(LONG)["worker"]["pid"].as_u64().unwrap() as u32;
    kill(pid, Signal::SIGSTOP);
    wait_until("one resolve after the restart", LONG, || {
        (count(&hook, "resolved", "worker_stalled") == 1).then_some(())
    });
    // Settle, then check nothing was sent twice.
    env.wait_ok(LONG);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        count(&hook, "opened", "worker_stalled"),
        1,
        "{:?}",
        hook.events()
    );
    assert_eq!(
        count(&hook, "resolved", "worker_stalled"),
        1,
        "{:?}",
        hook.events()
    );
    let body = hook
        .bodies
        .lock()
        .unwrap()
        .iter()
        .find(|b| b["kind"] == "worker_stalled")
        .cloned()
        .unwrap();
    for field in [
        "event",
        "kind",
        "job",
        "severity",
        "summary",
        "opened_at",
        "resolved_at",
        "host",
        "details",
    ] {
        assert!(body.get(field).is_some(), "missing {field} in {body}");
    }
    assert_eq!(body["severity"], "critical");
    assert!(
        body["summary"].as_str().unwrap().contains(&pid.to_string()),
        "{body}"
    );
}

#[test]
fn webhook_retries_through_500s_and_a_hung_receiver_stalls_nothing() {
    let hook = Receiver::start(vec![Reply::Status(500), Reply::Status(500)]);
    let env = Env::new(&format!(
        "[[job]]\nname = \"a\"\nschedule = \"@daily\"\nshell = \"true\"\n\
         [[alert]]\nname = \"flaky\"\nkind = \"webhook\"\nurl = \"{}\"\nretries = 3\ntimeout = \"2s\"\n",
        hook.url
    ));
    let _sup = env.start();
    env.wait_ok(LONG);
    let out = env.cmd(&["alerts", "test", "-c", env.config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("flaky: delivered"), "{text}");
    assert_eq!(hook.requests.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert_eq!(
        hook.events(),
        vec![("opened".to_string(), "test".to_string())]
    );

    // A receiver that never answers: the status keeps answering promptly
    // and heartbeats keep being processed.
    let hung = Receiver::start(vec![Reply::Hang; 20]);
    let env = Env::new(&format!(
        "[watchdog]\nheartbeat_interval = \"250ms\"\n\
         [[job]]\nname = \"bad\"\nschedule = \"* * * * * *\"\nshell = \"false\"\n\
         [[alert]]\nkind = \"webhook\"\nurl = \"{}\"\ntimeout = \"30s\"\n",
        hung.url
    ));
    let _sup = env.start();
    wait_until("a delivery under way", LONG, || {
        (hung.requests.load(std::sync::atomic::Ordering::SeqCst) >= 1).then_some(())
    });
    for _ in 0..20 {
        let t = Instant::now();
        let (_, s) = env.status();
        let s = s.expect("status answers while the sink hangs");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "status took {:?}",
            t.elapsed()
        );
        assert!(
            s["worker"]["heartbeat_age_ms"].as_u64().unwrap() < 1500,
            "heartbeats stalled: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn exec_sink_gets_open_and_resolve_with_environment() {
    let env = Env::new("");
    let log = env.path("alerts.log");
    let good = env.path("good");
    env.write_config(&format!(
        "[[job]]\nname = \"quiet\"\nschedule = \"* * * * * *\"\nzero_output_alert_after = 2\n\
         shell = \"test -f {g} && echo output; true\"\n\
         [[alert]]\nkind = \"exec\"\ncommand = [\"sh\", \"-c\", \"echo \\\"$CRONWARDEN_ALERT_EVENT $CRONWARDEN_ALERT_KIND $CRONWARDEN_ALERT_JOB $CRONWARDEN_ALERT_SEVERITY\\\" >> {l}; cat >> {l}; echo >> {l}\"]\n",
        g = good.display(),
        l = log.display()
    ));
    let _sup = env.start();
    wait_until("the opened notice", LONG, || {
        fs::read_to_string(&log)
            .ok()
            .filter(|t| t.contains("opened job_zero_output_streak quiet warning"))
    });
    fs::write(&good, "").unwrap();
    let text = wait_until("the resolved notice", LONG, || {
        fs::read_to_string(&log)
            .ok()
            .filter(|t| t.contains("resolved job_zero_output_streak quiet"))
    });
    // The JSON on stdin is the documented notice.
    let json_line = text.lines().find(|l| l.starts_with('{')).unwrap();
    let v: serde_json::Value = serde_json::from_str(json_line).unwrap();
    assert_eq!(v["kind"], "job_zero_output_streak");
    assert_eq!(v["job"], "quiet");
    assert_eq!(
        text.matches("opened job_zero_output_streak").count(),
        1,
        "{text}"
    );
}

#[test]
fn a_sink_filtered_to_job_late_gets_nothing_for_a_timeout() {
    let only_late = Receiver::start(vec![]);
    let all = Receiver::start(vec![]);
    let env = Env::new(&format!(
        "[[job]]\nname = \"slow\"\nschedule = \"* * * * * *\"\ntimeout = \"1s\"\nkill_grace = \"200ms\"\nshell = \"sleep 10\"\n\
         [[alert]]\nname = \"late-only\"\nkind = \"webhook\"\nurl = \"{}\"\nkinds = [\"job_late\"]\n\
         [[alert]]\nname = \"everything\"\nkind = \"webhook\"\nurl = \"{}\"\n",
        only_late.url, all.url
    ));
    let _sup = env.start();
    wait_until("the timeout alert at the unfiltered sink", LONG, || {
        (count(&all, "opened", "job_timeout") >= 1).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        only_late.events().is_empty(),
        "the job_late-only sink got {:?}",
        only_late.events()
    );
}

#[test]
fn open_alerts_survive_a_supervisor_restart_without_duplicates() {
    let hook = Receiver::start(vec![]);
    let env = Env::new("");
    let good = env.path("good");
    env.write_config(&format!(
        "[[job]]\nname = \"f\"\nschedule = \"* * * * * *\"\nshell = \"test -f {}\"\n\
         [[alert]]\nkind = \"webhook\"\nurl = \"{}\"\n",
        good.display(),
        hook.url
    ));
    let mut sup = env.start();
    wait_until("job_failing opened", LONG, || {
        (count(&hook, "opened", "job_failing") == 1).then_some(())
    });
    let opened_at = env.status().1.unwrap()["alerts"][0]["opened_at"].clone();
    assert_eq!(sup.stop(LONG), 0);
    let _sup = env.start();
    let s = wait_until("the alert still open after the restart", LONG, || {
        env.status().1.filter(|s| {
            s["alerts"]
                .as_array()
                .is_some_and(|a| a.iter().any(|a| a["kind"] == "job_failing"))
        })
    });
    let again = s["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "job_failing")
        .unwrap()
        .clone();
    assert_eq!(
        again["opened_at"], opened_at,
        "the alert was reopened instead of kept"
    );
    fs::write(&good, "").unwrap();
    wait_until("resolved once", LONG, || {
        (count(&hook, "resolved", "job_failing") == 1).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        count(&hook, "opened", "job_failing"),
        1,
        "{:?}",
        hook.events()
    );
    assert_eq!(
        count(&hook, "resolved", "job_failing"),
        1,
        "{:?}",
        hook.events()
    );
    let out = env.cmd(&["alerts", "--all", "-c", env.config.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("job_failing"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn reminders_repeat_open_alerts_and_restarts_are_news() {
    let hook = Receiver::start(vec![]);
    let env = Env::new(&format!(
        "alert_repeat_after = \"2s\"\n\
         [[job]]\nname = \"bad\"\nschedule = \"* * * * * *\"\nshell = \"false\"\n\
         [[alert]]\nkind = \"webhook\"\nurl = \"{}\"\n",
        hook.url
    ));
    let _sup = env.start();
    let pid = wait_until("a worker", LONG, || {
        env.status().1?["worker"]["pid"].as_u64()
    }) as u32;
    wait_until("two reminders", LONG, || {
        (count(&hook, "reminder", "job_failing") >= 2).then_some(())
    });
    assert_eq!(
        count(&hook, "opened", "job_failing"),
        1,
        "{:?}",
        hook.events()
    );
    kill(pid, Signal::SIGKILL);
    wait_until("worker_restarted news", LONG, || {
        (count(&hook, "opened", "worker_restarted") == 1).then_some(())
    });
    let n = hook
        .bodies
        .lock()
        .unwrap()
        .iter()
        .find(|b| b["kind"] == "worker_restarted")
        .cloned()
        .unwrap();
    assert_eq!(n["severity"], "info");
    assert!(n["summary"].as_str().unwrap().contains("SIGKILL"), "{n}");
}

/// The notices an exec sink appended to `path`, one JSON object a line.
fn exec_notices(path: &std::path::Path) -> Vec<serde_json::Value> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn sink<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["sinks"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("sink {name} not in status {status}"))
}

#[test]
fn a_broken_webhook_raises_delivery_failed_on_the_other_sinks_until_it_recovers() {
    let broken = Receiver::start(vec![]);
    broken.set_default(Reply::Status(500));
    let env = Env::new("");
    let got = env.path("pager.log");
    env.write_config(&format!(
        "[[job]]\nname = \"bad\"\nschedule = \"* * * * * *\"\nshell = \"false\"\n\
         [[alert]]\nname = \"broken\"\nkind = \"webhook\"\nurl = \"{}\"\nretries = 0\ntimeout = \"2s\"\n\
         [[alert]]\nname = \"pager\"\nkind = \"exec\"\ncommand = [\"sh\", \"-c\", \"cat >> {l}; echo >> {l}\"]\n",
        broken.url,
        l = got.display()
    ));
    let _sup = env.start();
    let failed = wait_until("alert_delivery_failed at the exec sink", LONG, || {
        exec_notices(&got)
            .into_iter()
            .find(|n| n["kind"] == "alert_delivery_failed" && n["event"] == "opened")
    });
    assert_eq!(failed["details"]["sinks"], serde_json::json!(["broken"]));
    assert!(
        failed["summary"].as_str().unwrap().contains("broken"),
        "{failed}"
    );
    assert_eq!(failed["severity"], "critical");
    let s = env.status().1.unwrap();
    let (b, p) = (sink(&s, "broken"), sink(&s, "pager"));
    assert!(
        b["last_error"].as_str().unwrap().contains("HTTP 500"),
        "{b}"
    );
    assert!(b["last_error_at"].is_string(), "{b}");
    assert!(b["consecutive_failures"].as_u64().unwrap() >= 2, "{b}");
    assert!(b["undelivered"].as_u64().unwrap() >= 1, "{b}");
    assert!(p["last_success"].is_string(), "{p}");
    assert!(p["last_error"].is_null(), "{p}");
    assert_eq!(
        (&p["dropped"], &b["dropped"]),
        (&0.into(), &0.into()),
        "{s}"
    );
    assert_eq!(s["state"], "degraded");

    // The receiver comes back: the notice it missed arrives, late but in
    // full, and the delivery alert resolves once.
    broken.set_default(Reply::Status(200));
    wait_until(
        "the missed job_failing notice at the recovered webhook",
        LONG,
        || (count(&broken, "opened", "job_failing") == 1).then_some(()),
    );
    wait_until(
        "alert_delivery_failed resolved at the exec sink",
        LONG,
        || {
            exec_notices(&got)
                .iter()
                .any(|n| n["kind"] == "alert_delivery_failed" && n["event"] == "resolved")
                .then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    let notices = exec_notices(&got);
    let of = |event: &str| {
        notices
            .iter()
            .filter(|n| n["kind"] == "alert_delivery_failed" && n["event"] == event)
            .count()
    };
    assert_eq!((of("opened"), of("resolved")), (1, 1), "{notices:#?}");
    assert_eq!(
        count(&broken, "opened", "job_failing"),
        1,
        "{:?}",
        broken.events()
    );
    assert!(
        !broken
            .events()
            .iter()
            .any(|(_, k)| k == "alert_delivery_failed"),
        "the broken sink was told of its own failure: {:?}",
        broken.events()
    );
    let s = env.status().1.unwrap();
    let b = sink(&s, "broken");
    assert_eq!(b["consecutive_failures"], 0, "{b}");
    assert_eq!(b["undelivered"], 0, "{b}");
    assert!(b["last_success"].is_string(), "{b}");
    assert!(
        !s["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "alert_delivery_failed"),
        "{s}"
    );
}

#[test]
fn slack_format_with_a_header_from_the_environment_keeps_the_token_out_of_sight() {
    const TOKEN: &str = "Bearer cw-s3cret-4711";
    let hook = Receiver::start(vec![]);
    let env = Env::new(&format!(
        "[[job]]\nname = \"bad\"\nschedule = \"* * * * * *\"\nshell = \"false\"\n\
         [[alert]]\nname = \"chat\"\nkind = \"webhook\"\nurl = \"{}\"\nformat = \"slack\"\n\
         headers = {{ Authorization = \"env:CW_HOOK_TOKEN\" }}\n",
        hook.url
    ));
    // At debug level, so that nothing the HTTP client logs escapes the check.
    let child = std::process::Command::new(crate::util::BIN)
        .args(["run", "--config", env.config.to_str().unwrap()])
        .current_dir(env.dir.path())
        .env("CRONWARDEN_LOG", "debug")
        .env("CW_HOOK_TOKEN", TOKEN)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(env.path("debug.log")).unwrap())
        .spawn()
        .unwrap();
    let sup = crate::util::Supervisor {
        child,
        log: env.path("debug.log"),
    };
    let body = wait_until("the slack message", LONG, || {
        hook.bodies.lock().unwrap().first().cloned()
    });
    let headers = hook.headers.lock().unwrap()[0].clone();
    let text = body["text"].as_str().unwrap_or_else(|| panic!("{body}"));
    assert_eq!(
        body.as_object().unwrap().len(),
        1,
        "a slack body is {{\"text\": ...}} alone: {body}"
    );
    let history = env.cmd(&[
        "alerts",
        "--all",
        "--json",
        "-c",
        env.config.to_str().unwrap(),
    ]);
    let history: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    let summary = history
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "job_failing")
        .unwrap()["summary"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(text.contains(&summary), "{text:?} lacks {summary:?}");
    assert!(text.contains("job_failing"), "{text}");
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "authorization" && v == TOKEN),
        "{headers:?}"
    );
    let status = String::from_utf8(
        env.cmd(&["status", "--json", "-c", env.config.to_str().unwrap()])
            .stdout,
    )
    .unwrap();
    assert!(status.contains("\"chat\""), "{status}");
    assert!(
        !status.contains("s3cret"),
        "the token is in the status: {status}"
    );
    let log = sup.log();
    assert!(log.contains("job_failing"), "{log}");
    assert!(!log.contains("s3cret"), "the token is in the log:\n{log}");
}

/// The JSON log lines of alerts of `kind` and `event`, as (level, line).
fn alert_log_lines(log: &str, kind: &str, event: &str) -> Vec<(String, serde_json::Value)> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["kind"] == kind && l["event"] == event)
        .map(|l| (l["level"].as_str().unwrap_or_default().to_string(), l))
        .collect()
}

#[test]
fn every_alert_is_logged_at_warn_or_error() {
    let env = Env::new("");
    let good = env.path("good");
    env.write_config(&format!(
        "[[job]]\nname = \"f\"\nschedule = \"* * * * * *\"\nshell = \"test -f {}\"\n",
        good.display()
    ));
    let child = std::process::Command::new(crate::util::BIN)
        .args(["run", "--log-format", "json", "--config"])
        .arg(&env.config)
        .current_dir(env.dir.path())
        .env("CRONWARDEN_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(env.path("json.log")).unwrap())
        .spawn()
        .unwrap();
    let sup = crate::util::Supervisor {
        child,
        log: env.path("json.log"),
    };
    let warnish = |level: &str| level == "WARN" || level == "ERROR";
    let opened = wait_until("the opened job_failing log line", LONG, || {
        alert_log_lines(&sup.log(), "job_failing", "opened").pop()
    });
    assert!(warnish(&opened.0), "{}", opened.1);
    assert_eq!(opened.1["job"], "f");
    // An info alert (a restart is news, not trouble) is still at WARN.
    let pid = env.status().1.unwrap()["worker"]["pid"].as_u64().unwrap() as u32;
    kill(pid, Signal::SIGKILL);
    let restarted = wait_until("the worker_restarted log line", LONG, || {
        alert_log_lines(&sup.log(), "worker_restarted", "opened").pop()
    });
    assert!(warnish(&restarted.0), "{}", restarted.1);
    fs::write(&good, "").unwrap();
    let resolved = wait_until("the resolved job_failing log line", LONG, || {
        alert_log_lines(&sup.log(), "job_failing", "resolved").pop()
    });
    assert!(warnish(&resolved.0), "{}", resolved.1);
}

#[test]
fn a_hung_exec_sink_is_killed_at_its_timeout_and_holds_up_no_other_sink() {
    let hook = Receiver::start(vec![]);
    let env = Env::new("");
    let pids = env.path("hang.pids");
    env.write_config(&format!(
        "[[job]]\nname = \"bad\"\nschedule = \"* * * * * *\"\nshell = \"false\"\n\
         [[alert]]\nname = \"hang\"\nkind = \"exec\"\ntimeout = \"10s\"\nretries = 0\n\
         command = [\"sh\", \"-c\", \"echo $$ >> {}; exec sleep 600\"]\n\
         [[alert]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\n",
        pids.display(),
        hook.url
    ));
    // An exec sink in flight when the supervisor stops is not waited for:
    // whatever happens in the test, leave no sleep behind.
    struct Reap(std::path::PathBuf);
    impl Drop for Reap {
        fn drop(&mut self) {
            for pid in read_pids(&self.0) {
                kill(pid, Signal::SIGKILL);
            }
        }
    }
    let _reap = Reap(pids.clone());
    let _sup = env.start();
    let first = wait_until("the exec sink running", LONG, || {
        read_pids(&pids).first().copied()
    });
    wait_until("job_failing at the webhook", LONG, || {
        (count(&hook, "opened", "job_failing") == 1).then_some(())
    });
    // The webhook got the notice while the exec sink still hangs on it.
    assert!(alive(first), "the exec sink was not running any more");
    let s = wait_until("the hung delivery recorded as failed", LONG, || {
        env.status()
            .1
            .filter(|s| sink(s, "hang")["failed"].as_u64() >= Some(1))
    });
    let h = sink(&s, "hang");
    assert!(
        h["last_error"]
            .as_str()
            .unwrap()
            .contains("did not finish within 10s; killed"),
        "{h}"
    );
    assert!(h["last_success"].is_null(), "{h}");
    wait_until("the hung sink process killed", LONG, || {
        (!alive(first)).then_some(())
    });
    // `alerts test` reports both sinks, the hung one as failed, even while
    // it is busy re-sending.
    let out = env.cmd(&["alerts", "test", "-c", env.config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("hook: delivered"), "{text}");
    assert!(text.contains("hang: FAILED: "), "{text}");
    // Later notices still reach the other sink at once, though the exec
    // sink is busy failing (and re-trying) all the while.
    let worker = s["worker"]["pid"].as_u64().unwrap() as u32;
    kill(worker, Signal::SIGKILL);
    wait_until("worker_restarted at the webhook", LONG, || {
        (count(&hook, "opened", "worker_restarted") == 1).then_some(())
    });
    // ... and wait in the exec sink's queue, behind the one it cannot deliver.
    let s = wait_until("both notices waiting at the exec sink", LONG, || {
        env.status().1.filter(|s| {
            let h = sink(s, "hang");
            h["queued"].as_u64().unwrap() + h["undelivered"].as_u64().unwrap() >= 2
        })
    });
    assert_eq!(sink(&s, "hang")["delivered"], 0, "{s}");
}

/// `cronwarden alerts [--all] --json`, parsed; None while the supervisor
/// does not answer yet.
fn alerts_json(env: &Env, all: bool) -> Option<Vec<serde_json::Value>> {
    let mut args = vec!["alerts", "--json", "-c", env.config.to_str().unwrap()];
    if all {
        args.push("--all");
    }
    let out = env.cmd(&args);
    if out.status.code() == Some(3) {
        return None;
    }
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let list = serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {}", String::from_utf8_lossy(&out.stdout)))
        .clone();
    Some(list)
}

fn assert_alert_shape(a: &serde_json::Value) {
    for field in [
        "kind",
        "job",
        "severity",
        "opened_at",
        "resolved_at",
        "summary",
    ] {
        assert!(a.get(field).is_some(), "missing {field} in {a}");
    }
    assert!(
        ["info", "warning", "critical"].contains(&a["severity"].as_str().unwrap()),
        "{a}"
    );
    a["opened_at"]
        .as_str()
        .unwrap()
        .parse::<jiff::Timestamp>()
        .unwrap();
    assert!(!a["summary"].as_str().unwrap().is_empty(), "{a}");
}

#[test]
fn alerts_json_shows_open_alerts_and_the_history_in_one_shape() {
    let env = Env::new("");
    let good = env.path("good");
    env.write_config(&format!(
        "[[job]]\nname = \"f\"\nschedule = \"* * * * * *\"\nshell = \"test -f {}\"\n",
        good.display()
    ));
    let _sup = env.start();
    let open = wait_until("job_failing in `alerts --json`", LONG, || {
        alerts_json(&env, false)?
            .into_iter()
            .find(|a| a["kind"] == "job_failing")
    });
    assert_alert_shape(&open);
    assert_eq!(open["job"], "f");
    assert_eq!(open["severity"], "warning");
    assert!(open["resolved_at"].is_null(), "{open}");
    assert!(
        open["summary"]
            .as_str()
            .unwrap()
            .starts_with("job f failed"),
        "{open}"
    );

    fs::write(&good, "").unwrap();
    wait_until("job_failing gone from `alerts --json`", LONG, || {
        (!alerts_json(&env, false)?
            .iter()
            .any(|a| a["kind"] == "job_failing"))
        .then_some(())
    });
    let all = alerts_json(&env, true).unwrap();
    all.iter().for_each(assert_alert_shape);
    let past: Vec<_> = all.iter().filter(|a| a["kind"] == "job_failing").collect();
    assert_eq!(past.len(), 1, "{all:#?}");
    let h = past[0];
    assert_eq!(h["job"], "f");
    assert_eq!(h["severity"], "warning");
    assert_eq!(h["event"], "resolved");
    assert_eq!(h["opened_at"], open["opened_at"], "{h}");
    let (opened, resolved): (jiff::Timestamp, jiff::Timestamp) = (
        h["opened_at"].as_str().unwrap().parse().unwrap(),
        h["resolved_at"]
            .as_str()
            .unwrap_or_else(|| panic!("{h}"))
            .parse()
            .unwrap(),
    );
    assert!(opened < resolved, "{h}");
    assert!(
        h["summary"].as_str().unwrap().starts_with("job f failed"),
        "{h}"
    );
}

#[test]
fn a_sink_with_its_own_repeat_after_gets_reminders_the_others_do_not() {
    let own = Receiver::start(vec![]);
    let plain = Receiver::start(vec![]);
    let env = Env::new(&format!(
        "[[job]]\nname = \"bad\"\nschedule = \"* * * * * *\"\nshell = \"false\"\n\
         [[alert]]\nname = \"own\"\nkind = \"webhook\"\nurl = \"{}\"\nrepeat_after = \"2s\"\n\
         [[alert]]\nname = \"plain\"\nkind = \"webhook\"\nurl = \"{}\"\n",
        own.url, plain.url
    ));
    let _sup = env.start();
    wait_until("two reminders at the sink with repeat_after", LONG, || {
        (count(&own, "reminder", "job_failing") >= 2).then_some(())
    });
    assert_eq!(
        count(&own, "opened", "job_failing"),
        1,
        "{:?}",
        own.events()
    );
    let reminder = own
        .bodies
        .lock()
        .unwrap()
        .iter()
        .find(|b| b["event"] == "reminder")
        .cloned()
        .unwrap();
    assert_eq!(reminder["job"], "bad");
    assert!(reminder["resolved_at"].is_null(), "{reminder}");
    assert_eq!(
        count(&plain, "opened", "job_failing"),
        1,
        "{:?}",
        plain.events()
    );
    assert_eq!(
        count(&plain, "reminder", "job_failing"),
        0,
        "{:?}",
        plain.events()
    );
}
