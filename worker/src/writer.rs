
#[cfg(test)]
mod tests {
    use cronwarden_shared::store::{JobRow, Write};

    use super::*;
    use crate::journal::Journal;

    fn paused(job: &str) -> Write {
        Write::Paused {
            job: job.into(),
            paused: true,
        }
    }

    /// Issue 14: a store locked by another connection (a backup) never
    /// holds the loop: the batch stays in flight (not durable, counted as
    /// held) while the loop goes on, and is committed once the lock goes.
    #[test]
    fn a_locked_store_leaves_the_batch_in_flight_and_commits_it_later() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut store = Store::open(&path).unwrap();
        store
            .reconcile(&[JobRow {
                name: "a".into(),
                schedule: "* * * * * *".into(),
                timezone: "UTC".into(),
                next_run_at: None,
                last_scheduled_at: None,
                paused: false,
            }])
            .unwrap();
        let mut writer = Writer::start(path.clone()).unwrap();
        let mut j = Journal::new();
        let wait = Duration::from_millis(10);
        let slow = Duration::ZERO;

        let backup = rusqlite::Connection::open(&path).unwrap();
        backup.execute_batch("BEGIN EXCLUSIVE").unwrap();
        j.extend([paused("a")]);
        j.flush_through(&mut writer, wait, slow);
        // The loop is back while the lock is held: nothing durable yet.
        assert!(!j.settled());
        assert_eq!(j.held(), 1);
        j.flush_through(&mut writer, wait, slow);
        assert!(
            j.error().is_some_and(|e| e.contains("slow or locked")),
            "{:?}",
            j.error()
        );
        backup.execute_batch("COMMIT").unwrap();
        drop(backup);
        let until = std::time::Instant::now() + Duration::from_secs(60);
        while !j.settled() {
            assert!(std::time::Instant::now() < until, "never committed");
            j.flush_through(&mut writer, Duration::from_millis(100), Duration::from_secs(60));
        }
        assert_eq!(j.error(), None);
        assert!(store.jobs().unwrap()[0].paused);
    }
}
