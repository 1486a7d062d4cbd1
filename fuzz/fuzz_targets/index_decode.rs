//! Sidecar index decoding (frame index and key index) on arbitrary bytes, with
//! lookups on whatever validates, and bulk cursors checked against cursors
//! reading in place. Each input is also tried with its trailing
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
            // A bulk cursor (windows copied from the file) must read exactly
            // what a cursor reading in place reads, on any file that opens.
            let (Some(mut c), Some(mut b)) = (k.cursor(n), k.bulk_cursor(n)) else {
                continue;
            };
            let (mut got, mut i) = (Vec::new(), 0u32);
            while let Some(key) = c.key().map(<[u8]>::to_vec) {
                assert_eq!(b.key(), Some(&key[..]), "key {i} of {n}");
                assert_eq!(b.key_bytes(), c.key_bytes());
                assert_eq!(b.version_count(), c.version_count());
                for (as_of, end) in [(i64::MAX / 2, u64::MAX), (0, 10), (i64::from(i), u64::from(i))] {
                    assert_eq!(b.best(as_of, end), c.best(as_of, end));
                }
                k.versions(n, &key, &mut out);
                let _ = k.newest_visible(n, &key, 0, 10);
                if i % 3 == 2 {
                    c.skip();
                    b.skip();
                } else {
                    out.clear();
                    got.clear();
                    c.take(&mut out);
                    b.take(&mut got);
                    assert_eq!(got, out, "versions of key {i} of {n}");
                }
                out.clear();
                i += 1;
                if i > 256 {
                    break;
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
