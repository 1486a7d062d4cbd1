//! Backfill a new feature over history with a resumable replay: the average price
//! of the items each user viewed in the last 30 minutes, computed at every view,
//! over a generated clickstream. The replay is interrupted half-way (as if the
//! process died) and resumed from its progress file; the result is the same as an
//! uninterrupted run.
//!
//! `cargo run --release --example backfill`

use std::collections::{HashMap, VecDeque};

use tablelog::replay::{ReplaySpec, Replayer};
use tablelog::workload::Rng;
use tablelog::{Batch, Db, Error, Record, Result};

const WINDOW_US: i64 = 30 * 60 * 1_000_000;

/// Per user, the (time, price) of views in the last 30 minutes, and the feature
/// value computed at each view.
#[derive(Default)]
struct AvgPrice30m {
    recent: HashMap<String, VecDeque<(i64, f64)>>,
    features: u64,
    checksum: f64,
}

impl Replayer for AvgPrice30m {
    fn apply(&mut self, r: &Record) -> Result<()> {
        let v: serde_json::Value =
            serde_json::from_slice(&r.value).map_err(|e| Error::InvalidInput(e.to_string()))?;
        let Some(price) = v.get("price").and_then(serde_json::Value::as_f64) else {
            return Ok(());
        };
        let q = self
            .recent
            .entry(String::from_utf8_lossy(&r.key).into_owned())
            .or_default();
        q.push_back((r.event_time, price));
        while q
            .front()
            .is_some_and(|&(t, _)| t <= r.event_time - WINDOW_US)
        {
            q.pop_front();
        }
        let avg = q.iter().map(|&(_, p)| p).sum::<f64>() / q.len() as f64;
        self.features += 1;
        self.checksum += avg;
        Ok(())
    }

    fn save(&self) -> Vec<u8> {
        let users: HashMap<&String, Vec<(i64, f64)>> = self
            .recent
            .iter()
            .map(|(k, q)| (k, q.iter().copied().collect()))
            .collect();
        serde_json::to_vec(&serde_json::json!({"users": users, "features": self.features, "checksum": self.checksum})).unwrap_or_default()
    }

    fn load(&mut self, state: &[u8]) -> Result<()> {
        let v: serde_json::Value =
            serde_json::from_slice(state).map_err(|e| Error::InvalidInput(e.to_string()))?;
        let bad = || Error::InvalidInput("bad replay state".into());
        self.features = v["features"].as_u64().ok_or_else(bad)?;
        self.checksum = v["checksum"].as_f64().ok_or_else(bad)?;
        self.recent.clear();
        for (user, q) in v["users"].as_object().ok_or_else(bad)? {
            let q: VecDeque<(i64, f64)> = serde_json::from_value(q.clone()).map_err(|_| bad())?;
            self.recent.insert(user.clone(), q);
        }
        Ok(())
    }
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path())?;
    let mut rng = Rng(1);
    let start = 1_704_096_000_000_000i64; // 2024-01-01T08:00:00Z
    let mut b = Batch::new();
    for _ in 0..50_000 {
        let user = format!("u{}", rng.below(500));
        let t = start + rng.below(86_400) as i64 * 1_000_000; // out of order on purpose
        b.put_at(
            "views",
            user,
            format!(
                r#"{{"item":"i{}","price":{}}}"#,
                rng.below(100),
                rng.below(2000) as f64 / 100.0
            ),
            t,
        )?;
    }
    db.writer().commit(b)?;
    let snap = db.snapshot()?;

    let mut whole = AvgPrice30m::default();
    snap.replay(&ReplaySpec::new("views", i64::MIN, i64::MAX), &mut whole)?;

    let mut spec = ReplaySpec::new("views", i64::MIN, i64::MAX);
    spec.progress_file = Some(dir.path().join("backfill.progress"));
    spec.every = 5_000;
    spec.stop_after = Some(27_000);
    let mut first = AvgPrice30m::default();
    let interrupted = snap.replay(&spec, &mut first);
    println!(
        "first run: {:?} after 27000 events",
        interrupted.err().map(|e| e.to_string())
    );
    spec.stop_after = None;
    let mut resumed = AvgPrice30m::default();
    let report = snap.replay(&spec, &mut resumed)?;
    println!(
        "resumed after {} events, applied {} more",
        report.resumed_from, report.applied
    );
    println!(
        "features computed: {} (uninterrupted: {})",
        resumed.features, whole.features
    );
    println!(
        "sum of avg_price_30m: {:.6} (uninterrupted: {:.6})",
        resumed.checksum, whole.checksum
    );
    assert_eq!(resumed.features, whole.features);
    assert!((resumed.checksum - whole.checksum).abs() < 1e-6 * whole.checksum.abs());
    Ok(())
}
