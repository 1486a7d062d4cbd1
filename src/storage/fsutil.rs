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

/// The headers of the files derived from the log (checkpoints, field
/// columns) among `paths` whose extension is `ext`, read by `peek` (`what`
/// names them in the log). A file that does not parse is logged and
/// ignored (`verify` reports it); one reflecting positions past `log_end`
/// (`known_end` of its header) goes to [`drop_past_log_end`].
pub(crate) fn derived_files<I>(
    vfs: &dyn Vfs,
    paths: Vec<std::path::PathBuf>,
    ext: &str,
    what: &str,
    (log_end, writable): (u64, bool),
    peek: impl Fn(&dyn Vfs, &Path) -> Result<I>,
    known_end: impl Fn(&I) -> u64,
) -> Vec<I> {
    let mut infos = Vec::new();
    for p in paths {
        if p.extension().is_none_or(|x| x != ext) {
            continue;
        }
        match peek(vfs, &p) {
            Ok(i) if known_end(&i) > log_end => {
                drop_past_log_end(vfs, &p, known_end(&i), log_end, writable);
            }
            Ok(i) => infos.push(i),
            Err(e) => log::warn!("ignoring {what} {}: {e}", p.display()),
        }
    }
    infos
}

/// Opening found a file derived from the log (a checkpoint, a field column)
/// that reflects positions up to `known_end`, past the log's end `log_end`:
/// it outlived records a power loss took (written before they were synced),
/// so it is never used. Logs it, and a `writable` handle removes it, syncing
/// its directory, before new records reuse the positions.
fn drop_past_log_end(vfs: &dyn Vfs, path: &Path, known_end: u64, log_end: u64, writable: bool) {
    log::warn!(
        "ignoring {}: it reflects positions up to {known_end}, the log ends at {log_end}",
        path.display()
    );
    if !writable {
        return;
    }
    let removed = remove_if_exists(vfs, path).and_then(|()| match path.parent() {
        Some(dir) => sync_dir(vfs, dir),
        None => Ok(()),
    });
    if let Err(e) = removed {
        log::warn!("could not remove it: {e}");
    }
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

/// The file-offset alignment of a [`SeqWriter`]'s writes after its first,
/// and their size: 2 MiB, a huge page. The page cache gives a buffered write
/// folios as large as the write and its offset's alignment allow; in folios
/// of 2 MiB a file's pages can be mapped 2 MiB at a time, where 1 MiB writes
/// left them to 4 KiB mappings and a TLB miss for nearly every random read
/// of a large key index (`get` ran about 5% slower so).
const SEQ_ALIGN: u64 = 2 << 20;

/// Writes a file sequentially from an offset through a buffer, keeping the
/// CRC-32 of everything written: for files (or sections of them) streamed to
/// disk whose checksum is known only at the end. Writes go out in 2 MiB
/// pieces at 2 MiB-aligned offsets (the first reaches the first such offset
/// at least 1 MiB on), so the page cache can hold them in huge folios; whole
/// pieces of a large write go out straight from the caller's bytes.
pub struct SeqWriter<'a> {
    out: Out<'a>,
    buf: Vec<u8>,
}

/// Where a [`SeqWriter`]'s pieces go, and what has gone.
struct Out<'a> {
    file: &'a dyn VFile,
    off: u64,
    /// Bytes of the next piece ([`Out::piece_at`]).
    piece: usize,
    crc: crc32fast::Hasher,
}

impl Out<'_> {
    /// Bytes of a piece written at `off`: up to the first 2 MiB-aligned
    /// offset at least 1 MiB past it.
    fn piece_at(off: u64) -> usize {
        let next = (off / SEQ_ALIGN + 1) * SEQ_ALIGN;
        let end = if next - off < SEQ_ALIGN / 2 {
            next + SEQ_ALIGN
        } else {
            next
        };
        (end - off) as usize
    }

    /// Writes `b` where the file has got to, then counts it in the CRC (a
    /// failed write counts nothing).
    fn emit(&mut self, b: &[u8]) -> std::io::Result<()> {
        if !b.is_empty() {
            self.file.write_at(b, self.off)?;
            // Hashed a piece at a time: the many small writes of a key
            // index (16- and 32-byte rows) each hashed alone ran the CRC's
            // byte-at-a-time path.
            self.crc.update(b);
            self.off += b.len() as u64;
            self.piece = Self::piece_at(self.off);
        }
        Ok(())
    }
}

impl<'a> SeqWriter<'a> {
    /// A writer starting at byte `off` of `file`.
    #[must_use]
    pub fn new(file: &'a dyn VFile, off: u64) -> Self {
        SeqWriter {
            out: Out {
                file,
                off,
                piece: Out::piece_at(off),
                crc: crc32fast::Hasher::new(),
            },
            buf: Vec::with_capacity(2 * SEQ_ALIGN as usize),
        }
    }

    /// Writes what is buffered; returns the CRC of all that was written and
    /// the offset just past it.
    pub fn finish(mut self) -> std::io::Result<(crc32fast::Hasher, u64)> {
        self.out.emit(&self.buf)?;
        Ok((self.out.crc, self.out.off))
    }
}

impl std::io::Write for SeqWriter<'_> {
    fn write(&mut self, mut b: &[u8]) -> std::io::Result<usize> {
        let n = b.len();
        while self.buf.len() + b.len() >= self.out.piece {
            let (head, rest) = b.split_at(self.out.piece - self.buf.len());
            if self.buf.is_empty() {
                self.out.emit(head)?;
            } else {
                self.buf.extend_from_slice(head);
                self.out.emit(&self.buf)?;
                self.buf.clear();
            }
            b = rest;
        }
        self.buf.extend_from_slice(b);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.emit(&self.buf)?;
        self.buf.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Mutex;

    use bytes::Bytes;

    use super::{SeqWriter, SEQ_ALIGN};
    use crate::storage::vfs::VFile;

    /// A file that keeps what is written and where each write went.
    #[derive(Debug, Default)]
    struct Recording {
        data: Mutex<Vec<u8>>,
        writes: Mutex<Vec<(u64, usize)>>,
    }

    impl VFile for Recording {
        fn write_at(&self, buf: &[u8], off: u64) -> std::io::Result<()> {
            let mut d = self.data.lock().unwrap();
            let end = off as usize + buf.len();
            if d.len() < end {
                d.resize(end, 0);
            }
            d[off as usize..end].copy_from_slice(buf);
            self.writes.lock().unwrap().push((off, buf.len()));
            Ok(())
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.data.lock().unwrap().resize(len as usize, 0);
            Ok(())
        }
        fn sync_data(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn sync_all(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn len(&self) -> std::io::Result<u64> {
            Ok(self.data.lock().unwrap().len() as u64)
        }
        fn map(&self, len: usize) -> std::io::Result<Bytes> {
            Ok(Bytes::copy_from_slice(&self.data.lock().unwrap()[..len]))
        }
    }

    /// Written in pieces of every size from any offset, the bytes land in
    /// place with their CRC, and every write but the first and the last
    /// covers exactly one aligned 2 MiB (the first ends on an aligned offset
    /// at least 1 MiB on).
    #[test]
    fn writes_go_out_in_aligned_huge_pieces() {
        let mut rng = crate::rng::Rng(3);
        for start in [
            0u64,
            1,
            4095,
            SEQ_ALIGN / 2 - 1,
            SEQ_ALIGN / 2 + 1,
            SEQ_ALIGN + 7,
        ] {
            let f = Recording::default();
            let mut w = SeqWriter::new(&f, start);
            let mut want = Vec::new();
            while want.len() < 9 << 20 {
                let n = [1, 16, 32, 1000, 3 << 20][rng.below(5) as usize];
                let piece: Vec<u8> = (0..n).map(|_| rng.below(256) as u8).collect();
                w.write_all(&piece).unwrap();
                want.extend_from_slice(&piece);
            }
            let (crc, end) = w.finish().unwrap();
            assert_eq!(end, start + want.len() as u64);
            assert_eq!(crc.finalize(), crc32fast::hash(&want));
            assert_eq!(&f.data.lock().unwrap()[start as usize..], &want[..]);
            let writes = f.writes.lock().unwrap().clone();
            let (first, rest) = writes.split_first().unwrap();
            assert_eq!(first.0, start);
            assert_eq!(
                (first.0 + first.1 as u64) % SEQ_ALIGN,
                0,
                "first ends aligned"
            );
            assert!(first.1 as u64 >= SEQ_ALIGN / 2, "first at least 1 MiB");
            for &(off, len) in &rest[..rest.len() - 1] {
                assert_eq!(
                    (off % SEQ_ALIGN, len as u64),
                    (0, SEQ_ALIGN),
                    "start {start}"
                );
            }
        }
    }

    /// An empty writer writes nothing; a flush midway, then one write of many
    /// pieces at once, still lands every byte in place with its CRC, the
    /// whole pieces written straight from the caller's slice, aligned.
    #[test]
    fn empty_flushed_and_huge_writes() {
        let f = Recording::default();
        let (crc, end) = SeqWriter::new(&f, 5).finish().unwrap();
        assert_eq!((crc.finalize(), end), (crc32fast::hash(b""), 5));
        assert!(f.writes.lock().unwrap().is_empty());

        let f = Recording::default();
        let mut w = SeqWriter::new(&f, 3);
        w.write_all(b"abc").unwrap();
        w.flush().unwrap();
        let huge: Vec<u8> = (0..(9u32 << 20)).map(|i| (i % 251) as u8).collect();
        w.write_all(&huge).unwrap();
        let (crc, end) = w.finish().unwrap();
        let mut want = b"abc".to_vec();
        want.extend_from_slice(&huge);
        assert_eq!(end, 3 + want.len() as u64);
        assert_eq!(crc.finalize(), crc32fast::hash(&want));
        assert_eq!(&f.data.lock().unwrap()[3..], &want[..]);
        let writes = f.writes.lock().unwrap().clone();
        assert_eq!(writes[0], (3, 3), "the flush");
        assert_eq!((writes[1].0 + writes[1].1 as u64) % SEQ_ALIGN, 0);
        for &(off, len) in &writes[2..writes.len() - 1] {
            assert_eq!((off % SEQ_ALIGN, len as u64), (0, SEQ_ALIGN));
        }
    }
}
