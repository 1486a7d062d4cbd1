//! Fault injection through the storage seam: every operation of a mixed workload
//! (streaming transactions spanning segments included) failed in turn (once,
//! and forever), a full disk, and crash states enumerated
//! after every operation of a recorded trace with seeded subsets of unsynced
//! writes. Each time: nothing acknowledged is lost, no batch is partly visible,
//! positions stay gap-free, and `verify` finds no damage.

use std::path::Path;
use std::sync::Arc;

use tablelog::storage::vfs::{crash_image, FaultPlan, FaultyVfs, OsVfs, RecordingVfs, Vfs};
use tablelog::{Batch, Db, Durability, Error, JsonMergePatch, Op, Result};

/// Whether batch `i` is a streaming transaction large enough (24 records,
/// about 7 KB) to span two or three of the workload's 4 KiB segments.
fn spans(i: usize) -> bool {
    i % 8 == 6
}

/// The records of batch `i` (deterministic, 1–3 records over 3 streams, or 24
/// when it [`spans`]).
fn batch_records(i: usize) -> Vec<(String, String, Vec<u8>, i64)> {
    let n = if spans(i) { 24 } else { i % 3 + 1 };
    (0..n)
        .map(|j| {
            let stream = ["a", "b", "c"][(i + j) % 3].to_string();
            let key = format!("k{}-{j}", i % 5);
            let value = format!(
                r#"{{"batch":{i},"j":{j},"pad":"{}"}}"#,
                "x".repeat(40 + (i * 37) % 200)
            )
            .into_bytes();
            (stream, key, value, (i as i64 * 7919) % 1000)
        })
        .collect()
}

/// Runs the mixed workload (appends across streams with segment rolls, a
/// checkpoint half-way) until it completes or an operation fails. Returns how
/// many batches were acknowledged and the error, if any.
fn workload(
    dir: &Path,
    vfs: Arc<dyn Vfs>,
    batches: usize,
    on_ack: &mut dyn FnMut(usize),
) -> (usize, Option<Error>) {
    workload_with(dir, vfs, batches, false, on_ack)
}

/// [`workload`], with sidecars sealed in the background or not. Without, the
/// trace is deterministic: every operation has the same number in every run.
fn workload_with(
    dir: &Path,
    vfs: Arc<dyn Vfs>,
    batches: usize,
    background_seal: bool,
    on_ack: &mut dyn FnMut(usize),
) -> (usize, Option<Error>) {
    let db = match Db::builder(dir)
        .durability(Durability::Sync)
        .segment_size(4096)
        .default_merge_operator(Arc::new(JsonMergePatch))
        .auto_merge(false) // merged explicitly below, so the trace is deterministic
        .background_seal(background_seal)
        .vfs(vfs)
        .open()
    {
        Ok(db) => db,
        Err(e) => return (0, Some(e)),
    };
    let w = db.writer();
    for i in 0..batches {
        let committed = if spans(i) {
            w.transaction().and_then(|mut tx| {
                for (s, k, v, t) in batch_records(i) {
                    tx.push(&s, k.as_bytes(), Op::Put, &v, t)?;
                }
                tx.commit()
            })
        } else {
            let mut b = Batch::new();
            for (s, k, v, t) in batch_records(i) {
                b.put_at(&s, k, v, t).unwrap();
            }
            w.commit(b)
        };
        if let Err(e) = committed {
            return (i, Some(e));
        }
        on_ack(i + 1);
        if i == batches / 2 {
            if let Err(e) = db.checkpoint("a", None) {
                return (i + 1, Some(e));
            }
        }
        if i == batches * 3 / 4 {
            if let Err(e) = db.merge_key_indexes() {
                return (i + 1, Some(e));
            }
        }
    }
    (batches, None)
}

/// Opens what survived and checks it is whole batches `0..n` with `n >= acked`,
/// gap-free, with the right contents; returns `n`.
fn check_survivors(dir: &Path, acked: usize, context: &str) -> usize {
    let db = match Db::builder(dir).open() {
        Ok(db) => db,
        Err(Error::NotADatabase(_)) if acked == 0 => return 0,
        Err(e) => panic!("{context}: reopen failed: {e}"),
    };
    let recs: Vec<_> = db
        .snapshot()
        .unwrap()
        .view()
        .scan(0, None)
        .collect::<Result<_>>()
        .unwrap_or_else(|e| panic!("{context}: scan failed: {e}"));
    let mut at = 0;
    let mut n = 0;
    while at < recs.len() {
        let want = batch_records(n);
        assert!(
            at + want.len() <= recs.len(),
            "{context}: batch {n} partly visible"
        );
        for (j, (s, k, v, t)) in want.iter().enumerate() {
            let r = &recs[at + j];
            assert_eq!(
                r.position,
                (at + j) as u64,
                "{context}: positions not gap-free"
            );
            assert_eq!(
                (&*r.stream, &r.key[..], &r.value[..], r.event_time),
                (s.as_str(), k.as_bytes(), &v[..], *t),
                "{context}: batch {n} record {j}"
            );
        }
        at += want.len();
        n += 1;
    }
    assert!(
        n >= acked,
        "{context}: {acked} batches acknowledged, {n} survived"
    );
    // Reading everything rebuilt any missing index; nothing may be damaged.
    let report = tablelog::storage::verify::verify(dir).unwrap();
    assert!(
        report.problems.iter().all(|p| p.repairable),
        "{context}: {:?}",
        report.problems
    );
    n
}

#[test]
fn every_operation_of_a_mixed_workload_failed_once_and_forever() {
    const BATCHES: usize = 40;
    let mut injected = 0;
    for forever in [false, true] {
        for n in 1.. {
            let dir = tempfile::tempdir().unwrap();
            let plan = Arc::new(FaultPlan::new(n, forever));
            let vfs: Arc<dyn Vfs> = Arc::new(FaultyVfs::new(Arc::new(OsVfs), plan.clone()));
            let (acked, err) = workload(dir.path(), vfs, BATCHES, &mut |_| {});
            let Some(err) = err else {
                assert_eq!(acked, BATCHES);
                assert!(
                    plan.seen() < n,
                    "the workload finished although operation {n} failed"
                );
                break;
            };
            injected += 1;
            let context = format!("fault at op {n} (forever: {forever}): {err}");
            check_survivors(dir.path(), acked, &context);
        }
    }
    eprintln!("{injected} faults injected into the mixed workload, nothing acknowledged lost");
    assert!(injected > 100, "only {injected} faults injected");
}

/// The same faults with sidecars sealed on a background thread, where which
/// operation gets which number varies from run to run and a failed sidecar
/// write surfaces only at the next write: whatever fails, nothing
/// acknowledged is lost and nothing is damaged.
#[test]
fn faults_beside_background_sealing_lose_nothing() {
    const BATCHES: usize = 40;
    let clean = {
        let dir = tempfile::tempdir().unwrap();
        let plan = Arc::new(FaultPlan::new(u64::MAX, false));
        let vfs: Arc<dyn Vfs> = Arc::new(FaultyVfs::new(Arc::new(OsVfs), plan.clone()));
        let (acked, err) = workload_with(dir.path(), vfs, BATCHES, true, &mut |_| {});
        assert!(err.is_none() && acked == BATCHES, "{err:?}");
        plan.seen()
    };
    let mut surfaced = 0;
    for forever in [false, true] {
        for n in 1..=clean {
            let dir = tempfile::tempdir().unwrap();
            let plan = Arc::new(FaultPlan::new(n, forever));
            let vfs: Arc<dyn Vfs> = Arc::new(FaultyVfs::new(Arc::new(OsVfs), plan.clone()));
            let (acked, err) = workload_with(dir.path(), vfs, BATCHES, true, &mut |_| {});
            surfaced += usize::from(err.is_some());
            let context = format!("background seal, fault at op {n} (forever: {forever}): {err:?}");
            check_survivors(dir.path(), acked, &context);
        }
    }
    eprintln!(
        "{} faults beside background sealing, {surfaced} surfaced, nothing acknowledged lost",
        2 * clean
    );
    assert!(surfaced > 100, "only {surfaced} faults surfaced");
}

#[test]
fn a_full_disk_is_a_clear_error_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Let the database and a few batches through, then the disk is full.
    let plan = Arc::new(FaultPlan::new(30, true).errno(28));
    let vfs: Arc<dyn Vfs> = Arc::new(FaultyVfs::new(Arc::new(OsVfs), plan));
    let (acked, err) = workload(dir.path(), vfs, 100, &mut |_| {});
    let err = err.expect("the disk filled up");
    assert!(
        err.to_string().contains("No space left on device")
            || err.to_string().contains("os error 28"),
        "{err}"
    );
    assert!(acked > 0);
    check_survivors(dir.path(), acked, "ENOSPC");
}

#[test]
fn crash_states_after_every_operation_keep_every_acknowledged_batch() {
    crash_states(false);
}

/// With background sealing the trace interleaves the sealing thread's writes;
/// every prefix of it is still a state a crash can leave.
#[test]
fn crash_states_beside_background_sealing_keep_every_acknowledged_batch() {
    crash_states(true);
}

fn crash_states(background_seal: bool) {
    const BATCHES: usize = 24;
    const SEEDS: u64 = 6;
    let src = tempfile::tempdir().unwrap();
    let rec = RecordingVfs::new(Arc::new(OsVfs));
    let mut acked_at: Vec<usize> = Vec::new(); // trace length when batch i was acknowledged
    {
        let r = rec.clone();
        let vfs = Arc::new(rec.clone());
        let (acked, err) = workload_with(src.path(), vfs, BATCHES, background_seal, &mut |_| {
            acked_at.push(r.trace().len())
        });
        assert!(err.is_none(), "{err:?}");
        assert_eq!(acked, BATCHES);
    }
    let trace = rec.trace();
    let work = tempfile::tempdir().unwrap();
    let mut states = 0;
    for upto in 0..=trace.len() {
        let must = acked_at.iter().filter(|&&at| at <= upto).count();
        for seed in 0..SEEDS {
            let out = work.path().join(format!("s{upto}-{seed}"));
            crash_image(&trace, upto, seed, src.path(), &out).unwrap();
            check_survivors(
                &out,
                must,
                &format!("crash after op {upto}/{} seed {seed}", trace.len()),
            );
            std::fs::remove_dir_all(&out).unwrap();
            states += 1;
        }
    }
    eprintln!(
        "{states} crash states checked over a {}-operation trace",
        trace.len()
    );
    assert!(states > 200);
}
