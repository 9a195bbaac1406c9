//! Giving the pages of freed heap memory back to the kernel.
//!
//! glibc's malloc keeps memory freed in the middle of its heap resident
//! until something reuses it. Reading a config builds its TOML tree first,
//! about 3.4 KB a job, all freed once the config is validated: without a
//! trim both processes kept that peak resident for good (issue 18: about
//! 3.4 KiB of RSS a job, more than everything they keep of a job).

/// Returns the whole free pages of the heap to the kernel
/// (`malloc_trim`), so resident memory falls to what is in use. A few ms
/// on a heap of tens of MB: for after a transient peak, never a hot path.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists and
    // advises the kernel about pages in them, under the arenas' locks: it
    // is sound from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `f`, run on a thread of its own: what it allocates goes to that
/// thread's malloc arena, not among the long-lived allocations of the
/// calling thread's. For a transient tree (a config's TOML) whose parse
/// frees temporaries as it goes: made in the main heap, those holes were
/// filled by the config's own allocations, the tree's pages stayed partly
/// in use when it was dropped, and a trim gave back almost nothing. If no
/// thread can be started, `f` runs here.
pub fn apart<T: Send>(f: impl Fn() -> T + Sync) -> T {
    std::thread::scope(|s| {
        match std::thread::Builder::new()
            .name("cw-parse".into())
            .spawn_scoped(s, &f)
        {
            // A panic in `f` is the caller's, as if `f` had run here.
            Ok(h) => h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            Err(_) => f(),
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn apart_returns_what_f_returns_and_passes_its_panic_on() {
        let v = super::apart(|| vec![1, 2, 3]);
        assert_eq!(v, [1, 2, 3]);
        let r = std::panic::catch_unwind(|| super::apart(|| -> u8 { panic!("boom") }));
        assert!(r.is_err());
    }
}
