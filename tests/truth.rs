//! Truth under time and load (issue 13): no false alarm from the
//! supervisor's own way of looking, end to end.

use std::time::{Duration, Instant};

use crate::util::{wait_until, Env};

const LONG: Duration = Duration::from_secs(40);

/// Samples the status every ~200ms for `span`; returns the samples whose
/// state or alerts speak of a misarmed worker or job.
fn misarmed_samples(env: &Env, span: Duration) -> (usize, Vec<String>) {
    let until = Instant::now() + span;
    let (mut n, mut bad) = (0, vec![]);
    while Instant::now() < until {
        if let (_, Some(s)) = env.status() {
            n += 1;
            let text = format!("{} {}", s["reasons"], s["alerts"]);
            if text.contains("misarmed") || text.contains("armed schedule") {
                bad.push(text);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    (n, bad)
}

fn per_second_jobs(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!("[[job]]\nname = \"j{i:02}\"\nschedule = \"* * * * * *\"\nshell = \"true\"\n")
        })
        .collect()
}

/// Issue 13, reproduction 1: one healthy per-second job read `degraded`
/// (worker_misarmed) in a third of the samples.
#[test]
fn one_healthy_per_second_job_is_never_misarmed() {
    let env = Env::new(&per_second_jobs(1));
    let sup = env.start();
    env.wait_ok(LONG);
    let (n, bad) = misarmed_samples(&env, Duration::from_secs(20));
    assert!(n >= 20, "only {n} status samples in 20s");
    assert_eq!(bad, Vec::<String>::new(), "of {n} samples");
    let log = sup.log();
    assert!(!log.contains("misarmed"), "{log}");
}

/// Issue 13, reproduction 1: 50 per-second jobs read `degraded` 77 % of
/// the time.
#[test]
fn fifty_healthy_per_second_jobs_are_never_misarmed() {
    let env = Env::new(&per_second_jobs(50));
    let sup = env.start();
    env.wait_ok(LONG);
    let (n, bad) = misarmed_samples(&env, Duration::from_secs(20));
    assert!(n >= 10, "only {n} status samples in 20s");
    assert_eq!(bad, Vec::<String>::new(), "of {n} samples");
    let log = sup.log();
    assert!(!log.contains("misarmed"), "{log}");
}

/// Issue 13, reproduction 2: stop, wait 10s, start: every `@every` job
/// raised `job_late` (and resolved it 3ms later) from the stale cursor.
#[test]
fn a_restart_after_10s_raises_no_job_late() {
    let env = Env::new("");
    let d = env.dir.path().display().to_string();
    env.write_config(&format!(
        "[watchdog]\nlate_after = \"2s\"\n\
         [[job]]\nname = \"fast\"\nschedule = \"@every 1s\"\nshell = \"echo x >> {d}/fast\"\n\
         [[job]]\nname = \"slow\"\nschedule = \"@every 3s\"\nshell = \"echo x >> {d}/slow\"\n"
    ));
    let mut sup = env.start();
    env.wait_ok(LONG);
    wait_until("both jobs ran", LONG, || {
        (!env.lines("fast").is_empty() && !env.lines("slow").is_empty()).then_some(())
    });
    assert_eq!(sup.stop(LONG), 0);
    // The reproduction itself: the time nobody was there to fire them.
    std::thread::sleep(Duration::from_secs(10));
    let (fast, slow) = (env.lines("fast").len(), env.lines("slow").len());
    let sup = env.start();
    env.wait_ok(LONG);
    wait_until("both jobs ran again after the restart", LONG, || {
        (env.lines("fast").len() > fast && env.lines("slow").len() > slow).then_some(())
    });
    // A few more turns, in case an alert comes late.
    wait_until("fast ran 3 more times", LONG, || {
        (env.lines("fast").len() > fast + 3).then_some(())
    });
    let log = sup.log();
    assert!(!log.contains("job_late"), "{log}");
    assert!(!log.contains("is late"), "{log}");
}

/// Issue 13, reproduction 5: SIGSTOP the supervisor, then SIGCONT. It
/// killed the healthy worker as stalled and opened job_late for every job.
/// Now it reads what the worker queued meanwhile before judging.
#[test]
fn a_paused_supervisor_does_not_punish_the_worker() {
    use nix::sys::signal::Signal;
    let env = Env::new("");
    let d = env.dir.path().display().to_string();
    env.write_config(&format!(
        "[watchdog]\nstall_after = \"3s\"\nlate_after = \"2s\"\n\
         [[job]]\nname = \"sec\"\nschedule = \"* * * * * *\"\nshell = \"echo x >> {d}/sec\"\n\
         [[job]]\nname = \"every\"\nschedule = \"@every 2s\"\nshell = \"echo x >> {d}/every\"\n"
    ));
    let sup = env.start();
    let s = env.wait_ok(LONG);
    let worker = s["worker"]["pid"].as_u64().unwrap();
    crate::util::kill(sup.pid(), Signal::SIGSTOP);
    // The reproduction: longer than stall_after and late_after together.
    std::thread::sleep(Duration::from_secs(8));
    crate::util::kill(sup.pid(), Signal::SIGCONT);
    let runs = env.lines("sec").len();
    wait_until("sec ran twice more after the pause", LONG, || {
        (env.lines("sec").len() >= runs + 2).then_some(())
    });
    let s = env.wait_ok(LONG);
    assert_eq!(s["worker"]["pid"].as_u64(), Some(worker), "{s}");
    let log = sup.log();
    for bad in ["stalled", "job_late", "is late", "lost"] {
        assert!(!log.contains(bad), "{bad}:\n{log}");
    }
    assert!(log.contains("did not turn for"), "{log}");
}

/// Issue 13, reproduction 6: right after a refused reload, `status` said
/// degraded and `alerts` "no alerts". The status is one evaluation: its
/// state and its alerts come together, in the very first read.
#[test]
fn a_refused_reload_is_degraded_and_alerted_in_the_same_status() {
    let env = Env::new("[[job]]\nname = \"a\"\nschedule = \"@hourly\"\nshell = \"true\"\n");
    let _sup = env.start();
    env.wait_ok(LONG);
    env.write_config("[[job]]\nname = \"a\"\nschedule = \"not a schedule\"\nshell = \"true\"\n");
    let out = env.cmd(&["reload", "--config", env.config.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0), "the reload was refused");
    let (_, s) = env.status();
    let s = s.expect("a status");
    assert_eq!(s["state"], "degraded", "{s}");
    assert!(
        s["alerts"].to_string().contains("config_reload_failed"),
        "{s}"
    );
    let alerts = env.cmd(&["alerts", "--config", env.config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&alerts.stdout);
    assert!(text.contains("config_reload_failed"), "{text}");
}
