//! Small file-system helpers: positional writes, directory sync, atomic file
//! replacement, and the fault-injection hook used by the I/O-error tests.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Result};

/// Writes all of `buf` at `offset`.
pub fn write_all_at(file: &File, buf: &[u8], offset: u64, path: &Path) -> Result<()> {
    file.write_all_at(buf, offset)
        .map_err(|e| Error::io(path, e))
}

/// Fsyncs a directory so that creations and renames in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Replaces `path` atomically with `data`: temp file, fsync, rename, directory fsync.
pub fn atomic_write(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| Error::io(&tmp, e))?;
    write_all_at(&f, data, 0, &tmp)?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Which I/O operations a [`FaultPlan`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    /// A write of frames to a segment.
    Write,
    /// An fsync of a segment.
    Sync,
}

/// A test hook that fails the N-th counted write or sync of the log, once or forever.
///
/// Attach it with `DbBuilder::fault_plan`. Counting starts at 1.
#[derive(Debug)]
pub struct FaultPlan {
    fail_at: u64,
    forever: bool,
    seen: AtomicU64,
}

impl FaultPlan {
    /// Fails operation `n` (1-based); with `forever`, every operation after it too.
    #[must_use]
    pub fn new(n: u64, forever: bool) -> Self {
        FaultPlan {
            fail_at: n,
            forever,
            seen: AtomicU64::new(0),
        }
    }

    /// How many operations have been counted.
    #[must_use]
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::SeqCst)
    }

    /// Counts one operation and returns the injected error if it must fail.
    pub fn check(&self, op: FaultOp, path: &Path) -> Result<()> {
        let n = self.seen.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.fail_at || (self.forever && n > self.fail_at) {
            return Err(Error::io(
                path,
                std::io::Error::other(format!("injected fault on {op:?} #{n}")),
            ));
        }
        Ok(())
    }
}
