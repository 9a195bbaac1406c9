//! Hostile input, end to end: junk on the worker's event pipe (through a fail
//! point in the real worker) and abusive clients on the real status socket.

use std::{
    fs,
    time::{Duration, Instant},
};

use crate::util::{job, wait_until, Env};

const LONG: Duration = Duration::from_secs(40);

/// Binary junk, a 10 MiB line, invalid UTF-8 and a non-event JSON line on fd
/// 3: each is counted and dropped, the log says so in a few short lines, and
/// the same worker keeps heartbeating and firing jobs, status `ok`.
#[test]
fn junk_on_the_event_pipe_is_counted_and_survived_by_the_same_worker() {
    let env = Env::new(
        "[watchdog]\nheartbeat_interval = \"200ms\"\nstall_after = \"2s\"\n\
         [[job]]\nname = \"tick\"\nschedule = \"* * * * * *\"\nshell = \"echo t >> ticks\"\n",
    );
    let sup = env.start_with(&[("FAILPOINTS", "worker::junk_events=return")]);
    let s = wait_until("the bad lines counted", LONG, || {
        env.status()
            .1
            .filter(|s| s["worker"]["malformed_events"].as_u64() >= Some(4))
    });
    assert_eq!(
        s["worker"]["malformed_events"], 4,
        "the 10 MiB line counts once, each other bad line once: {s}"
    );
    let pid = s["worker"]["pid"].as_u64().expect("a worker");
    let ticks = env.lines("ticks").len();
    // Watch for a while: same worker, fresh heartbeats, jobs firing, `ok`.
    let until = Instant::now() + Duration::from_secs(4);
    let mut oks = 0;
    while Instant::now() < until {
        let (_, s) = env.status();
        let s = s.expect("status answers");
        assert_eq!(s["worker"]["pid"], pid, "the worker was replaced: {s}");
        assert_eq!(s["worker"]["restarts"], 0, "{s}");
        assert!(
            s["worker"]["heartbeat_age_ms"].as_u64().unwrap() < 2000,
            "heartbeat went stale: {s}"
        );
        oks += usize::from(s["state"] == "ok");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(oks > 0, "the state never was ok after the junk");
    let s = env.wait_ok(LONG);
    assert_eq!(s["worker"]["pid"], pid);
    assert_ne!(job(&s, "tick")["last_run"], serde_json::Value::Null);
    wait_until("tick keeps firing after the junk", LONG, || {
        (env.lines("ticks").len() >= ticks + 3).then_some(())
    });
    let log = sup.log();
    let dropped = log.matches("dropped an event line").count();
    assert_eq!(dropped, 4, "each bad line logged once:\n{log}");
    assert!(log.contains("line longer than"), "{log}");
    assert!(log.contains("not UTF-8"), "{log}");
    let size = fs::metadata(&sup.log).unwrap().len();
    assert!(
        size < 256 * 1024,
        "the log grew to {size} bytes: bad lines must not be copied into it"
    );
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("worker started") && l.contains("pid"))
            .count(),
        1,
        "the worker was restarted:\n{log}"
    );
}
