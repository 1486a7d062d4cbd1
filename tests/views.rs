//! Materialized views equal a from-scratch recomputation after random appends
//! with out-of-order event times, late patches and deletes; they persist and
//! resume from the tail.

use std::collections::BTreeMap;
use std::sync::Arc;

use tablelog::workload::Rng;
use tablelog::{Agg, Batch, Db, Durability, GroupBy, JsonMergePatch, ViewDef};

fn open(dir: &std::path::Path) -> Db {
    open_with(dir, Durability::Buffered)
}

fn open_with(dir: &std::path::Path, durability: Durability) -> Db {
    Db::builder(dir)
        .segment_size(8192)
        .durability(durability)
        .default_merge_operator(Arc::new(JsonMergePatch))
        .open()
        .unwrap()
}

fn append(db: &Db, rng: &mut Rng, n: usize) {
    for _ in 0..n {
        let mut b = Batch::new();
        for _ in 0..=rng.below(3) {
            let key = format!("k{}", rng.below(15));
            let t = rng.below(1000) as i64;
            let cat = ["a", "b", "c"][rng.below(3) as usize];
            match rng.below(10) {
                0 => b.delete_at("s", &key, t).unwrap(),
                1..=3 => b
                    .patch_at(
                        "s",
                        &key,
                        format!(r#"{{"price":{},"cat":"{cat}"}}"#, rng.below(50)),
                        t,
                    )
                    .unwrap(),
                4 => b.patch_at("s", &key, r#"{"price":null}"#, t).unwrap(),
                _ => b
                    .put_at(
                        "s",
                        &key,
                        format!(r#"{{"price":{},"cat":"{cat}"}}"#, rng.below(100)),
                        t,
                    )
                    .unwrap(),
            };
        }
        db.writer().commit(b).unwrap();
    }
}

/// The expected aggregate per group, from the table as of every time.
fn expected(db: &Db, agg: Agg, by_cat: bool) -> Vec<(Vec<u8>, Option<f64>)> {
    let mut groups: BTreeMap<Vec<u8>, (u64, Vec<f64>)> = BTreeMap::new();
    for r in db
        .snapshot()
        .unwrap()
        .table_from_scratch("s", i64::MAX, None)
        .unwrap()
    {
        let r = r.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
        let g = if by_cat {
            match v.get("cat") {
                Some(serde_json::Value::String(s)) => s.as_bytes().to_vec(),
                _ => continue,
            }
        } else {
            r.key.to_vec()
        };
        let e = groups.entry(g).or_default();
        e.0 += 1;
        if let Some(x) = v.get("price").and_then(serde_json::Value::as_f64) {
            e.1.push(x);
        }
    }
    groups
        .into_iter()
        .map(|(g, (n, xs))| {
            let v = match agg {
                Agg::Count => Some(n as f64),
                _ if xs.is_empty() => None,
                Agg::Sum => Some(xs.iter().sum()),
                Agg::Avg => Some(xs.iter().sum::<f64>() / xs.len() as f64),
                Agg::Min => xs.iter().copied().reduce(f64::min),
                Agg::Max => xs.iter().copied().reduce(f64::max),
            };
            (g, v)
        })
        .collect()
}

fn close(a: &[(bytes::Bytes, Option<f64>)], b: &[(Vec<u8>, Option<f64>)]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((ga, va), (gb, vb))| {
            ga[..] == gb[..]
                && match (va, vb) {
                    (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(1.0),
                    (None, None) => true,
                    _ => false,
                }
        })
}

/// In both durabilities: with views registered, commits index their batches
/// themselves, after what the indexer thread still has from the commits
/// before the views (in sync durability too, where the syncer is told of a
/// batch before it is indexed).
#[test]
fn views_equal_recomputation_under_late_events() {
    for durability in [Durability::Buffered, Durability::Sync] {
        views_equal_recomputation(durability);
    }
}

fn views_equal_recomputation(durability: Durability) {
    let mut rng = Rng(2024);
    let dir = tempfile::tempdir().unwrap();
    let db = open_with(dir.path(), durability);
    append(&db, &mut rng, 20); // a view registered on an existing log backfills
    let table = db
        .register_view("latest", ViewDef::Table { stream: "s".into() }, &mut |_| {})
        .unwrap();
    let mut aggs = Vec::new();
    for (i, agg) in [Agg::Count, Agg::Sum, Agg::Avg, Agg::Min, Agg::Max]
        .into_iter()
        .enumerate()
    {
        for by_cat in [false, true] {
            let def = ViewDef::Aggregate {
                stream: "s".into(),
                field: "price".into(),
                agg,
                group_by: if by_cat {
                    GroupBy::Field("cat".into())
                } else {
                    GroupBy::Key
                },
            };
            aggs.push((
                db.register_view(&format!("agg{i}{by_cat}"), def, &mut |_| {})
                    .unwrap(),
                agg,
                by_cat,
            ));
        }
    }
    for step in 0..30 {
        append(&db, &mut rng, 3);
        let scratch: Vec<_> = db
            .snapshot()
            .unwrap()
            .table_from_scratch("s", i64::MAX, None)
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(table.rows(), scratch, "table view at step {step}");
        for (v, agg, by_cat) in &aggs {
            let want = expected(&db, *agg, *by_cat);
            assert!(
                close(&v.aggregates(), &want),
                "{} at step {step}: {:?} != {:?}",
                v.name(),
                v.aggregates(),
                want
            );
            for (g, x) in &want {
                let got = v.aggregate(g);
                assert_eq!(got.is_some(), x.is_some());
            }
        }
    }
}

#[test]
fn views_persist_and_resume_from_the_tail() {
    let mut rng = Rng(7);
    let dir = tempfile::tempdir().unwrap();
    let def = ViewDef::Aggregate {
        stream: "s".into(),
        field: "price".into(),
        agg: Agg::Sum,
        group_by: GroupBy::Field("cat".into()),
    };
    let saved_at;
    {
        let db = open(dir.path());
        append(&db, &mut rng, 40);
        let v = db
            .register_view("sum_by_cat", def.clone(), &mut |_| {})
            .unwrap();
        db.save_views().unwrap();
        saved_at = v.applied_end();
        append(&db, &mut rng, 10); // not saved: replayed on open
    }
    let db = open(dir.path());
    let mut applied = 0;
    let v = db
        .register_view("sum_by_cat", def, &mut |n| applied = n)
        .unwrap();
    let end = db.snapshot().unwrap().end_position();
    assert!(
        applied > 0 && applied == end - saved_at,
        "resumed from the saved position ({applied} applied)"
    );
    assert!(close(&v.aggregates(), &expected(&db, Agg::Sum, true)));
    append(&db, &mut rng, 10);
    assert!(close(&v.aggregates(), &expected(&db, Agg::Sum, true)));
    // A different definition under the same name starts over from the log.
    let v2 = db
        .register_view(
            "sum_by_cat",
            ViewDef::Aggregate {
                stream: "s".into(),
                field: "price".into(),
                agg: Agg::Max,
                group_by: GroupBy::Key,
            },
            &mut |_| {},
        )
        .unwrap();
    assert!(close(&v2.aggregates(), &expected(&db, Agg::Max, false)));
}

/// A saved view reflects only records already on disk: after a power loss at
/// any point of its saving, a reopened view that catches up over new records
/// equals a view built from scratch (see the checkpoint test of the same name).
#[test]
fn a_saved_view_never_outlives_the_records_it_reflects() {
    use tablelog::storage::vfs::{crash_image, OsVfs, RecordingVfs};
    let def = ViewDef::Table { stream: "s".into() };
    let src = tempfile::tempdir().unwrap();
    let rec = RecordingVfs::new(Arc::new(OsVfs));
    {
        let db = Db::builder(src.path())
            .vfs(Arc::new(rec.clone()))
            .background_seal(false)
            .open()
            .unwrap();
        db.register_view("latest", def.clone(), &mut |_| {})
            .unwrap();
        let mut b = Batch::new();
        for i in 0..20u32 {
            b.put_at("s", format!("lost{i}"), br#"{"v":1}"#, 1_000)
                .unwrap();
        }
        db.writer().commit(b).unwrap();
        db.save_views().unwrap();
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
        let resumed = db
            .register_view("latest", def.clone(), &mut |_| {})
            .unwrap();
        let fresh = db.register_view("fresh", def.clone(), &mut |_| {}).unwrap();
        let keys = |rows: Vec<tablelog::Row>| -> Vec<String> {
            let mut k: Vec<String> = rows
                .iter()
                .map(|r| String::from_utf8_lossy(&r.key).into_owned())
                .collect();
            k.sort();
            k
        };
        assert_eq!(keys(resumed.rows()), keys(fresh.rows()), "seed {seed}");
    }
}

/// Saved view state reflecting positions past the log's end (saved, by an older
/// version, before its records were synced, then a power loss) is rebuilt from
/// the log instead of resumed.
#[test]
fn a_view_saved_past_the_log_end_is_rebuilt() {
    past_the_log_end(false);
    past_the_log_end(true);
}

fn past_the_log_end(new_first: bool) {
    let def = ViewDef::Table { stream: "s".into() };
    let (big, small) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let put = |db: &Db, prefix: &str, n: u32| {
        let mut b = Batch::new();
        for i in 0..n {
            b.put_at("s", format!("{prefix}{i:02}"), br#"{"v":1}"#, 1_000)
                .unwrap();
        }
        db.writer().commit(b).unwrap();
    };
    {
        let db = open(big.path());
        db.register_view("latest", def.clone(), &mut |_| {})
            .unwrap();
        put(&db, "lost", 30);
        db.save_views().unwrap();
    }
    {
        let db = open(small.path());
        put(&db, "kept", 5);
    }
    std::fs::create_dir_all(small.path().join("views")).unwrap();
    std::fs::copy(
        big.path().join("views/latest.view"),
        small.path().join("views/latest.view"),
    )
    .unwrap();
    let db = open(small.path());
    // New records past the saved position first: the state must still be
    // judged against the log as it was found on opening.
    if new_first {
        put(&db, "new", 40);
    }
    let v = db.register_view("latest", def, &mut |_| {}).unwrap();
    let mut keys: Vec<String> = v
        .rows()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.key).into_owned())
        .collect();
    keys.sort();
    let mut want: Vec<String> = (0..5).map(|i| format!("kept{i:02}")).collect();
    if new_first {
        want.extend((0..40).map(|i| format!("new{i:02}")));
    }
    want.sort();
    assert_eq!(keys, want);
    assert_eq!(v.applied_end(), want.len() as u64);
}
