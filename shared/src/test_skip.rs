//! The one way a test of any crate says it was skipped (its need, root, a
//! database or a cgroup hierarchy, is absent here). Rust's harness has no
//! skipped state, so such a test returns early and would count as passed;
//! [`skip`] records it where `.ci/run` counts skips. Used by tests only.

use std::io::Write;

/// Marks the calling test as skipped because `why` is missing here: the
/// test's name (its thread's) and the reason go to stderr and to the file
/// named by `CRONWARDEN_SKIPPED` (set by `.ci/run`, which counts them as
/// skipped, not passed). The test returns right after.
pub fn skip(why: &str) {
    let name = std::thread::current()
        .name()
        .unwrap_or("unnamed test")
        .to_string();
    eprintln!("SKIPPED {name}: {why}");
    if let Some(path) = std::env::var_os("CRONWARDEN_SKIPPED") {
        // One short line per append: O_APPEND keeps lines of parallel
        // tests whole.
        let line = format!("{name}: {why}\n");
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            panic!("cannot record the skip of {name} in {path:?}: {e}");
        }
    }
}
