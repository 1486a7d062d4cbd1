//! The recovery scan of a segment on arbitrary bytes after a valid header.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tablelog::storage::segment::{encode_header, scan};

fuzz_target!(|data: &[u8]| {
    let mut v = encode_header().to_vec();
    v.extend_from_slice(data);
    let b = Bytes::from(v);
    if let Ok(out) = scan(&b, 0, std::path::Path::new("fuzz")) {
        assert!(out.committed_end as usize <= b.len());
        let _ = out.index.encode_kidx();
    }
    let _ = scan(&Bytes::copy_from_slice(data), 0, std::path::Path::new("fuzz"));
});
