//! Starting write-back early: the one system call std does not wrap.

#![allow(unsafe_code)]

use std::fs::File;

/// Asks the kernel to start writing `len` bytes of `file` at `off` back to the
/// device, without waiting (`sync_file_range(SYNC_FILE_RANGE_WRITE)`). A hint
/// only: nothing is durable until an fsync returns, and a failure here is
/// ignored (the fsync reports write-back errors). Elsewhere than Linux, nothing.
pub(crate) fn start(file: &File, off: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(off), Ok(len)) = (i64::try_from(off), i64::try_from(len)) else {
            return;
        };
        // SAFETY: sync_file_range reads no memory of ours: it takes a file
        // descriptor (owned by `file`, open for the whole call) and integers,
        // and any values are safe (bad ones return an error, which we ignore).
        let _ = unsafe {
            libc::sync_file_range(file.as_raw_fd(), off, len, libc::SYNC_FILE_RANGE_WRITE)
        };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, off, len);
}
