//! The file I/O seam. Every write the engine makes to disk goes through a [`Vfs`]:
//! the real one ([`OsVfs`]), one that injects failures ([`FaultyVfs`]: the N-th
//! operation fails once or forever, e.g. with ENOSPC), and one that records every
//! operation ([`RecordingVfs`]) so that [`crash_image`] can build the directory a
//! crash at any point of the trace could leave: synced data kept, a seeded random
//! subset of unsynced writes kept (possibly torn at 512-byte or 4 KiB boundaries,
//! the rest zero- or garbage-filled), and creations, renames and removals not
//! followed by a directory sync possibly lost.
//!
//! Reads go through the seam too ([`Vfs::read`], [`VFile::map`], and
//! [`VFile::read_at`] for a few bytes of a file not otherwise read): memory maps
//! of the real files for [`OsVfs`] (sealed segments are fully synced before they
//! are mapped), plain buffers for the in-memory [`MemVfs`](super::memvfs::MemVfs).

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// File-system operations the engine uses to change disk state.
pub trait Vfs: Send + Sync + fmt::Debug {
    /// Creates (or truncates) a file for reading and writing.
    fn create(&self, path: &Path) -> io::Result<Arc<dyn VFile>>;
    /// Opens an existing file, for writing too when `write`.
    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn VFile>>;
    /// Renames a file (atomically replacing `to`).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes creations, renames and removals in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// The whole file, read-only. The engine reads only immutable files this way
    /// (sidecars, sealed segments, checkpoints, settings).
    fn read(&self, path: &Path) -> io::Result<Bytes>;
    /// Paths of the entries of `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// Creates `dir` and its missing parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Takes the exclusive lock file `path` (created if missing), held until the
    /// returned guard drops; `WouldBlock` if someone holds it.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn Any + Send + Sync>>;
}

/// An open file.
#[allow(clippy::len_without_is_empty)]
pub trait VFile: Send + Sync + fmt::Debug {
    /// Writes all of `buf` at `off`.
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()>;
    /// Truncates or extends the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes the file's data durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Makes the file's data and metadata durable (`fsync`).
    fn sync_all(&self) -> io::Result<()>;
    /// Current length.
    fn len(&self) -> io::Result<u64>;
    /// The first `len` bytes, read-only (a memory map of a real file). The caller
    /// promises that they are never written again (see `mmap.rs`).
    fn map(&self, len: usize) -> io::Result<Bytes>;
    /// Reads up to `buf.len()` bytes at `off` into `buf`; how many were read
    /// (fewer only at the end of the file). For a few bytes of a file not
    /// otherwise read yet: a page fault in a cold mapping reads around it as
    /// much as the device's read-ahead (often megabytes), a read only the
    /// pages asked for plus a little. The default copies from [`VFile::map`].
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let end = self.len()?.min(off.saturating_add(buf.len() as u64));
        if off >= end {
            return Ok(0);
        }
        let bytes = self.map(usize::try_from(end).map_err(|_| io::ErrorKind::InvalidInput)?)?;
        let n = (end - off) as usize;
        buf[..n].copy_from_slice(&bytes[off as usize..]);
        Ok(n)
    }
    /// Starts writing `len` bytes at `off` back to the device without waiting
    /// (a hint: it makes nothing durable), so that a later fsync has less
    /// left to do. The default does nothing.
    fn start_writeback(&self, off: u64, len: u64) {
        let _ = (off, len);
    }
}

/// The operating system's file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsVfs;

#[derive(Debug)]
struct OsFile(File);

impl VFile for OsFile {
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        self.0.write_all_at(buf, off)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn map(&self, len: usize) -> io::Result<Bytes> {
        super::mmap::map(&self.0, len)
    }
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match self.0.read_at(&mut buf[n..], off + n as u64) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }
    fn start_writeback(&self, off: u64, len: u64) {
        super::writeback::start(&self.0, off, len);
    }
}

impl Vfs for OsVfs {
    fn create(&self, path: &Path) -> io::Result<Arc<dyn VFile>> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Arc::new(OsFile(f)))
    }
    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn VFile>> {
        Ok(Arc::new(OsFile(
            OpenOptions::new().read(true).write(write).open(path)?,
        )))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
    fn read(&self, path: &Path) -> io::Result<Bytes> {
        let f = File::open(path)?;
        let len = f.metadata()?.len();
        super::mmap::map(&f, len as usize)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.path()))
            .collect()
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn Any + Send + Sync>> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        match f.try_lock() {
            Ok(()) => Ok(Box::new(LockGuard(f))),
            Err(std::fs::TryLockError::WouldBlock) => Err(io::ErrorKind::WouldBlock.into()),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

/// The writer lock of [`OsVfs::lock`]: unlocks explicitly when dropped. An
/// `flock` belongs to the open file description, which a child process
/// spawned meanwhile by any thread holds a copy of until its `exec`; closing
/// our descriptor alone would leave the lock held until then, `LOCK_UN`
/// releases it for every copy.
struct LockGuard(File);

impl Drop for LockGuard {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// Delegates the read-side operations of a wrapping [`Vfs`] (they are never
/// failed nor recorded: they change nothing on disk).
macro_rules! delegate_reads {
    () => {
        fn read(&self, path: &Path) -> io::Result<Bytes> {
            self.inner.read(path)
        }
        fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
            self.inner.list(dir)
        }
        fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
            self.inner.create_dir_all(dir)
        }
        fn lock(&self, path: &Path) -> io::Result<Box<dyn Any + Send + Sync>> {
            self.inner.lock(path)
        }
    };
}

/// Which operation [`FaultyVfs`] fails, and how.
#[derive(Debug)]
pub struct FaultPlan {
    fail_at: u64,
    forever: bool,
    errno: i32,
    seen: AtomicU64,
}

impl FaultPlan {
    /// Fails operation `n` (1-based, counting every create, write, set_len, sync,
    /// rename, remove and directory sync) with EIO; with `forever`, every later one too.
    #[must_use]
    pub fn new(n: u64, forever: bool) -> FaultPlan {
        FaultPlan {
            fail_at: n,
            forever,
            errno: 5,
            seen: AtomicU64::new(0),
        }
    }

    /// Fails with this OS error number instead (28 = ENOSPC, a full disk).
    #[must_use]
    pub fn errno(mut self, errno: i32) -> FaultPlan {
        self.errno = errno;
        self
    }

    /// Operations counted so far.
    #[must_use]
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::SeqCst)
    }

    fn check(&self) -> io::Result<()> {
        let n = self.seen.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.fail_at || (self.forever && n > self.fail_at) {
            return Err(io::Error::from_raw_os_error(self.errno));
        }
        Ok(())
    }
}

/// A [`Vfs`] that fails the operations its [`FaultPlan`] names.
#[derive(Debug, Clone)]
pub struct FaultyVfs {
    inner: Arc<dyn Vfs>,
    plan: Arc<FaultPlan>,
}

impl FaultyVfs {
    /// Wraps `inner`.
    #[must_use]
    pub fn new(inner: Arc<dyn Vfs>, plan: Arc<FaultPlan>) -> FaultyVfs {
        FaultyVfs { inner, plan }
    }
}

#[derive(Debug)]
struct FaultyFile {
    inner: Arc<dyn VFile>,
    plan: Arc<FaultPlan>,
}

impl VFile for FaultyFile {
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        self.plan.check()?;
        self.inner.write_at(buf, off)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.plan.check()?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.plan.check()?;
        self.inner.sync_data()
    }
    fn sync_all(&self) -> io::Result<()> {
        self.plan.check()?;
        self.inner.sync_all()
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn map(&self, len: usize) -> io::Result<Bytes> {
        self.inner.map(len)
    }
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        self.inner.read_at(buf, off)
    }
}

impl Vfs for FaultyVfs {
    fn create(&self, path: &Path) -> io::Result<Arc<dyn VFile>> {
        self.plan.check()?;
        Ok(Arc::new(FaultyFile {
            inner: self.inner.create(path)?,
            plan: self.plan.clone(),
        }))
    }
    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn VFile>> {
        Ok(Arc::new(FaultyFile {
            inner: self.inner.open(path, write)?,
            plan: self.plan.clone(),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.plan.check()?;
        self.inner.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.plan.check()?;
        self.inner.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.plan.check()?;
        self.inner.sync_dir(dir)
    }
    delegate_reads!();
}

/// One recorded operation (paths are as the engine gave them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceOp {
    /// A file was created or truncated to empty.
    Create(PathBuf),
    /// Bytes written at an offset.
    Write(PathBuf, u64, Vec<u8>),
    /// Length set.
    SetLen(PathBuf, u64),
    /// The file's data (and size) made durable.
    Sync(PathBuf),
    /// A rename.
    Rename(PathBuf, PathBuf),
    /// A removal.
    Remove(PathBuf),
    /// The directory's entries made durable.
    SyncDir(PathBuf),
}

/// A [`Vfs`] that records every operation (and performs it on `inner`).
#[derive(Debug, Clone)]
pub struct RecordingVfs {
    inner: Arc<dyn Vfs>,
    trace: Arc<Mutex<Vec<TraceOp>>>,
}

impl RecordingVfs {
    /// Wraps `inner`, starting with an empty trace.
    #[must_use]
    pub fn new(inner: Arc<dyn Vfs>) -> RecordingVfs {
        RecordingVfs {
            inner,
            trace: Arc::default(),
        }
    }

    /// The operations so far.
    #[must_use]
    pub fn trace(&self) -> Vec<TraceOp> {
        self.trace
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn push(&self, op: TraceOp) {
        self.trace
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(op);
    }
}

#[derive(Debug)]
struct RecordingFile {
    inner: Arc<dyn VFile>,
    path: PathBuf,
    vfs: RecordingVfs,
}

impl VFile for RecordingFile {
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        self.inner.write_at(buf, off)?;
        self.vfs
            .push(TraceOp::Write(self.path.clone(), off, buf.to_vec()));
        Ok(())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)?;
        self.vfs.push(TraceOp::SetLen(self.path.clone(), len));
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()?;
        self.vfs.push(TraceOp::Sync(self.path.clone()));
        Ok(())
    }
    fn sync_all(&self) -> io::Result<()> {
        self.inner.sync_all()?;
        self.vfs.push(TraceOp::Sync(self.path.clone()));
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn map(&self, len: usize) -> io::Result<Bytes> {
        self.inner.map(len)
    }
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        self.inner.read_at(buf, off)
    }
}

impl Vfs for RecordingVfs {
    fn create(&self, path: &Path) -> io::Result<Arc<dyn VFile>> {
        let inner = self.inner.create(path)?;
        self.push(TraceOp::Create(path.to_path_buf()));
        Ok(Arc::new(RecordingFile {
            inner,
            path: path.to_path_buf(),
            vfs: self.clone(),
        }))
    }
    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn VFile>> {
        Ok(Arc::new(RecordingFile {
            inner: self.inner.open(path, write)?,
            path: path.to_path_buf(),
            vfs: self.clone(),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)?;
        self.push(TraceOp::Rename(from.to_path_buf(), to.to_path_buf()));
        Ok(())
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)?;
        self.push(TraceOp::Remove(path.to_path_buf()));
        Ok(())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)?;
        self.push(TraceOp::SyncDir(dir.to_path_buf()));
        Ok(())
    }
    delegate_reads!();
}

/// Contents of one file in the simulated file system.
#[derive(Debug, Clone, Default)]
struct SimFile {
    durable: Vec<u8>,
    /// Content including unsynced writes (the page cache).
    cache: Vec<u8>,
    /// Unsynced writes and truncations since the last sync, in order.
    pending: Vec<(u64, Option<Vec<u8>>, u64)>,
}

fn apply_write(buf: &mut Vec<u8>, off: u64, data: &[u8]) {
    let end = off as usize + data.len();
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[off as usize..end].copy_from_slice(data);
}

/// Builds in `out` the directory a crash right after operation `upto` (exclusive)
/// of `trace` could leave, rooted at `from` (the directory the engine wrote).
///
/// Synced file data is kept. Of the writes since a file's last sync, each is kept
/// or lost at random (seeded by `seed`); a kept write may be torn at a 512-byte or
/// 4 KiB boundary, its lost tail zero- or garbage-filled if it extended the file.
/// Truncations since the last sync are applied or not. Creations, renames and
/// removals not followed by a sync of their directory are kept as a random prefix.
pub fn crash_image(
    trace: &[TraceOp],
    upto: usize,
    seed: u64,
    from: &Path,
    out: &Path,
) -> io::Result<()> {
    crash_image_over(trace, upto, seed, None, from, out)
}

/// Like [`crash_image`], for a trace that starts on a directory that already
/// held files: `base` is a copy of `from` taken (fully synced) before the trace
/// began. Its files are the durable starting state, so a crash can also leave
/// (or lose) the removal or replacement of a file the trace did not create.
pub fn crash_image_over(
    trace: &[TraceOp],
    upto: usize,
    seed: u64,
    base: Option<&Path>,
    from: &Path,
    out: &Path,
) -> io::Result<()> {
    let mut dice = crate::rng::Rng(seed ^ (upto as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
    // inode -> contents; durable and current name -> inode.
    let mut inodes: Vec<SimFile> = Vec::new();
    let mut durable: BTreeMap<PathBuf, usize> = BTreeMap::new();
    let mut names: BTreeMap<PathBuf, usize> = BTreeMap::new();
    let mut pending_ns: Vec<NsOp> = Vec::new();
    if let Some(base) = base {
        for e in std::fs::read_dir(base)? {
            let e = e?;
            if !e.file_type()?.is_file() {
                continue;
            }
            let bytes = std::fs::read(e.path())?;
            inodes.push(SimFile {
                durable: bytes.clone(),
                cache: bytes,
                pending: Vec::new(),
            });
            let p = from.join(e.file_name());
            names.insert(p.clone(), inodes.len() - 1);
            durable.insert(p, inodes.len() - 1);
        }
    }
    // A file the trace did not create existed before it: the trace must start on
    // an empty or fully synced directory, so its current bytes are durable.
    for op in &trace[..upto.min(trace.len())] {
        match op {
            TraceOp::Create(p) => {
                inodes.push(SimFile::default());
                let i = inodes.len() - 1;
                names.insert(p.clone(), i);
                pending_ns.push(NsOp::Create(p.clone(), i));
            }
            TraceOp::Write(p, off, data) => {
                let i = inode_of(p, &mut names, &mut durable, &mut inodes);
                let f = &mut inodes[i];
                apply_write(&mut f.cache, *off, data);
                f.pending.push((*off, Some(data.clone()), 0));
            }
            TraceOp::SetLen(p, len) => {
                let i = inode_of(p, &mut names, &mut durable, &mut inodes);
                let f = &mut inodes[i];
                f.cache.resize(*len as usize, 0);
                f.pending.push((0, None, *len));
            }
            TraceOp::Sync(p) => {
                if let Some(&i) = names.get(p) {
                    let f = &mut inodes[i];
                    f.durable = f.cache.clone();
                    f.pending.clear();
                }
            }
            TraceOp::Rename(a, b) => {
                if let Some(i) = names.remove(a) {
                    names.insert(b.clone(), i);
                }
                pending_ns.push(NsOp::Rename(a.clone(), b.clone()));
            }
            TraceOp::Remove(p) => {
                names.remove(p);
                pending_ns.push(NsOp::Remove(p.clone()));
            }
            TraceOp::SyncDir(d) => {
                // Pending operations in this directory become durable, in order.
                let (now, later): (Vec<NsOp>, Vec<NsOp>) = pending_ns
                    .drain(..)
                    .partition(|o| o.dir() == Some(d.as_path()));
                for o in &now {
                    o.apply(&mut durable);
                }
                pending_ns = later;
            }
        }
    }
    // The crash: a random prefix of the pending namespace operations survives.
    let keep = dice.below(pending_ns.len() as u64 + 1) as usize;
    for o in &pending_ns[..keep] {
        o.apply(&mut durable);
    }
    std::fs::create_dir_all(out)?;
    for (name, &i) in &durable {
        let f = &inodes[i];
        let mut bytes = f.durable.clone();
        for (off, data, len) in &f.pending {
            if dice.below(2) == 0 {
                continue; // this write never reached the disk
            }
            match data {
                None => bytes.resize(*len as usize, 0),
                Some(d) => {
                    let sector = if dice.below(2) == 0 { 512 } else { 4096 };
                    let mut n = d.len();
                    if dice.below(3) == 0 && d.len() > sector {
                        n = ((dice.below((d.len() / sector) as u64) as usize + 1) * sector)
                            .min(d.len());
                    }
                    apply_write(&mut bytes, *off, &d[..n]);
                    if n < d.len() && bytes.len() < *off as usize + d.len() {
                        // The file was extended but its tail never written.
                        let garbage = dice.below(2) == 0;
                        let fill: Vec<u8> = (n..d.len())
                            .map(|j| {
                                if garbage {
                                    (dice.next_u64() >> (j % 8)) as u8
                                } else {
                                    0
                                }
                            })
                            .collect();
                        apply_write(&mut bytes, *off + n as u64, &fill);
                    }
                }
            }
        }
        let rel = name.strip_prefix(from).unwrap_or(name);
        let target = out.join(rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(target, bytes)?;
    }
    Ok(())
}

/// The inode of `p`. A file the trace did not create existed before it: the
/// trace must start on an empty or fully synced directory, so its current bytes
/// are durable.
fn inode_of(
    p: &Path,
    names: &mut BTreeMap<PathBuf, usize>,
    durable: &mut BTreeMap<PathBuf, usize>,
    inodes: &mut Vec<SimFile>,
) -> usize {
    if let Some(&i) = names.get(p) {
        return i;
    }
    let bytes = std::fs::read(p).unwrap_or_default();
    inodes.push(SimFile {
        durable: bytes.clone(),
        cache: bytes,
        pending: Vec::new(),
    });
    let i = inodes.len() - 1;
    names.insert(p.to_path_buf(), i);
    durable.insert(p.to_path_buf(), i);
    i
}

/// A namespace change waiting for its directory's sync.
#[derive(Debug, Clone)]
enum NsOp {
    Create(PathBuf, usize),
    Rename(PathBuf, PathBuf),
    Remove(PathBuf),
}

impl NsOp {
    fn dir(&self) -> Option<&Path> {
        match self {
            NsOp::Create(p, _) | NsOp::Remove(p) | NsOp::Rename(p, _) => p.parent(),
        }
    }

    fn apply(&self, durable: &mut BTreeMap<PathBuf, usize>) {
        match self {
            NsOp::Create(p, i) => {
                durable.insert(p.clone(), *i);
            }
            NsOp::Rename(a, b) => {
                if let Some(i) = durable.remove(a) {
                    durable.insert(b.clone(), i);
                }
            }
            NsOp::Remove(p) => {
                durable.remove(p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memvfs::MemVfs;

    /// `read_at` reads what was written, stops short at the end of the file,
    /// and reads nothing past it: the OS file's own reads and the default
    /// (through `map`, as `MemVfs` uses) alike, also through the wrappers.
    #[test]
    fn read_at_reads_up_to_the_end_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let content: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        let os: Arc<dyn Vfs> = Arc::new(OsVfs);
        let plan = Arc::new(FaultPlan::new(u64::MAX, false));
        let vfss: Vec<Arc<dyn Vfs>> = vec![
            os.clone(),
            Arc::new(MemVfs::new()),
            Arc::new(FaultyVfs::new(os.clone(), plan)),
            Arc::new(RecordingVfs::new(os)),
        ];
        for vfs in vfss {
            vfs.create_dir_all(dir.path()).unwrap();
            let f = vfs.create(&path).unwrap();
            f.write_at(&content, 0).unwrap();
            let f = vfs.open(&path, false).unwrap();
            for (off, len) in [
                (0usize, 32usize),
                (4090, 10),
                (4990, 10),
                (4995, 10),
                (5000, 10),
                (7000, 10),
            ] {
                let mut buf = [0xeeu8; 32];
                let n = f.read_at(&mut buf[..len], off as u64).unwrap();
                let want = content
                    .get(off..)
                    .map_or(&[][..], |c| &c[..c.len().min(len)]);
                assert_eq!(&buf[..n], want, "{vfs:?} at {off}");
                assert!(
                    buf[n..].iter().all(|&b| b == 0xee),
                    "{vfs:?} wrote past {n}"
                );
            }
        }
    }
}
