//! The one place that maps files into memory, and gives mapped pages back.

#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use bytes::Bytes;

/// Every live mapping made by [`map`], by start address. [`release`] acts only
/// on bytes inside one of them, so no other memory (a heap buffer from an
/// in-memory file system, say) can ever be advised away.
static LIVE: Mutex<BTreeMap<usize, Weak<memmap2::Mmap>>> = Mutex::new(BTreeMap::new());

/// The owner behind the [`Bytes`] of a mapping: unregisters it before unmapping.
struct Mapping {
    map: Arc<memmap2::Mmap>,
}

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        let mut live = LIVE.lock().unwrap_or_else(PoisonError::into_inner);
        live.remove(&(self.map.as_ptr() as usize));
    }
}

/// Maps the first `len` bytes of `file` read-only and returns them as shared
/// [`Bytes`] that keep the mapping alive.
///
/// Callers guarantee that the mapped range is never modified or truncated while
/// mapped: tablelog maps sealed segments and index files (immutable once written,
/// fully synced before they are mapped, and replaced only by rename, which keeps the
/// old inode alive), and the committed prefix of the active segment (append-only:
/// the writer only writes past the committed end, and only truncates past it).
pub(crate) fn map(file: &File, len: usize) -> std::io::Result<Bytes> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: memmap2 requires that the file is not modified or truncated while
    // mapped, or reading the map is undefined. Per the contract above, the bytes
    // in 0..len are immutable for the life of the map: tablelog never writes or
    // truncates below a published length, and replaced files are renamed over,
    // never rewritten in place. Another process changing the files behind our
    // back is outside the contract (as for every mmap-based engine).
    let m = Arc::new(unsafe { memmap2::MmapOptions::new().len(len).map(file) }?);
    LIVE.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(m.as_ptr() as usize, Arc::downgrade(&m));
    Ok(Bytes::from_owner(Mapping { map: m }))
}

/// Drops this process's mapping of the pages under `bytes` if they belong to a
/// mapping made by [`map`] (anything else is left alone): the process's
/// resident set shrinks, the pages stay in the page cache (reclaimable, and
/// still charged to the cgroup), and the next read of those bytes maps the
/// same contents again (a minor fault while the page is cached, a read from
/// disk if it was evicted). Bulk readers of key indexes call this now and then
/// (checkpoints, merges, validating a whole index file), so that reading a
/// large database does not leave all of its indexes resident in the process.
/// Returns the length advised (0 if `bytes` is not mapped by us), whether or
/// not its pages were resident.
pub(crate) fn release(bytes: &[u8]) -> usize {
    within_mapping(bytes, release_range)
}

/// Tells the kernel that the mapping holding `bytes` is read at random
/// (`MADV_RANDOM` over `bytes`; anything not mapped by [`map`] is left
/// alone): a page fault in it then reads that page from disk, not the
/// device's read-ahead around it (8 MiB on some disks), and leaves nothing
/// else in the page cache. For files that point lookups read a few lines of
/// (key indexes); whoever then reads them through calls [`will_need`] ahead.
/// Returns the length advised.
pub(crate) fn advise_random(bytes: &[u8]) -> usize {
    within_mapping(bytes, |map, offset, len| {
        match map.advise_range(memmap2::Advice::Random, offset, len) {
            Ok(()) => len,
            Err(_) => 0,
        }
    })
}

/// Starts reading the pages under `bytes` into the page cache, if they belong
/// to a mapping made by [`map`] (`MADV_WILLNEED`, which reads ahead whatever
/// the mapping's advice): a reader about to go through a stretch of a file
/// advised [`advise_random`] calls it so that its faults find the pages
/// coming, in large reads. Returns the length advised.
pub(crate) fn will_need(bytes: &[u8]) -> usize {
    within_mapping(bytes, |map, offset, len| {
        match map.advise_range(memmap2::Advice::WillNeed, offset, len) {
            Ok(()) => len,
            Err(_) => 0,
        }
    })
}

/// Whether this process may make a mapping that only speeds reads up (a
/// sealed segment's second mapping, for point reads): while the live
/// mappings made by [`map`] are under a quarter of the kernel's limit of
/// mappings per process (`vm.max_map_count`, read once; 65,530 where it
/// cannot be read), so that the mappings reads need are not the ones the
/// kernel refuses.
pub(crate) fn spare_mapping() -> bool {
    static LIMIT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let limit = *LIMIT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(65_530)
    });
    LIVE.lock().unwrap_or_else(PoisonError::into_inner).len() < limit / 4
}

/// Whether `bytes` lie inside a live mapping made by [`map`] (not, say, a
/// heap copy from an in-memory file system).
pub(crate) fn is_mapped(bytes: &[u8]) -> bool {
    within_mapping(bytes, |_, _, len| len) > 0
}

/// Calls `f(mapping, offset, len)` if `bytes` lie inside one mapping made by
/// [`map`], holding it alive meanwhile; 0 (and no call) otherwise.
fn within_mapping(bytes: &[u8], f: impl FnOnce(&memmap2::Mmap, usize, usize) -> usize) -> usize {
    if bytes.is_empty() {
        return 0;
    }
    let at = bytes.as_ptr() as usize;
    let map = {
        let live = LIVE.lock().unwrap_or_else(PoisonError::into_inner);
        match live.range(..=at).next_back().map(|(_, m)| m.upgrade()) {
            Some(Some(m)) => m,
            _ => return 0,
        }
    };
    // Holding `map` keeps the mapping alive for the call below.
    let start = map.as_ptr() as usize;
    let Some(offset) = at.checked_sub(start) else {
        return 0;
    };
    if offset.saturating_add(bytes.len()) > map.len() {
        return 0;
    }
    f(&map, offset, bytes.len())
}

fn release_range(map: &memmap2::Mmap, offset: usize, len: usize) -> usize {
    // SAFETY: MADV_DONTNEED only drops this process's page-table entries for
    // the range (memmap2 widens it to whole pages, all inside `map`). `map` is
    // a read-only MAP_SHARED file mapping, so the next access maps the file's
    // page again, and the file's bytes under a live mapping never change (the
    // contract of `map`): every reference into the range, held anywhere, reads
    // the same bytes before and after. Nothing is written through the mapping,
    // so nothing can be lost. `map` is kept alive by the caller's `Arc`.
    match unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len) } {
        Ok(()) => len,
        Err(_) => 0,
    }
}

/// This process's resident kB in the mapping holding `bytes` (Linux only).
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn resident_kb(bytes: &[u8]) -> Option<u64> {
    let kb = smaps_field(bytes, "Rss:")?;
    kb.trim_end_matches(" kB").trim().parse().ok()
}

/// The kernel's flags of the mapping holding `bytes` (`rr`: advised
/// random), from `/proc/self/smaps` (Linux only).
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn vm_flags(bytes: &[u8]) -> Option<Vec<String>> {
    let flags = smaps_field(bytes, "VmFlags:")?;
    Some(flags.split_whitespace().map(str::to_string).collect())
}

/// Field `name` of the `/proc/self/smaps` entry of the mapping holding
/// `bytes`, trimmed.
#[cfg(all(test, target_os = "linux"))]
fn smaps_field(bytes: &[u8], name: &str) -> Option<String> {
    let at = bytes.as_ptr() as usize;
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let mut inside = false;
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ') {
            if let Some((lo, hi)) = range.split_once('-') {
                if let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                {
                    inside = lo <= at && at < hi;
                    continue;
                }
            }
        }
        if inside {
            if let Some(v) = line.strip_prefix(name) {
                return Some(v.trim().to_string());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn released_pages_read_back_the_same_and_other_memory_is_never_touched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..4u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&data)
            .unwrap();
        let f = std::fs::File::open(&path).unwrap();
        let m = map(&f, data.len()).unwrap();
        assert_eq!(&m[..], &data[..]);
        #[cfg(target_os = "linux")]
        let before = resident_kb(&m);
        // A slice in the middle, not page-aligned.
        assert_eq!(release(&m[1000..(3 << 20) + 5]), (3 << 20) + 5 - 1000);
        // (Where /proc/self/smaps is readable: the process holds 3 MiB less.)
        #[cfg(target_os = "linux")]
        if let (Some(before), Some(after)) = (before, resident_kb(&m)) {
            assert!(after + 2048 < before, "resident {before} kB -> {after} kB");
        }
        assert_eq!(&m[..], &data[..], "released pages read back the same bytes");

        // Heap bytes are left alone.
        let heap = Bytes::from(data.clone());
        assert_eq!(release(&heap), 0);
        assert_eq!(&heap[..], &data[..]);
        assert_eq!(release(&[]), 0);
        // A slice keeps its mapping alive, and releasable.
        let tail = m.slice(1 << 20..);
        drop(m);
        assert_eq!(release(&tail), data.len() - (1 << 20));
        assert_eq!(&tail[..], &data[1 << 20..]);
    }

    #[test]
    fn advice_applies_to_our_mappings_only_and_changes_no_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        let (point, scan) = (map(&f, data.len()).unwrap(), map(&f, data.len()).unwrap());
        assert_eq!(advise_random(&point), data.len());
        assert_eq!(will_need(&scan[4096..8192]), 4096);
        assert_eq!(
            will_need(&point[..]),
            data.len(),
            "read ahead whatever the advice"
        );
        // (Where /proc/self/smaps is readable: only the first is random.)
        #[cfg(target_os = "linux")]
        if let (Some(p), Some(s)) = (vm_flags(&point), vm_flags(&scan)) {
            assert!(p.iter().any(|f| f == "rr"), "{p:?}");
            assert!(!s.iter().any(|f| f == "rr"), "{s:?}");
        }
        assert_eq!(&point[..], &data[..]);
        assert_eq!(&scan[..], &data[..]);
        let heap = Bytes::from(data.clone());
        assert_eq!(advise_random(&heap) + will_need(&heap) + will_need(&[]), 0);
        assert!(is_mapped(&point[5..9]) && !is_mapped(&heap) && !is_mapped(&[]));
    }
}
