//! Operation sequences with a crash countdown: the input drives puts (two streams),
//! commits (sync durability; batches, or streaming transactions that may span
//! segments), dropped streaming transactions and reopens through a recording
//! file system; then a
//! crash is simulated after operation N of the trace (N from the input), and the
//! surviving database must hold every batch acknowledged before that point, whole,
//! in order, with nothing else but possibly later whole batches.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use tablelog::storage::vfs::{crash_image, OsVfs, RecordingVfs};
use tablelog::{Batch, Db, Durability, Op, Result};

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let countdown = usize::from(u16::from_le_bytes([data[0], data[1]]));
    let seed = u64::from(data[2]);
    let dir = tempfile::tempdir().unwrap();
    let rec = RecordingVfs::new(Arc::new(OsVfs));
    let open = || {
        Db::builder(dir.path())
            .durability(Durability::Sync)
            .segment_size(4096)
            .auto_merge(false)
            .background_seal(false)
            .vfs(Arc::new(rec.clone()))
            .open()
            .unwrap()
    };
    let mut db = open();
    // Model: committed batches, each a list of (stream, key, value), and the
    // trace length when each was acknowledged.
    let mut batches: Vec<Vec<(String, Vec<u8>, Vec<u8>)>> = Vec::new();
    let mut acked_at: Vec<usize> = Vec::new();
    let mut cur: Vec<(String, Vec<u8>, Vec<u8>)> = Vec::new();
    let mut i = 3;
    while i + 1 < data.len() && batches.len() < 64 {
        let (op, arg) = (data[i], data[i + 1]);
        i += 2;
        match op % 4 {
            0 | 1 => {
                let stream = if op & 4 == 0 { "a" } else { "b" };
                let key = vec![b'k', arg % 8];
                let value = vec![arg; usize::from(arg) * 7];
                cur.push((stream.to_string(), key, value));
            }
            2 => {
                if cur.is_empty() {
                    continue;
                }
                if op & 8 == 0 {
                    let mut b = Batch::new();
                    for (s, k, v) in &cur {
                        b.put_at(s, k, v, i64::from(arg)).unwrap();
                    }
                    db.writer().commit(b).unwrap();
                } else {
                    // Streaming: frames of 1 KiB in 4 KiB segments, so a
                    // large batch spans segments.
                    let w = db.writer();
                    let mut tx = w.transaction().unwrap();
                    for (s, k, v) in &cur {
                        tx.push(s, k, Op::Put, v, i64::from(arg)).unwrap();
                    }
                    tx.commit().unwrap();
                }
                batches.push(std::mem::take(&mut cur));
                acked_at.push(rec.trace().len());
            }
            _ if op & 8 != 0 && !cur.is_empty() => {
                // A streaming transaction dropped without commit.
                let w = db.writer();
                let mut tx = w.transaction().unwrap();
                for (s, k, v) in cur.drain(..) {
                    tx.push(&s, &k, Op::Put, &v, i64::from(arg)).unwrap();
                }
                drop(tx);
            }
            _ => {
                drop(db);
                db = open();
            }
        }
    }
    drop(db);
    let trace = rec.trace();
    let upto = countdown % (trace.len() + 1);
    let out = tempfile::tempdir().unwrap();
    crash_image(&trace, upto, seed, dir.path(), out.path()).unwrap();
    let must = acked_at.iter().filter(|&&at| at <= upto).count();
    let Ok(db) = Db::builder(out.path()).open() else {
        assert_eq!(must, 0, "database lost after {must} acknowledged batches");
        return;
    };
    let recs: Vec<_> = db.snapshot().unwrap().view().scan(0, None).collect::<Result<_>>().unwrap();
    let mut at = 0;
    let mut n = 0;
    while at < recs.len() {
        let want = &batches[n];
        assert!(at + want.len() <= recs.len(), "batch {n} partly visible");
        for (j, (s, k, v)) in want.iter().enumerate() {
            let r = &recs[at + j];
            assert_eq!((&*r.stream, &r.key[..], &r.value[..]), (s.as_str(), &k[..], &v[..]));
        }
        at += want.len();
        n += 1;
    }
    assert!(n >= must, "{must} batches acknowledged before the crash, {n} survived");
});
