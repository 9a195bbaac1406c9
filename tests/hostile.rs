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

/// Keeps `n` connections to `socket` open and silent until `stop`,
/// reconnecting any the server closes (its header timeout does, after 5 s),
/// so the server has `n` idle clients the whole time.
fn hold_idle(
    socket: std::path::PathBuf,
    n: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    use std::{io::Read, os::unix::net::UnixStream, sync::atomic::Ordering};
    std::thread::spawn(move || {
        let connect = || {
            let s = UnixStream::connect(&socket).expect("connect");
            s.set_nonblocking(true).unwrap();
            s
        };
        let mut conns: Vec<UnixStream> = (0..n).map(|_| connect()).collect();
        let mut reconnects = 0;
        while !stop.load(Ordering::SeqCst) {
            for c in conns.iter_mut() {
                let mut b = [0u8; 64];
                match c.read(&mut b) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    _ => {
                        *c = connect();
                        reconnects += 1;
                    }
                }
            }
            // Pacing of the check, not a wait for a condition.
            std::thread::sleep(Duration::from_millis(100));
        }
        reconnects
    })
}

/// Sends a request head one byte a second until `stop`; starts over when
/// the server cuts it off. Returns how many times it was cut off.
fn slowloris(
    socket: std::path::PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    use std::{io::Write, os::unix::net::UnixStream, sync::atomic::Ordering};
    std::thread::spawn(move || {
        let head = b"GET /v1/status HTTP/1.1\r\nhost: x\r\nx-slow: ";
        let mut cut = 0;
        let mut s = UnixStream::connect(&socket).unwrap();
        let mut i = 0;
        while !stop.load(Ordering::SeqCst) {
            if s.write_all(&[head[i % head.len()]]).is_err() {
                cut += 1;
                s = UnixStream::connect(&socket).unwrap();
                i = 0;
                continue;
            }
            i += 1;
            std::thread::sleep(Duration::from_secs(1));
        }
        cut
    })
}

/// 200 idle clients and a slowloris one: `status` still answers promptly
/// (measured with the real CLI) and no heartbeat is missed: the heartbeat
/// stays fresher than stall_after and the worker is never replaced.
#[test]
fn idle_clients_and_a_slowloris_do_not_delay_status_or_heartbeats() {
    use std::sync::{atomic::AtomicBool, Arc};
    let env = Env::new(
        "[watchdog]\nheartbeat_interval = \"200ms\"\nstall_after = \"2s\"\n\
         [[job]]\nname = \"tick\"\nschedule = \"* * * * * *\"\nshell = \"echo t >> ticks\"\n",
    );
    let _sup = env.start();
    env.wait_ok(LONG);
    // The worker heartbeats while it takes over the store at start, before
    // its first loop turn; the turns' sequence is what is watched below.
    let s = wait_until("the worker's first loop turn", LONG, || {
        env.status()
            .1
            .filter(|s| s["worker"]["heartbeat_seq"].is_u64())
    });
    let pid = s["worker"]["pid"].clone();
    let socket = env.state_dir().join("cronwarden.sock");
    let stop = Arc::new(AtomicBool::new(false));
    let idle = hold_idle(socket.clone(), 200, stop.clone());
    let loris = slowloris(socket, stop.clone());
    let ticks = env.lines("ticks").len();
    // Longer than the header timeout, so the slowloris gets cut off (and
    // comes back) and the idle clients are replaced at least once.
    let until = Instant::now() + Duration::from_secs(9);
    let (mut worst, mut asked, mut last_seq) = (Duration::ZERO, 0, 0);
    while Instant::now() < until {
        let started = Instant::now();
        let (code, s) = env.status();
        let took = started.elapsed();
        worst = worst.max(took);
        asked += 1;
        let s = s.unwrap_or_else(|| panic!("status did not answer (exit {code})"));
        assert!(took < Duration::from_secs(2), "status took {took:?}: {s}");
        assert_eq!(s["worker"]["pid"], pid, "the worker was replaced: {s}");
        assert_eq!(s["worker"]["restarts"], 0, "{s}");
        let age = s["worker"]["heartbeat_age_ms"].as_u64().unwrap();
        assert!(age < 2000, "heartbeat {age} ms old (stall_after 2s): {s}");
        let seq = s["worker"]["heartbeat_seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("no heartbeat seq: {s}"));
        assert!(seq >= last_seq, "{s}");
        last_seq = seq;
        assert!(
            !s["alerts"].to_string().contains("worker_stalled"),
            "a stall was detected: {s}"
        );
        // Pacing of the probe (about what a monitor does), not a wait.
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let reconnects = idle.join().unwrap();
    let cut = loris.join().unwrap();
    println!(
        "status: {asked} calls under 200 idle clients + slowloris, slowest {worst:?}; \
         idle clients reconnected {reconnects} times, slowloris cut off {cut} times"
    );
    assert!(cut >= 1, "the slowloris client was never cut off");
    assert!(
        env.lines("ticks").len() >= ticks + 5,
        "jobs did not keep firing"
    );
}

/// The next fires `cronwarden next` prints for `expr` from `from`.
fn next_fires(env: &Env, expr: &str, tz: &str, from: &str) -> Vec<String> {
    let out = env.cmd(&["next", expr, "--tz", tz, "--from", from, "-n", "3"]);
    assert!(out.status.success(), "next {expr:?}: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Schedules, as the operator sees them: every expression `check` accepts
/// in a config shows the fires `next` computes for it (from just before or
/// just after `check` ran), and a schedule that is not even ASCII is
/// refused with an error naming the file, the job and the key (it used to
/// panic the parser).
#[test]
fn check_shows_the_fires_next_computes_and_refuses_junk_schedules() {
    let mut exprs: Vec<(String, &str)> = [
        ("*/7 */3 * * *", "Europe/Berlin"),
        ("30 2 * * *", "America/New_York"),
        ("0 0 29 2 *", "UTC"),
        ("0 12 * * 7", "Asia/Kathmandu"),
        ("@every 1h 30m", "UTC"),
        ("*/20 * * * * *", "Australia/Lord_Howe"),
        ("0 9-17/4 * jan-mar mon-fri", "Pacific/Chatham"),
        ("0 0 13 * 5", "UTC"),
        ("@weekly", "America/St_Johns"),
        ("15 1 * * *", "Europe/Dublin"),
    ]
    .iter()
    .map(|(e, z)| (e.to_string(), *z))
    .collect();
    // And some built by a fixed pseudo-random walk over field shapes.
    let mut seed: u64 = 0x5eed;
    let mut rnd = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let zones = ["UTC", "Europe/Berlin", "America/New_York", "Pacific/Apia"];
    for _ in 0..20 {
        let field = |rnd: &mut dyn FnMut(u64) -> u64, lo: u64, hi: u64| match rnd(4) {
            0 => "*".to_string(),
            1 => format!("{}", lo + rnd(hi - lo + 1)),
            2 => format!("*/{}", 1 + rnd(hi / 2 + 1)),
            _ => {
                let a = lo + rnd(hi - lo + 1);
                format!("{a}-{}", a + rnd(hi - a + 1))
            }
        };
        let e = format!(
            "{} {} {} {} {}",
            field(&mut rnd, 0, 59),
            field(&mut rnd, 0, 23),
            field(&mut rnd, 1, 28),
            field(&mut rnd, 1, 12),
            field(&mut rnd, 0, 6)
        );
        exprs.push((e, zones[rnd(4) as usize]));
    }
    let body: String = exprs
        .iter()
        .enumerate()
        .map(|(i, (e, z))| {
            format!(
                "[[job]]\nname = \"j{i}\"\nschedule = {e:?}\ntimezone = {z:?}\nshell = \"true\"\n"
            )
        })
        .collect();
    let env = Env::new(&body);
    let before = jiff::Timestamp::now().to_string();
    let out = env.cmd(&["check", "--json", "--config", env.config.to_str().unwrap()]);
    let after = jiff::Timestamp::now().to_string();
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let jobs = report["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), exprs.len());
    for ((e, z), job) in exprs.iter().zip(jobs) {
        assert_eq!(job["schedule"], *e, "{job}");
        let shown: Vec<String> = job["next"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect();
        let a = next_fires(&env, e, z, &before);
        let b = next_fires(&env, e, z, &after);
        assert!(
            shown == a || shown == b,
            "{e:?} in {z}: check shows {shown:?}, next says {a:?} / {b:?}"
        );
    }

    env.write_config("[[job]]\nname = \"odd\"\nschedule = \"B\u{1bc75}Ⱥ=\"\nshell = \"true\"\n");
    let out = env.cmd(&["check", "--config", env.config.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        err.contains(env.config.to_str().unwrap())
            && err.contains("job \"odd\"")
            && err.contains("key \"schedule\""),
        "{err}"
    );
}
