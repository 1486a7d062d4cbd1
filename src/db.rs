//! The database handle, its builder, write handles, batches and read snapshots.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::checkpoint::{Catalog, CheckpointInfo};
use crate::column::{ColumnInfo, Columns};
use crate::storage::compact::{CompactReport, Retention};
use crate::views::{MaterializedView, ViewDef};

/// Subdirectory holding saved view states.
pub const VIEW_DIR: &str = "views";
use crate::query::access::AccessPath;
use crate::query::merge::{MergeOperator, MergeRegistry};
use crate::storage::frame::FrameBuilder;
use crate::storage::log::{Config, Log, RecoveryReport, Transaction};
use crate::storage::meta::{Compression, Durability, Settings};
use crate::storage::record::{now_micros, validate_stream_name, Clock, Op, SystemClock};
use crate::storage::vfs::{OsVfs, Vfs};
use crate::storage::view::View;
use crate::{Error, Result};

/// Default automatic checkpoint interval, in records per stream.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 1_000_000;
/// Checkpoints kept per stream by default (see [`DbBuilder::checkpoints_kept`]).
pub const DEFAULT_CHECKPOINTS_KEPT: usize = 2;

/// Default largest key: 4 KiB.
pub const DEFAULT_MAX_KEY_SIZE: usize = 4096;
/// Default largest value: 16 MiB.
pub const DEFAULT_MAX_VALUE_SIZE: usize = 16 << 20;
/// Hard key limit of the format.
pub const MAX_KEY_SIZE: usize = u16::MAX as usize;
/// Hard value limit (a record must fit in one frame).
pub const MAX_VALUE_SIZE: usize = 128 << 20;

/// Options for opening a [`Db`]. Every setter documents its default.
#[derive(Debug, Clone)]
#[must_use]
pub struct DbBuilder {
    dir: PathBuf,
    segment_size: Option<u64>,
    compression: Option<Compression>,
    durability: Option<Durability>,
    max_key_size: usize,
    max_value_size: usize,
    read_only: bool,
    create: bool,
    clock: Arc<dyn Clock>,
    vfs: Arc<dyn Vfs>,
    auto_merge: bool,
    background_seal: bool,
    checkpoint_every: u64,
    checkpoints_kept: usize,
    column_build_memory: usize,
    merge: HashMap<String, Arc<dyn MergeOperator>>,
    default_merge: Option<Arc<dyn MergeOperator>>,
}

impl DbBuilder {
    /// Size at which the active segment is sealed and a new one started. Stored in
    /// the database when it is created. Default 64 MiB. A segment rolls at the first
    /// commit boundary past this size, so a [`Batch`] is never split across
    /// segments. A streaming transaction ([`Writer::transaction`]) larger than a
    /// segment goes on in new segments, which readers see only once it commits
    /// (`docs/format.md`).
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = Some(bytes.max(4096));
        self
    }

    /// Per-batch compression. Stored at creation. Default [`Compression::None`].
    pub fn compression(mut self, c: Compression) -> Self {
        self.compression = Some(c);
        self
    }

    /// When commits are durable. Stored at creation. Default [`Durability::Buffered`].
    pub fn durability(mut self, d: Durability) -> Self {
        self.durability = Some(d);
        self
    }

    /// Largest accepted key, up to 65,535. Default 4 KiB.
    pub fn max_key_size(mut self, bytes: usize) -> Self {
        self.max_key_size = bytes.min(MAX_KEY_SIZE);
        self
    }

    /// Largest accepted value, up to 128 MiB. Default 16 MiB.
    pub fn max_value_size(mut self, bytes: usize) -> Self {
        self.max_value_size = bytes.min(MAX_VALUE_SIZE);
        self
    }

    /// Opens without the writer lock, refusing writes (any number of read-only
    /// handles may coexist with one writer process). Default false.
    pub fn read_only(mut self, yes: bool) -> Self {
        self.read_only = yes;
        self
    }

    /// Whether to create the database when the directory holds none. Default true
    /// (false for read-only handles).
    pub fn create_if_missing(mut self, yes: bool) -> Self {
        self.create = yes;
        self
    }

    /// The wall clock used for recorded_at stamps. Default: the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Whether key indexes of sealed segments are merged in a background thread
    /// every few segment rolls (see [`Db::merge_key_indexes`]). Default true.
    pub fn auto_merge(mut self, yes: bool) -> Self {
        self.auto_merge = yes;
        self
    }

    /// Whether the writer's work runs partly on background threads (default
    /// true): an indexer thread indexes each committed batch (and, out of sync
    /// durability, starts its write-back early), a sealing thread encodes and
    /// writes a sealed segment's index sidecars, and in sync durability a
    /// syncer thread fsyncs each batch while it is indexed. With false,
    /// commits index their batches, the commit that rolls a segment writes its
    /// sidecars and committers lead their own fsyncs: a deterministic I/O
    /// order, for fault-injection tests. In the background a
    /// reader that needs the new segment's key index waits for it, and a
    /// failed sidecar write is returned by the next write.
    pub fn background_seal(mut self, yes: bool) -> Self {
        self.background_seal = yes;
        self
    }

    /// Checkpoint a stream automatically after this many records were committed
    /// to it through this handle (0: never). The commit that crosses the threshold
    /// writes the checkpoint (as of the log's largest event time) before it
    /// returns. Default 1,000,000.
    pub fn checkpoint_every(mut self, records: u64) -> Self {
        self.checkpoint_every = records;
        self
    }

    /// How many checkpoints of each stream to keep: after writing one, this
    /// handle removes that stream's older ones beyond the newest `n` (by the
    /// position they are known at). Default [`DEFAULT_CHECKPOINTS_KEPT`] (2);
    /// `usize::MAX` keeps them all. Each checkpoint is a whole table, so
    /// keeping them all grows the directory by a table per checkpoint. A
    /// removed checkpoint changes no answer: `table` as of a time before the
    /// kept ones starts from the log (or an older kept checkpoint) instead.
    pub fn checkpoints_kept(mut self, n: usize) -> Self {
        self.checkpoints_kept = n.max(1);
        self
    }

    /// Memory a column build ([`Db::build_column`]) holds the stream's events
    /// in, 24 bytes each, before it spills them to temporary files beside
    /// the column and sorts them in parts of about this size (at least
    /// 1/64 of the stream, so at most 64 parts; a part also holds the whole
    /// of a key that starts in it; sorting takes half as much again, or as
    /// much again under 16 MiB).
    /// Default [`crate::column::DEFAULT_BUILD_MEMORY`] (256 MiB). A build
    /// also holds each key's bytes and about 70 bytes of bookkeeping a key.
    pub fn column_build_memory(mut self, bytes: usize) -> Self {
        self.column_build_memory = bytes;
        self
    }

    /// The file I/O seam every write goes through. Default [`OsVfs`]; tests use
    /// [`crate::storage::vfs::FaultyVfs`] and [`crate::storage::vfs::RecordingVfs`].
    pub fn vfs(mut self, vfs: Arc<dyn Vfs>) -> Self {
        self.vfs = vfs;
        self
    }

    /// Registers the merge operator that applies `patch` records of `stream`.
    pub fn merge_operator(mut self, stream: &str, op: Arc<dyn MergeOperator>) -> Self {
        self.merge.insert(stream.to_string(), op);
        self
    }

    /// The merge operator for streams without their own. Default none: a patch in
    /// such a stream makes queries fail with [`Error::NoMergeOperator`].
    pub fn default_merge_operator(mut self, op: Arc<dyn MergeOperator>) -> Self {
        self.default_merge = Some(op);
        self
    }

    /// Opens (or creates) the database.
    ///
    /// Unless read-only, takes the directory's writer lock, and fails with
    /// [`Error::Locked`] if another handle or process still holds it after a
    /// quarter of a second of trying (see that error for why it tries again).
    /// Dropping the last handle releases the lock.
    pub fn open(self) -> Result<Db> {
        let dir = self.dir.clone();
        let stored = match Settings::load(&*self.vfs, &dir) {
            Ok(s) => Some(s),
            Err(Error::NotADatabase(_)) => None,
            Err(e) => return Err(e),
        };
        let settings = match stored {
            Some(s) => Settings {
                segment_size: self.segment_size.unwrap_or(s.segment_size),
                compression: self.compression.unwrap_or(s.compression),
                durability: self.durability.unwrap_or(s.durability),
            },
            None => {
                if self.read_only || !self.create {
                    return Err(Error::NotADatabase(dir));
                }
                self.vfs
                    .create_dir_all(&dir)
                    .map_err(|e| Error::io(&dir, e))?;
                let d = Settings::default();
                let s = Settings {
                    segment_size: self.segment_size.unwrap_or(d.segment_size),
                    compression: self.compression.unwrap_or(d.compression),
                    durability: self.durability.unwrap_or(d.durability),
                };
                s.store(&*self.vfs, &dir)?;
                s
            }
        };
        let log = Log::open(
            &dir,
            Config {
                settings,
                max_key_size: self.max_key_size,
                max_value_size: self.max_value_size,
                read_only: self.read_only,
                clock: self.clock,
                vfs: self.vfs,
                auto_merge: self.auto_merge,
                background_seal: self.background_seal,
            },
        )?;
        let log_end = View::new(log.state())?.end_position();
        Ok(Db {
            opened_end: log_end,
            auto_checkpoint: Arc::new(AutoCheckpoint {
                every: self.checkpoint_every,
                counts: std::sync::Mutex::new(HashMap::new()),
            }),
            views: Arc::new(Views::default()),
            columns: Arc::new(Columns::load(
                log.config.vfs.clone(),
                &dir,
                log_end,
                !self.read_only,
                self.column_build_memory,
            )),
            checkpoints: Arc::new(Catalog::load(
                log.config.vfs.clone(),
                &dir,
                self.checkpoints_kept,
                log_end,
                !self.read_only,
            )),
            log,
            merge: Arc::new(MergeRegistry::new(self.merge, self.default_merge)),
        })
    }
}

/// An open database: a directory of segments, written by one process, read by many.
///
/// ```
/// use tablelog::{Batch, Db, GetResult};
/// # let dir = tempfile::tempdir()?;
/// let db = Db::builder(dir.path()).open()?;
/// let mut batch = Batch::new();
/// batch.put_at("inventory", "apple", br#"{"price":1.0}"#, 1_000)?;
/// db.writer().commit(batch)?;
/// let snap = db.snapshot()?;
/// assert!(matches!(snap.get("inventory", b"apple", 1_000, None)?, GetResult::Present { .. }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Db {
    log: Arc<Log>,
    merge: Arc<MergeRegistry>,
    checkpoints: Arc<Catalog>,
    columns: Arc<Columns>,
    views: Arc<Views>,
    /// The log's end when this database was opened: saved view state past it
    /// reflects records a power loss took.
    opened_end: u64,
    auto_checkpoint: Arc<AutoCheckpoint>,
}

/// Records committed per stream since its last automatic checkpoint.
#[derive(Debug, Default)]
struct AutoCheckpoint {
    every: u64,
    counts: std::sync::Mutex<HashMap<String, u64>>,
}

/// The views registered on a database handle.
#[derive(Debug, Default)]
struct Views(std::sync::RwLock<Vec<Arc<MaterializedView>>>);

impl Views {
    fn is_empty(&self) -> bool {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_empty()
    }

    fn all(&self) -> Vec<Arc<MaterializedView>> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Db {
    /// Options for opening the database in `dir`.
    pub fn builder(dir: impl AsRef<Path>) -> DbBuilder {
        DbBuilder {
            dir: dir.as_ref().to_path_buf(),
            segment_size: None,
            compression: None,
            durability: None,
            max_key_size: DEFAULT_MAX_KEY_SIZE,
            max_value_size: DEFAULT_MAX_VALUE_SIZE,
            read_only: false,
            create: true,
            clock: Arc::new(SystemClock),
            vfs: Arc::new(OsVfs),
            auto_merge: true,
            background_seal: true,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            checkpoints_kept: DEFAULT_CHECKPOINTS_KEPT,
            column_build_memory: crate::column::DEFAULT_BUILD_MEMORY,
            merge: HashMap::new(),
            default_merge: None,
        }
    }

    /// Opens or creates the database in `dir` with default options.
    pub fn open(dir: impl AsRef<Path>) -> Result<Db> {
        Db::builder(dir).open()
    }

    /// A write handle: cheap to clone, `Send + Sync`, usable from many threads.
    #[must_use]
    pub fn writer(&self) -> Writer {
        Writer {
            db: Box::new(self.clone()),
            log: self.log.clone(),
        }
    }

    /// A consistent snapshot of everything committed now.
    pub fn snapshot(&self) -> Result<Snapshot> {
        Ok(Snapshot {
            view: View::new({
                // Every commit that has returned is in the snapshot.
                self.log.wait_indexed()?;
                self.log.state()
            })?,
            merge: self.merge.clone(),
            checkpoints: self.checkpoints.clone(),
            columns: self.columns.clone(),
            access: AccessPath::Auto,
        })
    }

    /// Saves `stream`'s table as of `as_of` (default: the largest event time in the
    /// log), known at the latest committed position, to a checkpoint file that
    /// later `table` queries as of `T >= as_of` start from. Needs a writable handle.
    pub fn checkpoint(&self, stream: &str, as_of: Option<i64>) -> Result<CheckpointInfo> {
        if self.log.config.read_only {
            return Err(Error::ReadOnly);
        }
        let snap = self.snapshot()?;
        // The checkpoint (and the views saved with it) is fsynced, so the
        // records it reflects must be first: were a power loss to keep the
        // file and lose them, the positions would be reused by other records
        // and the checkpoint would answer for records the log no longer has.
        self.log.flush()?;
        let as_of = match as_of {
            Some(t) => t,
            None => snap.view.max_event_time()?.unwrap_or(i64::MIN),
        };
        let info = self.checkpoints.take(
            &*self.log.config.vfs,
            &snap,
            stream,
            as_of,
            self.log.config.settings.compression.level(),
        )?;
        // Views are persisted with the checkpoints of their stream.
        for v in self
            .views
            .all()
            .iter()
            .filter(|v| v.def().stream() == stream)
        {
            v.catch_up(&snap, &mut |_| {})?;
            v.save(&*self.log.config.vfs, &|| self.log.flush())?;
        }
        Ok(info)
    }

    /// Registers a materialized view on this handle: loads its saved state if the
    /// definition matches, then backfills from there (from the start of the log
    /// for a new view). Every later commit through this handle's writers updates
    /// it. `progress` is called with the records applied during the backfill.
    pub fn register_view(
        &self,
        name: &str,
        def: ViewDef,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Arc<MaterializedView>> {
        let view = Arc::new(MaterializedView::new(
            name,
            def,
            &self.log.dir.join(VIEW_DIR),
            &*self.log.config.vfs,
        )?);
        view.finish_load(self.opened_end);
        view.catch_up(&self.snapshot()?, progress)?;
        let mut all = self
            .views
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        all.retain(|v| v.name() != name);
        all.push(view.clone());
        Ok(view)
    }

    /// A registered view by name.
    #[must_use]
    pub fn view(&self, name: &str) -> Option<Arc<MaterializedView>> {
        self.views.all().into_iter().find(|v| v.name() == name)
    }

    /// After a commit: update the views, and checkpoint the streams that reached
    /// the automatic checkpoint interval.
    fn after_commit(&self, counts: &[(String, u64)]) -> Result<()> {
        self.update_views()?;
        let every = self.auto_checkpoint.every;
        if every == 0 {
            return Ok(());
        }
        let due: Vec<String> = {
            let mut c = self
                .auto_checkpoint
                .counts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            counts
                .iter()
                .filter_map(|(s, n)| {
                    let total = c.entry(s.clone()).or_insert(0);
                    *total += n;
                    (*total >= every).then(|| {
                        *total = 0;
                        s.clone()
                    })
                })
                .collect()
        };
        for s in due {
            self.checkpoint(&s, None)?;
        }
        Ok(())
    }

    /// Brings every registered view up to the latest committed position.
    pub fn update_views(&self) -> Result<()> {
        let views = self.views.all();
        if views.is_empty() {
            return Ok(());
        }
        let snap = self.snapshot()?;
        for v in views {
            v.catch_up(&snap, &mut |_| {})?;
        }
        Ok(())
    }

    /// Persists every registered view (atomically); reopened views resume from
    /// here and apply only the tail of the log.
    pub fn save_views(&self) -> Result<()> {
        if self.log.config.read_only {
            return Err(Error::ReadOnly);
        }
        self.update_views()?;
        // What each view reflects reaches the disk before it does (see
        // `checkpoint`): `save` syncs the log while it holds the view still.
        for v in self.views.all() {
            v.save(&*self.log.config.vfs, &|| self.log.flush())?;
        }
        Ok(())
    }

    /// Compacts the sealed segments to `horizon` (µs): drops every version that
    /// no query as of `T >= horizon`, known at the latest position or later, can
    /// see, so those queries answer exactly as before and earlier ones fail with
    /// [`Error::BeyondHorizon`]. Runs beside readers and the writer. `progress`
    /// gets `(bytes read, bytes to read)`. See [`crate::storage::compact`].
    ///
    /// ```
    /// # use tablelog::{Batch, Db, Error, GetResult};
    /// # let dir = tempfile::tempdir()?;
    /// let db = Db::builder(dir.path()).segment_size(4096).open()?;
    /// for (t, price) in [(10, b'1'), (20, b'2'), (30, b'3')] {
    ///     let mut b = Batch::new();
    ///     b.put_at("prices", "apple", vec![price; 4096], t)?; // fills a segment
    ///     db.writer().commit(b)?;
    /// }
    /// let report = db.compact(25, &mut |_, _| {})?;
    /// assert_eq!(report.records_dropped, 1); // the price at 10: nothing as of >= 25 sees it
    /// let snap = db.snapshot()?;
    /// assert!(matches!(snap.get("prices", b"apple", 25, None)?, GetResult::Present(r) if r.value[0] == b'2'));
    /// assert!(matches!(snap.get("prices", b"apple", 15, None), Err(Error::BeyondHorizon { horizon: 25, .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn compact(
        &self,
        horizon: i64,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<CompactReport> {
        self.log.compact(horizon, progress)
    }

    /// Applies a retention policy: computes the horizon it asks for (by age from
    /// the clock's now, by size from the oldest segments), saves each stream's
    /// table as of that horizon to a checkpoint, then compacts to it. Returns
    /// `None` when the policy asks for nothing yet.
    ///
    /// The versions a key still needs (its base, see [`crate::storage::compact`])
    /// stay in the log rather than only in the checkpoint: a late patch or an
    /// out-of-order put can still land before them in event time, and folding it
    /// right needs their order, which a checkpoint's folded rows no longer have.
    pub fn retain(
        &self,
        policy: Retention,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Option<CompactReport>> {
        let now = i64::try_from(self.log.config.clock.now_ms())
            .unwrap_or(i64::MAX)
            .saturating_mul(1000);
        let Some(mut horizon) = self.log.retention_horizon(policy, now)? else {
            return Ok(None);
        };
        let snap = self.snapshot()?;
        if let Some(h) = snap.horizon() {
            horizon = horizon.max(h.time);
        }
        for stream in snap.view.streams()? {
            self.checkpoint(&stream, Some(horizon))?;
        }
        self.compact(horizon, progress).map(Some)
    }

    /// Merges the key indexes of every sealed segment into one now (this also
    /// happens in the background every few segment rolls), so lookups probe one
    /// index instead of one per segment. Returns the first position not covered.
    pub fn merge_key_indexes(&self) -> Result<u64> {
        self.log.merge_now()
    }

    /// The checkpoints of this database.
    #[must_use]
    pub fn checkpoints(&self) -> Vec<CheckpointInfo> {
        self.checkpoints.list()
    }

    /// Builds (or rebuilds) the column of the numeric `field` in `stream`: the
    /// field of every record committed now, typed, per key in time order
    /// in `DIR/columns/`. Windows over the field then read
    /// it and only the records written after it (see [`crate::column`]).
    /// A rebuild reads the column it replaces, if that one is whole and the
    /// database was never compacted, and only the records after it from
    /// the log; the file is the same as a build from the log would write
    /// ([`Db::drop_column`] first for that). Holds about
    /// [`DbBuilder::column_build_memory`] of events in memory.
    /// Syncs the log first. `progress` is called with the events read so
    /// far. Needs a writable handle.
    ///
    /// ```
    /// use tablelog::{Agg, Batch, Db, Request};
    /// # let dir = tempfile::tempdir()?;
    /// let db = Db::open(dir.path())?;
    /// let mut batch = Batch::new();
    /// batch.put_at("views", "ann", br#"{"price":4}"#, 1_000)?;
    /// batch.put_at("views", "ann", br#"{"price":6}"#, 2_000)?;
    /// db.writer().commit(batch)?;
    /// db.build_column("views", "price", &mut |_| {})?;
    /// let req = [Request { key: "ann".into(), time: 2_000 }];
    /// let avg = db.snapshot()?.window("views", "price", Agg::Avg, 1_500, &req, None)?;
    /// assert_eq!(avg, [Some(5.0)]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build_column(
        &self,
        stream: &str,
        field: &str,
        progress: &mut dyn FnMut(u64),
    ) -> Result<ColumnInfo> {
        if self.log.config.read_only {
            return Err(Error::ReadOnly);
        }
        let snap = self.snapshot()?;
        // The column is fsynced; the records it holds must be first (see
        // `checkpoint`).
        self.log.flush()?;
        self.columns
            .build(&*self.log.config.vfs, &snap, stream, field, progress)
    }

    /// Removes the column of `field` in `stream`; `false` if there was none.
    /// Needs a writable handle.
    pub fn drop_column(&self, stream: &str, field: &str) -> Result<bool> {
        if self.log.config.read_only {
            return Err(Error::ReadOnly);
        }
        self.columns.remove(&*self.log.config.vfs, stream, field)
    }

    /// The field columns of this database.
    #[must_use]
    pub fn columns(&self) -> Vec<ColumnInfo> {
        self.columns.list()
    }

    /// Fsyncs everything committed so far, whatever the durability mode.
    pub fn flush(&self) -> Result<()> {
        self.log.flush()
    }

    /// The settings in force for this handle.
    #[must_use]
    pub fn settings(&self) -> Settings {
        self.log.config.settings
    }

    /// What opening repaired (a torn tail cut, and why).
    #[must_use]
    pub fn recovery(&self) -> &RecoveryReport {
        &self.log.recovery
    }

    /// The database directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.log.dir
    }
}

/// Positions assigned to a committed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The batch's positions (empty for an empty batch).
    pub positions: Range<u64>,
}

/// A write handle. Clone it freely; concurrent commits are serialised in position
/// order and, under sync durability, share fsyncs.
#[derive(Debug, Clone)]
pub struct Writer {
    log: Arc<Log>,
    db: Box<Db>,
}

impl Writer {
    /// Commits a batch atomically with the database's durability.
    pub fn commit(&self, batch: Batch) -> Result<Receipt> {
        self.commit_with(batch, false)
    }

    /// Commits a batch and returns only once it is fsynced, whatever the
    /// database's durability mode.
    pub fn commit_sync(&self, batch: Batch) -> Result<Receipt> {
        self.commit_with(batch, true)
    }

    fn commit_with(&self, mut batch: Batch, force_sync: bool) -> Result<Receipt> {
        batch.frames.push(std::mem::take(&mut batch.cur));
        let mut counts = Vec::new();
        for f in &batch.frames {
            for (s, n) in f.stream_counts() {
                crate::storage::log::add_count(&mut counts, s, n);
            }
        }
        // Materialized views read every batch back right after its commit:
        // then the commit indexes it itself rather than hand it to the
        // indexer thread and wait for it.
        let read_back = !self.db.views.is_empty();
        let positions = self.log.commit(batch.frames, force_sync, read_back)?;
        self.db.after_commit(&counts)?;
        Ok(Receipt { positions })
    }

    /// Starts a streaming transaction for batches larger than memory. It holds the
    /// writer (other commits wait) until it commits or is dropped; dropping it
    /// without committing leaves no trace.
    ///
    /// Memory stays bounded by two segments' indexes whatever the
    /// transaction's size (the one being filled, and an emptied one the log
    /// keeps for the next segment to index into): when a segment fills, it is
    /// sealed (synced, its sidecar indexes written) and the transaction goes
    /// on in a new segment. None of them is
    /// visible until the commit, which publishes them together; a commit that
    /// spans segments is synced before it returns, whatever the durability
    /// setting. A crash before the commit leaves nothing of it after reopening.
    pub fn transaction(&self) -> Result<Txn<'_>> {
        Ok(Txn {
            db: &self.db,
            inner: self.log.transaction()?,
            max_key: self.log.config.max_key_size,
            max_value: self.log.config.max_value_size,
        })
    }
}

fn check_record(
    stream: &str,
    key: &[u8],
    value: &[u8],
    max_key: usize,
    max_value: usize,
) -> Result<()> {
    validate_stream_name(stream)?;
    if key.len() > max_key {
        return Err(Error::InvalidInput(format!(
            "key of {} bytes exceeds the limit of {max_key} bytes",
            key.len()
        )));
    }
    if value.len() > max_value {
        return Err(Error::InvalidInput(format!(
            "value of {} bytes exceeds the limit of {max_value} bytes",
            value.len()
        )));
    }
    Ok(())
}

/// Records to commit atomically, across any streams. Built in memory; for
/// larger-than-memory batches use [`Writer::transaction`].
#[derive(Debug, Default, Clone)]
pub struct Batch {
    frames: Vec<FrameBuilder>,
    cur: FrameBuilder,
}

impl Batch {
    /// An empty batch.
    #[must_use]
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Records in the batch.
    #[must_use]
    pub fn len(&self) -> usize {
        self.frames
            .iter()
            .map(|f| f.count() as usize)
            .sum::<usize>()
            + self.cur.count() as usize
    }

    /// Whether the batch is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a record. Stream names and the format's hard size limits are checked
    /// here; the database's configured limits when the batch is committed.
    pub fn push(
        &mut self,
        stream: &str,
        key: &[u8],
        op: Op,
        value: &[u8],
        event_time: i64,
    ) -> Result<&mut Self> {
        check_record(stream, key, value, MAX_KEY_SIZE, MAX_VALUE_SIZE)?;
        let extra = key.len() + value.len() + crate::storage::frame::RECORD_HEADER_LEN;
        if self
            .cur
            .is_full_for(stream, extra, crate::storage::frame::FRAME_TARGET)
        {
            self.frames.push(std::mem::take(&mut self.cur));
        }
        self.cur.push(stream, op, key, value, event_time);
        Ok(self)
    }

    /// Adds a put at `event_time` (µs since the epoch).
    pub fn put_at(
        &mut self,
        stream: &str,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        event_time: i64,
    ) -> Result<&mut Self> {
        self.push(stream, key.as_ref(), Op::Put, value.as_ref(), event_time)
    }

    /// Adds a put happening now.
    pub fn put(
        &mut self,
        stream: &str,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<&mut Self> {
        self.put_at(stream, key, value, now_micros())
    }

    /// Adds a patch (merged into the previous row by the stream's merge operator).
    pub fn patch_at(
        &mut self,
        stream: &str,
        key: impl AsRef<[u8]>,
        patch: impl AsRef<[u8]>,
        event_time: i64,
    ) -> Result<&mut Self> {
        self.push(stream, key.as_ref(), Op::Patch, patch.as_ref(), event_time)
    }

    /// Adds a delete (tombstone) at `event_time`.
    pub fn delete_at(
        &mut self,
        stream: &str,
        key: impl AsRef<[u8]>,
        event_time: i64,
    ) -> Result<&mut Self> {
        self.push(stream, key.as_ref(), Op::Delete, b"", event_time)
    }
}

/// A streaming transaction (see [`Writer::transaction`]).
pub struct Txn<'a> {
    db: &'a Db,
    inner: Transaction<'a>,
    max_key: usize,
    max_value: usize,
}

impl std::fmt::Debug for Txn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Txn")
            .field("next_position", &self.inner.next_position())
            .finish()
    }
}

impl Txn<'_> {
    /// Adds a record; full frames are written to disk (invisible until commit).
    pub fn push(
        &mut self,
        stream: &str,
        key: &[u8],
        op: Op,
        value: &[u8],
        event_time: i64,
    ) -> Result<u64> {
        check_record(stream, key, value, self.max_key, self.max_value)?;
        let pos = self.inner.next_position();
        let extra = key.len() + value.len() + crate::storage::frame::RECORD_HEADER_LEN;
        self.inner
            .frame_for(stream, extra)?
            .push(stream, op, key, value, event_time);
        Ok(pos)
    }

    /// Position of the transaction's first record.
    #[must_use]
    pub fn first_position(&self) -> u64 {
        self.inner.first_position()
    }

    /// Records added so far.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.inner.next_position() - self.inner.first_position()
    }

    /// Whether nothing was added.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Commits: everything added becomes visible at once.
    pub fn commit(self) -> Result<Receipt> {
        let counts = self.inner.stream_counts();
        let positions = self.inner.commit(false)?;
        self.db.after_commit(&counts)?;
        Ok(Receipt { positions })
    }
}

/// A consistent read snapshot. Cheap to clone; holds the segments it reads alive.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub(crate) view: View,
    pub(crate) merge: Arc<MergeRegistry>,
    pub(crate) checkpoints: Arc<Catalog>,
    pub(crate) columns: Arc<Columns>,
    pub(crate) access: AccessPath,
}

impl Snapshot {
    /// This snapshot with joins and windows forced onto one access path (see
    /// [`AccessPath`]; the default, `Auto`, picks the cheaper). Answers do not
    /// change, only their cost.
    #[must_use]
    pub fn with_access(mut self, path: AccessPath) -> Snapshot {
        self.access = path;
        self
    }

    /// This snapshot reading key indexes through bulk cursors (see
    /// [`View::bulk`]): for checkpoints, which walk every index once.
    #[must_use]
    pub(crate) fn bulk(mut self) -> Snapshot {
        self.view = self.view.bulk();
        self
    }

    /// The storage-level view (scans, versions, positions).
    #[must_use]
    pub fn view(&self) -> &View {
        &self.view
    }

    /// One past the last visible position.
    #[must_use]
    pub fn end_position(&self) -> u64 {
        self.view.end_position()
    }
}
