//! An in-memory file system behind the [`Vfs`] seam: a whole database with no
//! disk, for fast tests and fuzzing. Clones share the same files, so dropping a
//! database and opening it again on a clone is a reopen.
//!
//! It is a file system that never crashes: syncs do nothing and every write is
//! kept. Crash states are built from a [`RecordingVfs`](super::vfs::RecordingVfs)
//! trace instead ([`crash_image`](super::vfs::crash_image)); failures come from
//! wrapping it in a [`FaultyVfs`](super::vfs::FaultyVfs).
//!
//! Reads copy: [`VFile::map`] returns a copy of the bytes asked for, so it
//! suits test-sized databases, not large ones.
//!
//! ```
//! use std::sync::Arc;
//! use tablelog::storage::memvfs::MemVfs;
//! use tablelog::{Batch, Db};
//! let fs = MemVfs::new();
//! let db = Db::builder("/db").vfs(Arc::new(fs.clone())).open()?;
//! let mut b = Batch::new();
//! b.put_at("s", "k", "v", 1)?;
//! db.writer().commit(b)?;
//! drop(db);
//! let db = Db::builder("/db").vfs(Arc::new(fs)).open()?; // reopened from memory
//! assert_eq!(db.snapshot()?.end_position(), 1);
//! assert!(!std::path::Path::new("/db").exists());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use bytes::Bytes;

use super::vfs::{VFile, Vfs};

/// The in-memory file system (see the [module docs](self)).
#[derive(Debug, Clone, Default)]
pub struct MemVfs {
    inner: Arc<Mutex<Tree>>,
}

#[derive(Debug, Default)]
struct Tree {
    files: BTreeMap<PathBuf, Arc<MemFile>>,
    dirs: BTreeSet<PathBuf>,
    locks: BTreeSet<PathBuf>,
}

#[derive(Debug, Default)]
struct MemFile {
    data: RwLock<Vec<u8>>,
}

impl MemVfs {
    /// An empty file system (only `/` exists).
    #[must_use]
    pub fn new() -> MemVfs {
        let fs = MemVfs::default();
        fs.tree().dirs.insert(PathBuf::from("/"));
        fs
    }

    fn tree(&self) -> MutexGuard<'_, Tree> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Paths of every file, sorted (for tests).
    #[must_use]
    pub fn files(&self) -> Vec<PathBuf> {
        self.tree().files.keys().cloned().collect()
    }
}

fn not_found(p: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file or directory", p.display()),
    )
}

impl Tree {
    fn check_parent(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(d) if !d.as_os_str().is_empty() && !self.dirs.contains(d) => Err(not_found(d)),
            _ => Ok(()),
        }
    }
}

impl Vfs for MemVfs {
    fn create(&self, path: &Path) -> io::Result<Arc<dyn VFile>> {
        let mut t = self.tree();
        t.check_parent(path)?;
        let f = Arc::new(MemFile::default());
        t.files.insert(path.to_path_buf(), f.clone());
        Ok(Arc::new(Handle(f)))
    }

    fn open(&self, path: &Path, _write: bool) -> io::Result<Arc<dyn VFile>> {
        let t = self.tree();
        let f = t.files.get(path).ok_or_else(|| not_found(path))?;
        Ok(Arc::new(Handle(f.clone())))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut t = self.tree();
        t.check_parent(to)?;
        let f = t.files.remove(from).ok_or_else(|| not_found(from))?;
        t.files.insert(to.to_path_buf(), f);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.tree()
            .files
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.tree().dirs.contains(dir) {
            Ok(())
        } else {
            Err(not_found(dir))
        }
    }

    fn read(&self, path: &Path) -> io::Result<Bytes> {
        let f = self
            .tree()
            .files
            .get(path)
            .cloned()
            .ok_or_else(|| not_found(path))?;
        let data = f
            .data
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(Bytes::copy_from_slice(&data))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let t = self.tree();
        if !t.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        let files = t.files.keys().filter(|p| p.parent() == Some(dir));
        let dirs = t.dirs.iter().filter(|p| p.parent() == Some(dir));
        Ok(files.chain(dirs).cloned().collect())
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut t = self.tree();
        for d in dir.ancestors().filter(|d| !d.as_os_str().is_empty()) {
            if t.files.contains_key(d) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} is a file", d.display()),
                ));
            }
            t.dirs.insert(d.to_path_buf());
        }
        Ok(())
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn Any + Send + Sync>> {
        let mut t = self.tree();
        t.check_parent(path)?;
        if !t.locks.insert(path.to_path_buf()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        t.files.entry(path.to_path_buf()).or_default();
        Ok(Box::new(LockGuard {
            fs: self.clone(),
            path: path.to_path_buf(),
        }))
    }
}

/// Releases an in-memory lock when dropped.
#[derive(Debug)]
struct LockGuard {
    fs: MemVfs,
    path: PathBuf,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.fs.tree().locks.remove(&self.path);
    }
}

/// An open in-memory file (it stays readable after its name is removed).
#[derive(Debug)]
struct Handle(Arc<MemFile>);

impl Handle {
    fn data(&self) -> std::sync::RwLockWriteGuard<'_, Vec<u8>> {
        self.0
            .data
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl VFile for Handle {
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        let mut d = self.data();
        let off = usize::try_from(off).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let end = off + buf.len();
        if d.len() < end {
            d.resize(end, 0);
        }
        d[off..end].copy_from_slice(buf);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        self.data().resize(len, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }

    fn sync_all(&self) -> io::Result<()> {
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.data().len() as u64)
    }

    fn map(&self, len: usize) -> io::Result<Bytes> {
        let d = self.data();
        d.get(..len)
            .map(Bytes::copy_from_slice)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "map beyond the end"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_rename_remove_list_and_lock() {
        let fs = MemVfs::new();
        let dir = Path::new("/d");
        assert!(fs.create(&dir.join("a")).is_err(), "no parent yet");
        fs.create_dir_all(dir).unwrap();
        let f = fs.create(&dir.join("a")).unwrap();
        f.write_at(b"hello", 3).unwrap();
        assert_eq!(&fs.read(&dir.join("a")).unwrap()[..], b"\0\0\0hello");
        fs.rename(&dir.join("a"), &dir.join("b")).unwrap();
        assert_eq!(fs.list(dir).unwrap(), vec![dir.join("b")]);
        assert_eq!(&f.map(4).unwrap()[..], b"\0\0\0h");
        fs.remove(&dir.join("b")).unwrap();
        assert!(fs.read(&dir.join("b")).is_err());
        assert_eq!(f.len().unwrap(), 8, "an open handle outlives its name");
        let g = fs.lock(&dir.join("LOCK")).unwrap();
        assert_eq!(
            fs.lock(&dir.join("LOCK")).err().map(|e| e.kind()),
            Some(io::ErrorKind::WouldBlock)
        );
        drop(g);
        assert!(fs.lock(&dir.join("LOCK")).is_ok());
    }
}
