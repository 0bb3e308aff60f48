//! The `switchyard` binary.

/// jemalloc instead of glibc malloc: the ingest path allocates many small objects per event (maps,
/// strings) on the request's thread, and most are freed on another (the log cache evicts them, a sink
/// drops its batch). jemalloc's thread caches absorb those cross-thread frees far more cheaply than
/// glibc's arenas or mimalloc's atomic free lists: 118k events/s against 81k with mimalloc and 53k
/// with glibc, and a lower RSS (see BENCHMARKS.md, third pass).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    switchyard_router::cli::main()
}
