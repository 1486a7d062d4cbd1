//! Sidecar index decoding (frame index and key index) on arbitrary bytes.
//!
//! A key index that opens lazily (header and directory checked, the rest as
//! it is read) is probed with lookups, which must return or fail, never
//! panic; one that checks whole is walked with cursors, bulk cursors checked
//! against cursors reading in place and lookups against both. Each input is
//! also tried with a fresh trailer (chunk checksums over the input as the
//! body) and with its last four bytes made its format-1 checksum, so the
//! structural checks behind the checksums get fuzzed too.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tablelog::storage::chunks::{trailer, CHUNK};
use tablelog::storage::index::{decode_fidx, KeyIndexFile};

fn exercise(data: &[u8]) {
    let p = std::path::Path::new("fuzz");
    let _ = decode_fidx(data, p);
    if let Ok(k) = KeyIndexFile::open_lazy(Bytes::copy_from_slice(data), p) {
        let names: Vec<String> = k.stream_names().map(str::to_string).collect();
        let mut out = Vec::new();
        for n in names.iter().map(String::as_str).chain(["absent"]) {
            // Keys made of the input's bytes: some may be in the file.
            for probe in data.chunks(9).take(64).chain([&b""[..]]) {
                let _ = k.versions(n, probe, &mut out);
                let _ = k.newest_visible(n, probe, 0, 10);
                out.clear();
            }
        }
        let _ = k.check_all();
    }
    if let Ok(k) = KeyIndexFile::open(Bytes::copy_from_slice(data), p) {
        let names: Vec<String> = k.stream_names().map(str::to_string).collect();
        let mut out = Vec::new();
        for n in &names {
            // A bulk cursor (windows copied from the file) must read exactly
            // what a cursor reading in place reads, on any file that opens.
            let (Ok(Some(mut c)), Ok(Some(mut b))) = (k.cursor(n), k.bulk_cursor(n)) else {
                continue;
            };
            // How many entries each key has: a checked file may still repeat
            // a key (damaged but consistent), and a lookup then finds one.
            let mut entries = std::collections::HashMap::new();
            if let Ok(Some(mut w)) = k.cursor(n) {
                while let Some(key) = w.key().map(<[u8]>::to_vec) {
                    *entries.entry(key).or_insert(0u32) += 1;
                    w.skip();
                }
            }
            let (mut got, mut found, mut i) = (Vec::new(), Vec::new(), 0u32);
            while let Some(key) = c.key().map(<[u8]>::to_vec) {
                assert_eq!(b.key(), Some(&key[..]), "key {i} of {n}");
                assert_eq!(b.key_bytes(), c.key_bytes());
                assert_eq!(b.version_count(), c.version_count());
                for (as_of, end) in [(i64::MAX / 2, u64::MAX), (0, 10), (i64::from(i), u64::from(i))] {
                    assert_eq!(b.best(as_of, end), c.best(as_of, end));
                }
                // A lookup finds the key the walk is on (or, for a key
                // repeated in a damaged-but-consistent file, another entry).
                found.clear();
                k.versions(n, &key, &mut found).expect("a checked file reads");
                let _ = k.newest_visible(n, &key, 0, 10).expect("a checked file reads");
                if i % 3 == 2 {
                    c.skip();
                    b.skip();
                } else {
                    out.clear();
                    got.clear();
                    c.take(&mut out);
                    b.take(&mut got);
                    assert_eq!(got, out, "versions of key {i} of {n}");
                    // The whole check ties every key to its hash bucket: a
                    // lookup of a key the walk sees once reads its versions.
                    if entries.get(&key) == Some(&1) {
                        assert_eq!(found, out, "lookup of key {i} of {n}");
                    }
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
    // The input as a body with a valid trailer (format 2).
    let crcs: Vec<u32> = data.chunks(CHUNK).map(crc32fast::hash).collect();
    let mut fixed = data.to_vec();
    fixed.extend_from_slice(&trailer(&crcs, data.len() as u64));
    exercise(&fixed);
    // The input with its last four bytes the CRC of the rest (format 1,
    // still read).
    if data.len() >= 24 {
        let mut fixed = data.to_vec();
        let body = fixed.len() - 4;
        let crc = crc32fast::hash(&fixed[..body]);
        fixed[body..].copy_from_slice(&crc.to_le_bytes());
        exercise(&fixed);
    }
});
