//! The boot each `@reboot` job last fired in: a `meta` row per job
//! (`reboot:<job>` = the boot id), written by [`Write::RebootFired`] in
//! the same transaction as the record of the run it started, so a worker
//! or supervisor restarted in the same boot finds it and does not fire the
//! job again.

use std::collections::BTreeMap;

use rusqlite::{params, Transaction};

use super::{Store, StoreError};

const PREFIX: &str = "reboot:";

impl Store {
    /// Job name → the boot id its `@reboot` last fired in.
    pub fn reboot_fired(&self) -> Result<BTreeMap<String, String>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT key, value FROM meta WHERE substr(key, 1, 7) = ?1")
            .map_err(self.sql("read @reboot boots"))?;
        let rows = st
            .query_map([PREFIX], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(self.sql("read @reboot boots"))?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (key, boot) = row.map_err(self.sql("read @reboot boots"))?;
            if let Some(job) = key.strip_prefix(PREFIX) {
                out.insert(job.to_string(), boot);
            }
        }
        Ok(out)
    }
}

/// Applies a [`Write::RebootFired`].
///
/// [`Write::RebootFired`]: super::Write::RebootFired
pub(super) fn record(tx: &Transaction, job: &str, boot_id: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2",
    )?
    .execute(params![format!("{PREFIX}{job}"), boot_id])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{Write, FILE_NAME};
    use super::*;

    #[test]
    fn the_boot_of_each_reboot_job_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut s = Store::open(&path).unwrap();
        assert!(s.reboot_fired().unwrap().is_empty());
        let fired = |job: &str, boot: &str| Write::RebootFired {
            job: job.into(),
            boot_id: boot.into(),
        };
        assert!(s.apply(&[fired("a", "b1"), fired("x:y", "b1")]).unwrap());
        assert!(s.apply(&[fired("a", "b2")]).unwrap());
        drop(s);
        let s = Store::open(&path).unwrap();
        let got = s.reboot_fired().unwrap();
        assert_eq!(got.get("a").map(String::as_str), Some("b2"));
        assert_eq!(got.get("x:y").map(String::as_str), Some("b1"));
        assert_eq!(got.len(), 2);
    }
}
