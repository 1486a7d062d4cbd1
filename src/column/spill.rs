//! Temporary files of a column build that outgrows its memory: the spill,
//! every event in position order, and the parts it is dealt into (see
//! [`super::build`]). Events are 20 bytes each; the files live beside the
//! column as `build-<hash of the column's name>.*.tmp`, are removed when
//! the build ends, failed or not, and by the next writable open after a
//! crash. Nothing in them outlives the build, so they carry no checksum:
//! a short read is an error.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::file;
use crate::storage::vfs::{VFile, Vfs};
use crate::{Error, Result};

/// Bytes of a spilled event: key number u32, event time i64, field f64
/// (NaN where not a number), little-endian.
const SPILLED: usize = 20;

/// Bytes of an [`Appender`]'s buffer (the spill's, and each part's).
const APPEND_BUFFER: usize = 64 << 10;

/// An event as a build holds it: key number, event time, field.
pub(super) type Held = (u32, i64, f64);

/// A temporary file of spilled events.
pub(super) struct Spill {
    file: Arc<dyn VFile>,
    pub(super) path: PathBuf,
    len: u64,
}

/// Temporary files of a build, removed when it ends.
pub(super) struct Temps<'a> {
    vfs: &'a dyn Vfs,
    paths: Vec<PathBuf>,
}

impl<'a> Temps<'a> {
    pub(super) fn new(vfs: &'a dyn Vfs) -> Self {
        Temps {
            vfs,
            paths: Vec::new(),
        }
    }

    /// Creates a temporary file beside the column at `path`, named after a
    /// hash of its name (which may be near the longest a file system takes)
    /// and `suffix`.
    pub(super) fn create(
        &mut self,
        path: &Path,
        suffix: &str,
    ) -> Result<(Arc<dyn VFile>, PathBuf)> {
        let name = path.file_name().unwrap_or_default().as_encoded_bytes();
        let p = path.with_file_name(format!("build-{:016x}{suffix}", file::key_hash(name)));
        let f = self.vfs.create(&p).map_err(|e| Error::io(&p, e))?;
        self.paths.push(p.clone());
        Ok((f, p))
    }

    /// Removes a temporary file now (a failure is logged; the next writable
    /// open removes what is left).
    pub(super) fn remove(&mut self, p: &Path) {
        if let Err(e) = crate::storage::fsutil::remove_if_exists(self.vfs, p) {
            log::warn!("could not remove {}: {e}", p.display());
        }
        self.paths.retain(|q| q != p);
    }
}

impl Drop for Temps<'_> {
    fn drop(&mut self) {
        for p in &self.paths {
            if let Err(e) = crate::storage::fsutil::remove_if_exists(self.vfs, p) {
                log::warn!("could not remove {}: {e}", p.display());
            }
        }
    }
}

/// Appends events to a temporary file through a buffer.
pub(super) struct Appender {
    file: Arc<dyn VFile>,
    path: PathBuf,
    buf: Vec<u8>,
    len: u64,
}

impl Appender {
    pub(super) fn new((file, path): (Arc<dyn VFile>, PathBuf)) -> Self {
        Appender {
            file,
            path,
            buf: Vec::with_capacity(APPEND_BUFFER),
            len: 0,
        }
    }

    pub(super) fn push(&mut self, (id, t, x): Held) -> Result<()> {
        if self.buf.len() + SPILLED > APPEND_BUFFER {
            self.flush()?;
        }
        self.buf.extend_from_slice(&id.to_le_bytes());
        self.buf.extend_from_slice(&t.to_le_bytes());
        self.buf.extend_from_slice(&x.to_le_bytes());
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.file
            .write_at(&self.buf, self.len)
            .map_err(|e| Error::io(&self.path, e))?;
        self.len += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    pub(super) fn finish(mut self) -> Result<Spill> {
        self.flush()?;
        Ok(Spill {
            file: self.file,
            path: self.path,
            len: self.len,
        })
    }
}

/// Bytes read from a temporary file at a time.
const READ_BLOCK: usize = 1 << 20;

/// Calls `f` with each event of a temporary file of `len` bytes, in order.
fn each_event(
    file: &dyn VFile,
    path: &Path,
    len: u64,
    f: &mut dyn FnMut(Held) -> Result<()>,
) -> Result<()> {
    let block = READ_BLOCK / SPILLED * SPILLED;
    let mut buf = vec![0u8; block];
    let mut off = 0u64;
    while off < len {
        let want = usize::try_from(len - off).map_or(block, |rest| block.min(rest));
        let got = file
            .read_at(&mut buf[..want], off)
            .map_err(|e| Error::io(path, e))?;
        if got != want || !want.is_multiple_of(SPILLED) {
            return Err(Error::io(
                path,
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("read {got} of {want} bytes at offset {off}"),
                ),
            ));
        }
        for e in buf[..want].chunks_exact(SPILLED) {
            let id = u32::from_le_bytes(e[0..4].try_into().expect("4 bytes"));
            let t = i64::from_le_bytes(e[4..12].try_into().expect("8 bytes"));
            let x = f64::from_le_bytes(e[12..20].try_into().expect("8 bytes"));
            f((id, t, x))?;
        }
        off += want as u64;
    }
    Ok(())
}

/// Deals the spilled events into `count` parts by their keys' storage
/// `rank` (key number to rank) and `part_of_rank`.
pub(super) fn deal(
    path: &Path,
    spill: &Spill,
    rank: &[u32],
    part_of_rank: &[u32],
    count: u32,
    temps: &mut Temps<'_>,
) -> Result<Vec<Spill>> {
    let mut parts = (0..count)
        .map(|p| Ok(Appender::new(temps.create(path, &format!(".part{p}.tmp"))?)))
        .collect::<Result<Vec<_>>>()?;
    each_event(&*spill.file, &spill.path, spill.len, &mut |e| {
        let part = rank
            .get(e.0 as usize)
            .and_then(|&r| part_of_rank.get(r as usize))
            .ok_or_else(|| Error::InvalidInput("column build: unknown key in spill".into()))?;
        parts[*part as usize].push(e)
    })?;
    parts.into_iter().map(Appender::finish).collect()
}

/// Appends the events of a part to `out`.
pub(super) fn read_part(part: &Spill, out: &mut Vec<Held>) -> Result<()> {
    out.reserve((part.len / SPILLED as u64) as usize);
    each_event(&*part.file, &part.path, part.len, &mut |e| {
        out.push(e);
        Ok(())
    })
}
