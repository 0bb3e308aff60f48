//! The process allocator of the switchyard binaries (jemalloc and its settings), as a macro so the
//! `switchyard` binary and the end-to-end tests' copy of it link exactly the same one.

#[doc(hidden)]
pub use tikv_jemallocator;

/// Declares jemalloc as the binary's global allocator, with Switchyard's settings.
///
/// jemalloc rather than glibc malloc: the ingest path allocates many small objects per event (maps,
/// strings) on the request's thread, and most are freed on another (the log cache evicts them, a sink
/// drops its batch). jemalloc's thread caches absorb those cross-thread frees far more cheaply than
/// glibc's arenas or mimalloc's atomic free lists: 118k events/s against 81k with mimalloc and 53k
/// with glibc, and a lower RSS (see BENCHMARKS.md, third pass).
///
/// The settings (`_RJEM_MALLOC_CONF` in the environment still overrides them): with jemalloc's
/// defaults, pages freed by a sink that lags (it decodes what it reads from disk on the blocking
/// pool's threads, spread over eight arenas) stayed with the process for up to ten seconds, purged
/// only when their arena allocated again: RSS grew by hundreds of MB with a slow ClickHouse.
/// `background_thread:true` returns freed pages to the OS on jemalloc's own threads, off the request
/// path, after a second (`dirty_decay_ms`), and at once when only lazily freed (`muzzy_decay_ms:0`).
/// Same throughput flat out (BENCHMARKS.md, fifth pass).
#[macro_export]
macro_rules! switchyard_allocator {
    () => {
        #[global_allocator]
        static ALLOCATOR: $crate::allocator::tikv_jemallocator::Jemalloc =
            $crate::allocator::tikv_jemallocator::Jemalloc;

        /// Read by jemalloc at start-up (a C `const char *`; the symbol carries the crate's prefix).
        #[export_name = "_rjem_malloc_conf"]
        pub static JEMALLOC_CONF: &u8 =
            &b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0"[0];
    };
}
