//! CPU hints for code whose cost is cache misses.

#![allow(unsafe_code)]

/// Asks the CPU to start loading the cache lines holding `*p`, so that a read
/// of it a little later finds it in cache. Only a hint: where no prefetch
/// instruction is available it does nothing.
///
/// Every line of the object is asked for, not just its first: a 48-byte
/// key slot in an array starts at 16, 32 or 48 bytes into a line as often
/// as at 0, and then half of it is in the next line (the indexer's reads of
/// a slot's length, past its first 32 bytes, missed in about half its
/// pushes until this asked for both lines).
#[inline(always)]
pub(crate) fn prefetch<T>(p: &T) {
    const LINE: usize = 64;
    let start = std::ptr::from_ref(p).cast::<u8>();
    let first = start as usize;
    let last = first + std::mem::size_of::<T>().max(1) - 1;
    let mut line = first & !(LINE - 1);
    while line <= last {
        // Stays inside `*p` (the first line starts at `start` itself).
        prefetch_line(start.wrapping_add(line.max(first) - first));
        line += LINE;
    }
}

/// Asks the CPU to start loading the cache lines of `bytes`: all of them
/// if there are at most `max_lines`, else `max_lines` spread evenly over it
/// (where a binary search of it looks first). Only a hint.
#[inline]
pub(crate) fn prefetch_lines(bytes: &[u8], max_lines: usize) {
    const LINE: usize = 64;
    let Some(first) = bytes.first() else {
        return;
    };
    let skew = std::ptr::from_ref(first) as usize % LINE;
    let lines = (skew + bytes.len()).div_ceil(LINE);
    if lines <= max_lines {
        for l in 0..lines {
            // The first line from `bytes[0]` itself, then each line's start
            // (`l * LINE - skew < bytes.len()` for every line it spans).
            prefetch_line(bytes[(l * LINE).saturating_sub(skew)..].as_ptr());
        }
    } else {
        for i in 0..max_lines {
            prefetch_line(bytes[i * bytes.len() / max_lines..].as_ptr());
        }
    }
}

#[inline(always)]
fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads no memory the program can observe and never
    // faults, whatever the address; `p` points into a live object anyway.
    // SSE, which the instruction belongs to, is part of every x86_64 CPU.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    /// `prefetch_lines` stays inside its slice whatever its length, its
    /// alignment and the number of lines asked for (a stray line would be
    /// a panic from the slice index).
    #[test]
    fn prefetch_lines_stays_in_bounds() {
        let buf = vec![7u8; 1024];
        for start in 0..64 {
            for len in 0..700 {
                for max in [1, 4, 8, 64] {
                    super::prefetch_lines(&buf[start..start + len], max);
                }
            }
        }
    }
}
