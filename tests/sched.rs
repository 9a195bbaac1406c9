//! Scheduling beyond the schedule (issue 17): `jitter`, `retries` and
//! `@reboot`, end to end against the real binary, its store and its
//! status.

use std::time::Duration;

use crate::util::{wait_until, Env, Row};

const LONG: Duration = Duration::from_secs(90);

/// The offset the README promises, computed here independently: FNV-1a 64
/// of `host NUL job`, modulo the jitter in milliseconds.
fn oracle_offset_ms(host: &str, job: &str, jitter_ms: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in host.bytes().chain([0u8]).chain(job.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h % jitter_ms
}

fn ms(ts: &str) -> i64 {
    let t: jiff::Timestamp = ts.parse().unwrap();
    t.as_millisecond()
}

/// Finished scheduled runs, with their start delay after the nominal time
/// in milliseconds.
fn delays(rows: &[Row]) -> Vec<(String, i64)> {
    rows.iter()
        .filter(|r| r.trigger == "schedule" && r.outcome == "success")
        .filter_map(|r| {
            let s = r.scheduled_at.as_deref()?;
            Some((s.to_string(), ms(r.started_at.as_deref()?) - ms(s)))
        })
        .collect()
}

fn alerts_of_kind(env: &Env, kind: &str) -> i64 {
    env.db()
        .query_row("SELECT count(*) FROM alerts WHERE kind = ?1", [kind], |r| {
            r.get(0)
        })
        .unwrap_or(0)
}

/// A jittered job starts at its fixed offset after each nominal time (the
/// record keeps the nominal time as `scheduled_at`), the same offset after
/// a restart, and the supervisor does not call it late for the offset.
#[test]
fn jitter_delays_each_fire_by_its_fixed_offset_and_is_never_late() {
    let jitter_ms = 20_000;
    let host = nix::unistd::gethostname()
        .unwrap()
        .into_string()
        .unwrap_or_default();
    // A name whose offset is well past `late_after` (without the
    // supervisor's allowance every fire would be late) and past half the
    // period (an offset applied twice would start after the next fire).
    let (name, offset) = (0..1000)
        .map(|i| format!("jit{i}"))
        .map(|n| (n.clone(), oracle_offset_ms(&host, &n, jitter_ms) as i64))
        .find(|(_, o)| (16_000..19_000).contains(o))
        .expect("some name has an offset in range");
    let env = Env::new(&format!(
        "[[job]]\nname = \"{name}\"\nschedule = \"*/30 * * * * *\"\njitter = \"20s\"\n\
         late_after = \"2s\"\ncommand = [\"true\"]\n"
    ));
    let check = |rows: &[Row], n: usize| {
        let d = delays(rows);
        (d.len() >= n).then_some(d)
    };
    let mut sup = env.start();
    env.wait_ok(LONG);
    let first = wait_until("two jittered runs", LONG * 2, || check(&env.rows(&name), 2));
    assert_eq!(sup.stop(LONG), 0);
    let before = first.len();
    let _sup = env.start();
    env.wait_ok(LONG);
    let all = wait_until("a jittered run after a restart", LONG * 2, || {
        check(&env.rows(&name), before + 1)
    });
    for (scheduled, delay) in &all {
        // Nominal times stay on the schedule.
        assert_eq!(ms(scheduled) % 30_000, 0, "{scheduled}");
        // Never before its offset, and before the next fire's time: the
        // start belongs to this fire (twice the offset would not).
        assert!(
            (offset..30_000).contains(delay),
            "run of {scheduled} started {delay} ms after its time, its offset is {offset} ms: {all:?}"
        );
    }
    assert_eq!(
        alerts_of_kind(&env, "job_late"),
        0,
        "a jittered job was called late"
    );
}

/// A fire is planned and committed a few milliseconds ahead of its time
/// (issue 18), but its job never starts before it: read by the job itself
/// (its own clock, first thing), every run of a per-second job starts at
/// or after its nominal second, and its record says it started then.
#[test]
fn a_fire_planned_ahead_never_starts_before_its_time() {
    let env = Env::new("");
    let stamps = env.path("stamps");
    env.write_config(&format!(
        "[[job]]\nname = \"tick\"\nschedule = \"* * * * * *\"\n\
         shell = 'echo \"$(date +%s%N) $CRONWARDEN_SCHEDULED_FOR\" >> {}'\n",
        stamps.display()
    ));
    let mut sup = env.start();
    env.wait_ok(LONG);
    let lines = wait_until("five runs", LONG, || {
        let lines = env.lines("stamps");
        (lines.len() >= 5).then_some(lines)
    });
    assert_eq!(sup.stop(LONG), 0);
    for line in &lines {
        let (ns, nominal) = line.split_once(' ').unwrap();
        let started_ms = ns.parse::<i64>().unwrap() / 1_000_000;
        assert!(
            started_ms >= ms(nominal),
            "a run started {} ms before its time {nominal}",
            ms(nominal) - started_ms
        );
    }
    for (scheduled, delay) in delays(&env.rows("tick")) {
        assert!(
            delay >= 0,
            "the record of {scheduled} says it started {delay} ms after"
        );
    }
}

/// A fire whose run fails twice and then succeeds, with `retries = 2`:
/// the ledger shows the fire's run and two retries (the retries with no
/// scheduled time of their own), and the job is never called failing, as
/// its fire did not fail in the end.
#[test]
fn a_fire_retried_twice_to_success_is_not_a_failure() {
    let env = Env::new("");
    let count = env.path("attempts");
    env.write_config(&format!(
        "[[job]]\nname = \"flaky\"\nschedule = \"*/30 * * * * *\"\nretries = 2\n\
         retry_delay = \"1s\"\n\
         shell = '''n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; [ $n -ge 3 ]'''\n",
        c = count.display()
    ));
    let _sup = env.start();
    env.wait_ok(LONG);
    let rows = wait_until("a fire and its two retries", LONG * 2, || {
        let rows = env.rows("flaky");
        let done: Vec<Row> = rows
            .into_iter()
            .filter(|r| r.outcome != "running")
            .take(3)
            .collect();
        (done.len() == 3).then_some(done)
    });
    let shape: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.trigger.as_str(), r.outcome.as_str()))
        .collect();
    assert_eq!(
        shape,
        [
            ("schedule", "failed"),
            ("retry", "failed"),
            ("retry", "success")
        ],
        "{rows:?}"
    );
    assert!(rows[0].scheduled_at.is_some());
    for r in &rows[1..] {
        assert!(r.scheduled_at.is_none() && r.covers.is_empty(), "{r:?}");
    }
    // The retries ran one after the other, each after the run before ended.
    for w in rows.windows(2) {
        assert!(
            ms(w[1].started_at.as_deref().unwrap()) >= ms(w[0].finished_at.as_deref().unwrap()),
            "{rows:?}"
        );
    }
    let s = env.wait_ok(LONG);
    assert_eq!(
        crate::util::job(&s, "flaky")["streaks"]["failures"],
        0,
        "{s}"
    );
    assert_eq!(
        alerts_of_kind(&env, "job_failing"),
        0,
        "a fire that succeeded on a retry was alerted failing"
    );
}

/// Rows of `job` that started after `since` (unix ms).
fn started_after(env: &Env, job: &str, since: i64) -> usize {
    env.rows(job)
        .iter()
        .filter(|r| r.started_at.as_deref().is_some_and(|s| ms(s) > since))
        .count()
}

/// Waits until the worker is a new one (not `old`), and has fired a
/// scheduled run of `tick` after `since`: by then it has made its
/// `@reboot` decisions, which come before its first fire.
fn wait_new_worker_ticked(env: &Env, old: Option<u64>, since: i64) -> u64 {
    let pid = wait_until("a new worker", LONG, || {
        let s = env.status().1?;
        let pid = s["worker"]["pid"].as_u64()?;
        (Some(pid) != old && s["state"] == "ok").then_some(pid)
    });
    wait_until("the new worker's first fire", LONG, || {
        (started_after(env, "tick", since) > 0).then_some(())
    });
    pid
}

/// `@reboot` fires once per boot: not again after a `kill -9` of the
/// worker nor after a restart of the supervisor in the same boot, and
/// again in a new boot (a new boot id, staged through a fail point).
#[test]
fn reboot_fires_once_per_boot() {
    let env = Env::new("");
    let boot = env.path("boot_id");
    let stamps = env.path("stamps");
    std::fs::write(&boot, "boot-1\n").unwrap();
    env.write_config(&format!(
        "[[job]]\nname = \"atboot\"\nschedule = \"@reboot\"\n\
         shell = '''echo \"$CRONWARDEN_RUN_ID\" >> {s}'''\n\
         [[job]]\nname = \"tick\"\nschedule = \"* * * * * *\"\ncommand = [\"true\"]\n",
        s = stamps.display()
    ));
    let failpoints = format!("worker::boot_id=return({})", boot.display());
    let vars = [("FAILPOINTS", failpoints.as_str())];
    let mut sup = env.start_with(&vars);
    env.wait_ok(LONG);
    wait_until("the @reboot run", LONG, || {
        (env.lines("stamps").len() == 1).then_some(())
    });
    let first_worker = env.wait_ok(LONG)["worker"]["pid"].as_u64();

    // kill -9 of the worker: the next worker is in the same boot.
    let since = jiff::Timestamp::now().as_millisecond();
    crate::util::kill(
        first_worker.unwrap() as u32,
        nix::sys::signal::Signal::SIGKILL,
    );
    let second = wait_new_worker_ticked(&env, first_worker, since);
    // Its record would be in the store before the tick's (see above).
    assert_eq!(env.rows("atboot").len(), 1, "fired again after kill -9");
    assert_eq!(env.lines("stamps").len(), 1, "fired again after kill -9");

    // A supervisor restart: the same boot still.
    assert_eq!(sup.stop(LONG), 0);
    let since = jiff::Timestamp::now().as_millisecond();
    let _sup = env.start_with(&vars);
    wait_new_worker_ticked(&env, Some(second), since);
    assert_eq!(env.rows("atboot").len(), 1, "fired again after a restart");
    assert_eq!(
        env.lines("stamps").len(),
        1,
        "fired again after a supervisor restart"
    );

    // A new boot: the next worker fires it again.
    std::fs::write(&boot, "boot-2\n").unwrap();
    let pid = env.wait_ok(LONG)["worker"]["pid"].as_u64();
    crate::util::kill(pid.unwrap() as u32, nix::sys::signal::Signal::SIGKILL);
    wait_until("the @reboot run of the new boot", LONG, || {
        (env.lines("stamps").len() == 2).then_some(())
    });
    // The stamp is written while the run is still going: wait until its
    // end is recorded too.
    let runs: Vec<Row> = wait_until("both @reboot runs recorded as ended", LONG, || {
        let rows = env.rows("atboot");
        (rows.len() >= 2 && rows.iter().all(|r| r.outcome != "running")).then_some(rows)
    });
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(runs.iter().all(|r| r.outcome == "success"), "{runs:?}");
    let alerted: i64 = env
        .db()
        .query_row(
            "SELECT count(*) FROM alerts WHERE job = 'atboot'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(alerted, 0, "an @reboot job was alerted");
}
