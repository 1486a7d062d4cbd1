//! The merged key index: one key index covering every sealed segment below a
//! position, so a lookup probes one hash table instead of one per segment.
//!
//! It has the key index format (`docs/format.md`); its versions carry positions,
//! which name their segment. File `index-<first uncovered position, 20 digits>.kidx`,
//! written atomically by a background thread once enough sealed segments are
//! uncovered. It is derived data: validated on first use, and ignored (lookups go
//! to the per-segment indexes) when missing, damaged or not on a segment boundary.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use super::index::{encode_key_index, KeyIndexFile, StreamKeys, VersionRef};
use super::segment::SealedSegment;
use super::vfs::Vfs;
use super::{fsutil, read_file};
use crate::Result;

/// A key with its versions, owned.
type KeyVersions = (Bytes, Vec<VersionRef>);

/// Merge once this many sealed segments are not covered by the merged index.
pub const MERGE_AFTER: usize = 4;

/// A merged key index covering the sealed segments with base below `cover_end`.
#[derive(Debug)]
pub struct MergedIndex {
    /// First position not covered (the base of the first uncovered segment).
    pub cover_end: u64,
    /// The file.
    pub path: PathBuf,
    index: OnceLock<Option<KeyIndexFile>>,
    vfs: Arc<dyn Vfs>,
}

impl MergedIndex {
    /// The index, validated on first use; `None` if unusable.
    pub fn index(&self) -> Option<&KeyIndexFile> {
        self.index
            .get_or_init(|| {
                match read_file(&*self.vfs, &self.path)
                    .and_then(|b| KeyIndexFile::open(b, &self.path))
                {
                    Ok(k) => Some(k),
                    Err(e) => {
                        log::warn!("ignoring merged index {}: {e}", self.path.display());
                        None
                    }
                }
            })
            .as_ref()
    }

    /// Whether `name` is the file name of a merged index.
    #[must_use]
    pub fn is_file_name(name: &str) -> bool {
        Self::parse_name(name).is_some()
    }

    fn parse_name(name: &str) -> Option<u64> {
        let stem = name.strip_prefix("index-")?.strip_suffix(".kidx")?;
        (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit())).then(|| stem.parse().ok())?
    }

    /// The newest merged index in `dir` whose cover end is the base of a segment.
    #[must_use]
    pub fn find(vfs: &Arc<dyn Vfs>, dir: &Path, bases: &[u64]) -> Option<Arc<MergedIndex>> {
        let mut best: Option<(u64, PathBuf)> = None;
        for p in vfs.list(dir).ok()? {
            if let Some(end) = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(Self::parse_name)
            {
                if bases.contains(&end) && best.as_ref().is_none_or(|(b, _)| end > *b) {
                    best = Some((end, p));
                }
            }
        }
        best.map(|(cover_end, path)| {
            Arc::new(MergedIndex {
                cover_end,
                path,
                index: OnceLock::new(),
                vfs: vfs.clone(),
            })
        })
    }

    /// Merges the key indexes of `sealed` (in position order, all of them below
    /// `cover_end`) into a new file, and returns it ready to use.
    pub fn build(
        vfs: &Arc<dyn Vfs>,
        dir: &Path,
        sealed: &[Arc<SealedSegment>],
        cover_end: u64,
    ) -> Result<Arc<MergedIndex>> {
        let files: Vec<&KeyIndexFile> = sealed.iter().map(|s| s.keys()).collect::<Result<_>>()?;
        let mut names: Vec<String> = files
            .iter()
            .flat_map(|f| f.stream_names().map(str::to_string))
            .collect();
        names.sort();
        names.dedup();
        let mut per_stream: Vec<(&str, Vec<KeyVersions>)> = Vec::new();
        for name in &names {
            let mut cursors: Vec<_> = files.iter().filter_map(|f| f.cursor(name)).collect();
            let mut keys: Vec<KeyVersions> = Vec::new();
            loop {
                let Some(min) = cursors
                    .iter()
                    .filter_map(|c| c.key())
                    .min()
                    .map(Bytes::copy_from_slice)
                else {
                    break;
                };
                let mut vs = Vec::new();
                for c in &mut cursors {
                    if c.key() == Some(&min[..]) {
                        c.take(&mut vs);
                    }
                }
                vs.sort_unstable_by_key(VersionRef::order);
                keys.push((min, vs));
            }
            per_stream.push((name.as_str(), keys));
        }
        let streams: Vec<StreamKeys<'_, &Bytes>> = per_stream
            .iter()
            .map(|(n, keys)| (*n, keys.iter().map(|(k, v)| (k, &v[..])).collect()))
            .collect();
        let path = dir.join(format!("index-{cover_end:020}.kidx"));
        fsutil::atomic_write(&**vfs, &path, &encode_key_index(&streams))?;
        let m = MergedIndex {
            cover_end,
            path,
            index: OnceLock::new(),
            vfs: vfs.clone(),
        };
        let _ = m.index();
        Ok(Arc::new(m))
    }

    /// Removes merged index files other than this one (best effort).
    pub fn remove_others(&self, vfs: &dyn Vfs, dir: &Path) {
        if let Ok(paths) = vfs.list(dir) {
            for p in paths {
                let name = p.file_name().and_then(|n| n.to_str());
                if name.and_then(Self::parse_name).is_some() && p != self.path {
                    let _ = vfs.remove(&p);
                }
            }
        }
    }
}
