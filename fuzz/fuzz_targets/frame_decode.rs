//! Frame and record decoding on arbitrary bytes: never panics, never allocates by
//! an unchecked length, and anything that validates iterates cleanly.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tablelog::storage::frame::{check_frame, Frame};

fuzz_target!(|data: &[u8]| {
    let _ = check_frame(data);
    let b = Bytes::copy_from_slice(data);
    if let Ok(f) = Frame::decode(&b, 0, std::path::Path::new("fuzz")) {
        let n = f.records().count();
        assert_eq!(n as u32, f.header.count);
    }
});
