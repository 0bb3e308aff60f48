//! Early writeback for files written sequentially at a high rate (the ingest log's segments, the
//! file sink's hourly files): the kernel is asked to start writing each further 8 MiB out.

/// Bytes appended to a file between two requests for writeback (see [`start_writeback`]): bounds
/// what a busy file holds dirty, while a quiet one is not rewritten page by page at every batch.
pub(crate) const WRITEBACK_EVERY_BYTES: u64 = 8 * 1024 * 1024;

/// Whether appending `written` bytes to a file of `size_before` bytes passes a multiple of
/// [`WRITEBACK_EVERY_BYTES`].
pub(crate) fn crosses_writeback_mark(size_before: u64, written: u64) -> bool {
    size_before / WRITEBACK_EVERY_BYTES
        != size_before.saturating_add(written) / WRITEBACK_EVERY_BYTES
}

/// Asks the kernel to start writing the file's dirty pages to disk now; the call does not wait for
/// the writes (it can block briefly when the device's queue is full: callers are blocking threads).
/// Left alone, pages written at 100+ MB/s sit dirty until the 30 s expiry (or the next fsync) and are
/// then written back in a burst: in the file sink that stalled the sink long enough to fall out of
/// the ingest log's cache (see BENCHMARKS.md, third pass); in the ingest log it made the 1 s fsync
/// flush a whole second of writes while appends waited. Best effort: an error here changes nothing
/// about what was written.
#[cfg(target_os = "linux")]
pub(crate) fn start_writeback(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor stays open for the call (`file` is borrowed), and sync_file_range only
    // takes integers: no memory is shared with the kernel.
    let result =
        unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    if result != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "sync_file_range failed");
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn start_writeback(_file: &std::fs::File) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writeback_is_asked_for_once_per_mark_passed() {
        let mark = WRITEBACK_EVERY_BYTES;
        assert!(!crosses_writeback_mark(0, 4096));
        assert!(!crosses_writeback_mark(mark - 4097, 4096));
        assert!(crosses_writeback_mark(mark - 4096, 4096));
        assert!(!crosses_writeback_mark(mark, 4096));
        assert!(crosses_writeback_mark(mark - 1, 3 * mark));
        assert!(!crosses_writeback_mark(u64::MAX - 1, 10));
    }
}
