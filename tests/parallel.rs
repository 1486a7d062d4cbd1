//! Joins and windows large enough to be answered on several threads give the
//! same answers as the same requests asked a thousand at a time (one thread),
//! through both access paths. (On a machine with one core, both are answered
//! on one thread.)

use std::sync::Arc;

use tablelog::rng::Rng;
use tablelog::{AccessPath, Agg, Batch, Db, JsonMergePatch, Request, Row};

const KEYS: u64 = 300;
const REQUESTS: usize = 30_000;
/// Below the size at which a join or window uses a second thread.
const SMALL: usize = 1_000;

fn db() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::builder(dir.path())
        .default_merge_operator(Arc::new(JsonMergePatch))
        .open()
        .unwrap();
    let mut rng = Rng(8);
    for _ in 0..40 {
        let mut b = Batch::new();
        for _ in 0..250 {
            let stream = if rng.below(3) == 0 { "t" } else { "s" };
            let key = format!("key{:03}", rng.below(KEYS));
            let t = rng.below(100_000) as i64;
            let price = rng.below(1000);
            match rng.below(20) {
                0 => b.delete_at(stream, &key, t).unwrap(),
                1..=4 => b
                    .patch_at(stream, &key, format!(r#"{{"extra":{price}}}"#), t)
                    .unwrap(),
                _ => b
                    .put_at(stream, &key, format!(r#"{{"price":{price}}}"#), t)
                    .unwrap(),
            };
        }
        db.writer().commit(b).unwrap();
    }
    (dir, db)
}

fn requests() -> Vec<Request> {
    let mut rng = Rng(9);
    (0..REQUESTS)
        .map(|_| Request {
            key: format!("key{:03}", rng.below(KEYS + 10)).into(),
            time: rng.below(110_000) as i64 - 5_000,
        })
        .collect()
}

#[test]
fn large_joins_answer_as_small_ones() {
    let (_dir, db) = db();
    let reqs = requests();
    for path in [AccessPath::Probe, AccessPath::Sweep] {
        let snap = db.snapshot().unwrap().with_access(path);
        for ttl in [None, Some(20_000)] {
            let big = snap.asof_join(&reqs, &["s", "t"], ttl, None).unwrap();
            let small: Vec<Vec<Option<Row>>> = reqs
                .chunks(SMALL)
                .flat_map(|c| snap.asof_join(c, &["s", "t"], ttl, None).unwrap())
                .collect();
            assert_eq!(big, small, "{path:?}, ttl {ttl:?}");
            for j in 0..2 {
                let found = big.iter().filter(|r| r[j].is_some()).count();
                assert!(found > REQUESTS / 4, "stream {j}: only {found} rows found");
            }
        }
    }
}

#[test]
fn large_windows_answer_as_small_ones() {
    let (_dir, db) = db();
    let reqs = requests();
    for path in [AccessPath::Probe, AccessPath::Sweep] {
        let snap = db.snapshot().unwrap().with_access(path);
        for agg in [Agg::Count, Agg::Avg, Agg::Max] {
            let big = snap.window("s", "price", agg, 7_000, &reqs, None).unwrap();
            let small: Vec<Option<f64>> = reqs
                .chunks(SMALL)
                .flat_map(|c| snap.window("s", "price", agg, 7_000, c, None).unwrap())
                .collect();
            assert_eq!(big, small, "{path:?}, {agg:?}");
            let some = big.iter().filter(|v| v.is_some_and(|x| x > 0.0)).count();
            assert!(some > REQUESTS / 4, "only {some} non-empty windows");
        }
    }
}
