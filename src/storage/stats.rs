//! `stats`: what a database holds, from its indexes (no record is read).

use std::path::PathBuf;

use super::frame::trusted_header;
use super::view::View;
use crate::Result;

/// One segment's figures.
#[derive(Debug, Clone)]
pub struct SegmentStats {
    /// The file.
    pub path: PathBuf,
    /// First position.
    pub base: u64,
    /// Visible bytes of the file.
    pub bytes: u64,
    /// Frames.
    pub frames: u64,
    /// Records (fewer than its positions once compacted).
    pub records: u64,
    /// Whether sealed.
    pub sealed: bool,
}

/// Per-stream figures.
#[derive(Debug, Clone)]
pub struct StreamStats {
    /// Stream name.
    pub name: String,
    /// Records.
    pub records: u64,
    /// Distinct keys.
    pub keys: u64,
}

/// What a database holds.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Segments, oldest first.
    pub segments: Vec<SegmentStats>,
    /// Streams by name.
    pub streams: Vec<StreamStats>,
    /// Payload bytes before compression.
    pub raw_bytes: u64,
    /// Payload bytes as stored.
    pub stored_bytes: u64,
    /// One past the last position.
    pub end_position: u64,
    /// Smallest and largest event time.
    pub event_time: Option<(i64, i64)>,
}

impl Stats {
    /// Stored / raw payload bytes (1.0 without compression).
    #[must_use]
    pub fn compression_ratio(&self) -> f64 {
        if self.stored_bytes == 0 {
            1.0
        } else {
            self.raw_bytes as f64 / self.stored_bytes as f64
        }
    }
}

/// Gathers [`Stats`] for a view.
pub fn stats(view: &View) -> Result<Stats> {
    let mut st = Stats {
        end_position: view.end_position(),
        ..Stats::default()
    };
    let mut et: Option<(i64, i64)> = None;
    let mut add_frames = |bytes: &[u8], frames: &[super::index::FrameMeta], st: &mut Stats| {
        for f in frames.iter().filter(|f| f.count > 0) {
            et = Some(et.map_or((f.min_et, f.max_et), |(a, b)| {
                (a.min(f.min_et), b.max(f.max_et))
            }));
            if let Some(h) = bytes.get(f.offset as usize..).and_then(trusted_header) {
                st.raw_bytes += u64::from(h.raw_len);
                st.stored_bytes += u64::from(h.stored_len);
            }
        }
    };
    for s in view.sealed_segments() {
        let frames = s.frames()?;
        add_frames(&s.bytes, frames, &mut st);
        st.segments.push(SegmentStats {
            path: s.path.clone(),
            base: s.base,
            bytes: s.bytes.len() as u64,
            frames: frames.len() as u64,
            records: frames.iter().map(|f| u64::from(f.count)).sum(),
            sealed: true,
        });
    }
    let (path, len, frames) = view.active_segment();
    let base = view.state().active.base;
    let bytes = view.state().active.bytes_upto(len)?;
    add_frames(&bytes, frames, &mut st);
    st.segments.push(SegmentStats {
        path: path.to_path_buf(),
        base,
        bytes: len,
        frames: frames.len() as u64,
        records: view.end_position() - base,
        sealed: false,
    });
    st.event_time = et;
    for name in view.streams()? {
        let (records, keys) = view.stream_counts(&name)?;
        st.streams.push(StreamStats {
            name,
            records,
            keys,
        });
    }
    Ok(st)
}
