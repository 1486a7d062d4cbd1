//! Field columns change what a window costs, never its answer: windows read
//! through a column (and the log after it) equal windows read from the log,
//! with late events, deletes, patches, values that are not numbers, stale
//! columns, earlier known-at positions, reopening, compaction and damage.

use std::sync::Arc;

use bytes::Bytes;
use tablelog::workload::Rng;
use tablelog::{AccessPath, Agg, Batch, Db, Error, JsonMergePatch, KnownAt, Request, Snapshot};

const AGGS: [Agg; 5] = [Agg::Count, Agg::Sum, Agg::Avg, Agg::Min, Agg::Max];

fn open(dir: &std::path::Path) -> Db {
    Db::builder(dir)
        .segment_size(16 << 10)
        .default_merge_operator(Arc::new(JsonMergePatch))
        .open()
        .unwrap()
}

/// `n` batches over 30 keys: mostly increasing times with late events, some
/// deletes and patches, prices that are sometimes strings or absent, and a
/// few keys with long runs (so some windows hold more than 32 events).
fn append(db: &Db, rng: &mut Rng, clock: &mut i64, n: usize) {
    for _ in 0..n {
        let mut b = Batch::new();
        for _ in 0..=rng.below(4) {
            *clock += rng.below(40) as i64;
            let key = if rng.below(4) == 0 {
                "hot".to_string()
            } else {
                format!("k{:02}", rng.below(30))
            };
            let t = if rng.below(8) == 0 {
                *clock - rng.below(2_000) as i64
            } else {
                *clock
            };
            let price = rng.below(1_000) as f64 / 8.0 - 40.0;
            let _ = match rng.below(12) {
                0 => b.delete_at("s", &key, t).unwrap(),
                1 => b
                    .patch_at("s", &key, format!(r#"{{"price":{price}}}"#), t)
                    .unwrap(),
                2 => b.put_at("s", &key, br#"{"price":"n/a"}"#, t).unwrap(),
                3 => b.put_at("s", &key, br#"{"other":1}"#, t).unwrap(),
                _ => b
                    .put_at("s", &key, format!(r#"{{"price":{price},"q":1}}"#), t)
                    .unwrap(),
            };
        }
        db.writer().commit(b).unwrap();
    }
}

fn requests(rng: &mut Rng, clock: i64, n: usize) -> Vec<Request> {
    (0..n)
        .map(|_| Request {
            key: Bytes::from(match rng.below(6) {
                0 => "hot".to_string(),
                1 => "absent".to_string(),
                _ => format!("k{:02}", rng.below(30)),
            }),
            time: rng.below(clock as u64 + 500) as i64 - 100,
        })
        .collect()
}

fn close(a: &[Option<f64>], b: &[Option<f64>]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| match (x, y) {
            (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
            (None, None) => true,
            _ => false,
        })
}

/// Every aggregate over several widths, through the column and through
/// `Auto`, equals the probing path's answer.
fn check(snap: &Snapshot, reqs: &[Request], known_at: KnownAt, what: &str) {
    check_paths(snap, reqs, known_at, what, true);
}

fn check_paths(snap: &Snapshot, reqs: &[Request], known_at: KnownAt, what: &str, column: bool) {
    for agg in AGGS {
        for width in [1, 50, 700, 5_000, i64::MAX] {
            let want = snap
                .clone()
                .with_access(AccessPath::Probe)
                .window("s", "price", agg, width, reqs, known_at)
                .unwrap();
            if column {
                let got = snap
                    .clone()
                    .with_access(AccessPath::Column)
                    .window("s", "price", agg, width, reqs, known_at)
                    .unwrap();
                assert!(
                    close(&got, &want),
                    "{what}: {agg:?} width {width}\n got {got:?}\nwant {want:?}"
                );
            }
            let auto = snap
                .window("s", "price", agg, width, reqs, known_at)
                .unwrap();
            assert!(close(&auto, &want), "{what}: auto {agg:?} width {width}");
        }
    }
}

#[test]
fn windows_through_a_column_equal_windows_from_the_log() {
    for seed in 0..6 {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        let mut rng = Rng(seed);
        let mut clock = 0i64;
        append(&db, &mut rng, &mut clock, 150);
        let info = db.build_column("s", "price", &mut |_| {}).unwrap();
        assert_eq!(info.known_end, db.snapshot().unwrap().end_position());
        let reqs = requests(&mut rng, clock, 300);
        check(&db.snapshot().unwrap(), &reqs, KnownAt::Latest, "fresh");
        // A tail with late events: merged into the column's.
        append(&db, &mut rng, &mut clock, 60);
        let reqs = requests(&mut rng, clock, 300);
        let snap = db.snapshot().unwrap();
        check(&snap, &reqs, KnownAt::Latest, "with a tail");
        // Known at a position at or after the column's end: still usable.
        check(
            &snap,
            &reqs,
            KnownAt::Position(info.known_end),
            "known at its end",
        );
        // Known before it: the column cannot serve.
        let before = KnownAt::Position(info.known_end - 2);
        let err = snap
            .clone()
            .with_access(AccessPath::Column)
            .window("s", "price", Agg::Sum, 100, &reqs, before)
            .unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
        let auto = snap
            .window("s", "price", Agg::Sum, 100, &reqs, before)
            .unwrap();
        let probe = snap
            .clone()
            .with_access(AccessPath::Probe)
            .window("s", "price", Agg::Sum, 100, &reqs, before)
            .unwrap();
        assert!(close(&auto, &probe));
        // Another field has no column.
        assert!(snap
            .clone()
            .with_access(AccessPath::Column)
            .window("s", "q", Agg::Count, 100, &reqs, KnownAt::Latest)
            .is_err());
        drop(snap);
        drop(db);
        // Reopened read-only, the column is found and read.
        let ro = Db::builder(dir.path())
            .read_only(true)
            .default_merge_operator(Arc::new(JsonMergePatch))
            .open()
            .unwrap();
        assert_eq!(ro.columns().len(), 1);
        check(&ro.snapshot().unwrap(), &reqs, KnownAt::Latest, "reopened");
        assert!(matches!(
            ro.build_column("s", "price", &mut |_| {}),
            Err(Error::ReadOnly)
        ));
    }
}

#[test]
fn a_rebuilt_column_replaces_the_old_and_a_dropped_one_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let mut rng = Rng(11);
    let mut clock = 0i64;
    append(&db, &mut rng, &mut clock, 40);
    let first = db.build_column("s", "price", &mut |_| {}).unwrap();
    let old = db.snapshot().unwrap();
    append(&db, &mut rng, &mut clock, 40);
    let mut seen = 0;
    let second = db.build_column("s", "price", &mut |n| seen = n).unwrap();
    assert!(second.known_end > first.known_end);
    assert_eq!(seen, second.events);
    assert_eq!(db.columns(), vec![second.clone()]);
    let reqs = requests(&mut rng, clock, 200);
    check(&db.snapshot().unwrap(), &reqs, KnownAt::Latest, "rebuilt");
    // A snapshot from before the rebuild cannot read the new column (it holds
    // records the snapshot does not see) and reads the log.
    check_paths(&old, &reqs, KnownAt::Latest, "old snapshot", false);
    assert!(old
        .clone()
        .with_access(AccessPath::Column)
        .window("s", "price", Agg::Count, 10, &reqs, KnownAt::Latest)
        .is_err());
    assert!(db.drop_column("s", "price").unwrap());
    assert!(!db.drop_column("s", "price").unwrap());
    assert!(db.columns().is_empty());
    assert!(!second.path.exists());
    assert!(matches!(
        db.build_column("nope", "price", &mut |_| {}),
        Err(Error::UnknownStream(_))
    ));
    assert!(db.build_column("s", &"x".repeat(101), &mut |_| {}).is_err());
}

/// A damaged column is never read: windows fall back to the log (and the
/// forced path fails), and `verify` reports the file. The header's page is
/// checked on opening; the others as windows first read them, so damage in
/// the middle (events) is caught by the first window reading it, whose keys
/// here are every key of the stream.
#[test]
fn a_damaged_column_is_ignored_and_reported() {
    for damage in [20usize, usize::MAX] {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Rng(5);
        let mut clock = 0i64;
        let path = {
            let db = open(dir.path());
            append(&db, &mut rng, &mut clock, 60);
            db.build_column("s", "price", &mut |_| {}).unwrap().path
        };
        let mut bytes = std::fs::read(&path).unwrap();
        let at = damage.min(bytes.len() / 2);
        bytes[at] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        let db = open(dir.path());
        let mut reqs = requests(&mut rng, clock, 100);
        reqs.extend((0..30).map(|k| Request {
            key: Bytes::from(format!("k{k:02}")),
            time: clock,
        }));
        let snap = db.snapshot().unwrap();
        let probe = snap
            .clone()
            .with_access(AccessPath::Probe)
            .window("s", "price", Agg::Avg, 300, &reqs, KnownAt::Latest)
            .unwrap();
        let auto = snap
            .window("s", "price", Agg::Avg, 300, &reqs, KnownAt::Latest)
            .unwrap();
        assert!(close(&auto, &probe), "damage at {at}");
        let forced = snap.clone().with_access(AccessPath::Column).window(
            "s",
            "price",
            Agg::Avg,
            300,
            &reqs,
            KnownAt::Latest,
        );
        assert!(forced.is_err(), "damage at {at}");
        let report = tablelog::storage::verify::verify(dir.path()).unwrap();
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.path == path && p.repairable),
            "damage at {at}: {:?}",
            report.problems
        );
    }
}

/// Compaction drops only versions no answerable window holds, so a column
/// built before it keeps answering every window after it.
#[test]
fn a_column_built_before_compaction_still_answers() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let mut rng = Rng(9);
    let mut clock = 0i64;
    append(&db, &mut rng, &mut clock, 200);
    db.build_column("s", "price", &mut |_| {}).unwrap();
    append(&db, &mut rng, &mut clock, 100); // seals more segments
    let horizon = clock / 2;
    db.compact(horizon, &mut |_, _| {}).unwrap();
    let width = 300;
    let reqs: Vec<Request> = requests(&mut rng, clock, 300)
        .into_iter()
        .map(|r| Request {
            time: r.time.max(horizon + width),
            ..r
        })
        .collect();
    let snap = db.snapshot().unwrap();
    for agg in AGGS {
        let want = snap
            .clone()
            .with_access(AccessPath::Probe)
            .window("s", "price", agg, width, &reqs, KnownAt::Latest)
            .unwrap();
        let got = snap
            .clone()
            .with_access(AccessPath::Column)
            .window("s", "price", agg, width, &reqs, KnownAt::Latest)
            .unwrap();
        assert!(close(&got, &want), "{agg:?}");
    }
}

/// A handle that listed a column, and a snapshot of it, never read a column
/// another handle rebuilt since (at the same path, holding records the
/// snapshot does not see): what counts is the header of the file opened.
#[test]
fn a_column_rebuilt_by_another_handle_is_never_read_past_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(21);
    let mut clock = 0i64;
    {
        let db = open(dir.path());
        append(&db, &mut rng, &mut clock, 50);
        db.build_column("s", "price", &mut |_| {}).unwrap();
    }
    let ro = Db::builder(dir.path())
        .read_only(true)
        .default_merge_operator(Arc::new(JsonMergePatch))
        .open()
        .unwrap();
    let old = ro.snapshot().unwrap();
    {
        let db = open(dir.path());
        append(&db, &mut rng, &mut clock, 50);
        db.build_column("s", "price", &mut |_| {}).unwrap();
    }
    let reqs = requests(&mut rng, clock, 200);
    check_paths(
        &old,
        &reqs,
        KnownAt::Latest,
        "listed before the rebuild",
        false,
    );
    // A later snapshot of the same handle sees the new records, and reads
    // the rebuilt column.
    let ro = Db::builder(dir.path())
        .read_only(true)
        .default_merge_operator(Arc::new(JsonMergePatch))
        .open()
        .unwrap();
    check(&ro.snapshot().unwrap(), &reqs, KnownAt::Latest, "reopened");
}

/// Found in review: a column built after a compaction lacks what it dropped,
/// so a snapshot taken before the compaction (which may still ask for
/// windows below the horizon) must not read it for those windows.
#[test]
fn a_column_built_after_a_compaction_serves_no_window_below_its_horizon() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::builder(dir.path())
        .segment_size(16 << 10)
        .open()
        .unwrap();
    for chunk in (1..=3000i64).collect::<Vec<_>>().chunks(100) {
        let mut b = Batch::new();
        for &t in chunk {
            b.put_at("s", "k", format!(r#"{{"price":{t}}}"#), t)
                .unwrap();
        }
        db.writer().commit(b).unwrap();
    }
    let old = db.snapshot().unwrap();
    db.compact(2500, &mut |_, _| {}).unwrap();
    db.build_column("s", "price", &mut |_| {}).unwrap();
    let reqs = [
        Request {
            key: Bytes::from_static(b"k"),
            time: 1000,
        },
        Request {
            key: Bytes::from_static(b"k"),
            time: 2900,
        },
    ];
    for agg in AGGS {
        let probe = old
            .clone()
            .with_access(AccessPath::Probe)
            .window("s", "price", agg, 100, &reqs, KnownAt::Latest)
            .unwrap();
        let auto = old
            .window("s", "price", agg, 100, &reqs, KnownAt::Latest)
            .unwrap();
        assert_eq!(auto, probe, "{agg:?}");
    }
    assert_eq!(
        old.window("s", "price", Agg::Count, 100, &reqs, KnownAt::Latest)
            .unwrap(),
        [Some(100.0), Some(100.0)]
    );
    // Windows starting at or after the horizon read it, from either snapshot.
    let above = &reqs[1..];
    for snap in [&old, &db.snapshot().unwrap()] {
        let got = snap
            .clone()
            .with_access(AccessPath::Column)
            .window("s", "price", Agg::Sum, 100, above, KnownAt::Latest)
            .unwrap();
        assert_eq!(got, [Some((2801..=2900).sum::<i64>() as f64)]);
    }
}

/// Found in review: subtracting running sums lost a small window after a
/// huge value (cancellation) or after an overflow to infinity (NaN). Each
/// window's values are now summed afresh.
#[test]
fn sums_do_not_inherit_the_magnitude_of_earlier_events() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let mut b = Batch::new();
    b.put_at("s", "big", br#"{"price":1e17}"#, 0).unwrap();
    b.put_at("s", "inf", br#"{"price":1e308}"#, 0).unwrap();
    b.put_at("s", "inf", br#"{"price":1e308}"#, 0).unwrap();
    for t in 1..=40 {
        b.put_at("s", "big", br#"{"price":1}"#, t).unwrap();
        b.put_at("s", "inf", br#"{"price":1}"#, t).unwrap();
    }
    db.writer().commit(b).unwrap();
    db.build_column("s", "price", &mut |_| {}).unwrap();
    let reqs = [
        Request {
            key: Bytes::from_static(b"big"),
            time: 40,
        },
        Request {
            key: Bytes::from_static(b"inf"),
            time: 40,
        },
    ];
    let snap = db.snapshot().unwrap();
    for agg in [Agg::Sum, Agg::Avg] {
        let got = snap
            .clone()
            .with_access(AccessPath::Column)
            .window("s", "price", agg, 40, &reqs, KnownAt::Latest)
            .unwrap();
        let want = if agg == Agg::Sum { 40.0 } else { 1.0 };
        assert_eq!(got, [Some(want), Some(want)], "{agg:?}");
    }
}

/// Found in review: builds of one column shared a temporary file, so
/// concurrent ones failed or renamed a file still being written.
#[test]
fn concurrent_builds_of_a_column_take_turns() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let mut rng = Rng(3);
    let mut clock = 0i64;
    append(&db, &mut rng, &mut clock, 40);
    std::thread::scope(|s| {
        for _ in 0..4 {
            let db = db.clone();
            s.spawn(move || {
                for _ in 0..8 {
                    db.build_column("s", "price", &mut |_| {}).unwrap();
                }
            });
        }
    });
    assert_eq!(db.columns().len(), 1);
    let reqs = requests(&mut rng, clock, 100);
    check(
        &db.snapshot().unwrap(),
        &reqs,
        KnownAt::Latest,
        "after concurrent builds",
    );
    assert!(tablelog::storage::verify::verify(dir.path())
        .unwrap()
        .problems
        .is_empty());
}

/// Stream and field names whose file name would pass 255 bytes get a hashed
/// name; a crash's temporary file is removed on the next writable open.
#[test]
fn long_names_and_leftover_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let stream = "s".repeat(255);
    let field = "f".repeat(100);
    {
        let db = open(dir.path());
        let mut b = Batch::new();
        b.put_at(&stream, "k", format!(r#"{{"{field}":2}}"#), 5)
            .unwrap();
        db.writer().commit(b).unwrap();
        let info = db.build_column(&stream, &field, &mut |_| {}).unwrap();
        assert!(info.path.file_name().unwrap().len() <= 255);
        let req = [Request {
            key: Bytes::from_static(b"k"),
            time: 5,
        }];
        let got = db
            .snapshot()
            .unwrap()
            .with_access(AccessPath::Column)
            .window(&stream, &field, Agg::Sum, 10, &req, KnownAt::Latest)
            .unwrap();
        assert_eq!(got, [Some(2.0)]);
    }
    let leftover = dir.path().join("columns").join("x@78.col.tmp");
    std::fs::write(&leftover, b"half written").unwrap();
    let db = open(dir.path());
    assert!(!leftover.exists());
    assert_eq!(db.columns().len(), 1);
}

/// Every state a crash can leave while a column is built (and the log
/// synced before it) opens to a database whose windows equal the log's:
/// the column is there whole, or absent; never half-written or ahead of the
/// records it holds.
#[test]
fn a_crash_while_a_column_is_built_leaves_it_whole_or_absent() {
    use tablelog::storage::vfs::{crash_image, OsVfs, RecordingVfs};
    let src = tempfile::tempdir().unwrap();
    let rec = RecordingVfs::new(Arc::new(OsVfs));
    let mut rng = Rng(17);
    let mut clock = 0i64;
    let start;
    {
        let db = Db::builder(src.path())
            .vfs(Arc::new(rec.clone()))
            .background_seal(false)
            .segment_size(16 << 10)
            .default_merge_operator(Arc::new(JsonMergePatch))
            .open()
            .unwrap();
        append(&db, &mut rng, &mut clock, 40);
        start = rec.trace().len();
        db.build_column("s", "price", &mut |_| {}).unwrap();
    }
    let trace = rec.trace();
    let reqs = requests(&mut rng, clock, 150);
    let work = tempfile::tempdir().unwrap();
    let (mut states, mut with_column) = (0, 0);
    for upto in start..=trace.len() {
        for seed in 0..3 {
            let out = work.path().join(format!("s{upto}-{seed}"));
            crash_image(&trace, upto, seed, src.path(), &out).unwrap();
            // What a column on disk holds, read before opening (which would
            // remove one past the log's end): the log must have it all.
            let on_disk: Vec<u64> = std::fs::read_dir(out.join("columns"))
                .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
                .unwrap_or_default()
                .iter()
                .filter(|p| p.extension().is_some_and(|x| x == "col"))
                .filter_map(|p| tablelog::column::file::peek(&OsVfs, p).ok())
                .map(|i| i.known_end)
                .collect();
            let db = open(&out);
            let snap = db.snapshot().unwrap();
            for k in on_disk {
                assert!(
                    k <= snap.end_position(),
                    "crash at {upto}/{seed}: column past the log"
                );
            }
            if !db.columns().is_empty() {
                with_column += 1;
                assert!(db.columns()[0].known_end <= snap.end_position());
            }
            // Before the build synced the log, a crash may take every record.
            if snap.view().has_stream("s").unwrap() {
                check_paths(
                    &snap,
                    &reqs,
                    KnownAt::Latest,
                    &format!("crash at {upto}/{seed}"),
                    false,
                );
            }
            assert!(
                tablelog::storage::verify::verify(&out)
                    .unwrap()
                    .problems
                    .is_empty(),
                "crash at {upto}/{seed}"
            );
            drop(snap);
            drop(db);
            std::fs::remove_dir_all(&out).unwrap();
            states += 1;
        }
    }
    eprintln!("{states} crash states, {with_column} with the column");
    assert!(with_column > 0 && with_column < states);
}

fn open_with_memory(
    dir: &std::path::Path,
    vfs: Arc<dyn tablelog::storage::vfs::Vfs>,
    memory: usize,
) -> tablelog::Result<Db> {
    Db::builder(dir)
        .segment_size(16 << 10)
        .vfs(vfs)
        .column_build_memory(memory)
        .default_merge_operator(Arc::new(JsonMergePatch))
        .open()
}

/// Files of the database's column directory, by name.
fn column_dir(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("columns"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A few records under keys longer than a column's slot holds.
fn append_long_keys(db: &Db, clock: i64) {
    let mut b = Batch::new();
    for i in 0..40 {
        let key = format!("a key longer than sixteen bytes, number {}", i % 3);
        b.put_at("s", &key, format!(r#"{{"price":{i}.25}}"#), clock - i * 7)
            .unwrap();
    }
    db.writer().commit(b).unwrap();
}

/// A build that outgrows its memory spills its events to temporary files
/// and sorts them in parts (a key with more events than a part holds stays
/// whole): the file it writes is byte for byte the one an in-memory build
/// writes, its windows equal the log's, and no temporary file is left.
#[test]
fn a_build_in_little_memory_writes_the_same_file() {
    use tablelog::storage::vfs::{OsVfs, RecordingVfs, TraceOp};
    for seed in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Rng(100 + seed);
        let mut clock = 0i64;
        let whole = {
            let db = open_with_memory(dir.path(), Arc::new(OsVfs), 256 << 20).unwrap();
            append(&db, &mut rng, &mut clock, 200);
            append_long_keys(&db, clock);
            let info = db.build_column("s", "price", &mut |_| {}).unwrap();
            assert!(info.events > 400, "{}", info.events);
            std::fs::read(&info.path).unwrap()
        };
        // 0 bytes: one event held, then every event spilled and dealt into
        // the most parts; 600: 25 events a part, below the hot key's count.
        for memory in [0, 600, 4_000] {
            let rec = RecordingVfs::new(Arc::new(OsVfs));
            let db = open_with_memory(dir.path(), Arc::new(rec.clone()), memory).unwrap();
            // From the log (a rebuild would read the column it replaces).
            assert!(db.drop_column("s", "price").unwrap());
            let mut calls = 0;
            let info = db.build_column("s", "price", &mut |_| calls += 1).unwrap();
            assert!(calls > 0);
            assert!(
                std::fs::read(&info.path).unwrap() == whole,
                "seed {seed}, {memory} bytes"
            );
            assert_eq!(
                column_dir(dir.path()),
                [info.path.file_name().unwrap().to_string_lossy()]
            );
            // It did spill, and dealt the spill into parts.
            let created = |suffix: &str| {
                rec.trace()
                    .iter()
                    .filter(|op| matches!(op, TraceOp::Create(p) if p.to_string_lossy().ends_with(suffix)))
                    .count()
            };
            assert_eq!(created(".spill.tmp"), 1, "{memory} bytes");
            assert!(
                created("tmp") > 3,
                "{memory} bytes: {} files",
                created("tmp")
            );
            let reqs = requests(&mut rng, clock, 200);
            check(
                &db.snapshot().unwrap(),
                &reqs,
                KnownAt::Latest,
                "spilled build",
            );
        }
    }
}

/// A failure at any file operation of a spilling build leaves the column
/// built before it whole (or the new one whole), never a temporary file
/// once the database is opened again, and windows that equal the log's.
#[test]
fn a_failure_at_every_operation_of_a_spilling_build_keeps_the_column_whole() {
    use tablelog::storage::vfs::{FaultPlan, FaultyVfs, OsVfs, Vfs};
    let golden = tempfile::tempdir().unwrap();
    let mut rng = Rng(31);
    let mut clock = 0i64;
    let (old_end, new_end) = {
        let db = open_with_memory(golden.path(), Arc::new(OsVfs), 256 << 20).unwrap();
        append(&db, &mut rng, &mut clock, 80);
        let old = db
            .build_column("s", "price", &mut |_| {})
            .unwrap()
            .known_end;
        append(&db, &mut rng, &mut clock, 40);
        (old, db.snapshot().unwrap().end_position())
    };
    let reqs = requests(&mut rng, clock, 120);
    let mut injected = 0;
    for forever in [false, true] {
        for n in 1.. {
            let work = tempfile::tempdir().unwrap();
            for f in ["", "columns"] {
                std::fs::create_dir_all(work.path().join(f)).unwrap();
                for e in std::fs::read_dir(golden.path().join(f)).unwrap().flatten() {
                    if e.file_type().unwrap().is_file() {
                        std::fs::copy(e.path(), work.path().join(f).join(e.file_name())).unwrap();
                    }
                }
            }
            let plan = Arc::new(FaultPlan::new(n, forever));
            let vfs: Arc<dyn Vfs> = Arc::new(FaultyVfs::new(Arc::new(OsVfs), plan.clone()));
            let built = open_with_memory(work.path(), vfs, 500)
                .and_then(|db| db.build_column("s", "price", &mut |_| {}));
            // A build past op n succeeds only if op n removed a temporary
            // file (logged; the next writable open removes it).
            let done = plan.seen() < n;
            match built {
                Ok(info) => assert_eq!(info.known_end, new_end),
                Err(_) => injected += 1,
            }
            let db = open_with_memory(work.path(), Arc::new(OsVfs), 500).unwrap();
            let what = format!("op {n} failed (forever: {forever})");
            assert!(
                column_dir(work.path()).iter().all(|f| f.ends_with(".col")),
                "{what}: {:?}",
                column_dir(work.path())
            );
            let ends: Vec<u64> = db.columns().iter().map(|c| c.known_end).collect();
            assert!(ends == [old_end] || ends == [new_end], "{what}: {ends:?}");
            check(&db.snapshot().unwrap(), &reqs, KnownAt::Latest, &what);
            if done {
                break;
            }
        }
    }
    eprintln!("{injected} faults injected into a spilling build");
    assert!(injected > 10, "only {injected} faults injected");
}

/// A rebuild reads the column it replaces and only the records after it
/// (late ones included), and writes the same bytes as a build from the log,
/// in memory or spilling; after a compaction, or with the old column
/// damaged, it reads the log, with the same result.
#[test]
fn a_rebuild_from_the_old_column_equals_a_build_from_the_log() {
    use tablelog::storage::vfs::OsVfs;
    for (seed, memory) in [(0, 256 << 20), (1, 0), (2, 700), (3, 256 << 20)] {
        let dir = tempfile::tempdir().unwrap();
        let db = open_with_memory(dir.path(), Arc::new(OsVfs), memory).unwrap();
        let mut rng = Rng(200 + seed);
        let mut clock = 0i64;
        append(&db, &mut rng, &mut clock, 80);
        let first = db.build_column("s", "price", &mut |_| {}).unwrap();
        let from_log = |db: &Db| {
            assert!(db.drop_column("s", "price").unwrap());
            let info = db.build_column("s", "price", &mut |_| {}).unwrap();
            std::fs::read(&info.path).unwrap()
        };
        for round in 0..3 {
            append(&db, &mut rng, &mut clock, 30);
            if round == 1 {
                append_long_keys(&db, clock - 500);
            }
            let rebuilt = db.build_column("s", "price", &mut |_| {}).unwrap();
            assert!(rebuilt.known_end > first.known_end);
            let bytes = std::fs::read(&rebuilt.path).unwrap();
            assert!(bytes == from_log(&db), "seed {seed}, round {round}");
            let reqs = requests(&mut rng, clock, 150);
            check(&db.snapshot().unwrap(), &reqs, KnownAt::Latest, "rebuilt");
        }
        // A damaged column is not read: the rebuild reads the log.
        append(&db, &mut rng, &mut clock, 20);
        let path = db.columns()[0].path.clone();
        let mut bad = std::fs::read(&path).unwrap();
        let at = bad.len() / 2;
        bad[at] ^= 0x10;
        std::fs::write(&path, &bad).unwrap();
        let rebuilt = db.build_column("s", "price", &mut |_| {}).unwrap();
        let bytes = std::fs::read(&rebuilt.path).unwrap();
        assert!(bytes == from_log(&db), "seed {seed}, damaged");
        // After a compaction (a new horizon), the same.
        append(&db, &mut rng, &mut clock, 20);
        let h = clock / 2;
        db.compact(h, &mut |_, _| {}).unwrap();
        let rebuilt = db.build_column("s", "price", &mut |_| {}).unwrap();
        assert_eq!(rebuilt.horizon, Some(h));
        let bytes = std::fs::read(&rebuilt.path).unwrap();
        assert!(bytes == from_log(&db), "seed {seed}, compacted");
        // Late versions before the horizon, in the active segment (which
        // compaction does not examine), then a column holding them; once
        // that segment seals, compacting again to the same time drops the
        // older of each pair, so the column is not reused.
        let mut late = Batch::new();
        for k in 0..30 {
            for (dt, price) in [(100, 1), (50, 2)] {
                late.put_at(
                    "s",
                    format!("k{k:02}"),
                    format!(r#"{{"price":{price}}}"#),
                    h - dt,
                )
                .unwrap();
            }
        }
        db.writer().commit(late).unwrap();
        let before = db.build_column("s", "price", &mut |_| {}).unwrap();
        append(&db, &mut rng, &mut clock, 250);
        db.compact(h, &mut |_, _| {}).unwrap();
        let rebuilt = db.build_column("s", "price", &mut |_| {}).unwrap();
        assert_eq!(rebuilt.horizon, before.horizon);
        let bytes = std::fs::read(&rebuilt.path).unwrap();
        assert!(bytes == from_log(&db), "seed {seed}, compacted twice");
    }
}
