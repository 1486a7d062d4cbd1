//! Replay runs in event-time order over an inclusive range, respects known_at, and
//! resumes after an interruption with the same final state.

use tablelog::replay::{ReplaySpec, Replayer};
use tablelog::workload::Rng;
use tablelog::{Batch, Db, Error, KnownAt, Record, Result};

/// Records the (event_time, position) sequence it sees.
#[derive(Default, Debug, PartialEq)]
struct Trace(Vec<(i64, u64)>);

impl Replayer for Trace {
    fn apply(&mut self, r: &Record) -> Result<()> {
        self.0.push((r.event_time, r.position));
        Ok(())
    }
    fn save(&self) -> Vec<u8> {
        self.0
            .iter()
            .flat_map(|(t, p)| t.to_le_bytes().into_iter().chain(p.to_le_bytes()))
            .collect()
    }
    fn load(&mut self, s: &[u8]) -> Result<()> {
        if !s.len().is_multiple_of(16) {
            return Err(Error::InvalidInput("bad state".into()));
        }
        self.0 = s
            .chunks(16)
            .map(|c| {
                (
                    i64::from_le_bytes(c[..8].try_into().unwrap()),
                    u64::from_le_bytes(c[8..].try_into().unwrap()),
                )
            })
            .collect();
        Ok(())
    }
}

fn db_with_events(dir: &std::path::Path) -> Db {
    let db = Db::builder(dir).segment_size(4096).open().unwrap();
    let mut rng = Rng(3);
    for _ in 0..60 {
        let mut b = Batch::new();
        for _ in 0..5 {
            b.put_at(
                "s",
                format!("k{}", rng.below(4)),
                "{}",
                rng.below(100) as i64,
            )
            .unwrap();
            b.put_at("other", "x", "{}", rng.below(100) as i64).unwrap();
        }
        db.writer().commit(b).unwrap();
    }
    db
}

#[test]
fn replay_is_in_event_time_order_over_an_inclusive_range_as_known_at() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_with_events(dir.path());
    let snap = db.snapshot().unwrap();
    let mut t = Trace::default();
    snap.replay(&ReplaySpec::new("s", 20, 40), &mut t).unwrap();
    let mut want: Vec<(i64, u64)> = snap
        .view()
        .scan(0, Some("s"))
        .map(|r| r.unwrap())
        .filter(|r| (20..=40).contains(&r.event_time))
        .map(|r| (r.event_time, r.position))
        .collect();
    want.sort_unstable();
    assert!(!want.is_empty());
    assert_eq!(t.0, want);
    let mut spec = ReplaySpec::new("s", 20, 40);
    spec.known_at = KnownAt::Position(299);
    let mut early = Trace::default();
    snap.replay(&spec, &mut early).unwrap();
    assert_eq!(
        early.0,
        want.iter()
            .copied()
            .filter(|&(_, p)| p <= 299)
            .collect::<Vec<_>>()
    );
}

#[test]
fn an_interrupted_replay_resumes_to_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_with_events(dir.path());
    let snap = db.snapshot().unwrap();
    let mut whole = Trace::default();
    snap.replay(&ReplaySpec::new("s", i64::MIN, i64::MAX), &mut whole)
        .unwrap();
    for stop in [1u64, 7, 50, 149] {
        let mut spec = ReplaySpec::new("s", i64::MIN, i64::MAX);
        spec.progress_file = Some(dir.path().join(format!("p{stop}")));
        spec.every = 10;
        spec.stop_after = Some(stop);
        let mut first = Trace::default();
        assert!(snap.replay(&spec, &mut first).is_err());
        spec.stop_after = None;
        let mut resumed = Trace::default();
        let report = snap.replay(&spec, &mut resumed).unwrap();
        assert_eq!(
            report.resumed_from,
            stop / 10 * 10,
            "resumes from the last saved state"
        );
        assert_eq!(resumed, whole, "stop after {stop}");
        assert!(
            !spec.progress_file.as_ref().unwrap().exists(),
            "progress file removed when done"
        );
    }
}
