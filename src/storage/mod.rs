//! The bottom layer: the append-only log on disk.
//!
//! - [`record`]: records, ops, the hybrid logical clock.
//! - [`frame`]: the checksummed unit written to disk (a batch, or part of one).
//! - [`segment`]: segment files, their header, and the recovery scan.
//! - [`chunks`]: checksums per 4 KiB chunk, checked as bytes are first read.
//! - [`index`]: frame (position/time) and key indexes, in memory and as sidecars.
//! - [`kidx_merge`]: merging key index files into a merged tier, streamed to disk.
//! - [`log`]: opening, the writer, group commit, segment rolls.
//! - [`view`]: read snapshots and scans.
//! - [`sweep`]: a sequential pass over one stream, for queries touching most keys.
//! - [`meta`]: persisted settings and the writer lock.
//! - [`horizon`]: the compaction horizon below which queries are refused.
//! - [`compact`]: compaction and retention, which rewrite sealed segments.

pub mod chunks;
pub mod compact;
pub mod frame;
pub mod fsutil;
pub mod horizon;
pub mod index;
pub mod keytable;
pub mod kidx_encode;
pub mod kidx_merge;
pub mod log;
pub mod memvfs;
pub mod merged;
pub mod meta;
pub(crate) mod mmap;
pub mod record;
pub mod segment;
pub mod stats;
pub mod sweep;
pub mod verify;
pub mod vfs;
pub mod view;
mod writeback;

/// Reads a whole immutable file (sidecars, checkpoints) through the seam.
pub(crate) fn read_file(vfs: &dyn vfs::Vfs, path: &std::path::Path) -> crate::Result<bytes::Bytes> {
    vfs.read(path).map_err(|e| crate::Error::io(path, e))
}

/// The cores this process may use, asked once (the answer reads cgroup files).
pub(crate) fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES
        .get_or_init(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get))
}
