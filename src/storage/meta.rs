//! Database settings stored in the directory (`tablelog.meta`), and the lock file.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use super::fsutil;
use crate::{Error, Result};

/// Name of the settings file; its presence makes a directory a database.
pub const META_FILE: &str = "tablelog.meta";
/// Name of the lock file held by the writer process.
pub const LOCK_FILE: &str = "LOCK";
/// Settings file format version.
pub const META_VERSION: u32 = 1;

/// When a committed batch is on stable storage. See `docs/durability.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Commit returns once the batch is written to the OS page cache; the OS
    /// decides when it reaches the disk. A crash of the process loses nothing
    /// acknowledged; a power loss may lose recent batches (never part of one).
    #[default]
    Buffered,
    /// Commit returns once the batch is fsynced, and the batch becomes visible to
    /// readers only then. Concurrent commits share one fsync (group commit).
    Sync,
    /// Like `Buffered`, plus a background fsync every interval: a power loss
    /// loses at most about one interval of acknowledged batches.
    Periodic(Duration),
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Durability::Buffered => f.write_str("buffered"),
            Durability::Sync => f.write_str("sync"),
            Durability::Periodic(d) => write!(f, "periodic:{}ms", d.as_millis()),
        }
    }
}

impl Durability {
    /// Parses `buffered`, `sync` or `periodic:<millis>ms` (the stored form).
    #[must_use]
    pub fn parse_stored(s: &str) -> Option<Durability> {
        match s {
            "buffered" => Some(Durability::Buffered),
            "sync" => Some(Durability::Sync),
            _ => {
                let ms = s
                    .strip_prefix("periodic:")?
                    .strip_suffix("ms")?
                    .parse()
                    .ok()?;
                Some(Durability::Periodic(Duration::from_millis(ms)))
            }
        }
    }
}

/// Per-batch compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Frames are stored as written (zero-copy reads).
    #[default]
    None,
    /// Frames of at least 4 KiB are zstd-compressed at this level when that shrinks them.
    Zstd(i32),
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::None => f.write_str("none"),
            Compression::Zstd(l) => write!(f, "zstd:{l}"),
        }
    }
}

impl Compression {
    /// Parses `none`, `zstd` (level 3) or `zstd:LEVEL`.
    #[must_use]
    pub fn parse(s: &str) -> Option<Compression> {
        match s {
            "none" => Some(Compression::None),
            "zstd" => Some(Compression::Zstd(3)),
            _ => {
                let l: i32 = s.strip_prefix("zstd:")?.parse().ok()?;
                (1..=22).contains(&l).then_some(Compression::Zstd(l))
            }
        }
    }

    pub(crate) fn level(self) -> Option<i32> {
        match self {
            Compression::None => None,
            Compression::Zstd(l) => Some(l),
        }
    }
}

/// The settings persisted in a database directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Size at which the active segment is sealed.
    pub segment_size: u64,
    /// Frame compression.
    pub compression: Compression,
    /// Default durability of commits.
    pub durability: Durability,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            segment_size: 64 << 20,
            compression: Compression::None,
            durability: Durability::Buffered,
        }
    }
}

impl Settings {
    fn encode(&self) -> String {
        let body = format!(
            "tablelog-meta {META_VERSION}\nsegment_size={}\ncompression={}\ndurability={}\n",
            self.segment_size, self.compression, self.durability
        );
        let crc = crc32fast::hash(body.as_bytes());
        format!("{body}crc32={crc:08x}\n")
    }

    fn decode(text: &str, path: &Path) -> Result<Settings> {
        let bad = |line: usize, why: String| Error::corrupt(path, line as u64, why);
        let Some(at) = text.rfind("crc32=") else {
            return Err(bad(0, "settings file has no checksum line".into()));
        };
        let (body, tail) = text.split_at(at);
        let stored = tail.trim_end().trim_start_matches("crc32=");
        if u32::from_str_radix(stored, 16).ok() != Some(crc32fast::hash(body.as_bytes())) {
            return Err(bad(at, "settings file checksum mismatch".into()));
        }
        let mut lines = body.lines();
        let version = lines
            .next()
            .and_then(|l| l.strip_prefix("tablelog-meta "))
            .and_then(|v| v.parse::<u32>().ok())
            .ok_or_else(|| bad(0, "missing tablelog-meta header".into()))?;
        if version != META_VERSION {
            return Err(Error::UnsupportedVersion {
                path: path.to_path_buf(),
                found: version,
                supported: META_VERSION,
            });
        }
        let mut s = Settings::default();
        for line in lines {
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| bad(0, format!("bad settings line {line:?}")))?;
            match k {
                "segment_size" => {
                    s.segment_size = v
                        .parse()
                        .map_err(|_| bad(0, format!("bad segment_size {v:?}")))?
                }
                "compression" => {
                    s.compression = Compression::parse(v)
                        .ok_or_else(|| bad(0, format!("bad compression {v:?}")))?;
                }
                "durability" => {
                    s.durability = Durability::parse_stored(v)
                        .ok_or_else(|| bad(0, format!("bad durability {v:?}")))?;
                }
                _ => {} // unknown keys from newer minor versions are ignored
            }
        }
        Ok(s)
    }

    /// Reads the settings of the database at `dir`; `NotADatabase` if there are none.
    pub fn load(vfs: &dyn super::vfs::Vfs, dir: &Path) -> Result<Settings> {
        let path = dir.join(META_FILE);
        match vfs.read(&path) {
            Ok(b) => {
                let t = std::str::from_utf8(&b)
                    .map_err(|_| Error::corrupt(&path, 0, "settings are not UTF-8"))?;
                Settings::decode(t, &path)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(Error::NotADatabase(dir.to_path_buf()))
            }
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    /// Writes the settings atomically.
    pub fn store(&self, vfs: &dyn super::vfs::Vfs, dir: &Path) -> Result<()> {
        fsutil::atomic_write(vfs, &dir.join(META_FILE), self.encode().as_bytes())
    }
}

/// How long [`lock`] keeps trying a held lock before it reports
/// [`Error::Locked`]: the attempts wait 1, 2, 4 … 128 ms in between.
pub const LOCK_PATIENCE: Duration = Duration::from_millis(255);

/// Takes the exclusive writer lock of the database directory.
///
/// The lock is an `flock`, owned by the lock file's open file description,
/// and a child process spawned by any thread of the process that took it
/// holds a copy of that description from its `fork` (or `clone`) until its
/// `exec` closes it (the descriptor is close-on-exec). Closing the
/// descriptor alone left the lock held by nobody that writes until then:
/// measured, 11% of immediate re-locks after a drop failed with a thread
/// spawning processes beside. So the guard unlocks explicitly when dropped,
/// which releases every copy; and a held lock is tried again for up to
/// [`LOCK_PATIENCE`] before the error, for a previous writer process that
/// ended without dropping its handle (killed, say) while one of its children
/// was being spawned. A real writer holds it far longer, and is reported.
pub fn lock(vfs: &dyn super::vfs::Vfs, dir: &Path) -> Result<Box<dyn std::any::Any + Send + Sync>> {
    let path = dir.join(LOCK_FILE);
    let mut wait = Duration::from_millis(1);
    let mut waited = Duration::ZERO;
    loop {
        match vfs.lock(&path) {
            Ok(guard) => return Ok(guard),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if waited >= LOCK_PATIENCE {
                    return Err(Error::Locked(dir.to_path_buf()));
                }
                std::thread::sleep(wait);
                waited += wait;
                wait *= 2;
            }
            Err(e) => return Err(Error::io(&path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_and_checksum() {
        let s = Settings {
            segment_size: 4 << 20,
            compression: Compression::Zstd(5),
            durability: Durability::Periodic(Duration::from_millis(250)),
        };
        let t = s.encode();
        assert_eq!(Settings::decode(&t, Path::new("m")).unwrap(), s);
        let bad = t.replace("4194304", "4194305");
        assert!(Settings::decode(&bad, Path::new("m")).is_err());
    }
}
