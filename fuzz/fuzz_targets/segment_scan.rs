//! The recovery scan of a segment on arbitrary bytes after a valid header (a
//! writer's segment, one continuing a transaction, or a compacted one whose end
//! position comes from the input), and without one; as the active segment and
//! as a sealed one (which indexes trailing data frames too).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tablelog::storage::segment::{
    encode_compacted_header, encode_writer_header, scan, scan_sealed,
};

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("fuzz");
    let (mut v, rest) = match data.split_first() {
        Some((&sel, rest)) if sel & 1 == 1 && rest.len() >= 2 => {
            let end = u64::from(u16::from_le_bytes([rest[0], rest[1]]));
            (encode_compacted_header(end).to_vec(), &rest[2..])
        }
        Some((&sel, rest)) => (encode_writer_header(sel & 2 == 2).to_vec(), rest),
        None => (encode_writer_header(false).to_vec(), data),
    };
    v.extend_from_slice(rest);
    let b = Bytes::from(v);
    if let Ok(out) = scan(&b, 0, path) {
        assert!(out.committed_end as usize <= b.len());
        let mut last = 0;
        for f in &out.index.frames {
            assert!(f.first_pos >= last, "positions go back");
            last = f.end_pos();
        }
        let _ = out.index.encode_kidx();
        // The sealed scan indexes everything the active one does, and more
        // only at the end.
        let sealed = scan_sealed(&b, 0, path).expect("same header");
        assert!(sealed.committed_end >= out.committed_end);
        assert!(sealed.index.frames.len() >= out.index.frames.len());
        assert_eq!(sealed.index.frames[..out.index.frames.len()], out.index.frames[..]);
        assert_eq!(sealed.stopped.is_some(), out.stopped.is_some() && sealed.committed_end < b.len() as u64);
    }
    let _ = scan(&Bytes::copy_from_slice(data), 0, path);
});
