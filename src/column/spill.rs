//! Temporary files of a column build that outgrows its memory: the spill,
//! every event in position order, and the parts it is dealt into (see
//! [`super::build`]). Events are 20 bytes each; the files live beside the
//! column as `build-<hash of the column's name>.*.tmp`, are removed when
//! the build ends, failed or not, and by the next writable open after a
//! crash. A spill outgrows memory, so its pages may go to disk and come
//! back: the files are written in blocks of [`BLOCK_EVENTS`] events, each
//! followed by its CRC-32, checked when it is read back (a mismatch or a
//! short read is an error, and the build fails).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::file;
use crate::storage::vfs::{VFile, Vfs};
use crate::{Error, Result};

/// Bytes of a spilled event: key number u32, event time i64, field f64
/// (NaN where not a number), little-endian.
const SPILLED: usize = 20;

/// Events in a block of a temporary file, the last one of the file shorter:
/// about 64 KiB, an [`Appender`]'s buffer (the spill's, and each part's).
const BLOCK_EVENTS: usize = 3276;

/// Bytes of a whole block: its events, then their CRC-32.
const BLOCK_BYTES: usize = BLOCK_EVENTS * SPILLED + 4;

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
            buf: Vec::with_capacity(BLOCK_BYTES),
            len: 0,
        }
    }

    pub(super) fn push(&mut self, (id, t, x): Held) -> Result<()> {
        self.buf.extend_from_slice(&id.to_le_bytes());
        self.buf.extend_from_slice(&t.to_le_bytes());
        self.buf.extend_from_slice(&x.to_le_bytes());
        if self.buf.len() == BLOCK_EVENTS * SPILLED {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the buffered events as a block, with their CRC-32.
    fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let crc = crc32fast::hash(&self.buf);
        self.buf.extend_from_slice(&crc.to_le_bytes());
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

/// Calls `f` with each event of a temporary file of `len` bytes, in order,
/// each block's checksum checked first.
fn each_event(
    file: &dyn VFile,
    path: &Path,
    len: u64,
    f: &mut dyn FnMut(Held) -> Result<()>,
) -> Result<()> {
    let mut buf = vec![0u8; BLOCK_BYTES];
    let mut off = 0u64;
    while off < len {
        let want = usize::try_from(len - off).map_or(BLOCK_BYTES, |rest| BLOCK_BYTES.min(rest));
        let got = file
            .read_at(&mut buf[..want], off)
            .map_err(|e| Error::io(path, e))?;
        let events = want.saturating_sub(4);
        if got != want || want < 4 + SPILLED || !events.is_multiple_of(SPILLED) {
            return Err(Error::corrupt(
                path,
                off,
                format!(
                    "temporary block of {want} bytes, read {got}: not whole events and a checksum"
                ),
            ));
        }
        let stored = u32::from_le_bytes(buf[events..want].try_into().expect("4 bytes"));
        if crc32fast::hash(&buf[..events]) != stored {
            return Err(Error::corrupt(
                path,
                off,
                "temporary block checksum mismatch",
            ));
        }
        for e in buf[..events].chunks_exact(SPILLED) {
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

#[cfg(test)]
mod tests {
    use super::{read_part, Appender, Held, Temps, BLOCK_EVENTS};
    use crate::storage::vfs::OsVfs;

    /// Events read back are those written, across whole blocks and a short
    /// last one; any flipped byte or a cut file is an error, never wrong
    /// events.
    #[test]
    fn spilled_events_come_back_checked() {
        let dir = tempfile::tempdir().unwrap();
        let column = dir.path().join("s@70.col");
        let mut temps = Temps::new(&OsVfs);
        for n in [0, 1, BLOCK_EVENTS, 2 * BLOCK_EVENTS + 5] {
            let events: Vec<Held> = (0..n as u32)
                .map(|i| (i, i64::from(i) * -3, f64::from(i) / 7.0))
                .collect();
            let mut a = Appender::new(temps.create(&column, &format!(".t{n}.tmp")).unwrap());
            for &e in &events {
                a.push(e).unwrap();
            }
            let spill = a.finish().unwrap();
            let mut back = Vec::new();
            read_part(&spill, &mut back).unwrap();
            assert_eq!(back.len(), n);
            assert!(back
                .iter()
                .zip(&events)
                .all(|(a, b)| a.0 == b.0 && a.1 == b.1 && a.2.to_bits() == b.2.to_bits()));
            let good = std::fs::read(&spill.path).unwrap();
            for at in (0..good.len())
                .step_by(997)
                .chain([good.len().saturating_sub(1)])
            {
                if good.is_empty() {
                    break;
                }
                let mut bad = good.clone();
                bad[at] ^= 0x20;
                std::fs::write(&spill.path, &bad).unwrap();
                assert!(
                    read_part(&spill, &mut Vec::new()).is_err(),
                    "{n} events, byte {at}"
                );
            }
            if good.len() > 30 {
                std::fs::write(&spill.path, &good[..good.len() - 30]).unwrap();
                assert!(
                    read_part(&spill, &mut Vec::new()).is_err(),
                    "{n} events, cut"
                );
            }
        }
        drop(temps);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
