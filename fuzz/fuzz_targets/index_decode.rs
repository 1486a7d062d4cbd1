//! Sidecar index decoding (frame index and key index) on arbitrary bytes, with
//! lookups on whatever validates.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tablelog::storage::index::{decode_fidx, KeyIndexFile};

fuzz_target!(|data: &[u8]| {
    let p = std::path::Path::new("fuzz");
    let _ = decode_fidx(data, p);
    if let Ok(k) = KeyIndexFile::open(Bytes::copy_from_slice(data), p) {
        let names: Vec<String> = k.stream_names().map(str::to_string).collect();
        let mut out = Vec::new();
        for n in &names {
            for i in 0..k.key_count(n).min(64) {
                if let Some(key) = k.entry(n, i, &mut out) {
                    k.versions(n, &key, &mut out);
                }
            }
        }
    }
});
