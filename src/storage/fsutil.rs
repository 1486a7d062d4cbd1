//! Small file-system helpers over the [`Vfs`] seam: directory sync and atomic
//! file replacement.

use std::path::Path;

use super::vfs::Vfs;
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
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    let f = vfs.create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_at(data, 0).map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    drop(f);
    vfs.rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    if let Some(dir) = path.parent() {
        sync_dir(vfs, dir)?;
    }
    Ok(())
}
