//! Checkpoints change how fast a table comes, never what it is: late events,
//! late patches and deletes that land before a checkpoint's time are folded in the
//! right order, for every as-of time and known-at position.

use std::sync::Arc;

use tablelog::workload::Rng;
use tablelog::{Batch, Db, JsonMergePatch, Result, Row, Table};

fn open(dir: &std::path::Path) -> Db {
    Db::builder(dir)
        .segment_size(8192)
        .default_merge_operator(Arc::new(JsonMergePatch))
        .open()
        .unwrap()
}

/// A second, read-only handle: a fresh open that loads the checkpoint catalog.
fn reader(dir: &std::path::Path) -> Db {
    Db::builder(dir)
        .read_only(true)
        .default_merge_operator(Arc::new(JsonMergePatch))
        .open()
        .unwrap()
}

fn rows(t: impl Iterator<Item = Result<Row>>) -> Vec<(Vec<u8>, Vec<u8>, i64, u64)> {
    t.map(|r| {
        let r = r.unwrap();
        (r.key.to_vec(), r.value.to_vec(), r.event_time, r.position)
    })
    .collect()
}

/// [`rows`], read borrowed through [`Table::next_ref`].
fn ref_rows(mut t: Table) -> Vec<(Vec<u8>, Vec<u8>, i64, u64)> {
    let mut out = Vec::new();
    while let Some(r) = t.next_ref() {
        let r = r.unwrap();
        out.push((r.key.to_vec(), r.value.to_vec(), r.event_time, r.position));
    }
    out
}

/// Appends `n` random batches: puts, patches, deletes, event times out of order.
/// Keys are short, 16 bytes, or longer (compared by their first 16 bytes as
/// one integer, then in full).
fn append(db: &Db, rng: &mut Rng, n: usize) {
    for _ in 0..n {
        let mut b = Batch::new();
        for _ in 0..=rng.below(3) {
            let key = match rng.below(12) {
                k if k % 3 == 0 => format!("k{k}"),
                k if k % 3 == 1 => format!("{k:016}"),
                k => format!("{k:020}-long"),
            };
            let t = rng.below(1000) as i64;
            match rng.below(10) {
                0 => b.delete_at("s", &key, t).unwrap(),
                1..=3 => b
                    .patch_at(
                        "s",
                        &key,
                        format!(r#"{{"p{}":{}}}"#, rng.below(3), rng.below(100)),
                        t,
                    )
                    .unwrap(),
                _ => b
                    .put_at("s", &key, format!(r#"{{"v":{}}}"#, rng.below(1000)), t)
                    .unwrap(),
            };
        }
        db.writer().commit(b).unwrap();
    }
}

#[test]
fn checkpointed_tables_equal_tables_from_scratch() {
    let mut rng = Rng(99);
    let mut used = 0;
    for round in 0..12 {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        append(&db, &mut rng, 40);
        let ck_t = rng.below(1000) as i64;
        let info = db.checkpoint("s", Some(ck_t)).unwrap();
        assert_eq!(info.as_of, ck_t);
        // Late events, patches and deletes, many with event times before ck_t.
        append(&db, &mut rng, 10 + round);
        if round % 2 == 1 {
            // A checkpoint built from the first plus its tail: its rows'
            // settled flags come from that merge, and must hold for the next.
            let t2 = ck_t + rng.below(200) as i64;
            assert!(db
                .snapshot()
                .unwrap()
                .table("s", t2, None)
                .unwrap()
                .from_checkpoint());
            db.checkpoint("s", Some(t2)).unwrap();
            append(&db, &mut rng, 10);
        }
        for reopen in [false, true] {
            let db = if reopen {
                reader(dir.path())
            } else {
                db.clone()
            };
            let snap = db.snapshot().unwrap();
            let end = snap.end_position();
            for _ in 0..40 {
                let t = rng.below(1100) as i64 - 50;
                let k = if rng.below(3) == 0 {
                    None
                } else {
                    Some(rng.below(end))
                };
                let fast = snap.table("s", t, k).unwrap();
                used += usize::from(fast.from_checkpoint());
                let want = rows(snap.table_from_scratch("s", t, k).unwrap());
                let what = format!("round {round} as of {t} known at {k:?}");
                assert_eq!(rows(fast), want, "{what}");
                assert_eq!(ref_rows(snap.table("s", t, k).unwrap()), want, "{what}");
                assert_eq!(
                    ref_rows(snap.table_from_scratch("s", t, k).unwrap()),
                    want,
                    "{what}"
                );
            }
        }
    }
    assert!(used > 100, "checkpoints were used only {used} times");
}

#[test]
fn a_late_patch_before_the_checkpoint_time_lands_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let w = db.writer();
    let mut b = Batch::new();
    b.put_at("s", "a", r#"{"v":1}"#, 10).unwrap();
    b.put_at("s", "a", r#"{"v":3}"#, 30).unwrap();
    b.put_at("s", "b", r#"{"v":1}"#, 10).unwrap();
    w.commit(b).unwrap();
    db.checkpoint("s", Some(50)).unwrap();
    let mut late = Batch::new();
    late.patch_at("s", "a", r#"{"late":true}"#, 20).unwrap(); // before v:3 in event time
    late.put_at("s", "b", r#"{"v":0}"#, 5).unwrap(); // older than the row it would replace
    w.commit(late).unwrap();
    let snap = db.snapshot().unwrap();
    let t = snap.table("s", 60, None).unwrap();
    assert!(t.from_checkpoint());
    let got = rows(t);
    assert_eq!(
        got[0].1, br#"{"v":3}"#,
        "the put at 30 still wins over the late patch at 20"
    );
    assert_eq!(
        got[1].1, br#"{"v":1}"#,
        "the late put at 5 does not replace the row from 10"
    );
    let as_of_25 = rows(snap.table("s", 25, None).unwrap());
    assert_eq!(as_of_25[0].1, br#"{"v":1,"late":true}"#);
    // As known before the late batch, the checkpoint alone answers.
    let before = rows(snap.table("s", 60, Some(2)).unwrap());
    assert_eq!(
        before,
        rows(snap.table_from_scratch("s", 60, Some(2)).unwrap())
    );
}

#[test]
fn a_damaged_checkpoint_is_never_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    append(&db, &mut Rng(5), 50);
    let info = db.checkpoint("s", None).unwrap();
    let expect = rows(
        db.snapshot()
            .unwrap()
            .table_from_scratch("s", i64::MAX, None)
            .unwrap(),
    );
    let original = std::fs::read(&info.path).unwrap();
    for at in (0..original.len()).step_by(7) {
        let mut bad = original.clone();
        bad[at] ^= 0x08;
        std::fs::write(&info.path, &bad).unwrap();
        let db = reader(dir.path());
        let t = db.snapshot().unwrap().table("s", i64::MAX, None).unwrap();
        assert!(!t.from_checkpoint(), "flip at {at} was trusted");
        assert_eq!(rows(t), expect, "flip at {at}");
        assert!(
            !tablelog::storage::verify::verify(dir.path())
                .unwrap()
                .is_clean(),
            "flip at {at} not reported"
        );
    }
}

#[test]
fn read_only_handles_cannot_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    append(&db, &mut Rng(1), 3);
    let ro = Db::builder(dir.path()).read_only(true).open().unwrap();
    assert!(matches!(
        ro.checkpoint("s", None),
        Err(tablelog::Error::ReadOnly)
    ));
}

#[test]
fn streams_are_checkpointed_automatically_every_n_records() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::builder(dir.path())
        .checkpoint_every(50)
        .default_merge_operator(Arc::new(JsonMergePatch))
        .open()
        .unwrap();
    for i in 0..12 {
        let mut b = Batch::new();
        for j in 0..10 {
            b.put_at(
                "s",
                format!("k{}", (i * 10 + j) % 17),
                format!(r#"{{"v":{i}}}"#),
                i * 10 + j,
            )
            .unwrap();
        }
        b.put_at("t", "x", "{}", i).unwrap();
        db.writer().commit(b).unwrap();
    }
    let cks = db.checkpoints();
    assert_eq!(cks.iter().filter(|c| c.stream == "s").count(), 2, "{cks:?}");
    assert_eq!(cks.iter().filter(|c| c.stream == "t").count(), 0);
    let snap = db.snapshot().unwrap();
    let t = snap.table("s", i64::MAX, None).unwrap();
    assert!(t.from_checkpoint());
    assert_eq!(
        rows(t),
        rows(snap.table_from_scratch("s", i64::MAX, None).unwrap())
    );
    // A streaming transaction counts too; 0 turns the policy off.
    let w = db.writer();
    let mut tx = w.transaction().unwrap();
    for j in 0..60 {
        tx.push("t", b"y", tablelog::Op::Put, b"{}", j).unwrap();
    }
    tx.commit().unwrap();
    assert_eq!(
        db.checkpoints().iter().filter(|c| c.stream == "t").count(),
        1
    );
    drop((w, snap, db));
    let off = Db::builder(dir.path()).checkpoint_every(0).open().unwrap();
    let before = off.checkpoints().len();
    let mut b = Batch::new();
    for j in 0..200 {
        b.put_at("s", "z", "{}", j).unwrap();
    }
    off.writer().commit(b).unwrap();
    assert_eq!(off.checkpoints().len(), before);
}

#[test]
fn late_records_after_the_checkpoint_row_apply_on_top_and_the_others_refold() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let w = db.writer();
    let mut b = Batch::new();
    b.put_at("s", "a", r#"{"v":1}"#, 10).unwrap();
    b.patch_at("s", "a", r#"{"p":20}"#, 20).unwrap();
    b.put_at("s", "b", r#"{"v":1}"#, 10).unwrap();
    b.put_at("s", "c", r#"{"v":1}"#, 10).unwrap();
    b.delete_at("s", "c", 20).unwrap();
    b.put_at("s", "d", r#"{"v":1}"#, 10).unwrap();
    b.delete_at("s", "d", 20).unwrap();
    w.commit(b).unwrap();
    db.checkpoint("s", Some(30)).unwrap();
    let mut late = Batch::new();
    // Before the patch the checkpoint applied last: must refold under it.
    late.patch_at("s", "a", r#"{"p":15,"q":15}"#, 15).unwrap();
    // After the put the checkpoint applied last: on top.
    late.put_at("s", "b", r#"{"v":25}"#, 25).unwrap();
    // A deleted key (no checkpoint row): before the tombstone, still deleted;
    late.put_at("s", "c", r#"{"v":15}"#, 15).unwrap();
    // after it, present again.
    late.put_at("s", "d", r#"{"v":25}"#, 25).unwrap();
    w.commit(late).unwrap();
    let snap = db.snapshot().unwrap();
    for t in [30, 40] {
        let fast = snap.table("s", t, None).unwrap();
        assert!(fast.from_checkpoint());
        let got = rows(fast);
        assert_eq!(got, rows(snap.table_from_scratch("s", t, None).unwrap()));
        assert_eq!(ref_rows(snap.table("s", t, None).unwrap()), got);
        let values: Vec<(String, String)> = got
            .iter()
            .map(|(k, v, _, _)| {
                (
                    String::from_utf8_lossy(k).into(),
                    String::from_utf8_lossy(v).into(),
                )
            })
            .collect();
        assert_eq!(
            values,
            vec![
                ("a".into(), r#"{"v":1,"p":20,"q":15}"#.into()),
                ("b".into(), r#"{"v":25}"#.into()),
                ("d".into(), r#"{"v":25}"#.into()),
            ]
        );
    }
}

/// A row whose last record was a put is settled: late records that sort
/// before it (puts, patches, deletes) cannot change it, so they are skipped
/// without a refold, and the answer is still the one from scratch. A row whose
/// last record was a patch is not, and refolds under a late record.
#[test]
fn late_records_under_a_settled_row_are_shadowed() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let w = db.writer();
    let mut b = Batch::new();
    b.put_at("s", "a", r#"{"v":1}"#, 10).unwrap();
    b.patch_at("s", "a", r#"{"p":1}"#, 20).unwrap();
    b.put_at("s", "a", r#"{"v":2}"#, 30).unwrap(); // settled
    b.put_at("s", "b", r#"{"v":1}"#, 10).unwrap();
    b.patch_at("s", "b", r#"{"p":1}"#, 30).unwrap(); // not settled
    w.commit(b).unwrap();
    db.checkpoint("s", Some(40)).unwrap();
    let mut late = Batch::new();
    late.delete_at("s", "a", 25).unwrap();
    late.patch_at("s", "a", r#"{"q":1}"#, 26).unwrap();
    late.put_at("s", "a", r#"{"v":9}"#, 29).unwrap();
    late.put_at("s", "b", r#"{"v":9}"#, 20).unwrap(); // between the put and the patch
    w.commit(late).unwrap();
    for reopen in [false, true] {
        let db = if reopen {
            reader(dir.path())
        } else {
            db.clone()
        };
        let snap = db.snapshot().unwrap();
        for t in [40, 50] {
            let fast = snap.table("s", t, None).unwrap();
            assert!(fast.from_checkpoint());
            let got = rows(fast);
            assert_eq!(got, rows(snap.table_from_scratch("s", t, None).unwrap()));
            let values: Vec<&[u8]> = got.iter().map(|(_, v, _, _)| &v[..]).collect();
            assert_eq!(
                values,
                vec![&br#"{"v":2}"#[..], &br#"{"v":9,"p":1}"#[..]],
                "as of {t}"
            );
        }
    }
}

/// Each stream keeps its newest checkpoints only (2 by default): older ones are
/// removed when a new one is taken, including ones an earlier process left;
/// other streams' are untouched; tables as of any time stay what they were.
#[test]
fn only_the_newest_checkpoints_of_a_stream_are_kept() {
    let files = |dir: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir.join("checkpoints"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    for (kept, want) in [(None, 2), (Some(3), 3), (Some(usize::MAX), 5)] {
        let dir = tempfile::tempdir().unwrap();
        let builder = || {
            let b = Db::builder(dir.path())
                .segment_size(8192)
                .checkpoint_every(0)
                .default_merge_operator(Arc::new(JsonMergePatch));
            match kept {
                Some(n) => b.checkpoints_kept(n),
                None => b,
            }
        };
        let db = builder().open().unwrap();
        let mut rng = Rng(5);
        let mut b = Batch::new();
        b.put_at("other", "x", "{}", 0).unwrap();
        db.writer().commit(b).unwrap();
        db.checkpoint("other", None).unwrap();
        let mut taken = Vec::new();
        for i in 0..5 {
            append(&db, &mut rng, 20);
            taken.push(db.checkpoint("s", Some(i * 200)).unwrap());
        }
        let names = files(dir.path());
        assert_eq!(names.len(), want + 1, "{kept:?}: {names:?}");
        assert_eq!(names.iter().filter(|n| n.starts_with("other@")).count(), 1);
        for (i, info) in taken.iter().enumerate() {
            let name = info
                .path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            assert_eq!(
                names.contains(&name),
                i >= 5 - want,
                "{kept:?}: checkpoint {i}"
            );
        }
        assert_eq!(db.checkpoints().len(), want + 1);
        let snap = db.snapshot().unwrap();
        for t in [-1, 100, 350, 799, 2000] {
            assert_eq!(
                rows(snap.table("s", t, None).unwrap()),
                rows(snap.table_from_scratch("s", t, None).unwrap()),
                "{kept:?} as of {t}"
            );
        }
        drop(snap);
        drop(db);
        if kept.is_none() {
            // A process that kept everything left 5; the next checkpoint by a
            // default handle trims them to 2.
            let all = Db::builder(dir.path())
                .checkpoints_kept(usize::MAX)
                .default_merge_operator(Arc::new(JsonMergePatch))
                .open()
                .unwrap();
            for i in 0..3 {
                append(&all, &mut rng, 5);
                all.checkpoint("s", Some(1000 + i)).unwrap();
            }
            assert_eq!(files(dir.path()).len(), 5 + 1);
            drop(all);
            let db = builder().open().unwrap();
            append(&db, &mut rng, 5);
            db.checkpoint("s", None).unwrap();
            assert_eq!(files(dir.path()).len(), 2 + 1);
        }
    }
}

/// Checkpoints, merges and index validation give the mapped pages of key
/// indexes back to the page cache as they read them: reads that follow, or
/// that are in the middle of a scan, see the same bytes.
#[test]
fn released_index_pages_read_back_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let mut rng = Rng(5);
    append(&db, &mut rng, 400);
    db.merge_key_indexes().unwrap();
    append(&db, &mut rng, 100);
    let snap = db.snapshot().unwrap();
    let want = rows(snap.table_from_scratch("s", i64::MAX, None).unwrap());
    assert!(!want.is_empty());
    let mut released = 0;
    let got = rows(
        snap.table_from_scratch("s", i64::MAX, None)
            .unwrap()
            .inspect(|_| released += snap.view().release_index_pages()),
    );
    assert!(
        released > 0,
        "the key indexes are mapped files (length advised)"
    );
    assert_eq!(got, want);
    for k in 0..12 {
        let key = format!("k{k}");
        let before = snap.get("s", key.as_bytes(), 500, None).unwrap();
        snap.view().release_index_pages();
        assert_eq!(snap.get("s", key.as_bytes(), 500, None).unwrap(), before);
    }
    db.checkpoint("s", None).unwrap();
    let snap = db.snapshot().unwrap();
    assert_eq!(rows(snap.table("s", i64::MAX, None).unwrap()), want);
    drop(snap);
    drop(db);
    let again = reader(dir.path());
    let snap = again.snapshot().unwrap();
    assert_eq!(rows(snap.table("s", i64::MAX, None).unwrap()), want);
}

/// Keys longer than 16 bytes that share their first 16 sort by their bytes in
/// a checkpoint's tail, not by their lengths: the 18-byte key below sorts
/// before the 17-byte one. Sorted by length, the merge returned the 18-byte
/// key's old row from the checkpoint, then both keys again.
#[test]
fn long_keys_in_the_tail_merge_in_byte_order() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let (k17, k18) = ("0123456789abcdefz", "0123456789abcdefaa");
    let mut b = Batch::new();
    b.put_at("s", k18, r#"{"v":1}"#, 10).unwrap();
    db.writer().commit(b).unwrap();
    db.checkpoint("s", Some(20)).unwrap();
    let mut b = Batch::new();
    b.put_at("s", k17, r#"{"v":2}"#, 30).unwrap();
    b.put_at("s", k18, r#"{"v":3}"#, 30).unwrap();
    db.writer().commit(b).unwrap();
    let snap = db.snapshot().unwrap();
    let fast = snap.table("s", 40, None).unwrap();
    assert!(fast.from_checkpoint());
    let got = rows(fast);
    assert_eq!(got, rows(snap.table_from_scratch("s", 40, None).unwrap()));
    let keys: Vec<&[u8]> = got.iter().map(|r| &r.0[..]).collect();
    assert_eq!(keys, [k18.as_bytes(), k17.as_bytes()]);
    assert_eq!(got[0].1, br#"{"v":3}"#);
}

/// `table` starts from a checkpoint while its tail holds at most as many
/// records as the checkpoint has rows (and at least 1,024), counting late
/// records before its position as well as every record after it; one more
/// and it starts from scratch. Both give the same rows.
#[test]
fn a_tail_over_the_budget_starts_from_scratch() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let put = |key: String, t: i64| {
        let mut b = Batch::new();
        b.put_at("s", key, r#"{"v":1}"#, t).unwrap();
        db.writer().commit(b).unwrap();
    };
    for i in 0..10 {
        put(format!("k{i}"), i);
    }
    // Before the checkpoint's position, after its time: the older part of the tail.
    for i in 0..500 {
        put(format!("k{}", i % 40), 1000 + i);
    }
    let info = db.checkpoint("s", Some(100)).unwrap();
    assert_eq!(info.rows, 10);
    for i in 0..524 {
        put(format!("k{}", i % 40), 2000 + i);
    }
    let check = |from_checkpoint: bool| {
        let snap = db.snapshot().unwrap();
        let t = snap.table("s", 10_000, None).unwrap();
        assert_eq!(t.from_checkpoint(), from_checkpoint);
        let want = rows(snap.table_from_scratch("s", 10_000, None).unwrap());
        assert_eq!(rows(t), want);
    };
    check(true);
    put("k0".into(), 3000);
    check(false);
}

/// A tail larger in bytes than the checkpoint's rows (and than 1 MiB) starts
/// from scratch too, however few its records: the tail is copied to memory.
#[test]
fn a_tail_over_the_byte_budget_starts_from_scratch() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let mut b = Batch::new();
    b.put_at("s", "k", r#"{"v":1}"#, 1).unwrap();
    db.writer().commit(b).unwrap();
    db.checkpoint("s", Some(1)).unwrap();
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(4000));
    let mut t = 2;
    let mut check = |n: usize, from_checkpoint: bool| {
        for _ in 0..n {
            let mut b = Batch::new();
            b.put_at("s", format!("k{}", t % 7), &big, t).unwrap();
            db.writer().commit(b).unwrap();
            t += 1;
        }
        let snap = db.snapshot().unwrap();
        let table = snap.table("s", i64::MAX / 2, None).unwrap();
        assert_eq!(
            table.from_checkpoint(),
            from_checkpoint,
            "after {t} records"
        );
        let want = rows(snap.table_from_scratch("s", i64::MAX / 2, None).unwrap());
        assert_eq!(rows(table), want);
    };
    check(200, true); // 0.8 MB
    check(100, false); // 1.2 MB, 300 records
}

/// A patch followed by a put in the tail never needs the merge operator: the
/// put replaces whatever the patch made, on both paths (a stream without an
/// operator used to fail only from a checkpoint).
#[test]
fn a_superseded_patch_needs_no_merge_operator() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::builder(dir.path()).segment_size(8192).open().unwrap();
    let mut b = Batch::new();
    b.put_at("s", "k", r#"{"v":1}"#, 1).unwrap();
    db.writer().commit(b).unwrap();
    db.checkpoint("s", Some(5)).unwrap();
    let mut b = Batch::new();
    b.patch_at("s", "k", r#"{"w":2}"#, 10).unwrap();
    b.put_at("s", "k", r#"{"v":3}"#, 20).unwrap();
    db.writer().commit(b).unwrap();
    let snap = db.snapshot().unwrap();
    let table = snap.table("s", 30, None).unwrap();
    assert!(table.from_checkpoint());
    let got = rows(table);
    assert_eq!(got, rows(snap.table_from_scratch("s", 30, None).unwrap()));
    assert_eq!(got[0].1, br#"{"v":3}"#);
    // Between the two, the patch applies: no operator, an error on both paths.
    assert!(snap.table("s", 15, None).unwrap().next().unwrap().is_err());
    assert!(snap
        .table_from_scratch("s", 15, None)
        .unwrap()
        .next()
        .unwrap()
        .is_err());
}

/// Checkpoints, key index merges and compaction walk whole key indexes
/// through bulk cursors, which copy them a window at a time; tables read
/// them in place. On indexes many windows long, with hot keys, they agree.
#[test]
fn bulk_walks_over_large_indexes_read_what_lookups_read() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::builder(dir.path())
        .segment_size(1 << 20)
        .default_merge_operator(Arc::new(JsonMergePatch))
        .auto_merge(false)
        .checkpoint_every(0)
        .open()
        .unwrap();
    let mut rng = Rng(2024);
    for batch in 0..40 {
        let mut b = Batch::new();
        for _ in 0..1500 {
            // A hot key with more versions than a window holds (in each
            // segment, and merged), the rest spread out.
            let k = if rng.below(10) == 0 {
                0
            } else {
                rng.below(30_000)
            };
            let key = format!("{k:016}");
            let t = batch * 1000 + rng.below(5000) as i64;
            match rng.below(10) {
                0 => b.delete_at("s", &key, t).unwrap(),
                1 => b.patch_at("s", &key, r#"{"p":1}"#, t).unwrap(),
                _ => b.put_at("s", &key, format!(r#"{{"v":{t}}}"#), t).unwrap(),
            };
        }
        db.writer().commit(b).unwrap();
    }
    let times = [5_000i64, 20_000, 44_000];
    let scratch = |db: &Db, t: i64| {
        rows(
            db.snapshot()
                .unwrap()
                .table_from_scratch("s", t, None)
                .unwrap(),
        )
    };
    let want: Vec<_> = times.iter().map(|&t| scratch(&db, t)).collect();
    assert!(want[2].len() > 20_000);
    for (&t, want) in times.iter().zip(&want) {
        db.checkpoint("s", Some(t)).unwrap();
        let table = db.snapshot().unwrap().table("s", t, None).unwrap();
        assert!(table.from_checkpoint());
        assert_eq!(rows(table), *want, "checkpoint as of {t}");
    }
    db.merge_key_indexes().unwrap();
    for (&t, want) in times.iter().zip(&want) {
        assert_eq!(scratch(&db, t), *want, "merged index, as of {t}");
    }
    db.compact(20_000, &mut |_, _| {}).unwrap();
    for (&t, want) in times.iter().zip(&want).skip(1) {
        assert_eq!(scratch(&db, t), *want, "compacted, as of {t}");
    }
}

/// A checkpoint is fsynced; the records it reflects must be too. Otherwise a
/// power loss can keep the checkpoint and lose its records, and once new
/// records reuse their positions the checkpoint answers for records the log
/// no longer has. Every crash state of the checkpoint's trace is reopened,
/// overwritten with other records, and its table compared with the log's.
#[test]
fn a_checkpoint_never_outlives_the_records_it_reflects() {
    use tablelog::storage::vfs::{crash_image, OsVfs, RecordingVfs};
    let src = tempfile::tempdir().unwrap();
    let rec = RecordingVfs::new(Arc::new(OsVfs));
    {
        let db = Db::builder(src.path())
            .vfs(Arc::new(rec.clone()))
            .background_seal(false)
            .open()
            .unwrap();
        let mut b = Batch::new();
        for i in 0..20u32 {
            b.put_at("s", format!("lost{i}"), br#"{"v":1}"#, 1_000)
                .unwrap();
        }
        db.writer().commit(b).unwrap();
        db.checkpoint("s", Some(1_000)).unwrap();
    }
    let trace = rec.trace();
    let work = tempfile::tempdir().unwrap();
    for seed in 0..8 {
        let out = work.path().join(format!("s{seed}"));
        crash_image(&trace, trace.len(), seed, src.path(), &out).unwrap();
        let db = Db::open(&out).unwrap();
        let mut b = Batch::new();
        for i in 0..40u32 {
            b.put_at("s", format!("new{i:02}"), br#"{"v":2}"#, 500)
                .unwrap();
        }
        db.writer().commit(b).unwrap();
        let snap = db.snapshot().unwrap();
        let got: Vec<Vec<u8>> = rows(snap.table("s", 1_000, tablelog::KnownAt::Latest).unwrap())
            .into_iter()
            .map(|r| r.0)
            .collect();
        // Every record is a put at or before 1000 of its own key.
        let mut want: Vec<Vec<u8>> = Vec::new();
        for r in snap.view().scan(0, Some("s")) {
            want.push(r.unwrap().key.to_vec());
        }
        want.sort();
        assert_eq!(
            got.iter()
                .map(|k| String::from_utf8_lossy(k))
                .collect::<Vec<_>>(),
            want.iter()
                .map(|k| String::from_utf8_lossy(k))
                .collect::<Vec<_>>(),
            "seed {seed}"
        );
    }
}

/// A checkpoint reflecting positions past the log's end (written, by an older
/// version, before its records were synced, then a power loss) is dropped on
/// opening, before new records can reuse those positions.
#[test]
fn a_checkpoint_past_the_log_end_is_dropped_on_open() {
    let (big, small) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let put = |db: &Db, prefix: &str, n: u32| {
        let mut b = Batch::new();
        for i in 0..n {
            b.put_at("s", format!("{prefix}{i:02}"), br#"{"v":1}"#, 1_000)
                .unwrap();
        }
        db.writer().commit(b).unwrap();
    };
    let info = {
        let db = open(big.path());
        put(&db, "lost", 30);
        db.checkpoint("s", Some(1_000)).unwrap()
    };
    {
        let db = open(small.path());
        put(&db, "kept", 5);
    }
    let dir = small.path().join("checkpoints");
    std::fs::create_dir_all(&dir).unwrap();
    let copied = dir.join(info.path.file_name().unwrap());
    std::fs::copy(&info.path, &copied).unwrap();
    // A read-only handle ignores it and leaves it.
    assert!(reader(small.path()).checkpoints().is_empty());
    assert!(copied.exists());
    let db = open(small.path());
    assert!(db.checkpoints().is_empty());
    assert!(!copied.exists());
    put(&db, "new", 40);
    let snap = db.snapshot().unwrap();
    let keys: Vec<String> = rows(snap.table("s", 1_000, tablelog::KnownAt::Latest).unwrap())
        .into_iter()
        .map(|r| String::from_utf8(r.0).unwrap())
        .collect();
    assert_eq!(keys.len(), 45);
    assert!(keys.iter().all(|k| !k.starts_with("lost")), "{keys:?}");
}

/// Found by the model test (seed 63): a handle opened before a checkpoint was
/// replaced by another at the same position (another `as_of`, written by a
/// later handle) read the new file under the old one's header. Checkpoints of
/// one position now have their own files, and a handle uses a file only if
/// its header is the one it planned with.
#[test]
fn a_handle_never_reads_a_checkpoint_another_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let mut b = Batch::new();
    b.put_at("s", "a", br#"{"v":1}"#, 0).unwrap();
    db.writer().commit(b).unwrap();
    db.checkpoint("s", Some(0)).unwrap();
    let old = reader(dir.path()).snapshot().unwrap();
    drop(db);
    let db = open(dir.path());
    db.checkpoint("s", Some(i64::MIN)).unwrap();
    let got = rows(old.table("s", 0, tablelog::KnownAt::Latest).unwrap());
    assert_eq!(got.len(), 1, "{got:?}");
    let got = rows(
        db.snapshot()
            .unwrap()
            .table("s", 0, tablelog::KnownAt::Latest)
            .unwrap(),
    );
    assert_eq!(got.len(), 1, "{got:?}");
}
