//! Recovery and corruption: torn tails cut at every offset, damage in sealed
//! segments reported with file and offset, index sidecars rebuilt, crash images of
//! an uncommitted streaming transaction.

use std::fs;
use std::path::{Path, PathBuf};

use tablelog::{Batch, Db, Error, Op, Record, Result};

fn all(db: &Db) -> Result<Vec<Record>> {
    db.snapshot()?.view().scan(0, None).collect()
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "LOCK" {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// Writes `n` batches of 1–3 records to a single-segment database and returns,
/// per batch, the active segment's length after it and the records so far.
fn build(dir: &Path, n: usize) -> (Vec<u64>, Vec<Record>) {
    let db = Db::open(dir).unwrap();
    let mut ends = Vec::new();
    for i in 0..n {
        let mut b = Batch::new();
        for j in 0..(i % 3 + 1) {
            b.put_at(
                if j == 1 { "b" } else { "a" },
                format!("k{i}"),
                format!(r#"{{"i":{i},"j":{j}}}"#),
                i as i64,
            )
            .unwrap();
        }
        db.writer().commit(b).unwrap();
        ends.push(fs::metadata(&segments(dir)[0]).unwrap().len());
    }
    let recs = all(&db).unwrap();
    (ends, recs)
}

#[test]
fn truncation_at_every_offset_of_the_last_batches_keeps_exactly_the_whole_batches() {
    let src = tempfile::tempdir().unwrap();
    let (ends, recs) = build(src.path(), 12);
    let records_after: Vec<usize> = (0..ends.len())
        .map(|i| (0..=i).map(|k| k % 3 + 1).sum())
        .collect();
    let from = ends[ends.len() - 5];
    let total = *ends.last().unwrap();
    let work = tempfile::tempdir().unwrap();
    for cut in from..=total {
        let d = work.path().join(format!("c{cut}"));
        copy_dir(src.path(), &d);
        let seg = &segments(&d)[0];
        fs::OpenOptions::new()
            .write(true)
            .open(seg)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let db = Db::open(&d).unwrap();
        let whole = ends.iter().filter(|&&e| e <= cut).count();
        let expect = records_after[whole - 1];
        let got = all(&db).unwrap();
        assert_eq!(got.len(), expect, "cut at {cut}");
        assert_eq!(got[..], recs[..expect], "cut at {cut}");
        assert_eq!(
            db.recovery().truncated_bytes,
            cut - ends[whole - 1],
            "cut at {cut}"
        );
        // The database keeps working after the cut.
        let mut b = Batch::new();
        b.put_at("a", "new", "{}", 0).unwrap();
        assert_eq!(
            db.writer().commit(b).unwrap().positions.start,
            expect as u64
        );
        drop(db);
        fs::remove_dir_all(&d).unwrap();
    }
}

#[test]
fn zero_or_garbage_tails_are_cut() {
    for garbage in [false, true] {
        let src = tempfile::tempdir().unwrap();
        let (ends, recs) = build(src.path(), 5);
        let seg = &segments(src.path())[0];
        let mut bytes = fs::read(seg).unwrap();
        let tail: Vec<u8> = (0..5000u32)
            .map(|i| if garbage { (i * 7919 % 251) as u8 } else { 0 })
            .collect();
        bytes.extend_from_slice(&tail);
        fs::write(seg, &bytes).unwrap();
        let db = Db::open(src.path()).unwrap();
        assert_eq!(all(&db).unwrap(), recs);
        assert_eq!(db.recovery().truncated_bytes, 5000);
        drop(db);
        assert_eq!(fs::metadata(seg).unwrap().len(), *ends.last().unwrap());
    }
}

/// A database with three sealed segments and an active one.
fn sealed_db(dir: &Path) -> Vec<Record> {
    let db = Db::builder(dir).segment_size(4096).open().unwrap();
    for i in 0..160 {
        let mut b = Batch::new();
        b.put_at(
            "s",
            format!("k{}", i % 7),
            format!(r#"{{"i":{i}}}"#),
            1000 - i,
        )
        .unwrap();
        db.writer().commit(b).unwrap();
    }
    let recs = all(&db).unwrap();
    assert!(segments(dir).len() >= 3);
    recs
}

#[test]
fn every_byte_flip_in_a_sealed_segment_is_a_corruption_error_naming_file_and_offset() {
    let src = tempfile::tempdir().unwrap();
    let recs = sealed_db(src.path());
    let segs = segments(src.path());
    let seg = segs[1].clone();
    let name = seg.file_name().unwrap().to_owned();
    let original = fs::read(&seg).unwrap();
    // Its records: each is the one answer to a `get` of its key as of its
    // event time (event times fall as positions rise, one record a batch).
    let base = |p: &Path| -> u64 { p.file_stem().unwrap().to_str().unwrap().parse().unwrap() };
    let inside: Vec<&Record> = recs
        .iter()
        .filter(|r| (base(&segs[1])..base(&segs[2])).contains(&r.position))
        .collect();
    assert!(inside.len() >= 3);
    let work = tempfile::tempdir().unwrap();
    let d = work.path().join("db");
    copy_dir(src.path(), &d);
    for at in 0..original.len() {
        let mut bad = original.clone();
        bad[at] ^= 1 << (at % 8);
        fs::write(d.join(&name), &bad).unwrap();
        let outcome = Db::builder(&d).read_only(true).open().and_then(|db| {
            let scanned = all(&db);
            let table: Result<Vec<_>> = db
                .snapshot()?
                .view()
                .scan_time("s", i64::MIN, i64::MAX)
                .collect();
            // Lookups read a record through the segment's second mapping
            // (advised random) and check its frame there.
            let snap = db.snapshot()?;
            let gets: Vec<Result<tablelog::GetResult>> = inside
                .iter()
                .map(|r| snap.get("s", &r.key, r.event_time, None))
                .collect();
            Ok((scanned, table, gets))
        });
        let check = |e: &Error| match e {
            Error::Corruption { path, .. } => assert_eq!(
                path.file_name().unwrap(),
                name.as_os_str(),
                "flip at {at}: {e}"
            ),
            Error::UnsupportedVersion { .. } if at < 16 => {}
            other => panic!("flip at {at}: unexpected error {other}"),
        };
        match outcome {
            Err(e) => check(&e),
            Ok((scanned, table, gets)) => {
                check(&scanned.expect_err(&format!("flip at {at} read back silently")));
                check(&table.expect_err(&format!("flip at {at} read back silently")));
                // Each lookup answers right or names the damage, and the one
                // whose record's frame holds the flip cannot answer.
                let mut failed = 0;
                for (r, got) in inside.iter().zip(gets) {
                    match got {
                        Ok(got) => {
                            let Some(row) = got.row() else {
                                panic!("flip at {at}: a get found no row")
                            };
                            assert_eq!(
                                (row.position, &row.value),
                                (r.position, &r.value),
                                "flip at {at}: a get answered wrong"
                            );
                        }
                        Err(e) => {
                            check(&e);
                            failed += 1;
                        }
                    }
                }
                assert!(failed > 0, "flip at {at}: every get answered");
            }
        }
        let report = tablelog::storage::verify::verify(&d).unwrap();
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.path.file_name() == Some(name.as_os_str()) && !p.repairable),
            "flip at {at}"
        );
    }
    fs::write(d.join(&name), &original).unwrap();
    let db = Db::builder(&d).read_only(true).open().unwrap();
    assert_eq!(all(&db).unwrap(), recs);
}

#[test]
fn damaged_or_missing_indexes_are_rebuilt_and_answers_do_not_change() {
    let src = tempfile::tempdir().unwrap();
    let recs = sealed_db(src.path());
    let expected: Vec<_> = {
        let db = Db::builder(src.path()).read_only(true).open().unwrap();
        let s = db.snapshot().unwrap();
        (0..7)
            .map(|k| s.view().versions("s", format!("k{k}").as_bytes()).unwrap())
            .collect()
    };
    let seg = segments(src.path())[0].clone();
    for ext in ["fidx", "kidx"] {
        let side = seg.with_extension(ext);
        let original = fs::read(&side).unwrap();
        let work = tempfile::tempdir().unwrap();
        let d = work.path().join("db");
        // Deleted.
        copy_dir(src.path(), &d);
        fs::remove_file(d.join(side.file_name().unwrap())).unwrap();
        let db = Db::open(&d).unwrap();
        let s = db.snapshot().unwrap();
        for (k, want) in expected.iter().enumerate() {
            assert_eq!(
                &s.view().versions("s", format!("k{k}").as_bytes()).unwrap(),
                want
            );
        }
        assert_eq!(all(&db).unwrap(), recs);
        drop(s);
        drop(db);
        assert_eq!(
            fs::read(d.join(side.file_name().unwrap())).unwrap(),
            original,
            "{ext} rewritten identically"
        );
        // Every byte flipped, one at a time.
        for at in (0..original.len()).step_by(3) {
            let mut bad = original.clone();
            bad[at] ^= 0x40;
            fs::write(d.join(side.file_name().unwrap()), &bad).unwrap();
            let db = Db::builder(&d).read_only(true).open().unwrap();
            let s = db.snapshot().unwrap();
            // A `get` first: the key index is checked as lookups read it.
            for (k, want) in expected.iter().enumerate() {
                assert_eq!(
                    s.view()
                        .newest_visible("s", format!("k{k}").as_bytes(), i64::MAX, u64::MAX)
                        .unwrap()
                        .as_ref(),
                    want.last(),
                    "{ext} flip at {at}"
                );
                assert_eq!(
                    &s.view().versions("s", format!("k{k}").as_bytes()).unwrap(),
                    want,
                    "{ext} flip at {at}"
                );
            }
            assert_eq!(all(&db).unwrap(), recs, "{ext} flip at {at}");
            let report = tablelog::storage::verify::verify(&d).unwrap();
            assert!(
                report.problems.iter().all(|p| p.repairable),
                "{ext} flip at {at}"
            );
            assert!(
                !report.problems.is_empty(),
                "{ext} flip at {at} not reported"
            );
        }
    }
}

#[test]
fn a_crash_image_of_an_uncommitted_streaming_transaction_recovers_to_before_it() {
    let src = tempfile::tempdir().unwrap();
    let image = tempfile::tempdir().unwrap();
    let db = Db::open(src.path()).unwrap();
    let mut b = Batch::new();
    b.put_at("s", "before", "{}", 0).unwrap();
    db.writer().commit(b).unwrap();
    let w = db.writer();
    let mut tx = w.transaction().unwrap();
    for i in 0..5000 {
        tx.push("s", format!("k{i}").as_bytes(), Op::Put, &[b'x'; 500], i)
            .unwrap();
    }
    // The machine dies now: the data frames are on disk, the commit frame is not.
    copy_dir(src.path(), image.path());
    assert!(fs::metadata(&segments(image.path())[0]).unwrap().len() > 1 << 20);
    drop(tx);
    let db2 = Db::open(image.path()).unwrap();
    let got = all(&db2).unwrap();
    assert_eq!(got.len(), 1);
    assert!(db2.recovery().truncated_bytes > 1 << 20);
    assert!(db2
        .recovery()
        .reason
        .as_deref()
        .unwrap_or("")
        .contains("without a commit"));
}

/// A crash inside a streaming transaction that has already rolled into new
/// segments: recovery removes those segments and cuts the one it began in, in
/// every shape the crash can leave (sidecars written or not; the newest segment
/// complete, or created without its header), read-only handles see the same,
/// and the database then takes writes again.
#[test]
fn a_crash_inside_a_transaction_spanning_segments_recovers_to_before_it() {
    let src = tempfile::tempdir().unwrap();
    let db = Db::builder(src.path())
        .segment_size(1 << 16)
        .background_seal(false)
        .open()
        .unwrap();
    let mut b = Batch::new();
    b.put_at("s", "before", "{}", 0).unwrap();
    db.writer().commit(b).unwrap();
    let origin = segments(src.path());
    let origin_len = fs::metadata(&origin[0]).unwrap().len();
    let w = db.writer();
    let mut tx = w.transaction().unwrap();
    for i in 0..400 {
        tx.push("s", format!("k{i}").as_bytes(), Op::Put, &[b'x'; 500], i)
            .unwrap();
    }
    let sealed = segments(src.path()).len();
    assert!(sealed >= 3, "{sealed} segments");
    type Shape = (&'static str, fn(&Path));
    let shapes: [Shape; 4] = [
        ("as written", |_| {}),
        ("without sidecars", |d| {
            for e in fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.extension().is_some_and(|x| x == "kidx" || x == "fidx") {
                    fs::remove_file(p).unwrap();
                }
            }
        }),
        ("newest segment without its header", |d| {
            let last = segments(d).pop().unwrap();
            fs::OpenOptions::new()
                .write(true)
                .open(last)
                .unwrap()
                .set_len(0)
                .unwrap();
        }),
        ("newest segment gone", |d| {
            fs::remove_file(segments(d).pop().unwrap()).unwrap();
        }),
    ];
    for (name, shape) in shapes {
        let image = tempfile::tempdir().unwrap();
        copy_dir(src.path(), image.path());
        shape(image.path());
        // Before open repairs it, `verify` calls every shape repairable.
        let report = tablelog::storage::verify::verify(image.path()).unwrap();
        assert!(!report.problems.is_empty(), "{name}");
        assert!(
            report.problems.iter().all(|p| p.repairable),
            "{name}: {:?}",
            report.problems
        );
        let ro = Db::builder(image.path()).read_only(true).open().unwrap();
        assert_eq!(all(&ro).unwrap().len(), 1, "{name}: read-only");
        drop(ro);
        let db2 = Db::open(image.path()).unwrap();
        assert_eq!(all(&db2).unwrap().len(), 1, "{name}");
        assert!(
            db2.recovery()
                .reason
                .as_deref()
                .unwrap_or("")
                .contains("spanning segments"),
            "{name}: {:?}",
            db2.recovery()
        );
        assert_eq!(
            segments(image.path()),
            vec![image.path().join(origin[0].file_name().unwrap())],
            "{name}"
        );
        assert_eq!(
            fs::metadata(&segments(image.path())[0]).unwrap().len(),
            origin_len,
            "{name}"
        );
        // No sidecar of a removed segment (or of the active one) is left for a
        // later segment at the same base to meet.
        let sidecars: Vec<_> = fs::read_dir(image.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "kidx" || x == "fidx"))
            .collect();
        assert!(sidecars.is_empty(), "{name}: {sidecars:?}");
        let report = tablelog::storage::verify::verify(image.path()).unwrap();
        assert!(report.is_clean(), "{name}: {:?}", report.problems);
        let mut b = Batch::new();
        b.put_at("s", "after", "{}", 1).unwrap();
        assert_eq!(db2.writer().commit(b).unwrap().positions, 1..2, "{name}");
        drop(db2);
        assert_eq!(
            all(&Db::open(image.path()).unwrap()).unwrap().len(),
            2,
            "{name}"
        );
    }
    assert_eq!(tx.commit().unwrap().positions, 1..401);
}

#[test]
fn a_newer_format_version_is_refused_with_a_clear_error() {
    let src = tempfile::tempdir().unwrap();
    build(src.path(), 2);
    let seg = &segments(src.path())[0];
    let mut bytes = fs::read(seg).unwrap();
    bytes[8] = 4; // 1 is a writer's segment, 2 a compacted one, 3 a continuing one
    let crc = crc32fast::hash(&bytes[..12]);
    bytes[12..16].copy_from_slice(&crc.to_le_bytes());
    fs::write(seg, &bytes).unwrap();
    match Db::open(src.path()) {
        Err(Error::UnsupportedVersion {
            found: 4,
            supported: 3,
            path,
        }) => assert_eq!(&path, seg),
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
}

#[test]
fn the_merged_key_index_changes_no_answer_and_is_never_trusted_when_damaged() {
    let src = tempfile::tempdir().unwrap();
    let recs = sealed_db(src.path());
    // Point lookups first (`get`, then every version): a merged index is
    // checked chunk by chunk as they read it, so they meet a damaged chunk
    // before a table's walk checks the whole file.
    type Probe = (
        Vec<Option<tablelog::storage::index::VersionRef>>,
        Vec<Vec<tablelog::storage::index::VersionRef>>,
    );
    let probe = |db: &Db| -> Probe {
        let s = db.snapshot().unwrap();
        let keys = || (0..8).map(|k| format!("k{k}"));
        let gets = keys()
            .flat_map(|k| [850, 950, i64::MAX].map(|t| (k.clone(), t)))
            .map(|(k, t)| {
                s.view()
                    .newest_visible("s", k.as_bytes(), t, u64::MAX)
                    .unwrap()
            })
            .collect();
        let versions = keys()
            .map(|k| s.view().versions("s", k.as_bytes()).unwrap())
            .collect();
        (gets, versions)
    };
    let table = |db: &Db| -> Vec<tablelog::Row> {
        db.snapshot()
            .unwrap()
            .table("s", 950, None)
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    };
    let (want_v, want_t) = {
        let db = Db::open(src.path()).unwrap();
        let (v, t) = (probe(&db), table(&db));
        let covered = db.merge_key_indexes().unwrap();
        assert!(covered > 0);
        assert!(!db.snapshot().unwrap().view().state().merged.is_empty());
        assert_eq!(probe(&db), v);
        assert_eq!(table(&db), t);
        // New appends after the merge are found too.
        let mut b = Batch::new();
        b.put_at("s", "k1", "{}", 2000).unwrap();
        db.writer().commit(b).unwrap();
        assert_eq!(probe(&db).1[1].len(), v.1[1].len() + 1);
        (probe(&db), table(&db))
    };
    let merged: Vec<PathBuf> = fs::read_dir(src.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("index-")
        })
        .collect();
    assert_eq!(merged.len(), 1);
    let db = Db::builder(src.path()).read_only(true).open().unwrap();
    assert!(
        !db.snapshot().unwrap().view().state().merged.is_empty(),
        "found on reopen"
    );
    assert_eq!((probe(&db), table(&db)), (want_v.clone(), want_t.clone()));
    drop(db);
    let original = fs::read(&merged[0]).unwrap();
    for at in (0..original.len()).step_by(11) {
        let mut bad = original.clone();
        bad[at] ^= 0x20;
        fs::write(&merged[0], &bad).unwrap();
        let db = Db::builder(src.path()).read_only(true).open().unwrap();
        assert_eq!(
            (probe(&db), table(&db)),
            (want_v.clone(), want_t.clone()),
            "flip at {at}"
        );
    }
    assert_eq!(
        all(&Db::builder(src.path()).read_only(true).open().unwrap())
            .unwrap()
            .len(),
        recs.len() + 1
    );
}

#[test]
fn merged_key_index_tiers_stay_few_and_change_no_answer() {
    let tiered = tempfile::tempdir().unwrap();
    let plain = tempfile::tempdir().unwrap();
    let open = |dir: &Path, merge: bool| {
        Db::builder(dir)
            .segment_size(4096)
            .auto_merge(merge)
            .open()
            .unwrap()
    };
    {
        let (a, b) = (open(tiered.path(), true), open(plain.path(), false));
        for i in 0..900u64 {
            let mut batch = Batch::new();
            for j in 0..3u64 {
                let key = format!("k{}", (i * 7 + j) % 41);
                let value = format!(r#"{{"i":{i},"pad":"{}"}}"#, "z".repeat(60));
                batch
                    .put_at("s", key, value, ((i * 13) % 500) as i64)
                    .unwrap();
            }
            a.writer().commit(batch.clone()).unwrap();
            b.writer().commit(batch).unwrap();
        }
    } // dropping joins the background merge
    let (a, b) = (open(tiered.path(), true), open(plain.path(), false));
    let sa = a.snapshot().unwrap();
    let sb = b.snapshot().unwrap();
    let state = sa.view().state();
    assert!(state.sealed.len() > 60, "{} segments", state.sealed.len());
    assert!(!state.merged.is_empty(), "no tier found on reopen");
    eprintln!(
        "{} sealed segments, tiers of {:?} segments",
        state.sealed.len(),
        state.merged.iter().map(|m| m.segments).collect::<Vec<_>>()
    );
    assert!(state.merged.len() <= 8, "{} tiers", state.merged.len());
    assert_eq!(state.merged[0].cover_start, state.sealed[0].base);
    for w in state.merged.windows(2) {
        assert_eq!(w[0].cover_end, w[1].cover_start, "tiers tile the log");
        assert!(
            w[0].segments >= w[1].segments,
            "older tiers are not smaller"
        );
    }
    for t in [0, 100, 250, 499] {
        let rows = |s: &tablelog::Snapshot| {
            s.table("s", t, None)
                .unwrap()
                .map(|r| r.unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(rows(&sa), rows(&sb), "table as of {t}");
        for k in 0..41 {
            let key = format!("k{k}");
            assert_eq!(
                sa.get("s", key.as_bytes(), t, None).unwrap(),
                sb.get("s", key.as_bytes(), t, None).unwrap()
            );
            assert_eq!(
                sa.view().versions("s", key.as_bytes()).unwrap(),
                sb.view().versions("s", key.as_bytes()).unwrap()
            );
        }
    }
    let files = fs::read_dir(tiered.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("index-")
        })
        .count();
    assert_eq!(
        files,
        state.merged.len(),
        "replaced tiers' files are removed"
    );
}

/// Key index files are checked as lookups read them, so damage past the
/// header is found in the middle of a query: the lookup then runs again
/// without the damaged file (a segment's own index rebuilt from the
/// segment, and rewritten by a writable handle; a merged index left for
/// the segments' own), and every answer is the undamaged one.
#[test]
fn damage_a_lookup_finds_mid_query_changes_no_answer() {
    let src = tempfile::tempdir().unwrap();
    let open = |dir: &Path| {
        Db::builder(dir)
            .segment_size(64 << 10)
            .auto_merge(false)
            .checkpoint_every(0)
            .open()
            .unwrap()
    };
    {
        let db = open(src.path());
        let mut b = Batch::new();
        for i in 0..6000i64 {
            let key = format!("key-{:05}", (i * 7919) % 2500);
            b.put_at("s", key, format!(r#"{{"i":{i}}}"#), i).unwrap();
            if i % 500 == 499 {
                db.writer().commit(std::mem::take(&mut b)).unwrap();
            }
        }
    }
    type Probe = (Vec<Option<u64>>, Vec<tablelog::Row>);
    let probe = |db: &Db| -> Probe {
        let s = db.snapshot().unwrap();
        let gets = (0..2500)
            .flat_map(|k| [1500, 4000, i64::MAX].map(|t| (k, t)))
            .map(|(k, t)| {
                let key = format!("key-{k:05}");
                let v = s.view().newest_visible("s", key.as_bytes(), t, u64::MAX);
                v.unwrap().map(|v| v.position)
            })
            .collect();
        let table = s
            .table("s", 3000, None)
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        (gets, table)
    };
    let want = probe(&open(src.path()));
    let kidx = segments(src.path())[1].with_extension("kidx");
    let original = fs::read(&kidx).unwrap();
    assert!(original.len() > 8 * 4096, "{} bytes", original.len());
    let body = original.len() - 12 - 4 * (original.len() / 4097 + 1);
    let work = tempfile::tempdir().unwrap();
    // A segment's own index: chunk 0 holds the header (checked at open);
    // a byte in each later chunk of the body.
    for at in (4096 + 100..body).step_by(4096) {
        let d = work.path().join(format!("own-{at}"));
        copy_dir(src.path(), &d);
        let mut bad = original.clone();
        bad[at] ^= 0x10;
        fs::write(d.join(kidx.file_name().unwrap()), &bad).unwrap();
        let db = open(&d);
        assert_eq!(probe(&db), want, "flip at {at}");
        drop(db);
        // The lookup that found it rebuilt the index and rewrote it.
        assert_eq!(
            fs::read(d.join(kidx.file_name().unwrap())).unwrap(),
            original,
            "flip at {at}"
        );
        fs::remove_dir_all(&d).unwrap();
    }
    // A merged index over every sealed segment.
    open(src.path()).merge_key_indexes().unwrap();
    let tier = fs::read_dir(src.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("index-")
        })
        .unwrap();
    let original = fs::read(&tier).unwrap();
    let body = original.len() - 12 - 4 * (original.len() / 4097 + 1);
    for at in (4096 + 100..body).step_by(4096) {
        let mut bad = original.clone();
        bad[at] ^= 0x10;
        fs::write(&tier, &bad).unwrap();
        let db = Db::builder(src.path()).read_only(true).open().unwrap();
        let s = db.snapshot().unwrap();
        assert_eq!(probe(&db), want, "flip at {at}");
        let merged = &s.view().state().merged[0];
        assert!(merged.index().is_none(), "flip at {at} went unnoticed");
    }
}
