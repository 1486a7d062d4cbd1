//! The one place that maps files into memory.

#![allow(unsafe_code)]

use std::fs::File;

use bytes::Bytes;

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
    let m = unsafe { memmap2::MmapOptions::new().len(len).map(file) }?;
    Ok(Bytes::from_owner(m))
}
