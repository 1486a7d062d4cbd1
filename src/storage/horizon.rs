//! The compaction horizon: the oldest event time, and the oldest known-at
//! position, that queries may still ask about.
//!
//! Compaction drops versions that no query as of `T >= time`, known at
//! `K >= position`, can see. The horizon is persisted (file `HORIZON`) before
//! any segment is rewritten, so whatever a crash leaves, queries that compaction
//! may have changed are refused rather than answered differently. It only
//! moves forward.
//!
//! ```text
//! offset 0   magic     8 bytes "TLOGHRZN"
//! offset 8   version   u32     1
//! offset 12  reserved  u32     0
//! offset 16  time      i64     µs since the epoch
//! offset 24  position  u64
//! offset 32  crc       u32     CRC-32 of bytes 0..32
//! ```

use std::path::Path;

use super::fsutil;
use super::vfs::Vfs;
use crate::{Error, Result};

/// File name of the horizon in the database directory.
pub const HORIZON_FILE: &str = "HORIZON";
const MAGIC: &[u8; 8] = b"TLOGHRZN";
const VERSION: u32 = 1;
const LEN: usize = 36;

/// The oldest event time and known-at position a query may ask about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Horizon {
    /// Queries as of an earlier event time (µs) are refused.
    pub time: i64,
    /// Queries known at an earlier position are refused (the first position
    /// after the segments compaction examined).
    pub position: u64,
}

impl Horizon {
    /// The horizon that refuses what either `self` or `other` refuses.
    #[must_use]
    pub fn max(self, other: Horizon) -> Horizon {
        Horizon {
            time: self.time.max(other.time),
            position: self.position.max(other.position),
        }
    }

    fn encode(self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[16..24].copy_from_slice(&self.time.to_le_bytes());
        b[24..32].copy_from_slice(&self.position.to_le_bytes());
        let crc = crc32fast::hash(&b[..32]);
        b[32..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and validates the file's bytes.
    pub fn decode(b: &[u8], path: &Path) -> Result<Horizon> {
        if b.len() != LEN {
            return Err(Error::corrupt(
                path,
                0,
                format!("horizon file of {} bytes, expected {LEN}", b.len()),
            ));
        }
        if &b[..8] != MAGIC {
            return Err(Error::corrupt(path, 0, "not a horizon file (bad magic)"));
        }
        let crc = crc32fast::hash(&b[..32]);
        if b[32..] != crc.to_le_bytes() {
            return Err(Error::corrupt(path, 32, "horizon checksum mismatch"));
        }
        let version = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
        if version != VERSION {
            return Err(Error::UnsupportedVersion {
                path: path.to_path_buf(),
                found: version,
                supported: VERSION,
            });
        }
        let mut t = [0u8; 8];
        t.copy_from_slice(&b[16..24]);
        let mut p = [0u8; 8];
        p.copy_from_slice(&b[24..32]);
        Ok(Horizon {
            time: i64::from_le_bytes(t),
            position: u64::from_le_bytes(p),
        })
    }

    /// Reads the horizon of the database in `dir`: `None` if it was never
    /// compacted. A damaged file is an error, never ignored: without it, queries
    /// below the horizon would be answered from a compacted log.
    pub fn load(vfs: &dyn Vfs, dir: &Path) -> Result<Option<Horizon>> {
        let path = dir.join(HORIZON_FILE);
        match vfs.read(&path) {
            Ok(b) => Horizon::decode(&b, &path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Persists the horizon atomically (temp file, fsync, rename, directory fsync).
    pub fn store(self, vfs: &dyn Vfs, dir: &Path) -> Result<()> {
        fsutil::atomic_write(vfs, &dir.join(HORIZON_FILE), &self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_every_flipped_byte() {
        let h = Horizon {
            time: -5,
            position: 77,
        };
        let b = h.encode();
        assert_eq!(Horizon::decode(&b, Path::new("H")).ok(), Some(h));
        for i in 0..LEN {
            let mut c = b;
            c[i] ^= 0x10;
            assert!(Horizon::decode(&c, Path::new("H")).is_err(), "byte {i}");
        }
        assert!(Horizon::decode(&b[..LEN - 1], Path::new("H")).is_err());
    }
}
