//! Replay: run a stateful function over a stream's events between two event
//! times, in event-time order, optionally as known at a position — how a new
//! feature definition is backfilled over history and a model backtested on what
//! production saw. With a progress file, the state is saved every N events and an
//! interrupted replay resumes where it stopped, ending in the same state.
//!
//! ```
//! use tablelog::replay::{Replayer, ReplaySpec};
//! use tablelog::{Batch, Db, Record};
//!
//! #[derive(Default)]
//! struct Count(u64);
//! impl Replayer for Count {
//!     fn apply(&mut self, _r: &Record) -> tablelog::Result<()> { self.0 += 1; Ok(()) }
//!     fn save(&self) -> Vec<u8> { self.0.to_le_bytes().to_vec() }
//!     fn load(&mut self, s: &[u8]) -> tablelog::Result<()> {
//!         self.0 = u64::from_le_bytes(s.try_into().map_err(|_| tablelog::Error::InvalidInput("state".into()))?);
//!         Ok(())
//!     }
//! }
//! # let dir = tempfile::tempdir()?;
//! let db = Db::open(dir.path())?;
//! let mut b = Batch::new();
//! for t in [30, 10, 20] { b.put_at("clicks", "u1", "{}", t)?; }
//! db.writer().commit(b)?;
//! let mut f = Count::default();
//! let done = db.snapshot()?.replay(&ReplaySpec::new("clicks", 0, 25), &mut f)?;
//! assert_eq!((f.0, done.applied), (2, 2)); // the events at 10 and 20, in that order
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::PathBuf;

use crate::db::Snapshot;
use crate::query::asof::KnownAt;
use crate::storage::fsutil;
use crate::storage::record::Record;
use crate::{Error, Result};

/// A user's stateful function for [`Snapshot::replay`].
pub trait Replayer {
    /// Applies one event. Events come in `(event_time, position)` order.
    fn apply(&mut self, record: &Record) -> Result<()>;
    /// Serialises the state (for resumable replays).
    fn save(&self) -> Vec<u8>;
    /// Restores a state produced by [`Replayer::save`].
    fn load(&mut self, state: &[u8]) -> Result<()>;
}

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplaySpec {
    /// The stream.
    pub stream: String,
    /// Events with `from <= event_time`…
    pub from: i64,
    /// …and `event_time <= to`.
    pub to: i64,
    /// Which writes count (default: latest).
    pub known_at: KnownAt,
    /// Where to save progress (state and last event applied), for resuming.
    pub progress_file: Option<PathBuf>,
    /// Save progress every this many events (default 100,000).
    pub every: u64,
    /// Test hook: stop with `Error::InvalidInput("interrupted")` after this many
    /// events (as if the process were killed), to test resumption.
    #[doc(hidden)]
    pub stop_after: Option<u64>,
}

impl ReplaySpec {
    /// Replays `stream` over `[from, to]`, as known now, without a progress file.
    #[must_use]
    pub fn new(stream: &str, from: i64, to: i64) -> ReplaySpec {
        ReplaySpec {
            stream: stream.to_string(),
            from,
            to,
            known_at: KnownAt::Latest,
            progress_file: None,
            every: 100_000,
            stop_after: None,
        }
    }
}

/// What a replay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayReport {
    /// Events applied in this call.
    pub applied: u64,
    /// Events skipped because a previous run had applied them.
    pub resumed_from: u64,
}

const MAGIC: &[u8; 8] = b"TLOGRPLY";

fn header(spec: &ReplaySpec, end: u64) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&1u32.to_le_bytes());
    h.extend_from_slice(&(spec.stream.len() as u32).to_le_bytes());
    h.extend_from_slice(spec.stream.as_bytes());
    h.extend_from_slice(&spec.from.to_le_bytes());
    h.extend_from_slice(&spec.to.to_le_bytes());
    h.extend_from_slice(&end.to_le_bytes());
    h
}

/// Progress file: header (spec and known end) | u64 events applied | state | crc.
fn save_progress(path: &std::path::Path, head: &[u8], done: u64, state: &[u8]) -> Result<()> {
    let mut out = head.to_vec();
    out.extend_from_slice(&done.to_le_bytes());
    out.extend_from_slice(state);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    fsutil::atomic_write(&crate::storage::vfs::OsVfs, path, &out)
}

fn load_progress(path: &std::path::Path, head: &[u8]) -> Option<(u64, Vec<u8>)> {
    let b = std::fs::read(path).ok()?;
    let body = b.len().checked_sub(4)?;
    if crc32fast::hash(&b[..body]).to_le_bytes() != b[body..] || !b.starts_with(head) {
        return None;
    }
    let done = u64::from_le_bytes(b.get(head.len()..head.len() + 8)?.try_into().ok()?);
    Some((done, b[head.len() + 8..body].to_vec()))
}

impl Snapshot {
    /// Runs `f` over the events of `spec.stream` with `from <= event_time <= to`
    /// known at `spec.known_at`, in `(event_time, position)` order. Uses the
    /// event-time index to skip frames outside the range. With a progress file,
    /// saves `f`'s state every `spec.every` events and, if a file from an
    /// interrupted run of the same replay exists, loads it and continues after the
    /// last event it reflects; the file is removed when the replay completes.
    ///
    /// The events in range are sorted in memory: about 100 bytes per event (keys
    /// and values stay zero-copy slices of the mapped segments when uncompressed).
    pub fn replay(&self, spec: &ReplaySpec, f: &mut dyn Replayer) -> Result<ReplayReport> {
        let end = self.known_end(spec.known_at)?;
        // Every event at or after `from` must be there: only those after the
        // horizon are.
        self.check_after(i128::from(spec.from) - 1)?;
        self.check_stream(&spec.stream)?;
        let mut order: Vec<Record> = Vec::new();
        for r in self.view.scan_time(&spec.stream, spec.from, spec.to) {
            let r = r?;
            if r.position < end {
                order.push(r);
            }
        }
        order.sort_unstable_by_key(|r| (r.event_time, r.position));
        let head = header(spec, end);
        let mut start = 0u64;
        if let Some(path) = &spec.progress_file {
            if let Some((done, state)) = load_progress(path, &head) {
                f.load(&state)?;
                start = done.min(order.len() as u64);
            }
        }
        let mut applied = 0u64;
        for (i, rec) in order.iter().enumerate().skip(start as usize) {
            f.apply(rec)?;
            applied += 1;
            let done = i as u64 + 1;
            if let Some(path) = &spec.progress_file {
                if done.is_multiple_of(spec.every.max(1)) {
                    save_progress(path, &head, done, &f.save())?;
                }
            }
            if spec.stop_after == Some(applied) {
                return Err(Error::InvalidInput("interrupted".into()));
            }
        }
        if let Some(path) = &spec.progress_file {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(path, e)),
            }
        }
        Ok(ReplayReport {
            applied,
            resumed_from: start,
        })
    }
}
