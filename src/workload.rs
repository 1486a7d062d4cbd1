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

/// The machine's append ceiling, measured by the benchmarks in the same run
/// as tablelog: the same record bytes (a CRC of key and value, the event time,
/// both lengths, key, value) written sequentially to a new file at `path`
/// through a 1 MiB buffer, with an `fdatasync` every `sync_every` records
/// (`None`: one at the end). No index, no frame, no reader: what the disk and
/// one core give an append log. Removes the file and returns the time taken.
pub fn raw_append<'a>(
    path: &std::path::Path,
    recs: impl IntoIterator<Item = (&'a [u8], &'a [u8], i64)>,
    sync_every: Option<usize>,
) -> std::io::Result<std::time::Duration> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    let start = std::time::Instant::now();
    let mut buf = Vec::with_capacity(1 << 20);
    for (i, (k, v, t)) in recs.into_iter().enumerate() {
        let mut h = crc32fast::Hasher::new();
        h.update(k);
        h.update(v);
        buf.extend_from_slice(&h.finalize().to_le_bytes());
        buf.extend_from_slice(&t.to_le_bytes());
        buf.extend_from_slice(&(k.len() as u32).to_le_bytes());
        buf.extend_from_slice(&(v.len() as u32).to_le_bytes());
        buf.extend_from_slice(k);
        buf.extend_from_slice(v);
        let sync_now = sync_every.is_some_and(|n| (i + 1) % n.max(1) == 0);
        if buf.len() >= 1 << 20 || sync_now {
            f.write_all(&buf)?;
            buf.clear();
        }
        if sync_now {
            f.sync_data()?;
        }
    }
    f.write_all(&buf)?;
    f.sync_data()?;
    let took = start.elapsed();
    drop(f);
    std::fs::remove_file(path)?;
    Ok(took)
}
