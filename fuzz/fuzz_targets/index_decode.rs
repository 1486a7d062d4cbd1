//! Sidecar index decoding (frame index and key index) on arbitrary bytes, with
//! lookups on whatever validates. Each input is also tried with its trailing
//! checksum fixed up, so the structural checks behind the CRC get fuzzed too.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tablelog::storage::index::{decode_fidx, KeyIndexFile};

fn exercise(data: &[u8]) {
    let p = std::path::Path::new("fuzz");
    let _ = decode_fidx(data, p);
    if let Ok(k) = KeyIndexFile::open(Bytes::copy_from_slice(data), p) {
        let names: Vec<String> = k.stream_names().map(str::to_string).collect();
        let mut out = Vec::new();
        for n in &names {
            if let Some(mut c) = k.cursor(n) {
                let mut i = 0;
                while let Some(key) = c.key().map(<[u8]>::to_vec) {
                    let _ = c.best(i64::MAX / 2, u64::MAX);
                    k.versions(n, &key, &mut out);
                    let _ = k.newest_visible(n, &key, 0, 10);
                    c.take(&mut out);
                    out.clear();
                    i += 1;
                    if i > 256 {
                        break;
                    }
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    exercise(data);
    if data.len() >= 24 {
        let mut fixed = data.to_vec();
        let body = fixed.len() - 4;
        let crc = crc32fast::hash(&fixed[..body]);
        fixed[body..].copy_from_slice(&crc.to_le_bytes());
        exercise(&fixed);
    }
});
