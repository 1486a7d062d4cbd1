//! Field column files on arbitrary bytes: opening (trailer, header, the
//! header's checksums), then every lookup a window makes, each of which
//! checks the chunks it reads, and `verify`'s full check. Each input is also
//! tried with every checksum fixed up, so the layout and bounds checks behind
//! them get fuzzed too. Nothing may panic, loop, or read out of bounds.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tablelog::column::Column;

fn exercise(data: &[u8]) {
    let p = std::path::Path::new("fuzz.col");
    let Ok(col) = Column::parse(Bytes::copy_from_slice(data), p) else {
        return;
    };
    let mut keys: Vec<Vec<u8>> = vec![Vec::new(), b"k".to_vec(), data[..data.len().min(24)].to_vec()];
    for e in col.entries().take(10_000) {
        match e {
            Ok((k, _)) => keys.push(k.to_vec()),
            Err(_) => break,
        }
    }
    for k in keys.iter().take(10_000) {
        let home = col.home(k);
        col.prefetch_slot(home);
        col.prefetch_candidate(home);
        let Ok(Some(events)) = col.find(k, home) else {
            continue;
        };
        // A window's bounds, as a query finds them, then its values.
        for bound in [i128::MIN, -1, 0, 1 << 40, i128::MAX] {
            let Ok(w) = col.between(events.clone(), bound, bound.saturating_add(1000)) else {
                break;
            };
            assert!(events.start <= w.start && w.start <= w.end && w.end <= events.end);
            for e in w.take(1_000) {
                let _ = col.value(e);
            }
        }
        if col.ready(&events).is_ok() {
            for e in events.take(1_000) {
                let _ = (col.time(e), col.value(e));
            }
        }
    }
    let _ = col.check_all();
}

/// `data` with its chunk checksums, body end and trailer checksum recomputed
/// (4 KiB chunks), if its trailer names a body end that fits.
fn fixed(data: &[u8]) -> Option<Vec<u8>> {
    const CHUNK: usize = 4096;
    let len = data.len();
    let body_end = usize::try_from(u64::from_le_bytes(data.get(len.checked_sub(12)?..len - 4)?.try_into().ok()?)).ok()?;
    let chunks = body_end.div_ceil(CHUNK);
    if body_end.checked_add(chunks.checked_mul(4)?)?.checked_add(12)? != len {
        return None;
    }
    let mut out = data.to_vec();
    for c in 0..chunks {
        let crc = crc32fast::hash(&data[c * CHUNK..((c + 1) * CHUNK).min(body_end)]);
        out[body_end + 4 * c..body_end + 4 * c + 4].copy_from_slice(&crc.to_le_bytes());
    }
    let crc = crc32fast::hash(&out[body_end..len - 4]);
    out[len - 4..].copy_from_slice(&crc.to_le_bytes());
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    exercise(data);
    if let Some(f) = fixed(data) {
        exercise(&f);
    }
});
