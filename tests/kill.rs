//! Real crashes: a child process appends with sync durability and reports each
//! acknowledged position; we SIGKILL it at seeded random moments, reopen, and
//! check that every acknowledged batch is there, no batch is partial, positions
//! are gap-free, and `verify` passes. Then the next child continues on the same
//! database.
//!
//! Iterations: 12 by default; `TABLELOG_KILL_ITERATIONS=2000 cargo test --release
//! --test kill` for a soak run.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use tablelog::{Db, Result};

fn check(dir: &std::path::Path, acked: u64) -> u64 {
    let db = Db::builder(dir).read_only(true).open().unwrap();
    let snap = db.snapshot().unwrap();
    let end = snap.end_position();
    assert!(
        end >= acked,
        "acknowledged position {acked} lost: database ends at {end}"
    );
    let recs: Vec<_> = snap.view().scan(0, None).collect::<Result<_>>().unwrap();
    assert_eq!(recs.len() as u64, end);
    let mut i = 0;
    while i < recs.len() {
        let key = String::from_utf8(recs[i].key.to_vec()).unwrap();
        let parts: Vec<u64> = key
            .trim_start_matches('p')
            .split('-')
            .map(|s| s.parse().unwrap())
            .collect();
        let (first, n) = (parts[0], parts[2]);
        assert_eq!(first, i as u64, "batch starts at the wrong position");
        for j in 0..n {
            let r = recs
                .get(i + j as usize)
                .unwrap_or_else(|| panic!("partial batch at {first}"));
            assert_eq!(r.position, first + j);
            assert_eq!(
                r.key,
                format!("p{first}-{j}-{n}").as_bytes(),
                "partial or mixed batch"
            );
            assert!(r.value.iter().all(|&b| b == b'0' + (j % 10) as u8));
        }
        i += n as usize;
    }
    end
}

#[test]
fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    let iterations: u64 = std::env::var("TABLELOG_KILL_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let dir = tempfile::tempdir().unwrap();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut acked = 0u64;
    let mut kills = 0u64;
    let mut spanning = 0u64; // kills inside a transaction spanning segments
    for it in 0..iterations {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let kill_after = rng % 40; // acks to read before the kill; 0 = while opening
        let mut child = Command::new(env!("CARGO_BIN_EXE_tablelog"))
            .args([
                "torture-writer",
                dir.path().to_str().unwrap(),
                "--seed",
                &it.to_string(),
                "--segment-size",
                "32768",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // One kill in three waits for the child to report that it is half-way
        // through a streaming transaction (past a segment roll, most likely).
        let mid = it % 3 == 2;
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = 0;
        let ack = |l: &str| l.strip_prefix("ACK ").map(|n| n.parse::<u64>().unwrap());
        while seen < kill_after || mid {
            match lines.next() {
                Some(Ok(l)) if l == "MID" && mid && seen >= kill_after / 4 => break,
                Some(Ok(l)) => {
                    if let Some(n) = ack(&l) {
                        acked = acked.max(n);
                        seen += 1;
                    }
                }
                _ => break,
            }
        }
        child.kill().unwrap(); // SIGKILL
                               // Acks the child printed before it died count as acknowledged too.
        for l in lines.map_while(std::result::Result::ok) {
            acked = acked.max(ack(&l).unwrap_or(0));
        }
        child.wait().unwrap();
        kills += 1;
        // Recovery by a writer (cuts the torn tail), then a full check.
        let db = Db::open(dir.path()).unwrap();
        let reason = db.recovery().reason.clone().unwrap_or_default();
        spanning += u64::from(reason.contains("spanning segments"));
        drop(db);
        let end = check(dir.path(), acked);
        let report = tablelog::storage::verify::verify(dir.path()).unwrap();
        assert!(report.is_clean(), "iteration {it}: {:?}", report.problems);
        assert!(end >= acked);
    }
    eprintln!(
        "survived {kills} kills ({spanning} inside a transaction spanning segments); \
         {acked} positions acknowledged"
    );
}
