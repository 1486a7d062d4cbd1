//! Merged key indexes: key indexes covering runs of sealed segments, so a
//! lookup probes a few hash tables instead of one per segment.
//!
//! They have the key index format (`docs/format.md`); versions carry positions,
//! which name their segment. Files `index-<first covered position>-<first
//! position not covered>.kidx` (20 digits each; `index-<end>.kidx` from older
//! builds covers from 0), written atomically by a background thread once
//! [`MERGE_AFTER`] sealed segments are uncovered.
//!
//! They form size tiers that tile the sealed segments from the first one: a new
//! tier over the uncovered segments absorbs the newest tiers while it is at
//! least half their size, like a binary counter. Each segment's index is
//! therefore rewritten O(log n) times over the life of the log, and a lookup
//! probes O(log n) tiers, instead of one index rebuilt whole every few rolls.
//!
//! Derived data: validated as it is read (a lookup checks the 4 KiB chunks it
//! reads, a walk the whole file first), and ignored (lookups go to the
//! per-segment indexes from that tier on) when missing, found damaged or not
//! on segment boundaries.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use super::index::KeyIndexFile;
use super::vfs::Vfs;
use crate::Result;

/// Merge once this many sealed segments are not covered by the merged index.
pub const MERGE_AFTER: usize = 4;

/// A merged key index covering the sealed segments with bases in
/// `[cover_start, cover_end)`.
#[derive(Debug)]
pub struct MergedIndex {
    /// First position covered (the base of its first segment).
    pub cover_start: u64,
    /// First position not covered (the base of the first segment after it).
    pub cover_end: u64,
    /// Number of sealed segments it covers (its size tier).
    pub segments: usize,
    /// The file.
    pub path: PathBuf,
    index: OnceLock<Option<KeyIndexFile>>,
    vfs: Arc<dyn Vfs>,
}

impl MergedIndex {
    /// The index, its header validated on first use and the rest as it is
    /// read ([`KeyIndexFile::open_lazy`]); `None` if unusable: it failed to
    /// open, or a read found it damaged.
    pub fn index(&self) -> Option<&KeyIndexFile> {
        self.index
            .get_or_init(|| match KeyIndexFile::load_lazy(&*self.vfs, &self.path) {
                Ok(k) => Some(k),
                Err(e) => {
                    log::warn!("ignoring merged index {}: {e}", self.path.display());
                    None
                }
            })
            .as_ref()
            .filter(|k| !k.damaged())
    }

    /// Gives the index's mapped pages back to the page cache, if it is loaded.
    pub fn release_pages(&self) -> usize {
        match self.index.get() {
            Some(Some(k)) => k.release_pages(),
            _ => 0,
        }
    }

    /// Whether `name` is the file name of a merged index.
    #[must_use]
    pub fn is_file_name(name: &str) -> bool {
        Self::parse_name(name).is_some()
    }

    fn parse_name(name: &str) -> Option<(u64, u64)> {
        let stem = name.strip_prefix("index-")?.strip_suffix(".kidx")?;
        let num = |s: &str| -> Option<u64> {
            (s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
        };
        match stem.split_once('-') {
            None => Some((0, num(stem)?)),
            Some((a, b)) => Some((num(a)?, num(b)?)),
        }
    }

    /// The chain of merged indexes in `dir` that tiles the segments with these
    /// bases (sealed bases, then the active one) from the first: at each step
    /// the one starting there that reaches furthest, on a segment boundary.
    #[must_use]
    pub fn find(vfs: &Arc<dyn Vfs>, dir: &Path, bases: &[u64]) -> Vec<Arc<MergedIndex>> {
        let mut files: Vec<(u64, u64, PathBuf)> = vfs
            .list(dir)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| {
                let (a, b) = p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(Self::parse_name)?;
                Some((a, b, p))
            })
            .collect();
        files.sort();
        let mut chain = Vec::new();
        let Some(&first) = bases.first() else {
            return chain;
        };
        let mut at = first;
        loop {
            let next = files
                .iter()
                .filter(|(a, b, _)| *a == at && *b > at && bases.contains(b))
                .max_by_key(|(_, b, _)| *b);
            let Some((a, b, p)) = next else { break };
            let segments = bases.iter().filter(|&&x| x >= *a && x < *b).count();
            chain.push(Arc::new(MergedIndex {
                cover_start: *a,
                cover_end: *b,
                segments,
                path: p.clone(),
                index: OnceLock::new(),
                vfs: vfs.clone(),
            }));
            at = *b;
        }
        chain
    }

    /// Merges key indexes (of segments or of merged indexes, together covering
    /// `[cover_start, cover_end)` and `segments` segments) into a new file, and
    /// returns it ready to use.
    pub fn build(
        vfs: &Arc<dyn Vfs>,
        dir: &Path,
        files: &[&KeyIndexFile],
        cover_start: u64,
        cover_end: u64,
        segments: usize,
    ) -> Result<Arc<MergedIndex>> {
        let path = dir.join(format!("index-{cover_start:020}-{cover_end:020}.kidx"));
        super::kidx_merge::write_merged(&**vfs, &path, files)?;
        let m = MergedIndex {
            cover_start,
            cover_end,
            segments,
            path,
            index: OnceLock::new(),
            vfs: vfs.clone(),
        };
        let _ = m.index();
        Ok(Arc::new(m))
    }

    /// Removes merged index files other than `keep` (best effort).
    pub fn remove_others(vfs: &dyn Vfs, dir: &Path, keep: &[Arc<MergedIndex>]) {
        if let Ok(paths) = vfs.list(dir) {
            for p in paths {
                let name = p.file_name().and_then(|n| n.to_str());
                if name.and_then(Self::parse_name).is_some() && !keep.iter().any(|m| m.path == p) {
                    let _ = vfs.remove(&p);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_both_layouts_parse() {
        assert_eq!(
            MergedIndex::parse_name("index-00000000000000000007.kidx"),
            Some((0, 7))
        );
        assert_eq!(
            MergedIndex::parse_name("index-00000000000000000003-00000000000000000007.kidx"),
            Some((3, 7))
        );
        assert_eq!(MergedIndex::parse_name("index-3-7.kidx"), None);
        assert_eq!(MergedIndex::parse_name("00000000000000000003.kidx"), None);
    }
}
