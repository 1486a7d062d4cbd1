//! Compaction and retention through the public API: every query at or above
//! the horizon answers exactly as on an uncompacted twin database (after late
//! writes, reopen and a second compaction too), queries below it fail with the
//! horizon named, space is reclaimed, old snapshots keep reading, and a failure
//! or crash at any point of a compaction leaves a database that answers the same.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use tablelog::rng::Rng;
use tablelog::storage::vfs::{crash_image_over, FaultPlan, FaultyVfs, OsVfs, RecordingVfs, Vfs};
use tablelog::{Agg, Batch, Db, Error, GetResult, JsonMergePatch, KnownAt, Request, Retention};

const STREAMS: [&str; 2] = ["s", "t"];
const KEYS: u64 = 12;

fn open(dir: &Path, vfs: Arc<dyn Vfs>) -> tablelog::Result<Db> {
    Db::builder(dir)
        .segment_size(4096)
        .default_merge_operator(Arc::new(JsonMergePatch))
        .auto_merge(false)
        .background_seal(false)
        .vfs(vfs)
        .open()
}

fn key(k: u64) -> String {
    format!("k{k:02}")
}

/// Batch `i` of the seeded workload: puts, patches and deletes over two streams;
/// event times mostly follow `i`, some are late (up to 400 earlier).
fn batch(rng: &mut Rng, i: u64) -> Batch {
    let mut b = Batch::new();
    for _ in 0..=rng.below(3) {
        let stream = STREAMS[rng.below(2) as usize];
        let k = key(rng.below(KEYS));
        let mut t = (i * 10) as i64;
        if rng.below(6) == 0 {
            t -= rng.below(400) as i64;
        }
        let value = format!(
            r#"{{"n":{},"f{}":{},"pad":"{}"}}"#,
            rng.below(1000),
            rng.below(3),
            i,
            "x".repeat(rng.below(120) as usize)
        );
        match rng.below(10) {
            0..=5 => b.put_at(stream, k, value, t).unwrap(),
            6..=8 => b.patch_at(stream, k, value, t).unwrap(),
            _ => b.delete_at(stream, k, t).unwrap(),
        };
    }
    b
}

/// Writes batches `from..to` of the seeded workload to every database.
fn write(dbs: &[&Db], seed: u64, from: u64, to: u64) {
    for i in from..to {
        for db in dbs {
            let mut rng = Rng(seed.wrapping_mul(1_000_003) ^ i);
            db.writer().commit(batch(&mut rng, i)).unwrap();
        }
    }
}

fn gets(db: &Db, stream: &str, t: i64, known: KnownAt) -> Vec<GetResult> {
    let s = db.snapshot().unwrap();
    (0..KEYS)
        .map(|k| s.get(stream, key(k).as_bytes(), t, known).unwrap())
        .collect()
}

fn table(db: &Db, stream: &str, t: i64, known: KnownAt) -> Vec<tablelog::Row> {
    let s = db.snapshot().unwrap();
    s.table(stream, t, known)
        .unwrap()
        .collect::<tablelog::Result<_>>()
        .unwrap()
}

fn requests(times: &[i64]) -> Vec<Request> {
    let mut out = Vec::new();
    for &t in times {
        for k in 0..KEYS {
            out.push(Request {
                key: Bytes::from(key(k)),
                time: t,
            });
        }
    }
    out
}

/// Every allowed query agrees between `a` (compacted) and `b` (never compacted).
fn assert_same(a: &Db, b: &Db, context: &str) {
    let sa = a.snapshot().unwrap();
    let h = sa.horizon().expect("compacted");
    let end = sa.end_position();
    assert_eq!(end, b.snapshot().unwrap().end_position(), "{context}");
    let top = sa.view().max_event_time().unwrap().unwrap_or(0);
    let times: Vec<i64> = (0..6)
        .map(|i| h.time + (top - h.time).max(0) * i / 5)
        .collect();
    let mut knowns = vec![
        KnownAt::Latest,
        KnownAt::Position(h.position.saturating_sub(1)),
    ];
    if end > h.position + 1 {
        knowns.push(KnownAt::Position((h.position + end) / 2));
    }
    for stream in STREAMS {
        for &t in &times {
            for &known in &knowns {
                let c = format!("{context}: {stream} as of {t} known at {known:?}");
                assert_eq!(
                    gets(a, stream, t, known),
                    gets(b, stream, t, known),
                    "get {c}"
                );
                assert_eq!(
                    table(a, stream, t, known),
                    table(b, stream, t, known),
                    "table {c}"
                );
            }
        }
        let sb = b.snapshot().unwrap();
        let reqs = requests(&times);
        assert_eq!(
            sa.asof_join(&reqs, &[stream], Some(300), None).unwrap(),
            sb.asof_join(&reqs, &[stream], Some(300), None).unwrap(),
            "{context}: join {stream}"
        );
        let width = 150;
        let wreqs = requests(&times.iter().map(|t| t + width).collect::<Vec<_>>());
        for agg in [Agg::Count, Agg::Sum, Agg::Max] {
            assert_eq!(
                sa.window(stream, "n", agg, width, &wreqs, None).unwrap(),
                sb.window(stream, "n", agg, width, &wreqs, None).unwrap(),
                "{context}: window {stream} {agg:?}"
            );
        }
        assert_eq!(
            sa.changes(stream, times[0], times[5], None).unwrap(),
            sb.changes(stream, times[0], times[5], None).unwrap(),
            "{context}: changes {stream}"
        );
    }
}

fn twins() -> (tempfile::TempDir, Db, tempfile::TempDir, Db) {
    let da = tempfile::tempdir().unwrap();
    let db_ = tempfile::tempdir().unwrap();
    let a = open(da.path(), Arc::new(OsVfs)).unwrap();
    let b = open(db_.path(), Arc::new(OsVfs)).unwrap();
    (da, a, db_, b)
}

#[test]
fn queries_at_or_above_the_horizon_answer_as_before() {
    let (da, a, _db, b) = twins();
    write(&[&a, &b], 7, 0, 400);
    let before = a.snapshot().unwrap();
    let r = a.compact(2_000, &mut |_, _| {}).unwrap();
    assert!(r.records_dropped > 100, "{r:?}");
    assert!(
        r.sealed_bytes_after < r.sealed_bytes_before / 2 + 4096 * 4,
        "{r:?}"
    );
    assert!(r.segments_after < r.segments_before, "{r:?}");
    assert_same(&a, &b, "after compaction");

    // A snapshot taken before still reads the old segments, below the horizon too.
    assert_eq!(
        before
            .table("s", 500, None)
            .unwrap()
            .collect::<tablelog::Result<Vec<_>>>()
            .unwrap(),
        table(&b, "s", 500, KnownAt::Latest)
    );
    assert_eq!(
        before.view().scan(0, None).count() as u64,
        before.end_position()
    );
    drop(before);

    // Late writes (some before the horizon), a reopen, and a second compaction.
    write(&[&a, &b], 7, 400, 600);
    assert_same(&a, &b, "after late writes");
    drop(a);
    let a = open(da.path(), Arc::new(OsVfs)).unwrap();
    assert_same(&a, &b, "after reopen");
    let r2 = a.compact(4_000, &mut |_, _| {}).unwrap();
    assert_eq!(r2.horizon.time, 4_000);
    assert_same(&a, &b, "after a second compaction");
    // A horizon never moves back.
    let r3 = a.compact(1_000, &mut |_, _| {}).unwrap();
    assert_eq!(r3.horizon.time, 4_000);
    drop(a);
    let a = open(da.path(), Arc::new(OsVfs)).unwrap();
    assert_same(&a, &b, "after reopen");
    let v = tablelog::storage::verify::verify(da.path()).unwrap();
    assert!(v.is_clean(), "{:?}", v.problems);
}

#[test]
fn queries_below_the_horizon_fail_naming_it() {
    let (_da, a, _db, b) = twins();
    write(&[&a, &b], 3, 0, 300);
    let r = a.compact(1_500, &mut |_, _| {}).unwrap();
    let p = r.horizon.position;
    assert!(p > 0);
    let s = a.snapshot().unwrap();
    let beyond = |e: Error| matches!(e, Error::BeyondHorizon { horizon: 1_500, .. });
    assert!(beyond(s.get("s", b"k01", 1_499, None).unwrap_err()));
    assert!(beyond(s.table("s", 0, None).unwrap_err()));
    assert!(beyond(s.table_from_scratch("s", 1_000, None).unwrap_err()));
    assert!(beyond(s.changes("s", 1_000, 2_000, None).unwrap_err()));
    let req = [Request {
        key: Bytes::from("k01"),
        time: 1_600,
    }];
    assert!(beyond(
        s.window("s", "n", Agg::Sum, 200, &req, None).unwrap_err()
    ));
    assert!(s.window("s", "n", Agg::Sum, 100, &req, None).is_ok());
    assert!(beyond(
        s.asof_join(
            &[Request {
                key: Bytes::from("k01"),
                time: 10
            }],
            &["s"],
            None,
            None
        )
        .unwrap_err()
    ));
    let err = s
        .get("s", b"k01", 2_000, KnownAt::Position(p - 2))
        .unwrap_err();
    assert!(
        matches!(err, Error::KnownBeforeHorizon { requested, position } if requested == p - 2 && position == p - 1),
        "{err}"
    );
    assert!(s.get("s", b"k01", 2_000, KnownAt::Position(p - 1)).is_ok());
    assert!(err.to_string().contains("compaction"), "{err}");
}

#[test]
fn retention_by_age_and_size_compacts_and_checkpoints() {
    let (da, a, _db, b) = twins();
    write(&[&a, &b], 11, 0, 400);
    // By size: the oldest segments beyond the limit set the horizon.
    let r = a
        .retain(
            Retention {
                max_age: None,
                max_bytes: Some(20_000),
            },
            &mut |_, _| {},
        )
        .unwrap()
        .expect("over the size limit");
    assert!(r.records_dropped > 0);
    assert!(r.horizon.time > 0);
    assert!(a.checkpoints().iter().any(|c| c.as_of == r.horizon.time));
    assert_same(&a, &b, "after retention by size");
    // By age: the test clock is the system clock, far past these event times,
    // so an hour's age puts the horizon after every event.
    let r2 = a
        .retain(
            Retention {
                max_age: Some(3_600_000_000),
                max_bytes: None,
            },
            &mut |_, _| {},
        )
        .unwrap()
        .unwrap();
    assert!(r2.horizon.time > 4_000);
    assert!(r2.sealed_bytes_after < r.sealed_bytes_after);
    assert_same(&a, &b, "after retention by age");
    // Nothing asked for, nothing done.
    assert!(a
        .retain(Retention::default(), &mut |_, _| {})
        .unwrap()
        .is_none());
    drop(a);
    let v = tablelog::storage::verify::verify(da.path()).unwrap();
    assert!(v.is_clean(), "{:?}", v.problems);
}

/// A directory holding the workload, closed (every file synced), and its twin.
fn golden(seed: u64, batches: u64) -> (tempfile::TempDir, tempfile::TempDir, Db) {
    let g = tempfile::tempdir().unwrap();
    let r = tempfile::tempdir().unwrap();
    {
        let a = open(g.path(), Arc::new(OsVfs)).unwrap();
        let b = open(r.path(), Arc::new(OsVfs)).unwrap();
        write(&[&a, &b], seed, 0, batches);
        a.flush().unwrap();
        drop(b);
    }
    let b = open(r.path(), Arc::new(OsVfs)).unwrap();
    (g, r, b)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() && e.file_name() != "LOCK" {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Reopens what a failed or crashed compaction left and checks it against the twin.
fn check_recovered(dir: &Path, twin: &Db, context: &str) {
    let a = open(dir, Arc::new(OsVfs)).unwrap_or_else(|e| panic!("{context}: reopen: {e}"));
    if a.snapshot().unwrap().horizon().is_some() {
        assert_same(&a, twin, context);
    } else {
        assert_eq!(
            table(&a, "s", i64::MAX, KnownAt::Latest),
            table(twin, "s", i64::MAX, KnownAt::Latest),
            "{context}"
        );
    }
    // Finishing the job from there works and agrees too.
    a.compact(1_500, &mut |_, _| {})
        .unwrap_or_else(|e| panic!("{context}: compaction after recovery: {e}"));
    assert_same(&a, twin, &format!("{context}, compacted again"));
    drop(a);
    let v = tablelog::storage::verify::verify(dir).unwrap();
    assert!(v.is_clean(), "{context}: {:?}", v.problems);
}

#[test]
fn a_failure_at_every_operation_of_a_compaction_leaves_a_consistent_database() {
    let (g, _r, twin) = golden(5, 160);
    let mut injected = 0;
    for forever in [false, true] {
        for n in 1.. {
            let work = tempfile::tempdir().unwrap();
            copy_dir(g.path(), work.path());
            let plan = Arc::new(FaultPlan::new(n, forever));
            let vfs: Arc<dyn Vfs> = Arc::new(FaultyVfs::new(Arc::new(OsVfs), plan.clone()));
            let result = open(work.path(), vfs).and_then(|a| a.compact(1_500, &mut |_, _| {}));
            match result {
                Ok(r) => {
                    assert!(
                        plan.seen() < n,
                        "compaction succeeded although op {n} failed"
                    );
                    assert!(r.records_dropped > 0);
                    break;
                }
                Err(e) => {
                    injected += 1;
                    check_recovered(
                        work.path(),
                        &twin,
                        &format!("op {n} failed (forever: {forever}): {e}"),
                    );
                }
            }
        }
    }
    eprintln!("{injected} faults injected into a compaction, every state consistent");
    assert!(injected > 20, "only {injected} faults injected");
}

#[test]
fn a_crash_at_every_operation_of_a_compaction_leaves_a_consistent_database() {
    let (g, _r, twin) = golden(9, 160);
    let src = tempfile::tempdir().unwrap();
    copy_dir(g.path(), src.path());
    let rec = RecordingVfs::new(Arc::new(OsVfs));
    {
        let a = open(src.path(), Arc::new(rec.clone())).unwrap();
        let r = a.compact(1_500, &mut |_, _| {}).unwrap();
        assert!(r.records_dropped > 0);
    }
    let trace = rec.trace();
    let work = tempfile::tempdir().unwrap();
    let mut states = 0;
    for upto in 0..=trace.len() {
        for seed in 0..3 {
            let out = work.path().join(format!("c{upto}-{seed}"));
            crash_image_over(&trace, upto, seed, Some(g.path()), src.path(), &out).unwrap();
            check_recovered(
                &out,
                &twin,
                &format!("crash after op {upto}/{} seed {seed}", trace.len()),
            );
            std::fs::remove_dir_all(&out).unwrap();
            states += 1;
        }
    }
    eprintln!(
        "{states} crash states of a {}-operation compaction",
        trace.len()
    );
    assert!(states > 30);
}

#[test]
fn compaction_runs_beside_a_writer_that_rolls_segments() {
    let (_da, a, _db, b) = twins();
    write(&[&a, &b], 13, 0, 200);
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let writer = s.spawn(|| write(&[&a, &b], 13, 200, 500));
        // Explicit merges of the key indexes race the compactions too.
        let merger = s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                a.merge_key_indexes().unwrap();
            }
        });
        let compacted: Vec<_> = [800, 1_200, 1_600, 2_000]
            .iter()
            .map(|&h| a.compact(h, &mut |_, _| {}))
            .collect();
        let written = writer.join();
        done.store(true, std::sync::atomic::Ordering::Release);
        merger.join().unwrap();
        written.unwrap();
        for r in compacted {
            r.unwrap();
        }
    });
    assert_same(&a, &b, "after compactions beside the writer");
}

#[test]
fn every_byte_flip_in_a_compacted_segment_is_a_corruption_error_naming_it() {
    let (g, _r, _twin) = golden(21, 120);
    let src = tempfile::tempdir().unwrap();
    copy_dir(g.path(), src.path());
    {
        let a = open(src.path(), Arc::new(OsVfs)).unwrap();
        assert!(a.compact(1_000, &mut |_, _| {}).unwrap().records_dropped > 0);
    }
    let seg = std::fs::read_dir(src.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("-000001.seg"))
        .expect("a compacted segment");
    let name = seg.file_name().unwrap().to_owned();
    let original = std::fs::read(&seg).unwrap();
    let scan = |d: &Path| -> tablelog::Result<(Vec<tablelog::Record>, Vec<tablelog::Record>)> {
        let db = Db::builder(d).read_only(true).open()?;
        let s = db.snapshot()?;
        let all = s
            .view()
            .scan(0, None)
            .collect::<tablelog::Result<Vec<_>>>()?;
        let by_time = s
            .view()
            .scan_time("s", i64::MIN, i64::MAX)
            .collect::<tablelog::Result<Vec<_>>>()?;
        Ok((all, by_time))
    };
    let expected = scan(src.path()).unwrap();
    let work = tempfile::tempdir().unwrap();
    let d = work.path().join("db");
    copy_dir(src.path(), &d);
    for at in 0..original.len() {
        let mut bad = original.clone();
        bad[at] ^= 1 << (at % 8);
        std::fs::write(d.join(&name), &bad).unwrap();
        match scan(&d) {
            Err(Error::Corruption { path, .. }) => {
                assert_eq!(path.file_name().unwrap(), name.as_os_str(), "flip at {at}");
            }
            Err(Error::UnsupportedVersion { .. }) if (8..12).contains(&at) => {}
            Err(e) => panic!("flip at {at}: unexpected error {e}"),
            Ok(got) => panic!(
                "flip at {at} read back silently (same as before: {})",
                got == expected
            ),
        }
    }
    std::fs::write(d.join(&name), &original).unwrap();
    assert_eq!(scan(&d).unwrap(), expected);
}

#[test]
fn compaction_keeps_every_kept_record_and_its_recorded_at_stamp() {
    let (_da, a, _db, _b) = twins();
    write(&[&a], 17, 0, 300);
    let before: std::collections::HashMap<u64, tablelog::Record> = a
        .snapshot()
        .unwrap()
        .view()
        .scan(0, None)
        .map(|r| r.map(|r| (r.position, r)))
        .collect::<tablelog::Result<_>>()
        .unwrap();
    let r = a.compact(2_000, &mut |_, _| {}).unwrap();
    assert!(r.records_dropped > 0);
    let s = a.snapshot().unwrap();
    let mut seen = 0;
    for rec in s.view().scan(0, None) {
        let rec = rec.unwrap();
        assert_eq!(
            Some(&rec),
            before.get(&rec.position),
            "record {}",
            rec.position
        );
        assert_eq!(s.view().read(rec.position).unwrap(), rec);
        seen += 1;
    }
    assert_eq!(seen + r.records_dropped, before.len() as u64);
    for stream in STREAMS {
        for k in 0..KEYS {
            for h in s.history(stream, key(k).as_bytes(), None).unwrap() {
                let orig = &before[&h.position];
                assert_eq!((h.recorded_at, &h.value), (orig.recorded_at, &orig.value));
            }
        }
    }
    let dropped = (0..s.end_position()).find(|p| {
        !s.view()
            .scan(*p, None)
            .next()
            .is_some_and(|r| r.is_ok_and(|r| r.position == *p))
    });
    if let Some(p) = dropped {
        assert!(matches!(s.view().read(p), Err(Error::PositionCompacted(q)) if q == p));
    }
}

/// A file system on which merged key indexes (`index-*`) cannot be created.
#[derive(Debug)]
struct NoMergedIndexes(Arc<dyn Vfs>);

impl Vfs for NoMergedIndexes {
    fn create(&self, path: &Path) -> std::io::Result<Arc<dyn tablelog::storage::vfs::VFile>> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("index-") {
            return Err(std::io::Error::other("merged indexes refused"));
        }
        self.0.create(path)
    }
    fn open(
        &self,
        path: &Path,
        write: bool,
    ) -> std::io::Result<Arc<dyn tablelog::storage::vfs::VFile>> {
        self.0.open(path, write)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.0.rename(from, to)
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        self.0.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.0.sync_dir(dir)
    }
    fn read(&self, path: &Path) -> std::io::Result<Bytes> {
        self.0.read(path)
    }
    fn list(&self, dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
        self.0.list(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        self.0.create_dir_all(dir)
    }
    fn lock(&self, path: &Path) -> std::io::Result<Box<dyn std::any::Any + Send + Sync>> {
        self.0.lock(path)
    }
}

/// A background merge that fails must not leave merges marked as running: a
/// compaction (which waits for merges) and an explicit merge must still return.
/// Before the fix, the compaction spun forever.
#[test]
fn a_failed_background_merge_does_not_block_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::builder(dir.path())
        .segment_size(4096)
        .default_merge_operator(Arc::new(JsonMergePatch))
        .vfs(Arc::new(NoMergedIndexes(Arc::new(OsVfs))))
        .open()
        .unwrap();
    write(&[&db], 5, 0, 120); // many rolls: background merges start, and fail
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let compacted = db.compact(600, &mut |_, _| {}).map(|_| ());
        let merged = db.merge_key_indexes().map(|_| ());
        tx.send((compacted.is_ok(), merged.is_err())).unwrap();
    });
    let (compacted, merge_failed) = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("compaction and merge returned");
    assert!(compacted, "compaction needs no merged index");
    assert!(merge_failed, "the explicit merge reports the refused file");
    worker.join().unwrap();
}
