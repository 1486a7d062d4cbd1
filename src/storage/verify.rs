//! `verify`: checks every checksum, position and index of a database directory
//! without trusting anything, and reports problems with file and offset.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::index::{decode_fidx, KeyIndexFile, VersionRef, KIDX_VERSION};
use super::meta::Settings;
use super::segment::{self, sidecar_paths};
use crate::{Error, Result};

/// One problem found by [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file concerned.
    pub path: PathBuf,
    /// Byte offset of the damage.
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
    /// Whether opening repairs it by itself (a missing or stale index, an
    /// uncommitted tail of the active segment).
    pub repairable: bool,
}

/// What [`verify`] checked and found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Segment files checked.
    pub segments: usize,
    /// Frames checked.
    pub frames: u64,
    /// Records checked.
    pub records: u64,
    /// Everything wrong, in file order.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// Whether any problem needs attention (not repaired by opening).
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

fn read(path: &Path) -> std::io::Result<Bytes> {
    std::fs::read(path).map(Bytes::from)
}

/// Verifies the database at `dir`. Needs no lock: it reads files as they are.
pub fn verify(dir: &Path) -> Result<VerifyReport> {
    let os = super::vfs::OsVfs;
    Settings::load(&os, dir)?;
    let (segs, stale) = segment::list_all(&os, dir)?;
    let mut report = VerifyReport::default();
    for path in stale {
        report.problems.push(Problem {
            path,
            offset: 0,
            reason: "superseded by a compacted segment (an interrupted compaction); removed on next open".into(),
            repairable: true,
        });
    }
    if let Err(e) = super::horizon::Horizon::load(&os, dir) {
        report.problems.push(Problem {
            path: dir.join(super::horizon::HORIZON_FILE),
            offset: match &e {
                Error::Corruption { offset, .. } => *offset,
                _ => 0,
            },
            reason: e.to_string(),
            repairable: false,
        });
    }
    let mut expected_base = 0u64;
    let n = segs.len();
    for (i, (base, path)) in segs.into_iter().enumerate() {
        let last = i + 1 == n;
        report.segments += 1;
        let mut problem = |offset: u64, reason: String, repairable: bool| {
            report.problems.push(Problem {
                path: path.clone(),
                offset,
                reason,
                repairable,
            });
        };
        if base != expected_base {
            problem(
                0,
                format!("segment starts at position {base}, expected {expected_base}"),
                false,
            );
        }
        let bytes = match read(&path) {
            Ok(b) => b,
            Err(e) => {
                problem(0, format!("unreadable: {e}"), false);
                continue;
            }
        };
        if last && bytes.len() < segment::SEGMENT_HEADER_LEN {
            // A crash while creating it: open writes its header (and, if the
            // segment before ends in a data frame, removes it with that
            // transaction). It holds no frame.
            problem(
                0,
                format!(
                    "{} bytes, shorter than a segment header: created when the writer stopped; repaired on next open",
                    bytes.len()
                ),
                true,
            );
            continue;
        }
        let scanned = if last {
            segment::scan(&bytes, base, &path)
        } else {
            segment::scan_sealed(&bytes, base, &path)
        };
        let scan = match scanned {
            Ok(s) => s,
            Err(Error::Corruption { offset, reason, .. }) => {
                problem(offset, reason, false);
                continue;
            }
            Err(e) => {
                problem(0, e.to_string(), false);
                continue;
            }
        };
        let continues = segment::check_header(&bytes, &path).is_ok_and(|h| h.continues);
        if last && continues && scan.index.frames.is_empty() {
            problem(
                0,
                "continues a transaction that never committed: it and the transaction's \
                 frames in earlier segments are removed on next open"
                    .into(),
                true,
            );
        } else if let Some((off, why)) = &scan.stopped {
            let tail = bytes.len() as u64 - scan.committed_end;
            if last {
                problem(
                    *off,
                    format!("{why}: {tail} bytes of torn or uncommitted tail (cut on next open)"),
                    true,
                );
            } else {
                problem(*off, format!("sealed segment damaged: {why}"), false);
            }
        }
        report.frames += scan.index.frames.len() as u64;
        report.records += scan
            .index
            .frames
            .iter()
            .map(|f| u64::from(f.count))
            .sum::<u64>();
        expected_base = scan.end_pos;
        if last {
            continue;
        }
        let (fidx, kidx) = sidecar_paths(&path);
        let (want_f, want_k) = (scan.index.encode_fidx(), scan.index.encode_kidx());
        for (side, want, is_fidx) in [(&fidx, &want_f, true), (&kidx, &want_k, false)] {
            let mut side_problem = |offset: u64, reason: String| {
                report.problems.push(Problem {
                    path: side.clone(),
                    offset,
                    reason,
                    repairable: true,
                });
            };
            match read(side) {
                Err(e) => side_problem(
                    0,
                    format!("index unreadable ({e}); it is rebuilt on next use"),
                ),
                Ok(got) => {
                    // A key index of an earlier format (versions 1 and 2)
                    // holds the same keys and versions in other bytes.
                    let mut same = None;
                    let decoded = if is_fidx {
                        decode_fidx(&got, side).map(|_| ())
                    } else {
                        KeyIndexFile::open(got.clone(), side).and_then(|f| {
                            if got.get(8..12) != Some(&KIDX_VERSION.to_le_bytes()[..]) {
                                let want = KeyIndexFile::open(Bytes::from(want.clone()), side)?;
                                same = Some(same_keys(&f, &want)?);
                            }
                            Ok(())
                        })
                    };
                    match decoded {
                        Ok(()) if same == Some(true) => {}
                        Ok(()) if same == Some(false) => {
                            side_problem(0, "index does not match its segment".into());
                        }
                        Err(Error::Corruption { offset, reason, .. }) => {
                            side_problem(offset, reason)
                        }
                        Err(e) => side_problem(0, e.to_string()),
                        Ok(()) if got[..] != want[..] => {
                            let at = got
                                .iter()
                                .zip(want.iter())
                                .position(|(a, b)| a != b)
                                .unwrap_or(got.len().min(want.len()));
                            side_problem(at as u64, "index does not match its segment".into());
                        }
                        Ok(()) => {}
                    }
                }
            }
        }
    }
    // Derived files: queries ignore a bad one (lookups fall back to the
    // per-segment indexes, tables to the log), so their problems are repairable.
    let mut derived: Vec<PathBuf> = Vec::new();
    for d in [
        dir.to_path_buf(),
        dir.join(crate::checkpoint::CHECKPOINT_DIR),
        dir.join(crate::column::COLUMN_DIR),
    ] {
        if let Ok(rd) = std::fs::read_dir(&d) {
            derived.extend(rd.flatten().map(|e| e.path()).filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                (name.starts_with("index-") && name.ends_with(".kidx"))
                    || name.ends_with(".ckpt")
                    || name.ends_with(".col")
            }));
        }
    }
    derived.sort();
    for path in derived {
        let checked = read(&path).map_err(|e| Error::io(&path, e)).and_then(|b| {
            if path.extension().is_some_and(|x| x == "ckpt") {
                let info = crate::checkpoint::file::parse(&b, &path)?;
                if info.known_end > expected_base {
                    return Err(Error::corrupt(
                        &path,
                        0,
                        format!("checkpoint reflects positions up to {} but the log ends at {expected_base}", info.known_end),
                    ));
                }
                Ok(())
            } else if path.extension().is_some_and(|x| x == "col") {
                let col = crate::column::Column::parse(b, &path)?;
                col.check_all()?;
                if col.info().known_end > expected_base {
                    return Err(Error::corrupt(
                        &path,
                        16,
                        format!(
                            "column holds positions up to {} but the log ends at {expected_base}",
                            col.info().known_end
                        ),
                    ));
                }
                Ok(())
            } else {
                KeyIndexFile::open(b, &path).map(|_| ())
            }
        });
        let problem = match checked {
            Ok(()) => None,
            Err(Error::Corruption { offset, reason, .. }) => Some((offset, reason)),
            Err(e) => Some((0, e.to_string())),
        };
        if let Some((offset, reason)) = problem {
            report.problems.push(Problem {
                path,
                offset,
                reason,
                repairable: true,
            });
        }
    }
    Ok(report)
}

/// Whether two key index files hold the same streams, keys and versions.
fn same_keys(a: &KeyIndexFile, b: &KeyIndexFile) -> Result<bool> {
    if !a.stream_names().eq(b.stream_names()) {
        return Ok(false);
    }
    let (mut va, mut vb): (Vec<VersionRef>, Vec<VersionRef>) = (Vec::new(), Vec::new());
    for name in a.stream_names() {
        let (Some(mut ca), Some(mut cb)) = (a.cursor(name)?, b.cursor(name)?) else {
            return Ok(false);
        };
        loop {
            if ca.key() != cb.key() {
                return Ok(false);
            }
            if ca.key().is_none() {
                break;
            }
            va.clear();
            vb.clear();
            ca.take(&mut va);
            cb.take(&mut vb);
            if va != vb {
                return Ok(false);
            }
        }
    }
    Ok(true)
}
