//! Deterministic synthetic workloads shared by the benchmarks (`benches/`,
//! `tablelog bench`): fixed-size keys and values, event times that are mostly in
//! order with some late arrivals.

use crate::{Batch, Result, Writer};

/// Shape of a generated event log.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Events to append.
    pub events: u64,
    /// Distinct keys (events are spread round-robin-ish over them).
    pub keys: u64,
    /// Key length in bytes (at least 8).
    pub key_size: usize,
    /// Value length in bytes.
    pub value_size: usize,
    /// Records per committed batch.
    pub batch: u64,
    /// Event time step between consecutive events (µs).
    pub step_us: i64,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            events: 1_000_000,
            keys: 100_000,
            key_size: 16,
            value_size: 100,
            batch: 1000,
            step_us: 1_000,
        }
    }
}

pub use crate::rng::Rng;

impl Workload {
    /// The key of key number `k`: zero-padded decimal, `key_size` bytes.
    #[must_use]
    pub fn key(&self, k: u64) -> Vec<u8> {
        let s = format!("{k:0width$}", width = self.key_size.max(8));
        s.into_bytes()
    }

    /// Event `i`: (key number, event time). One event in 50 is late by up to an hour.
    #[must_use]
    pub fn event(&self, i: u64, rng: &mut Rng) -> (u64, i64) {
        let k = (i.wrapping_mul(0x9E37_79B9) ^ rng.below(self.keys)) % self.keys;
        let mut t = i as i64 * self.step_us;
        if rng.below(50) == 0 {
            t -= rng.below(3_600_000_000) as i64;
        }
        (k, t)
    }

    /// A JSON value of about `value_size` bytes with a numeric `price` field.
    #[must_use]
    pub fn value(&self, i: u64) -> Vec<u8> {
        let head = format!(r#"{{"price":{},"pad":""#, i % 1000);
        let mut v = head.into_bytes();
        let pad = self.value_size.saturating_sub(v.len() + 2);
        v.extend(std::iter::repeat_n(b'x', pad));
        v.extend_from_slice(b"\"}");
        v
    }

    /// Appends the whole workload to `stream` in batches of `batch` records.
    pub fn load(&self, w: &Writer, stream: &str, mut progress: impl FnMut(u64)) -> Result<()> {
        let mut rng = Rng(7);
        let mut i = 0;
        while i < self.events {
            let n = self.batch.min(self.events - i);
            let mut b = Batch::new();
            for j in i..i + n {
                let (k, t) = self.event(j, &mut rng);
                b.put_at(stream, self.key(k), self.value(j), t)?;
            }
            w.commit(b)?;
            i += n;
            progress(n);
        }
        Ok(())
    }
}
