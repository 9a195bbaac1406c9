//! Hostile inputs and faults: failing disks, other users on the socket,
//! privilege drops, output floods, spawn failures. Real binary, real
//! processes; where a test needs root and it is absent, it says so and
//! returns.

use std::time::Duration;

use crate::util::{assert_accounted, unix, wait_until, Env};

const LONG: Duration = Duration::from_secs(60);

/// (opened_at, resolved_at) of every `kind` alert in the store's history
/// (none while the store does not exist yet).
fn alert_history(env: &Env, kind: &str) -> Vec<(String, Option<String>)> {
    let read = || -> rusqlite::Result<Vec<(String, Option<String>)>> {
        let db = rusqlite::Connection::open_with_flags(
            env.state_dir().join("cronwarden.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        let mut st =
            db.prepare("SELECT opened_at, resolved_at FROM alerts WHERE kind = ?1 ORDER BY id")?;
        let rows = st.query_map([kind], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    };
    read().unwrap_or_default()
}

/// A store that fails for a while (fail point: the worker's next 15 store
/// writes fail) loses nothing: runs go on, `store_error` opens and
/// resolves, the worker is not replaced for it, and afterwards every fire
/// of the failing period has its record.
#[test]
fn failing_store_writes_are_held_and_stored_when_it_recovers() {
    let env = Env::new(
        r#"
[watchdog]
heartbeat_interval = "200ms"
stall_after = "3s"
[[job]]
name = "tick"
schedule = "* * * * * *"
shell = "echo tick"
"#,
    );
    let mut sup = env.start_with(&[("FAILPOINTS", "store::apply=15*return")]);
    let (opened, resolved) = wait_until("store_error opened and resolved", LONG, || {
        alert_history(&env, "store_error")
            .into_iter()
            .find_map(|(o, r)| Some((o, r?)))
    });
    let status = env.wait_ok(LONG);
    assert_eq!(
        status["worker"]["restarts"], 0,
        "a failing store must not get the worker replaced: {status}"
    );
    // Fires keep coming after the recovery; then stop and read the ledger.
    let after = unix(&resolved) + 2;
    wait_until("a fire after the recovery is recorded", LONG, || {
        env.rows("tick")
            .iter()
            .any(|r| r.scheduled_at.as_deref().is_some_and(|s| unix(s) > after))
            .then_some(())
    });
    assert_eq!(sup.stop(LONG), 0);
    let log = sup.log();
    assert!(
        log.contains("held in memory"),
        "the log says writes are held: {log}"
    );
    let (from, to) = (unix(&opened) - 1, after);
    assert!(
        to - from >= 2,
        "the failing period spans fires: {opened} .. {resolved}"
    );
    let rows = env.rows("tick");
    let expected: Vec<i64> = (from + 1..to).collect();
    assert_accounted(&rows, &expected, from, to, "tick");
    // They ran while the store was failing: their records are real runs.
    for r in rows.iter().filter(|r| {
        r.scheduled_at
            .as_deref()
            .is_some_and(|s| (from..to).contains(&unix(s)))
    }) {
        assert_eq!(
            r.outcome, "success",
            "a fire of the failing period ran: {r:?}"
        );
    }
}
