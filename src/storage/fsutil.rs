//! Small file-system helpers over the [`Vfs`] seam: directory sync, atomic
//! file replacement (whole, or streamed), and a buffered sequential writer
//! that checksums what it writes.

use std::path::Path;

use super::vfs::{VFile, Vfs};
use crate::{Error, Result};

/// Fsyncs a directory so that creations and renames in it are durable.
pub fn sync_dir(vfs: &dyn Vfs, dir: &Path) -> Result<()> {
    vfs.sync_dir(dir).map_err(|e| Error::io(dir, e))
}

/// Removes `path`; one that is already gone is not an error.
pub fn remove_if_exists(vfs: &dyn Vfs, path: &Path) -> Result<()> {
    match vfs.remove(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Replaces `path` atomically with `data`: temp file, fsync, rename, directory fsync.
pub fn atomic_write(vfs: &dyn Vfs, path: &Path, data: &[u8]) -> Result<()> {
    atomic_write_with(vfs, path, |f, tmp| {
        f.write_at(data, 0).map_err(|e| Error::io(tmp, e))
    })
}

/// Replaces `path` atomically with what `fill` writes into a temporary file
/// (given the file and its path): fsync, rename, directory fsync. Files too
/// large to build in memory are streamed this way. On failure the temporary
/// file is removed (best effort; open removes leftovers too).
pub fn atomic_write_with(
    vfs: &dyn Vfs,
    path: &Path,
    fill: impl FnOnce(&dyn VFile, &Path) -> Result<()>,
) -> Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    let written = (|| {
        let f = vfs.create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        fill(&*f, &tmp)?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        drop(f);
        vfs.rename(&tmp, path).map_err(|e| Error::io(path, e))
    })();
    if let Err(e) = written {
        let _ = vfs.remove(&tmp);
        return Err(e);
    }
    if let Some(dir) = path.parent() {
        sync_dir(vfs, dir)?;
    }
    Ok(())
}

/// Bytes a [`SeqWriter`] buffers before writing them out.
const SEQ_BUFFER: usize = 1 << 20;

/// Writes a file sequentially from an offset through a 1 MiB buffer, keeping
/// the CRC-32 of everything written: for files (or sections of them) streamed
/// to disk whose checksum is known only at the end.
pub struct SeqWriter<'a> {
    file: &'a dyn VFile,
    off: u64,
    buf: Vec<u8>,
    crc: crc32fast::Hasher,
}

impl<'a> SeqWriter<'a> {
    /// A writer starting at byte `off` of `file`.
    #[must_use]
    pub fn new(file: &'a dyn VFile, off: u64) -> Self {
        SeqWriter {
            file,
            off,
            buf: Vec::with_capacity(SEQ_BUFFER),
            crc: crc32fast::Hasher::new(),
        }
    }

    /// Writes what is buffered; returns the CRC of all that was written and
    /// the offset just past it.
    pub fn finish(mut self) -> std::io::Result<(crc32fast::Hasher, u64)> {
        self.write_out()?;
        Ok((self.crc, self.off))
    }

    fn write_out(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            // Hashed a buffer at a time: the many small writes of a key
            // index (16- and 32-byte rows) each hashed alone ran the CRC's
            // byte-at-a-time path.
            self.crc.update(&self.buf);
            self.file.write_at(&self.buf, self.off)?;
            self.off += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }
}

impl std::io::Write for SeqWriter<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= SEQ_BUFFER {
            self.write_out()?;
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.write_out()
    }
}
