//! CPU hints for code whose cost is cache misses.

#![allow(unsafe_code)]

/// Asks the CPU to start loading the cache line holding `*p`, so that a read
/// of it a little later finds it in cache. Only a hint: where no prefetch
/// instruction is available it does nothing.
#[inline(always)]
pub(crate) fn prefetch<T>(p: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads no memory the program can observe and never
    // faults; `p` is a valid reference anyway. SSE, which the instruction
    // belongs to, is part of every x86_64 CPU.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(p).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
