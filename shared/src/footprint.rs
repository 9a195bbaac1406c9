//! Start-up's pages handed back once a process is running (issue 18).
//!
//! Start-up runs code that idle never runs again: argument parsing, config
//! validation, the store's schema and take-over, the first plan. The kernel
//! maps the executable's pages as they are touched, and by 64 KiB windows
//! (fault-around), so after start-up nearly all of the 6 MB of `.text` is
//! mapped into each process and stays mapped for months, counted in its
//! RSS and PSS, though most of it is never executed again.
//!
//! [`shed_startup_pages`] unmaps the executable's read-only, unmodified
//! pages (`MADV_DONTNEED`) and returns the heap's free pages to the kernel
//! (`malloc_trim`). The code and data that keep running fault straight back
//! in from the page cache (minor faults, a few µs each, once); what start-up
//! alone used stays in the page cache, clean and reclaimable, no longer
//! pinned by two mappings. Nothing is lost: a dropped page of a private,
//! never-written file mapping reads back the same bytes from the file
//! (replacing the binary by rename, as packages do, keeps the old inode).
//! A mapping with any private copy (relocated `.data.rel.ro`, a debugger's
//! breakpoint) is left alone, since dropping it would lose the copy.
//!
//! What it costs: the idle loops' code is no longer held by two mappings,
//! so under memory pressure the kernel may evict it like any clean page,
//! and a fire after that takes a few major faults; and an executable
//! rewritten in place (which Linux refuses for a running binary with
//! ETXTBSY, but a network file system may not) would be read back new,
//! as any page the kernel evicted would be. Packages replace the file by
//! rename, which keeps our inode.

use std::ops::Range;

/// What [`shed_startup_pages`] released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shed {
    /// Mappings of the executable unmapped.
    pub mappings: usize,
    /// Their size, mapped or not, in bytes.
    pub bytes: usize,
}

/// Why [`shed_startup_pages`] released nothing, or not everything.
#[derive(Debug, thiserror::Error)]
pub enum ShedError {
    #[error("cannot read /proc/self/smaps: {0}")]
    ReadMaps(#[source] std::io::Error),
    #[error("madvise(MADV_DONTNEED) of {start:#x}..{end:#x}: {source}")]
    Madvise {
        start: usize,
        end: usize,
        #[source]
        source: std::io::Error,
    },
}

/// Unmaps the executable's clean read-only pages and trims the heap; call
/// once start-up is over (both processes do at the worker's first
/// heartbeat). Reads `/proc/self/smaps` (well under a millisecond); best
/// effort on other systems, where it does nothing. A mapping the kernel
/// refuses (a locked one, under `mlockall`) is skipped and the first such
/// refusal returned, after the others and the heap were shed.
pub fn shed_startup_pages() -> Result<Shed, ShedError> {
    #[cfg(target_os = "linux")]
    {
        let smaps = std::fs::read_to_string("/proc/self/smaps").map_err(ShedError::ReadMaps)?;
        let own = shed_startup_pages as *const () as usize;
        let mut shed = Shed::default();
        let mut refused = None;
        for r in droppable(&smaps, own) {
            // SAFETY: `r` is exactly one whole mapping of our own executable,
            // read-only and without a private page (`droppable`): dropping
            // its pages loses nothing, the next access reads the same bytes
            // from the file. No Rust object lives in it (it is the image's
            // code and constants, never allocated from).
            let rc = unsafe {
                libc::madvise(
                    r.start as *mut libc::c_void,
                    r.end - r.start,
                    libc::MADV_DONTNEED,
                )
            };
            if rc != 0 {
                refused.get_or_insert(ShedError::Madvise {
                    start: r.start,
                    end: r.end,
                    source: std::io::Error::last_os_error(),
                });
                continue;
            }
            shed.mappings += 1;
            shed.bytes += r.end - r.start;
        }
        crate::heap::release_freed();
        refused.map_or(Ok(shed), Err)
    }
    #[cfg(not(target_os = "linux"))]
    Ok(Shed::default())
}

/// One mapping's header and the one field we need.
struct Mapping<'a> {
    range: Range<usize>,
    perms: &'a str,
    /// Device and inode: which file.
    file: (&'a str, &'a str),
    anonymous_kib: Option<u64>,
}

/// The mappings of the file that holds `own` (an address in our code) that
/// are not writable and hold no private page, from `/proc/self/smaps` text.
/// Anything unparsable is skipped, never guessed.
fn droppable(smaps: &str, own: usize) -> Vec<Range<usize>> {
    let maps = parse(smaps);
    let Some(exe) = maps
        .iter()
        .find(|m| m.range.contains(&own) && m.file.1 != "0")
        .map(|m| m.file)
    else {
        return vec![];
    };
    maps.into_iter()
        .filter(|m| {
            m.file == exe
                && m.perms.starts_with('r')
                && !m.perms.contains('w')
                && m.perms.ends_with('p')
                && m.anonymous_kib == Some(0)
        })
        .map(|m| m.range)
        .collect()
}

fn parse(smaps: &str) -> Vec<Mapping<'_>> {
    let mut out: Vec<Mapping<'_>> = vec![];
    for line in smaps.lines() {
        if let Some(m) = header(line) {
            out.push(m);
        } else if let Some(rest) = line.strip_prefix("Anonymous:") {
            if let Some(last) = out.last_mut() {
                last.anonymous_kib = rest
                    .trim()
                    .strip_suffix("kB")
                    .and_then(|n| n.trim().parse().ok());
            }
        }
    }
    out
}

/// `start-end perms offset dev inode [path]`
fn header(line: &str) -> Option<Mapping<'_>> {
    let mut f = line.split_ascii_whitespace();
    let (start, end) = f.next()?.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let perms = f.next()?;
    let _offset = f.next()?;
    let dev = f.next()?;
    let inode = f.next()?;
    (perms.len() == 4 && start < end).then_some(Mapping {
        range: start..end,
        perms,
        file: (dev, inode),
        anonymous_kib: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
5595fc346000-5595fc5b5000 r--p 00000000 fe:01 1234 /usr/bin/cronwarden
Size:               2492 kB
Rss:                1216 kB
Anonymous:             0 kB
VmFlags: rd mr mw me dw sd
5595fc5b5000-5595fcb80000 r-xp 0026e000 fe:01 1234 /usr/bin/cronwarden
Rss:                5136 kB
Anonymous:             0 kB
5595fcb80000-5595fcbb3000 r--p 00839000 fe:01 1234 /usr/bin/cronwarden
Anonymous:           204 kB
5595fcbb3000-5595fcbba000 rw-p 0086b000 fe:01 1234 /usr/bin/cronwarden
Anonymous:             0 kB
559609ba2000-559609c6a000 rw-p 00000000 00:00 0 [heap]
Anonymous:           996 kB
7fb7c6a87000-7fb7c6bdd000 r-xp 00026000 fe:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7fb7c6bdd000-7fb7c6bdf000 r-xp 00000000 00:00 0
Anonymous:             0 kB
";

    #[test]
    fn only_the_executables_clean_read_only_mappings() {
        let got = droppable(SMAPS, 0x5595fc600000);
        assert_eq!(
            got,
            vec![
                0x5595fc346000..0x5595fc5b5000,
                0x5595fc5b5000..0x5595fcb80000
            ],
        );
    }

    #[test]
    fn relocated_writable_and_other_files_stay() {
        let got = droppable(SMAPS, 0x5595fc600000);
        for kept in [
            0x5595fcb80000,
            0x5595fcbb3000,
            0x559609ba2000,
            0x7fb7c6a87000,
        ] {
            assert!(got.iter().all(|r| !r.contains(&kept)), "{kept:#x} dropped");
        }
    }

    #[test]
    fn nothing_when_the_own_address_is_in_no_file_mapping() {
        // Anonymous executable memory (inode 0) is not a file to read back.
        assert!(droppable(SMAPS, 0x7fb7c6bdd100).is_empty());
        assert!(droppable(SMAPS, 0x10).is_empty());
    }

    #[test]
    fn a_mapping_without_its_anonymous_field_is_not_dropped() {
        let text = "1000-2000 r-xp 00000000 fe:01 7 /x\n3000-4000 r--p 00000000 fe:01 7 /x\nAnonymous: 0 kB\n";
        assert_eq!(droppable(text, 0x1800), vec![0x3000..0x4000]);
    }

    #[test]
    fn garbage_is_skipped() {
        for text in [
            "",
            "\n\n",
            "zz-1 r-xp 0 a b",
            "2000-1000 r-xp 0 fe:01 7 /x\nAnonymous: 0 kB",
        ] {
            assert!(droppable(text, 0x1800).is_empty(), "{text:?}");
        }
    }

    /// The real thing on this test process: pages are released and the
    /// code and constants still run and read the same afterwards.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_process_keeps_running_after_shedding() {
        let before = format!("{:?}", (1..50).map(|i| i * i).collect::<Vec<u64>>());
        let shed = shed_startup_pages().expect("shed");
        assert!(shed.mappings >= 1, "{shed:?}");
        assert!(shed.bytes > 0);
        let after = format!("{:?}", (1..50).map(|i| i * i).collect::<Vec<u64>>());
        assert_eq!(before, after);
        // Twice is harmless.
        shed_startup_pages().expect("shed again");
    }
}
